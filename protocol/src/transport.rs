//! What a [`Conn`](super::conn::Conn) reads and writes through: a plain TCP socket, or TLS on
//! one (`tls://host:port`), with rustls.
//!
//! Both keep the socket's blocking mode and timeouts: the worker's `poll(2)` watches the same
//! descriptor. A TLS read hands over everything rustls has decrypted, so no plaintext waits
//! inside rustls while `poll(2)` waits on a quiet socket ([`Transport::plaintext_pending`]).
//!
//! The TLS configuration (CA, client certificate) is the process's: installed once from the
//! named configuration before any connection ([`install_client_config`]), the same for every
//! `tls://` server, as the issue's `tls_ca`/`tls_cert`/`tls_key` apply to every one; without
//! it, the system's CAs verify servers and no client certificate is offered.
//!
//! It must not: know the Gearman protocol (that is `conn.rs`).

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

static CLIENT_CONFIG: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);
static DEFAULT_CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();

/// Sets the TLS configuration every later `tls://` connection of this process uses.
pub fn install_client_config(config: Arc<ClientConfig>) {
    *CLIENT_CONFIG.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
}

/// The TLS configuration `tls://` connections use: the one installed
/// ([`install_client_config`]), else the system's CAs and no client certificate. li3g-client's
/// async client uses it too, so both clients verify servers alike.
///
/// # Errors
/// Why the default configuration cannot be built (the system's CAs unreadable).
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    if let Some(config) = CLIENT_CONFIG.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(config.clone());
    }
    DEFAULT_CONFIG
        .get_or_init(|| crate::tls::client_config(&crate::tls::ClientFiles::default()).map_err(|e| e.to_string()))
        .clone()
}

/// A TLS session whose handshake is under way on a non-blocking socket: the caller waits for
/// the socket as [`wants_read`](Handshaking::wants_read) and
/// [`wants_write`](Handshaking::wants_write) say, then calls [`advance`](Handshaking::advance),
/// so a server that never answers holds up nothing else the caller's `poll(2)` serves.
pub struct Handshaking(Box<StreamOwned<ClientConnection, TcpStream>>);

impl Handshaking {
    /// Starts TLS on `socket` (non-blocking) with the server `host`, the name its certificate
    /// must carry.
    ///
    /// # Errors
    /// `InvalidInput` for a host that is no server name, `InvalidData` carrying the
    /// `rustls::Error` (see [`explain_io`]), or the default configuration's failure.
    pub fn start(socket: TcpStream, host: &str) -> io::Result<Handshaking> {
        let config = client_config().map_err(io::Error::other)?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Handshaking(Box::new(StreamOwned::new(conn, socket))))
    }

    /// Moves the handshake on as far as the socket allows without waiting: `Ok(true)` once it
    /// is complete.
    ///
    /// # Errors
    /// [`HandshakeClosed`] when the server closes the connection, `InvalidData` carrying the
    /// `rustls::Error` when TLS fails (see [`explain_io`]), or the socket's error.
    pub fn advance(&mut self) -> io::Result<bool> {
        let tls = &mut *self.0;
        while tls.conn.is_handshaking() {
            match tls.conn.complete_io(&mut tls.sock) {
                Ok((0, 0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, HandshakeClosed)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, HandshakeClosed))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Whether the handshake waits for the server's bytes.
    pub fn wants_read(&self) -> bool {
        self.0.conn.wants_read()
    }

    /// Whether the handshake has bytes for the server that the socket did not take yet.
    pub fn wants_write(&self) -> bool {
        self.0.conn.wants_write()
    }

    /// The socket, for `poll(2)`.
    pub fn socket(&self) -> &TcpStream {
        &self.0.sock
    }

    /// The connection, once [`advance`](Handshaking::advance) said the handshake is complete.
    pub fn finish(self) -> Transport {
        Transport::Tls(self.0)
    }
}

/// A connection's byte stream.
pub enum Transport {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: a rustls session is large).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// The socket, for `poll(2)` and its options.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.sock,
        }
    }

    /// Whether the connection still looks usable: the server has not closed it and sent
    /// nothing unasked. With TLS, records that carry no data (TLS 1.3 session tickets, sent
    /// after the handshake) are taken in first; they do not count.
    pub fn still_open(&mut self) -> bool {
        let socket = self.socket();
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let open = match self {
            Transport::Plain(socket) => {
                let mut byte = [0u8; 1];
                matches!(socket.peek(&mut byte), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
            }
            Transport::Tls(tls) => loop {
                match tls.conn.read_tls(&mut tls.sock) {
                    Ok(0) => break false,
                    Ok(_) => match tls.conn.process_new_packets() {
                        Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {}
                        _ => break false,
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                    Err(_) => break false,
                }
            },
        };
        self.socket().set_nonblocking(false).is_ok() && open
    }

    /// Whether rustls holds records not written yet.
    pub fn wants_flush(&self) -> bool {
        matches!(self, Transport::Tls(tls) if tls.conn.wants_write())
    }

    /// Whether rustls holds decrypted bytes not read yet.
    pub fn plaintext_pending(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => {
                tls.conn.process_new_packets().is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
            }
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(buf),
            Transport::Tls(tls) => {
                let mut n = match tls.read(buf) {
                    // The server closed the socket without close_notify: its end of stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    other => other?,
                };
                // Take everything already decrypted (no socket read).
                while n < buf.len() && n > 0 {
                    match tls.conn.reader().read(&mut buf[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(more) => n += more,
                    }
                }
                Ok(n)
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(buf),
            Transport::Tls(tls) => {
                // Records left from an earlier write go first; a full socket says WouldBlock
                // before any new plaintext is taken, so none is taken twice.
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut tls.sock)?;
                }
                let n = tls.conn.writer().write(buf)?;
                while tls.conn.wants_write() {
                    match tls.conn.write_tls(&mut tls.sock) {
                        Ok(_) => {}
                        // Taken: the rest goes out with the next write or flush.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.flush(),
            Transport::Tls(tls) => {
                while tls.conn.wants_write() {
                    tls.conn.write_tls(&mut tls.sock)?;
                }
                Ok(())
            }
        }
    }
}

/// The server closed the connection in the middle of the TLS handshake.
#[derive(Debug, thiserror::Error)]
#[error("the server closed the connection during the TLS handshake: it does not speak TLS, or refused us")]
pub struct HandshakeClosed;

/// The server accepted the connection but did not answer the TLS handshake in time (a hung
/// or overloaded server, or a plaintext one waiting for a line). Its kind stays a timeout.
#[derive(Debug, thiserror::Error)]
#[error("no TLS handshake within {0:?}: the server took the connection but does not answer")]
pub struct HandshakeTimeout(pub Duration);

/// The words for a TLS failure inside `err`, if it is one.
pub fn explain_io(err: &io::Error) -> Option<String> {
    if let Some(closed) = err.get_ref().and_then(|e| e.downcast_ref::<HandshakeClosed>()) {
        return Some(closed.to_string());
    }
    crate::tls::rustls_error(err).map(crate::tls::explain)
}
