//! One blocking connection to a Gearman job server: packets in and out over a `TcpStream`,
//! plain or TLS (`tls://host:port`, see [`crate::transport`]).
//!
//! The connection owns the socket and a read buffer; [`packet::decode`] says whether the
//! buffer holds a whole packet, and if not we read more (mini-redis's `Connection`, made
//! blocking). Everything we send is a request (`\0REQ`); everything we accept is a response.

use crate::admin_protocol;
use crate::connecting::{Connecting, Progress};
use crate::packet::{self, Decoded, Magic, Packet};
use crate::transport::{self, Transport};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Waits in `poll(2)` for at most `timeout`; returns whether a descriptor is ready (false on
/// timeout or a signal).
fn poll(fds: &mut [PollFd], timeout: Duration) -> io::Result<bool> {
    // Rounded up, so a wait for 0.4 ms does not become a busy loop of zero-length polls.
    let millis = timeout.as_millis() + u128::from(timeout.subsec_nanos() % 1_000_000 != 0);
    let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The port gearmand listens on by default.
pub const DEFAULT_PORT: u16 = 4730;

/// A job server's address: `host` or `host:port` (default port 4730), `tls://` before it for
/// TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host name or IP address (with TLS, the name the server's certificate must carry).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection is TLS (`tls://host:port`).
    pub tls: bool,
}

/// Why a server address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Nothing was given.
    #[error("an empty server address")]
    Empty,
    /// `[v6` without its `]`.
    #[error("{0:?}: missing ]")]
    MissingBracket(String),
    /// Something other than `:port` after `[v6]`.
    #[error("{0:?}: expected :port after ]")]
    AfterBracket(String),
    /// The port is not a number from 0 to 65535.
    #[error("{addr:?}: bad port {port:?}")]
    BadPort {
        /// The address given.
        addr: String,
        /// Its port part.
        port: String,
    },
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("tls://") {
            return rest.parse().map(|addr| ServerAddr { tls: true, ..addr });
        }
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        let bad_port = |port: &str| AddrError::BadPort { addr: s.to_string(), port: port.to_string() };
        // [v6]:port, v6 alone, host:port, host alone.
        if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once(']').ok_or_else(|| AddrError::MissingBracket(s.to_string()))?;
            let port = match port.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad_port(p))?,
                None if port.is_empty() => DEFAULT_PORT,
                None => return Err(AddrError::AfterBracket(s.to_string())),
            };
            return Ok(ServerAddr { host: host.to_string(), port, tls: false });
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                Ok(ServerAddr { host: host.to_string(), port: port.parse().map_err(|_| bad_port(port))?, tls: false })
            }
            _ => Ok(ServerAddr { host: s.to_string(), port: DEFAULT_PORT, tls: false }),
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls://")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed (connect, read, write, timeout).
    #[error("{server}: {source}")]
    Io {
        /// The server.
        server: String,
        /// What failed.
        source: io::Error,
    },
    /// TLS failed: the server's certificate is refused (unknown CA, expired, another host
    /// name), the server refused ours or demands one, or the peer does not speak TLS.
    #[error("{server}: TLS: {reason}")]
    Tls {
        /// The server.
        server: String,
        /// Why, in words ([`crate::tls::explain`]).
        reason: String,
    },
    /// The server closed the connection.
    #[error("{server}: the server closed the connection")]
    Closed {
        /// The server.
        server: String,
    },
    /// There is no job server to connect to: none is configured.
    #[error("no job servers configured")]
    NoServers,
    /// The connection was dropped earlier (after an error) and is needed now.
    #[error("the connection to the job server was lost")]
    Lost,
    /// The server answered a request with a packet that does not belong there.
    #[error("{server}: answered {answer} where another packet belongs")]
    Unexpected {
        /// The server.
        server: String,
        /// The packet's name (`NOOP`).
        answer: String,
    },
    /// The server sent bytes that are not a valid packet; the connection is unusable.
    #[error("{server}: protocol error: {source}")]
    Protocol {
        /// The server.
        server: String,
        /// What was wrong.
        source: packet::Error,
    },
}

impl ConnError {
    /// Whether the error is a read timing out (the connection itself may still be fine).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// A connection to one job server.
///
/// Blocking by default ([`read_packet`](Conn::read_packet) waits, bounded by
/// [`set_read_timeout`](Conn::set_read_timeout)); the worker switches it to non-blocking with
/// [`set_nonblocking`](Conn::set_nonblocking) and drives it from one `poll(2)` over all its
/// servers: [`read_some`](Conn::read_some) (one `read(2)`), [`next_packet`](Conn::next_packet)
/// (no I/O), [`queue_packet`](Conn::queue_packet) and [`flush`](Conn::flush) (one `write(2)` for
/// all that is queued).
pub struct Conn {
    stream: Transport,
    server: ServerAddr,
    /// Bytes read land in `buf[end..]`; `buf[pos..end]` is not yet decoded. Allocated and
    /// zeroed once, so a read costs no memset.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    out: Vec<u8>,
    /// Whether a read that finds nothing (non-blocking, or past the read timeout, or cut short
    /// by a signal) returns `Ok(0)` instead of an error: the worker's modes.
    empty_ok: bool,
    max_body: usize,
}

/// How much one read asks for.
const READ_CHUNK: usize = 64 * 1024;
/// How long a write may wait for the server to take our bytes.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

impl Conn {
    /// Connects to `server`, trying each address it resolves to, then (for `tls://`) the
    /// handshake, all within `timeout`: [`Connecting`]'s steps, waited for here.
    ///
    /// # Errors
    /// [`ConnError::Io`] when no address accepts, [`ConnError::Tls`] when TLS fails.
    pub fn connect(server: &ServerAddr, timeout: Duration) -> Result<Conn, ConnError> {
        let mut connecting = Connecting::start(server, timeout)?;
        loop {
            let left = connecting.deadline().saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(connecting.socket().as_fd(), connecting.events())];
            // A signal or the deadline: the step looks again, and fails once it is past.
            poll(&mut fds, left).map_err(|source| ConnError::Io { server: server.to_string(), source })?;
            connecting = match connecting.advance()? {
                Progress::Connected(conn) => return Ok(conn),
                Progress::Pending(connecting) => connecting,
            };
        }
    }

    /// A connection over `stream`, connected to `server`, with nothing read or queued yet.
    pub(crate) fn new(stream: Transport, server: ServerAddr) -> Conn {
        Conn {
            stream,
            server,
            buf: vec![0; READ_CHUNK],
            pos: 0,
            end: 0,
            empty_ok: false,
            out: Vec::with_capacity(256),
            max_body: packet::DEFAULT_MAX_BODY,
        }
    }

    /// The server this connection talks to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// The socket, for `poll(2)`.
    pub fn stream(&self) -> &TcpStream {
        self.stream.socket()
    }

    /// Whether the connection still looks usable (see [`Transport::still_open`]); leaves it
    /// blocking.
    pub fn still_open(&mut self) -> bool {
        self.stream.still_open()
    }

    /// Writes `bytes` as they are (requests encoded elsewhere), blocking.
    ///
    /// # Errors
    /// [`ConnError::Io`] (or [`ConnError::Tls`]) when the write fails.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).and_then(|()| self.stream.flush()).map_err(|e| self.io(e))
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Whether a whole packet is already buffered (so `read_packet` will not block).
    pub fn has_buffered_packet(&self) -> bool {
        matches!(packet::decode(self.pending(), self.max_body), Ok(Decoded::Packet { .. }) | Err(_))
    }

    /// Whether part of a packet is buffered: the server owes us the rest.
    pub fn has_partial_packet(&self) -> bool {
        !self.pending().is_empty() && !self.has_buffered_packet()
    }

    /// Sets how long `read_packet` may block; `None` blocks forever.
    ///
    /// # Errors
    /// [`ConnError::Io`] from the socket.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConnError> {
        self.stream.socket().set_read_timeout(timeout).map_err(|e| self.io(e))
    }

    /// Makes reads and writes return at once instead of waiting (the worker's mode).
    ///
    /// # Errors
    /// [`ConnError::Io`] from the socket.
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), ConnError> {
        self.stream.socket().set_nonblocking(nonblocking).map_err(|e| self.io(e))?;
        self.empty_ok = nonblocking;
        Ok(())
    }

    /// Makes reads block for at most `timeout` and return `Ok(0)` when it passes or a signal
    /// arrives, and writes wait at most [`WRITE_DEADLINE`]: a worker with one server reads
    /// without a `poll(2)` first.
    ///
    /// # Errors
    /// [`ConnError::Io`] from the socket.
    pub fn set_blocking_reads(&mut self, timeout: Duration) -> Result<(), ConnError> {
        self.stream.socket().set_nonblocking(false).map_err(|e| self.io(e))?;
        self.stream.socket().set_read_timeout(Some(timeout)).map_err(|e| self.io(e))?;
        self.stream.socket().set_write_timeout(Some(WRITE_DEADLINE)).map_err(|e| self.io(e))?;
        self.empty_ok = true;
        Ok(())
    }

    fn io(&self, source: io::Error) -> ConnError {
        match transport::explain_io(&source) {
            Some(reason) => ConnError::Tls { server: self.server.to_string(), reason },
            None => ConnError::Io { server: self.server.to_string(), source },
        }
    }

    /// Sends one request packet (and whatever was queued before it).
    ///
    /// # Errors
    /// [`ConnError::Protocol`] when the packet cannot be encoded, [`ConnError::Io`] when the
    /// write fails or the server takes nothing for [`WRITE_DEADLINE`].
    pub fn write_packet(&mut self, packet: &Packet) -> Result<(), ConnError> {
        self.queue_packet(packet)?;
        self.flush()
    }

    /// Encodes one request packet after those already queued; [`flush`](Conn::flush) sends them.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] when the packet cannot be encoded.
    pub fn queue_packet(&mut self, packet: &Packet) -> Result<(), ConnError> {
        packet::encode(Magic::Req, packet, &mut self.out)
            .map_err(|source| ConnError::Protocol { server: self.server.to_string(), source })
    }

    /// Whether packets are queued.
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Sends everything queued, in one `write(2)` when the socket takes it all. In non-blocking
    /// mode a full socket is waited for in `poll(2)`, for at most [`WRITE_DEADLINE`] without
    /// progress.
    ///
    /// # Errors
    /// [`ConnError::Io`] when the write fails or times out.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let started = std::time::Instant::now();
        let timed_out = |started: std::time::Instant| started.elapsed() >= WRITE_DEADLINE;
        let mut done = 0;
        let result = loop {
            let step = if done < self.out.len() {
                self.stream.write(&self.out[done..])
            } else if self.stream.wants_flush() {
                // TLS records rustls still holds.
                self.stream.flush().map(|()| 0)
            } else {
                break Ok(());
            };
            match step {
                Ok(0) if done < self.out.len() => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(self.stream.socket().as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, WRITE_DEADLINE) {
                        Ok(true) => {}
                        // A signal: try again (the job's answer still goes out).
                        Ok(false) if fds[0].revents().is_none_or(|r| r.is_empty()) && !timed_out(started) => {}
                        Ok(false) => break Err(io::Error::new(io::ErrorKind::TimedOut, "the server takes no data")),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.out.clear();
        result.map_err(|e| self.io(e))
    }

    /// Reads once, whatever the socket holds (at most 64 KiB), into the buffer. Returns how
    /// many bytes came; 0 only when a non-blocking socket had none.
    ///
    /// # Errors
    /// [`ConnError::Closed`] at end of stream, [`ConnError::Io`] otherwise.
    pub fn read_some(&mut self) -> Result<usize, ConnError> {
        if self.pos > 0 {
            // Only the undecoded tail (part of one packet) moves.
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            // A packet larger than the buffer is arriving (bounded by the packet cap).
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let read = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !self.empty_ok => continue,
                other => break other,
            }
        };
        if let Ok(n) = read {
            self.end += n;
            // With TLS, take what rustls decrypted beyond the buffer's room too: `poll(2)`
            // would not see it.
            while n > 0 && self.stream.plaintext_pending() {
                if self.end == self.buf.len() {
                    self.buf.resize(self.buf.len() * 2, 0);
                }
                match self.stream.read(&mut self.buf[self.end..]) {
                    Ok(more) if more > 0 => self.end += more,
                    _ => break,
                }
            }
        }
        match read {
            Ok(0) => Err(ConnError::Closed { server: self.server.to_string() }),
            Ok(n) => Ok(n),
            Err(e)
                if self.empty_ok
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
            {
                Ok(0)
            }
            Err(e) => Err(self.io(e)),
        }
    }

    /// The next whole packet in the buffer, without reading; `None` when none is whole.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] for bytes that are not a packet, or a request where a response
    /// belongs.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, ConnError> {
        match packet::decode(self.pending(), self.max_body) {
            Ok(Decoded::Packet { magic, packet, len }) => {
                self.pos += len;
                if self.pos == self.end {
                    (self.pos, self.end) = (0, 0);
                }
                if magic != Magic::Res {
                    return Err(ConnError::Protocol {
                        server: self.server.to_string(),
                        source: packet::Error::BadMagic(*b"\0REQ"),
                    });
                }
                Ok(Some(packet))
            }
            Ok(Decoded::Incomplete) => Ok(None),
            Err(source) => Err(ConnError::Protocol { server: self.server.to_string(), source }),
        }
    }

    /// Reads one response packet, blocking until it is whole (or the read timeout passes).
    ///
    /// # Errors
    /// [`ConnError::Closed`] at end of stream, [`ConnError::Protocol`] for bytes that are
    /// not a packet or a request where a response belongs, [`ConnError::Io`] otherwise.
    pub fn read_packet(&mut self) -> Result<Packet, ConnError> {
        loop {
            if let Some(packet) = self.next_packet()? {
                return Ok(packet);
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer (blocking mode).
    fn fill(&mut self) -> Result<(), ConnError> {
        self.read_some().map(drop)
    }

    /// Sends a text admin command and returns its answer's lines: one line for `version`
    /// and the like, the lines before the closing `.` for `status` and `workers`.
    ///
    /// # Errors
    /// [`ConnError`] from the socket; admin answers are not checked here (see [`admin_protocol`]).
    pub fn admin(&mut self, command: &str) -> Result<Vec<String>, ConnError> {
        let multi_line = matches!(command.trim(), "status" | "workers" | "show jobs" | "show unique jobs");
        let line = format!("{}\n", command.trim());
        self.stream.write_all(line.as_bytes()).and_then(|()| self.stream.flush()).map_err(|e| self.io(e))?;
        let mut lines = Vec::new();
        loop {
            while let Some(end) = self.pending().iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + end + 1];
                let line = String::from_utf8_lossy(line).trim_end_matches(['\r', '\n']).to_string();
                self.pos += end + 1;
                if !multi_line {
                    return Ok(vec![line]);
                }
                if admin_protocol::is_end(&line) {
                    return Ok(lines);
                }
                lines.push(line);
            }
            self.fill()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let p = |s: &str| s.parse::<ServerAddr>();
        assert_eq!(p("localhost").unwrap(), ServerAddr { host: "localhost".into(), port: 4730, tls: false });
        assert_eq!(p("10.0.0.1:4731").unwrap(), ServerAddr { host: "10.0.0.1".into(), port: 4731, tls: false });
        assert_eq!(p("[::1]:4731").unwrap(), ServerAddr { host: "::1".into(), port: 4731, tls: false });
        assert_eq!(p("::1").unwrap(), ServerAddr { host: "::1".into(), port: 4730, tls: false });
        assert_eq!(p("host:port").unwrap_err().to_string(), "\"host:port\": bad port \"port\"");
        assert_eq!(p(""), Err(AddrError::Empty));
        assert_eq!(p("[::1]:4731").unwrap().to_string(), "[::1]:4731");
        assert_eq!(
            p("tls://gearman.example:4731").unwrap(),
            ServerAddr { host: "gearman.example".into(), port: 4731, tls: true }
        );
        assert_eq!(p("tls://[::1]").unwrap().to_string(), "tls://[::1]:4730");
    }
}
