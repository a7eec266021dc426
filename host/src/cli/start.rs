//! `li3g-host start`: the daemon, a supervised pool of workers (see [`crate::daemon`]).
//! `shutdown`, `restart` and `ping`, which control it, are in `control.rs`.

use super::control::PidArg;
use super::schedule::{run_scheduler, DEFAULT_BATCH};
use super::work::{run_worker, WorkerOptions};
use super::{plugins_dir, Common};
use crate::config::Config;
use crate::daemon::detach::{detach, Started};
use crate::daemon::{supervise, ChildSpec, PoolOptions, Restart};
use crate::log::Log;
use crate::pidfile::PidFile;
use crate::signals;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct StartArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// How many workers to run.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
    /// Start the daemon in a new, detached process (stdio to /dev/null, logs to syslog).
    #[arg(long)]
    daemon: bool,
    /// How many workers (in total) may be spawned before the daemon finishes; 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    limit: u64,
    /// Keep --workers alive: respawn any worker that ends, up to --limit. Workers that fail
    /// within a second of starting are respawned with a growing delay (0.1 s to 30 s); a
    /// worker recycled by --max-jobs or --memlimit is replaced at once.
    #[arg(long)]
    resuscitate: bool,
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
    #[command(flatten)]
    pid: PidArg,
    #[command(flatten)]
    worker: WorkerOptions,
    #[command(flatten)]
    common: Common,
}

pub(super) fn start(args: &StartArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.common.settings(&args.name)?;
    // The daemon works from `/`: fix relative paths now.
    config.plugins = Some(std::path::absolute(plugins_dir(&config)?)?);
    config.file = config.file.as_deref().map(std::path::absolute).transpose()?;
    // Fail in the foreground on what would fail in every worker, without loading any plugin
    // here: the supervisor must stay free of plugin code (workers load it after the fork, so a
    // restart sees changed files, and no plugin can put a thread in the process that forks).
    crate::plugins::registry::check_dir(config.plugins.as_deref().expect("set above"))?;
    let log = args.worker.log();
    let pid_path = args.pid.path()?;
    let mut pid_file = None;
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
                    pid_file = Some(file);
                    ready.ok(std::process::id());
                }
                Err(err) => {
                    ready.failed(&err.to_string());
                    return Ok(ExitCode::FAILURE);
                }
            },
        }
    } else if args.pid.is_set() {
        pid_file = Some(PidFile::acquire(&pid_path)?);
    }
    let log = if args.daemon { crate::log::Log { verbose: false } } else { log };
    let server = embedded_server(args, &config, log)?;
    signals::install_daemon();
    let mut children = children(args, &config, log);
    if let Some((listener, options)) = &server {
        // First in start order, so it is stopped last (after the workers).
        children.insert(0, server_child(listener, options));
    }
    let options = PoolOptions { children, log };
    let code = supervise(&options);
    drop(pid_file);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// A new worker's configuration: the plugin settings read from the file afresh, so that a
/// `restart` (SIGHUP) applies an edited plugin section; when the file cannot be read now, the
/// settings the daemon started with, with a log line saying so.
fn with_fresh_plugin_settings(config: &Config, log: Log) -> Config {
    let mut fresh = config.clone();
    if let Some(file) = &config.file {
        match crate::config::load(Some(file), &config.name, config.environment.as_deref()) {
            Ok(new) => {
                fresh.plugin_settings = new.plugin_settings;
                fresh.state_timeout = new.state_timeout;
            }
            Err(err) => {
                crate::log::init(log.verbose);
                log::warn!("Keeping the plugin settings read at start: {err}");
            }
        }
    }
    fresh
}

/// With no `servers` configured: the embedded job server's listener (bound here, in the
/// foreground, so a failure is reported at once, and kept across the server child's restarts)
/// and options; `None` when a Gearman server already holds 127.0.0.1:4730 (it is used) or
/// `--no-server`.
///
/// # Errors
/// When the port is taken by something that is not a Gearman server, or cannot be bound.
fn embedded_server(
    args: &StartArgs,
    config: &Config,
    log: Log,
) -> anyhow::Result<Option<(std::net::TcpListener, crate::server::Options)>> {
    if !config.servers_default || args.no_server {
        return Ok(None);
    }
    let addr = super::server::DEFAULT_LISTEN;
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            let store = match &args.store {
                Some(path) => std::path::absolute(path)?,
                None => default_store()?,
            };
            let message = format!("Job server listening on {addr} (store: {})", store.display());
            eprintln!("li3g-host: {message}");
            log.daemon(&message);
            let options = crate::server::Options {
                store: Some(store),
                host: super::work::hostname(),
                ..crate::server::Options::default()
            };
            Ok(Some((listener, options)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            let server: crate::gearman::conn::ServerAddr = addr.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let mut client = crate::gearman::client::GearmanClient::new(vec![server]);
            client.echo(b"li3g").map_err(|e| {
                anyhow::anyhow!("{addr} is taken by something that is not a Gearman server ({e}); configure `servers`")
            })?;
            let message = format!("Using the Gearman server already listening on {addr}");
            eprintln!("li3g-host: {message}");
            log.daemon(&message);
            Ok(None)
        }
        Err(err) => Err(anyhow::anyhow!("cannot listen on {addr}: {err}")),
    }
}

/// The embedded server's default store: `/var/lib/li3g/queue.sqlite` as root, else in the
/// user's data directory; the directory is created (mode 0700).
fn default_store() -> anyhow::Result<PathBuf> {
    // SAFETY: geteuid cannot fail.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/li3g")
    } else if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(data).join("li3g")
    } else {
        let home = std::env::var_os("HOME").ok_or_else(|| anyhow::anyhow!("no HOME for the job store; use --store"))?;
        PathBuf::from(home).join(".local/share/li3g")
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(dir.join("queue.sqlite"))
}

/// The embedded job server as a child kind: one, always replaced, not reloaded by `restart`
/// (it loads no plugin, and its jobs would be lost without a store).
fn server_child<'a>(listener: &'a std::net::TcpListener, options: &'a crate::server::Options) -> ChildSpec<'a> {
    let mut spec = ChildSpec::new("job server", 1, move |_number| {
        let result = listener
            .try_clone()
            .map_err(crate::server::Error::from)
            .and_then(|l| crate::server::run(l, options.clone(), Some(signals::wake_fd()), &signals::stop_requested));
        match result {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("li3g-host: job server: {err}");
                2
            }
        }
    });
    spec.reload = false;
    spec
}

/// The workers and, when the configuration names Redis, the scheduler, in start order (the
/// embedded job server, when there is one, goes before them). Another kind of child is one
/// more [`ChildSpec`] here.
fn children<'a>(args: &'a StartArgs, config: &'a Config, log: Log) -> Vec<ChildSpec<'a>> {
    let mut workers = ChildSpec::new("worker", args.workers, move |_number| {
        i32::from(run_worker(&with_fresh_plugin_settings(config, log), &args.worker, log))
    });
    workers.restart = if args.resuscitate { Restart::Permanent } else { Restart::Temporary };
    workers.limit = args.limit;
    let mut children = vec![workers];
    if config.redis.is_some() && !args.no_scheduler {
        // One scheduler, always replaced when it ends; it loads no plugin, so a restart
        // (SIGHUP) has nothing to reload in it.
        let verbose = log.verbose;
        let mut scheduler =
            ChildSpec::new("scheduler", 1, move |_number| i32::from(run_scheduler(config, verbose, DEFAULT_BATCH)));
        scheduler.reload = false;
        children.push(scheduler);
    }
    children
}
