//! The li3g worker (`li3g-host work`) against a real gearmand, with the `gearman` CLI and
//! li3g's own client as clients.

use li3g_host::gearman::client::{ClientError, GearmanClient, JobEvent, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::workload::COMPAT_FUNCTION;
use li3g_tests::Worker;
use li3g_tests::{host, run, wait_for_workers, Gearmand, PluginDir};
use li3g_tests::{signal, Signal};
use std::process::Command;
use std::time::Duration;

/// A worker of the plugins in `dir` in environment `staging`, on every one of `servers`, once
/// it registered `Hello::say` on each.
fn staging_worker(dir: &PluginDir, servers: &[&Gearmand]) -> li3g_tests::ChildGuard {
    let addrs: Vec<String> = servers.iter().map(|g| g.addr()).collect();
    Worker::builder(&addrs)
        .plugins(dir.path())
        .env("LI3G_ENVIRONMENT", "staging")
        .registered(servers, "Hello::say", 1)
        .spawn()
}

fn addr(port: u16) -> ServerAddr {
    ServerAddr { host: "127.0.0.1".into(), port, tls: false }
}

fn job(function: &str, workload: &[u8]) -> Submit {
    Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() }
}

fn sync(client: &mut GearmanClient, function: &str, workload: &[u8]) -> Result<Vec<u8>, ClientError> {
    client.submit_sync(&job(function, workload), Some(Duration::from_secs(20)), &mut |_| {}).map(|(_, r)| r)
}

/// Runs a job that must fail with an exception; returns its message.
fn exception(client: &mut GearmanClient, function: &str, workload: &[u8]) -> String {
    match sync(client, function, workload) {
        Err(ClientError::Exception(message)) => message,
        other => panic!("{function}: expected an exception, got {other:?}"),
    }
}

#[test]
fn the_gearman_cli_gets_hello_mariano() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    let out = run(Command::new("gearman").args([
        "-h",
        "127.0.0.1",
        "-p",
        &gearmand.port.to_string(),
        "-f",
        "Hello::say",
        "Mariano",
    ]));
    assert_eq!(out.stdout.trim_end(), "Hello Mariano", "{}", out.stderr);
    // A class alone means its run method; `[]` is an empty argument list.
    let out =
        run(Command::new("gearman").args(["-h", "127.0.0.1", "-p", &gearmand.port.to_string(), "-f", "Hello", "[]"]));
    assert_eq!(out.stdout.trim_end(), "I am Hello::run", "{}", out.stderr);
}

#[test]
fn li3g_host_run_sync_prints_the_result_and_background_queues() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    let out = run(host().args(["run", "Hello::say", "Mariano", "--sync", "--servers", &gearmand.addr()]));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", out.stderr);
    let out = run(host().args(["run", "Hello::say", "later", "--servers", &gearmand.addr()]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("queued job ") && out.stdout.contains(" as H:"), "{}", out.stdout);
}

#[test]
fn results_exceptions_progress_data_and_context() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
    assert_eq!(sync(&mut client, "Misbehave::add", b"[40, 2]").unwrap(), b"42");
    let message = exception(&mut client, "Misbehave::fail", b"disk full");
    assert_eq!(message, "disk full");
    let message = exception(&mut client, "Misbehave::panic", b"boom");
    assert!(message.starts_with("task Misbehave::panic panicked at "), "{message}");
    let message = exception(&mut client, "Misbehave::add", b"[1, \"two\"]");
    assert!(message.contains("argument 2 (b: i64)"), "{message}");
    let mut events = Vec::new();
    let (_, result) = client
        .submit_sync(&job("Misbehave::progress", b"[2]"), Some(Duration::from_secs(20)), &mut |e: JobEvent<'_>| {
            events.push(match e {
                JobEvent::Status(n, d) => format!("status {n}/{d}"),
                JobEvent::Data(d) => format!("data {}", String::from_utf8_lossy(d)),
                JobEvent::Warning(d) => format!("warning {}", String::from_utf8_lossy(d)),
                JobEvent::NoWorker { .. } => "no worker".to_string(),
            })
        })
        .unwrap();
    assert_eq!(result, b"2");
    assert_eq!(events, ["warning starting", "status 1/2", "data step 1", "status 2/2", "data step 2"]);
    let context = sync(&mut client, "Misbehave::context", br#"{"args":[],"id":"job-7"}"#).unwrap();
    let context: serde_json::Value = serde_json::from_slice(&context).unwrap();
    assert_eq!(context, serde_json::json!({"task": "Misbehave::context", "id": "job-7", "environment": "staging"}));
    // The worker went through all of that and still serves.
    assert_eq!(sync(&mut client, "Hello::say", b"still here").unwrap(), b"Hello still here");
}

#[test]
fn the_li3_gearman_envelope_works_and_a_malformed_one_is_an_exception() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
    let php = br#"{"id":"5a1f","args":["Mariano"],"env":"production","configName":"default","task":"\\Hello::say","background":false,"retry":0,"retries":3}"#;
    assert_eq!(sync(&mut client, COMPAT_FUNCTION, php).unwrap(), b"Hello Mariano");
    let message = exception(&mut client, COMPAT_FUNCTION, b"not json");
    assert!(message.starts_with("malformed li3_gearman workload"), "{message}");
    let message = exception(&mut client, COMPAT_FUNCTION, br#"{"task":"\\app\\Nope","args":[]}"#);
    assert!(message.starts_with("unknown task app\\Nope::run"), "{message}");
    assert_eq!(sync(&mut client, "Hello::say", b"after").unwrap(), b"Hello after");
}

#[test]
fn the_worker_re_registers_after_gearmand_restarts() {
    let gearmand = Gearmand::start();
    let port = gearmand.port;
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    gearmand.kill();
    let gearmand = Gearmand::start_on(port);
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    let mut client = GearmanClient::new(vec![addr(port)]);
    assert_eq!(sync(&mut client, "Hello::say", b"again").unwrap(), b"Hello again");
}

#[test]
fn two_servers_one_killed_the_other_still_serves() {
    let (a, b) = (Gearmand::start(), Gearmand::start());
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&a, &b]);
    let mut client_b = GearmanClient::new(vec![addr(b.port)]);
    assert_eq!(sync(&mut client_b, "Hello::say", b"b").unwrap(), b"Hello b");
    let mut client_a = GearmanClient::new(vec![addr(a.port)]);
    assert_eq!(sync(&mut client_a, "Hello::say", b"a").unwrap(), b"Hello a");
    let dead = a.port;
    a.kill();
    // A client of both servers fails over to the live one, and the worker serves it there.
    let mut client = GearmanClient::new(vec![addr(dead), addr(b.port)]);
    assert_eq!(sync(&mut client, "Hello::say", b"survivor").unwrap(), b"Hello survivor");
}

#[test]
fn ping_is_answered_and_set_client_id_shows_in_gearadmin() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let worker = staging_worker(&dir, &[&gearmand]);
    let mut client = GearmanClient::new(vec![addr(gearmand.port)]);
    let pong = sync(&mut client, "li3g::ping", b"").unwrap();
    assert!(
        String::from_utf8_lossy(&pong).ends_with(&format!(":{}", worker.id())),
        "{}",
        String::from_utf8_lossy(&pong)
    );
    let out = run(Command::new("gearadmin").args(["-h", "127.0.0.1", "-p", &gearmand.port.to_string(), "--workers"]));
    assert!(out.stdout.contains(&format!(":{} : ", worker.id())), "{}", out.stdout);
}

#[test]
fn sigterm_stops_the_worker() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let mut worker = staging_worker(&dir, &[&gearmand]);
    signal(worker.id(), Signal::SIGTERM);
    let status = worker.wait_timeout(Duration::from_secs(10)).expect("the worker exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_python_gearman_client_sending_the_li3_gearman_envelope_gets_the_result() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = staging_worker(&dir, &[&gearmand]);
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_client.py");
    let out = run(Command::new("python3").arg(&script).arg(gearmand.addr()).args(["Hello::say", "Mariano"]));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", out.stderr);
    // `Hello` alone runs Hello::run, as li3_gearman's `\Hello` did.
    let out = run(Command::new("python3").arg(&script).arg(gearmand.addr()).arg("Hello"));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "I am Hello::run\n"), "{}", out.stderr);
}

#[test]
fn a_worker_that_ends_runs_the_job_a_server_was_assigning_it_instead_of_dropping_it() {
    // Two servers with a job each; the worker ends after one job (--memlimit 1M: any worker is
    // past it then; --max-jobs 1 would ask one server only). It asked both for a job at once, so the second is assigning it one as it ends: leaving then made that
    // server requeue it, one of its --job-retries spent, and with --job-retries=1 the job was
    // dropped. The worker now waits for the answers it asked for and runs what it was handed.
    let a = Gearmand::start();
    let b = Gearmand::try_gearmand_on(li3g_tests::free_port(), &["--job-retries=1"]).expect("gearmand");
    let dir = PluginDir::with(&["misbehave"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    for (server, line) in [(&a, "from a"), (&b, "from b")] {
        let out = run(host().args(["run", "Misbehave::append", &path, line, "--servers", &server.addr()]));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let mut worker = Worker::builder(&[a.addr(), b.addr()]).plugins(dir.path()).args(["--memlimit", "1M"]).spawn();
    let status = worker.wait_timeout(Duration::from_secs(30)).expect("the worker ends");
    assert_eq!(status.code(), Some(75), "{status:?}");
    let mut ran: Vec<String> = std::fs::read_to_string(file.path()).unwrap().lines().map(str::to_string).collect();
    ran.sort();
    // Each job ran once, or is still queued where it was: none dropped.
    let queued = |g: &Gearmand| g.status().iter().find(|s| s.function == "Misbehave::append").map_or(0, |s| s.total);
    assert_eq!(ran.len() as u64 + queued(&a) + queued(&b), 2, "ran {ran:?}; a {} b {}", queued(&a), queued(&b));
    assert!(ran.iter().all(|l| l == "from a" || l == "from b") && ran.windows(2).all(|w| w[0] != w[1]), "{ran:?}");
}

#[test]
fn a_stopping_worker_runs_a_job_assigned_while_it_ran_another_it_held() {
    // Three servers with a job each; the worker ends after one job (--memlimit 1M: any worker
    // is past it then) and runs the ones it was handed. A's job is quick, B's takes 2 s, and C is stopped (SIGSTOP) until A's
    // job ran, so C's answer to GRAB_JOB_UNIQ comes within the drain's second while the worker
    // runs B's job. The worker counted that second from before B's job and, after it, left
    // without reading C's answer: C requeued the job, its one --job-retries spent: dropped.
    let a = Gearmand::start();
    let b = Gearmand::start();
    let c = Gearmand::try_gearmand_on(li3g_tests::free_port(), &["--job-retries=1"]).expect("gearmand");
    let dir = PluginDir::with(&["misbehave"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    let slow = format!("sleep 2; echo 'from b' >> '{path}'");
    let jobs = [(&a, "Misbehave::append", vec![path.as_str(), "from a"]), (&b, "Misbehave::shell", vec![&slow])];
    for (server, function, args) in jobs.iter().chain([&(&c, "Misbehave::append", vec![path.as_str(), "from c"])]) {
        let out = run(host().arg("run").arg(function).args(args).args(["--servers", &server.addr()]));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    signal(c.pid(), Signal::SIGSTOP);
    let addrs = [a.addr(), b.addr(), c.addr()];
    let mut worker = Worker::builder(&addrs).plugins(dir.path()).args(["--memlimit", "1M"]).spawn();
    let ran = |file: &tempfile::NamedTempFile| std::fs::read_to_string(file.path()).unwrap_or_default();
    let a_ran =
        li3g_tests::poll_until(Duration::from_secs(30), Duration::from_millis(5), || ran(&file).contains("from a"));
    signal(c.pid(), Signal::SIGCONT);
    assert!(a_ran, "A's job never ran: {:?}", ran(&file));
    let status = worker.wait_timeout(Duration::from_secs(30)).expect("the worker ends");
    assert_eq!(status.code(), Some(75), "{status:?}");
    let mut lines: Vec<String> = ran(&file).lines().map(str::to_string).collect();
    lines.sort();
    let queued = |g: &Gearmand| {
        g.status().iter().filter(|s| s.function.starts_with("Misbehave::")).map(|s| s.total).sum::<u64>()
    };
    // Each job ran once, or is still queued where it was: none dropped.
    assert_eq!(lines.len() as u64 + queued(&a) + queued(&b) + queued(&c), 3, "ran {lines:?}");
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{lines:?}");
}

#[test]
fn a_worker_past_its_memlimit_asks_for_no_further_job() {
    // --memlimit 1M: any worker is past it after its first job, and ends to be replaced. It
    // asked the server for the next job anyway (the stop was seen only after the GRAB_JOB_UNIQ
    // went out) and ran it, still over its limit.
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    for line in ["one", "two"] {
        let out = run(host().args(["run", "Misbehave::append", &path, line, "--servers", &gearmand.addr()]));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let mut worker = Worker::builder(&[gearmand.addr()]).plugins(dir.path()).args(["--memlimit", "1M"]).spawn();
    let status = worker.wait_timeout(Duration::from_secs(30)).expect("the worker ends");
    assert_eq!(status.code(), Some(75), "{status:?}");
    let ran = std::fs::read_to_string(file.path()).unwrap();
    let queued = gearmand.status().iter().find(|s| s.function == "Misbehave::append").map_or(0, |s| s.total);
    assert_eq!((ran.lines().count(), queued), (1, 1), "ran {ran:?}");
}

#[test]
fn max_jobs_1_on_three_servers_runs_one_job_and_leaves_the_others_queued() {
    // The worker asked every server for a job at once; ending after one, it ran the ones it
    // was handed (rather than drop them): three jobs under --max-jobs 1. It now asks for no
    // more jobs at a time than it has left.
    let servers = [Gearmand::start(), Gearmand::start(), Gearmand::start()];
    let dir = PluginDir::with(&["misbehave"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().display().to_string();
    for (i, server) in servers.iter().enumerate() {
        let out =
            run(host().args(["run", "Misbehave::append", &path, &format!("from {i}"), "--servers", &server.addr()]));
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let addrs: Vec<String> = servers.iter().map(Gearmand::addr).collect();
    let mut worker = Worker::builder(&addrs).plugins(dir.path()).args(["--max-jobs", "1"]).spawn();
    let status = worker.wait_timeout(Duration::from_secs(30)).expect("the worker ends");
    assert_eq!(status.code(), Some(75), "{status:?}");
    let ran = std::fs::read_to_string(file.path()).unwrap();
    let queued: u64 = servers
        .iter()
        .map(|g| g.status().iter().find(|s| s.function == "Misbehave::append").map_or(0, |s| s.total))
        .sum();
    assert_eq!((ran.lines().count(), queued), (1, 2), "ran {ran:?}");
}
