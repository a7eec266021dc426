//! A worker's reports on the job it holds (`WORK_STATUS`, `WORK_DATA`, `WORK_WARNING`,
//! `WORK_COMPLETE`, `WORK_FAIL`, `WORK_EXCEPTION`): forwarded to every client of the job; the
//! last three end it.

use crate::gearman::packet::Packet;
use crate::server::jobs::JobState;
use crate::server::Server;
use mio::Token;

impl Server {
    /// A `WORK_*` packet from worker `token`.
    pub(super) fn work(&mut self, token: Token, packet: Packet) {
        let handle = match &packet {
            Packet::WorkStatus { handle, .. }
            | Packet::WorkData { handle, .. }
            | Packet::WorkWarning { handle, .. }
            | Packet::WorkComplete { handle, .. }
            | Packet::WorkFail { handle }
            | Packet::WorkException { handle, .. } => handle,
            _ => return,
        };
        let Some(id) = self.jobs.id_of(handle) else { return };
        let Some(job) = self.jobs.get_mut(id) else { return };
        // A report from a worker that no longer holds the job (it timed out) is dropped.
        if !matches!(job.state, JobState::Running { worker, .. } if worker == token) {
            return;
        }
        if let Packet::WorkStatus { numerator, denominator, .. } = &packet {
            job.numerator = *numerator;
            job.denominator = *denominator;
        }
        for client in job.clients.clone() {
            let exceptions = self.peers.get(&client).is_some_and(|c| c.exceptions);
            match &packet {
                Packet::WorkException { handle, .. } if !exceptions => {
                    self.send(client, &Packet::WorkFail { handle: handle.clone() })
                }
                _ => self.send(client, &packet),
            }
        }
        if matches!(packet, Packet::WorkComplete { .. } | Packet::WorkFail { .. } | Packet::WorkException { .. }) {
            self.finish(id);
        }
    }
}
