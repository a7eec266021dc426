//! Forking one child of the supervisor.

use crate::process::{self, ForkFailed};
use crate::signals;
use nix::unistd::Pid;

/// Forks a child that runs `run(number)` and exits with its code via `_exit`.
///
/// The child gets a wake pipe and stop handlers of its own (installed while signals are
/// blocked, so a stop sent right after the fork is never lost), closes what only the supervisor
/// may hold (the PID file's lock), and gets SIGKILL when the supervisor dies: a supervisor that
/// was killed leaves nothing running, and a new one can start at once.
///
/// # Errors
/// [`ForkFailed`] when this process is not single-threaded or fork fails.
pub fn spawn_child(number: u32, run: &dyn Fn(u32) -> i32) -> Result<Pid, ForkFailed> {
    process::fork_child(signals::reset_for_child, || run(number))
}
