//! `li3g-host start`: parses, detaches (`--daemon`), holds the PID file, and runs the daemon
//! ([`crate::daemon::run`]).
//! `shutdown`, `restart` and `ping`, which control it, are in `control.rs`.

use super::control::PidArg;
use super::schedule::{run_scheduler, DEFAULT_BATCH};
use super::work::{run_worker, WorkerOptions};
use super::{plugins_dir, Common};
use crate::config::Config;
use crate::daemon;
use crate::daemon::detach::{detach, Started};
use crate::pidfile::PidFile;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct StartArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// How many workers to run in the default pool, which serves every task no configured
    /// pool (`[CONFIG.pools.POOL]`) keeps to itself. 0 only with pools: then only pools run
    /// (GearmanManager's `dedicated_only`).
    #[arg(long, value_name = "N", default_value_t = 4)]
    workers: u32,
    /// Start the daemon in a new, detached process (stdio to /dev/null, logs to syslog or
    /// --log-file; with neither, to li3g-host.log in the store's directory, with a warning).
    #[arg(long)]
    daemon: bool,
    /// How many workers (in total, per pool) may be spawned before the daemon finishes; 0 = no
    /// limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    limit: u64,
    /// Keep --workers alive: respawn any worker that ends, up to --limit. Workers that fail
    /// within a second of starting are respawned with a growing delay (0.1 s to 30 s); a
    /// worker recycled by --max-jobs or --memlimit is replaced at once.
    #[arg(long)]
    resuscitate: bool,
    /// Recycle a worker once it is this many seconds old: it ends after the job in hand and is
    /// replaced at once (a recycle, not a crash; also without --resuscitate). A pool's
    /// `max_age` wins for its workers.
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds)]
    max_age: Option<std::time::Duration>,
    /// Spread of --max-age: each worker's limit is max-age plus a random part of this, and no
    /// two are recycled within 250 ms of each other when it leaves room [default: a tenth of
    /// --max-age, at least 5 s]
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds, requires = "max_age")]
    max_age_splay: Option<std::time::Duration>,
    /// Do not run a scheduler, even though the configuration names Redis (run one elsewhere,
    /// with `li3g-host scheduler`).
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the embedded job server, even though no `servers` are configured.
    #[arg(long)]
    no_server: bool,
    /// The embedded job server's store [default: li3g/queue.sqlite in the user's data
    /// directory ($XDG_DATA_HOME or ~/.local/share), or /var/lib/li3g/queue.sqlite as root]
    #[arg(long, value_name = "PATH", env = "LI3G_STORE")]
    store: Option<PathBuf>,
    /// Serve metrics, the status JSON and the dashboard on ADDR (a loopback address unless
    /// metrics_token is configured) [default: the configuration's `metrics`, else none]
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Where the embedded job server listens, `host:port`; the workers use it as their job
    /// server [default: 127.0.0.1:4730]
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["servers", "no_server"])]
    listen: Option<crate::gearman::conn::ServerAddr>,
    /// Let the embedded job server listen in plaintext on a non-loopback --listen address:
    /// whoever reaches the port can submit and take every job.
    #[arg(long, requires = "listen")]
    insecure_listen: bool,
    #[command(flatten)]
    pid: PidArg,
    #[command(flatten)]
    worker: WorkerOptions,
    #[command(flatten)]
    common: Common,
}

pub(super) fn start(args: &StartArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.common.settings(&args.name)?;
    if args.workers == 0 && config.pools.is_empty() {
        anyhow::bail!(
            "--workers 0 leaves no worker: configure pools ([{}.pools.NAME]) or run at least one",
            config.name
        );
    }
    if let Some(listen) = &args.listen {
        anyhow::ensure!(
            !listen.tls,
            "--listen {listen}: the daemon's embedded job server listens in plaintext; for TLS, run \
             `li3g-host server --tls-listen` and point the workers at it"
        );
        let ips: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(listen.host.as_str(), listen.port))
            .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?
            .map(|a| a.ip())
            .collect();
        anyhow::ensure!(
            ips.iter().all(std::net::IpAddr::is_loopback) || args.insecure_listen,
            "refusing to listen on {listen} in plaintext: whoever reaches that port can submit and take every job \
             (run every task). Listen on loopback, run `li3g-host server` with TLS, or say --insecure-listen"
        );
        // The workers reach the embedded job server where it listens.
        config.servers = vec![listen.clone()];
        config.servers_default = true;
    }
    // The daemon works from `/`: fix relative paths now.
    config.plugins = Some(std::path::absolute(plugins_dir(&config)?)?);
    config.file = config.file.as_deref().map(std::path::absolute).transpose()?;
    // `redis_tls_ca` is relative to the configuration file, which may have been named by a
    // relative path: read by every scheduler and worker after the fork, from `/` with --daemon.
    config.scheduler.tls_ca = config.scheduler.tls_ca.as_deref().map(std::path::absolute).transpose()?;
    // Sandbox paths, as `work` reads them from where it runs: a worker forked by a --daemon
    // opens them from `/`.
    absolute_sandbox(&mut config.sandbox)?;
    for task in config.tasks.values_mut() {
        absolute_sandbox(&mut task.sandbox)?;
    }
    // Fail in the foreground on what would fail in every worker, without loading any plugin
    // here: the supervisor must stay free of plugin code (workers load it after the fork, so a
    // restart sees changed files, and no plugin can put a thread in the process that forks).
    crate::plugins::registry::check_dir(config.plugins.as_deref().expect("set above"))?;
    // A plugin that is refused (bad file, bad settings, failing constructor) stops the start
    // here, in the foreground: a worker's start-up runs once in a forked child, which says why.
    check_plugins(&config, &args.worker)?;
    let log = args.worker.log();
    let mut log_file = args.worker.log_file(&config)?;
    if args.daemon && log_file.is_none() && !crate::log::syslog_available() {
        // Detached, stdio goes to /dev/null: without syslog every line would be lost.
        // The store's directory: --store's when given, else the default store's.
        let store = match &args.store {
            Some(store) => std::path::absolute(store)?,
            None => daemon::run::default_store()?,
        };
        let dir = store.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let path = dir.join("li3g-host.log");
        eprintln!(
            "li3g-host: warning: no syslog socket (/dev/log) and no --log-file: the daemon logs to {}",
            path.display()
        );
        log_file = Some(path);
    }
    if let Some(path) = &log_file {
        WorkerOptions::use_log_file(path)?;
    }
    // Where relative TLS paths are read from at each `restart`, as they were now (a --daemon
    // works from `/`).
    let base = std::env::current_dir()?;
    let pid_path = args.pid.path()?;
    let pid_file;
    if args.daemon {
        match detach()? {
            Err(Started::Running(pid)) => {
                println!("li3g-host: daemon started with PID {pid} (PID file {})", pid_path.display());
                return Ok(ExitCode::SUCCESS);
            }
            Err(Started::Failed(message)) => {
                eprintln!("li3g-host: error: {message}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ready) => match PidFile::acquire(&pid_path) {
                Ok(file) => {
                    pid_file = file;
                    ready.ok(std::process::id());
                }
                Err(err) => {
                    ready.failed(&err.to_string());
                    return Ok(ExitCode::FAILURE);
                }
            },
        }
    } else {
        // In the foreground too (systemd's Type=simple): `restart` and `shutdown` find the
        // daemon, and a second `start` on the same file is refused.
        pid_file = PidFile::acquire(&pid_path)?;
    }
    let log = if args.daemon { crate::log::Log { verbose: false } } else { log };
    let worker = |config: &Config, pool: Option<&str>| run_worker(config, &args.worker, log, pool, None);
    let scheduler = |config: &Config| run_scheduler(config, log.verbose, DEFAULT_BATCH);
    let reload_tls = || super::tls_reload::reload(&args.common, &config, &base, log);
    let options = daemon::Options {
        workers: args.workers,
        limit: args.limit,
        resuscitate: args.resuscitate,
        worker: &worker,
        max_age: args.max_age,
        max_age_splay: args.max_age_splay,
        scheduler: (!args.no_scheduler).then_some(&scheduler as daemon::run::Body<'_>),
        server: !args.no_server,
        store: args.store.clone(),
        log,
        scoreboard: Some(crate::scoreboard::path_for(&pid_path)),
        metrics: args.metrics.clone(),
        listen: args.listen.clone(),
        before_restart: Some(&reload_tls),
    };
    let code = daemon::run(&config, &options)?;
    drop(pid_file);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Runs a worker's start-up (plugins loaded, states built) once in a forked child, which
/// prints every refusal on stderr; `Err` when it refused to start. The supervisor itself loads
/// no plugin code.
fn check_plugins(config: &Config, options: &WorkerOptions) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = config.plugins.clone().expect("set by start");
    let worker = options.worker_config(config, None);
    // The child writes the name of each plugin whose constructor runs, and `-` once it
    // returned: a constructor that kills the process (abort, segfault) is named.
    let (read, write) = nix::unistd::pipe()?;
    let write_fd = write.as_raw_fd();
    let child = crate::process::fork_child(
        || {},
        || {
            let mut announce = |plugin: Option<&str>| {
                let line = format!("{}\n", plugin.unwrap_or("-"));
                // SAFETY: write(2) of our buffer to the pipe this process holds.
                unsafe { libc::write(write_fd, line.as_ptr().cast(), line.len()) };
            };
            match crate::worker::startup::prepare_announcing(&dir, &worker, &mut announce) {
                Ok(_) => 0,
                Err(crate::worker::startup::Refused::Plugins(lines)) => {
                    for line in lines {
                        eprintln!("li3g-host: error: {line}");
                    }
                    i32::from(crate::worker::startup::EXIT_REFUSED)
                }
                Err(crate::worker::startup::Refused::Dir(err)) => {
                    eprintln!("li3g-host: error: {err}");
                    2
                }
            }
        },
    )?;
    drop(write);
    let status = nix::sys::wait::waitpid(child, None)?;
    let mut announced = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut announced);
    let building = announced.lines().last().filter(|name| *name != "-");
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, code) => {
            anyhow::bail!("not starting: the workers' start-up failed (exit code {code}; see above)")
        }
        nix::sys::wait::WaitStatus::Signaled(_, signal, _) if building.is_some() => anyhow::bail!(
            "not starting: plugin {}'s state constructor killed the workers' start-up with {signal}; fix it, or \
             list the plugin in plugins.optional to skip it",
            building.unwrap_or_default()
        ),
        other => anyhow::bail!("not starting: the workers' start-up check ended with {other:?}"),
    }
}

/// `rules`' paths made absolute (relative ones are from the current directory).
fn absolute_sandbox(rules: &mut Option<crate::worker::sandbox::SandboxRules>) -> std::io::Result<()> {
    for path in rules.iter_mut().flat_map(|rules| rules.read.iter_mut().chain(rules.write.iter_mut())) {
        *path = std::path::absolute(&*path)?;
    }
    Ok(())
}
