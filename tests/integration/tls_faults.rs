//! TLS on Gearman connections, under faults (a review of the TLS work): clients that
//! misbehave at the embedded server's TLS listener must not hold it, and the server keeps
//! serving the clients that behave.

use li3g_tests::tls::{Certs, TlsServer};
use li3g_tests::{host, run};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads from `socket` until the server closes it, at most `within`; how long it took.
fn closed_by_the_server(socket: &mut TcpStream, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    socket.set_read_timeout(Some(within)).expect("a read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return Ok(started.elapsed()),
            // An alert, say: read on until the close.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(started.elapsed()),
            Err(e) => return Err(format!("still open after {:?}: {e}", started.elapsed())),
        }
    }
}

#[test]
fn tls_connections_that_never_finish_their_handshake_are_cut_off() {
    // Under mutual TLS nobody unauthenticated may hold the server: a connection that sends
    // nothing, or only the start of a ClientHello, is closed by the handshake deadline
    // instead of keeping a descriptor for ever (enough of them starve the listener: EMFILE).
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, Some(&certs.ca));
    let mut silent = TcpStream::connect(("127.0.0.1", tls.tls_port)).expect("connect");
    let mut partial = TcpStream::connect(("127.0.0.1", tls.tls_port)).expect("connect");
    partial.write_all(&[0x16, 0x03, 0x01, 0x00]).expect("the start of a ClientHello");
    for (what, socket) in [("silent", &mut silent), ("partial ClientHello", &mut partial)] {
        let took = closed_by_the_server(socket, Duration::from_secs(40)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(took < Duration::from_secs(40), "{what}: {took:?}");
    }
    // The server itself goes on: its plaintext side answers.
    let mut plain = TcpStream::connect(("127.0.0.1", tls.server.port)).expect("connect");
    plain.write_all(b"version\n").expect("write");
    let mut line = [0u8; 64];
    let n = plain.read(&mut line).expect("the version");
    assert!(n > 0 && line[..n].ends_with(b"\n"), "{:?}", String::from_utf8_lossy(&line[..n]));
}

#[test]
fn a_key_that_is_not_the_certificates_or_no_key_at_all_is_named_with_its_files() {
    let certs = Certs::new();
    let key_of = |cert: &std::path::Path, key: &std::path::Path| {
        let mut command = host();
        command.args(["server", "--listen", "off", "--tls-listen", "127.0.0.1:0", "--tls-cert"]);
        run(command.arg(cert).arg("--tls-key").arg(key))
    };
    // The server's certificate with the client's key.
    let out = key_of(&certs.server.cert, &certs.client.key);
    assert_ne!(out.code, Some(0));
    let (cert, key) = (certs.server.cert.display().to_string(), certs.client.key.display().to_string());
    assert!(out.stderr.contains(&format!("{key} is not the key of the certificate in {cert}")), "{}", out.stderr);
    // A certificate file where the key should be.
    let out = key_of(&certs.server.cert, &certs.server.cert);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains(&format!("{cert}: no private key in the file")), "{}", out.stderr);
    // The client side says the same of its tls_cert and tls_key.
    let mut command = host();
    command.args(["run", "Hello::say", "x", "--servers", "tls://localhost:1", "--tls-cert"]);
    let out = run(command.arg(&certs.server.cert).arg("--tls-key").arg(&certs.client.key));
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains(&format!("{key} is not the key of the certificate in {cert}")), "{}", out.stderr);
}
