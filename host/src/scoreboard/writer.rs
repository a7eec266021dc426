//! Writing one slot: each call is one seqlock write, stores into memory and no system call.

use super::{now_ms, Kind, Slot, State, TaskCounters, BUCKETS, TASKS};
use std::sync::atomic::{fence, Ordering};

/// Writes one slot. Each method is one seqlock write: stores into memory, no system call.
pub struct SlotWriter<'a> {
    slot: &'a Slot,
}

impl<'a> SlotWriter<'a> {
    pub(super) fn new(slot: &'a Slot) -> SlotWriter<'a> {
        SlotWriter { slot }
    }
}

impl SlotWriter<'_> {
    fn write(&self, f: impl FnOnce(&Slot)) {
        let seq = self.slot.seq.load(Ordering::Relaxed);
        // Odd: a write is under way. Written with a store, not fetch_add: one writer per slot.
        self.slot.seq.store(seq | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        f(self.slot);
        fence(Ordering::Release);
        self.slot.seq.store((seq | 1) + 1, Ordering::Release);
    }

    /// Claims the slot for a child just forked (called by the supervisor with its PID, or by
    /// the child itself) of worker pool `pool` (`None`: the default pool, or not a worker):
    /// clears what a previous child left.
    pub fn claim(&self, kind: Kind, number: u32, pool: Option<&str>, pid: u32, generation: u64) {
        self.write(|s| {
            s.kind.store(kind as u32, Ordering::Relaxed);
            s.number.store(number, Ordering::Relaxed);
            s.pool.set(pool.unwrap_or(""));
            s.pid.store(pid, Ordering::Relaxed);
            s.state.store(State::Starting as u32, Ordering::Relaxed);
            s.generation.store(generation, Ordering::Relaxed);
            s.since_ms.store(now_ms(), Ordering::Relaxed);
            for c in [&s.completed, &s.failed, &s.rss_bytes, &s.job_started_ms] {
                c.store(0, Ordering::Relaxed);
            }
            s.last_failure.set("");
            for t in &s.tasks {
                t.name.set("");
                for c in [&t.completed, &t.failed, &t.duration_us, &t.cpu_us, &t.max_rss_bytes] {
                    c.store(0, Ordering::Relaxed);
                }
                for b in &t.buckets {
                    b.store(0, Ordering::Relaxed);
                }
            }
            for p in &s.plugins {
                p.name.set("");
                p.version.set("");
            }
        });
    }

    /// Frees the slot (its child was reaped and not replaced).
    pub fn release(&self) {
        self.write(|s| {
            s.kind.store(Kind::Free as u32, Ordering::Relaxed);
            s.state.store(State::Exited as u32, Ordering::Relaxed);
        });
    }

    /// Sets the state (idle, stopping, ...), since now.
    pub fn state(&self, state: State) {
        self.write(|s| {
            s.state.store(state as u32, Ordering::Relaxed);
            s.since_ms.store(now_ms(), Ordering::Relaxed);
        });
    }

    /// Names the plugins the child loaded, with their versions, and the tasks it serves (their
    /// counters start at zero; a task past [`TASKS`] is counted under the last entry).
    pub fn loaded<'p>(&self, plugins: impl IntoIterator<Item = (&'p str, &'p str)>, tasks: &[&str]) {
        self.write(|s| {
            for (entry, (name, version)) in s.plugins.iter().zip(plugins) {
                entry.name.set(name);
                entry.version.set(version);
            }
            for (i, entry) in s.tasks.iter().enumerate() {
                let name = match tasks.get(i) {
                    Some(_) if i == TASKS - 1 && tasks.len() > TASKS => "*",
                    Some(name) => name,
                    None => "",
                };
                entry.name.set(name);
            }
        });
    }

    /// A job was taken: busy with it, since now.
    pub fn busy(&self, task: &str, id: &str, handle: &str, server: &str) {
        self.write(|s| {
            let now = now_ms();
            s.state.store(State::Busy as u32, Ordering::Relaxed);
            s.since_ms.store(now, Ordering::Relaxed);
            s.job_started_ms.store(now, Ordering::Relaxed);
            s.job_task.set(task);
            s.job_id.set(id);
            s.job_handle.set(handle);
            s.job_server.set(server);
        });
    }

    /// The job in hand ended after `seconds`: counted for its task, the slot idle again.
    /// `cost` is the job child's CPU seconds and peak RSS under `--atomic`.
    pub fn done(&self, task: &str, seconds: f64, failure: Option<&str>, cost: Option<(f64, u64)>) {
        self.write(|s| {
            let counters =
                s.tasks.iter().find(|t| t.name_is(task)).or_else(|| s.tasks.last().filter(|t| t.name_is("*")));
            if failure.is_some() {
                s.failed.fetch_add(1, Ordering::Relaxed);
            } else {
                s.completed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(message) = failure {
                s.last_failure.set(message);
            }
            if let Some(t) = counters {
                let outcome = if failure.is_some() { &t.failed } else { &t.completed };
                outcome.fetch_add(1, Ordering::Relaxed);
                t.duration_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
                let bucket = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
                t.buckets[bucket].fetch_add(1, Ordering::Relaxed);
                if let Some((cpu, rss)) = cost {
                    t.cpu_us.fetch_add((cpu * 1e6) as u64, Ordering::Relaxed);
                    t.max_rss_bytes.fetch_max(rss, Ordering::Relaxed);
                }
            }
            s.state.store(State::Idle as u32, Ordering::Relaxed);
            s.since_ms.store(now_ms(), Ordering::Relaxed);
        });
    }

    /// Its resident memory, as last measured.
    pub fn rss(&self, bytes: u64) {
        self.write(|s| s.rss_bytes.store(bytes, Ordering::Relaxed));
    }
}

impl TaskCounters {
    pub(crate) fn name_is(&self, name: &str) -> bool {
        let bytes = name.as_bytes();
        let n = self.name.0.len();
        if bytes.len() > n {
            return false;
        }
        self.name.0.iter().enumerate().all(|(i, b)| b.load(Ordering::Relaxed) == bytes.get(i).copied().unwrap_or(0))
    }
}
