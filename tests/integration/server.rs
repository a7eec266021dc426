//! The embedded job server (`li3g-host server`) with real peers: the `gearman` CLI, gearadmin,
//! python3-gearman and li3g itself as clients and workers, and raw protocol peers for what
//! the others cannot show (coalescing, priorities, requeue limits, garbage, the epoch timer,
//! the durable store).

use li3g_host::gearman::packet::{self, Decoded, Magic, Packet, Priority};
use li3g_tests::wait_until_ok;
use li3g_tests::{host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, PluginDir};
use li3g_tests::{signal, Signal};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) mod conformance;
mod store;

const LONG: Duration = Duration::from_secs(30);

/// A raw protocol peer: writes requests, reads responses with li3g's codec.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn connect(server: &Gearmand) -> Peer {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_read_timeout(Some(LONG)).unwrap();
        Peer { stream, buf: Vec::new() }
    }

    fn send(&mut self, packet: &Packet) {
        let mut wire = Vec::new();
        packet::encode(Magic::Req, packet, &mut wire).unwrap();
        self.stream.write_all(&wire).unwrap();
    }

    /// The next packet, or `None` at end of stream.
    fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Decoded::Packet { packet, len, .. } = packet::decode(&self.buf, 1 << 20).expect("a response") {
                self.buf.drain(..len);
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn expect(&mut self) -> Packet {
        self.recv().expect("a packet before the end of stream")
    }

    fn submit(
        &mut self,
        function: &str,
        unique: &str,
        workload: &str,
        priority: Priority,
        background: bool,
    ) -> Vec<u8> {
        self.send(&Packet::SubmitJob {
            priority,
            background,
            function: function.into(),
            unique: unique.into(),
            workload: workload.into(),
        });
        match self.expect() {
            Packet::JobCreated { handle } => handle,
            other => panic!("expected JOB_CREATED, got {other:?}"),
        }
    }

    fn worker(server: &Gearmand, function: &str) -> Peer {
        let mut peer = Peer::connect(server);
        peer.send(&Packet::CanDo { function: function.into() });
        peer
    }

    /// Grabs a job: (handle, workload), or `None` for NO_JOB.
    fn grab(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.send(&Packet::GrabJob);
        loop {
            match self.expect() {
                Packet::JobAssign { handle, workload, .. } => return Some((handle, workload)),
                Packet::NoJob => return None,
                Packet::Noop => continue,
                other => panic!("expected JOB_ASSIGN or NO_JOB, got {other:?}"),
            }
        }
    }
}

fn gearman(server: &Gearmand) -> Command {
    let mut command = Command::new("gearman");
    command.args(["-h", "127.0.0.1", "-p", &server.port.to_string()]);
    command
}

#[test]
fn the_gearman_cli_as_client_and_worker_and_gearadmin_read_it() {
    let server = Gearmand::embedded(None);
    let mut worker = gearman(&server);
    worker.args(["-w", "-f", "rev", "--", "rev"]).stdout(Stdio::null()).stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut worker);
    wait_for_workers(&[&server], "rev", 1);
    let out = run(gearman(&server).args(["-f", "rev", "hello"]));
    assert_eq!(out.stdout.trim_end(), "olleh", "{}", out.stderr);
    // Background, high priority.
    let out = run(gearman(&server).args(["-b", "-I", "-f", "rev", "x"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let workers = server.workers();
    assert!(workers.iter().any(|w| w.functions == ["rev"]), "{workers:?}");
    let pid = run(Command::new("gearadmin").args(["-p", &server.port.to_string(), "--getpid"]));
    assert_eq!(pid.stdout.trim(), server.pid().to_string());
    let version = run(Command::new("gearadmin").args(["-p", &server.port.to_string(), "--server-version"]));
    assert!(version.stdout.contains("li3g"), "{}", version.stdout);
    wait_until("the background job ran", LONG, || server.status().iter().any(|s| s.function == "rev" && s.total == 0));
}

const PYTHON_WORKER: &str = r#"
import sys, python3_gearman as g
w = g.GearmanWorker([sys.argv[1]])
w.set_client_id("py-worker")
w.register_task("upper", lambda worker, job: job.data.upper())
w.work()
"#;

const PYTHON_CLIENT: &str = r#"
import sys, python3_gearman as g
c = g.GearmanClient([sys.argv[1]])
r = c.submit_job("upper", "python", priority=g.PRIORITY_HIGH)
print(r.result)
r = c.submit_job(sys.argv[2], sys.argv[3])
print(r.result)
bg = c.submit_job("upper", "later", background=True, wait_until_complete=False)
print(bg.job.handle.startswith("H:"))
"#;

#[test]
fn python3_gearman_as_client_and_worker() {
    let server = Gearmand::embedded(None);
    let _py_worker = ChildGuard::spawn(
        Command::new("python3").args(["-c", PYTHON_WORKER, &server.addr()]).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    let dir = PluginDir::with(&["hello"]);
    let _li3g_worker = ChildGuard::spawn(
        host()
            .args(["work", "--servers", &server.addr()])
            .arg("--plugins")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[&server], "upper", 1);
    wait_for_workers(&[&server], "Hello::say", 1);
    assert!(server.workers().iter().any(|w| w.client_id == "py-worker"));
    // python3-gearman's client, against the Python worker and against li3g's worker.
    let out = run(Command::new("python3").args(["-c", PYTHON_CLIENT, &server.addr(), "Hello::say", "Python"]));
    assert_eq!(out.stdout, "PYTHON\nHello Python\nTrue\n", "{}", out.stderr);
}

#[test]
fn li3g_worker_and_client_through_servers_flag_and_environment() {
    let server = Gearmand::embedded(None);
    let dir = PluginDir::with(&["hello"]);
    let _worker = ChildGuard::spawn(
        host()
            .args(["work"])
            .env("LI3G_SERVERS", server.addr())
            .arg("--plugins")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[&server], "Hello::say", 1);
    let out = run(host().args(["run", "Hello::say", "Mariano", "--sync", "--servers", &server.addr()]));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", out.stderr);
    let out = run(host().args(["run", "Hello::say", "Env", "--sync"]).env("LI3G_SERVERS", server.addr()));
    assert_eq!(out.stdout, "Hello Env\n", "{}", out.stderr);
}

#[test]
fn coalesced_clients_all_get_status_data_and_result() {
    let server = Gearmand::embedded(None);
    let (mut a, mut b) = (Peer::connect(&server), Peer::connect(&server));
    let h1 = a.submit("f", "same", "one", Priority::Normal, false);
    let h2 = b.submit("f", "same", "two", Priority::Normal, false);
    assert_eq!(h1, h2, "same function and unique: one job");
    let other = a.submit("f", "", "x", Priority::Normal, true);
    assert_ne!(other, h1, "an empty unique never coalesces");
    assert_eq!(server.status().iter().find(|s| s.function == "f").map(|s| s.total), Some(2));

    let mut worker = Peer::worker(&server, "f");
    let (handle, workload) = worker.grab().expect("a job");
    assert_eq!((handle.as_slice(), workload.as_slice()), (h1.as_slice(), &b"one"[..]));
    worker.send(&Packet::WorkStatus { handle: handle.clone(), numerator: 1, denominator: 2 });
    worker.send(&Packet::WorkData { handle: handle.clone(), data: b"part".to_vec() });
    worker.send(&Packet::WorkComplete { handle: handle.clone(), data: b"done".to_vec() });
    for client in [&mut a, &mut b] {
        assert_eq!(client.expect(), Packet::WorkStatus { handle: handle.clone(), numerator: 1, denominator: 2 });
        assert_eq!(client.expect(), Packet::WorkData { handle: handle.clone(), data: b"part".to_vec() });
        assert_eq!(client.expect(), Packet::WorkComplete { handle: handle.clone(), data: b"done".to_vec() });
    }
    a.send(&Packet::GetStatus { handle: handle.clone() });
    assert_eq!(
        a.expect(),
        Packet::StatusRes { handle, known: false, running: false, numerator: 0, denominator: 0 },
        "a finished job is unknown, as in gearmand"
    );
}

#[test]
fn higher_priorities_are_handed_out_first() {
    let server = Gearmand::embedded(None);
    let mut client = Peer::connect(&server);
    for (workload, priority) in [("low", Priority::Low), ("normal", Priority::Normal), ("high", Priority::High)] {
        client.submit("p", "", workload, priority, true);
    }
    let mut worker = Peer::worker(&server, "p");
    let order: Vec<Vec<u8>> = (0..3).map(|_| worker.grab().expect("a job").1).collect();
    assert_eq!(order, [b"high".to_vec(), b"normal".to_vec(), b"low".to_vec()]);
    assert_eq!(worker.grab(), None);
}

#[test]
fn exceptions_reach_only_clients_that_asked_and_a_sleeping_worker_is_woken() {
    let server = Gearmand::embedded(None);
    let mut worker = Peer::worker(&server, "e");
    worker.send(&Packet::PreSleep);
    let (mut plain, mut wants) = (Peer::connect(&server), Peer::connect(&server));
    wants.send(&Packet::OptionReq { option: b"exceptions".to_vec() });
    assert_eq!(wants.expect(), Packet::OptionRes { option: b"exceptions".to_vec() });
    let handle = plain.submit("e", "u", "w", Priority::Normal, false);
    wants.submit("e", "u", "w", Priority::Normal, false);
    assert_eq!(worker.expect(), Packet::Noop);
    let (grabbed, _) = worker.grab().expect("a job");
    worker.send(&Packet::WorkException { handle: grabbed, data: b"boom".to_vec() });
    assert_eq!(plain.expect(), Packet::WorkFail { handle: handle.clone() });
    assert_eq!(wants.expect(), Packet::WorkException { handle, data: b"boom".to_vec() });
    plain.send(&Packet::EchoReq { data: b"ping\0pong".to_vec() });
    assert_eq!(plain.expect(), Packet::EchoRes { data: b"ping\0pong".to_vec() });
}

/// `--job-retries 2` means two runs, then `WORK_FAIL`, as gearmand's flag of the same name.
#[test]
fn a_job_whose_worker_keeps_vanishing_is_requeued_then_failed() {
    let servers = [
        li3g_tests::on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &["--job-retries=2"])),
        li3g_tests::on_a_free_port("li3g-host server", |port| {
            Gearmand::try_embedded_on(port, None, &["--job-retries", "2"])
        }),
    ];
    for server in servers {
        let mut client = Peer::connect(&server);
        let handle = client.submit("poison", "", "w", Priority::Normal, false);
        // Grabbed and dropped twice: requeued once, then failed to the client.
        for attempt in 0..2 {
            let mut worker = Peer::worker(&server, "poison");
            let (grabbed, _) = worker.grab().unwrap_or_else(|| panic!("attempt {attempt}: the job was requeued"));
            assert_eq!(grabbed, handle);
            drop(worker);
        }
        assert_eq!(client.expect(), Packet::WorkFail { handle });
        let mut worker = Peer::worker(&server, "poison");
        assert_eq!(worker.grab(), None, "the failed job is gone");
    }
}

#[test]
fn garbage_gets_an_error_and_a_disconnect_and_the_server_stays_up() {
    let server = Gearmand::embedded(None);
    // A body over the limit is skipped and answered, the connection kept (the answer arrives,
    // no reset), as gearmand takes any size.
    let mut peer = Peer::connect(&server);
    peer.stream.write_all(b"\0REQ\0\0\0\x07\xff\xff\xff\xff").unwrap();
    assert!(matches!(peer.expect(), Packet::Error { code, .. } if code == b"ARGUMENT_TOO_LARGE"));
    let cases: [(&str, Vec<u8>); 3] = [
        ("unknown type", b"\0REQ\0\0\x03\xe7\0\0\0\0".to_vec()),
        ("a response sent to the server", b"\0RES\0\0\0\x06\0\0\0\0".to_vec()),
        ("an endless admin line", vec![b'x'; 10_000]),
    ];
    for (what, bytes) in cases {
        let mut peer = Peer::connect(&server);
        peer.stream.write_all(&bytes).unwrap();
        match peer.recv() {
            Some(Packet::Error { .. }) => {}
            other => panic!("{what}: expected ERROR, got {other:?}"),
        }
        assert_eq!(peer.recv(), None, "{what}: disconnected");
    }
    // SUBMIT_JOB_SCHED is refused as gearmand refuses it, and the connection stays usable.
    let mut peer = Peer::connect(&server);
    peer.stream.write_all(b"\0REQ\0\0\0\x23\0\0\0\x03a\0b").unwrap();
    assert!(matches!(peer.expect(), Packet::Error { code, .. } if code == b"INVALID_COMMAND"));
    peer.send(&Packet::EchoReq { data: b"still here".to_vec() });
    assert_eq!(peer.expect(), Packet::EchoRes { data: b"still here".to_vec() });
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 64 << 10, "the server's memory stays small: {rss_kib} KiB");
}

#[test]
fn a_scheduled_job_wakes_a_sleeping_worker_within_50ms_of_its_time() {
    let server = Gearmand::embedded(None);
    let mut worker = Peer::worker(&server, "later");
    worker.send(&Packet::PreSleep);
    let mut client = Peer::connect(&server);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let epoch = now.as_secs() + 2;
    client.send(&Packet::SubmitJobEpoch {
        function: b"later".to_vec(),
        unique: vec![],
        epoch,
        workload: b"w".to_vec(),
    });
    assert!(matches!(client.expect(), Packet::JobCreated { .. }));
    assert_eq!(worker.expect(), Packet::Noop);
    let woken = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let due = Duration::from_secs(epoch);
    assert!(woken >= due, "woken {:?} before its time", due - woken);
    assert!(woken - due < Duration::from_millis(50), "woken {:?} after its time", woken - due);
    assert_eq!(worker.grab().map(|(_, w)| w), Some(b"w".to_vec()));
}

#[test]
fn stored_background_jobs_survive_sigkill_and_none_is_lost() {
    const JOBS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.sqlite");
    let out = dir.path().join("ran.txt");
    let server = Gearmand::embedded(Some(&store));
    let port = server.port;
    // Pipelined submissions: every job is durable before its JOB_CREATED.
    let mut client = Peer::connect(&server);
    let mut wire = Vec::new();
    for i in 0..JOBS {
        let workload = serde_json::json!([out.to_str().unwrap(), i.to_string()]).to_string();
        let submit = Packet::SubmitJob {
            priority: Priority::Normal,
            background: true,
            function: b"Misbehave::append".to_vec(),
            unique: vec![],
            workload: workload.into_bytes(),
        };
        packet::encode(Magic::Req, &submit, &mut wire).unwrap();
    }
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&wire).unwrap())
    };
    for _ in 0..JOBS {
        assert!(matches!(client.expect(), Packet::JobCreated { .. }));
    }
    writer.join().unwrap();

    let plugins = PluginDir::with(&["misbehave"]);
    let workers: Vec<ChildGuard> = (0..2)
        .map(|_| {
            ChildGuard::spawn(
                host()
                    .args(["work", "--servers", &format!("127.0.0.1:{port}")])
                    .arg("--plugins")
                    .arg(plugins.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        })
        .collect();
    let ran =
        || -> Vec<String> { std::fs::read_to_string(&out).unwrap_or_default().lines().map(String::from).collect() };
    wait_until("workers drained a part", LONG, || ran().len() >= JOBS / 5);
    server.kill();
    let before = ran().len();
    assert!(before < JOBS, "the server was killed while jobs remained ({before} ran)");

    let _server =
        li3g_tests::on_a_free_port("the restarted server", |_| Gearmand::try_embedded_on(port, Some(&store), &[]));
    let seen =
        wait_until_ok("every job ran after the restart", Duration::from_secs(120), Duration::from_millis(50), || {
            let seen: BTreeSet<String> = ran().into_iter().collect();
            if seen.len() == JOBS {
                Ok(seen)
            } else {
                Err(format!("only {} of {JOBS} jobs ran", seen.len()))
            }
        });
    let expected: BTreeSet<String> = (0..JOBS).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
    drop(workers);
}

/// `start` with no `servers` configured runs the embedded server on 127.0.0.1:4730 and says
/// so, and `run` with no configuration reaches it; with a Gearman server already there, it
/// uses that one and says so. Both cases in one test: they share the fixed port.
#[test]
fn start_without_servers_runs_the_embedded_server_or_uses_the_one_on_4730() {
    if std::net::TcpListener::bind("127.0.0.1:4730").is_err() {
        eprintln!("skipped: something else holds 127.0.0.1:4730");
        return;
    }
    let plugins = PluginDir::with(&["hello"]);
    let home = tempfile::tempdir().unwrap();
    let start = || {
        let mut command = host();
        command
            .args(["start", "--workers", "1", "--verbose"])
            .arg("--plugins")
            .arg(plugins.path())
            .current_dir(home.path())
            .env("XDG_DATA_HOME", home.path())
            .env("XDG_RUNTIME_DIR", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut daemon = ChildGuard::spawn(&mut command);
        let lines = li3g_tests::Lines::collect(daemon.child().stderr.take().unwrap());
        (daemon, lines)
    };
    let run_hello = || {
        let out =
            run(host().args(["run", "Hello::say", "Mariano", "--sync", "--timeout", "20"]).current_dir(home.path()));
        assert_eq!(out.stdout, "Hello Mariano\n", "{}", out.stderr);
    };
    let stop = |mut daemon: ChildGuard| {
        signal(daemon.id(), Signal::SIGTERM);
        assert!(daemon.wait_timeout(LONG).is_some_and(|s| s.success()), "the daemon stops");
    };

    let (daemon, lines) = start();
    let line = lines.wait_for("Job server listening on 127.0.0.1:4730", LONG);
    assert!(line.contains("store: "), "{line}");
    if unsafe { libc::geteuid() } != 0 {
        assert!(line.contains(&home.path().join("li3g/queue.sqlite").display().to_string()), "{line}");
    }
    lines.wait_for("Connected to 127.0.0.1:4730", LONG);
    run_hello();
    stop(daemon);

    let gearmand = Gearmand::try_gearmand_on(4730, &[]).expect("gearmand on 4730");
    let (daemon, lines) = start();
    lines.wait_for("Using the Gearman server already listening on 127.0.0.1:4730", LONG);
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    run_hello();
    assert!(lines.count("Job server listening") == 0, "{:#?}", lines.all());
    stop(daemon);
}

/// `run --in` with no Redis configured: the embedded server keeps the job and its timer runs
/// it, not before its time.
#[test]
fn run_in_without_redis_is_kept_and_run_on_time_by_the_embedded_server() {
    let server = Gearmand::embedded(None);
    let plugins = PluginDir::with(&["misbehave"]);
    let _worker = ChildGuard::spawn(
        host()
            .args(["work", "--servers", &server.addr()])
            .arg("--plugins")
            .arg(plugins.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[&server], "Misbehave::append", 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran.txt");
    let submitted = SystemTime::now();
    let out = run(host().args([
        "run",
        "Misbehave::append",
        file.to_str().unwrap(),
        "later",
        "--in",
        "2s",
        "--servers",
        &server.addr(),
    ]));
    assert!(out.stdout.starts_with("scheduled job "), "{}{}", out.stdout, out.stderr);
    assert!(!file.exists(), "not run before its time");
    wait_until("the scheduled job ran", LONG, || std::fs::read_to_string(&file).is_ok_and(|t| t == "later\n"));
    assert!(submitted.elapsed().unwrap() >= Duration::from_secs(2), "ran after its delay");
}

#[test]
fn a_background_submission_joining_a_foreground_job_is_kept_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.sqlite");
    let server = Gearmand::embedded(Some(&store));
    let mut foreground = Peer::connect(&server);
    let handle = foreground.submit("joined", "u1", "w", Priority::Normal, false);
    let mut background = Peer::connect(&server);
    assert_eq!(background.submit("joined", "u1", "w", Priority::Normal, true), handle, "coalesced");
    // The foreground client leaves: the background client was told the job is queued, so it stays.
    drop(foreground);
    // And it is durable: it survives a SIGKILL of the server.
    server.kill();
    let restarted = Gearmand::embedded(Some(&store));
    let mut worker = Peer::worker(&restarted, "joined");
    let (_, workload) = worker.grab().expect("the job a background client joined survives");
    assert_eq!(workload, b"w");
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.sqlite");
    let server = Gearmand::embedded(Some(&store));
    let port = li3g_tests::free_port();
    let out = run(host().args(["server", "--listen", &format!("127.0.0.1:{port}"), "--store"]).arg(&store));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("database is locked"), "{}", out.stderr);
    // The first one still serves.
    let mut peer = Peer::connect(&server);
    peer.send(&Packet::EchoReq { data: b"still mine".to_vec() });
    assert_eq!(peer.expect(), Packet::EchoRes { data: b"still mine".to_vec() });
}

/// **A hangup does not stop the server (review finding).** gearmand survives SIGHUP with its
/// queue; `li3g-host server` left SIGHUP at its default and died of it, with every job it held
/// in memory. A queued job and an open client connection must both still be there after one.
#[test]
fn sighup_leaves_the_server_and_its_jobs_in_place() {
    let server = Gearmand::embedded(None);
    let mut client = Peer::connect(&server);
    client.submit("hup", "", "kept", Priority::Normal, true);
    let out = run(Command::new("kill").args(["-HUP", &server.pid().to_string()]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The client's connection is still served...
    client.send(&Packet::EchoReq { data: b"after HUP".to_vec() });
    assert_eq!(client.recv(), Some(Packet::EchoRes { data: b"after HUP".to_vec() }), "served after SIGHUP");
    // ...and the job queued before the signal is still handed out.
    let mut worker = Peer::worker(&server, "hup");
    assert_eq!(worker.grab().map(|(_, w)| w), Some(b"kept".to_vec()));
}

#[test]
fn a_worker_that_registers_and_leaves_at_once_is_forgotten() {
    // CAN_DO and the end of stream arrive together (written, then closed at once): the server
    // reads the packet in a short read and must still see the close. The embedded server took
    // a short read for "all read" and kept such a worker registered for ever (a worker that
    // answered its last job and exited did this: `work --max-age`).
    let servers = [
        Gearmand::start(),
        li3g_tests::on_a_free_port("li3g-host server", |port| Gearmand::try_embedded_on(port, None, &[])),
    ];
    for server in servers {
        let names: Vec<String> = (0..50).map(|n| format!("vanish{n}")).collect();
        for name in &names {
            let mut peer = Peer::connect(&server);
            peer.send(&Packet::CanDo { function: name.as_str().into() });
            drop(peer);
        }
        wait_until_ok("every vanished worker forgotten", LONG, Duration::from_millis(50), || {
            let left: Vec<String> =
                server.workers().into_iter().flat_map(|w| w.functions).filter(|f| names.contains(f)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still registered: {left:?}"))
            }
        });
    }
}
