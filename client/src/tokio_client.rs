//! The async client (feature `tokio`): [`AsyncClient`], the same calls as [`Client`](crate::Client)
//! as `async fn`s, on one tokio connection per job server, with many jobs in flight on each.
//!
//! How answers find their callers: a connection has a writer task and a reader task. The
//! writer queues each submission's `Pending` entry before it writes the submission, so the
//! entries are in the order the server answers them: `JOB_CREATED` (or `ERROR`) always answers
//! the oldest submission not answered yet. The reader pops that entry, and for a synchronous
//! job files its event channel under the handle; every `WORK_*` packet is then routed by its
//! handle. A call that is dropped (its future cancelled, its timeout passed) drops its
//! `Registration`, which takes its handle out; an entry whose caller is gone by the time its
//! `JOB_CREATED` arrives is never filed. [`AsyncClient::in_flight`] counts what is left.
//!
//! The rules of the blocking client hold: every request has a deadline (a submission's
//! `JOB_CREATED` within the request timeout, and a call's result within its own timeout); a
//! submission that was sent but not confirmed is sent again only when it has a unique key, on a
//! new connection to the same server, else it is [`ClientError::MaybeQueued`]; only a server
//! that cannot be reached is failed over; handles name their server.
//!
//! `tls://` servers are spoken to through tokio-rustls with the blocking client's rustls
//! configuration ([`li3g_protocol::transport::client_config`], or [`AsyncClient::with_tls`]);
//! the handshake is within the connect deadline, and its failures are named as the blocking
//! client names them ([`li3g_protocol::transport::explain_io`]).

use crate::client::{plan, Outcome, Planned, RunError, Step};
use crate::config::{ConfigError, Target};
use crate::gearman::{ClientError, JobEvent, JobHandle, Submit, DEFAULT_REQUEST_TIMEOUT, WARNING_GRACE};
use crate::job::{decode_result, Job, Queued, Runner, Submitted};
use crate::JobStore;
use li3g_protocol::conn::ServerAddr;
use li3g_protocol::packet::{self, Decoded, Magic, Packet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::rustls;

/// What a connection tells a job's caller.
#[derive(Debug, Clone)]
enum Event {
    Status(u64, u64),
    Data(Vec<u8>),
    Warning(Vec<u8>),
    Complete(Vec<u8>),
    Fail,
    Exception(Vec<u8>),
    Lost(String),
}

/// The answer to a submission: the handle, or why not.
enum Answer {
    Created(Vec<u8>),
    Refused { code: Vec<u8>, message: Vec<u8> },
    Lost(String),
}

/// A submission waiting for its `JOB_CREATED`.
struct Pending {
    answer: oneshot::Sender<Answer>,
    /// A synchronous job's events, filed under its handle once it has one.
    events: Option<mpsc::UnboundedSender<Event>>,
}

/// What the reader and writer share with the callers.
#[derive(Default)]
struct State {
    created: VecDeque<Pending>,
    /// The callers of each synchronous job: more than one when submissions with the same
    /// unique key coalesce on this connection (the server answers each with the same handle).
    jobs: HashMap<Vec<u8>, Vec<mpsc::UnboundedSender<Event>>>,
    dead: Option<String>,
}

impl State {
    /// The connection is gone: every waiting caller hears why.
    fn die(&mut self, why: String) {
        for pending in self.created.drain(..) {
            let _ = pending.answer.send(Answer::Lost(why.clone()));
        }
        for events in self.jobs.drain().flat_map(|(_, callers)| callers) {
            let _ = events.send(Event::Lost(why.clone()));
        }
        self.dead.get_or_insert(why);
    }
}

/// Bytes to write and the submissions among them, in order.
struct Write {
    bytes: Vec<u8>,
    pending: Vec<Pending>,
}

/// One connection to one server.
#[derive(Clone)]
struct Connection {
    server: ServerAddr,
    state: Arc<Mutex<State>>,
    writes: mpsc::UnboundedSender<Write>,
}

impl Connection {
    fn alive(&self) -> bool {
        !self.writes.is_closed() && self.state.lock().expect("state lock").dead.is_none()
    }

    /// Queues `bytes` with its submissions' entries.
    fn send(&self, bytes: Vec<u8>, pending: Vec<Pending>) -> Result<(), String> {
        self.writes.send(Write { bytes, pending }).map_err(|_| "the connection is closed".to_string())
    }
}

/// A synchronous job's place on its connection; dropping it (the call is done or was dropped)
/// takes its handle out, so that nothing is left for a job no one waits for.
struct Registration {
    state: Arc<Mutex<State>>,
    /// Keeps the connection open while the job runs, even once the client has dropped it for
    /// new calls (a submission on it went unanswered): closing it would lose this result.
    _writes: mpsc::UnboundedSender<Write>,
    handle: Option<Vec<u8>>,
    events: Option<mpsc::UnboundedReceiver<Event>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Closed first: a JOB_CREATED read from now on is not filed.
        drop(self.events.take());
        let mut state = self.state.lock().expect("state lock");
        // Its own entry (closed above), and those of jobs whose JOB_CREATED was filed while
        // their caller was going away; the other callers of a coalesced job stay.
        state.jobs.retain(|_, callers| {
            callers.retain(|events| !events.is_closed());
            !callers.is_empty()
        });
    }
}

/// The client's job store, shared with the blocking pool's thread that calls it; locked in
/// the calling task (not on a pool thread), so calls queued behind a slow one take no thread.
type Store = Arc<tokio::sync::Mutex<Result<Box<dyn JobStore>, String>>>;

struct Inner {
    servers: Vec<ServerAddr>,
    conns: Vec<tokio::sync::Mutex<Option<Connection>>>,
    /// The server new calls go to (moves on when it cannot be reached).
    current: AtomicUsize,
    connect_timeout: Duration,
    request_timeout: Duration,
    name: String,
    environment: Option<String>,
    store: Option<Store>,
    /// Store calls done so far: a call waiting for the store gives up only when none was done
    /// within the request timeout (a stalled store), not while a long queue moves.
    store_calls: Arc<std::sync::atomic::AtomicU64>,
    /// For `tls://` servers; `None`: the process's, as the blocking client's
    /// ([`li3g_protocol::transport::client_config`]).
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An async client of one or more job servers; cheap to clone (clones share connections).
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

impl AsyncClient {
    /// A client of `servers`; nothing connects until the first call.
    pub fn new(servers: Vec<ServerAddr>) -> AsyncClient {
        AsyncClient::build(servers, DEFAULT_REQUEST_TIMEOUT, crate::config::DEFAULT_NAME.into(), None, None)
    }

    /// A client of named configuration `name`, read as [`Client::from_config`](crate::Client::from_config) reads it.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or the name is not in it.
    pub fn from_config(name: &str) -> Result<AsyncClient, ConfigError> {
        let target = crate::config::from_env(name)?;
        crate::config::install_tls(&target)?;
        Ok(AsyncClient::from_target(&target))
    }

    /// A client of a configuration already read (when it names Redis, scheduled jobs wait
    /// there with the `redis` feature, and are refused without it, as with the blocking
    /// client).
    pub fn from_target(target: &Target) -> AsyncClient {
        let store = crate::client::store_for(target).map(|store| Arc::new(tokio::sync::Mutex::new(store)));
        AsyncClient::build(
            target.servers.clone(),
            DEFAULT_REQUEST_TIMEOUT,
            target.name.clone(),
            target.environment.clone(),
            store,
        )
    }

    fn build(
        servers: Vec<ServerAddr>,
        request_timeout: Duration,
        name: String,
        environment: Option<String>,
        store: Option<Store>,
    ) -> AsyncClient {
        let start = if servers.is_empty() { 0 } else { crate::gearman::random_index(servers.len()) };
        AsyncClient {
            inner: Arc::new(Inner {
                conns: servers.iter().map(|_| tokio::sync::Mutex::new(None)).collect(),
                servers,
                current: AtomicUsize::new(start),
                connect_timeout: Duration::from_secs(5),
                request_timeout,
                name,
                environment,
                store,
                store_calls: Arc::default(),
                tls: None,
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> AsyncClient {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("configure an AsyncClient before cloning it"));
        f(&mut inner);
        AsyncClient { inner: Arc::new(inner) }
    }

    /// Sets how long a server may take to confirm a submission (default 10 s).
    ///
    /// # Panics
    /// When called on a client that has been cloned.
    pub fn request_timeout(self, timeout: Duration) -> AsyncClient {
        self.rebuild(|inner| inner.request_timeout = timeout)
    }

    /// Starts at the server with this index (modulo the list) instead of a random one.
    ///
    /// # Panics
    /// When called on a client that has been cloned.
    pub fn start_at(self, index: usize) -> AsyncClient {
        self.rebuild(|inner| inner.current = AtomicUsize::new(index % inner.servers.len().max(1)))
    }

    /// Schedules jobs in `store`. Its calls (a Redis round trip each) run on tokio's blocking
    /// pool, one at a time, so they hold up no other task; a call that cannot start within the
    /// request timeout (the one before it is stalled) fails without touching the store. A call
    /// dropped once its store call has started still completes that call (a job is then
    /// scheduled, as a submission dropped once written may be queued).
    ///
    /// # Panics
    /// When called on a client that has been cloned.
    pub fn with_store(self, store: Box<dyn JobStore>) -> AsyncClient {
        self.rebuild(|inner| inner.store = Some(Arc::new(tokio::sync::Mutex::new(Ok(store)))))
    }

    /// Job `id`'s status from the client's store, as [`Client::status`](crate::Client::status)
    /// reads it, on tokio's blocking pool.
    ///
    /// # Errors
    /// [`RunError::Schedule`] when there is no store or it cannot be read.
    pub async fn status(&self, id: &str) -> Result<Option<String>, RunError> {
        let id = id.to_string();
        self.with_store_blocking(move |store| store.status(&id).map_err(RunError::Schedule)).await
    }

    /// Runs `call` on the client's store on tokio's blocking pool, once the calls before it
    /// are done: waited for here, so that calls queued behind a stalled store hold no thread of
    /// the pool (tokio resolves names there), and given up when no call before it was done
    /// within the request timeout. A call that panics leaves the store unused from then on
    /// (its connection may hold a half-read answer).
    async fn with_store_blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut dyn JobStore) -> Result<T, RunError> + Send + 'static,
    ) -> Result<T, RunError> {
        let Some(store) = self.inner.store.clone() else {
            return Err(RunError::Schedule("no Redis is configured: job status is kept there".into()));
        };
        let wait = self.inner.request_timeout;
        let calls = self.inner.store_calls.clone();
        let lock = store.lock_owned();
        tokio::pin!(lock);
        let mut store = loop {
            let done = calls.load(Ordering::Relaxed);
            match tokio::time::timeout(wait, &mut lock).await {
                Ok(store) => break store,
                Err(_) if calls.load(Ordering::Relaxed) != done => {}
                Err(_) => {
                    return Err(RunError::Schedule(
                        format!(
                            "the job store did not finish the call before this one within {:.1} s: \
                             nothing was scheduled or read",
                            wait.as_secs_f64()
                        )
                        .into(),
                    ))
                }
            }
        };
        let blocking = tokio::task::spawn_blocking(move || {
            let _counted = Counted(calls);
            let called = match &mut *store {
                Ok(job_store) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(job_store.as_mut()))),
                Err(why) => return Err(RunError::RedisUrl(why.clone())),
            };
            called.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let why = format!("the job store's call panicked ({what}); it is not used again");
                *store = Ok(Box::new(Broken(why.clone())));
                Err(RunError::Schedule(why.into()))
            })
        });
        blocking.await.map_err(|err| RunError::Schedule(format!("the job store's call failed: {err}").into()))?
    }

    /// Speaks TLS to `tls://` servers with `config` instead of the process's configuration (the
    /// one [`Client::from_config`](crate::Client::from_config) installs from `tls_ca`,
    /// `tls_cert`, `tls_key`, shared with the blocking client; see
    /// [`li3g_protocol::tls::client_config`] to build one from files).
    ///
    /// # Panics
    /// When called on a client that has been cloned.
    pub fn with_tls(self, config: Arc<rustls::ClientConfig>) -> AsyncClient {
        self.rebuild(|inner| inner.tls = Some(config))
    }

    /// The environment the typed calls give tasks unless a job names one.
    pub fn environment(&self) -> Option<&str> {
        self.inner.environment.as_deref()
    }

    /// The submissions waiting for their `JOB_CREATED` and the synchronous jobs waiting for
    /// their result, over all connections: 0 when no call is under way.
    pub fn in_flight(&self) -> usize {
        self.inner
            .conns
            .iter()
            .filter_map(|slot| slot.try_lock().ok().and_then(|conn| conn.clone()))
            .map(|conn| {
                let state = conn.state.lock().expect("state lock");
                state.created.len() + state.jobs.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }

    /// Submits `task` with `args` in the background (see [`Client::submit`](crate::Client::submit)).
    ///
    /// # Errors
    /// As [`Client::submit`](crate::Client::submit).
    pub async fn submit(&self, task: &str, args: impl Serialize) -> Result<Queued, RunError> {
        match self.job(task, args).submit().await? {
            Submitted::Queued(queued) => Ok(queued),
            Submitted::Scheduled { .. } => unreachable!("a job without a time is never scheduled"),
        }
    }

    /// Runs `task` with `args` and waits for its result as a `T` (see [`Client::call`](crate::Client::call)).
    ///
    /// # Errors
    /// As [`Client::call`](crate::Client::call).
    pub async fn call<T: DeserializeOwned>(&self, task: &str, args: impl Serialize) -> Result<T, RunError> {
        self.job(task, args).call().await
    }

    /// A job to set options on before `submit().await` or `call().await`.
    pub fn job(&self, task: &str, args: impl Serialize) -> Job<'_, &AsyncClient> {
        Job::new(self, task, args)
    }

    /// Submits background jobs, pipelined: all are written before the first `JOB_CREATED` is
    /// read. Returns, per job in order, its id and handle or why it was not created (a job whose
    /// submission was sent but not confirmed is [`ClientError::MaybeQueued`], never resent).
    pub async fn submit_many<A: Serialize>(
        &self,
        jobs: impl IntoIterator<Item = (String, A)>,
    ) -> Vec<Result<Queued, RunError>> {
        let options = crate::RunOptions { environment: self.inner.environment.clone(), ..Default::default() };
        let mut results: Vec<Option<Result<Queued, RunError>>> = Vec::new();
        let mut planned = Vec::new();
        for (task, args) in jobs {
            let step = crate::job::positional(args).and_then(|args| plan(&task, &args, &options, false));
            match step {
                Ok(Planned { id, step: Step::Submit { job, .. } }) => {
                    planned.push((results.len(), id, job));
                    results.push(None);
                }
                Ok(_) => unreachable!("a job without a time is submitted"),
                Err(err) => results.push(Some(Err(err))),
            }
        }
        if !planned.is_empty() {
            let mut bytes = Vec::new();
            let mut answers = Vec::new();
            let mut pending = Vec::new();
            for (_, _, job) in &planned {
                encode(&submit_packet(job, true), &mut bytes);
                let (tx, rx) = oneshot::channel();
                pending.push(Pending { answer: tx, events: None });
                answers.push(rx);
            }
            match self.connection(None).await {
                Err(err) => {
                    let reason = err.to_string();
                    for (at, _, _) in &planned {
                        results[*at] = Some(Err(RunError::Client(ClientError::NoServer(vec![reason.clone()]))));
                    }
                }
                Ok((_, conn)) => {
                    let sent = conn.send(bytes, pending);
                    // The server answers in order: each answer within the request timeout of
                    // the one before (a long batch is not cut off while answers come); once
                    // one is late, the rest get only what has already arrived.
                    let mut deadline = Instant::now() + self.inner.request_timeout;
                    let mut late = false;
                    for ((at, id, _), answer) in planned.into_iter().zip(answers) {
                        let outcome = match &sent {
                            Err(why) => Err(maybe_queued(&conn.server, why.clone())),
                            Ok(()) => match tokio::time::timeout_at(deadline, answer).await {
                                Err(_) => {
                                    late = true;
                                    Err(maybe_queued(&conn.server, self.no_answer()))
                                }
                                Ok(answer) => {
                                    if !late {
                                        deadline = Instant::now() + self.inner.request_timeout;
                                    }
                                    created(&conn.server, answer)
                                }
                            },
                        };
                        results[at] = Some(
                            outcome
                                .map(|handle| Queued { id, handle: JobHandle { server: conn.server.clone(), handle } })
                                .map_err(RunError::from),
                        );
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every job has its outcome")).collect()
    }

    fn no_answer(&self) -> String {
        format!("no answer within {:.1} s", self.inner.request_timeout.as_secs_f64())
    }

    /// A live connection to the current server, else to the next that can be reached.
    async fn connection(&self, deadline: Option<Instant>) -> Result<(usize, Connection), ClientError> {
        let n = self.inner.servers.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            match self.connection_to(at, deadline).await {
                Ok(conn) => {
                    self.inner.current.store(at, Ordering::Relaxed);
                    return Ok((at, conn));
                }
                Err(err) => errors.push(err),
            }
        }
        Err(ClientError::NoServer(errors))
    }

    /// The live connection to server `at`, made if there is none.
    async fn connection_to(&self, at: usize, deadline: Option<Instant>) -> Result<Connection, String> {
        let mut slot = self.inner.conns[at].lock().await;
        if let Some(conn) = slot.as_ref().filter(|conn| conn.alive()) {
            return Ok(conn.clone());
        }
        let server = &self.inner.servers[at];
        let started = Instant::now();
        let mut limit = started + self.inner.connect_timeout.min(self.inner.request_timeout);
        if let Some(deadline) = deadline {
            limit = limit.min(deadline);
        }
        // The time it had (the request timeout or the caller's deadline may be the shorter).
        let within = limit.saturating_duration_since(started);
        let conn = tokio::time::timeout_at(limit, connect(server, self.inner.tls.as_ref()))
            .await
            .map_err(|_| format!("{server}: no connection within {:.1} s", within.as_secs_f64()))??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection to server `at` if it is `conn` (a submission on it went unanswered).
    async fn forget(&self, at: usize, conn: &Connection) {
        let mut slot = self.inner.conns[at].lock().await;
        if slot.as_ref().is_some_and(|kept| Arc::ptr_eq(&kept.state, &conn.state)) {
            *slot = None;
        }
    }

    /// Submits `job`; for a synchronous one, returns its registration too. A submission not
    /// confirmed is sent once more, on a new connection to the same server, when it has a key.
    async fn submit_job(
        &self,
        job: &Submit,
        packet: &Packet,
        synchronous: bool,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<(JobHandle, Option<Registration>), ClientError> {
        let (at, conn) = self.connection(deadline).await?;
        let mut bytes = Vec::new();
        encode(packet, &mut bytes);
        let first = match self.submit_on(&conn, bytes.clone(), synchronous, deadline, timeout).await {
            Ok(done) => return Ok(done),
            Err(Unconfirmed::Final(err)) => return Err(err),
            Err(Unconfirmed::Maybe(reason)) => reason,
        };
        self.forget(at, &conn).await;
        if job.unique.is_empty() {
            return Err(maybe_queued(&conn.server, first));
        }
        let again = match self.connection_to(at, deadline).await {
            Ok(again) => self.submit_on(&again, bytes, synchronous, deadline, timeout).await,
            Err(err) => return Err(maybe_queued(&conn.server, format!("{first}; sent again: {err}"))),
        };
        again.map_err(|err| match err {
            Unconfirmed::Final(err) => err,
            Unconfirmed::Maybe(reason) => maybe_queued(&conn.server, format!("{first}; sent again: {reason}")),
        })
    }

    async fn submit_on(
        &self,
        conn: &Connection,
        bytes: Vec<u8>,
        synchronous: bool,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<(JobHandle, Option<Registration>), Unconfirmed> {
        let (answer_tx, answer_rx) = oneshot::channel();
        let mut registration = None;
        let events = synchronous.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            registration = Some(Registration {
                state: conn.state.clone(),
                _writes: conn.writes.clone(),
                handle: None,
                events: Some(rx),
            });
            tx
        });
        conn.send(bytes, vec![Pending { answer: answer_tx, events }]).map_err(Unconfirmed::Maybe)?;
        let request = Instant::now() + self.inner.request_timeout;
        let limit = deadline.map_or(request, |d| d.min(request));
        let answer = match tokio::time::timeout_at(limit, answer_rx).await {
            Ok(answer) => answer,
            Err(_) if deadline.is_some_and(|d| d <= request) => {
                return Err(Unconfirmed::Final(ClientError::Timeout(timeout.unwrap_or_default())))
            }
            Err(_) => return Err(Unconfirmed::Maybe(self.no_answer())),
        };
        match answer {
            Ok(Answer::Created(handle)) => {
                if let Some(registration) = registration.as_mut() {
                    registration.handle = Some(handle.clone());
                }
                Ok((JobHandle { server: conn.server.clone(), handle }, registration))
            }
            Ok(Answer::Refused { code, message }) => {
                Err(Unconfirmed::Final(crate::gearman::server_error(code, message)))
            }
            Ok(Answer::Lost(why)) => Err(Unconfirmed::Maybe(why)),
            Err(_) => Err(Unconfirmed::Maybe("the connection closed".into())),
        }
    }

    /// Runs a planned job.
    async fn run(
        &self,
        Planned { id, step }: Planned,
        timeout: Option<Duration>,
        on_event: &mut (dyn FnMut(JobEvent<'_>) + Send),
    ) -> Result<Outcome, RunError> {
        match step {
            Step::Epoch { job, epoch, at } => {
                let packet = Packet::SubmitJobEpoch {
                    function: job.function.clone(),
                    unique: job.unique.clone(),
                    epoch,
                    workload: job.workload.clone(),
                };
                self.submit_job(&job, &packet, false, None, None).await?;
                Ok(Outcome::Scheduled { id, at })
            }
            Step::Store { job, at } => {
                self.with_store_blocking(move |store| store.schedule(&job, at).map_err(RunError::Schedule)).await?;
                Ok(Outcome::Scheduled { id, at })
            }
            Step::Submit { job, background: true } => {
                let (handle, _) = self.submit_job(&job, &submit_packet(&job, true), false, None, None).await?;
                Ok(Outcome::Queued { id, handle })
            }
            Step::Submit { job, background: false } => {
                let deadline = timeout.map(|t| Instant::now() + t);
                let packet = submit_packet(&job, false);
                let (handle, registration) = self.submit_job(&job, &packet, true, deadline, timeout).await?;
                let mut registration = registration.expect("a synchronous job is registered");
                let result = wait(&handle, &mut registration, deadline, timeout, on_event).await?;
                Ok(Outcome::Completed { id, result })
            }
        }
    }
}

/// Counts a store call as done when dropped (after the call, the store's lock still held).
struct Counted(Arc<std::sync::atomic::AtomicU64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// In place of a store whose call panicked: every call fails, saying so.
struct Broken(String);

impl JobStore for Broken {
    fn schedule(&mut self, _: &crate::ScheduledJob, _: std::time::SystemTime) -> Result<(), crate::client::StoreError> {
        Err(self.0.clone().into())
    }

    fn status(&mut self, _: &str) -> Result<Option<String>, crate::client::StoreError> {
        Err(self.0.clone().into())
    }
}

/// Why a submission did not give a handle.
enum Unconfirmed {
    /// It may be queued: sent, and no answer came.
    Maybe(String),
    /// It is not (refused), or the caller's time is up.
    Final(ClientError),
}

fn maybe_queued(server: &ServerAddr, reason: String) -> ClientError {
    ClientError::MaybeQueued { server: server.clone(), reason }
}

fn created(server: &ServerAddr, answer: Result<Answer, oneshot::error::RecvError>) -> Result<Vec<u8>, ClientError> {
    match answer {
        Ok(Answer::Created(handle)) => Ok(handle),
        Ok(Answer::Refused { code, message }) => Err(crate::gearman::server_error(code, message)),
        Ok(Answer::Lost(why)) => Err(maybe_queued(server, why)),
        Err(_) => Err(maybe_queued(server, "the connection closed".into())),
    }
}

fn submit_packet(job: &Submit, background: bool) -> Packet {
    Packet::SubmitJob {
        priority: job.priority,
        background,
        function: job.function.clone(),
        unique: job.unique.clone(),
        workload: job.workload.clone(),
    }
}

fn encode(packet: &Packet, out: &mut Vec<u8>) {
    packet::encode(Magic::Req, packet, out).expect("a submission within the size limit");
}

/// Waits for a synchronous job's result, passing its events on; a warning right before
/// `WORK_FAIL` is the failure's message (as in the blocking client).
async fn wait(
    job: &JobHandle,
    registration: &mut Registration,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    on_event: &mut (dyn FnMut(JobEvent<'_>) + Send),
) -> Result<Vec<u8>, ClientError> {
    let events = registration.events.as_mut().expect("a registration has its events");
    let mut held: Option<Vec<u8>> = None;
    loop {
        let wake = match (&held, deadline) {
            (Some(_), Some(d)) => Some(d.min(Instant::now() + WARNING_GRACE)),
            (Some(_), None) => Some(Instant::now() + WARNING_GRACE),
            (None, d) => d,
        };
        let event = match wake {
            None => events.recv().await,
            Some(at) => match tokio::time::timeout_at(at, events.recv()).await {
                Ok(event) => event,
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    if let Some(warning) = held.take() {
                        on_event(JobEvent::Warning(&warning));
                    }
                    return Err(ClientError::Timeout(timeout.unwrap_or_default()));
                }
                Err(_) => {
                    if let Some(warning) = held.take() {
                        on_event(JobEvent::Warning(&warning));
                    }
                    continue;
                }
            },
        };
        let Some(event) = event else {
            return Err(ClientError::Lost(format!("{}: the connection closed", job.server)));
        };
        if !matches!(event, Event::Fail) {
            if let Some(warning) = held.take() {
                on_event(JobEvent::Warning(&warning));
            }
        }
        match event {
            Event::Status(n, d) => on_event(JobEvent::Status(n, d)),
            Event::Data(data) => on_event(JobEvent::Data(&data)),
            Event::Warning(data) => held = Some(data),
            Event::Complete(data) => return Ok(data),
            Event::Exception(data) => return Err(ClientError::Exception(String::from_utf8_lossy(&data).into_owned())),
            Event::Fail => {
                return Err(match held {
                    Some(message) => ClientError::Exception(String::from_utf8_lossy(&message).into_owned()),
                    None => ClientError::Failed,
                })
            }
            Event::Lost(why) => return Err(ClientError::Lost(why)),
        }
    }
}

/// Connects (with TLS for a `tls://` server, verified as the blocking client verifies it),
/// asks for exceptions, and starts the connection's reader and writer.
async fn connect(server: &ServerAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Connection, String> {
    let io = |err: std::io::Error| match li3g_protocol::transport::explain_io(&err) {
        Some(reason) => format!("{server}: TLS: {reason}"),
        None => format!("{server}: {err}"),
    };
    let stream = TcpStream::connect((server.host.as_str(), server.port)).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    if !server.tls {
        let (read, write) = stream.into_split();
        return start(server, read, write).await.map_err(io);
    }
    let config = match tls {
        Some(config) => config.clone(),
        None => li3g_protocol::transport::client_config().map_err(|why| format!("{server}: TLS: {why}"))?,
    };
    let name = rustls::pki_types::ServerName::try_from(server.host.clone())
        .map_err(|err| format!("{server}: TLS: {:?} is not a host name: {err}", server.host))?;
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|err| {
        // A peer that closes during the handshake: in the blocking client's words.
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            io(std::io::Error::new(err.kind(), li3g_protocol::transport::HandshakeClosed))
        } else {
            io(err)
        }
    })?;
    let (read, write) = tokio::io::split(stream);
    start(server, read, write).await.map_err(io)
}

/// Asks for exceptions on a connected stream and starts its reader and writer.
async fn start<R, W>(server: &ServerAddr, mut read: R, mut write: W) -> std::io::Result<Connection>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut bytes = Vec::new();
    encode(&Packet::OptionReq { option: b"exceptions".to_vec() }, &mut bytes);
    write.write_all(&bytes).await?;
    write.flush().await?;
    let mut buf = Vec::new();
    match read_packet(&mut read, &mut buf).await? {
        Packet::OptionRes { .. } | Packet::Error { .. } => {}
        other => {
            return Err(std::io::Error::other(format!("answered {:?} to OPTION_REQ", other.kind())));
        }
    }
    let state = Arc::new(Mutex::new(State::default()));
    let (writes, queue) = mpsc::unbounded_channel();
    tokio::spawn(writer(write, queue, state.clone()));
    tokio::spawn(reader(read, buf, state.clone(), server.to_string()));
    Ok(Connection { server: server.clone(), state, writes })
}

/// Reads one packet from `stream` into `buf` (bytes after it stay in `buf`).
async fn read_packet(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> std::io::Result<Packet> {
    loop {
        match packet::decode(buf, packet::DEFAULT_MAX_BODY) {
            Ok(Decoded::Packet { packet, len, .. }) => {
                buf.drain(..len);
                return Ok(packet);
            }
            Ok(Decoded::Incomplete) => {}
            Err(err) => return Err(std::io::Error::other(err.to_string())),
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes what callers queue, several submissions in one write when they come together; each
/// submission's entry is queued for the reader before its bytes go out.
async fn writer(
    mut write: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<Write>,
    state: Arc<Mutex<State>>,
) {
    let mut out = Vec::new();
    while let Some(first) = queue.recv().await {
        out.clear();
        let mut next = Some(first);
        while let Some(Write { bytes, pending }) = next.take() {
            {
                let mut state = state.lock().expect("state lock");
                if state.dead.is_some() {
                    for pending in pending {
                        let _ = pending.answer.send(Answer::Lost("the connection is closed".into()));
                    }
                } else {
                    state.created.extend(pending);
                    out.extend_from_slice(&bytes);
                }
            }
            if out.len() < 256 * 1024 {
                next = queue.try_recv().ok();
            }
        }
        if let Err(err) = async {
            write.write_all(&out).await?;
            write.flush().await
        }
        .await
        {
            state.lock().expect("state lock").die(format!("cannot write: {err}"));
            return;
        }
    }
}

/// Reads answers and routes them: `JOB_CREATED` and `ERROR` to the oldest submission, `WORK_*`
/// by handle.
async fn reader(mut read: impl AsyncRead + Unpin, mut buf: Vec<u8>, state: Arc<Mutex<State>>, server: String) {
    loop {
        let packet = match read_packet(&mut read, &mut buf).await {
            Ok(packet) => packet,
            Err(err) => {
                state.lock().expect("state lock").die(format!("{server}: {err}"));
                return;
            }
        };
        let mut state = state.lock().expect("state lock");
        let (handle, event) = match packet {
            Packet::JobCreated { handle } => {
                if let Some(Pending { answer, events }) = state.created.pop_front() {
                    let filed = events.filter(|events| !events.is_closed());
                    if answer.send(Answer::Created(handle.clone())).is_ok() {
                        if let Some(events) = filed {
                            state.jobs.entry(handle).or_default().push(events);
                        }
                    }
                }
                continue;
            }
            Packet::Error { code, message } => {
                if let Some(pending) = state.created.pop_front() {
                    let _ = pending.answer.send(Answer::Refused { code, message });
                }
                continue;
            }
            Packet::WorkComplete { handle, data } => (handle, Event::Complete(data)),
            Packet::WorkFail { handle } => (handle, Event::Fail),
            Packet::WorkException { handle, data } => (handle, Event::Exception(data)),
            Packet::WorkStatus { handle, numerator, denominator } => (handle, Event::Status(numerator, denominator)),
            Packet::WorkData { handle, data } => (handle, Event::Data(data)),
            Packet::WorkWarning { handle, data } => (handle, Event::Warning(data)),
            _ => continue,
        };
        let last = matches!(event, Event::Complete(_) | Event::Fail | Event::Exception(_));
        // Every caller of the job hears it (gearmand sends it once per submission: the copies
        // after the last event find no caller left).
        let Some(callers) = state.jobs.get_mut(&handle) else { continue };
        callers.retain(|events| events.send(event.clone()).is_ok());
        if last || callers.is_empty() {
            state.jobs.remove(&handle);
        }
    }
}

impl Runner for &AsyncClient {
    fn config_name(&self) -> &str {
        &self.inner.name
    }
}

impl<'c> Job<'c, &AsyncClient> {
    /// Submits it in the background (see [`Job::submit`](crate::Job)).
    ///
    /// # Errors
    /// As [`Client::submit`](crate::Client::submit).
    pub async fn submit(mut self) -> Result<Submitted, RunError> {
        self.options.background = true;
        match self.run().await? {
            Outcome::Queued { id, handle } => Ok(Submitted::Queued(Queued { id, handle })),
            Outcome::Scheduled { id, at } => Ok(Submitted::Scheduled { id, at }),
            Outcome::Completed { .. } => unreachable!("a background job has no result"),
        }
    }

    /// Runs it and waits for its result as a `T`.
    ///
    /// # Errors
    /// As [`Client::call`](crate::Client::call).
    pub async fn call<T: DeserializeOwned>(self) -> Result<T, RunError> {
        let task = self.task.clone();
        decode_result(&task, &self.call_raw().await?)
    }

    /// Runs it and waits for its result, as the bytes the worker sent.
    ///
    /// # Errors
    /// As [`Client::call`](crate::Client::call).
    pub async fn call_raw(mut self) -> Result<Vec<u8>, RunError> {
        self.options.background = false;
        match self.run().await? {
            Outcome::Completed { result, .. } => Ok(result),
            other => unreachable!("a synchronous job completes or fails: {other:?}"),
        }
    }

    async fn run(self) -> Result<Outcome, RunError> {
        let options = self.run_options(self.client.environment());
        let Job { client, task, args, on_event, .. } = self;
        let args: Vec<Value> = args?;
        let planned = plan(&task, &args, &options, client.inner.store.is_some())?;
        let mut on_event = on_event.unwrap_or_else(|| Box::new(|_| {}));
        client.run(planned, options.timeout, &mut *on_event).await
    }
}
