//! A connection to a job server being opened without blocking: the TCP connect to each address
//! the host name resolves to, then (for `tls://`) the TLS handshake, each step taken when the
//! caller's `poll(2)` says the socket is ready.
//!
//! Why: a worker serves all its job servers from one loop. Opened blocking, a server that
//! black-holes the TCP connect, or takes it and never answers the TLS handshake, held that loop
//! for the whole connect timeout on every reconnect, so jobs on the healthy servers waited too.
//! [`Connecting`] lets the loop watch the half-open connection beside the others;
//! [`Conn::connect`](crate::conn::Conn::connect), the blocking connect, drives the same steps
//! with a `poll(2)` of its own, so both ways fail alike and with the same words.
//!
//! The host name is still resolved blocking (`getaddrinfo` has no non-blocking form); name an
//! address or a host the local resolver answers for where that matters.
//!
//! It must not: speak Gearman (that is `conn.rs`).

use crate::conn::{Conn, ConnError, ServerAddr};
use crate::transport::{self, HandshakeTimeout, Handshaking, Transport};
use nix::poll::PollFlags;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A connection on its way: [`advance`](Connecting::advance) it whenever its socket is ready
/// for [`events`](Connecting::events), or its [`deadline`](Connecting::deadline) has passed.
pub struct Connecting {
    server: ServerAddr,
    /// The addresses not tried yet.
    addrs: std::vec::IntoIter<SocketAddr>,
    timeout: Duration,
    /// When the whole connect (every address, the handshake) gives up.
    overall: Instant,
    step: Step,
    /// When the current step (one address's TCP connect, or the handshake) gives up.
    deadline: Instant,
    /// How long the current address was given to accept.
    share: Duration,
}

enum Step {
    /// The TCP connect is in progress on this non-blocking socket.
    Tcp(TcpStream),
    /// Connected; the TLS handshake is under way.
    Tls(Handshaking),
}

/// Where [`Connecting::advance`] got to.
pub enum Progress {
    /// Connected: the connection blocks, as [`Conn::connect`]'s do.
    Connected(Conn),
    /// Still under way: wait for its socket again.
    Pending(Connecting),
}

impl Connecting {
    /// Resolves `server` and starts the TCP connect to its first address. All of it (every
    /// address, then the TLS handshake) takes at most `timeout`: each address tried gets an
    /// equal share of what is left, so a black-holed first address (an IPv6 one, say) leaves
    /// time for the next.
    ///
    /// # Errors
    /// [`ConnError::Io`] when the name does not resolve or no address can be tried.
    pub fn start(server: &ServerAddr, timeout: Duration) -> Result<Connecting, ConnError> {
        let addrs: Vec<SocketAddr> =
            (server.host.as_str(), server.port).to_socket_addrs().map_err(|e| io_error(server, e))?.collect();
        let mut addrs = addrs.into_iter();
        let overall = Instant::now() + timeout;
        let socket = next_address(server, &mut addrs, None)?;
        let (deadline, share) = share(overall, addrs.len());
        Ok(Connecting { server: server.clone(), addrs, timeout, overall, step: Step::Tcp(socket), deadline, share })
    }

    /// The server being connected to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// The socket to wait on.
    pub fn socket(&self) -> &TcpStream {
        match &self.step {
            Step::Tcp(socket) => socket,
            Step::Tls(handshake) => handshake.socket(),
        }
    }

    /// What to wait for on the socket before the next [`advance`](Connecting::advance).
    pub fn events(&self) -> PollFlags {
        match &self.step {
            Step::Tcp(_) => PollFlags::POLLOUT,
            Step::Tls(handshake) if handshake.wants_write() => PollFlags::POLLIN | PollFlags::POLLOUT,
            Step::Tls(_) => PollFlags::POLLIN,
        }
    }

    /// When to [`advance`](Connecting::advance) even if the socket stays quiet: the current
    /// step then fails (and the next address is tried, for a TCP connect).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Takes every step the socket allows without waiting.
    ///
    /// # Errors
    /// [`ConnError::Io`] when no address accepted in time, [`ConnError::Tls`] when the
    /// handshake fails, is closed or times out (a named timeout: [`ConnError::is_timeout`]).
    pub fn advance(mut self) -> Result<Progress, ConnError> {
        loop {
            self.step = match self.step {
                Step::Tcp(socket) => match tcp_state(&socket) {
                    Ok(true) => {
                        socket.set_nodelay(true).map_err(|e| io_error(&self.server, e))?;
                        if !self.server.tls {
                            return done(self.server, Transport::Plain(socket));
                        }
                        self.deadline = self.overall;
                        Step::Tls(Handshaking::start(socket, &self.server.host).map_err(|e| io_error(&self.server, e))?)
                    }
                    Ok(false) if Instant::now() < self.deadline => {
                        self.step = Step::Tcp(socket);
                        return Ok(Progress::Pending(self));
                    }
                    failed => {
                        let why = failed.err().unwrap_or_else(|| {
                            let given = shown(self.share);
                            io::Error::new(io::ErrorKind::TimedOut, format!("no TCP connection within {given:?}"))
                        });
                        let socket = next_address(&self.server, &mut self.addrs, Some(why))?;
                        (self.deadline, self.share) = share(self.overall, self.addrs.len());
                        Step::Tcp(socket)
                    }
                },
                Step::Tls(mut handshake) => {
                    return match handshake.advance() {
                        Ok(true) => done(self.server, handshake.finish()),
                        Ok(false) if Instant::now() < self.deadline => {
                            self.step = Step::Tls(handshake);
                            Ok(Progress::Pending(self))
                        }
                        // The server took the connection but does not answer.
                        Ok(false) => Err(io_error(
                            &self.server,
                            io::Error::new(io::ErrorKind::TimedOut, HandshakeTimeout(self.timeout)),
                        )),
                        Err(err) => Err(io_error(&self.server, err)),
                    };
                }
            };
        }
    }
}

/// The deadline of an address's TCP connect, and the time it gives: an equal share of the
/// time left until `overall` with `after` more addresses to try.
fn share(overall: Instant, after: usize) -> (Instant, Duration) {
    let now = Instant::now();
    let share = overall.saturating_duration_since(now) / u32::try_from(after + 1).unwrap_or(u32::MAX);
    (now + share, share)
}

/// `d` to the millisecond, for messages (a share of 300 ms is 299.98 ms, said as 300 ms).
fn shown(d: Duration) -> Duration {
    Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64)
}

/// The connection, made blocking.
fn done(server: ServerAddr, transport: Transport) -> Result<Progress, ConnError> {
    transport.socket().set_nonblocking(false).map_err(|e| io_error(&server, e))?;
    Ok(Progress::Connected(Conn::new(transport, server)))
}

/// The TCP connect started to the next of `addrs` that can be tried; `last` is why the one
/// before failed, for the error if none is left.
fn next_address(
    server: &ServerAddr,
    addrs: &mut std::vec::IntoIter<SocketAddr>,
    mut last: Option<io::Error>,
) -> Result<TcpStream, ConnError> {
    for addr in addrs {
        match start_tcp(addr) {
            Ok(socket) => return Ok(socket),
            Err(err) => last = Some(err),
        }
    }
    let last = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name resolves to no address"));
    Err(io_error(server, last))
}

/// A non-blocking socket with its connect to `addr` started (or already done).
fn start_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    // socket2 opens it close-on-exec.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Whether the TCP connect on `socket` is done (`Ok(true)`), under way (`Ok(false)`) or failed.
fn tcp_state(socket: &TcpStream) -> io::Result<bool> {
    if let Some(err) = socket.take_error()? {
        return Err(err);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

fn io_error(server: &ServerAddr, source: io::Error) -> ConnError {
    match transport::explain_io(&source) {
        Some(reason) => ConnError::Tls { server: server.to_string(), reason },
        None => ConnError::Io { server: server.to_string(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_an_equal_share_of_what_is_left() {
        let overall = Instant::now() + Duration::from_secs(6);
        let (_, first) = share(overall, 2);
        assert!(first <= Duration::from_secs(2) && first > Duration::from_millis(1990), "{first:?}");
        let (at, last) = share(overall, 0);
        assert!(last <= Duration::from_secs(6) && at <= overall, "{last:?}");
        assert_eq!(share(Instant::now(), 3).1, Duration::ZERO, "nothing left, nothing given");
        assert_eq!(shown(Duration::from_micros(299_980)), Duration::from_millis(300));
    }
}
