//! A worker's reports on the job it holds (`WORK_STATUS`, `WORK_DATA`, `WORK_WARNING`,
//! `WORK_COMPLETE`, `WORK_FAIL`, `WORK_EXCEPTION`): forwarded to every client of the job; the
//! last three end it. And a packet over the size limit: skipped, answered `ERROR`, and the
//! job it reports on failed, so its client does not wait forever.

use super::error;
use crate::gearman::packet::{Packet, PacketType};
use crate::server::jobs::JobState;
use crate::server::Server;
use mio::Token;

impl Server {
    /// A `WORK_*` packet from worker `token`; `raw` is a `WORK_STATUS` body as sent, relayed
    /// byte for byte (gearmand relays `0.5` or `50%` as they came).
    pub(super) fn work(&mut self, token: Token, packet: Packet, raw: Option<Vec<u8>>) {
        let handle = match &packet {
            Packet::WorkStatus { handle, .. }
            | Packet::WorkData { handle, .. }
            | Packet::WorkWarning { handle, .. }
            | Packet::WorkComplete { handle, .. }
            | Packet::WorkFail { handle }
            | Packet::WorkException { handle, .. } => handle,
            _ => return,
        };
        // A report on a job this worker does not hold (unknown, or it timed out and went to
        // another): `ERROR JOB_NOT_FOUND`, as gearmand; the connection is kept.
        let held = self.jobs.id_of(handle).filter(|&id| {
            self.jobs
                .get(id)
                .is_some_and(|job| matches!(job.state, JobState::Running { worker, .. } if worker == token))
        });
        let Some(id) = held else {
            return self.send(token, &error("JOB_NOT_FOUND", "Job given in work result not found"));
        };
        let job = self.jobs.get_mut(id).expect("looked up above");
        if let Packet::WorkStatus { numerator, denominator, .. } = &packet {
            job.numerator = *numerator;
            job.denominator = *denominator;
        }
        for client in job.clients.clone() {
            let Some(peer) = self.peers.get_mut(&client) else { continue };
            match (&packet, &raw) {
                (Packet::WorkStatus { .. }, Some(body)) => peer.send_raw(PacketType::WorkStatus, body),
                (Packet::WorkException { handle, .. }, _) if !peer.exceptions => {
                    peer.send(&Packet::WorkFail { handle: handle.clone() })
                }
                _ => peer.send(&packet),
            }
            self.touch(client);
        }
        if matches!(packet, Packet::WorkComplete { .. } | Packet::WorkFail { .. } | Packet::WorkException { .. }) {
            self.finish(id);
        }
    }

    /// A packet of type `kind` declaring `size` bytes, over the limit: its body was skipped.
    /// The peer gets `ERROR ARGUMENT_TOO_LARGE` and keeps its connection; when it is a
    /// worker's `WORK_*` for a job it runs, the job is failed to its clients.
    pub(super) fn too_big(&mut self, token: Token, kind: u32, size: u64, handle: &[u8]) {
        let max = self.options.max_body;
        log::warn!("{token:?} sent a packet of type {kind} with {size} bytes, over the limit of {max}");
        let message = format!("packet body of {size} bytes exceeds the limit of {max} bytes");
        self.send(token, &error("ARGUMENT_TOO_LARGE", &message));
        let Some(id) = self.jobs.id_of(handle) else { return };
        let runs_it = self
            .jobs
            .get(id)
            .is_some_and(|job| matches!(job.state, JobState::Running { worker, .. } if worker == token));
        if runs_it {
            self.fail(id);
        }
    }
}
