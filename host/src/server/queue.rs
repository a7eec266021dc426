//! Per-function queues (one per priority), the workers of each function, and the server's two
//! timers: scheduled jobs coming due (wall clock) and running jobs past their `CAN_DO_TIMEOUT`
//! (monotonic clock).
//!
//! Queues hold job ids only and are cleaned lazily: a job dropped while queued (its client
//! left) stays in the deque until a grab pops and skips it, while the counters shown by
//! `status` are kept exact. It must not: decide what happens to a job (that is `lifecycle.rs`).

use super::jobs::{JobId, JobState};
use crate::gearman::packet::Priority;
use mio::Token;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

/// The queue index of a priority: high first.
pub(super) fn rank(priority: Priority) -> usize {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// One function.
#[derive(Debug, Default)]
pub(super) struct Function {
    /// High, normal, low.
    pub queues: [VecDeque<JobId>; 3],
    /// Live jobs in the queues (the deques may still hold dropped ones).
    pub queued: u64,
    /// Jobs waiting for their time.
    pub scheduled: u64,
    /// Jobs on a worker.
    pub running: u64,
    /// Connections that registered it.
    pub workers: Vec<Token>,
    /// `maxqueue`: most jobs (queued, scheduled or running) per priority (high, normal, low)
    /// before a submission of that priority is refused; 0 is no limit.
    pub max_queue: [u32; 3],
    /// Made by the admin `create function`: kept while idle, until `drop function`.
    pub created: bool,
}

impl Function {
    /// `status`'s total: queued, scheduled and running.
    pub fn total(&self) -> u64 {
        self.queued + self.scheduled + self.running
    }

    /// The counter of jobs in `state`.
    fn counter(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Scheduled(_) => &mut self.scheduled,
            JobState::Running { .. } => &mut self.running,
        }
    }

    /// Whether a submission of queue rank `rank` is over the `maxqueue` limit (gearmand counts
    /// every job of the function, running ones included).
    pub fn is_full(&self, rank: usize) -> bool {
        let max = u64::from(self.max_queue[rank]);
        max > 0 && self.total() >= max
    }

    /// Whether it holds nothing worth remembering (it can be forgotten).
    pub fn is_idle(&self) -> bool {
        self.total() == 0 && self.workers.is_empty() && self.max_queue == [0; 3] && !self.created
    }
}

/// Every function, by name.
#[derive(Default)]
pub(super) struct Functions(pub HashMap<Vec<u8>, Function>);

impl Functions {
    pub fn entry(&mut self, name: &[u8]) -> &mut Function {
        if !self.0.contains_key(name) {
            self.0.insert(name.to_vec(), Function::default());
        }
        self.0.get_mut(name).expect("just inserted")
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut Function> {
        self.0.get_mut(name)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Function> {
        self.0.get(name)
    }

    /// Keeps `name`'s counters as one of its jobs goes from state `from` to `to` (`None`: not
    /// in the job table): the only writer of the counters, called as a job enters the table,
    /// changes state ([`super::Server::set_state`]) and leaves it.
    pub fn count(&mut self, name: &[u8], from: Option<JobState>, to: Option<JobState>) {
        let f = self.entry(name);
        if let Some(state) = from {
            *f.counter(state) -= 1;
        }
        if let Some(state) = to {
            *f.counter(state) += 1;
        }
    }

    /// Forgets `name` when idle.
    pub fn tidy(&mut self, name: &[u8]) {
        if self.0.get(name).is_some_and(Function::is_idle) {
            self.0.remove(name);
        }
    }
}

/// The two timers.
#[derive(Default)]
pub(super) struct Timers {
    /// (due, Unix milliseconds; job).
    due: BinaryHeap<Reverse<(u64, JobId)>>,
    /// (deadline; job, assignment).
    deadlines: BinaryHeap<Reverse<(Instant, JobId, u64)>>,
}

impl Timers {
    pub fn schedule(&mut self, at_ms: u64, job: JobId) {
        self.due.push(Reverse((at_ms, job)));
    }

    pub fn deadline(&mut self, at: Instant, job: JobId, assignment: u64) {
        self.deadlines.push(Reverse((at, job, assignment)));
    }

    /// Scheduled jobs due at `now_ms`, removed from the timer.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<JobId> {
        let mut due = Vec::new();
        while let Some(Reverse((at, job))) = self.due.peek().copied() {
            if at > now_ms {
                break;
            }
            self.due.pop();
            due.push(job);
        }
        due
    }

    /// Run deadlines passed at `now`, removed from the timer.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(JobId, u64)> {
        let mut expired = Vec::new();
        while let Some(Reverse((at, job, assignment))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            expired.push((job, assignment));
        }
        expired
    }

    /// How long the event loop may sleep: until the next timer, if any.
    pub fn next_wait(&self, now_ms: u64, now: Instant) -> Option<std::time::Duration> {
        let due = self.due.peek().map(|Reverse((at, _))| std::time::Duration::from_millis(at.saturating_sub(now_ms)));
        let deadline = self.deadlines.peek().map(|Reverse((at, _, _))| at.saturating_duration_since(now));
        match (due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_due_in_order() {
        let mut timers = Timers::default();
        let now = Instant::now();
        timers.schedule(2000, 2);
        timers.schedule(1000, 1);
        assert_eq!(timers.next_wait(500, now), Some(std::time::Duration::from_millis(500)));
        assert_eq!(timers.take_due(1500), vec![1]);
        assert_eq!(timers.take_due(2500), vec![2]);
        assert_eq!(timers.next_wait(2500, now), None);
        timers.deadline(now, 7, 1);
        assert_eq!(timers.take_expired(now), vec![(7, 1)]);
    }

    #[test]
    fn idle_functions_are_forgotten() {
        let mut functions = Functions::default();
        functions.count(b"f", None, Some(JobState::Queued));
        functions.tidy(b"f");
        assert!(functions.get(b"f").is_some());
        functions.count(b"f", Some(JobState::Queued), Some(JobState::Scheduled(1)));
        assert_eq!((functions.get(b"f").unwrap().queued, functions.get(b"f").unwrap().total()), (0, 1));
        functions.count(b"f", Some(JobState::Scheduled(1)), None);
        functions.tidy(b"f");
        assert!(functions.get(b"f").is_none());
    }
}
