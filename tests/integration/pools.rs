//! Worker pools (`[default.pools.NAME]`) under `li3g-host start`, against a real gearmand: a
//! pool keeps slow jobs from delaying fast ones, an atomic pool keeps crashes from the default
//! pool's workers, `restart` replaces every pool's workers, recycles by age are spread, and
//! pools that claim a task twice are refused at start.

use crate::daemon::{call, client, start, WAIT};
use li3g_host::client::{Outcome, RunOptions};
use li3g_tests::{host, run, wait_for_workers, wait_until, Gearmand, PluginDir};
use serde_json::json;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A configuration file in a temporary directory.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("li3g.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

/// Queues `count` background `Misbehave::sleep(seconds)` jobs.
fn queue_sleeps(gearmand: &Gearmand, count: usize, seconds: f64) {
    let mut client = client(gearmand);
    for _ in 0..count {
        let outcome = client.run("Misbehave::sleep", &[json!(seconds)], &RunOptions::default(), &mut |_| {}).unwrap();
        assert!(matches!(outcome, Outcome::Queued { .. }), "{outcome:?}");
    }
}

fn sleep_status(gearmand: &Gearmand) -> (u64, u64) {
    let status = gearmand.status();
    let sleep = status.iter().find(|s| s.function == "Misbehave::sleep").expect("Misbehave::sleep is known");
    (sleep.total, sleep.running)
}

/// How long one fast job (`Misbehave::add`) takes to be answered.
fn fast_job(client: &mut li3g_host::client::Client) -> Duration {
    let started = Instant::now();
    assert_eq!(call(client, "Misbehave::add", &[json!(1), json!(2)]).unwrap(), b"3");
    started.elapsed()
}

#[test]
fn a_pool_for_slow_jobs_keeps_fast_jobs_from_waiting_behind_them() {
    let dir = PluginDir::with(&["misbehave"]);

    // Without a pool: three workers, each takes a 2 s sleep, and a fast job waits for one.
    let gearmand = Gearmand::start();
    let (daemon, _lines) = start(&gearmand, &dir, &["--workers", "3"]);
    wait_for_workers(&[&gearmand], "Misbehave::add", 3);
    queue_sleeps(&gearmand, 10, 2.0);
    wait_until("three sleeps run", WAIT, || sleep_status(&gearmand).1 == 3);
    let without_pool = fast_job(&mut client(&gearmand));
    drop(daemon);
    drop(gearmand);

    // With a pool of one worker for the sleeps, next to two default workers.
    let gearmand = Gearmand::start();
    let (_file_dir, file) = config_file(
        r#"
[default.pools.slow]
tasks = ["Misbehave::sleep", "Nothing::*"]
workers = 1
"#,
    );
    let (_daemon, lines) = start(&gearmand, &dir, &["--config", &file, "--workers", "2"]);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    wait_for_workers(&[&gearmand], "Misbehave::add", 2);
    lines.wait_for("(Daemon) Created slow worker number 1 with PID", WAIT);
    // A pattern that claims no loaded task is reported, as an unknown task key is.
    lines.wait_for("pools.slow.tasks: \"Nothing::*\" claims no loaded task", WAIT);
    // The pool's worker registers only its task; the default ones everything else.
    for worker in gearmand.workers().into_iter().filter(|w| !w.functions.is_empty()) {
        let sleeps = worker.functions.iter().any(|f| f == "Misbehave::sleep");
        let adds = worker.functions.iter().any(|f| f == "Misbehave::add");
        assert!(sleeps != adds, "a worker of one pool only: {:?}", worker.functions);
    }
    queue_sleeps(&gearmand, 10, 2.0);
    wait_until("one sleep runs", WAIT, || sleep_status(&gearmand).1 == 1);
    let mut client = client(&gearmand);
    let times: Vec<Duration> = (0..100).map(|_| fast_job(&mut client)).collect();
    let slowest = *times.iter().max().unwrap();
    let (queued, running) = sleep_status(&gearmand);
    assert!(queued >= 9 && running == 1, "the sleeps were still waiting: {queued} queued, {running} running");
    eprintln!("fast job: {without_pool:?} behind the sleeps without a pool; slowest of 100 with one: {slowest:?}");
    assert!(slowest < Duration::from_millis(100), "each fast job within 100 ms with the pool: {times:?}");
    assert!(without_pool > Duration::from_secs(1), "without the pool the fast job waits for a sleep: {without_pool:?}");
    assert!(without_pool > slowest * 10, "{without_pool:?} against {slowest:?}");
}

/// The PID a default-pool worker runs a job in (`Misbehave::shell` reports its parent).
fn shell_worker(client: &mut li3g_host::client::Client) -> u32 {
    let out = call(client, "Misbehave::shell", &[json!("echo $PPID")]).unwrap();
    String::from_utf8_lossy(&out).trim().parse().unwrap()
}

#[test]
fn an_atomic_pool_keeps_crashes_from_the_default_pool_and_restart_replaces_every_pool() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_file_dir, file) = config_file(
        r#"
[default.pools.risky]
tasks = ["Misbehave::segfault", "Misbehave::abort"]
atomic = true
"#,
    );
    let (daemon, lines) = start(&gearmand, &dir, &["--config", &file, "--workers", "2", "--resuscitate"]);
    wait_for_workers(&[&gearmand], "Misbehave::segfault", 1);
    wait_for_workers(&[&gearmand], "Misbehave::shell", 2);
    let workers = gearmand.workers();
    let pid = |w: &li3g_host::gearman::admin_protocol::WorkerStatus| -> u32 {
        w.client_id.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    let mut default_pids: Vec<u32> =
        workers.iter().filter(|w| w.functions.iter().any(|f| f == "Misbehave::shell")).map(pid).collect();
    default_pids.sort_unstable();
    assert_eq!(default_pids.len(), 2);
    let all_pids = gearmand.worker_pids();
    assert_eq!(all_pids.len(), 3);

    let mut client = client(&gearmand);
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let err = call(&mut client, "Misbehave::segfault", &[]).unwrap_err();
        assert!(err.starts_with("task Misbehave::segfault was killed by signal SIGSEGV"), "{err}");
        let err = call(&mut client, "Misbehave::abort", &[]).unwrap_err();
        assert!(err.starts_with("task Misbehave::abort was killed by signal SIGABRT"), "{err}");
        for _ in 0..4 {
            served_by.insert(shell_worker(&mut client));
        }
    }
    // li3_gearman's envelope reaches only the default pool: a task the atomic pool keeps is
    // refused there with a clear failure, not run in (and crashing) a default worker.
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_client.py");
    let out = run(std::process::Command::new("python3").arg(script).arg(gearmand.addr()).arg("Misbehave::segfault"));
    assert_eq!((out.code, out.stdout.trim()), (Some(1), "FAILED FAILED"), "{}", out.stderr);
    lines.wait_for("task Misbehave::segfault is kept by a worker pool (\"Misbehave::segfault\" in its tasks)", WAIT);
    // The default pool's jobs ran in the same two workers throughout; none was replaced.
    assert!(served_by.iter().all(|pid| default_pids.contains(pid)), "{served_by:?} not in {default_pids:?}");
    assert_eq!(gearmand.worker_pids(), all_pids);
    assert_eq!(lines.count("(Daemon) Created"), 3, "{:#?}", lines.all());
    let daemon_says = |text: &str| lines.all().iter().filter(|l| l.contains("(Daemon)") && l.contains(text)).count();
    assert_eq!(daemon_says("was killed by"), 0, "{:#?}", lines.all());
    assert_eq!(daemon_says("exited with code"), 0, "{:#?}", lines.all());

    // `restart` replaces the workers of every pool.
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    lines.wait_for("Created risky worker number 2", WAIT);
    lines.wait_for("Created worker number 4", WAIT);
    wait_until("three new workers, none of the old", WAIT, || {
        let now = gearmand.worker_pids();
        now.len() == 3 && now.iter().all(|pid| !all_pids.contains(pid))
    });
    wait_for_workers(&[&gearmand], "Misbehave::segfault", 1);
    let err = call(&mut client, "Misbehave::segfault", &[]).unwrap_err();
    assert!(err.starts_with("task Misbehave::segfault was killed by signal SIGSEGV"), "{err}");
}

#[test]
fn recycles_by_age_are_spread_and_are_not_crashes() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_file_dir, file) = config_file(
        r#"
[default.pools.slow]
tasks = ["Misbehave::sleep"]
workers = 2
max_age = 1
max_age_splay = 2
"#,
    );
    // Two default workers with the command line's age limit, two in the pool with its own;
    // no --resuscitate: a recycled worker is replaced all the same.
    let mut command = host();
    command
        .args(["start", "--config", &file, "--workers", "2", "--max-age", "1", "--max-age-splay", "2"])
        .args(["--verbose", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = li3g_tests::ChildGuard::spawn(&mut command);
    // Each line with the time it arrived.
    let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let sink = lines.clone();
    let stderr = daemon.child().stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    let recycles = || -> Vec<Instant> {
        lines.lock().unwrap().iter().filter(|(_, l)| l.contains("ended to be replaced")).map(|(at, _)| *at).collect()
    };
    wait_until("eight recycles", WAIT, || recycles().len() >= 8);
    let mut times = recycles();
    times.sort();
    let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    eprintln!("gaps between recycles: {gaps:?}");
    assert!(gaps.iter().all(|gap| *gap >= Duration::from_millis(100)), "two recycles within 100 ms: {gaps:?}");
    let all: Vec<String> = lines.lock().unwrap().iter().map(|(_, l)| l.clone()).collect();
    let count = |text: &str| all.iter().filter(|l| l.contains(text)).count();
    assert!(count("recycling it after the job in hand") >= 8, "{all:#?}");
    assert!(count("Created slow worker number 3") == 1 && count("Created worker number 3") == 1, "{all:#?}");
    for crash in ["was killed by", "exited with code", "failing fast"] {
        assert_eq!(count(crash), 0, "{crash}: {all:#?}");
    }
    // Still serving, in both pools.
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 2);
    let mut client = client(&gearmand);
    assert_eq!(call(&mut client, "Misbehave::sleep", &[json!(0.01)]).unwrap(), b"0.01");
    assert_eq!(call(&mut client, "Misbehave::add", &[json!(2), json!(2)]).unwrap(), b"4");

    // SIGUSR2 recycles a worker; sent to the daemon by mistake it must not end the daemon (its
    // default action) and with it every worker's job.
    // SAFETY: kill(2) on the daemon this test started.
    // A SIGHUP after it is answered only by a daemon still alive.
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGUSR2) };
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
    let restarted = || lines.lock().unwrap().iter().any(|(_, l)| l.contains("Restarting: new workers"));
    wait_until("the daemon restarts its workers", WAIT, || restarted() || daemon.child().try_wait().unwrap().is_some());
    assert!(daemon.child().try_wait().unwrap().is_none(), "the daemon ended on SIGUSR2");
    assert!(restarted());
    wait_for_workers(&[&gearmand], "Misbehave::add", 2);
    assert_eq!(call(&mut client, "Misbehave::add", &[json!(3), json!(4)]).unwrap(), b"7");
}

#[test]
fn a_task_claimed_by_two_pools_is_an_error_at_start() {
    let dir = PluginDir::with(&["misbehave"]);
    let (_file_dir, file) = config_file(
        r#"
[default.pools.slow]
tasks = ["Misbehave::*"]
[default.pools.risky]
tasks = ["Misbehave::segfault"]
"#,
    );
    let out = run(host().args(["start", "--config", &file, "--servers", "127.0.0.1:1", "--plugins"]).arg(dir.path()));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("default.pools.slow.tasks: \"Misbehave::*\" is claimed by pool risky too"),
        "{}",
        out.stderr
    );

    // `plugins` reports a pattern that claims no loaded task, as it reports unknown task keys.
    let (_file_dir, file) = config_file("[default.pools.typo]\ntasks = [\"Misbehav::*\", \"Misbehave::add\"]\n");
    let out = run(host().args(["plugins", "--config", &file, "--plugins"]).arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("pools.typo.tasks: \"Misbehav::*\" claims no loaded task"), "{}", out.stderr);
    assert!(!out.stderr.contains("Misbehave::add\" claims"), "{}", out.stderr);

    // Without pools, --workers 0 would run nothing.
    let out = run(host().args(["start", "--workers", "0", "--servers", "127.0.0.1:1", "--plugins"]).arg(dir.path()));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("--workers 0 leaves no worker"), "{}", out.stderr);
}

#[test]
fn a_recycle_that_lands_while_a_worker_starts_still_replaces_it() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    // An age limit that comes before the worker has loaded its plugins: the SIGUSR2 lands in
    // its start-up. No --resuscitate: only the recycle replaces it.
    let (_file_dir, file) =
        config_file("[default.pools.young]\ntasks = [\"Misbehave::sleep\"]\nmax_age = 0.001\nmax_age_splay = 0.001\n");
    let (_daemon, lines) = start(&gearmand, &dir, &["--config", &file, "--workers", "1"]);
    lines.wait_for("Created young worker number 5", WAIT);
    let all = lines.all();
    let ended = all.iter().filter(|l| l.contains("Young worker number") && l.contains("exited with code")).count();
    assert_eq!(ended, 0, "a recycle ended as a plain exit: {all:#?}");
}

#[test]
fn status_and_metrics_show_workers_by_pool() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (file_dir, file) = config_file(
        r#"
[default.pools.slow]
tasks = ["Misbehave::sleep"]
workers = 1
"#,
    );
    let pid_file = file_dir.path().join("li3g-host.pid");
    let pid_file = pid_file.to_str().unwrap();
    let port = li3g_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--config", &file, "--workers", "2", "--pid", pid_file, "--metrics", &addr];
    let (_daemon, _lines) = start(&gearmand, &dir, &args);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    wait_for_workers(&[&gearmand], "Misbehave::add", 2);
    let mut client = client(&gearmand);
    call(&mut client, "Misbehave::sleep", &[json!(0)]).unwrap();
    assert_eq!(call(&mut client, "Misbehave::add", &[json!(1), json!(2)]).unwrap(), b"3");

    let status = |json: bool| {
        let mut command = host();
        command.args(["status", "--config", &file, "--pid", pid_file]);
        if json {
            command.arg("--json");
        }
        let out = run(&mut command);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        out.stdout
    };
    // (pool, state) of each worker, sorted.
    let workers = || {
        let report: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
        let mut workers: Vec<(Option<String>, String)> = report["children"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == "worker")
            .map(|c| (c["pool"].as_str().map(String::from), c["state"].as_str().unwrap().to_string()))
            .collect();
        workers.sort();
        workers
    };
    let idle = |pool: Option<&str>| (pool.map(String::from), "idle".to_string());
    let expected = vec![idle(None), idle(None), idle(Some("slow"))];
    wait_until("three idle workers on the scoreboard", WAIT, || workers() == expected);
    let text = status(false);
    assert!(text.contains("  slow worker 1 PID"), "{text}");
    assert!(text.contains("  worker 1 PID") && text.contains("  worker 2 PID"), "{text}");

    assert!(li3g_tests::wait_for_port(port, WAIT), "the monitor listens");
    let (code, metrics) = crate::monitor::http(port, "GET", "/metrics", &[], "");
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "li3g_workers{pool=\"default\",state=\"idle\"} 2",
        "li3g_workers{pool=\"slow\",state=\"idle\"} 1",
        "li3g_workers{pool=\"slow\",state=\"busy\"} 0",
        "li3g_jobs_total{pool=\"slow\",task=\"Misbehave::sleep\",outcome=\"completed\"} 1",
        "li3g_jobs_total{pool=\"default\",task=\"Misbehave::add\",outcome=\"completed\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // A worker counts only the tasks it registers.
    assert!(!metrics.contains("pool=\"default\",task=\"Misbehave::sleep\""), "{metrics}");
    crate::monitor::promtool_check(&metrics);
}

#[test]
fn work_ends_at_its_max_age_after_the_job_in_hand_with_the_recycle_code() {
    // `work` (one worker under systemd or supervisor) recycles itself by age: with
    // --max-age, or its pool's max_age with --pool; the job in hand is finished first.
    let dir = PluginDir::with(&["misbehave"]);
    let gearmand = Gearmand::start();
    let (_config_dir, config) = config_file(&format!(
        "[default]\nservers = [\"{}\"]\n[default.pools.slow]\ntasks = [\"Misbehave::sleep\"]\nmax_age = 1\nmax_age_splay = 0.2\n",
        gearmand.addr()
    ));
    let mut client = client(&gearmand);
    // (Without --pool, the pool keeps Misbehave::sleep to itself: that worker has no config.)
    for (what, args) in [
        ("--max-age", vec!["--max-age", "1", "--max-age-splay", "0.2"]),
        ("the pool's max_age", vec!["--config", &config, "--pool", "slow"]),
    ] {
        let started = Instant::now();
        let mut worker = li3g_tests::Worker::builder(&[gearmand.addr()])
            .plugins(dir.path())
            .args(&args)
            .registered(&[&gearmand], "Misbehave::sleep", 1)
            .spawn();
        // A job that outlives the age limit: answered, then the worker ends.
        let answer = call(&mut client, "Misbehave::sleep", &[json!(1.5)]).unwrap();
        assert_eq!(answer, b"1.5", "{what}");
        let status = worker.wait_timeout(WAIT).unwrap_or_else(|| panic!("{what}: the worker did not end"));
        assert_eq!(status.code(), Some(75), "{what}: {status:?}");
        assert!(started.elapsed() >= Duration::from_secs(1), "{what}: ended before its age");
        li3g_tests::wait_until_ok("no worker left", WAIT, Duration::from_millis(50), || {
            let workers = gearmand.workers();
            if workers.iter().all(|w| w.functions.is_empty()) {
                Ok(())
            } else {
                Err(format!("{what}: {workers:?}"))
            }
        });
    }
}
