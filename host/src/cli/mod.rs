//! The `li3g-host` command line: parsing with clap, then one function per subcommand.
//!
//! This is the only place that prints and picks exit codes; the library modules return typed
//! values and errors. `main.rs` calls [`run`] and nothing else.
//!
//! Settings come, in order of precedence, from the command line, the environment (`LI3G_*`),
//! the configuration file (see [`crate::config`]), and built-in defaults.

mod control;
mod exec;
mod new;
mod ping;
mod plugins;
mod run;
mod schedule;
mod server;
mod start;
mod status;
mod tls_probe;
mod tls_reload;
mod work;

use crate::config::{self, Config};
use crate::plugins::{JobEvents, Registry};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// li3g: run Gearman jobs in Rust task plugins.
#[derive(Debug, Parser)]
#[command(name = "li3g-host", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the plugins in the plugins directory, their tasks, and every file rejected with why.
    Plugins(plugins::PluginsArgs),
    /// Run one task locally, without a job server, and print its result.
    ///
    /// Each ARG is read as a JSON value (`5`, `true`, `[1,2]`, `"quoted"`); a bare word that is
    /// not JSON is taken as a string. Partial data goes to stdout as it arrives, progress and
    /// warnings to stderr. Exits 1 when the task fails.
    Exec(exec::ExecArgs),
    /// Submit a job to the job servers: queue it (default) or, with --sync, wait and print the result.
    Run(run::RunArgs),
    /// Run one worker in the foreground (for supervisor or systemd); SIGTERM stops it after the job in hand.
    Work(work::WorkArgs),
    /// Start the daemon: a supervised pool of workers.
    Start(start::StartArgs),
    /// Stop the daemon gracefully: workers finish the job in hand; waits until it is gone.
    Shutdown(control::ShutdownArgs),
    /// Restart the daemon's workers gracefully: new workers load the plugins and the TLS files
    /// afresh while the old ones finish their job; the daemon keeps its PID. A TLS file that
    /// cannot be used refuses the restart (the workers keep running): said here, exit 1.
    Restart(control::RestartArgs),
    /// Run the embedded Gearman job server in the foreground (gearmand's protocol, loopback by default).
    Server(server::ServerArgs),
    /// Check what the pool serves: a worker answers, and every task of the plugins directory's
    /// plugins has a worker on a job server; prints `Pinging... OK` (exit 0) or `Pinging...
    /// ERROR` and which (exit 1).
    Ping(ping::PingArgs),
    /// Move due scheduled jobs from Redis to the job servers (`start` runs one when the
    /// configuration names Redis).
    Scheduler(schedule::SchedulerArgs),
    /// List pending scheduled jobs (id, task, due time, retries) and the dead set.
    Scheduled(schedule::ScheduledArgs),
    /// Remove a pending scheduled job.
    Cancel(schedule::IdArgs),
    /// Bring a job back from the dead set: it runs again at once.
    Retry(schedule::IdArgs),
    /// Show what the running daemon does (its children and their jobs, queues, the
    /// scheduler's counts, the last failures); or, given a job id, that job's status: pending,
    /// running, finished or failed with its message.
    Status(status::StatusArgs),
    /// Write a new plugin crate: three example tasks, their tests, a README.
    New(new::NewArgs),
}

/// The settings every command shares.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Configuration file [default: ./li3g.toml, then /etc/li3g/li3g.toml, else built-in defaults]
    #[arg(long, env = "LI3G_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Environment: selects the configuration's overrides and is passed to tasks.
    #[arg(long, env = "LI3G_ENVIRONMENT", value_name = "NAME")]
    environment: Option<String>,
    /// Job servers, `host[:port]` or `tls://host[:port]` separated by commas [default: the configuration's, else 127.0.0.1:4730]
    #[arg(long, env = "LI3G_SERVERS", value_name = "LIST")]
    servers: Option<String>,
    /// CA certificates (PEM) that sign the `tls://` servers' certificates [default: the configuration's `tls_ca`, else the system's CAs]
    #[arg(long, env = "LI3G_TLS_CA", value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// Certificate chain (PEM): offered to `tls://` servers that demand one [default: the configuration's `tls_cert`]; for `server`, the TLS listener's
    #[arg(long, env = "LI3G_TLS_CERT", value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM) [default: the configuration's `tls_key`]
    #[arg(long, env = "LI3G_TLS_KEY", value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// Directory of plugin `.so` files [default: the configuration's, else /usr/lib/li3g/plugins
    /// if it exists, else the directory of the li3g-host executable, where `cargo build` puts
    /// the example plugins]
    #[arg(long, env = "LI3G_PLUGINS", value_name = "DIR")]
    plugins: Option<PathBuf>,
}

impl Common {
    /// The named configuration with the command line's overrides applied, and the TLS settings
    /// for `tls://` servers installed.
    fn settings(&self, name: &str) -> anyhow::Result<Config> {
        let file = config::find(self.config.as_deref());
        let mut config = config::load(file.as_deref(), name, self.environment.as_deref())?;
        if let Some(list) = &self.servers {
            config.servers =
                li3g_client::config::parse_server_list(list).map_err(|e| anyhow::anyhow!("--servers: {e}"))?;
            config.servers_default = false;
        }
        if let Some(dir) = &self.plugins {
            config.plugins = Some(dir.clone());
        }
        config.tls = self.tls_files(config.tls);
        // The TLS configuration for `tls://` servers, installed for every connection of this
        // process (and its forked workers); its files are read now, so a missing one is
        // reported at once.
        install_tls(&config).map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
        Ok(config)
    }

    /// The TLS files for `tls://` servers: the configuration's `files`, with the command line's
    /// (and `LI3G_TLS_*`) winning.
    fn tls_files(&self, mut files: crate::tls::ClientFiles) -> crate::tls::ClientFiles {
        if self.tls_cert.is_some() || self.tls_key.is_some() {
            files.cert = self.tls_cert.clone();
            files.key = self.tls_key.clone();
        }
        if let Some(ca) = &self.tls_ca {
            files.ca = Some(ca.clone());
        }
        files
    }
}

/// Reads `config`'s TLS files and installs them for every later `tls://` connection of this
/// process and the children it forks, when it names a `tls://` server or TLS files.
fn install_tls(config: &Config) -> Result<(), crate::tls::TlsError> {
    if config.servers.iter().any(|s| s.tls) || config.tls != crate::tls::ClientFiles::default() {
        li3g_protocol::transport::install_client_config(crate::tls::client_config(&config.tls)?);
    }
    Ok(())
}

/// The plugins directory: configured, else /usr/lib/li3g/plugins, else the executable's own
/// (see [`crate::plugins::builtin`]).
fn plugins_dir(config: &Config) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &config.plugins {
        return Ok(dir.clone());
    }
    Ok(crate::plugins::builtin::default_dir()?)
}

/// Loads the plugins, warning on stderr about every file that was skipped.
fn load_plugins(config: &Config) -> anyhow::Result<Registry> {
    let registry = Registry::scan(&plugins_dir(config)?)?;
    for rejected in registry.rejected() {
        eprintln!("li3g-host: warning: skipped {rejected}");
    }
    Ok(registry)
}

/// Prints a task's reports as they come: partial data to stdout, progress and warnings to
/// stderr. Used by `exec` (local) and `run --sync` (remote), so both look the same.
pub(crate) struct Console;

impl JobEvents for Console {
    fn status(&mut self, numerator: u64, denominator: u64) {
        eprintln!("progress: {numerator}/{denominator}");
    }
    fn data(&mut self, data: &[u8]) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data).and_then(|()| out.flush());
    }
    fn warning(&mut self, data: &[u8]) {
        eprintln!("warning: {}", String::from_utf8_lossy(data));
    }
}

/// Prints a result on stdout, followed by a newline.
fn print_result(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.write_all(b"\n")
}

/// Parses `args` and runs the command; returns the process's exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Plugins(args) => plugins::run(&args),
        Command::Exec(args) => exec::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Work(args) => work::run(&args),
        Command::Start(args) => start::start(&args),
        Command::Shutdown(args) => control::shutdown(&args),
        Command::Restart(args) => control::restart(&args),
        Command::Ping(args) => ping::ping(&args),
        Command::Scheduler(args) => schedule::scheduler(&args),
        Command::Scheduled(args) => schedule::scheduled(&args),
        Command::Cancel(args) => schedule::cancel(&args),
        Command::Retry(args) => schedule::retry(&args),
        Command::Status(args) => status::run(&args),
        Command::Server(args) => server::run(&args),
        Command::New(args) => new::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("li3g-host: error: {}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, joined with `: ` like anyhow's `{:#}`, except that a
/// cause the line already says is left out: many errors include their cause in their own
/// message, and a reason printed twice reads as two failures.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Repeats {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(Repeats { path: "./nope", source: io });
        assert_eq!(error_line(&err), "reading ./nope: No such file or directory (os error 2)");
        // A cause the message does not say is kept, as context adds it.
        let err = anyhow::Error::new(std::io::Error::from_raw_os_error(13)).context("opening the PID file");
        assert_eq!(error_line(&err), "opening the PID file: Permission denied (os error 13)");
    }
}
