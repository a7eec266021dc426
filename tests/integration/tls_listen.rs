//! The embedded server's TLS listener off loopback: without a client CA, TLS only encrypts
//! and whoever reaches the port can run every task, so `li3g-host server` refuses it, as it
//! refuses plaintext there, unless `--tls-client-ca` (mutual TLS) or `--insecure-listen` is
//! given. Loopback TLS without a client CA stays allowed (`tls.rs` runs it throughout).

use li3g_tests::tls::{CertFiles, Certs};
use li3g_tests::{free_port, host, on_a_free_port, run, Gearmand};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `--tls-listen ADDR --tls-cert CERT --tls-key KEY`.
fn tls_args<'a>(addr: &'a str, cert: &'a CertFiles) -> Vec<&'a str> {
    vec!["--tls-listen", addr, "--tls-cert", path(&cert.cert), "--tls-key", path(&cert.key)]
}

fn refused_for_want_of_a_client_ca(stderr: &str, addr: &str) {
    for said in [
        &format!("refusing to listen for TLS on {addr} without --tls-client-ca") as &str,
        "only encrypts",
        "whoever reaches that port can submit and take every job",
        "--insecure-listen",
    ] {
        assert!(stderr.contains(said), "expected {said:?} in: {stderr}");
    }
}

/// This machine's own non-loopback address (the one its default route leaves from), if it has
/// one: a UDP socket's `connect` picks it without sending anything.
fn own_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").or_else(|_| socket.connect("10.255.255.1:9")).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `li3g-host server` with its TLS listener on `ip` (plus `extra`) serves: the harness's
/// question on the plaintext loopback port is answered, and the TLS port accepts.
fn serves_tls_on(ip: IpAddr, cert: &CertFiles, extra: &[&str]) -> Gearmand {
    on_a_free_port("li3g-host server with TLS off loopback", |tls_port| {
        let addr = std::net::SocketAddr::new(ip, tls_port).to_string();
        let mut args = tls_args(&addr, cert);
        args.extend(extra);
        let server = Gearmand::try_embedded_on(free_port(), None, &args)?;
        TcpStream::connect_timeout(&(ip, tls_port).into(), Duration::from_secs(5))
            .map(|_| server)
            .map_err(|e| format!("the TLS port {addr} does not accept: {e}"))
    })
}

#[test]
fn tls_off_loopback_without_a_client_ca_is_refused_naming_the_cause() {
    let certs = Certs::new();
    // Refused before anything is bound, so naming 0.0.0.0 opens nothing.
    let out = run(host().args(["server", "--listen", "off"]).args(tls_args("0.0.0.0:0", &certs.server)));
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    refused_for_want_of_a_client_ca(&out.stderr, "0.0.0.0:0");
    // Beside the loopback plaintext listener too (which is never opened: its default port is
    // not even looked at).
    let out = run(host()
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(tls_args("0.0.0.0:0", &certs.server)));
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    refused_for_want_of_a_client_ca(&out.stderr, "0.0.0.0:0");
    // The same from the configuration's `tls_listen`.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("li3g.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\ntls_listen = \"0.0.0.0:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            certs.server.cert, certs.server.key
        ),
    )
    .unwrap();
    let out = run(host().args(["server", "--listen", "off", "--config"]).arg(&config));
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    refused_for_want_of_a_client_ca(&out.stderr, "0.0.0.0:0");
    // The machine's own address is no loopback either.
    if let Some(ip) = own_address() {
        let addr = std::net::SocketAddr::new(ip, 0).to_string();
        let out = run(host().args(["server", "--listen", "off"]).args(tls_args(&addr, &certs.server)));
        assert_ne!(out.code, Some(0), "{}", out.stderr);
        refused_for_want_of_a_client_ca(&out.stderr, &addr);
    }
}

#[test]
fn tls_off_loopback_is_accepted_with_a_client_ca_or_insecure_listen() {
    let Some(ip) = own_address() else {
        eprintln!("no non-loopback address on this machine: nothing to listen on");
        return;
    };
    let certs = Certs::new();
    // Mutual TLS: only clients with a certificate of the CA get in.
    let _mutual = serves_tls_on(ip, &certs.server, &["--tls-client-ca", path(&certs.ca)]);
    // The operator says so explicitly.
    let _open = serves_tls_on(ip, &certs.server, &["--insecure-listen"]);
}

#[test]
fn tls_on_loopback_without_a_client_ca_still_listens() {
    let certs = Certs::new();
    for ip in [IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)] {
        if ip.is_ipv6() && std::net::TcpListener::bind((ip, 0)).is_err() {
            continue;
        }
        let _server = serves_tls_on(ip, &certs.server, &[]);
    }
}
