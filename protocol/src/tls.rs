//! TLS settings for Gearman connections: reading PEM certificates and keys, building rustls'
//! configurations for the embedded server's TLS listener and for `tls://` job servers, and
//! saying in words why a handshake failed.
//!
//! rustls with the ring provider, chosen explicitly (never a process-wide default provider),
//! so li3g needs no OpenSSL and builds without cmake or nasm. Verification is rustls' own:
//! the server's certificate chains to the CA given (`tls_ca`), else to the system's CAs, and
//! names the host connected to; the embedded server with a client CA demands a certificate
//! from every TLS client (mutual TLS).
//!
//! It must not: do I/O on sockets (the server's event loop and the blocking connection drive
//! rustls themselves).

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    /// A key file holds no private key.
    #[error("{0}: no private key in the file")]
    NoKey(PathBuf),
    /// The private key is not the certificate's.
    #[error("{key} is not the key of the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("a TLS client certificate needs its key (tls_cert and tls_key both, or neither)")]
    CertWithoutKey,
    /// rustls refused the certificates or key (a key that does not match its certificate, ...).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The CA certificates cannot be used for verification.
    #[error("CA certificates: {0}")]
    Verifier(String),
}

/// The client side's TLS files (the named configuration's `tls_ca`, `tls_cert`, `tls_key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates that sign the servers' certificates; `None`: the system's CAs.
    pub ca: Option<PathBuf>,
    /// The client's certificate chain (for servers that demand one).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The most a PEM file may hold: a system's whole CA bundle is a few hundred KiB.
const PEM_LIMIT: u64 = 16 << 20;

/// The bytes of the PEM file at `path`: a regular file (after symlinks) of at most
/// [`PEM_LIMIT`] bytes. Opened without blocking and checked before a byte is read, so a FIFO,
/// a device or a directory named by mistake (or swapped in) is refused at once instead of
/// holding the reader for good: `restart` reads these files in the supervisor, whose loop must
/// keep answering signals.
fn read_pem(path: &Path) -> Result<Vec<u8>, rustls_pki_types::pem::Error> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = rustls_pki_types::pem::Error::Io;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(io::Error::other("not a regular file (a directory, a FIFO or a device)")));
    }
    if meta.len() > PEM_LIMIT {
        return Err(io(io::Error::other(format!("{} bytes, more than a PEM file holds", meta.len()))));
    }
    let mut text = Vec::new();
    file.take(PEM_LIMIT).read_to_end(&mut text).map_err(io)?;
    Ok(text)
}

/// Reads every certificate in the PEM file at `path`.
///
/// # Errors
/// [`TlsError::Pem`] when it cannot be read or parsed, [`TlsError::NoCertificate`] when it holds none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { path: path.to_path_buf(), source };
    let text = read_pem(path).map_err(pem)?;
    let certs = CertificateDer::pem_slice_iter(&text).collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// Reads the first private key in the PEM file at `path`.
///
/// # Errors
/// [`TlsError::Pem`] when it cannot be read or holds no key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read_pem(path).and_then(|text| PrivateKeyDer::from_pem_slice(&text)).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        source => TlsError::Pem { path: path.to_path_buf(), source },
    })
}

/// rustls' refusal of a certificate and key, naming both files when the key is not the
/// certificate's.
fn pair_error<'a>(cert: &'a Path, key: &'a Path) -> impl FnOnce(rustls::Error) -> TlsError + 'a {
    move |err| match err {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        err => TlsError::Rustls(err),
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Verifier(format!("{}: {e}", ca.display())))?;
    }
    Ok(roots)
}

/// The embedded server's TLS configuration: its certificate chain and key, and with
/// `client_ca`, a certificate signed by that CA demanded from every client (mutual TLS).
///
/// # Errors
/// [`TlsError`] when a file cannot be read or rustls refuses it.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::Verifier(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(read_certs(cert)?, read_key(key)?).map_err(pair_error(cert, key))?;
    // No session resumption: connections are long-lived, and a ticket would be bytes a
    // client reads as "the server sent something unasked".
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration for connecting to `tls://` job servers: the server's certificate is
/// verified against `files.ca` (else the system's CAs) and the host name; with `files.cert`
/// and `files.key`, a client certificate is offered.
///
/// # Errors
/// [`TlsError`] when a file cannot be read or rustls refuses it.
pub fn client_config(files: &ClientFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(ca) => roots(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            roots
        }
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(pair_error(cert, key))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::CertWithoutKey),
    };
    Ok(Arc::new(config))
}

/// The rustls error inside `err`, if the I/O error came from a TLS failure.
pub fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// Says in words why a TLS session failed, naming the cause an operator can act on (an
/// unknown CA, an expired certificate, a wrong host name, a missing client certificate).
pub fn explain(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(cert) => {
            let cause = match cert {
                CertificateError::UnknownIssuer => "it is signed by an unknown CA (not in tls_ca)".to_string(),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".to_string(),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "it is not valid yet".to_string()
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "it is for another host name (wrong host name)".to_string()
                }
                CertificateError::Revoked => "it is revoked".to_string(),
                CertificateError::BadSignature => "its signature is bad".to_string(),
                other => format!("{other:?}"),
            };
            format!("the peer's TLS certificate is refused: {cause}")
        }
        E::NoCertificatesPresented => "the TLS client presented no certificate (one is required)".into(),
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "the server demands a client certificate (set tls_cert and tls_key)".into()
            }
            AlertDescription::UnknownCA => "the peer does not trust our certificate: unknown CA".into(),
            AlertDescription::CertificateExpired => "the peer refused our certificate: it has expired".into(),
            AlertDescription::BadCertificate | AlertDescription::UnsupportedCertificate => {
                "the peer refused our certificate".into()
            }
            AlertDescription::DecryptError | AlertDescription::HandshakeFailure => {
                "the TLS handshake failed (the peer refused it; a client certificate may be required)".into()
            }
            other => format!("the peer sent the TLS alert {other:?}"),
        },
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            format!("the peer does not speak TLS ({err})")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(explain(&e).contains("unknown CA"));
        let e = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert!(explain(&e).contains("expired"));
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(explain(&e).contains("wrong host name"));
        let e = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(explain(&e).contains("demands a client certificate"));
    }

    #[test]
    fn what_is_no_regular_file_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("li3g-tls-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("ca.pem");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // On a thread, so that a reader that blocks on the FIFO fails the test instead of
        // holding it.
        let (tx, rx) = std::sync::mpsc::channel();
        let (f, d) = (fifo.clone(), dir.clone());
        std::thread::spawn(move || {
            drop(tx.send((read_certs(&f).map(drop), read_key(&f).map(drop), read_certs(&d).map(drop))))
        });
        let (certs, key, directory) =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("read without blocking");
        for err in [certs.unwrap_err(), key.unwrap_err(), directory.unwrap_err()] {
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cert_needs_its_key() {
        let files = ClientFiles { cert: Some("/nonexistent".into()), ..ClientFiles::default() };
        assert!(matches!(client_config(&files), Err(TlsError::CertWithoutKey)));
    }
}
