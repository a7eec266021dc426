//! The scheduler's alarm clock: sleeps until a deadline, a wake-up from Redis (a client
//! scheduled an earlier job), or a signal, whichever comes first, with millisecond precision.
//!
//! Hand-written over a plain socket subscribed to the wake channel, because neither of the
//! `redis` crate's ways fits: its `PubSub` borrows the connection and unsubscribes when
//! dropped (a wake-up published between two waits would be lost), and a read timeout on its
//! `Connection` makes it skip the next reply. Redis's own blocking timeouts (`BLPOP`) are
//! checked at `hz` (100 ms here), too coarse for the lateness target. We never parse what
//! arrives: any byte means "look again", and missing one only costs a poll interval, never a
//! job. Does not take jobs, and never blocks longer than asked.
//!
//! Where it subscribes comes from [`crate::redis_target`]: the server, the master the sentinels
//! name at each (re)subscription, or a Cluster node (a Cluster delivers every `PUBLISH` to every
//! node); over TLS (rustls) for `rediss`, authenticated with the URL's user and password.

use crate::redis_target::RedisTarget;
use nix::poll::{PollFd, PollFlags};
use redis::ConnectionAddr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

enum Sock {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Unix(UnixStream),
}

impl Sock {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Tls(s) => s.sock.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sock::Tcp(s) => s.write_all(buf),
            Sock::Tls(s) => s.write_all(buf).and_then(|()| s.flush()),
            Sock::Unix(s) => s.write_all(buf),
        }
    }
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(timeout),
            Sock::Tls(s) => s.sock.set_read_timeout(timeout),
            Sock::Unix(s) => s.set_read_timeout(timeout),
        }
    }
    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(true),
            Sock::Tls(s) => s.sock.set_nonblocking(true),
            Sock::Unix(s) => s.set_nonblocking(true),
        }
    }
}

/// A subscription to the wake channel (made again when it breaks).
pub struct Wake {
    target: RedisTarget,
    /// Subscriptions tried so far (rotates through a Cluster's seed nodes).
    attempts: usize,
    channel: String,
    sock: Option<Sock>,
    /// Why the last subscription failed, until [`Wake::take_error`] reports it.
    error: Option<String>,
    /// Whether the failure was reported (once per kind of failure, not per attempt).
    reported: Option<String>,
    /// No new subscription attempt before then (after a refused one).
    retry_at: Option<std::time::Instant>,
}

/// How long after a refused subscription the next attempt waits.
const RESUBSCRIBE: Duration = Duration::from_secs(30);

impl Wake {
    /// A subscriber of `channel` on `target` (connects on the first wait).
    pub fn new(target: &RedisTarget, channel: String) -> Wake {
        Wake { target: target.clone(), attempts: 0, channel, sock: None, error: None, reported: None, retry_at: None }
    }

    fn connect(&mut self) -> std::io::Result<Sock> {
        self.attempts += 1;
        let (info, ca) = self.target.subscriber(self.attempts).map_err(std::io::Error::other)?;
        let tcp = |host: &str, port: u16| -> std::io::Result<TcpStream> {
            use std::net::ToSocketAddrs;
            let addr = (host, port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("redis host resolves to no address"))?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_write_timeout(Some(Duration::from_secs(2)))?;
            // The TLS handshake reads too (in the first write): a server that accepts and
            // never answers (stopped, stalled) must not hold the scheduler, deaf to SIGTERM.
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(stream)
        };
        let mut sock = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Sock::Tcp(tcp(host, *port)?),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let config = crate::redis_target::tls_config(ca)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|err| std::io::Error::other(format!("{host:?}: {err}")))?;
                let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                Sock::Tls(Box::new(rustls::StreamOwned::new(conn, tcp(host, *port)?)))
            }
            ConnectionAddr::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
            _ => {
                return Err(std::io::Error::other(
                    "this kind of Redis address is not supported for the wake-up channel",
                ))
            }
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            sock.write_all(&auth.arg(password).get_packed_command())?;
        }
        sock.write_all(&redis::cmd("SUBSCRIBE").arg(&self.channel).get_packed_command())?;
        confirmed(&mut sock)?;
        sock.set_nonblocking()?;
        Ok(sock)
    }

    /// Why subscribing failed, once per reason: the caller logs it (and keeps polling).
    pub fn take_error(&mut self) -> Option<String> {
        let error = self.error.take()?;
        if self.reported.as_deref() == Some(error.as_str()) {
            return None;
        }
        self.reported = Some(error.clone());
        Some(error)
    }

    /// Waits up to `timeout` for a wake-up or a signal. Returns at once if one is waiting.
    pub fn wait(&mut self, timeout: Duration) {
        if self.sock.is_none() && self.retry_at.is_none_or(|at| std::time::Instant::now() >= at) {
            // Unreachable Redis: the caller backs off on its own errors; here we just sleep.
            match self.connect() {
                Ok(sock) => {
                    self.sock = Some(sock);
                    self.retry_at = None;
                    self.reported = None;
                }
                // Refused (a wrong password, an ACL without the channel) or a TLS failure
                // (a certificate that does not verify): say so, and try again later.
                Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied || is_tls_error(&err) => {
                    self.error = Some(err.to_string());
                    self.retry_at = Some(std::time::Instant::now() + RESUBSCRIBE);
                }
                Err(_) => {}
            }
        }
        let signal = crate::signals::wake_fd();
        let mut fds = Vec::with_capacity(2);
        if let Some(sock) = &self.sock {
            fds.push(PollFd::new(sock.fd(), PollFlags::POLLIN));
        }
        if let Some(signal) = signal {
            fds.push(PollFd::new(signal, PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        // An error of poll(2) itself (not EINTR) is as good as a timeout here: the caller
        // looks at Redis again.
        let ready = crate::process::poll(&mut fds, Some(timeout)).unwrap_or(false);
        let sock_ready = self.sock.is_some() && fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if signal.is_some() {
            crate::signals::drain_wake();
        }
        if ready && sock_ready {
            self.drain();
        }
    }

    /// Reads whatever arrived; drops the socket at end of stream or on an error.
    fn drain(&mut self) {
        let Some(sock) = self.sock.as_mut() else { return };
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf) {
                Ok(0) => {
                    self.sock = None;
                    return;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.sock = None;
                    return;
                }
            }
        }
    }
}

/// Reads the answers to `AUTH` and `SUBSCRIBE` (at most 2 s): `Ok` once Redis confirmed the
/// subscription, an error of kind `PermissionDenied` with Redis's message when it refused
/// (a wrong password, an ACL without the channel).
fn confirmed(sock: &mut Sock) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if let Some(line) = seen.split(|b| *b == b'\n').find(|line| line.first() == Some(&b'-')) {
            let message = String::from_utf8_lossy(line).trim_start_matches('-').trim_end().to_string();
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message));
        }
        if seen.windows(9).any(|w| w.eq_ignore_ascii_case(b"subscribe")) {
            return Ok(());
        }
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Whether `err` came from rustls (a certificate that does not verify, a handshake refused).
fn is_tls_error(err: &std::io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}
