//! `--daemon`: detach from the terminal, and tell the starting command when the daemon is
//! ready (or why it failed), so that `start --daemon` returns only once the PID file exists.
//!
//! The classic double fork: the command forks; the child starts a new session (no controlling
//! terminal) and forks again, so the daemon can never reacquire one; the daemon moves to `/`
//! and points its stdio at `/dev/null`. A pipe from the daemon back to the command carries
//! `OK <pid>` or `ERR <message>`.

use crate::process;
use nix::unistd::{setsid, ForkResult};
use std::io::{self, Read, Write};

/// The daemon's end of the readiness pipe.
pub struct Ready {
    pipe: std::fs::File,
}

impl Ready {
    /// Reports that the daemon runs with `pid`; the starting command prints it and exits 0.
    pub fn ok(mut self, pid: u32) {
        let _ = writeln!(self.pipe, "OK {pid}");
    }

    /// Reports a failure; the starting command prints it and exits 1.
    pub fn failed(mut self, message: &str) {
        let _ = writeln!(self.pipe, "ERR {message}");
    }
}

/// What the starting command learned.
pub enum Started {
    /// The daemon runs with this PID.
    Running(u32),
    /// It failed to start, with this message.
    Failed(String),
}

/// Detaches. Returns `Ok(Err(started))` in the starting command (which should report and exit)
/// and `Ok(Ok(ready))` in the daemon.
///
/// # Errors
/// When fork, setsid or the pipe fail.
pub fn detach() -> io::Result<Result<Ready, Started>> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Every child path below ends in `_exit` or becomes the daemon, which never returns into
    // the command's code path.
    match process::fork(|| ()).map_err(io::Error::other)? {
        ForkResult::Parent { child } => {
            drop(write);
            let mut text = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut text);
            let _ = nix::sys::wait::waitpid(child, None);
            let text = text.trim();
            Ok(Err(match text.split_once(' ') {
                Some(("OK", pid)) => Started::Running(pid.parse().unwrap_or(0)),
                Some(("ERR", message)) => Started::Failed(message.to_string()),
                _ => Started::Failed("the daemon ended before it was ready".into()),
            }))
        }
        ForkResult::Child => {
            drop(read);
            setsid()?;
            // The middle process leaves through `_exit`.
            match process::fork(|| ()).map_err(io::Error::other)? {
                // SAFETY: _exit, without running destructors that belong to the daemon.
                ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
                ForkResult::Child => {
                    std::env::set_current_dir("/")?;
                    to_dev_null()?;
                    Ok(Ok(Ready { pipe: std::fs::File::from(write) }))
                }
            }
        }
    }
}

fn to_dev_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}
