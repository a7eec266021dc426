//! Forking one worker process from the supervisor.

use crate::fork::{ensure_single_threaded, ForkError};
use crate::signals;
use nix::unistd::{fork, getppid, ForkResult, Pid};

/// Forks a worker that runs `work(number)` and exits with its code via `_exit`.
///
/// The worker gets the worker signal handlers, and SIGTERM when the supervisor dies (so no
/// worker is ever orphaned, even when the supervisor is killed with SIGKILL).
///
/// # Errors
/// [`ForkError`] when this process is not single-threaded or fork fails.
pub fn spawn_worker(number: u32, work: &dyn Fn(u32) -> i32) -> Result<Pid, ForkError> {
    ensure_single_threaded()?;
    let supervisor = nix::unistd::getpid();
    // SAFETY: single-threaded (checked above); the child leaves only through `_exit`.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            signals::reset_for_worker();
            // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            let code = if getppid() != supervisor {
                0 // the supervisor died between fork and prctl
            } else {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(number))).unwrap_or(101)
            };
            // SAFETY: leave without running the supervisor's destructors in this copy.
            unsafe { libc::_exit(code) }
        }
    }
}
