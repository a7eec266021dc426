//! TLS on Gearman connections, under faults (a review of the TLS work): clients that
//! misbehave at the embedded server's TLS listener must not hold it, and the server keeps
//! serving the clients that behave; a job server that takes a worker's connection and never
//! answers its handshake (or never takes it) holds up none of the worker's other servers.

use li3g_tests::tls::{Certs, Stunnel, TlsServer};
use li3g_tests::{free_port, host, run, wait_until, wait_until_ok, ChildGuard, Gearmand, Lines, PluginDir, Worker};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
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

/// Three `Hello::say` jobs run synchronously through `gearmand`, each answered.
fn three_jobs_answered(gearmand: &Gearmand) {
    for n in 0..3 {
        let out = run(host().args(["run", "Hello::say", &format!("J{n}"), "--sync", "--servers", &gearmand.addr()]));
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), format!("Hello J{n}\n").as_str()), "{}", out.stderr);
    }
}

/// Whether `socket`, whose peer we never answer, is still open at the peer's end.
fn peer_still_there(socket: &mut TcpStream) -> bool {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_tls_server_that_never_answers_the_handshake_holds_up_no_job_on_the_other_servers() {
    // The hung server: the kernel takes the connection, the test reads the ClientHello and
    // never answers. The worker used to wait in that handshake (5 s, on every reconnect) with
    // its jobs on the healthy server waiting too.
    let certs = Certs::new();
    let hung = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let hung_addr = format!("tls://127.0.0.1:{}", hung.local_addr().expect("its address").port());
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = Worker::builder(&[hung_addr.as_str(), &gearmand.addr()])
        .plugins(dir.path())
        .arg("--tls-ca")
        .arg(&certs.ca)
        .registered(&[&gearmand], "Hello::say", 1)
        .spawn();
    // The worker's handshake now under way: a connection whose ClientHello came and that the
    // worker has not given up (an earlier one may have timed out already).
    let mut pending =
        wait_until_ok("a handshake under way", Duration::from_secs(30), Duration::from_millis(20), || {
            let (mut socket, _) = hung.accept().map_err(|e| e.to_string())?;
            socket.set_read_timeout(Some(Duration::from_secs(2))).expect("a read timeout");
            let mut hello = [0u8; 5];
            socket.read_exact(&mut hello).map_err(|e| format!("no ClientHello: {e}"))?;
            if hello[0] != 0x16 {
                return Err(format!("not a TLS handshake record: {hello:?}"));
            }
            if peer_still_there(&mut socket) {
                Ok(socket)
            } else {
                Err("given up already".to_string())
            }
        });
    three_jobs_answered(&gearmand);
    assert!(
        peer_still_there(&mut pending),
        "the jobs on the healthy server waited for the hung server's handshake to give up"
    );
}

#[test]
fn a_job_server_that_never_takes_the_connection_holds_up_no_job_on_the_other_servers() {
    // A listener whose accept queue is full: the kernel drops the worker's SYN, as a
    // firewall that black-holes the port does, and the TCP connect stays under way.
    let hole = li3g_tests::BlackHole::new();
    let port = hole.port;
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = Worker::builder(&[format!("127.0.0.1:{port}"), gearmand.addr()])
        .plugins(dir.path())
        .registered(&[&gearmand], "Hello::say", 1)
        .spawn();
    // The worker's connect now under way: its socket in SYN_SENT towards the port.
    let mut connecting = Vec::new();
    wait_until("the worker's connect under way", Duration::from_secs(30), || {
        connecting = syn_sent_to(port);
        !connecting.is_empty()
    });
    three_jobs_answered(&gearmand);
    let still = syn_sent_to(port);
    assert!(
        connecting.iter().any(|local| still.contains(local)),
        "the jobs on the healthy server waited for the connect to give up ({connecting:?} then {still:?})"
    );
}

/// The local ports of loopback sockets in SYN_SENT towards `port` (from /proc/net/tcp).
fn syn_sent_to(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")).then(|| fields[1].to_string())
        })
        .collect()
}

/// A worker on `server` alone, with `tls` (`--tls-ca ...`), its log lines collected.
fn logging_worker(server: &str, dir: &PluginDir, tls: &[&str]) -> (ChildGuard, Lines) {
    let mut command = host();
    command
        .args(["work", "--verbose", "--servers", server])
        .args(tls)
        .arg("--plugins")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut worker = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(worker.child().stderr.take().expect("its stderr"));
    (worker, lines)
}

#[test]
fn a_tls_server_that_closes_the_connection_unanswered_is_retried_with_a_growing_delay() {
    // Both take the TCP connection and complete the TLS handshake (TLS 1.3: the client is done
    // first), then close it without a Gearman word: stunnel whose gearmand is down, and a
    // mutual-TLS server refusing a worker that has no client certificate. The worker reset its
    // backoff on every handshake and reconnected at once when the connection was lost:
    // hundreds of handshakes a second, two log lines each.
    let certs = Certs::new();
    let stunnel = Stunnel::start(&certs.server, None, free_port());
    let mutual = TlsServer::start(&certs.server, Some(&certs.ca));
    let dir = PluginDir::with(&["hello"]);
    let ca = certs.ca.to_str().expect("a UTF-8 path");
    let started = Instant::now();
    let servers = [format!("tls://localhost:{}", stunnel.port), format!("tls://localhost:{}", mutual.tls_port)];
    let workers: Vec<_> = servers.iter().map(|server| logging_worker(server, &dir, &["--tls-ca", ca])).collect();
    for (server, (_, lines)) in servers.iter().zip(&workers) {
        let lost = format!("Lost {server}: ");
        wait_until("five connections lost", Duration::from_secs(30), || lines.count(&lost) >= 5);
        // 100 + 200 + 400 + 800 ms between them, and the delay in the words.
        assert!(started.elapsed() >= Duration::from_millis(1500), "{server}: {:#?}", lines.all());
        let fourth = lines.all().into_iter().filter(|l| l.contains(&lost)).nth(3).expect("a fourth loss");
        assert!(fourth.ends_with("; reconnecting in 800ms"), "{fourth}");
    }
    let demanded = workers[1].1.wait_for("Lost", Duration::ZERO);
    assert!(demanded.contains("the server demands a client certificate"), "{demanded}");
}

#[test]
fn sigterm_stops_a_worker_on_one_tls_server_at_once() {
    // A worker with one server read it blocking, for up to 500 ms at a time, counting on a
    // signal to cut the read short; rustls retries an interrupted read, so over TLS each
    // SIGTERM waited for that read's timeout.
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{}", tls.tls_port);
    let spawn = || Worker::builder(&[server.as_str()]).plugins(dir.path()).arg("--tls-ca").arg(&certs.ca).spawn();
    let mut workers = [spawn(), spawn()];
    li3g_tests::wait_for_workers(&[&tls.server], "Hello::say", 2);
    let took: Vec<Duration> = workers
        .iter_mut()
        .map(|worker| {
            let sent = Instant::now();
            li3g_tests::signal(worker.id(), li3g_tests::Signal::SIGTERM);
            let status = worker.wait_timeout(Duration::from_secs(10)).expect("the worker exits on SIGTERM");
            assert!(status.success(), "{status:?}");
            sent.elapsed()
        })
        .collect();
    // At once, for one of the two at least (the machine may be busy): 500 ms each before.
    assert!(took.iter().min().expect("two") < &Duration::from_millis(350), "SIGTERM took {took:?}");
}
