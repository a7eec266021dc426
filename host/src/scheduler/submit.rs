//! The scheduler's submission side: the job servers it hands due jobs to ([`Servers`], one
//! connection at a time with the Gearman client's failover), the pipelined `SUBMIT_JOB_BG` /
//! `JOB_CREATED` exchange, and why a batch could not be handed over ([`SubmitError`]).

use super::record::{Record, RecordError};
use crate::gearman::client::{ClientError, GearmanClient};
use crate::gearman::conn::{Conn, ConnError, ServerAddr};
use crate::gearman::packet::{self, Magic, Packet, PacketType};
use std::time::Duration;

/// How long a job server may take to answer.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a batch could not be handed to a job server (none of it is known to be accepted).
#[derive(Debug, thiserror::Error)]
pub(super) enum SubmitError {
    /// No job server could be reached.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The connection failed while writing or reading.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The connection was lost before the answers were read.
    #[error("the connection was lost before the answers were read")]
    Lost,
    /// The server answered a submission with something else than `JOB_CREATED` or `ERROR`.
    #[error("{server} answered {kind:?} to a submission")]
    Answered {
        /// The server.
        server: ServerAddr,
        /// What it sent.
        kind: PacketType,
    },
}

/// The job servers, one connection at a time, failing over in turn (the Gearman client's
/// failover; the scheduler writes and reads its own pipelined packets on the connection).
pub(super) struct Servers {
    pub(super) client: GearmanClient,
    pub(super) conn: Option<Conn>,
    /// How many servers there are.
    pub(super) count: usize,
}

impl Servers {
    fn connected(&mut self) -> Result<&mut Conn, SubmitError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let mut conn = self.client.open_connection()?;
                conn.set_read_timeout(Some(READ_TIMEOUT))?;
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// Moves on to the next server (the next send connects there).
    pub(super) fn next(&mut self) {
        self.conn = None;
    }

    /// Writes a `SUBMIT_JOB_BG` per job, all at once, without reading the answers.
    pub(super) fn send(&mut self, jobs: &[Record]) -> Result<(), SubmitError> {
        let result = self.connected().and_then(|conn| send_on(conn, jobs));
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Reads the answers to [`Servers::send`]: per job, `None` when accepted or the server's
    /// refusal. An error means none of the rest is known to be accepted.
    pub(super) fn receive(&mut self, jobs: &[Record]) -> Result<Vec<Option<String>>, SubmitError> {
        let Some(conn) = self.conn.as_mut() else { return Err(SubmitError::Lost) };
        let result = receive_on(conn, jobs);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// A record the Gearman protocol can carry: no NUL in its function or unique key (a
/// hand-written li3_gearman member might have one; it goes to the dead set with why).
pub(super) fn submittable(record: Record) -> Result<Record, RecordError> {
    if record.function.contains('\0') || record.unique.contains('\0') || record.function.is_empty() {
        return Err(RecordError::Shape("a NUL in its function or id, or no function".into()));
    }
    Ok(record)
}

fn send_on(conn: &mut Conn, jobs: &[Record]) -> Result<(), SubmitError> {
    let mut out = Vec::with_capacity(jobs.len() * 160);
    for job in jobs {
        let packet = Packet::SubmitJob {
            priority: job.priority.into(),
            background: true,
            function: job.function.as_bytes().to_vec(),
            unique: job.unique.as_bytes().to_vec(),
            workload: job.workload.as_bytes().to_vec(),
        };
        // Records were checked with `submittable` before: this cannot fail.
        packet::encode(Magic::Req, &packet, &mut out)
            .map_err(|source| ConnError::Protocol { server: conn.server().to_string(), source })?;
    }
    conn.write_raw(&out).map_err(SubmitError::from)
}

fn receive_on(conn: &mut Conn, jobs: &[Record]) -> Result<Vec<Option<String>>, SubmitError> {
    let mut answers = Vec::with_capacity(jobs.len());
    for _ in jobs {
        match conn.read_packet()? {
            Packet::JobCreated { .. } => answers.push(None),
            Packet::Error { code, message } => {
                answers.push(Some(format!("{}: {}", String::from_utf8_lossy(&code), String::from_utf8_lossy(&message))))
            }
            other => return Err(SubmitError::Answered { server: conn.server().clone(), kind: other.kind() }),
        }
    }
    Ok(answers)
}
