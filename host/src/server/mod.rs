//! The embedded Gearman job server (`li3g-host server`): li3g with nothing else installed.
//!
//! # Theory of operation
//! One process, one thread, one `mio` event loop ([`run`]): it must stay single-threaded
//! because `start` runs it as a forked child. Each turn: wait for sockets or the next timer;
//! accept connections; read each ready connection (a bounded amount per turn, so one busy peer
//! cannot starve the others) and dispatch every whole request (`handlers/`, one `match`);
//! move scheduled jobs that came due into their queues and requeue jobs past their
//! `CAN_DO_TIMEOUT`; commit the turn's store writes in one transaction (`store.rs`), which
//! releases the `JOB_CREATED` answers held for them; write what each connection has to send.
//!
//! - `net.rs`: accepting, reading, writing and closing peers, and the commit's held answers;
//! - `peer.rs`: one peer (connection): its buffers and role; `stream.rs`: its socket, plain
//!   or TLS (rustls driven by the loop's readiness);
//! - `handlers/`: what each request does, one file per packet family (and the admin commands);
//! - `lifecycle.rs`: a job's states and the counters that follow them (`set_state`), its end;
//! - `jobs.rs`: the job table; `queue.rs`: per-function priority queues and the timers;
//! - `store.rs`: SQLite.
//!
//! # gearmand, and where it differs
//! It follows gearmand 1.1.20 wherever a client can tell (one answer per submission, `atoi`
//! progress relayed byte for byte, `CAN_DO_TIMEOUT` 0 = none, the admin protocol whole, no
//! text `shutdown`, ...). Every deliberate difference, with its reason, is listed in one place:
//! `docs/EMBEDDED_SERVER.md` (the epoch timer, bounded requeues, `WORK_FAIL` without gearmand's
//! trailing NUL, a 256 MiB packet limit, batched store commits, ...). A client that writes
//! everything before it reads is never stopped; a peer leaving more than
//! [`Options::max_output`] unread is cut off. Memory per connection is bounded by the limits,
//! whatever a peer declares, and big buffers are given back once drained.
//!
//! It must not: fork, start threads, or block on a socket.

mod handlers;
mod jobs;
mod lifecycle;
mod net;
mod peer;
mod queue;
mod store;
mod stream;

pub use store::StoreError;

/// Opens the store at `path` and closes it again: whether a server could use it now (it is not
/// held by another server, it can be read and written). `start` asks before it says the
/// embedded server listens.
///
/// # Errors
/// Why the store cannot be used.
pub fn check_store(path: &std::path::Path) -> Result<(), StoreError> {
    store::Store::open(path).map(drop)
}

use jobs::{Job, Jobs};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use peer::Peer;
use queue::{Functions, Timers};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::Store;

/// The default number of times a job may run (its worker vanishing each time) before it is
/// failed, as gearmand's `--job-retries` counts.
pub const DEFAULT_JOB_RETRIES: u32 = 3;

/// The largest packet body the server takes by default: 256 MiB. gearmand has no limit of its
/// own (a body's size is a u32); this one bounds a connection's memory while taking the 64 MiB
/// workloads and results gearmand users send. A larger packet is skipped and answered `ERROR
/// ARGUMENT_TOO_LARGE`, and a job it reports on is failed.
pub const DEFAULT_MAX_BODY: usize = 256 << 20;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// SQLite file for background and scheduled jobs; `None` keeps them in memory only.
    pub store: Option<PathBuf>,
    /// A job whose worker vanished (or timed out) this many times is failed: N runs, as
    /// gearmand's `--job-retries`; 0 is no limit.
    pub job_retries: u32,
    /// The largest packet body accepted.
    pub max_body: usize,
    /// Output a peer leaves unread before it is disconnected.
    pub max_output: usize,
    /// The host name in job handles.
    pub host: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            store: None,
            job_retries: DEFAULT_JOB_RETRIES,
            max_body: DEFAULT_MAX_BODY,
            max_output: DEFAULT_MAX_BODY + (16 << 20),
            host: "li3g".into(),
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    Io(#[from] io::Error),
}

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const TLS_LISTENER: Token = Token(2);
/// How soon `accept` is tried again after it ran out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Read at most this much from one connection per turn.
const READ_BUDGET: usize = 256 << 10;
/// How long a TLS client may take to complete its handshake: one that has not by then is
/// disconnected, so that connections nobody authenticated (no certificate yet, under mutual
/// TLS) cannot hold the server's descriptors for ever.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The server: its state, from [`Server::open`] to the end of [`Server::serve`].
pub struct Server {
    options: Options,
    poll: Poll,
    listener: Option<TcpListener>,
    /// The TLS listener and its configuration (with a client CA: mutual TLS).
    tls_listener: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    peers: jobs::IdMap<Token, Peer>,
    next_token: usize,
    jobs: Jobs,
    functions: Functions,
    timers: Timers,
    store: Option<Store>,
    /// Connections to flush at the end of the turn.
    dirty: Vec<Token>,
    /// Connections with input left over (read budget spent).
    more: Vec<Token>,
    /// Connections holding output until the commit.
    held: Vec<Token>,
    /// Jobs waiting for the turn's commit (their insert, or the answer to their submission):
    /// `(job, created)`, where `created` says the job was made for that submission and is
    /// queued only once the commit succeeded.
    awaiting_commit: Vec<(jobs::JobId, bool)>,
    /// `accept` failed for want of descriptors: accept again when one is freed or after
    /// [`ACCEPT_RETRY`].
    accept_paused: bool,
    /// Counts job assignments, to tell a timed-out run from a later one.
    assignments: u64,
    /// TLS connections accepted, oldest first, with when their handshake must be done
    /// ([`HANDSHAKE_DEADLINE`]).
    handshakes: std::collections::VecDeque<(Instant, Token)>,
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Where the server listens: a plaintext listener, a TLS one, or both (loopback plaintext for
/// local tools beside TLS for the network).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The plaintext listener.
    pub plain: Option<std::net::TcpListener>,
    /// The TLS listener and its configuration ([`crate::tls::server_config`]).
    pub tls: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
}

impl From<std::net::TcpListener> for Listeners {
    fn from(listener: std::net::TcpListener) -> Listeners {
        Listeners { plain: Some(listener), tls: None }
    }
}

/// Runs the server on `listener` until `stop()` says so (checked whenever the wake-up
/// descriptor `wake_fd`, if any, becomes readable): [`Server::open`] then [`Server::serve`].
///
/// # Errors
/// [`Error::Store`] when the store cannot be opened or read; [`Error::Io`] when the event loop
/// itself fails. A failing peer is never an error of the server.
pub fn run(
    listener: impl Into<Listeners>,
    options: Options,
    wake_fd: Option<std::os::fd::RawFd>,
    stop: &dyn Fn() -> bool,
) -> Result<(), Error> {
    Server::open(listener, options)?.serve(wake_fd, stop)
}

impl Server {
    /// Opens the store (restoring its jobs) and readies the event loop on `listener`: once
    /// this returns, the server can say it is listening.
    ///
    /// # Errors
    /// [`Error::Store`] when the store cannot be opened or read; [`Error::Io`] when the
    /// listener cannot be watched.
    pub fn open(listeners: impl Into<Listeners>, options: Options) -> Result<Server, Error> {
        let listeners = listeners.into();
        let mio = |listener: std::net::TcpListener| -> io::Result<TcpListener> {
            listener.set_nonblocking(true)?;
            Ok(TcpListener::from_std(listener))
        };
        let plain = listeners.plain.map(mio).transpose()?;
        let tls = match listeners.tls {
            Some((listener, config)) => Some((mio(listener)?, config)),
            None => None,
        };
        Server::new(plain, tls, options)
    }

    /// Serves until `stop()` says so (checked whenever `wake_fd`, if any, becomes readable).
    ///
    /// # Errors
    /// [`Error::Io`] when the event loop itself fails.
    pub fn serve(mut self, wake_fd: Option<std::os::fd::RawFd>, stop: &dyn Fn() -> bool) -> Result<(), Error> {
        if let Some(fd) = wake_fd {
            self.poll.registry().register(&mut mio::unix::SourceFd(&fd), SIGNALS, Interest::READABLE)?;
        }
        self.event_loop(stop)
    }
}

impl Server {
    fn new(
        mut listener: Option<TcpListener>,
        mut tls_listener: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
        options: Options,
    ) -> Result<Server, Error> {
        let poll = Poll::new()?;
        if let Some(listener) = &mut listener {
            poll.registry().register(listener, LISTENER, Interest::READABLE)?;
        }
        if let Some((listener, _)) = &mut tls_listener {
            poll.registry().register(listener, TLS_LISTENER, Interest::READABLE)?;
        }
        let mut server = Server {
            jobs: Jobs::new(&options.host),
            store: None,
            options,
            poll,
            listener,
            tls_listener,
            peers: jobs::IdMap::default(),
            next_token: 3,
            functions: Functions::default(),
            timers: Timers::default(),
            dirty: Vec::new(),
            more: Vec::new(),
            held: Vec::new(),
            awaiting_commit: Vec::new(),
            assignments: 0,
            accept_paused: false,
            handshakes: std::collections::VecDeque::new(),
        };
        if let Some(path) = server.options.store.clone() {
            let store = Store::open(&path)?;
            let rows = store.load()?;
            server.store = Some(store);
            for row in rows {
                server.restore(row);
            }
        }
        Ok(server)
    }

    /// Puts a job read from the store back in its queue or timer.
    fn restore(&mut self, row: store::Row) {
        self.enqueue(Job::restored(row, now_ms()), false);
    }

    fn event_loop(&mut self, stop: &dyn Fn() -> bool) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let wait = if self.more.is_empty() { self.next_wait() } else { Some(Duration::ZERO) };
            // Round up so a timer is never woken for a millisecond early.
            let wait = wait.map(|w| if w.subsec_nanos() % 1_000_000 != 0 { w + Duration::from_millis(1) } else { w });
            match self.poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            let mut ready: Vec<Token> = std::mem::take(&mut self.more);
            for event in events.iter() {
                match event.token() {
                    LISTENER | TLS_LISTENER => self.accept(),
                    SIGNALS => crate::signals::drain_wake(),
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_read_closed() || event.is_error() {
                            if let Some(peer) = self.peers.get_mut(&token) {
                                peer.read_closed = true;
                            }
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            ready.push(token);
                        }
                    }
                }
            }
            ready.dedup();
            for token in ready {
                self.read(token);
            }
            if self.accept_paused {
                self.accept();
            }
            self.fire_timers();
            self.expire_handshakes();
            let stopping = stop();
            self.commit(stopping);
            // Closing a connection while flushing may give others something to send (a job
            // requeued, failed): flush until nothing is left.
            while !self.dirty.is_empty() {
                for token in std::mem::take(&mut self.dirty) {
                    self.flush(token);
                }
            }
            if stopping {
                return Ok(());
            }
        }
    }

    /// How long the loop may sleep: until the next timer or store commit.
    fn next_wait(&self) -> Option<Duration> {
        let now = Instant::now();
        let timers = self.timers.next_wait(now_ms(), now);
        let store = self.store.as_ref().and_then(|s| s.due_in(now));
        let accept = self.accept_paused.then_some(ACCEPT_RETRY);
        let handshake = self.handshakes.front().map(|(at, _)| at.saturating_duration_since(now));
        [timers, store, accept, handshake].into_iter().flatten().min()
    }
}
