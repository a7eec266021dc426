//! A job's life once created: into its queue or timer ([`Server::enqueue`]), from state to
//! state ([`Server::set_state`], the one place that changes a job's state and keeps its
//! function's counters exact), woken workers, timers that fire, and its end: finished, dropped
//! when no client waits, requeued when its worker vanished, or failed after `job_retries`.
//!
//! It must not: do I/O (answers are appended to peers' output).

use super::jobs::{Job, JobId, JobState, Stored};
use super::queue::rank;
use super::{now_ms, Server};
use crate::gearman::packet::Packet;
use std::time::Instant;

impl Server {
    /// Adds a job to the table and to its queue or timer; wakes its workers when asked.
    pub(super) fn enqueue(&mut self, job: Job, wake: bool) {
        let id = job.id;
        self.admit(job);
        self.queue(id, wake);
    }

    /// Adds a job to the table (it counts as queued or scheduled) without putting it in its
    /// queue or timer: no worker is handed it until [`Server::queue`].
    pub(super) fn admit(&mut self, job: Job) {
        self.functions.count(&job.function, None, Some(job.state));
        self.jobs.insert(job);
    }

    /// Puts an admitted job in its queue (waking its workers when asked) or its timer.
    pub(super) fn queue(&mut self, id: JobId, wake: bool) {
        let Some(job) = self.jobs.get(id) else { return };
        let (function, rank) = (job.function.clone(), rank(job.priority));
        match job.state {
            JobState::Scheduled(at) => self.timers.schedule(at, id),
            JobState::Queued => {
                self.functions.entry(&function).queues[rank].push_back(id);
                if wake {
                    self.wake(&function);
                }
            }
            JobState::Running { .. } => {}
        }
    }

    /// The commit that carried job `id` (its insert, or the answer to its submission) failed:
    /// the submission is refused, so the job is taken back. A job `created` for it is dropped;
    /// a foreground job a background submission had joined is foreground again (and dropped
    /// when no client waits for it).
    pub(super) fn take_back(&mut self, id: JobId, created: bool) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.stored == Stored::Pending {
            job.stored = Stored::No;
        }
        if created {
            if job.background {
                // Whoever joined a background job waiting for its commit was held too, and
                // is refused with it.
                return self.finish(id);
            }
            // A foreground job made on a connection whose answers were held (an earlier
            // background submission of the same turn): that connection is refused, but a
            // client on another connection may have joined the job and been told
            // JOB_CREATED at once. The job is theirs now; dropping it left them waiting forever.
            let held = &self.held;
            job.clients.retain(|client| !held.contains(client));
            if job.clients.is_empty() {
                return self.finish(id);
            }
            return self.queue(id, true);
        }
        if job.stored == Stored::No {
            job.background = false;
            if job.clients.is_empty() && !matches!(job.state, JobState::Running { .. }) {
                self.finish(id);
            }
        }
    }

    /// Moves job `id` to `state`, keeping its function's counters (queued, scheduled, running).
    /// Putting it in a queue or timer is the caller's.
    pub(super) fn set_state(&mut self, id: JobId, state: JobState) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        self.functions.count(&job.function, Some(job.state), Some(state));
        job.state = state;
    }

    /// Sends NOOP to every sleeping worker of `function` not yet woken.
    pub(super) fn wake(&mut self, function: &[u8]) {
        let Server { functions, peers, dirty, .. } = self;
        let Some(f) = functions.get(function) else { return };
        for token in &f.workers {
            let Some(peer) = peers.get_mut(token) else { continue };
            if peer.sleeping && !peer.noop_sent {
                peer.noop_sent = true;
                peer.send(&Packet::Noop);
                if !peer.dirty {
                    peer.dirty = true;
                    dirty.push(*token);
                }
            }
        }
    }

    /// Moves scheduled jobs that came due into their queues, and requeues (or fails) running
    /// jobs past their `CAN_DO_TIMEOUT`.
    pub(super) fn fire_timers(&mut self) {
        for id in self.timers.take_due(now_ms()) {
            let Some(job) = self.jobs.get(id) else { continue };
            if !matches!(job.state, JobState::Scheduled(_)) {
                continue;
            }
            let (function, rank) = (job.function.clone(), rank(job.priority));
            self.set_state(id, JobState::Queued);
            self.functions.entry(&function).queues[rank].push_back(id);
            self.wake(&function);
        }
        for (id, assignment) in self.timers.take_expired(Instant::now()) {
            let Some(job) = self.jobs.get(id) else { continue };
            if let JobState::Running { worker, assignment: a, .. } = job.state {
                if a == assignment {
                    if let Some(peer) = self.peers.get_mut(&worker) {
                        peer.in_hand.remove(&id);
                    }
                    self.lost(id);
                }
            }
        }
    }

    /// Removes a job that ended (or was dropped) everywhere it is known.
    pub(super) fn finish(&mut self, id: JobId) {
        let Some(job) = self.jobs.remove(id) else { return };
        self.functions.count(&job.function, Some(job.state), None);
        if let JobState::Running { worker, .. } = job.state {
            if let Some(peer) = self.peers.get_mut(&worker) {
                peer.in_hand.remove(&id);
            }
        }
        self.functions.tidy(&job.function);
        for client in &job.clients {
            if let Some(peer) = self.peers.get_mut(client) {
                peer.attached.remove(&id);
            }
        }
        if job.stored != Stored::No {
            if let Some(store) = &mut self.store {
                store.delete(id);
            }
        }
    }

    /// Client `token` left: a foreground job no one waits for any more is dropped unless running.
    pub(super) fn detach(&mut self, id: JobId, token: mio::Token) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        job.clients.retain(|&c| c != token);
        if !job.background && job.clients.is_empty() && !matches!(job.state, JobState::Running { .. }) {
            self.finish(id);
        }
    }

    /// The worker running job `id` vanished or ran out of time (the caller took the job out
    /// of its hands): requeue it, or fail it once it has run `job_retries` times (gearmand's
    /// `--job-retries`: N runs, 0 no limit).
    pub(super) fn lost(&mut self, id: JobId) {
        let job_retries = self.options.job_retries;
        let Some(job) = self.jobs.get_mut(id) else { return };
        if !matches!(job.state, JobState::Running { .. }) {
            return;
        }
        if !job.background && job.clients.is_empty() {
            return self.finish(id);
        }
        job.retries += 1;
        if job_retries > 0 && job.retries >= job_retries {
            let handle = self.jobs.handle(id);
            let job = self.jobs.get(id).expect("looked up above");
            log::warn!(
                "job {} ({}) lost its worker {} times: failed",
                String::from_utf8_lossy(&handle),
                String::from_utf8_lossy(&job.function),
                job.retries
            );
            for client in job.clients.clone() {
                self.send(client, &Packet::WorkFail { handle: handle.clone() });
            }
            return self.finish(id);
        }
        // Requeued: its progress starts again (GET_STATUS says 0/0 while queued, as gearmand).
        job.numerator = 0;
        job.denominator = 0;
        let (function, rank) = (job.function.clone(), rank(job.priority));
        self.set_state(id, JobState::Queued);
        self.functions.entry(&function).queues[rank].push_front(id);
        self.wake(&function);
    }
}
