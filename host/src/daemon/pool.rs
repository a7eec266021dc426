//! The supervision loop, for children of several kinds.
//!
//! What a child is comes from one data type, [`ChildSpec`] (after Erlang/OTP's child spec and
//! supervisord's `[program:x]`): a name, how many to keep, a [`Restart`] policy with the exit
//! codes that are expected (a recycle is not a crash), a spawn limit, whether `restart`
//! (SIGHUP) replaces it, and the function the forked child runs. Workers are one kind; a
//! scheduler or an embedded job server are others. One loop applies the specs to every kind.
//!
//! State lives in one place, [`Pool`]: the live children by PID, and per kind how many were
//! spawned, the respawns owed and the backoff. The loop reaps exited children, reacts to
//! signals (through the self-pipe in [`crate::signals`]), spawns what is owed, and waits.
//!
//! Recycling: a kind with a [`MaxAge`](super::recycle::MaxAge) has each child recycled when its
//! time comes (picked at spawn, spread by [`super::recycle`]): SIGUSR2, the child finishes what
//! it is doing and exits with [`EXIT_RECYCLE`], and it is replaced at once whatever the
//! [`Restart`] policy.
//!
//! Restarting (SIGHUP): [`PoolOptions::before_restart`] prepares what the new children need (or
//! refuses, leaving every child as it is); then each child of a kind that reloads is asked to
//! stop after what it is doing while its replacement is spawned beside it.
//!
//! Stopping: the first SIGTERM/SIGINT asks the children to stop (SIGTERM: a worker finishes the
//! job in hand), kind by kind in reverse start order; a second one passes SIGTERM on again (a worker's second: it kills its job's
//! process group and leaves) and SIGKILLs whatever is left [`KILL_GRACE`] later.
//!
//! Must not: load plugins, start threads, or block anywhere but in its one wait.

use super::child_spec::Replacement;
pub use super::child_spec::{ChildSpec, Restart, EXIT_RECYCLE, FAST_FAILURE};
use super::recycle::{self, Rng};
use super::spawn::spawn_child;
use crate::log::Log;
use crate::process::{self, Backoff};
use crate::scoreboard::{self, RestartReason};
use crate::signals;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// After a second stop signal, how long children get to leave before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How the pool runs.
pub struct PoolOptions<'a> {
    /// The kinds of children, started in this order.
    pub children: Vec<ChildSpec<'a>>,
    /// Where log lines go.
    pub log: Log,
    /// Run in the supervisor when a `restart` (SIGHUP) comes, before any child is touched:
    /// what the new children need prepared (the TLS files read again); `Err(why)` refuses the
    /// restart, the running children keep running, and `why` is logged and put on the
    /// scoreboard for `li3g-host restart` to print.
    pub before_restart: Option<&'a dyn Fn() -> Result<(), String>>,
}

impl std::fmt::Debug for PoolOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolOptions")
            .field("children", &self.children)
            .field("log", &self.log)
            .field("before_restart", &self.before_restart.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct Slot {
    kind: usize,
    number: u32,
    /// Its slot on the scoreboard.
    board_slot: u32,
    started: Instant,
    /// Asked to stop by a restart; not replaced when it ends.
    retiring: bool,
    /// When it is to be recycled (its kind has a [`MaxAge`](super::recycle::MaxAge)).
    recycle_at: Option<Instant>,
    /// Asked to end to be replaced (SIGUSR2 sent).
    recycling: bool,
}

/// Per kind: what was spawned and what is owed.
#[derive(Debug)]
struct Kind {
    spawned: u64,
    next_number: u32,
    owed: u32,
    respawn_at: Instant,
    backoff: Backoff,
    /// Asked to stop (in a graceful shutdown, kinds stop in reverse start order).
    stop_sent: bool,
}

/// The supervisor's state.
struct Pool<'a, 'b> {
    options: &'b PoolOptions<'a>,
    kinds: Vec<Kind>,
    children: BTreeMap<Pid, Slot>,
    /// Scoreboard slots no live child has.
    free_slots: Vec<u32>,
    stopping: bool,
    /// When set, a second stop came: SIGKILL what is left at this time.
    kill_at: Option<Instant>,
    killed: bool,
    /// For the recycle times' splay.
    rng: Rng,
}

impl Pool<'_, '_> {
    fn log(&self, message: &str) {
        self.options.log.daemon(message);
    }

    fn spawn(&mut self, kind: usize) {
        let spec = &self.options.children[kind];
        let state = &mut self.kinds[kind];
        if spec.limit != 0 && state.spawned >= spec.limit {
            state.owed = 0;
            self.log(&format!("Limit of {} {}s reached; not spawning more", spec.limit, spec.name));
            return;
        }
        let number = state.next_number;
        // No slot left (more children than the board was made for): the child runs unseen.
        let board_slot = self.free_slots.pop().unwrap_or(u32::MAX);
        match spawn_child(number, board_slot, spec.kind, spec.pool.as_deref(), &spec.name, &*spec.run) {
            Ok(pid) => {
                state.next_number += 1;
                state.spawned += 1;
                let started = Instant::now();
                let recycle_at = spec.max_age.map(|max| {
                    let others: Vec<Instant> =
                        self.children.values().filter(|s| !s.recycling).filter_map(|s| s.recycle_at).collect();
                    recycle::pick(started, max, &others, self.rng.unit())
                });
                let slot = Slot { kind, number, board_slot, started, retiring: false, recycle_at, recycling: false };
                self.children.insert(pid, slot);
                self.log(&format!("Created {} number {number} with PID {pid}", spec.name));
            }
            Err(err) => {
                if board_slot != u32::MAX {
                    self.free_slots.push(board_slot);
                }
                self.log(&format!("Could not create {} number {number}: {err}", spec.name));
                self.owe(kind, true);
            }
        }
    }

    /// Records a respawn owed; a fast failure delays it (doubling), a normal end does not.
    fn owe(&mut self, kind: usize, fast: bool) {
        let spec = &self.options.children[kind];
        let state = &mut self.kinds[kind];
        state.owed += 1;
        if fast {
            let delay = state.backoff.failed();
            state.respawn_at = Instant::now() + delay;
            self.log(&format!("{}s are failing fast; next spawn in {delay:?}", spec.capitalised()));
        } else {
            state.backoff.reset();
        }
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, EXIT_RECYCLE) => (pid, "ended to be replaced".to_string()),
                WaitStatus::Exited(pid, code) => (pid, format!("exited with code {code}")),
                WaitStatus::Signaled(pid, sig, _) => (pid, format!("was killed by {}", sig.as_str())),
                _ => continue,
            };
            let Some(slot) = self.children.remove(&pid) else { continue };
            let spec = &self.options.children[slot.kind];
            self.log(&format!("{} number {} with PID {pid} {how}", spec.capitalised(), slot.number));
            let recycled = slot.recycling && matches!(status, WaitStatus::Exited(_, EXIT_RECYCLE));
            let replacement =
                if recycled { Replacement::Now } else { spec.replacement(&status, slot.started.elapsed()) };
            if let Some(board) = scoreboard::current::board() {
                if let Some(writer) = board.writer(slot.board_slot) {
                    board.retire(slot.board_slot);
                    writer.release();
                    self.free_slots.push(slot.board_slot);
                }
                let replaced = (replacement != Replacement::None && !self.stopping) || slot.retiring;
                if replaced {
                    let reason = match status {
                        _ if recycled || slot.retiring || spec.expected(&status) => RestartReason::Recycled,
                        WaitStatus::Signaled(..) => RestartReason::Killed,
                        _ => RestartReason::Crashed,
                    };
                    board.count_restart(spec.kind, reason);
                }
            }
            if replacement != Replacement::None && !self.stopping && !slot.retiring {
                self.owe(slot.kind, replacement == Replacement::AfterBackoff);
            }
        }
    }

    /// Asks the children whose recycle time has come to end after what they are doing.
    fn recycle_due(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        let log = self.options.log;
        for (pid, slot) in &mut self.children {
            if slot.recycling || slot.retiring || slot.recycle_at.is_none_or(|at| now < at) {
                continue;
            }
            slot.recycling = true;
            let spec = &self.options.children[slot.kind];
            let age = slot.started.elapsed().as_secs_f64();
            log.daemon(&format!(
                "{} number {} with PID {pid} is {age:.1}s old (max age {}s): recycling it after the job in hand",
                spec.capitalised(),
                slot.number,
                spec.max_age.map(|max| max.age.as_secs_f64()).unwrap_or_default()
            ));
            let _ = kill(*pid, Signal::SIGUSR2);
        }
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.children.keys() {
            let _ = kill(*pid, signal);
        }
    }

    fn handle_signals(&mut self) {
        if signals::stop_requested() && !self.stopping {
            self.stopping = true;
            for state in &mut self.kinds {
                state.owed = 0;
            }
            self.log("Shutting down: workers finish the job in hand");
        }
        if self.stopping {
            self.stop_in_order();
        }
        if signals::stop_count() >= 2 && self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + KILL_GRACE);
            self.log("Second stop signal: workers stop now, killing their jobs");
            self.signal_all(Signal::SIGTERM);
        }
        if self.kill_at.is_some_and(|at| Instant::now() >= at) && !self.killed {
            self.killed = true;
            self.log("Killing what is left");
            self.signal_all(Signal::SIGKILL);
        }
        if signals::take_reopen_log() {
            // The supervisor's own descriptor; the children are not signalled (a signal
            // interrupts a job's blocking calls, failing it with EINTR): each reopens the log
            // file at its next line once the path no longer names its file (logrotate renamed it).
            self.log("Reopening the log file (SIGUSR1)");
        }
        if signals::take_reload() && !self.stopping {
            if let Some(Err(why)) = self.options.before_restart.map(|prepare| prepare()) {
                self.log(&format!("Restart refused: {why}; the workers keep running as they are"));
                if let Some(board) = scoreboard::current::board() {
                    board.refuse_restart(&why);
                }
                return;
            }
            self.log("Restarting: new workers load the plugins afresh, old ones finish their job");
            if let Some(board) = scoreboard::current::board() {
                board.next_generation();
            }
            for (pid, slot) in &mut self.children {
                // A child retiring from an earlier restart was told already: a second SIGTERM
                // would be a second stop, which kills an `--atomic` worker's job in hand.
                if self.options.children[slot.kind].reload && !slot.retiring {
                    slot.retiring = true;
                    let _ = kill(*pid, Signal::SIGTERM);
                }
            }
            for (kind, spec) in self.options.children.iter().enumerate() {
                if spec.reload {
                    self.kinds[kind].owed = 0;
                    self.kinds[kind].backoff.reset();
                    for _ in 0..spec.count {
                        self.spawn(kind);
                    }
                }
            }
        }
    }

    /// Sends SIGTERM to the kinds whose turn it is: the last kind first, and each earlier one
    /// once no child of a later kind is left (as Erlang/OTP stops children in reverse start
    /// order), so workers finish their jobs while what they depend on, started before them (an
    /// embedded job server), still runs.
    fn stop_in_order(&mut self) {
        let mut alive = vec![false; self.kinds.len()];
        for slot in self.children.values() {
            alive[slot.kind] = true;
        }
        let sent: Vec<bool> = self.kinds.iter().map(|state| state.stop_sent).collect();
        for kind in kinds_to_stop(&alive, &sent) {
            self.kinds[kind].stop_sent = true;
            for (pid, slot) in &self.children {
                if slot.kind == kind {
                    let _ = kill(*pid, Signal::SIGTERM);
                }
            }
        }
    }

    fn spawn_owed(&mut self) {
        for kind in 0..self.kinds.len() {
            while self.kinds[kind].owed > 0 && !self.stopping && Instant::now() >= self.kinds[kind].respawn_at {
                self.kinds[kind].owed -= 1;
                self.spawn(kind);
            }
        }
    }

    fn owed(&self) -> bool {
        self.kinds.iter().any(|state| state.owed > 0)
    }

    fn wait(&self) {
        let now = Instant::now();
        let respawn = self.kinds.iter().filter(|state| state.owed > 0).map(|state| state.respawn_at);
        let kill = self.kill_at.filter(|_| !self.killed);
        let recycle = self
            .children
            .values()
            .filter(|slot| !slot.recycling && !slot.retiring && !self.stopping)
            .filter_map(|slot| slot.recycle_at);
        let timeout = respawn.chain(kill).chain(recycle).min().map(|at| at.saturating_duration_since(now));
        if let Some(wake) = signals::wake_fd() {
            let _ = process::poll(&mut [PollFd::new(wake, PollFlags::POLLIN)], timeout);
            signals::drain_wake();
        } else if let Some(timeout) = timeout {
            std::thread::sleep(timeout);
        }
    }
}

/// The kinds to ask to stop now, given which have live children and which were asked already:
/// from the last kind backwards, up to the first one with a later kind still alive.
fn kinds_to_stop(alive: &[bool], sent: &[bool]) -> Vec<usize> {
    let mut now = Vec::new();
    for kind in (0..alive.len()).rev() {
        if alive[kind + 1..].iter().any(|&a| a) {
            break;
        }
        if !sent[kind] {
            now.push(kind);
        }
    }
    now
}

/// Runs the pool until it is stopped, or until no child is left and none is owed (without
/// `--resuscitate`, or once `--limit` is reached). Returns the process's exit code.
///
/// Call [`signals::install_daemon`] first.
pub fn supervise(options: &PoolOptions) -> i32 {
    let kinds = options
        .children
        .iter()
        .map(|_| Kind {
            spawned: 0,
            next_number: 1,
            owed: 0,
            respawn_at: Instant::now(),
            backoff: Backoff::DEFAULT,
            stop_sent: false,
        })
        .collect();
    let slots = scoreboard::current::board().map_or(0, scoreboard::Scoreboard::slots);
    let mut pool = Pool {
        options,
        kinds,
        children: BTreeMap::new(),
        free_slots: (0..slots).rev().collect(),
        stopping: false,
        kill_at: None,
        killed: false,
        rng: Rng::new(),
    };
    for (kind, spec) in options.children.iter().enumerate() {
        pool.log(&format!("Starting {}", crate::worker::startup::plural(spec.count as usize, &spec.name)));
        for _ in 0..spec.count {
            pool.spawn(kind);
        }
    }
    loop {
        signals::take_child();
        pool.reap();
        pool.handle_signals();
        pool.recycle_due();
        pool.spawn_owed();
        if pool.children.is_empty() && (pool.stopping || !pool.owed()) {
            pool.log("No children left; exiting");
            return 0;
        }
        pool.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_stop_in_reverse_start_order() {
        // server (0), scheduler (1), workers (2): the workers first.
        assert_eq!(kinds_to_stop(&[true, true, true], &[false; 3]), [2]);
        assert_eq!(kinds_to_stop(&[true, true, true], &[false, false, true]), Vec::<usize>::new());
        // The workers are gone: the scheduler, then (once it is gone too) the server.
        assert_eq!(kinds_to_stop(&[true, true, false], &[false, false, true]), [1]);
        assert_eq!(kinds_to_stop(&[true, false, false], &[false, true, true]), [0]);
        // Kinds without children are passed over at once.
        assert_eq!(kinds_to_stop(&[true, false, false], &[false; 3]), [2, 1, 0]);
    }
}
