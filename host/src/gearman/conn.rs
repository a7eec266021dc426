//! One blocking connection to a Gearman job server: packets in and out over a `TcpStream`.
//!
//! The connection owns the socket and a read buffer; [`packet::decode`] says whether the
//! buffer holds a whole packet, and if not we read more (mini-redis's `Connection`, made
//! blocking). Everything we send is a request (`\0REQ`); everything we accept is a response.

use super::admin;
use super::packet::{self, Decoded, Magic, Packet};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// The port gearmand listens on by default.
pub const DEFAULT_PORT: u16 = 4730;

/// A job server's address: `host` or `host:port` (default port 4730).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for ServerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty server address".into());
        }
        // [v6]:port, v6 alone, host:port, host alone.
        if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once(']').ok_or_else(|| format!("{s:?}: missing ]"))?;
            let port = match port.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
                None if port.is_empty() => DEFAULT_PORT,
                None => return Err(format!("{s:?}: expected :port after ]")),
            };
            return Ok(ServerAddr { host: host.to_string(), port });
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Ok(ServerAddr {
                host: host.to_string(),
                port: port.parse().map_err(|_| format!("{s:?}: bad port {port:?}"))?,
            }),
            _ => Ok(ServerAddr { host: s.to_string(), port: DEFAULT_PORT }),
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// The server closed the connection.
    #[error("{server}: the server closed the connection")]
    Closed {
        /// The server.
        server: String,
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

/// A blocking connection to one job server.
pub struct Conn {
    stream: TcpStream,
    server: ServerAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
    max_body: usize,
}

impl Conn {
    /// Connects to `server`, trying each address it resolves to, within `timeout` each.
    ///
    /// # Errors
    /// [`ConnError::Io`] when no address accepts.
    pub fn connect(server: &ServerAddr, timeout: Duration) -> Result<Conn, ConnError> {
        let io = |source| ConnError::Io { server: server.to_string(), source };
        let addrs: Vec<SocketAddr> = (server.host.as_str(), server.port).to_socket_addrs().map_err(io)?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolves to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(io)?;
                    return Ok(Conn {
                        stream,
                        server: server.clone(),
                        buf: Vec::with_capacity(4096),
                        out: Vec::with_capacity(256),
                        max_body: packet::DEFAULT_MAX_BODY,
                    });
                }
                Err(err) => last = err,
            }
        }
        Err(io(last))
    }

    /// The server this connection talks to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// The socket, for `poll(2)`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether a whole packet is already buffered (so `read_packet` will not block).
    pub fn has_buffered_packet(&self) -> bool {
        matches!(packet::decode(&self.buf, self.max_body), Ok(Decoded::Packet { .. }) | Err(_))
    }

    /// Sets how long `read_packet` may block; `None` blocks forever.
    ///
    /// # Errors
    /// [`ConnError::Io`] from the socket.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConnError> {
        self.stream.set_read_timeout(timeout).map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> ConnError {
        ConnError::Io { server: self.server.to_string(), source }
    }

    /// Sends one request packet.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] when the packet cannot be encoded, [`ConnError::Io`] when the
    /// write fails.
    pub fn write_packet(&mut self, packet: &Packet) -> Result<(), ConnError> {
        self.out.clear();
        packet::encode(Magic::Req, packet, &mut self.out)
            .map_err(|source| ConnError::Protocol { server: self.server.to_string(), source })?;
        let result = self.stream.write_all(&self.out);
        result.map_err(|e| self.io(e))
    }

    /// Reads one response packet, blocking until it is whole (or the read timeout passes).
    ///
    /// # Errors
    /// [`ConnError::Closed`] at end of stream, [`ConnError::Protocol`] for bytes that are
    /// not a packet or a request where a response belongs, [`ConnError::Io`] otherwise.
    pub fn read_packet(&mut self) -> Result<Packet, ConnError> {
        loop {
            match packet::decode(&self.buf, self.max_body) {
                Ok(Decoded::Packet { magic, packet, len }) => {
                    self.buf.drain(..len);
                    if magic != Magic::Res {
                        return Err(ConnError::Protocol {
                            server: self.server.to_string(),
                            source: packet::Error::BadMagic(*b"\0REQ"),
                        });
                    }
                    return Ok(packet);
                }
                Ok(Decoded::Incomplete) => self.fill()?,
                Err(source) => return Err(ConnError::Protocol { server: self.server.to_string(), source }),
            }
        }
    }

    /// Reads more bytes into the buffer.
    fn fill(&mut self) -> Result<(), ConnError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            }
        };
        if n == 0 {
            return Err(ConnError::Closed { server: self.server.to_string() });
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Sends a text admin command and returns its answer's lines: one line for `version`
    /// and the like, the lines before the closing `.` for `status` and `workers`.
    ///
    /// # Errors
    /// [`ConnError`] from the socket; admin answers are not checked here (see [`admin`]).
    pub fn admin(&mut self, command: &str) -> Result<Vec<String>, ConnError> {
        let multi_line = matches!(command.trim(), "status" | "workers" | "show jobs" | "show unique jobs");
        let line = format!("{}\n", command.trim());
        self.stream.write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        let mut lines = Vec::new();
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
                if !multi_line {
                    return Ok(vec![line]);
                }
                if admin::is_end(&line) {
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
        assert_eq!(p("localhost").unwrap(), ServerAddr { host: "localhost".into(), port: 4730 });
        assert_eq!(p("10.0.0.1:4731").unwrap(), ServerAddr { host: "10.0.0.1".into(), port: 4731 });
        assert_eq!(p("[::1]:4731").unwrap(), ServerAddr { host: "::1".into(), port: 4731 });
        assert_eq!(p("::1").unwrap(), ServerAddr { host: "::1".into(), port: 4730 });
        assert!(p("host:port").is_err());
        assert!(p("").is_err());
        assert_eq!(p("[::1]:4731").unwrap().to_string(), "[::1]:4731");
    }
}
