//! `restart`'s check of the TLS files it read again against the `tls://` servers, before any
//! worker is replaced ([`super::tls_reload`]): files that parse can still be the wrong ones (a
//! CA that did not sign the servers' certificates, a client certificate they do not accept),
//! and a restart with them would replace every worker that serves by one that cannot connect.
//!
//! Each `tls://` server is asked once, an `ECHO_REQ` through a TLS session with the new
//! files, bounded by [`PROBE_WITHIN`]; the supervisor runs it itself, and a process that forks
//! starts no thread: it is blocking I/O with timeouts. Only a certificate refused, either way,
//! counts: a server that is down, slow or resets the connection says nothing about the files
//! (the new workers retry it as ever).

use crate::gearman::conn::ServerAddr;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one server may take to connect, finish the handshake and answer the echo.
pub(super) const PROBE_WITHIN: Duration = Duration::from_secs(1);

/// `ECHO_REQ` with an empty body: answered by `ECHO_RES` once the session carries packets.
const ECHO_REQ: [u8; 12] = *b"\0REQ\0\0\0\x10\0\0\0\0";

/// Why `server` refuses a TLS session made with `config` (its certificate refused by us, or
/// ours by it), in words; `None` when it answers, or cannot be asked within [`PROBE_WITHIN`].
pub(super) fn refusal(server: &ServerAddr, config: &Arc<rustls::ClientConfig>) -> Option<String> {
    let deadline = Instant::now() + PROBE_WITHIN;
    let addr = (server.host.as_str(), server.port).to_socket_addrs().ok()?.next()?;
    let mut socket = TcpStream::connect_timeout(&addr, PROBE_WITHIN).ok()?;
    let name = ServerName::try_from(server.host.clone()).ok()?;
    let mut tls = rustls::ClientConnection::new(config.clone(), name).ok()?;
    tls.writer().write_all(&ECHO_REQ).ok()?;
    let mut answer = [0u8; ECHO_REQ.len()];
    loop {
        let left = deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
        socket.set_read_timeout(Some(left)).ok()?;
        socket.set_write_timeout(Some(left)).ok()?;
        if let Err(err) = tls.complete_io(&mut socket) {
            return refused(&err);
        }
        match tls.reader().read(&mut answer) {
            // Packets flow: the files are good for this server.
            Ok(_) => return None,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) => return refused(&err),
        }
    }
}

/// The words for `err` when it is a certificate refused (by either side).
fn refused(err: &std::io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    let tls = crate::tls::rustls_error(err)?;
    let certificate = match tls {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::CertificateRequired
                | A::UnknownCA
                | A::AccessDenied
                | A::HandshakeFailure
                | A::DecryptError
        ),
        _ => false,
    };
    certificate.then(|| crate::tls::explain(tls))
}
