//! The Gearman client against a real gearmand, with the `gearman` CLI (gearman-tools) as
//! the worker: a peer no one here wrote.

use li3g_host::gearman::client::{Client, ClientError, JobEvent, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::gearman::packet::Priority;
use li3g_tests::{free_port, wait_for_workers, ChildGuard, Gearmand};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn addr(port: u16) -> ServerAddr {
    ServerAddr { host: "127.0.0.1".into(), port }
}

/// `gearman -w -f FUNCTION -- CMD...`: the gearman-tools worker, forking CMD per job.
fn cli_worker(gearmand: &Gearmand, function: &str, extra: &[&str], cmd: &[&str]) -> ChildGuard {
    let mut command = Command::new("gearman");
    command
        .args(["-w", "-h", "127.0.0.1", "-p", &gearmand.port.to_string(), "-f", function])
        .args(extra)
        .arg("--")
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(&mut command)
}

fn job(function: &str, workload: &[u8]) -> Submit {
    Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() }
}

#[test]
fn a_synchronous_job_returns_the_workers_result() {
    let gearmand = Gearmand::start();
    let _worker = cli_worker(&gearmand, "upper", &[], &["tr", "a-z", "A-Z"]);
    wait_for_workers(&[&gearmand], "upper", 1);
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let (_, result) = client.submit_sync(&job("upper", b"hello"), Some(Duration::from_secs(10)), &mut |_| {}).unwrap();
    assert_eq!(result, b"HELLO");
}

#[test]
fn a_background_job_returns_a_handle_the_server_knows() {
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let handle = client.submit_background(&job("nobody_serves_this", b"x")).unwrap();
    assert!(handle.starts_with(b"H:"), "{}", String::from_utf8_lossy(&handle));
    let status = client.status(&handle).unwrap();
    assert!(status.known && !status.running, "{status:?}");
    assert_eq!(gearmand.status().iter().find(|s| s.function == "nobody_serves_this").map(|s| s.total), Some(1));
    let unknown = client.status(b"H:nowhere:1").unwrap();
    assert!(!unknown.known);
}

#[test]
fn background_jobs_run_high_before_normal_before_low() {
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    for (priority, name) in [(Priority::Low, "low"), (Priority::Normal, "normal"), (Priority::High, "high")] {
        let submit = Submit { priority, ..job("order", name.as_bytes()) };
        client.submit_background(&submit).unwrap();
    }
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = format!("cat >> {}; echo >> {}", out.path().display(), out.path().display());
    let mut worker = cli_worker(&gearmand, "order", &["-c", "3"], &["sh", "-c", &script]);
    let status = worker.wait_timeout(Duration::from_secs(20)).expect("the worker ends after 3 jobs");
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(out.path()).unwrap(), "high\nnormal\nlow\n");
}

#[test]
fn a_failing_job_is_an_error_and_a_timeout_is_reported() {
    let gearmand = Gearmand::start();
    let _worker = cli_worker(&gearmand, "fail", &[], &["false"]);
    wait_for_workers(&[&gearmand], "fail", 1);
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let err = client.submit_sync(&job("fail", b""), Some(Duration::from_secs(10)), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ClientError::Failed), "{err:?}");

    let started = Instant::now();
    let err = client.submit_sync(&job("no_worker", b""), Some(Duration::from_millis(300)), &mut |_| {}).unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_client_fails_over_to_a_live_server() {
    let gearmand = Gearmand::start();
    let dead = free_port();
    // Whatever server each client starts at, every submission lands on the live one.
    for _ in 0..8 {
        let mut client = Client::new(vec![addr(dead), addr(gearmand.port)]);
        client.submit_background(&job("failover", b"x")).unwrap();
    }
    assert_eq!(gearmand.status().iter().find(|s| s.function == "failover").map(|s| s.total), Some(8));
}

#[test]
fn no_live_server_is_a_clear_error_naming_each() {
    let (a, b) = (free_port(), free_port());
    let mut client = Client::new(vec![addr(a), addr(b)]);
    let err = client.submit_background(&job("x", b"")).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("no job server could take the job"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{a}")) && message.contains(&format!("127.0.0.1:{b}")), "{message}");
}

#[test]
fn echo_and_partial_data_events() {
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    client.echo(b"are you there").unwrap();
    // gearman -w without a command sends no partial data; events are covered with li3g's own
    // worker. Here: a job without events gets none.
    let _worker = cli_worker(&gearmand, "cat", &[], &["cat"]);
    wait_for_workers(&[&gearmand], "cat", 1);
    let mut events = Vec::new();
    let (_, result) = client
        .submit_sync(&job("cat", b"a\0b"), Some(Duration::from_secs(10)), &mut |e: JobEvent<'_>| {
            events.push(format!("{e:?}"))
        })
        .unwrap();
    assert_eq!(result, b"a\0b");
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn the_admin_protocol_against_gearmand() {
    use li3g_host::gearman::admin;
    use li3g_host::gearman::conn::Conn;
    let gearmand = Gearmand::start();
    let _worker = cli_worker(&gearmand, "adminfn", &[], &["cat"]);
    wait_for_workers(&[&gearmand], "adminfn", 1);
    let mut conn = Conn::connect(&addr(gearmand.port), Duration::from_secs(5)).unwrap();
    let version = conn.admin("version").unwrap();
    let expected = if li3g_tests::embedded_backend() { "li3g" } else { "OK 1." };
    assert!(version[0].starts_with("OK ") && version[0].contains(expected), "{version:?}");
    let status = admin::parse_status(conn.admin("status").unwrap().iter().map(String::as_str)).unwrap();
    assert!(status.iter().any(|s| s.function == "adminfn" && s.workers == 1), "{status:?}");
    let workers = admin::parse_workers(conn.admin("workers").unwrap().iter().map(String::as_str)).unwrap();
    assert!(workers.iter().any(|w| w.functions == ["adminfn"]), "{workers:?}");
    // The same connection still speaks the binary protocol afterwards.
    let mut client = Client::new(vec![addr(gearmand.port)]);
    client.echo(b"still binary").unwrap();
}

#[test]
fn a_peer_that_is_not_a_job_server_is_a_clear_error() {
    // A real socket whose peer answers like a web server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request);
        stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    let mut client = Client::new(vec![addr(port)]);
    let err = client.submit_background(&job("x", b"")).unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}: protocol error: bad packet magic")), "{err}");
    server.join().unwrap();
}

#[test]
fn a_client_survives_its_server_restarting() {
    let gearmand = Gearmand::start();
    let port = gearmand.port;
    let mut client = Client::new(vec![addr(port)]);
    client.submit_background(&job("restart", b"1")).unwrap();
    gearmand.kill();
    let gearmand = Gearmand::start_on(port);
    // The kept connection is dead; the client notices and reconnects instead of failing.
    client.submit_background(&job("restart", b"2")).unwrap();
    assert_eq!(gearmand.status().iter().find(|s| s.function == "restart").map(|s| s.total), Some(1));
}
