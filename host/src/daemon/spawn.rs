//! Forking one child of the supervisor.

use crate::process::{self, ForkFailed};
use crate::signals;
use nix::sys::signal::Signal;
use nix::unistd::{getpid, ForkResult, Pid};

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
    let supervisor = getpid();
    match process::fork(signals::reset_for_child)? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = if process::parent_death_signal(Signal::SIGKILL, supervisor) {
                process::close_inherited();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(number))).unwrap_or(101)
            } else {
                0 // the supervisor died between fork and prctl
            };
            // SAFETY: leave without running the supervisor's destructors in this copy.
            unsafe { libc::_exit(code) }
        }
    }
}
