//! The Gearman client against a real gearmand, with the `gearman` CLI (gearman-tools) as
//! the worker: a peer no one here wrote.

use li3g_host::gearman::client::{ClientError, GearmanClient, JobEvent, JobHandle, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::gearman::packet::Priority;
use li3g_tests::{free_port, wait_for_workers, ChildGuard, Gearmand};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn addr(port: u16) -> ServerAddr {
    ServerAddr { host: "127.0.0.1".into(), port, tls: false }
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
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
    let (_, result) = client.submit_sync(&job("upper", b"hello"), Some(Duration::from_secs(10)), &mut |_| {}).unwrap();
    assert_eq!(result, b"HELLO");
}

#[test]
fn a_background_job_returns_a_handle_the_server_knows() {
    let gearmand = Gearmand::start();
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
    let handle = client.submit_background(&job("nobody_serves_this", b"x")).unwrap();
    assert!(handle.handle.starts_with(b"H:"), "{handle}");
    assert_eq!(handle.server, addr(gearmand.port));
    let status = client.status(&handle).unwrap();
    assert!(status.known && !status.running, "{status:?}");
    assert_eq!(gearmand.status().iter().find(|s| s.function == "nobody_serves_this").map(|s| s.total), Some(1));
    let unknown = client.status(&JobHandle { handle: b"H:nowhere:1".to_vec(), ..handle }).unwrap();
    assert!(!unknown.known);
}

#[test]
fn background_jobs_run_high_before_normal_before_low() {
    let gearmand = Gearmand::start();
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
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
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
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
    // Both starting points: from the dead server over to the live one, and the live one at once.
    for start in [0, 1, 0, 1] {
        let mut client = GearmanClient::new(vec![addr(dead), addr(gearmand.port)]).start_at(start);
        let handle = client.submit_background(&job("failover", b"x")).unwrap();
        assert_eq!(handle.server, addr(gearmand.port));
    }
    assert_eq!(gearmand.status().iter().find(|s| s.function == "failover").map(|s| s.total), Some(4));
}

#[test]
fn a_status_lookup_asks_the_server_that_holds_the_job() {
    let (a, b) = (Gearmand::start(), Gearmand::start());
    let mut client = GearmanClient::new(vec![addr(a.port), addr(b.port)]).start_at(1);
    let held = client.submit_background(&job("where", b"x")).unwrap();
    assert_eq!(held.server, addr(b.port));
    // This client's connection now goes to A; the lookup still asks B, which knows the handle.
    let mut other = GearmanClient::new(vec![addr(a.port), addr(b.port)]).start_at(0);
    other.echo(b"connect to A first").unwrap();
    assert!(other.status(&held).unwrap().known);
    // A handle given by A asks A, which does not know B's job.
    let on_a = JobHandle { server: addr(a.port), ..held.clone() };
    assert!(!other.status(&on_a).unwrap().known);
}

#[test]
fn no_live_server_is_a_clear_error_naming_each() {
    let (a, b) = (free_port(), free_port());
    let mut client = GearmanClient::new(vec![addr(a), addr(b)]);
    let err = client.submit_background(&job("x", b"")).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("no job server could take the job"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{a}")) && message.contains(&format!("127.0.0.1:{b}")), "{message}");
}

#[test]
fn echo_and_partial_data_events() {
    let gearmand = Gearmand::start();
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
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
    use li3g_host::gearman::admin_protocol as admin;
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
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
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
    let mut client = GearmanClient::new(vec![addr(port)]);
    let err = client.submit_background(&job("x", b"")).unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}: protocol error: bad packet magic")), "{err}");
    server.join().unwrap();
}

#[test]
fn a_client_survives_its_server_restarting() {
    let gearmand = Gearmand::start();
    let port = gearmand.port;
    let mut client = GearmanClient::new(vec![addr(port)]);
    client.submit_background(&job("restart", b"1")).unwrap();
    gearmand.kill();
    let gearmand = Gearmand::start_on(port);
    // The kept connection is dead; the client notices and reconnects instead of failing.
    client.submit_background(&job("restart", b"2")).unwrap();
    assert_eq!(gearmand.status().iter().find(|s| s.function == "restart").map(|s| s.total), Some(1));
}

/// A proxy to gearmand that, on its first connection, delivers the submission and then closes
/// the client's side instead of passing the `JOB_CREATED` on: the job is queued, and the client
/// never hears so. Later connections are passed through both ways. Returns its port.
pub(crate) fn unconfirming_proxy(gearmand: u16) -> u16 {
    use std::io::{copy, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let mut server = TcpStream::connect(("127.0.0.1", gearmand)).unwrap();
            let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                if n > 0 {
                    let _ = copy(&mut server, &mut client);
                    let _ = client.shutdown(Shutdown::Write);
                    return;
                }
                let mut header = [0u8; 12];
                while server.read_exact(&mut header).is_ok() {
                    let kind = u32::from_be_bytes(header[4..8].try_into().unwrap());
                    let mut body = vec![0u8; u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize];
                    server.read_exact(&mut body).unwrap();
                    if kind == 8 {
                        // JOB_CREATED: the job is queued; drop the client without telling it.
                        let _ = client.shutdown(Shutdown::Both);
                        return;
                    }
                    client.write_all(&header).and_then(|()| client.write_all(&body)).unwrap();
                }
            });
        }
    });
    port
}

#[test]
fn a_submission_sent_but_not_confirmed_is_not_sent_elsewhere() {
    let gearmand = Gearmand::start();
    let proxy = unconfirming_proxy(gearmand.port);
    // The proxy first, then gearmand itself: failing over would queue the job a second time.
    let mut client = GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0);
    let err = client.submit_background(&job("once", b"x")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "127.0.0.1:{proxy} did not confirm the submission (the server closed the connection): the job may be \
             queued there; it was not sent to another server, where it could run twice (a unique key makes a \
             resubmission safe)"
        )
    );
    assert_eq!(gearmand.status().iter().find(|s| s.function == "once").map(|s| s.total), Some(1));
}

#[test]
fn an_unconfirmed_submission_with_a_unique_key_is_sent_again_and_coalesces() {
    let gearmand = Gearmand::start();
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0);
    let submit = Submit { unique: b"only-once".to_vec(), ..job("keyed", b"x") };
    let handle = client.submit_background(&submit).unwrap();
    assert_eq!(handle.server, addr(proxy), "sent again to the same server");
    assert_eq!(gearmand.status().iter().find(|s| s.function == "keyed").map(|s| s.total), Some(1));
    assert!(client.status(&handle).unwrap().known);
}

/// A server that accepts connections and never answers; returns its port.
pub(crate) fn wedged_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    port
}

#[test]
fn every_request_has_a_deadline_even_on_a_server_that_never_answers() {
    let port = wedged_server();
    let started = Instant::now();
    let err = GearmanClient::new(vec![addr(port)]).request_timeout(Duration::from_secs(1)).echo(b"hello?").unwrap_err();
    assert_eq!(err.to_string(), format!("no job server could take the job: 127.0.0.1:{port}: no answer within 1.0 s"));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // A synchronous job's own timeout bounds its submission too.
    let started = Instant::now();
    let mut client = GearmanClient::new(vec![addr(port)]);
    let err = client.submit_sync(&job("x", b""), Some(Duration::from_secs(1)), &mut |_| {}).unwrap_err();
    assert!(err.to_string().ends_with("no answer within 1.0 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}
