//! `li3g-host start`: the daemon; and `shutdown`, `restart`, `ping` to control it.

use super::work::{run_worker, WorkerOptions};
use super::{plugins_dir, Common};
use crate::client::{Client, Outcome, RunOptions};
use crate::daemon::detach::{detach, Started};
use crate::daemon::{supervise, PoolOptions};
use crate::gearman::packet::Priority;
use crate::pidfile::{running_pid, PidFile};
use crate::signals;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the PID file goes.
#[derive(Debug, Clone, Args)]
pub(super) struct PidArg {
    /// PID file [default: /run/li3g-host.pid as root, else $XDG_RUNTIME_DIR/li3g-host.pid, else
    /// /tmp/li3g-host-UID.pid]
    #[arg(long, env = "LI3G_PID", value_name = "PATH")]
    pid: Option<PathBuf>,
}

impl PidArg {
    fn path(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.pid {
            Some(path) => path.clone(),
            None => {
                // SAFETY: geteuid cannot fail.
                let uid = unsafe { libc::geteuid() };
                match std::env::var_os("XDG_RUNTIME_DIR") {
                    _ if uid == 0 => PathBuf::from("/run/li3g-host.pid"),
                    Some(dir) => PathBuf::from(dir).join("li3g-host.pid"),
                    None => PathBuf::from(format!("/tmp/li3g-host-{uid}.pid")),
                }
            }
        };
        Ok(std::path::absolute(path)?)
    }
}

#[derive(Debug, Args)]
pub(super) struct StartArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// How many workers to run.
    #[arg(long, value_name = "N", default_value_t = 4)]
    workers: u32,
    /// Start the daemon in a new, detached process (stdio to /dev/null, logs to syslog).
    #[arg(long)]
    daemon: bool,
    /// How many workers (in total) may be spawned before the daemon finishes; 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    limit: u64,
    /// Keep --workers alive: respawn any worker that ends, up to --limit. Workers that fail
    /// within a second of starting are respawned with a growing delay (0.1 s to 30 s).
    #[arg(long)]
    resuscitate: bool,
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
    } else if args.pid.pid.is_some() {
        pid_file = Some(PidFile::acquire(&pid_path)?);
    }
    let log = if args.daemon { crate::log::Log { verbose: false } } else { log };
    signals::install_daemon();
    let options = PoolOptions { workers: args.workers, limit: args.limit, resuscitate: args.resuscitate, log };
    let work = |_number: u32| i32::from(run_worker(&config, &args.worker, log));
    let code = supervise(&options, &work);
    drop(pid_file);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[derive(Debug, Args)]
pub(super) struct ShutdownArgs {
    #[command(flatten)]
    pid: PidArg,
    /// How long to wait for the workers to finish their jobs and the daemon to end.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
}

pub(super) fn shutdown(args: &ShutdownArgs) -> anyhow::Result<ExitCode> {
    let path = args.pid.path()?;
    let pid = running_pid(&path)?;
    // A pidfd lets us wait for a process that is not our child.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    anyhow::ensure!(pidfd >= 0, "cannot watch PID {pid}: {}", std::io::Error::last_os_error());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)?;
    println!("li3g-host: asked the daemon (PID {pid}) to shut down; waiting for its workers to finish their jobs");
    let mut fds = [libc::pollfd { fd: pidfd as i32, events: libc::POLLIN, revents: 0 }];
    let millis = i32::try_from(Duration::from_secs_f64(args.timeout).as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; then close the descriptor we own.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, millis) };
    unsafe { libc::close(pidfd as i32) };
    if ready == 1 {
        println!("li3g-host: daemon (PID {pid}) stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("li3g-host: the daemon (PID {pid}) is still running after {} s", args.timeout);
        Ok(ExitCode::FAILURE)
    }
}

#[derive(Debug, Args)]
pub(super) struct RestartArgs {
    #[command(flatten)]
    pid: PidArg,
}

pub(super) fn restart(args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let pid = running_pid(&args.pid.path()?)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)?;
    println!("li3g-host: the daemon (PID {pid}) is restarting its workers: new ones load the plugins afresh, old ones finish their job");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(super) struct PingArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// How long to wait for a worker's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
    #[command(flatten)]
    common: Common,
}

pub(super) fn ping(args: &PingArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let options = RunOptions {
        background: false,
        priority: Priority::High,
        timeout: Some(Duration::from_secs_f64(args.timeout)),
        ..RunOptions::default()
    };
    print!("Pinging... ");
    let outcome = Client::from_config(&config).run(crate::worker::PING_FUNCTION, &[], &options, &mut |_| {});
    match outcome {
        Ok(Outcome::Completed { .. }) => {
            println!("OK");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Queued { .. } | Outcome::Scheduled { .. }) => unreachable!("a synchronous run completes or fails"),
        Err(err) => {
            println!("ERROR");
            eprintln!("li3g-host: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}
