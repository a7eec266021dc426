//! A `tls://` server that accepts the TCP connection but never answers the handshake (hung,
//! overloaded, SIGSTOPped): the connection fails within its timeout, says so in words, and
//! still counts as a timeout.

use li3g_protocol::conn::{Conn, ServerAddr};
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[test]
fn a_server_that_never_answers_the_handshake_is_a_named_timeout() {
    // Listening but never accepting: the kernel completes the TCP handshake, nobody speaks.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let server: ServerAddr = format!("tls://localhost:{port}").parse().expect("an address");
    let started = Instant::now();
    let err = Conn::connect(&server, Duration::from_millis(300)).err().expect("no handshake, no connection");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.contains("no TLS handshake within 300ms"), "{text}");
    assert!(err.is_timeout(), "{text}");
    drop(listener);
}
