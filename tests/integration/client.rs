//! The li3g client API (`li3g_host::client`) against a real gearmand and a li3g worker:
//! every priority in both modes, unique keys that merge jobs, and status by handle and key.

use li3g_host::client::{Client, Outcome, RunOptions, Unique};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::gearman::packet::Priority;
use li3g_tests::wait_until_ok;
use li3g_tests::Worker;
use li3g_tests::{host, run, wait_until, ChildGuard, Gearmand, Lines, PluginDir};
use serde_json::json;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn client(gearmand: &Gearmand) -> Client {
    Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }])
}

fn sync() -> RunOptions {
    RunOptions { background: false, timeout: Some(Duration::from_secs(20)), ..RunOptions::default() }
}

#[test]
fn every_priority_in_background_and_sync() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    let mut client = client(&gearmand);
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        let options = RunOptions { priority, ..sync() };
        let outcome = client.run("Hello::say", &[json!(format!("{priority:?}"))], &options, &mut |_| {}).unwrap();
        let Outcome::Completed { result, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(result, format!("Hello {priority:?}").as_bytes());

        let options = RunOptions { priority, id: Some(format!("bg-{priority:?}")), ..RunOptions::default() };
        let outcome = client.run("Misbehave::counter", &[], &options, &mut |_| {}).unwrap();
        let Outcome::Queued { id, handle } = outcome else { panic!("{outcome:?}") };
        assert_eq!(id, format!("bg-{priority:?}"));
        assert_eq!(handle.server, ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false });
        // The worker takes it and finishes it: the server forgets the handle.
        wait_until(&format!("background job {handle} finished"), Duration::from_secs(10), || {
            !client.gearman().status(&handle).unwrap().known
        });
    }
    // A server forgets failed jobs too: the worker's counter proves the three background jobs ran.
    let Outcome::Completed { result, .. } = client.run("Misbehave::counter", &[], &sync(), &mut |_| {}).unwrap() else {
        panic!()
    };
    assert_eq!(result, b"4", "three background counter jobs ran before this one");
}

#[test]
fn jobs_with_the_same_unique_key_run_once_for_all_their_clients() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let port = gearmand.port;
            std::thread::spawn(move || {
                let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port, tls: false }]);
                let options = RunOptions { unique: Unique::Key("count-once".into()), ..sync() };
                client.run("Misbehave::counter", &[], &options, &mut |_| {}).unwrap()
            })
        })
        .collect();
    // Both clients are attached to one queued job before any worker exists.
    let mut probe = client(&gearmand);
    wait_until_ok("the two jobs merged", Duration::from_secs(10), li3g_tests::POLL, || {
        let status = probe.gearman().status_unique(b"count-once").unwrap();
        if status.known && status.clients == 2 {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    });
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    for thread in waiting {
        let Outcome::Completed { result, .. } = thread.join().unwrap() else { panic!() };
        assert_eq!(result, b"1", "both clients get the one run's result");
    }
    // The worker's counter moved once: the next job is its second.
    let Outcome::Completed { result, .. } = probe.run("Misbehave::counter", &[], &sync(), &mut |_| {}).unwrap() else {
        panic!()
    };
    assert_eq!(result, b"2");
}

#[test]
fn a_unique_key_from_the_arguments_merges_equal_jobs_only() {
    let gearmand = Gearmand::start();
    let mut client = client(&gearmand);
    let options = RunOptions { unique: Unique::FromArgs, ..RunOptions::default() };
    for args in [json!([1]), json!([1]), json!([2])] {
        let Outcome::Queued { .. } = client.run("Misbehave::echo", &[args], &options, &mut |_| {}).unwrap() else {
            panic!()
        };
    }
    // Three submissions, two distinct argument lists: two queued jobs.
    let total = gearmand.status().into_iter().find(|s| s.function == "Misbehave::echo").map(|s| s.total);
    assert_eq!(total, Some(2));
}

/// Runs `command`; its exit status (`None` when it ran past `timeout`, then it is killed) and
/// both streams.
fn run_within(command: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = ChildGuard::spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let stdout = Lines::collect(child.child().stdout.take().unwrap());
    let stderr = Lines::collect(child.child().stderr.take().unwrap());
    let status = child.wait_timeout(timeout);
    child.kill();
    // The collectors end with the pipes; give them a moment to take the last lines.
    let text = |lines: &Lines| {
        let mut last = None;
        wait_until("a pipe's lines stop changing", Duration::from_secs(5), || {
            let now = lines.all();
            let same = last.as_ref() == Some(&now);
            last = Some(now);
            same
        });
        last.unwrap_or_default().join("\n")
    };
    (status, text(&stdout), text(&stderr))
}

#[test]
fn a_failing_task_reaches_every_client_as_a_failure() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    let port = gearmand.port.to_string();
    let within = Duration::from_secs(30);

    // The gearman CLI (libgearman): exits non-zero with the message; it used to wait forever.
    let mut gearman = Command::new("gearman");
    gearman.args(["-h", "127.0.0.1", "-p", &port, "-f", "Misbehave::fail", r#"["no disk"]"#]);
    let (status, _, stderr) = run_within(&mut gearman, within);
    let status = status.expect("the gearman CLI must not hang on a failed job");
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("no disk") && stderr.contains("Job failed"), "{stderr}");

    // python3-gearman: state FAILED, the message as a warning; it used to raise KeyError.
    let script = r#"
import sys, python3_gearman as g
request = g.GearmanClient([sys.argv[1]]).submit_job("Misbehave::fail", '["no disk"]', poll_timeout=30)
print(request.state, list(request.warning_updates))
"#;
    let mut python = Command::new("python3");
    python.args(["-c", script, &format!("127.0.0.1:{port}")]);
    let (status, stdout, stderr) = run_within(&mut python, within);
    assert!(status.expect("python3-gearman must not hang").success(), "{stderr}");
    assert_eq!(stdout, "FAILED ['no disk']");

    // PHP's gearman extension: doNormal returns, with GEARMAN_WORK_FAIL.
    let script = r#"
$client = new GearmanClient();
$client->addServer("127.0.0.1", (int) $argv[1]);
$client->setTimeout(30000);
$client->doNormal("Misbehave::fail", '["no disk"]');
echo $client->returnCode() == GEARMAN_WORK_FAIL ? "GEARMAN_WORK_FAIL" : "code " . $client->returnCode();
"#;
    let mut php = Command::new("php");
    php.args(["-r", script, &port]);
    let (status, stdout, stderr) = run_within(&mut php, within);
    assert!(status.expect("PHP's client must not hang").success(), "{stderr}");
    assert_eq!(stdout, "GEARMAN_WORK_FAIL");

    // li3g's client: the task's message as the error, not also as a warning.
    let mut events = Vec::new();
    let err = client(&gearmand)
        .run("Misbehave::fail", &[json!("no disk")], &sync(), &mut |e| events.push(format!("{e:?}")))
        .unwrap_err();
    assert_eq!(err.to_string(), "no disk");
    assert!(events.is_empty(), "{events:?}");

    // And its command line: the message once, exit 1.
    let out = run(host()
        .args(["run", "--sync", "--timeout", "30", "--servers", &gearmand.addr()])
        .args(["Misbehave::fail", "no disk"]));
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, "li3g-host: no disk\n");
}

#[test]
fn a_task_that_warns_and_then_succeeds_passes_its_warning_on() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    let mut events = Vec::new();
    let outcome = client(&gearmand)
        .run("Misbehave::progress", &[json!(2)], &sync(), &mut |e| events.push(format!("{e:?}")))
        .unwrap();
    assert!(matches!(outcome, Outcome::Completed { ref result, .. } if result == b"2"), "{outcome:?}");
    assert_eq!(events[0], "Warning([115, 116, 97, 114, 116, 105, 110, 103])", "{events:?}"); // "starting"
    assert_eq!(events.len(), 5, "{events:?}");
}

#[test]
fn ping_gives_up_on_a_server_that_accepts_and_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let mut ping = host();
    ping.args(["ping", "--timeout", "1", "--servers", &format!("127.0.0.1:{port}")]);
    let (status, stdout, stderr) = run_within(&mut ping, Duration::from_secs(20));
    let status = status.expect("ping --timeout must bound a server that never answers");
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout, "Pinging... ERROR");
    assert_eq!(
        stderr,
        format!("li3g-host: no job server could take the job: 127.0.0.1:{port}: no answer within 1.0 s")
    );
}

#[test]
fn run_sync_says_when_no_worker_is_registered_and_keeps_waiting() {
    let gearmand = Gearmand::start();
    let started = Instant::now();
    let out = run(host().args(["run", "--sync", "--timeout", "6", "--servers", &gearmand.addr(), "Nobody::here"]));
    assert!(started.elapsed() >= Duration::from_secs(6), "waited until the timeout: {:?}", started.elapsed());
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        format!(
            "li3g-host: no worker has registered Nobody::here on {}; still waiting, until the --timeout of 6 s\n\
             li3g-host: no result within 6s\n",
            gearmand.addr()
        )
    );

    // With a worker registered, nothing is said: the job just runs.
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    let out = run(host()
        .args(["run", "--sync", "--timeout", "30", "--servers", &gearmand.addr()])
        .args(["Misbehave::sleep", "4"]));
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(0), "4.0\n", ""));
}
