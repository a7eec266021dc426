//! The embedded server behaves as gearmand 1.1.20 where issue 19 found it did not: each test
//! runs the same real peers (PHP, Perl, python3-gearman, gearadmin, raw protocol) against a
//! gearmand and a `li3g-host server` started here, and compares what they saw.

use super::Peer;
use li3g_host::gearman::packet::{Packet, Priority};
use li3g_tests::{on_a_free_port, run, wait_for_workers, wait_until, ChildGuard, Gearmand};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Held by the tests that load the machine (64 MiB jobs, 1,000,000 pipelined submissions) and
/// by the differential suite, whose reads time out under that load: they take turns.
pub(crate) fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// gearmand and the embedded server, in that order.
fn both() -> [(&'static str, Gearmand); 2] {
    [
        ("gearmand", on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &[]))),
        ("li3g", Gearmand::embedded(None)),
    ]
}

/// A `gearman -w` worker for `function` running `command` per job.
fn cli_worker(server: &Gearmand, function: &str, command: &[&str]) -> ChildGuard {
    let mut worker = Command::new("gearman");
    worker
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-w", "-f", function, "--"])
        .args(command)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = ChildGuard::spawn(&mut worker);
    wait_for_workers(&[server], function, 1);
    guard
}

fn php(script: &str) -> li3g_tests::Run {
    run(Command::new("php").args(["-r", script]))
}

/// **Issue 19, item 1.** PHP's `runTasks` with two tasks on one unique key: gearmand completes
/// both (one `WORK_COMPLETE` per submission), so must li3g.
#[test]
fn php_run_tasks_with_two_tasks_on_one_unique_key_completes_both() {
    for (name, server) in both() {
        let _worker = cli_worker(&server, "rev", &["rev"]);
        let out = php(&format!(
            r#"$c = new GearmanClient(); $c->addServer("127.0.0.1", {port}); $c->setTimeout(10000);
            $done = [];
            $c->setCompleteCallback(function ($t) use (&$done) {{ $done[] = $t->data(); }});
            $c->addTask("rev", "same", null, "U1"); $c->addTask("rev", "same", null, "U1");
            $ok = $c->runTasks();
            echo ($ok ? "ok" : "failed") . " " . count($done) . " " . implode(",", $done) . "\n";"#,
            port = server.port
        ));
        assert_eq!(out.stdout.trim(), "ok 2 emas,emas", "{name}: {}", out.stderr);
    }
}

/// **Issue 19, item 2.** Perl's Gearman::Worker registers `f => 0 => sub` as
/// `CAN_DO_TIMEOUT f 0`: no timeout, as gearmand; its jobs complete.
#[test]
fn perl_register_function_with_timeout_0_completes_its_jobs() {
    for (name, server) in both() {
        let script = format!(
            r#"use Gearman::Worker; my $w = Gearman::Worker->new; $w->job_servers("127.0.0.1:{port}");
            $w->register_function(up => 0 => sub {{ uc $_[0]->arg }}); $w->work while 1;"#,
            port = server.port
        );
        let _worker = ChildGuard::spawn(Command::new("perl").args(["-e", &script]).stdout(Stdio::null()));
        wait_for_workers(&[&server], "up", 1);
        for word in ["a", "b", "c"] {
            let out = run(Command::new("gearman").args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-f",
                "up",
                word,
            ]));
            assert_eq!(out.stdout.trim(), word.to_uppercase(), "{name}: {}", out.stderr);
        }
    }
}

/// **Issue 19, item 3.** python3-gearman's `send_job_status(job, 0.5, 1)` is relayed as it was
/// sent (`0.5`), the worker keeps its connection, and the PHP client sees the status and the
/// result, as with gearmand.
#[test]
fn fractional_progress_reaches_the_php_client() {
    let mut seen = Vec::new();
    for (name, server) in both() {
        let script = format!(
            r#"
import python3_gearman as g
w = g.GearmanWorker(["127.0.0.1:{port}"])
def task(worker, job):
    worker.send_job_status(job, 0.5, 1)
    return "done"
w.register_task("prog", task)
w.work()
"#,
            port = server.port
        );
        let _worker = ChildGuard::spawn(Command::new("python3").args(["-c", &script]).stdout(Stdio::null()));
        wait_for_workers(&[&server], "prog", 1);
        let out = php(&format!(
            r#"$c = new GearmanClient(); $c->addServer("127.0.0.1", {port}); $c->setTimeout(10000);
            $c->setStatusCallback(function ($t) {{ echo "status ", $t->taskNumerator(), "/", $t->taskDenominator(), "\n"; }});
            $c->setCompleteCallback(function ($t) {{ echo "complete ", $t->data(), "\n"; }});
            $c->addTask("prog", "x"); echo $c->runTasks() ? "ok\n" : "failed\n";"#,
            port = server.port
        ));
        assert!(
            out.stdout.contains("complete done") && out.stdout.ends_with("ok\n"),
            "{name}: {}{}",
            out.stdout,
            out.stderr
        );
        seen.push(out.stdout);
    }
    assert_eq!(seen[0], seen[1], "the PHP client sees the same from gearmand and li3g");
}

/// The bytes a raw client receives for a `WORK_STATUS` a raw worker sent with `body`.
fn relayed_status(server: &Gearmand, body: &[u8]) -> Vec<u8> {
    let mut worker = Peer::worker(server, "st");
    let mut client = TcpStreamPeer::connect(server.port);
    client.write(&Packet::SubmitJob {
        priority: Priority::Normal,
        background: false,
        function: b"st".to_vec(),
        unique: vec![],
        workload: vec![],
    });
    let created = client.read_frame();
    let handle = created[12..].to_vec();
    let (grabbed, _) = worker.grab().expect("the job");
    assert_eq!(grabbed, handle);
    let mut wire = b"\0REQ\0\0\0\x0c".to_vec();
    let mut full = handle.clone();
    full.push(0);
    full.extend_from_slice(body);
    wire.extend_from_slice(&(full.len() as u32).to_be_bytes());
    wire.extend_from_slice(&full);
    worker.stream.write_all(&wire).unwrap();
    let frame = client.read_frame();
    worker.send(&Packet::WorkComplete { handle: handle.clone(), data: vec![] });
    frame[12 + handle.len()..].to_vec()
}

/// A raw client reading whole frames, to see exactly the bytes relayed.
struct TcpStreamPeer(std::net::TcpStream);

impl TcpStreamPeer {
    fn connect(port: u16) -> TcpStreamPeer {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        TcpStreamPeer(stream)
    }
    fn write(&mut self, packet: &Packet) {
        let mut wire = Vec::new();
        li3g_host::gearman::packet::encode(li3g_host::gearman::packet::Magic::Req, packet, &mut wire).unwrap();
        self.0.write_all(&wire).unwrap();
    }
    fn read_frame(&mut self) -> Vec<u8> {
        let mut header = [0u8; 12];
        self.0.read_exact(&mut header).unwrap();
        let size = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let mut frame = header.to_vec();
        frame.resize(12 + size, 0);
        self.0.read_exact(&mut frame[12..]).unwrap();
        frame
    }
}

/// **Issue 19, item 3, on the wire.** `WORK_STATUS h 0.5 1` and `h 50% 100` reach the client
/// byte for byte, as gearmand relays them.
#[test]
fn work_status_is_relayed_byte_for_byte() {
    for body in [&b"0.5\x001"[..], b"50%\x00100", b"3\x004"] {
        let [(_, gearmand), (_, li3g)] = both();
        let expected = relayed_status(&gearmand, body);
        assert_eq!(relayed_status(&li3g, body), expected, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(&expected[1..], body, "gearmand relays the fields as sent");
    }
}

/// **Issue 19, item 8.** `-` coalesces only with `-` and the same non-empty workload: never
/// with a literal key such as `-1`, never two empty workloads (as gearmand).
#[test]
fn dash_unique_never_meets_a_literal_key() {
    for (name, server) in both() {
        let mut client = Peer::connect(&server);
        let literal = client.submit("d", "-1", "1", Priority::Normal, true);
        let dash = client.submit("d", "-", "1", Priority::Normal, true);
        assert_ne!(literal, dash, "{name}: `-` with workload 1 joined unique -1");
        let again = client.submit("d", "-", "1", Priority::Normal, true);
        assert_eq!(dash, again, "{name}: `-` coalesces on the same workload");
        let empty1 = client.submit("d", "-", "", Priority::Normal, true);
        let empty2 = client.submit("d", "-", "", Priority::Normal, true);
        assert_ne!(empty1, empty2, "{name}: two `-` jobs with empty workloads coalesced");
    }
}

/// **Issue 19, item 9.** A text `shutdown` over TCP is an unknown command, as in gearmand:
/// the server and its jobs are still there.
#[test]
fn text_shutdown_does_not_stop_the_server() {
    for (name, server) in both() {
        let mut client = Peer::connect(&server);
        client.submit("keep", "k", "w", Priority::Normal, true);
        for line in ["shutdown\n", "shutdown graceful\n"] {
            let answer = admin(&server, line);
            assert!(answer.starts_with("ERR UNKNOWN_COMMAND"), "{name}: {line:?} answered {answer:?}");
        }
        let status = server.status();
        assert!(status.iter().any(|s| s.function == "keep" && s.total == 1), "{name}: {status:?}");
    }
}

/// One admin command line and its whole answer (read until the server has said it all).
fn admin(server: &Gearmand, line: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                if out.ends_with(b"\n.\n") || out == b".\n" || (out.ends_with(b"\n") && !out.contains(&b'\t')) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn gearadmin(server: &Gearmand, args: &[&str]) -> String {
    let out = run(Command::new("gearadmin").args(["-h", "127.0.0.1", "-p", &server.port.to_string()]).args(args));
    format!("{}{}", out.stdout, out.stderr)
}

/// **The admin protocol, whole.** gearadmin's every option, and the commands' exact answers
/// (case-insensitive verbs, `\r\n` after `OK` and `ERR`), the same from both servers once job
/// handles are normalised.
#[test]
fn gearadmin_options_and_admin_answers_match_gearmand() {
    let mut answers = Vec::new();
    for (name, server) in both() {
        let mut client = Peer::connect(&server);
        let h1 = client.submit("adm", "u1", "w", Priority::High, true);
        let h2 = client.submit("adm", "u2", "w", Priority::Low, true);
        let norm = |text: String| {
            text.replace(&*String::from_utf8_lossy(&h1), "H1").replace(&*String::from_utf8_lossy(&h2), "H2")
        };
        let mut seen = Vec::new();
        for args in [
            &["--status"][..],
            &["--priority-status"],
            &["--show-jobs"],
            &["--show-unique-jobs"],
            &["--server-verbose"],
        ] {
            seen.push(format!("{args:?} -> {}", norm(gearadmin(&server, args))));
        }
        for line in
            ["STATUS\n", "Show Jobs\n", "maxqueue adm 5\n", "maxqueue\n", "cancel job\n", "bogus\n", "show foo\n"]
        {
            seen.push(format!("{line:?} -> {:?}", norm(admin(&server, line))));
        }
        // Last, and only their answers compared: gearmand keeps a cancelled job (listed as
        // ignored, counted in `status`) and the jobs of a dropped function; li3g fails them to
        // their clients at once.
        let h2 = String::from_utf8_lossy(&h2).into_owned();
        for args in [
            &["--cancel-job", h2.as_str()][..],
            &["--cancel-job", "H:nowhere:1"],
            &["--drop-function", "adm"],
            &["--drop-function", "nothere"],
        ] {
            seen.push(format!("{args:?} -> {}", norm(gearadmin(&server, args))));
        }
        // A function made by `create function` is listed (gearmand 1.1.20 lists it under an
        // empty name, a bug this server does not copy: compared apart).
        let created = gearadmin(&server, &["--create-function", "made"]);
        assert!(created.contains("OK"), "{name}: {created}");
        answers.push((name, seen));
    }
    let (gearmand, li3g) = (&answers[0].1, &answers[1].1);
    for (g, l) in gearmand.iter().zip(li3g) {
        assert_eq!(l, g, "li3g differs from gearmand");
    }
}

/// **Issue 19, item 7.** After descriptor exhaustion the server serves the connections that
/// waited, once descriptors are free, without another connection arriving.
#[test]
fn connections_waiting_at_descriptor_exhaustion_are_served_once_descriptors_are_free() {
    let server = Gearmand::embedded(None);
    // Few descriptors for the server: the listener, epoll, the log, a few peers.
    let out = run(Command::new("prlimit").arg(format!("--pid={}", server.pid())).arg("--nofile=24:24"));
    assert_eq!(out.code, Some(0), "prlimit: {}", out.stderr);
    let mut held = Vec::new();
    let mut waiting = None;
    for _ in 0..64 {
        let mut peer = Peer::connect(&server);
        peer.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        peer.send(&Packet::EchoReq { data: b"e".to_vec() });
        let mut byte = [0u8; 1];
        match peer.stream.read(&mut byte) {
            Ok(1) => held.push(peer),
            _ => {
                waiting = Some(peer);
                break;
            }
        }
    }
    let mut waiting = waiting.expect("the server ran out of descriptors within 64 connections");
    drop(held);
    waiting.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(waiting.expect(), Packet::EchoRes { data: b"e".to_vec() }, "the waiting connection is served");
}

/// **Issue 19, items 5 and 6.** A 64 MiB workload and a 64 MiB result go through, as with
/// gearmand; after 20 small jobs on the same connections the server's RSS is back within 2x of
/// gearmand's (li3g kept 132 MiB where gearmand was back to 10 MiB).
#[test]
fn a_64_mib_job_goes_through_and_its_memory_is_given_back() {
    let _heavy = heavy();
    let mut rss = Vec::new();
    for (name, server) in both() {
        let big = vec![b'w'; 64 << 20];
        let mut client = Peer::connect(&server);
        let mut worker = Peer::worker(&server, "big");
        let mut job = |workload: Vec<u8>| {
            let size = workload.len();
            client.send(&Packet::SubmitJob {
                priority: Priority::Normal,
                background: false,
                function: b"big".to_vec(),
                unique: vec![],
                workload,
            });
            let Packet::JobCreated { handle } = expect_big(&mut client) else { panic!("{name}: expected JOB_CREATED") };
            worker.send(&Packet::GrabJob);
            let data = match expect_big(&mut worker) {
                Packet::JobAssign { workload, .. } => workload,
                other => panic!("{name}: expected JOB_ASSIGN, got {:?}", other.kind()),
            };
            assert_eq!(data.len(), size, "{name}: the workload arrives whole");
            worker.send(&Packet::WorkComplete { handle, data });
            match expect_big(&mut client) {
                Packet::WorkComplete { data, .. } => assert_eq!(data.len(), size, "{name}: the result arrives whole"),
                other => panic!("{name}: expected WORK_COMPLETE, got {:?}", other.kind()),
            }
        };
        job(big);
        for _ in 0..20 {
            job(b"small".to_vec());
        }
        rss.push((name, rss_kib(server.pid()), server));
    }
    let gearmand = rss[0].1;
    let li3g = &rss[1];
    wait_until("li3g's RSS within 2x of gearmand's after the big job", Duration::from_secs(10), || {
        rss_kib(li3g.2.pid()) <= 2 * gearmand.max(8 << 10)
    });
}

fn expect_big(peer: &mut Peer) -> Packet {
    loop {
        if let li3g_host::gearman::packet::Decoded::Packet { packet, len, .. } =
            li3g_host::gearman::packet::decode(&peer.buf, 1 << 30).expect("a response")
        {
            peer.buf.drain(..len);
            return packet;
        }
        let mut chunk = vec![0u8; 1 << 20];
        let n = peer.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        peer.buf.extend_from_slice(&chunk[..n]);
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// **Issue 19, item 4.** One client pipelining background submissions and reading only at
/// the end gets all its answers (the server stopped reading past 4 MiB of unread answers and
/// deadlocked at ~170k-490k).
#[test]
fn a_client_that_writes_everything_before_reading_gets_every_answer() {
    let _heavy = heavy();
    const JOBS: usize = 1_000_000;
    let server = Gearmand::embedded(None);
    let mut wire = Vec::new();
    for _ in 0..JOBS {
        let submit = Packet::SubmitJob {
            priority: Priority::Normal,
            background: true,
            function: b"p".to_vec(),
            unique: vec![],
            workload: vec![],
        };
        li3g_host::gearman::packet::encode(li3g_host::gearman::packet::Magic::Req, &submit, &mut wire).unwrap();
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    stream.write_all(&wire).expect("the server takes every submission before the client reads");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut peer = Peer { stream, buf: Vec::new() };
    for i in 0..JOBS {
        match peer.recv() {
            Some(Packet::JobCreated { .. }) => {}
            other => panic!("answer {i}: expected JOB_CREATED, got {other:?}"),
        }
    }
}

/// **Issue 19, item 6, where li3g refuses.** A worker's `WORK_COMPLETE` over the server's
/// 256 MiB limit: the worker is answered `ERROR` (no reset) and the job is failed to its
/// client, which does not wait forever.
#[test]
fn a_result_over_the_limit_fails_the_job_for_its_client() {
    let server = Gearmand::embedded(None);
    let mut client = Peer::connect(&server);
    let handle = client.submit("huge", "", "w", Priority::Normal, false);
    let mut worker = Peer::worker(&server, "huge");
    let (grabbed, _) = worker.grab().expect("the job");
    assert_eq!(grabbed, handle);
    // Only the start of a 300 MiB WORK_COMPLETE: the header and the handle.
    let mut wire = b"\0REQ\0\0\0\x0d".to_vec();
    wire.extend_from_slice(&(300u32 << 20).to_be_bytes());
    wire.extend_from_slice(&handle);
    wire.push(0);
    worker.stream.write_all(&wire).unwrap();
    assert!(matches!(worker.expect(), Packet::Error { code, .. } if code == b"ARGUMENT_TOO_LARGE"));
    assert_eq!(client.expect(), Packet::WorkFail { handle });
}
