//! A Gearman client: submit jobs, wait for results, ask for status.
//!
//! Works against a list of job servers: it starts at a random one (to spread clients over
//! servers; [`GearmanClient::start_at`] picks one) and, while a server cannot be reached, fails over to
//! the next. Rules that keep a job from hanging, being lost, or running twice:
//!
//! - Every request has a deadline: each answer must come within [`GearmanClient::request_timeout`]
//!   (and within the caller's overall timeout where it gives one), so a server that accepts a
//!   connection and never answers is an error, not a hang.
//! - A submission whose write failed never reached the server whole: it goes to the next one. A
//!   submission that was sent but got no `JOB_CREATED` may be queued on that server. It is sent
//!   again only when it has a unique key, and only to the same server, where gearmand coalesces
//!   it with the first one; without a key the error says the job may be queued there
//!   ([`ClientError::MaybeQueued`]). Jobs on different servers never coalesce, so no submission
//!   that may already be queued is ever sent elsewhere.
//! - A job lives on the server that accepted it: [`JobHandle`] is that server and its handle,
//!   and a status lookup asks that server. A synchronous job whose connection is lost fails with
//!   [`ClientError::Lost`] rather than being submitted twice.
//! - A failure's message: li3g's worker sends it as `WORK_WARNING` right before a plain
//!   `WORK_FAIL` (every client reads those), and other workers may send `WORK_EXCEPTION` (we ask
//!   for exceptions). A warning is held back until the job's next packet, or
//!   [`WARNING_GRACE`] passes: when that packet is the `WORK_FAIL`, the warning is the failure's
//!   message ([`ClientError::Exception`]) and is not also passed on as a warning.

mod types;

pub use types::{ClientError, JobEvent, JobHandle, JobStatus, Submit, UniqueStatus, WARNING_GRACE};

use li3g_protocol::admin_protocol;
use li3g_protocol::conn::{Conn, ConnError, ServerAddr};
use li3g_protocol::packet::Packet;
use std::time::{Duration, Instant};
use types::{describe, reason_only};

/// The default for [`GearmanClient::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many submissions [`GearmanClient::submit_many_background`] writes before reading their
/// answers: small enough that the answers never fill a socket buffer while the server waits
/// for us to read (which would deadlock both sides), large enough to cost few round trips.
pub const PIPELINE_WINDOW: usize = 512;
/// The default for [`GearmanClient::no_worker_check`].
pub const DEFAULT_NO_WORKER_CHECK: Duration = Duration::from_secs(3);

/// When a request must be answered: the earlier of the request timeout and the caller's deadline.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    /// What to report as waited for when it passes.
    waited: Duration,
}

impl Deadline {
    fn new(request_timeout: Duration, overall: Option<Instant>) -> Deadline {
        let now = Instant::now();
        let at = match overall {
            Some(overall) => overall.min(now + request_timeout),
            None => now + request_timeout,
        };
        Deadline { at, waited: at.saturating_duration_since(now) }
    }

    /// The time left, at least 1 ms (a zero socket timeout would mean "forever").
    fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
    }
}

/// How a request failed: before the server had all of it, or after.
enum Failure {
    NotSent(ConnError),
    Unanswered(ConnError),
}

/// Writes `packet` and reads one answer, both within `deadline`.
fn exchange(conn: &mut Conn, packet: &Packet, deadline: Deadline) -> Result<Packet, Failure> {
    let left = deadline.left();
    let _ = conn.stream().set_write_timeout(Some(left));
    conn.write_packet(packet).map_err(Failure::NotSent)?;
    conn.set_read_timeout(Some(deadline.left())).map_err(Failure::Unanswered)?;
    conn.read_packet().map_err(Failure::Unanswered)
}

/// Whether a kept connection still looks usable: its server has not closed it (it restarted,
/// say) and sent nothing unasked. Looked at before reuse, so that a request is never written
/// into a connection already known to be dead.
fn still_open(conn: &mut Conn) -> bool {
    conn.still_open()
}

/// What to do when a request was sent but not answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Harmless to repeat anywhere (echo, status by key).
    Anywhere,
    /// A submission with a unique key: once more on the same server, where it coalesces.
    SameServer,
    /// A submission without a unique key: never.
    Never,
}

/// A client of one or more job servers.
pub struct GearmanClient {
    servers: Vec<ServerAddr>,
    conn: Option<Conn>,
    next: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    no_worker_check: Duration,
}

impl GearmanClient {
    /// A client of `servers`; nothing connects until the first request.
    pub fn new(servers: Vec<ServerAddr>) -> GearmanClient {
        let next = if servers.is_empty() { 0 } else { random_index(servers.len()) };
        GearmanClient {
            servers,
            conn: None,
            next,
            connect_timeout: Duration::from_secs(5),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            no_worker_check: DEFAULT_NO_WORKER_CHECK,
        }
    }

    /// Sets how long a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> GearmanClient {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long a server may take to answer one request (default 10 s); waiting for a
    /// synchronous job's result is bounded by its own timeout instead.
    pub fn request_timeout(mut self, timeout: Duration) -> GearmanClient {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long a synchronous job may wait without news before the client asks its
    /// server whether any worker registered its function (default 3 s; see [`JobEvent::NoWorker`]).
    pub fn no_worker_check(mut self, after: Duration) -> GearmanClient {
        self.no_worker_check = after;
        self
    }

    /// Starts at the server with this index in the list (modulo its length) instead of a
    /// random one.
    pub fn start_at(mut self, index: usize) -> GearmanClient {
        if !self.servers.is_empty() {
            self.next = index % self.servers.len();
        }
        self
    }

    /// A connection for a caller that writes and reads its own packets (the scheduler pipelines
    /// its submissions): the kept one if still open, else one to the next server that can be
    /// reached, trying each in turn. The caller owns it: dropping it after an error makes the
    /// next call fail over to the next server.
    ///
    /// # Errors
    /// [`ClientError::NoServer`] with each server's reason when none can be reached.
    pub fn open_connection(&mut self) -> Result<Conn, ClientError> {
        self.any_connection().map_err(ClientError::NoServer)
    }

    /// The kept connection if it is still open, else a new one to the next server.
    fn connection(&mut self, overall: Option<Instant>) -> Result<Conn, Option<String>> {
        if let Some(conn) = self.conn.take().and_then(|mut c| still_open(&mut c).then_some(c)) {
            return Ok(conn);
        }
        if self.servers.is_empty() {
            return Err(None);
        }
        let server = self.servers[self.next % self.servers.len()].clone();
        self.next = (self.next + 1) % self.servers.len();
        self.connect(&server, overall).map_err(Some)
    }

    /// The kept connection, else one to the first server (in turn) that takes it; why each
    /// refused when none does.
    fn any_connection(&mut self) -> Result<Conn, Vec<String>> {
        let mut reasons = Vec::new();
        // A kept connection that closed costs no try: `connection` goes on to the next server.
        for _ in 0..self.servers.len().max(1) {
            match self.connection(None) {
                Ok(conn) => return Ok(conn),
                Err(Some(reason)) => reasons.push(reason),
                Err(None) => break,
            }
        }
        Err(reasons)
    }

    /// Connects to `server` and asks it for exceptions, within the deadlines.
    fn connect(&self, server: &ServerAddr, overall: Option<Instant>) -> Result<Conn, String> {
        let deadline = Deadline::new(self.request_timeout, overall);
        let mut conn = Conn::connect(server, self.connect_timeout.min(deadline.left()))
            .map_err(|err| describe(&err, self.connect_timeout))?;
        // Ask for WORK_EXCEPTION, so that failures from workers that send it keep their message.
        let option = Packet::OptionReq { option: b"exceptions".to_vec() };
        match exchange(&mut conn, &option, deadline) {
            Ok(Packet::OptionRes { .. } | Packet::Error { .. }) => Ok(conn),
            Ok(other) => Err(format!("{server}: answered {:?} to OPTION_REQ", other.kind())),
            Err(Failure::NotSent(err) | Failure::Unanswered(err)) => Err(describe(&err, deadline.waited)),
        }
    }

    /// Sends `packet` and reads its answer, failing over to the next servers while the request
    /// cannot be delivered, and following `resend` when it was delivered but not answered.
    fn request(&mut self, packet: &Packet, overall: Option<Instant>, resend: Resend) -> Result<Packet, ClientError> {
        let mut errors = Vec::new();
        // A kept connection that fails before the request was delivered earns its server one
        // more try, on a fresh connection.
        for _ in 0..self.servers.len().max(1) + usize::from(self.conn.is_some()) {
            let mut conn = match self.connection(overall) {
                Ok(conn) => conn,
                Err(Some(err)) => {
                    errors.push(err);
                    continue;
                }
                Err(None) => break,
            };
            let deadline = Deadline::new(self.request_timeout, overall);
            match exchange(&mut conn, packet, deadline) {
                Ok(answer) => {
                    self.conn = Some(conn);
                    return Ok(answer);
                }
                Err(Failure::NotSent(err)) => errors.push(describe(&err, deadline.waited)),
                Err(Failure::Unanswered(err)) => match resend {
                    Resend::Anywhere => errors.push(describe(&err, deadline.waited)),
                    Resend::Never => {
                        let reason = reason_only(&err, deadline.waited);
                        return Err(ClientError::MaybeQueued { server: conn.server().clone(), reason });
                    }
                    Resend::SameServer => {
                        let server = conn.server().clone();
                        let first = reason_only(&err, deadline.waited);
                        return self.resend_on(&server, packet, overall).map_err(|again| ClientError::MaybeQueued {
                            server,
                            reason: format!("{first}; sent again: {again}"),
                        });
                    }
                },
            }
        }
        Err(ClientError::NoServer(errors))
    }

    /// Sends `packet` once more on a new connection to `server`.
    fn resend_on(&mut self, server: &ServerAddr, packet: &Packet, overall: Option<Instant>) -> Result<Packet, String> {
        let mut conn = self.connect(server, overall)?;
        let deadline = Deadline::new(self.request_timeout, overall);
        match exchange(&mut conn, packet, deadline) {
            Ok(answer) => {
                self.conn = Some(conn);
                Ok(answer)
            }
            Err(Failure::NotSent(err) | Failure::Unanswered(err)) => Err(reason_only(&err, deadline.waited)),
        }
    }

    /// Sends `packet` to `server` (the kept connection when it goes there) and reads its answer.
    fn request_on(&mut self, server: &ServerAddr, packet: &Packet) -> Result<Packet, ClientError> {
        if let Some(conn) = self.conn.take().and_then(|mut c| (c.server() == server && still_open(&mut c)).then_some(c))
        {
            let mut conn = conn;
            let deadline = Deadline::new(self.request_timeout, None);
            match exchange(&mut conn, packet, deadline) {
                Ok(answer) => {
                    self.conn = Some(conn);
                    return Ok(answer);
                }
                Err(Failure::NotSent(err) | Failure::Unanswered(err)) => {
                    return Err(ClientError::NoServer(vec![describe(&err, deadline.waited)]))
                }
            }
        }
        self.resend_on(server, packet, None)
            .map_err(|reason| ClientError::NoServer(vec![format!("{server}: {reason}")]))
    }

    fn submit(&mut self, job: &Submit, background: bool, overall: Option<Instant>) -> Result<JobHandle, ClientError> {
        let packet = Packet::SubmitJob {
            priority: job.priority,
            background,
            function: job.function.clone(),
            unique: job.unique.clone(),
            workload: job.workload.clone(),
        };
        self.submit_packet(job, &packet, overall)
    }

    /// Submits a background job to run at Unix time `epoch` (seconds; `SUBMIT_JOB_EPOCH`,
    /// normal priority). li3g's embedded server wakes a worker on time; gearmand 1.1.20 hands
    /// the job out only on a worker's next grab after that time.
    ///
    /// # Errors
    /// As [`GearmanClient::submit_background`].
    pub fn submit_at(&mut self, job: &Submit, epoch: u64) -> Result<JobHandle, ClientError> {
        let packet = Packet::SubmitJobEpoch {
            function: job.function.clone(),
            unique: job.unique.clone(),
            epoch,
            workload: job.workload.clone(),
        };
        self.submit_packet(job, &packet, None)
    }

    fn submit_packet(
        &mut self,
        job: &Submit,
        packet: &Packet,
        overall: Option<Instant>,
    ) -> Result<JobHandle, ClientError> {
        let resend = if job.unique.is_empty() { Resend::Never } else { Resend::SameServer };
        match self.request(packet, overall, resend)? {
            Packet::JobCreated { handle } => {
                let server = self.conn.as_ref().expect("an answered request keeps its connection").server().clone();
                Ok(JobHandle { server, handle })
            }
            Packet::Error { code, message } => Err(server_error(code, message)),
            other => Err(ClientError::Unexpected(format!("{:?} to a submission", other.kind()))),
        }
    }

    /// Submits a background job and returns its handle once a server has accepted it.
    ///
    /// # Errors
    /// [`ClientError::NoServer`] when no server takes it, [`ClientError::MaybeQueued`] when a
    /// server took it without confirming, [`ClientError::Server`] when the server refuses it.
    pub fn submit_background(&mut self, job: &Submit) -> Result<JobHandle, ClientError> {
        self.submit(job, true, None)
    }

    /// Submits background jobs, pipelined: a window of [`PIPELINE_WINDOW`] submissions is
    /// written at once, then their `JOB_CREATED`s are read in order (a server answers in order),
    /// so a batch costs a round trip per window, not per job. Returns each job's handle or why
    /// it has none. A job sent and not confirmed is [`ClientError::MaybeQueued`] and never
    /// resent, here or elsewhere. A window goes to the first server that takes the connection,
    /// so the windows after a server fails (never sent) go to the next one;
    /// [`ClientError::NoServer`] only when none does.
    pub fn submit_many_background(&mut self, jobs: &[Submit]) -> Vec<Result<JobHandle, ClientError>> {
        let mut results: Vec<Result<JobHandle, ClientError>> = Vec::with_capacity(jobs.len());
        for window in jobs.chunks(PIPELINE_WINDOW) {
            let mut conn = match self.any_connection() {
                Ok(conn) => conn,
                Err(reasons) => {
                    results.extend(window.iter().map(|_| Err(ClientError::NoServer(reasons.clone()))));
                    continue;
                }
            };
            let server = conn.server().clone();
            let deadline = Deadline::new(self.request_timeout, None);
            let mut written = Ok(());
            for job in window {
                let packet = Packet::SubmitJob {
                    priority: job.priority,
                    background: true,
                    function: job.function.clone(),
                    unique: job.unique.clone(),
                    workload: job.workload.clone(),
                };
                if let Err(err) = conn.queue_packet(&packet) {
                    written = Err(err);
                    break;
                }
            }
            let _ = conn.stream().set_write_timeout(Some(deadline.left()));
            let written = written.and_then(|()| conn.flush());
            if let Err(err) = written {
                // Some of the window may have gone out: each may be queued.
                let reason = reason_only(&err, deadline.waited);
                results.extend(
                    window
                        .iter()
                        .map(|_| Err(ClientError::MaybeQueued { server: server.clone(), reason: reason.clone() })),
                );
                continue;
            }
            let mut broken = None;
            for _ in window {
                if let Some(reason) = &broken {
                    results
                        .push(Err(ClientError::MaybeQueued { server: server.clone(), reason: String::clone(reason) }));
                    continue;
                }
                // Each answer within the request timeout of the one before: a window that
                // takes longer in all is not cut off while the server answers.
                let deadline = Deadline::new(self.request_timeout, None);
                let answer = conn.set_read_timeout(Some(deadline.left())).and_then(|()| conn.read_packet());
                results.push(match answer {
                    Ok(Packet::JobCreated { handle }) => Ok(JobHandle { server: server.clone(), handle }),
                    Ok(Packet::Error { code, message }) => Err(server_error(code, message)),
                    Ok(other) => {
                        broken = Some(format!("answered {:?} to a submission", other.kind()));
                        Err(ClientError::Unexpected(format!("{:?} to a submission", other.kind())))
                    }
                    Err(err) => {
                        let reason = reason_only(&err, deadline.waited);
                        broken = Some(reason.clone());
                        Err(ClientError::MaybeQueued { server: server.clone(), reason })
                    }
                });
            }
            if broken.is_none() {
                self.conn = Some(conn);
            }
        }
        results
    }

    /// Submits a job and waits for its result, passing progress, data and warnings to
    /// `on_event` as they arrive. Returns the handle and the result. `timeout` bounds the whole
    /// call, connecting and submitting included.
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
    ) -> Result<(JobHandle, Vec<u8>), ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let handle = self.submit(job, false, deadline)?;
        let result = self.wait(&handle, &job.function, deadline, timeout, on_event);
        if result.is_err() {
            // Whatever is left on this connection belongs to a job we gave up on.
            self.conn = None;
        }
        result.map(|data| (handle, data))
    }

    fn wait(
        &mut self,
        job: &JobHandle,
        function: &[u8],
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(JobEvent<'_>),
    ) -> Result<Vec<u8>, ClientError> {
        let handle = job.handle.as_slice();
        let mut check_workers_at = Some(Instant::now() + self.no_worker_check);
        // A warning not passed on yet: it may be the message of a WORK_FAIL that follows.
        let mut held: Option<(Vec<u8>, Instant)> = None;
        let flush = |held: &mut Option<(Vec<u8>, Instant)>, on_event: &mut dyn FnMut(JobEvent<'_>)| {
            if let Some((warning, _)) = held.take() {
                on_event(JobEvent::Warning(&warning));
            }
        };
        let request_timeout = self.request_timeout;
        let conn = self.conn.as_mut().expect("submit leaves a connection");
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                flush(&mut held, on_event);
                return Err(ClientError::Timeout(timeout.unwrap_or_default()));
            }
            if check_workers_at.is_some_and(|at| now >= at) {
                check_workers_at = None;
                if no_worker(&job.server, function, request_timeout, deadline) {
                    on_event(JobEvent::NoWorker { server: &job.server, function });
                }
            }
            let wake = [deadline, check_workers_at, held.as_ref().map(|(_, until)| *until)].into_iter().flatten().min();
            let wait = wake.map(|at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
            conn.set_read_timeout(wait).map_err(|err| ClientError::Lost(err.to_string()))?;
            let packet = match conn.read_packet() {
                Ok(packet) => packet,
                Err(err) if err.is_timeout() => {
                    // Only a read that waited out the grace passes a held warning on: a
                    // WORK_FAIL already received is read first, however late this process runs.
                    if held.as_ref().is_some_and(|(_, until)| Instant::now() >= *until) {
                        flush(&mut held, on_event);
                    }
                    continue;
                }
                Err(err) => return Err(ClientError::Lost(err.to_string())),
            };
            match packet {
                Packet::WorkFail { handle: h } if h == handle => {
                    return Err(match held {
                        Some((message, _)) => ClientError::Exception(String::from_utf8_lossy(&message).into_owned()),
                        None => ClientError::Failed,
                    })
                }
                Packet::WorkWarning { handle: h, data } if h == handle => {
                    flush(&mut held, on_event);
                    held = Some((data, Instant::now() + WARNING_GRACE));
                }
                Packet::WorkComplete { handle: h, data } if h == handle => {
                    flush(&mut held, on_event);
                    return Ok(data);
                }
                Packet::WorkException { handle: h, data } if h == handle => {
                    flush(&mut held, on_event);
                    return Err(ClientError::Exception(String::from_utf8_lossy(&data).into_owned()));
                }
                Packet::WorkStatus { handle: h, numerator, denominator } if h == handle => {
                    flush(&mut held, on_event);
                    check_workers_at = None; // a worker has it
                    on_event(JobEvent::Status(numerator, denominator))
                }
                Packet::WorkData { handle: h, data } if h == handle => {
                    flush(&mut held, on_event);
                    check_workers_at = None;
                    on_event(JobEvent::Data(&data))
                }
                Packet::Error { code, message } => return Err(server_error(code, message)),
                _ => {} // a packet for another job of this connection: not ours to handle
            }
        }
    }

    /// Asks the job's server for its status.
    ///
    /// # Errors
    /// [`ClientError`] when that server does not answer.
    pub fn status(&mut self, job: &JobHandle) -> Result<JobStatus, ClientError> {
        match self.request_on(&job.server, &Packet::GetStatus { handle: job.handle.clone() })? {
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
        match self.request(&Packet::GetStatusUnique { unique: unique.to_vec() }, None, Resend::Anywhere)? {
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
        match self.request(&Packet::EchoReq { data: data.to_vec() }, None, Resend::Anywhere)? {
            Packet::EchoRes { data: echoed } if echoed == data => Ok(()),
            other => Err(ClientError::Unexpected(format!("{:?} to ECHO_REQ", other.kind()))),
        }
    }
}

/// Whether `server` says that no worker has registered `function` (admin `status`, on a
/// connection of its own, within `request_timeout`). Any failure to ask counts as "don't
/// know": false.
pub fn no_worker(server: &ServerAddr, function: &[u8], request_timeout: Duration, overall: Option<Instant>) -> bool {
    let deadline = Deadline::new(request_timeout, overall);
    let Ok(mut conn) = Conn::connect(server, deadline.left()) else { return false };
    let _ = conn.stream().set_write_timeout(Some(deadline.left()));
    if conn.set_read_timeout(Some(deadline.left())).is_err() {
        return false;
    }
    let Ok(lines) = conn.admin("status") else { return false };
    let Ok(functions) = admin_protocol::parse_status(lines.iter().map(String::as_str)) else { return false };
    let function = String::from_utf8_lossy(function);
    !functions.iter().any(|f| f.function == function && f.workers > 0)
}

pub(crate) fn server_error(code: Vec<u8>, message: Vec<u8>) -> ClientError {
    ClientError::Server {
        code: String::from_utf8_lossy(&code).into_owned(),
        message: String::from_utf8_lossy(&message).into_owned(),
    }
}

pub(crate) fn random_index(n: usize) -> usize {
    let id = crate::job_id::generate();
    usize::from_str_radix(&id[..8], 16).unwrap_or(0) % n
}
