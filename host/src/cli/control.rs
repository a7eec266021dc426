//! `li3g-host shutdown` and `restart`: controlling a running daemon through its PID file and
//! signals (`ping`, which asks its workers, is in `ping.rs`).

use crate::config::parse_seconds;
use crate::pidfile::{running_pid, PidFileError};
use crate::process;
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The directory the systemd unit creates for the daemon (`RuntimeDirectory=li3g`): when it
/// exists, the default PID file is in it, whoever runs the command.
const SHARED_RUN_DIR: &str = "/run/li3g";

/// Where the PID file goes.
#[derive(Debug, Clone, Args)]
pub(super) struct PidArg {
    /// PID file, written and locked by `start` (foreground or --daemon), read by `restart` and
    /// `shutdown` [default: /run/li3g/li3g-host.pid when /run/li3g exists (the systemd unit's
    /// RuntimeDirectory), else $XDG_RUNTIME_DIR/li3g-host.pid, else /run/li3g-host.pid as root,
    /// else /tmp/li3g-host-UID.pid]
    #[arg(long, env = "LI3G_PID", value_name = "PATH")]
    pid: Option<PathBuf>,
}

impl PidArg {
    /// The PID file: given, or the default for this user.
    pub(super) fn path(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.pid {
            Some(path) => path.clone(),
            None => {
                let uid = nix::unistd::geteuid();
                let shared = std::path::Path::new(SHARED_RUN_DIR);
                match std::env::var_os("XDG_RUNTIME_DIR") {
                    // The daemon under systemd (user li3g) and an operator (root) meet here.
                    _ if shared.is_dir() => shared.join("li3g-host.pid"),
                    Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("li3g-host.pid"),
                    _ if uid.is_root() => PathBuf::from("/run/li3g-host.pid"),
                    _ => PathBuf::from(format!("/tmp/li3g-host-{uid}.pid")),
                }
            }
        };
        Ok(std::path::absolute(path)?)
    }

    /// The running daemon's PID, from the PID file. When no daemon runs at the default PID
    /// file, the error says how to reach one started with `--pid` (the most common reason).
    pub(super) fn running(&self) -> anyhow::Result<i32> {
        match running_pid(&self.path()?) {
            Ok(pid) => Ok(pid),
            Err(err @ PidFileError::NotRunning { .. }) => Err(anyhow::anyhow!("{err}{}", self.hint())),
            Err(err) => Err(err.into()),
        }
    }

    /// What to add to "no daemon is running" when no PID file was named.
    pub(super) fn hint(&self) -> &'static str {
        if self.pid.is_none() {
            "; a daemon started with --pid PATH (or LI3G_PID) is reached with the same --pid PATH"
        } else {
            ""
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct ShutdownArgs {
    #[command(flatten)]
    pid: PidArg,
    /// How long to wait for the workers to finish their jobs and the daemon to end.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds, allow_negative_numbers = true)]
    timeout: Duration,
}

pub(super) fn shutdown(args: &ShutdownArgs) -> anyhow::Result<ExitCode> {
    let pid = args.pid.running()?;
    // A pidfd lets us wait for a process that is not our child.
    let pidfd = process::pidfd(Pid::from_raw(pid)).map_err(|err| anyhow::anyhow!("cannot watch PID {pid}: {err}"))?;
    kill(Pid::from_raw(pid), Signal::SIGTERM)?;
    println!("li3g-host: asked the daemon (PID {pid}) to shut down; waiting for its workers to finish their jobs");
    if process::wait_readable(&pidfd, Some(args.timeout))? {
        println!("li3g-host: daemon (PID {pid}) stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("li3g-host: the daemon (PID {pid}) is still running after {:?}", args.timeout);
        Ok(ExitCode::FAILURE)
    }
}

#[derive(Debug, Args)]
pub(super) struct RestartArgs {
    #[command(flatten)]
    pid: PidArg,
}

/// How long `restart` waits for the daemon to say it restarts or refuses.
const RESTART_ANSWER: Duration = Duration::from_secs(10);

pub(super) fn restart(args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let path = args.pid.path()?;
    let pid = args.pid.running()?;
    // The supervisor answers on its scoreboard: a new generation (restarting) or one more
    // refused restart, with the reason (a TLS file it cannot use).
    let board = crate::scoreboard::Scoreboard::open(&crate::scoreboard::path_for(&path)).ok();
    let before = board.as_ref().map(|b| (b.generation(), b.restarts_refused().0));
    kill(Pid::from_raw(pid), Signal::SIGHUP)?;
    let restarting = "new ones load the plugins and the TLS files afresh, old ones finish their job";
    let (Some(board), Some((generation, refused))) = (board, before) else {
        println!("li3g-host: asked the daemon (PID {pid}) to restart its workers: {restarting}");
        return Ok(ExitCode::SUCCESS);
    };
    // Shared memory has nothing to wait on: it is looked at every 10 ms, for a bounded time.
    let deadline = std::time::Instant::now() + RESTART_ANSWER;
    while std::time::Instant::now() < deadline {
        let (now_refused, why) = board.restarts_refused();
        if now_refused > refused {
            eprintln!(
                "li3g-host: the daemon (PID {pid}) refused to restart: {why}; its workers keep running as they were"
            );
            return Ok(ExitCode::FAILURE);
        }
        if board.generation() > generation {
            println!("li3g-host: the daemon (PID {pid}) is restarting its workers: {restarting}");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("li3g-host: asked the daemon (PID {pid}) to restart; it has not answered within {RESTART_ANSWER:?} (see its log)");
    Ok(ExitCode::FAILURE)
}
