//! A Gearman client: submit jobs, wait for results, ask for status.
//!
//! Works against a list of job servers: it starts at a random one (to spread clients over
//! servers) and, when a server cannot be reached or drops the connection before it accepted
//! the job, fails over to the next. Once a server has accepted a job (`JOB_CREATED`), the job
//! lives there: a background job is done, and a synchronous job whose connection is lost
//! fails with [`ClientError::Lost`] rather than being submitted twice.

use super::conn::{Conn, ConnError, ServerAddr};
use super::packet::{Packet, Priority};
use std::time::{Duration, Instant};

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

/// What a running job reports to a synchronous client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent<'a> {
    /// Progress, `WORK_STATUS`.
    Status(u64, u64),
    /// Partial data, `WORK_DATA`.
    Data(&'a [u8]),
    /// A warning, `WORK_WARNING`.
    Warning(&'a [u8]),
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
    /// No configured server could be reached.
    #[error("no job server could take the job: {}", list(.0))]
    NoServer(Vec<ConnError>),
    /// The connection to the server that had accepted the job was lost.
    #[error("lost the connection while waiting for the job's result: {0}")]
    Lost(ConnError),
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
    /// The job failed with a message (`WORK_EXCEPTION`).
    #[error("{0}")]
    Exception(String),
    /// The job did not finish within the timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The server sent something that makes no sense here.
    #[error("unexpected answer from the job server: {0}")]
    Unexpected(String),
}

fn list(errors: &[ConnError]) -> String {
    if errors.is_empty() {
        return "no servers are configured".into();
    }
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A client of one or more job servers.
pub struct Client {
    servers: Vec<ServerAddr>,
    conn: Option<Conn>,
    next: usize,
    connect_timeout: Duration,
}

impl Client {
    /// A client of `servers`; nothing connects until the first request.
    pub fn new(servers: Vec<ServerAddr>) -> Client {
        let next = if servers.is_empty() { 0 } else { random_index(servers.len()) };
        Client { servers, conn: None, next, connect_timeout: Duration::from_secs(5) }
    }

    /// Sets how long a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Client {
        self.connect_timeout = timeout;
        self
    }

    /// Runs `request` on the current server, failing over to the next servers while the
    /// connection fails. `request` must be safe to repeat on another server: it runs until
    /// the server has accepted what it sent.
    fn with_failover<T>(
        &mut self,
        mut request: impl FnMut(&mut Conn) -> Result<T, ConnError>,
    ) -> Result<T, ClientError> {
        let mut errors = Vec::new();
        // A connection kept from an earlier request may have gone stale (its server
        // restarted): its failure earns one more try, on a fresh connection.
        let attempts = self.servers.len().max(1) + usize::from(self.conn.is_some());
        for _ in 0..attempts {
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => match self.connect_next() {
                    Ok(conn) => conn,
                    Err(Some(err)) => {
                        errors.push(err);
                        continue;
                    }
                    Err(None) => break,
                },
            };
            match request(&mut conn) {
                Ok(value) => {
                    self.conn = Some(conn);
                    return Ok(value);
                }
                Err(err) => errors.push(err),
            }
        }
        Err(ClientError::NoServer(errors))
    }

    fn connect_next(&mut self) -> Result<Conn, Option<ConnError>> {
        if self.servers.is_empty() {
            return Err(None);
        }
        let server = self.servers[self.next % self.servers.len()].clone();
        self.next = (self.next + 1) % self.servers.len();
        let mut conn = Conn::connect(&server, self.connect_timeout).map_err(Some)?;
        // Ask for WORK_EXCEPTION, so that failures arrive with their message.
        conn.write_packet(&Packet::OptionReq { option: b"exceptions".to_vec() }).map_err(Some)?;
        match conn.read_packet().map_err(Some)? {
            Packet::OptionRes { .. } | Packet::Error { .. } => Ok(conn),
            other => Err(Some(ConnError::Closed { server: format!("{server} (answered {:?})", other.kind()) })),
        }
    }

    /// Sends one request and reads its answer, failing over while no server answers.
    fn request(&mut self, packet: &Packet) -> Result<Packet, ClientError> {
        self.with_failover(|conn| {
            conn.set_read_timeout(None)?;
            conn.write_packet(packet)?;
            conn.read_packet()
        })
    }

    fn submit(&mut self, job: &Submit, background: bool) -> Result<Vec<u8>, ClientError> {
        let packet = Packet::SubmitJob {
            priority: job.priority,
            background,
            function: job.function.clone(),
            unique: job.unique.clone(),
            workload: job.workload.clone(),
        };
        match self.request(&packet)? {
            Packet::JobCreated { handle } => Ok(handle),
            Packet::Error { code, message } => Err(server_error(code, message)),
            other => Err(ClientError::Unexpected(format!("{:?} to a submission", other.kind()))),
        }
    }

    /// Submits a background job and returns its handle once a server has accepted it.
    ///
    /// # Errors
    /// [`ClientError::NoServer`] when no server takes it, [`ClientError::Server`] when the
    /// server refuses it.
    pub fn submit_background(&mut self, job: &Submit) -> Result<Vec<u8>, ClientError> {
        self.submit(job, true)
    }

    /// Submits a job and waits for its result, passing progress, data and warnings to
    /// `on_event` as they arrive. Returns the handle and the result.
    ///
    /// # Errors
    /// [`ClientError::Exception`] with the job's message or [`ClientError::Failed`] when it
    /// fails, [`ClientError::Timeout`] when `timeout` passes first, [`ClientError::Lost`]
    /// when the server goes away after accepting it, and the errors of submission.
    pub fn submit_sync(
        &mut self,
        job: &Submit,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(JobEvent<'_>),
    ) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let handle = self.submit(job, false)?;
        let result = self.wait(&handle, deadline, timeout, on_event);
        if result.is_err() {
            // Whatever is left on this connection belongs to a job we gave up on.
            self.conn = None;
        }
        result.map(|data| (handle, data))
    }

    fn wait(
        &mut self,
        handle: &[u8],
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(JobEvent<'_>),
    ) -> Result<Vec<u8>, ClientError> {
        let conn = self.conn.as_mut().expect("submit leaves a connection");
        loop {
            let remaining = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ClientError::Timeout(timeout.unwrap_or_default()));
                    }
                    Some(left)
                }
                None => None,
            };
            conn.set_read_timeout(remaining).map_err(ClientError::Lost)?;
            let packet = match conn.read_packet() {
                Ok(packet) => packet,
                Err(err) if err.is_timeout() => return Err(ClientError::Timeout(timeout.unwrap_or_default())),
                Err(err) => return Err(ClientError::Lost(err)),
            };
            match packet {
                Packet::WorkComplete { handle: h, data } if h == handle => return Ok(data),
                Packet::WorkFail { handle: h } if h == handle => return Err(ClientError::Failed),
                Packet::WorkException { handle: h, data } if h == handle => {
                    return Err(ClientError::Exception(String::from_utf8_lossy(&data).into_owned()))
                }
                Packet::WorkStatus { handle: h, numerator, denominator } if h == handle => {
                    on_event(JobEvent::Status(numerator, denominator))
                }
                Packet::WorkData { handle: h, data } if h == handle => on_event(JobEvent::Data(&data)),
                Packet::WorkWarning { handle: h, data } if h == handle => on_event(JobEvent::Warning(&data)),
                Packet::Error { code, message } => return Err(server_error(code, message)),
                _ => {} // a packet for another job of this connection: not ours to handle
            }
        }
    }

    /// Asks the server for a job's status by handle.
    ///
    /// # Errors
    /// [`ClientError`] when no server answers. The handle is only known to the server that
    /// created it: ask a client connected to that one.
    pub fn status(&mut self, handle: &[u8]) -> Result<JobStatus, ClientError> {
        match self.request(&Packet::GetStatus { handle: handle.to_vec() })? {
            Packet::StatusRes { known, running, numerator, denominator, .. } => {
                Ok(JobStatus { known, running, numerator, denominator })
            }
            Packet::Error { code, message } => Err(server_error(code, message)),
            other => Err(ClientError::Unexpected(format!("{:?} to GET_STATUS", other.kind()))),
        }
    }

    /// Asks the server for the status of the job with `unique` key (any function).
    ///
    /// # Errors
    /// [`ClientError`] when no server answers.
    pub fn status_unique(&mut self, unique: &[u8]) -> Result<UniqueStatus, ClientError> {
        match self.request(&Packet::GetStatusUnique { unique: unique.to_vec() })? {
            Packet::StatusResUnique { known, running, numerator, denominator, clients, .. } => {
                Ok(UniqueStatus { known, running, numerator, denominator, clients })
            }
            Packet::Error { code, message } => Err(server_error(code, message)),
            other => Err(ClientError::Unexpected(format!("{:?} to GET_STATUS_UNIQUE", other.kind()))),
        }
    }

    /// Sends `ECHO_REQ` and checks the answer: a cheap "is the server there".
    ///
    /// # Errors
    /// [`ClientError`] when no server answers, or answers something else.
    pub fn echo(&mut self, data: &[u8]) -> Result<(), ClientError> {
        match self.request(&Packet::EchoReq { data: data.to_vec() })? {
            Packet::EchoRes { data: echoed } if echoed == data => Ok(()),
            other => Err(ClientError::Unexpected(format!("{:?} to ECHO_REQ", other.kind()))),
        }
    }
}

fn server_error(code: Vec<u8>, message: Vec<u8>) -> ClientError {
    ClientError::Server {
        code: String::from_utf8_lossy(&code).into_owned(),
        message: String::from_utf8_lossy(&message).into_owned(),
    }
}

fn random_index(n: usize) -> usize {
    let id = crate::job_id::generate();
    usize::from_str_radix(&id[..8], 16).unwrap_or(0) % n
}
