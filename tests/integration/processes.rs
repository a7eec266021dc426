//! The daemon's processes on their fault paths, against a real gearmand: no job child outlives
//! its daemon, no stop signal is lost, recycling is not a crash; and the limits on what the
//! command line, the configuration and a job child may hand over.

use crate::daemon::{call, client, sleep_in_flight, start, WAIT};
use li3g_tests::{alive, children, host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, Lines, PluginDir};
use li3g_tests::{signal, Signal, Worker};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The one job child of the one worker of gearmand's only worker process.
fn job_child(gearmand: &Gearmand) -> (u32, u32) {
    let workers = gearmand.worker_pids();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let worker = workers[0];
    let mut found = Vec::new();
    wait_until("the job child exists", WAIT, || {
        found = children(worker);
        found.len() == 1
    });
    (worker, found[0])
}

/// Processes whose command line holds `needle` as one argument.
fn processes_with_arg(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| cmd.split(|&b| b == 0).any(|arg| arg == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// A `sleep` argument no other process on this (shared) machine has: `BASE.PID_NANOS`, a
/// valid duration of a bit over `base` seconds. (`BASE + pid % 1000` was shared by another
/// helper's run of the same test now and then: a wait for "no process has it" then waited on
/// theirs.)
fn unique_marker(base: u32) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{base}.{}{nanos:09}", std::process::id())
}

/// Waits until no process has `marker` among its arguments; the failure names those that do.
fn wait_until_gone(what: &str, marker: &str) {
    li3g_tests::wait_until_ok(what, WAIT, Duration::from_millis(20), || {
        let left: Vec<(u32, String)> = processes_with_arg(marker)
            .into_iter()
            .map(|pid| (pid, std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {left:?}"))
        }
    });
}

/// What the descriptors 3 and up of `pid` point to (`socket:[123]`, `pipe:[45]`, paths).
fn descriptors(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd: u32 = entry.file_name().to_str()?.parse().ok()?;
        (fd > 2).then(|| std::fs::read_link(entry.path()).ok().map(|p| p.display().to_string()))?
    })
    .collect()
}

fn start_with_pid_file(gearmand: &Gearmand, dir: &PluginDir, pid_file: &Path, extra: &[&str]) -> (ChildGuard, Lines) {
    let mut args = vec!["--workers", "1", "--pid", pid_file.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    start(gearmand, dir, &args)
}

#[test]
fn a_sigkilled_atomic_daemon_with_a_job_in_flight_leaves_nothing_behind() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let pid_file = dir.path().join("li3g.pid");
    let (mut daemon, _lines) = start_with_pid_file(&gearmand, &dir, &pid_file, &["--atomic"]);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    let _job = sleep_in_flight(&gearmand, 30.0);
    let (worker, job) = job_child(&gearmand);
    // Workers never hold the PID file. The job child holds nothing of its worker's (no job
    // server socket, no wake pipe) but its result pipe and the plugins' private snapshots
    // (memfd), which the job's code runs from; descriptors the daemon itself inherited from
    // whoever started it (cargo's jobserver) are not ours to judge.
    let pid_path = pid_file.display().to_string();
    assert!(!descriptors(worker).contains(&pid_path), "{:?}", descriptors(worker));
    let outside = descriptors(daemon.id());
    // The child closes them in its first steps after the fork, which may not have run yet.
    let held = || -> Vec<String> {
        descriptors(job).into_iter().filter(|d| !outside.contains(d) && !d.starts_with("/memfd:")).collect()
    };
    wait_until("the job child holds only its result pipe", WAIT, || {
        let held = held();
        held.len() == 1 && held[0].starts_with("pipe:")
    });

    let killed = Instant::now();
    daemon.kill(); // SIGKILL: the daemon cannot stop anything itself
    let all = [daemon.id(), worker, job];
    wait_until("no li3g process is left", Duration::from_secs(2), || all.iter().all(|pid| !alive(*pid)));
    wait_until("gearmand lists no worker of it", Duration::from_secs(2), || gearmand.worker_pids().is_empty());
    assert!(killed.elapsed() < Duration::from_secs(2), "{:?}", killed.elapsed());

    // No leftover holds the PID file's lock: a new daemon starts on it at once.
    let (_again, lines) = start_with_pid_file(&gearmand, &dir, &pid_file, &[]);
    lines.wait_for("Created worker number 1", WAIT);
    assert_eq!(lines.count("already running"), 0, "{:#?}", lines.all());
}

#[test]
fn a_job_child_is_killed_and_reaped_when_its_worker_fails_while_it_runs() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let worker = Worker::builder(&[gearmand.addr()])
        .plugins(dir.path())
        .arg("--atomic")
        .env("LI3G_TEST_JOB_POLL_FAILS", "1")
        .registered(&[&gearmand], "Misbehave::shell", 1)
        .spawn();
    let marker = unique_marker(5000);
    // The worker's wait for its job child fails at once: the job fails, and neither the child
    // nor what it started keeps running (the child was an orphan, running and never reaped).
    let err = call(&mut client(&gearmand), "Misbehave::shell", &[json!(format!("sleep {marker}"))]).unwrap_err();
    assert!(err.contains("injected by LI3G_TEST_JOB_POLL_FAILS"), "{err}");
    wait_until("the job child is gone, reaped", WAIT, || children(worker.id()).is_empty());
    wait_until_gone("what the job started is gone", &marker);
    // The worker goes on serving.
    assert!(alive(worker.id()));
}

#[test]
fn two_stop_signals_with_an_atomic_job_in_flight_leave_no_orphan() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (mut daemon, lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic"]);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    let job = sleep_in_flight(&gearmand, 30.0);
    let (worker, child) = job_child(&gearmand);

    signal(daemon.id(), Signal::SIGTERM);
    lines.wait_for("Shutting down", WAIT);
    signal(daemon.id(), Signal::SIGTERM);
    let status = daemon.wait_timeout(WAIT).expect("the daemon ends after a second stop");
    assert!(status.success(), "{status:?}");
    wait_until("the job child and its worker are gone", WAIT, || !alive(child) && !alive(worker));
    let err = job.join().unwrap().unwrap_err();
    assert!(err.contains("the worker was told to stop at once"), "{err}");
}

#[test]
fn a_timeout_kills_the_job_with_everything_it_started() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, _lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic", "--timeout", "1"]);
    wait_for_workers(&[&gearmand], "Misbehave::shell", 1);
    let mut client = client(&gearmand);
    // The job's own process: a `sleep` the job child waits for, in the job's process group.
    let marker = unique_marker(3000);
    let err = call(&mut client, "Misbehave::shell", &[json!(format!("sleep {marker}"))]).unwrap_err();
    assert!(
        err.starts_with("task Misbehave::shell ran past its timeout of 1s and was killed (cpu "),
        "the message, then what the child cost: {err}"
    );
    wait_until_gone("the job's sleep was killed with it", &marker);

    // A job that answers but leaves a process running: the process goes with the job's child.
    let marker = unique_marker(4000);
    let background = format!("sleep {marker} >/dev/null 2>&1 &");
    assert_eq!(call(&mut client, "Misbehave::shell", &[json!(background)]).unwrap(), b"");
    assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"1");
    wait_until_gone("what the job left running was killed", &marker);
}

#[test]
fn programs_an_atomic_job_runs_keep_the_default_signal_dispositions() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, _lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic", "--timeout", "15"]);
    wait_for_workers(&[&gearmand], "Misbehave::shell", 1);
    let mut client = client(&gearmand);
    // The job child shrugs off SIGTERM, but what it runs must not inherit that: a `sleep` the
    // job terminates ends at once, with 128 + SIGTERM.
    let script = "sleep 30 & kill -TERM $!; wait $!; echo $?";
    assert_eq!(call(&mut client, "Misbehave::shell", &[json!(script)]).unwrap(), b"143\n");
}

#[test]
fn a_stop_right_after_restart_always_stops_the_daemon() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    for round in 0..50 {
        let (mut daemon, lines) = start(&gearmand, &dir, &["--workers", "2"]);
        lines.wait_for("Created worker number 2", WAIT);
        // Restart, and at once stop.
        signal(daemon.id(), Signal::SIGHUP);
        signal(daemon.id(), Signal::SIGTERM);
        let status = daemon.wait_timeout(WAIT);
        assert!(status.is_some_and(|s| s.success()), "round {round}: the daemon did not stop: {:#?}", lines.all());
    }
}

#[test]
fn recycled_workers_are_replaced_without_backoff() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, lines) = start(&gearmand, &dir, &["--workers", "1", "--resuscitate", "--max-jobs", "1"]);
    wait_for_workers(&[&gearmand], "Misbehave::counter", 1);
    let mut client = client(&gearmand);
    for round in 1..=4 {
        // A fresh worker for every job: its global counter starts again.
        assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"1", "round {round}");
    }
    lines.wait_for("Created worker number 5", WAIT);
    assert_eq!(lines.count("failing fast"), 0, "{:#?}", lines.all());
    assert_eq!(lines.count("ended to be replaced"), 4, "{:#?}", lines.all());
}

#[test]
fn an_oversized_result_fails_the_job_with_a_clear_message() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, _lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic"]);
    wait_for_workers(&[&gearmand], "Misbehave::big", 1);
    let mut client = client(&gearmand);
    let err = call(&mut client, "Misbehave::big", &[json!(65)]).unwrap_err();
    assert!(err.starts_with("task Misbehave::big sent "), "{err}");
    assert!(err.contains("more than the 64 MiB a Gearman packet can carry"), "{err}");
    assert_eq!(call(&mut client, "Misbehave::big", &[json!(1)]).unwrap().len(), 1 << 20);
}

#[test]
fn durations_are_validated_where_they_are_given() {
    let dir = PluginDir::with(&["hello"]);
    for (args, flag, reason) in [
        (&["work", "--timeout", "1e30"][..], "--timeout", "seconds is too long"),
        (&["work", "--timeout", "-1"][..], "--timeout", "not a positive number of seconds"),
        (&["work", "--timeout", "NaN"][..], "--timeout", "NaN is not a number of seconds"),
        (&["start", "--timeout", "0"][..], "--timeout", "0 is not a positive number of seconds"),
        (&["ping", "--timeout", "inf"][..], "--timeout", "seconds is too long"),
        (&["shutdown", "--timeout", "soon"][..], "--timeout", "\"soon\" is not a number of seconds"),
        (&["ping", "--timeout", "-0.5"][..], "--timeout", "-0.5 is not a positive number of seconds"),
    ] {
        let out = run(host().args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(flag) && out.stderr.contains(reason), "{args:?}: {}", out.stderr);
    }
    for (args, reason) in [
        (&["work", "--max-jobs", "0"][..], "invalid value '0' for '--max-jobs <N>'"),
        (&["work", "--memlimit", "0"][..], "a memory limit must be above zero"),
    ] {
        let out = run(host().args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(reason), "{args:?}: {}", out.stderr);
    }
    // `start --workers 0` is valid with pools; without, an error (pools::a_task_claimed_by_two_pools_is_an_error_at_start).
    let out = run(host().args(["start", "--workers", "0"]));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--workers 0 leaves no worker"), "{}", out.stderr);
    let config = dir.path().join("li3g.toml");
    std::fs::write(&config, "[default.tasks.'Hello::say']\ntimeout = 1e30\n").unwrap();
    let out = run(host().args(["work", "--config"]).arg(&config));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("default.tasks.\"Hello::say\".timeout: "), "{}", out.stderr);
    assert!(out.stderr.contains("seconds is too long"), "{}", out.stderr);
}

/// Whether gearmand requeues a `Misbehave::sleep` job while the only worker still runs it: the
/// sign that a CAN_DO_TIMEOUT reached it.
fn requeued_while_running(gearmand: &Gearmand) -> bool {
    let port = gearmand.port;
    std::thread::spawn(move || {
        let mut client = li3g_host::client::Client::new(vec![li3g_host::gearman::conn::ServerAddr {
            host: "127.0.0.1".into(),
            port,
            tls: false,
        }]);
        let options = li3g_host::client::RunOptions::default();
        let _ = client.run("Misbehave::sleep", &[json!(6)], &options, &mut |_| {});
    })
    .join()
    .unwrap();
    let mut seen_running = false;
    li3g_tests::poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let status = gearmand.status().into_iter().find(|s| s.function == "Misbehave::sleep").expect("registered");
        seen_running |= status.running == 1;
        seen_running && status.running == 0 && status.total == 1
    })
}

#[test]
fn timeout_without_atomic_is_registered_with_the_job_server() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let mut command = host();
    command
        .args(["work", "--timeout", "1", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut command);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    assert!(requeued_while_running(&gearmand), "the --timeout never reached gearmand");
}

#[test]
fn config_task_keys_are_canonical_and_unknown_ones_are_reported() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let config = dir.path().join("li3g.toml");
    let text = format!(
        "[default]\nservers = [\"{}\"]\nplugins = \"{}\"\n\n[default.tasks.'\\Misbehave::sleep']\ntimeout = 1\n\n\
         [default.tasks.Nope]\ntimeout = 5\n",
        gearmand.addr(),
        dir.path().display()
    );
    std::fs::write(&config, text).unwrap();

    let out = run(host().args(["plugins", "--config"]).arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: configuration default: tasks.\"Nope::run\" names no loaded task"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Misbehave::sleep"), "{}", out.stderr);

    let mut command = host();
    command.args(["work", "--verbose", "--config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut worker = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(worker.child().stderr.take().expect("piped"));
    lines.wait_for("tasks.\"Nope::run\" names no loaded task; its settings are unused", WAIT);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    assert!(requeued_while_running(&gearmand), "`\\Misbehave::sleep`'s timeout never reached gearmand");
}

#[test]
fn a_worker_killed_mid_job_takes_what_the_job_started_with_it() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let mut worker = Worker::builder(&[gearmand.addr()])
        .plugins(dir.path())
        .arg("--atomic")
        .registered(&[&gearmand], "Misbehave::shell", 1)
        .spawn();
    let marker = unique_marker(6000);
    // The `gearman` CLI as the client: it waits for the job, whose worker is about to die.
    let mut submit = Command::new("gearman");
    submit
        .args(["-h", "127.0.0.1", "-p", &gearmand.port.to_string(), "-f", "Misbehave::shell"])
        .arg(json!([format!("sleep {marker}")]).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _client = ChildGuard::spawn(&mut submit);
    wait_until("the job's sleep runs", WAIT, || !processes_with_arg(&marker).is_empty());
    // SIGKILL: the worker can do nothing. Its job child gets its parent-death signal, and what
    // the job started (a shell and its sleep, in the child's process group) must go with it,
    // not run on as orphans of init.
    signal(worker.id(), Signal::SIGKILL);
    let _ = worker.wait_timeout(WAIT);
    wait_until_gone("what the job started is gone with its worker", &marker);
}

#[test]
fn an_oversized_result_fails_the_job_without_atomic_too() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, _lines) = start(&gearmand, &dir, &["--workers", "1"]);
    wait_for_workers(&[&gearmand], "Misbehave::big", 1);
    let mut client = client(&gearmand);
    // Exactly 64 MiB: with the job handle, more than one packet's body.
    let err = call(&mut client, "Misbehave::big", &[json!(64)]).unwrap_err();
    assert!(err.starts_with("task Misbehave::big returned 67108864 bytes, more than the 64 MiB"), "{err}");
    assert_eq!(call(&mut client, "Misbehave::big", &[json!(1)]).unwrap().len(), 1 << 20, "the worker goes on");
}

#[test]
fn what_an_answered_atomic_job_left_running_is_killed_without_waiting_for_the_next_job() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::builder(&[gearmand.addr()])
        .plugins(dir.path())
        .arg("--atomic")
        .registered(&[&gearmand], "Misbehave::shell", 1)
        .spawn();
    let marker = unique_marker(6100);
    // The job starts a sleep in its process group and answers at once; no job comes after
    // it. The sleep used to live on until the next job's fork reaped the child.
    let mut client = client(&gearmand);
    call(&mut client, "Misbehave::shell", &[json!(format!("sleep {marker} >/dev/null 2>&1 &"))]).unwrap();
    wait_until_gone("what the answered job left running is gone", &marker);
}
