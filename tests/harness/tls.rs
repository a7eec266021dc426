//! TLS for the tests: certificates made here (rcgen), stunnel in front of a real gearmand, and
//! the embedded server with a TLS listener.
//!
//! [`Certs`] is a CA with the certificates the TLS tests need: a server certificate for
//! `localhost` and 127.0.0.1, a client certificate, an expired server certificate, one for
//! another host name, and a second CA (with a client certificate of its own) that nobody
//! trusts. Every file is PEM in a temporary directory, kept as long as the `Certs`.

use super::{free_port, on_a_free_port, wait_for_port, ChildGuard, Gearmand};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use time::OffsetDateTime;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The tests' certificates (see the module's docs).
pub struct Certs {
    /// The CA that signs the certificates below (PEM).
    pub ca: PathBuf,
    /// A CA nobody is told to trust (PEM).
    pub other_ca: PathBuf,
    /// The server's: `localhost` and 127.0.0.1, valid now.
    pub server: CertFiles,
    /// A client's, signed by [`Certs::ca`].
    pub client: CertFiles,
    /// A client's signed by [`Certs::other_ca`].
    pub stranger: CertFiles,
    /// A server certificate for `localhost` and 127.0.0.1 that expired yesterday.
    pub expired: CertFiles,
    /// A server certificate valid now, for `gearman.example` only.
    pub wrong_host: CertFiles,
    dir: tempfile::TempDir,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA certificate")
}

impl Certs {
    /// Makes them all.
    ///
    /// # Panics
    /// When rcgen or the file system fails.
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let ca_issuer = ca("li3g test CA");
        let other_issuer = ca("an untrusted CA");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("write a PEM file");
            path
        };
        let now = OffsetDateTime::now_utc();
        let issue = |name: &str,
                     names: &[&str],
                     client: bool,
                     days: (i64, i64),
                     issuer: &CertifiedIssuer<'static, KeyPair>| {
            let mut params =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parameters");
            params.distinguished_name.push(DnType::CommonName, name);
            params.not_before = now + time::Duration::days(days.0);
            params.not_after = now + time::Duration::days(days.1);
            params.extended_key_usages =
                vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
            let key = KeyPair::generate().expect("a key");
            let cert = params.signed_by(&key, issuer).expect("a certificate");
            CertFiles {
                cert: write(&format!("{name}.pem"), &cert.pem()),
                key: write(&format!("{name}.key"), &key.serialize_pem()),
            }
        };
        let here = ["localhost", "127.0.0.1"];
        Certs {
            ca: write("ca.pem", &ca_issuer.pem()),
            other_ca: write("other-ca.pem", &other_issuer.pem()),
            server: issue("server", &here, false, (-1, 30), &ca_issuer),
            client: issue("client", &[], true, (-1, 30), &ca_issuer),
            stranger: issue("stranger", &[], true, (-1, 30), &other_issuer),
            expired: issue("expired", &here, false, (-30, -1), &ca_issuer),
            wrong_host: issue("wrong-host", &["gearman.example"], false, (-1, 30), &ca_issuer),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Certs {
    fn default() -> Certs {
        Certs::new()
    }
}

/// stunnel (Debian's `stunnel4`) on a free loopback port: TLS in front of a plaintext job
/// server, as the issue says gearmand needs (its own `--ssl` speaks plaintext). Killed by PID
/// when dropped.
pub struct Stunnel {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    /// Starts stunnel with `server`'s certificate, forwarding to 127.0.0.1:`backend`; with
    /// `client_ca`, it demands a client certificate signed by it.
    ///
    /// # Panics
    /// When stunnel is not installed (`tests/setup` installs stunnel4) or does not start.
    pub fn start(server: &CertFiles, client_ca: Option<&Path>, backend: u16) -> Stunnel {
        on_a_free_port("stunnel", |port| Stunnel::try_start_on(port, server, client_ca, backend))
    }

    /// As [`Stunnel::start`], on `port` (to restart it where it was, with other certificates).
    ///
    /// # Errors
    /// Why it did not start there (the port still taken, stunnel missing).
    pub fn try_start_on(
        port: u16,
        server: &CertFiles,
        client_ca: Option<&Path>,
        backend: u16,
    ) -> Result<Stunnel, String> {
        let dir = tempfile::tempdir().expect("a directory for stunnel");
        let mut config = format!(
            "foreground = yes\npid =\ndebug = 3\noutput = {log}\n[gearman]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\ncert = {cert}\nkey = {key}\n",
            log = dir.path().join("stunnel.log").display(),
            cert = server.cert.display(),
            key = server.key.display(),
        );
        if let Some(ca) = client_ca {
            config.push_str(&format!("verifyChain = yes\nrequireCert = yes\nCAfile = {}\n", ca.display()));
        }
        let file = dir.path().join("stunnel.conf");
        fs::write(&file, config).expect("write stunnel.conf");
        let binary = ["stunnel4", "stunnel"]
            .into_iter()
            .find(|b| Command::new(b).arg("-version").output().is_ok())
            .ok_or("stunnel is not installed (tests/setup installs stunnel4)")?;
        let mut process = ChildGuard::spawn(
            Command::new(binary).arg(&file).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null()),
        );
        if !wait_for_port(port, Duration::from_secs(10)) || process.wait_timeout(Duration::ZERO).is_some() {
            let log = fs::read_to_string(dir.path().join("stunnel.log")).unwrap_or_default();
            return Err(format!("stunnel did not listen on {port}: {log}"));
        }
        Ok(Stunnel { port, process, _dir: dir })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

/// The embedded job server with a TLS listener (and its loopback plaintext one, which the
/// harness uses to see it is up).
pub struct TlsServer {
    /// The server (its `port` is the plaintext one).
    pub server: Gearmand,
    /// The TLS listener's port on 127.0.0.1.
    pub tls_port: u16,
}

impl TlsServer {
    /// Starts `li3g-host server` with `cert` on a TLS port and, with `client_ca`, mutual TLS.
    ///
    /// # Panics
    /// When it does not start.
    pub fn start(cert: &CertFiles, client_ca: Option<&Path>) -> TlsServer {
        on_a_free_port("li3g-host server with TLS", |tls_port| {
            TlsServer::try_start_on(free_port(), tls_port, cert, client_ca)
        })
    }

    /// As [`TlsServer::start`], on given ports (to restart a server where it was).
    ///
    /// # Errors
    /// Why it did not start there.
    pub fn try_start_on(
        port: u16,
        tls_port: u16,
        cert: &CertFiles,
        client_ca: Option<&Path>,
    ) -> Result<TlsServer, String> {
        TlsServer::try_binary_on(&super::artifacts().host, port, tls_port, cert, client_ca)
    }

    /// As [`TlsServer::try_start_on`], with the `li3g-host` at `binary` (a release build, for
    /// benchmarks).
    ///
    /// # Errors
    /// Why it did not start there.
    pub fn try_binary_on(
        binary: &Path,
        port: u16,
        tls_port: u16,
        cert: &CertFiles,
        client_ca: Option<&Path>,
    ) -> Result<TlsServer, String> {
        let listen = format!("127.0.0.1:{tls_port}");
        let mut extra = vec!["--tls-listen", &listen, "--tls-cert", path(&cert.cert), "--tls-key", path(&cert.key)];
        if let Some(ca) = client_ca {
            extra.extend(["--tls-client-ca", path(ca)]);
        }
        let server = Gearmand::try_binary_on(binary, port, None, &extra)?;
        if !wait_for_port(tls_port, Duration::from_secs(10)) {
            return Err(format!("the TLS port {tls_port} does not accept"));
        }
        Ok(TlsServer { server, tls_port })
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
