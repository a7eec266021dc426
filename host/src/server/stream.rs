//! A peer's byte stream: a plain TCP socket, or TLS over one (rustls' `ServerConnection`
//! driven by the event loop's readiness, no thread per connection).
//!
//! Both read and write like a non-blocking socket: `WouldBlock` means "wait for the next
//! event". With TLS, a read returns plaintext rustls has decrypted, reading and decrypting
//! more records from the socket when none is buffered, until the socket itself would block
//! (so edge-triggered readiness never leaves bytes behind); a write hands plaintext to rustls
//! and writes the records it makes. Handshake messages are written by [`Stream::flush_tls`],
//! which the server calls whenever [`Stream::wants_write`] says rustls has some.
//!
//! It must not: know the Gearman protocol (that is `peer.rs`), or block.

use mio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, Read, Write};

/// A plain or TLS connection.
pub(super) enum Stream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS on TCP (boxed: a rustls session is large).
    Tls(Box<(TcpStream, ServerConnection)>),
}

impl Stream {
    /// The socket, for the poll registry.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut tls.0,
        }
    }

    /// Reads plaintext into `buf`.
    ///
    /// # Returns
    /// Bytes read (`0`: end of stream) and whether the socket is known to be drained (a short
    /// read of a plain socket; never said for TLS, read until `WouldBlock`).
    ///
    /// # Errors
    /// The socket's (`WouldBlock`: nothing more for now); a TLS failure as `InvalidData`
    /// carrying the `rustls::Error` (see [`crate::tls::rustls_error`]).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        match self {
            Stream::Plain(socket) => {
                let n = socket.read(buf)?;
                Ok((n, n < buf.len()))
            }
            Stream::Tls(tls) => {
                let (socket, conn) = &mut **tls;
                loop {
                    match conn.reader().read(buf) {
                        Ok(n) => return Ok((n, false)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The peer closed the socket without close_notify: its end of stream.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((0, false)),
                        Err(e) => return Err(e),
                    }
                    if conn.read_tls(socket)? == 0 {
                        return Ok((0, false));
                    }
                    if let Err(err) = conn.process_new_packets() {
                        // Send the alert that tells the peer why, then fail.
                        let _ = conn.write_tls(socket);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, err));
                    }
                }
            }
        }
    }

    /// Writes (some of) `buf`'s plaintext.
    ///
    /// # Returns
    /// How much of `buf` was taken.
    ///
    /// # Errors
    /// The socket's; `WouldBlock` when nothing was taken.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => {
                let mut n = tls.1.writer().write(buf)?;
                if n == 0 {
                    // rustls' buffer is full: write what it holds, then try once more.
                    self.flush_tls()?;
                    let Stream::Tls(tls) = self else { unreachable!() };
                    n = tls.1.writer().write(buf)?;
                    if n == 0 {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                self.flush_tls()?;
                Ok(n)
            }
        }
    }

    /// Whether rustls has records to write (handshake messages, alerts, encrypted data).
    pub fn wants_write(&self) -> bool {
        matches!(self, Stream::Tls(tls) if tls.1.wants_write())
    }

    /// Writes the records rustls holds.
    ///
    /// # Returns
    /// Whether all went out (always for a plain socket).
    ///
    /// # Errors
    /// The socket's, other than `WouldBlock`.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        let Stream::Tls(tls) = self else { return Ok(true) };
        let (socket, conn) = &mut **tls;
        while conn.wants_write() {
            match conn.write_tls(socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Plain(socket) => socket.as_raw_fd(),
            Stream::Tls(tls) => tls.0.as_raw_fd(),
        }
    }
}
