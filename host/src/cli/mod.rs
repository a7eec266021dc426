//! The `li3g-host` command line: parsing with clap, then one function per subcommand.
//!
//! This is the only place that prints and picks exit codes; the library modules return typed
//! values and errors. `main.rs` calls [`run`] and nothing else.

mod exec;
mod plugins;
mod run;
mod work;

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
    Plugins(PluginDir),
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
}

/// Which job servers to talk to.
#[derive(Debug, Clone, Args)]
pub struct Servers {
    /// Job servers, `host[:port]` separated by commas (port 4730 by default).
    #[arg(long, env = "LI3G_SERVERS", value_name = "LIST", default_value = "127.0.0.1:4730")]
    servers: String,
}

impl Servers {
    fn list(&self) -> anyhow::Result<Vec<crate::gearman::conn::ServerAddr>> {
        self.servers
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse().map_err(|e: String| anyhow::anyhow!("--servers: {e}")))
            .collect()
    }
}

/// Where plugins are loaded from.
#[derive(Debug, Clone, Args)]
pub struct PluginDir {
    /// Directory of plugin `.so` files [default: the directory of the li3g-host executable,
    /// where `cargo build` puts the example plugins]
    #[arg(long, env = "LI3G_PLUGINS", value_name = "DIR")]
    plugins: Option<PathBuf>,
}

/// Prints a task's reports as they come: partial data to stdout, progress and warnings to
/// stderr. Used by `exec` (local) and `run --sync` (remote), so both look the same.
pub(crate) struct Console;

impl crate::plugins::JobEvents for Console {
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

impl PluginDir {
    /// Loads the plugins, warning on stderr about every file that was skipped.
    fn load(&self) -> anyhow::Result<crate::plugins::Registry> {
        let registry = crate::plugins::Registry::scan(&self.resolve()?)?;
        for rejected in registry.rejected() {
            eprintln!("li3g-host: warning: skipped {rejected}");
        }
        Ok(registry)
    }

    /// The directory given, or the executable's own.
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.plugins {
            return Ok(dir.clone());
        }
        let exe = std::env::current_exe()?;
        let dir = exe.parent().ok_or_else(|| anyhow::anyhow!("{} has no parent directory", exe.display()))?;
        Ok(dir.to_path_buf())
    }
}

/// Parses `args` and runs the command; returns the process's exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Plugins(dir) => plugins::run(&dir),
        Command::Exec(args) => exec::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Work(args) => work::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("li3g-host: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
