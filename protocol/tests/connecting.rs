//! Opening a connection without blocking ([`Connecting`]) and the blocking connect built on
//! it, against real sockets: a server that takes the connection, one that refuses it, and one
//! whose accept queue is full (the kernel drops the SYN, as a black-holing firewall does).

use li3g_protocol::conn::{Conn, ServerAddr};
use li3g_protocol::connecting::{Connecting, Progress};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

fn addr(port: u16) -> ServerAddr {
    format!("127.0.0.1:{port}").parse().expect("an address")
}

#[test]
fn a_listening_server_is_connected_through_the_poll_and_the_connection_blocks() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let mut connecting =
        Connecting::start(&addr(listener.local_addr().unwrap().port()), Duration::from_secs(5)).expect("started");
    let conn = loop {
        assert_eq!(connecting.events(), PollFlags::POLLOUT);
        let mut fds = [PollFd::new(connecting.socket().as_fd(), connecting.events())];
        nix::poll::poll(&mut fds, PollTimeout::from(5000u16)).expect("poll");
        connecting = match connecting.advance().expect("connected") {
            Progress::Connected(conn) => break conn,
            Progress::Pending(connecting) => connecting,
        };
    };
    let (accepted, _) = listener.accept().expect("the server side");
    assert_eq!(conn.stream().peer_addr().unwrap(), accepted.local_addr().unwrap());
    // Blocking again, as the blocking connect's connections are.
    let flags = nix::fcntl::fcntl(conn.stream(), nix::fcntl::FcntlArg::F_GETFL).expect("flags");
    assert_eq!(flags & nix::libc::O_NONBLOCK, 0);
}

#[test]
fn a_refused_connection_says_so() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Conn::connect(&addr(port), Duration::from_secs(5)).err().expect("refused");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!err.is_timeout(), "{err}");
}

#[test]
fn a_connect_the_server_never_takes_is_a_named_timeout_and_pending_until_then() {
    let full = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = full.local_addr().unwrap().port();
    // SAFETY: listen(2) on a socket we own, to shrink its accept queue to one connection.
    assert_eq!(unsafe { nix::libc::listen(full.as_raw_fd(), 0) }, 0);
    let _filler = TcpStream::connect(("127.0.0.1", port)).expect("the one connection the queue holds");
    let connecting = Connecting::start(&addr(port), Duration::from_millis(300)).expect("started");
    let Progress::Pending(connecting) = connecting.advance().expect("under way") else {
        panic!("connected to a full accept queue")
    };
    assert!(connecting.deadline() > Instant::now());
    let started = Instant::now();
    let err = Conn::connect(&addr(port), Duration::from_millis(300)).err().expect("never taken");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(err.to_string().contains("no TCP connection within 300ms"), "{err}");
    assert!(err.is_timeout(), "{err}");
}
