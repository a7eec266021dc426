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
    let worker = |config: &Config| run_worker(config, &args.worker, log);
    let scheduler = |config: &Config| run_scheduler(config, log.verbose, DEFAULT_BATCH);
    let options = daemon::Options {
        workers: args.workers,
        limit: args.limit,
        resuscitate: args.resuscitate,
        worker: &worker,
        scheduler: (!args.no_scheduler).then_some(&scheduler as daemon::run::Body<'_>),
        server: !args.no_server,
        store: args.store.clone(),
        log,
    };
    let code = daemon::run(&config, &options)?;
    drop(pid_file);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
