//! The supervision loop.
//!
//! State lives in one place, [`Pool`]: the live workers by PID, how many were ever spawned,
//! and the respawns owed. The loop reaps exited workers, reacts to signals (through the
//! self-pipe in [`crate::signals`]), spawns what is owed, and waits in `poll(2)`.

use super::spawn::spawn_worker;
use crate::log::Log;
use crate::signals;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// How many workers to keep.
    pub workers: u32,
    /// How many workers may be spawned in total; 0 for no limit.
    pub limit: u64,
    /// Respawn workers that end.
    pub resuscitate: bool,
    /// Where log lines go.
    pub log: Log,
}

/// A worker that lived less than this failed fast: its replacement waits (backoff).
const FAST_FAILURE: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Slot {
    number: u32,
    started: Instant,
    /// Asked to stop by a restart; not replaced when it ends.
    retiring: bool,
}

/// The supervisor's state.
struct Pool<'a> {
    options: &'a PoolOptions,
    work: &'a dyn Fn(u32) -> i32,
    workers: BTreeMap<Pid, Slot>,
    spawned: u64,
    next_number: u32,
    owed: u32,
    respawn_at: Instant,
    backoff: Duration,
    stopping: bool,
    killed: bool,
}

impl Pool<'_> {
    fn may_spawn(&self) -> bool {
        self.options.limit == 0 || self.spawned < self.options.limit
    }

    fn spawn(&mut self) {
        if !self.may_spawn() {
            self.options.log.daemon(&format!("Limit of {} workers reached; not spawning more", self.options.limit));
            self.owed = 0;
            return;
        }
        let number = self.next_number;
        match spawn_worker(number, self.work) {
            Ok(pid) => {
                self.next_number += 1;
                self.spawned += 1;
                self.workers.insert(pid, Slot { number, started: Instant::now(), retiring: false });
                self.options.log.daemon(&format!("Created worker number {number} with PID {pid}"));
            }
            Err(err) => {
                self.options.log.daemon(&format!("Could not create worker number {number}: {err}"));
                self.owe_one(true);
            }
        }
    }

    /// Records a respawn owed; a fast failure delays it (doubling), a normal end does not.
    fn owe_one(&mut self, fast: bool) {
        self.owed += 1;
        if fast {
            self.respawn_at = Instant::now() + self.backoff;
            self.options.log.daemon(&format!("Workers are failing fast; next spawn in {:?}", self.backoff));
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        } else {
            self.backoff = MIN_BACKOFF;
        }
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with code {code}")),
                WaitStatus::Signaled(pid, sig, _) => (pid, format!("was killed by {}", sig.as_str())),
                _ => continue,
            };
            let Some(slot) = self.workers.remove(&pid) else { continue };
            self.options.log.daemon(&format!("Worker number {} with PID {pid} {how}", slot.number));
            if self.options.resuscitate && !self.stopping && !slot.retiring {
                self.owe_one(slot.started.elapsed() < FAST_FAILURE);
            }
        }
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(*pid, signal);
        }
    }

    fn handle_signals(&mut self) {
        if signals::stop_requested() && !self.stopping {
            self.stopping = true;
            self.owed = 0;
            self.options.log.daemon("Shutting down: workers finish the job in hand");
            self.signal_all(Signal::SIGTERM);
        }
        if signals::stop_count() >= 2 && !self.killed {
            self.killed = true;
            self.options.log.daemon("Second stop signal: killing the workers now");
            self.signal_all(Signal::SIGKILL);
        }
        if signals::take_reload() && !self.stopping {
            self.options.log.daemon("Restarting: new workers load the plugins afresh, old ones finish their job");
            for (pid, slot) in &mut self.workers {
                slot.retiring = true;
                let _ = kill(*pid, Signal::SIGTERM);
            }
            self.owed = 0;
            self.backoff = MIN_BACKOFF;
            for _ in 0..self.options.workers {
                self.spawn();
            }
        }
    }

    fn wait(&self) {
        let fd = signals::wake_fd();
        let timeout = if self.owed > 0 {
            let left = self.respawn_at.saturating_duration_since(Instant::now());
            i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
        } else {
            -1
        };
        let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout) };
        signals::drain_wake();
    }
}

/// Runs the pool until it is stopped, or until no worker is left and none is owed (without
/// `--resuscitate`, or once `--limit` is reached). Returns the process's exit code.
///
/// Call [`signals::install_daemon`] first.
pub fn supervise(options: &PoolOptions, work: &dyn Fn(u32) -> i32) -> i32 {
    let mut pool = Pool {
        options,
        work,
        workers: BTreeMap::new(),
        spawned: 0,
        next_number: 1,
        owed: 0,
        respawn_at: Instant::now(),
        backoff: MIN_BACKOFF,
        stopping: false,
        killed: false,
    };
    options.log.daemon(&format!("Starting {} workers", options.workers));
    for _ in 0..options.workers {
        pool.spawn();
    }
    loop {
        signals::take_child();
        pool.reap();
        pool.handle_signals();
        while pool.owed > 0 && !pool.stopping && Instant::now() >= pool.respawn_at {
            pool.owed -= 1;
            pool.spawn();
        }
        if pool.workers.is_empty() && (pool.stopping || pool.owed == 0) {
            options.log.daemon("No workers left; exiting");
            return 0;
        }
        pool.wait();
    }
}
