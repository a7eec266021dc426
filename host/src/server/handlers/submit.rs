//! `SUBMIT_JOB` in every flavour (normal, high, low; foreground or background) and
//! `SUBMIT_JOB_EPOCH`: a new job, or a client joining the job it coalesces with.
//!
//! Under `--store`, a background job is written at the turn's commit and its `JOB_CREATED` is
//! held until then (`net.rs`), so a job a client was told about is on disk. A job whose
//! `JOB_CREATED` is held is not handed to a worker before the commit either: if the commit
//! fails, the submission is refused and the job taken back (`lifecycle.rs`), never run.

use super::error;
use crate::gearman::packet::{Packet, Priority};
use crate::server::jobs::{Job, JobId, Stored, Submission};
use crate::server::queue::rank;
use crate::server::store::Store;
use crate::server::{now_ms, Server};
use mio::Token;

/// gearmand's limit on unique keys: 64 bytes.
const MAX_UNIQUE: usize = 64;

impl Server {
    /// A submission from `token` (`packet` is a `SubmitJob` or a `SubmitJobEpoch`).
    pub(super) fn submit(&mut self, token: Token, packet: Packet) {
        let Some(submission) = submission(packet) else { return };
        if submission.unique.len() > MAX_UNIQUE {
            return self.send(token, &error("ARGUMENT_TOO_LARGE", "unique key over 64 bytes"));
        }
        if let Some(id) = self.jobs.find_unique(&submission.function, &submission.unique, &submission.workload) {
            return self.join(token, id, submission.background);
        }
        if self.functions.get(&submission.function).is_some_and(|f| f.is_full(rank(submission.priority))) {
            return self.send(token, &error("QUEUE_ERROR", "Job queue is full"));
        }
        let id = self.jobs.next_id();
        let mut job = Job::new(id, submission, now_ms());
        if job.background {
            store_job(&mut self.store, &mut job);
        } else {
            job.clients.push(token);
            if let Some(peer) = self.peers.get_mut(&token) {
                peer.attached.insert(id);
            }
        }
        if job.stored == Stored::Pending {
            self.hold(token);
        }
        let handle = self.jobs.handle(id);
        self.send(token, &Packet::JobCreated { handle });
        if self.peers.get(&token).is_some_and(|peer| peer.is_held()) {
            // Its JOB_CREATED waits for the commit: so does every worker. A failed commit
            // refuses the submission, and a refused job must not have run.
            self.admit(job);
            self.awaiting_commit.push((id, true));
        } else {
            self.enqueue(job, true);
        }
    }

    /// `token` submitted what coalesces with job `id`: it joins it.
    fn join(&mut self, token: Token, id: JobId, background: bool) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if !background {
            // One entry per submission, as gearmand: a client that submits twice under one
            // unique key gets every answer twice, once per task (PHP's runTasks waits for both).
            job.clients.push(token);
        }
        let mut upgraded = false;
        if background && !job.background {
            // A background submission that joins a foreground job makes it a background job:
            // it must outlive its foreground clients and, under --store, be durable before
            // this JOB_CREATED, like any background job.
            job.background = true;
            store_job(&mut self.store, job);
            upgraded = job.stored == Stored::Pending;
        }
        let pending = job.stored == Stored::Pending;
        if !background {
            if let Some(peer) = self.peers.get_mut(&token) {
                peer.attached.insert(id);
            }
        }
        // The job it joins may still wait for this turn's commit: so does this answer.
        if pending {
            self.hold(token);
        }
        if upgraded {
            self.awaiting_commit.push((id, false));
        }
        let handle = self.jobs.handle(id);
        self.send(token, &Packet::JobCreated { handle });
    }
}

/// Writes `job` to the store at this turn's commit, if there is a store and it is not there yet.
fn store_job(store: &mut Option<Store>, job: &mut Job) {
    if let (Some(store), Stored::No) = (store, job.stored) {
        store.insert(job.row());
        job.stored = Stored::Pending;
    }
}

/// What a submission packet asks for.
fn submission(packet: Packet) -> Option<Submission> {
    Some(match packet {
        Packet::SubmitJob { priority, background, function, unique, workload } => {
            Submission { priority, background, function, unique, workload, when_ms: None }
        }
        Packet::SubmitJobEpoch { function, unique, epoch, workload } => Submission {
            priority: Priority::Normal,
            background: true,
            function,
            unique,
            workload,
            when_ms: Some(epoch.saturating_mul(1000)),
        },
        _ => return None,
    })
}
