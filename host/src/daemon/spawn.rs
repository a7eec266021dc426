//! Forking one child of the supervisor.

use crate::process::{self, ForkFailed};
use crate::proctitle;
use crate::scoreboard::{current, Kind};
use crate::signals;
use nix::unistd::Pid;

/// Forks a child that runs `run(number)` and exits with its code via `_exit`; it first takes
/// scoreboard slot `slot` as a child of `kind` (of worker pool `pool`, when there is a board)
/// and its process title (`name`, numbered for a worker).
///
/// The child gets a wake pipe and stop handlers of its own (installed while signals are
/// blocked, so a stop sent right after the fork is never lost), closes what only the supervisor
/// may hold (the PID file's lock), and gets SIGKILL when the supervisor dies: a supervisor that
/// was killed leaves nothing running, and a new one can start at once.
///
/// # Errors
/// [`ForkFailed`] when this process is not single-threaded or fork fails.
pub fn spawn_child(
    number: u32,
    slot: u32,
    kind: Kind,
    pool: Option<&str>,
    name: &str,
    run: &dyn Fn(u32) -> i32,
) -> Result<Pid, ForkFailed> {
    process::fork_child(signals::reset_for_child, || {
        if slot != u32::MAX {
            current::enter(slot, kind, number, pool.filter(|_| kind == Kind::Worker));
            if kind != Kind::Worker {
                // Running at once; a worker is idle once its plugins are loaded.
                current::state(crate::scoreboard::State::Idle);
            }
        }
        match kind {
            // `worker 2`, or a pool's `reports worker 2`.
            Kind::Worker => proctitle::set(name, Some(number)),
            Kind::Free => {}
            _ => proctitle::set(kind.name(), None),
        }
        run(number)
    })
}
