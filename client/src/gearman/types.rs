//! What a [`GearmanClient`](super::GearmanClient) is given and gives back: the job to submit,
//! its handle, its events and status, and the client's errors with their messages.

use li3g_protocol::conn::{ConnError, ServerAddr};
use li3g_protocol::packet::Priority;
use std::fmt;
use std::time::Duration;

/// How long a warning is held back to see whether a `WORK_FAIL` follows it (the worker sends
/// the two back to back).
pub const WARNING_GRACE: Duration = Duration::from_millis(500);

/// A job to submit.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    /// The Gearman function name.
    pub function: Vec<u8>,
    /// The unique key: jobs with the same function and key coalesce; empty never does.
    pub unique: Vec<u8>,
    /// The workload.
    pub workload: Vec<u8>,
    /// The priority.
    pub priority: Priority,
}

/// A job as a server knows it: the server that accepted it, and the handle it gave. A handle
/// means nothing to another server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobHandle {
    /// The server that holds the job.
    pub server: ServerAddr,
    /// Its handle there (`H:host:N` for gearmand).
    pub handle: Vec<u8>,
}

impl fmt::Display for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", String::from_utf8_lossy(&self.handle), self.server)
    }
}

/// What a running job reports to a synchronous client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent<'a> {
    /// Progress, `WORK_STATUS`.
    Status(u64, u64),
    /// Partial data, `WORK_DATA`.
    Data(&'a [u8]),
    /// A warning, `WORK_WARNING`.
    Warning(&'a [u8]),
    /// The job has been waiting a while and its server says no worker has registered its
    /// function (admin `status`); sent once, and the wait goes on.
    NoWorker {
        /// The server holding the job.
        server: &'a ServerAddr,
        /// The job's function.
        function: &'a [u8],
    },
}

/// A job's status, from `GET_STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Whether the server knows the job (queued or running).
    pub known: bool,
    /// Whether a worker is running it.
    pub running: bool,
    /// Progress numerator.
    pub numerator: u64,
    /// Progress denominator.
    pub denominator: u64,
}

/// A status by unique key, from `GET_STATUS_UNIQUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueStatus {
    /// Whether the server knows a job with that key.
    pub known: bool,
    /// Whether a worker is running it.
    pub running: bool,
    /// Progress numerator.
    pub numerator: u64,
    /// Progress denominator.
    pub denominator: u64,
    /// How many clients wait for it (jobs coalesced on the key share one run).
    pub clients: u64,
}

/// Why a job could not be submitted, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No configured server could be reached or answered: one reason per server tried.
    #[error("no job server could take the job: {}", list(.0))]
    NoServer(Vec<String>),
    /// The submission was sent but not confirmed: the job may be queued on that server, and
    /// was not sent anywhere else (that could run it twice).
    #[error(
        "{server} did not confirm the submission ({reason}): the job may be queued there; it was not sent to \
         another server, where it could run twice (a unique key makes a resubmission safe)"
    )]
    MaybeQueued {
        /// The server that may hold the job.
        server: ServerAddr,
        /// What happened instead of `JOB_CREATED`.
        reason: String,
    },
    /// The connection to the server that had accepted the job was lost.
    #[error("lost the connection while waiting for the job's result: {0}")]
    Lost(String),
    /// The server answered with an error.
    #[error("the job server refused: {code}: {message}")]
    Server {
        /// Gearman's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The job failed without a message (`WORK_FAIL`).
    #[error("the job failed")]
    Failed,
    /// The job failed with a message (a `WORK_WARNING` then `WORK_FAIL`, or `WORK_EXCEPTION`).
    #[error("{0}")]
    Exception(String),
    /// The job did not finish within the timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The server sent something that makes no sense here.
    #[error("unexpected answer from the job server: {0}")]
    Unexpected(String),
}

fn list(errors: &[String]) -> String {
    if errors.is_empty() {
        return "no servers are configured".into();
    }
    errors.join("; ")
}

/// A connection error as a reason: a read that timed out says how long it waited.
pub(super) fn describe(err: &ConnError, waited: Duration) -> String {
    if err.is_timeout() {
        return format!("{}: no answer within {:.1} s", server_of(err), waited.as_secs_f64());
    }
    err.to_string()
}

/// The reason without the server's name, for messages that name it already.
pub(super) fn reason_only(err: &ConnError, waited: Duration) -> String {
    let text = describe(err, waited);
    let prefix = format!("{}: ", server_of(err));
    text.strip_prefix(&prefix).map(str::to_string).unwrap_or(text)
}

fn server_of(err: &ConnError) -> &str {
    match err {
        ConnError::Io { server, .. }
        | ConnError::Tls { server, .. }
        | ConnError::Closed { server }
        | ConnError::Protocol { server, .. }
        | ConnError::Unexpected { server, .. } => server,
        ConnError::NoServers | ConnError::Lost => "",
    }
}
