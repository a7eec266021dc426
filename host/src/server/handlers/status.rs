//! `GET_STATUS` (by handle) and `GET_STATUS_UNIQUE` (by unique key): what a client may learn
//! about a job. It must not: change jobs.

use crate::gearman::packet::Packet;
use crate::server::jobs::JobState;
use crate::server::Server;
use mio::Token;

impl Server {
    /// `GET_STATUS handle`: an unknown handle answers known 0 (`handle,0,0,0,0`), as gearmand.
    pub(super) fn get_status(&mut self, token: Token, handle: Vec<u8>) {
        let answer = match self.jobs.id_of(&handle).and_then(|id| self.jobs.get(id)) {
            Some(job) => Packet::StatusRes {
                handle,
                known: true,
                running: matches!(job.state, JobState::Running { .. }),
                numerator: job.numerator,
                denominator: job.denominator,
            },
            None => Packet::StatusRes { handle, known: false, running: false, numerator: 0, denominator: 0 },
        };
        self.send(token, &answer);
    }

    /// `GET_STATUS_UNIQUE unique`: the unique key first, then known, running, numerator,
    /// denominator and client count, as gearmand.
    pub(super) fn get_status_unique(&mut self, token: Token, unique: Vec<u8>) {
        let answer = match self.jobs.find_unique_any(&unique) {
            Some(job) => Packet::StatusResUnique {
                known: true,
                running: matches!(job.state, JobState::Running { .. }),
                numerator: job.numerator,
                denominator: job.denominator,
                clients: job.clients.len() as u64,
                unique,
            },
            None => Packet::StatusResUnique {
                unique,
                known: false,
                running: false,
                numerator: 0,
                denominator: 0,
                clients: 0,
            },
        };
        self.send(token, &answer);
    }
}
