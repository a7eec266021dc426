//! A worker asking for work: `PRE_SLEEP` (woken with `NOOP` when work comes) and `GRAB_JOB`,
//! `GRAB_JOB_UNIQ`, `GRAB_JOB_ALL` (answered `JOB_ASSIGN*` or `NO_JOB`).

use crate::gearman::packet::Packet;
use crate::server::jobs::{JobId, JobState};
use crate::server::Server;
use mio::Token;
use std::time::{Duration, Instant};

impl Server {
    /// `PRE_SLEEP`: the worker sleeps until a `NOOP`; sent at once when work already waits.
    pub(super) fn pre_sleep(&mut self, token: Token) {
        let Server { functions, peers, .. } = self;
        let Some(peer) = peers.get_mut(&token) else { return };
        peer.sleeping = true;
        peer.noop_sent = false;
        let work_waits = peer.abilities.iter().any(|a| functions.get(&a.function).is_some_and(|f| f.queued > 0));
        if work_waits {
            peer.noop_sent = true;
            peer.send(&Packet::Noop);
            self.touch(token);
        }
    }

    /// `GRAB_JOB*` (`how` says which): the next queued job the worker can do, highest priority
    /// first, its functions taken in turn.
    pub(super) fn grab(&mut self, token: Token, how: &Packet) {
        let Some(peer) = self.peers.get_mut(&token) else { return };
        peer.sleeping = false;
        let Some((id, timeout)) = self.next_job_for(token) else { return self.send(token, &Packet::NoJob) };
        self.assignments += 1;
        let since = Instant::now();
        self.set_state(id, JobState::Running { worker: token, assignment: self.assignments, since });
        if let Some(timeout) = timeout {
            self.timers.deadline(since + timeout, id, self.assignments);
        }
        if let Some(peer) = self.peers.get_mut(&token) {
            peer.in_hand.insert(id);
        }
        let job = self.jobs.get(id).expect("just assigned");
        let (handle, function, workload) = (self.jobs.handle(id), job.function.clone(), job.workload.clone());
        let answer = match how {
            Packet::GrabJob => Packet::JobAssign { handle, function, workload },
            Packet::GrabJobUniq => Packet::JobAssignUniq { handle, function, unique: job.unique.clone(), workload },
            // GRAB_JOB_ALL is answered JOB_ASSIGN_UNIQ, as gearmand does for a job without a
            // reducer (this server has no reduce jobs).
            _ => Packet::JobAssignUniq { handle, function, unique: job.unique.clone(), workload },
        };
        self.send(token, &answer);
    }

    /// Pops the next queued job worker `token` can do, with its function's timeout.
    fn next_job_for(&mut self, token: Token) -> Option<(JobId, Option<Duration>)> {
        let Server { functions, peers, jobs, .. } = self;
        let peer = peers.get_mut(&token)?;
        let n = peer.abilities.len();
        for r in 0..3 {
            for k in 0..n {
                let i = (peer.rotate + k) % n;
                let ability = &peer.abilities[i];
                let Some(f) = functions.get_mut(&ability.function) else { continue };
                while let Some(id) = f.queues[r].pop_front() {
                    // Dropped jobs stay in the deque until popped here.
                    if jobs.get(id).is_some_and(|job| job.state == JobState::Queued) {
                        peer.rotate = (i + 1) % n;
                        return Some((id, ability.timeout));
                    }
                }
            }
        }
        None
    }
}
