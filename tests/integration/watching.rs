//! Watching a running pool: `li3g-host status` (text and `--json`) from the scoreboard, the job
//! servers and Redis; process titles in `ps`.

use crate::daemon::{call, client, WAIT};
use li3g_host::client::{Client, RunOptions};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::{
    host, run, wait_for_workers, wait_until, wait_until_ok, ChildGuard, Gearmand, Lines, PluginDir, Redis,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

pub(crate) struct Pool {
    pub(crate) gearmands: Vec<Gearmand>,
    _redis: Redis,
    _plugins: PluginDir,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) daemon: ChildGuard,
    _lines: Lines,
}

impl Pool {
    /// A pool of `workers` on two gearmands with Redis (so a scheduler too).
    pub(crate) fn start(workers: u32) -> Pool {
        Pool::start_with(workers, &[])
    }

    /// The same, with more arguments for `start`.
    pub(crate) fn start_with(workers: u32, extra: &[&str]) -> Pool {
        let gearmands = vec![Gearmand::start(), Gearmand::start()];
        let redis = Redis::start();
        let plugins = PluginDir::with(&["misbehave"]);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("li3g.toml");
        let servers: Vec<String> = gearmands.iter().map(|g| format!("\"{}\"", g.addr())).collect();
        std::fs::write(
            &config,
            format!(
                "[default]\nservers = [{}]\nredis = \"{}\"\nplugins = \"{}\"\n",
                servers.join(", "),
                redis.url(),
                plugins.path().display()
            ),
        )
        .unwrap();
        let mut command = host();
        command
            .args(["start", "--verbose", "--workers", &workers.to_string(), "--config"])
            .arg(&config)
            .arg("--pid")
            .arg(dir.path().join("li3g-host.pid"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut daemon = ChildGuard::spawn(&mut command);
        let lines = Lines::collect(daemon.child().stderr.take().unwrap());
        let refs: Vec<&Gearmand> = gearmands.iter().collect();
        wait_for_workers(&refs, "Misbehave::sleep", u64::from(workers));
        Pool { gearmands, _redis: redis, _plugins: plugins, dir, config, daemon, _lines: lines }
    }

    /// Its Redis's PID.
    pub(crate) fn redis_pid(&self) -> u32 {
        self._redis.pid()
    }

    pub(crate) fn pid_file(&self) -> PathBuf {
        self.dir.path().join("li3g-host.pid")
    }

    pub(crate) fn status(&self, args: &[&str]) -> li3g_tests::Run {
        run(host().arg("status").args(args).arg("--config").arg(&self.config).arg("--pid").arg(self.pid_file()))
    }

    pub(crate) fn json(&self) -> Value {
        let out = self.status(&["--json"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }
}

fn client_of(gearmand: &Gearmand) -> Client {
    Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }])
}

fn background(gearmand: &Gearmand, task: &str) {
    let options = RunOptions { background: true, ..RunOptions::default() };
    client_of(gearmand).run(task, &[], &options, &mut |_| {}).unwrap();
}

fn queued(report: &Value, server: &str, function: &str) -> u64 {
    let servers = report["servers"].as_array().unwrap();
    let server = servers.iter().find(|s| s["server"] == server).unwrap_or_else(|| panic!("{server}: {report}"));
    server["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == function)
        .map_or(0, |f| f["queued"].as_u64().unwrap())
}

#[test]
fn status_shows_the_job_in_hand_failures_queues_and_the_schedule() {
    let pool = Pool::start(1);
    let report = pool.json();
    assert_eq!(report["daemon"]["pid"].as_u64(), Some(u64::from(pool.daemon.id())));
    assert!(report["daemon"]["config"].as_str().unwrap().ends_with("li3g.toml"), "{report}");
    let kinds: Vec<&str> = report["children"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"worker") && kinds.contains(&"scheduler"), "{kinds:?}");

    // A failure keeps its message.
    let mut first = client(&pool.gearmands[0]);
    assert_eq!(call(&mut first, "Misbehave::fail", &[json!("no disk left")]), Err("no disk left".into()));
    wait_until("the failure is on the scoreboard", WAIT, || {
        pool.json()["failures"].as_array().unwrap().iter().any(|f| f["message"] == "no disk left")
    });
    let report = pool.json();
    let failure = &report["failures"][0];
    assert_eq!(failure["task"], "Misbehave::fail");
    assert!(!failure["id"].as_str().unwrap().is_empty() && !failure["handle"].as_str().unwrap().is_empty());
    let worker = report["children"].as_array().unwrap().iter().find(|c| c["kind"] == "worker").unwrap().clone();
    assert_eq!(worker["failed"], 1, "{worker}");

    // Queued jobs on both servers, for a function nobody serves.
    for _ in 0..2 {
        background(&pool.gearmands[0], "Nobody::serves");
    }
    background(&pool.gearmands[1], "Nobody::serves");

    // A job scheduled an hour ahead.
    let ahead = RunOptions {
        background: true,
        schedule: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..RunOptions::default()
    };
    let config = li3g_host::config::load(Some(&pool.config), "default", None).unwrap();
    li3g_host::client::for_config(&config).run("Misbehave::sleep", &[json!(0)], &ahead, &mut |_| {}).unwrap();

    // A slow job in hand.
    let slow = crate::daemon::sleep_in_flight(&pool.gearmands[0], 3.0);
    let report = pool.json();
    let busy = report["children"].as_array().unwrap().iter().find(|c| c["state"] == "busy").cloned();
    let busy = busy.unwrap_or_else(|| panic!("no busy child: {report}"));
    assert_eq!(busy["job"]["task"], "Misbehave::sleep");
    assert!(!busy["job"]["id"].as_str().unwrap().is_empty(), "{busy}");
    assert!(busy["job"]["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(queued(&report, &pool.gearmands[0].addr(), "Nobody::serves"), 2, "{report}");
    assert_eq!(queued(&report, &pool.gearmands[1].addr(), "Nobody::serves"), 1, "{report}");
    let scheduler = &report["scheduler"];
    assert_eq!(scheduler["pending"], 1, "{report}");
    assert_eq!(scheduler["dead"], 0);
    assert!(scheduler["next_due_ms"].as_i64().unwrap() > 0);

    // The text says the same.
    let text = pool.status(&[]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let out = &text.stdout;
    assert!(out.contains("worker 1 PID") && out.contains("busy") && out.contains("Misbehave::sleep #"), "{out}");
    assert!(out.contains("Nobody::serves  queued 2") && out.contains("Nobody::serves  queued 1"), "{out}");
    assert!(out.contains("pending 1  leased 0  dead 0"), "{out}");
    assert!(out.contains("Misbehave::fail #") && out.contains(": no disk left"), "{out}");
    slow.join().unwrap().unwrap();
}

/// Stops a process (SIGSTOP) until dropped (SIGCONT).
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        li3g_tests::signal(self.0, li3g_tests::Signal::SIGCONT);
    }
}

/// One job server and Redis stopped (SIGSTOP: they accept connections and never answer):
/// `status` answers within seconds, text and JSON, naming each stopped source as down, with the
/// other job server's queues. (It asked the sources in turn, waiting out each one's timeouts:
/// 2 s for the job server, then Redis' 10 s read timeout.)
#[test]
fn status_with_a_stopped_job_server_and_redis_answers_and_names_them() {
    let pool = Pool::start(1);
    background(&pool.gearmands[1], "Nobody::serves");
    let stopped = pool.gearmands[0].addr();
    li3g_tests::signal(pool.gearmands[0].pid(), li3g_tests::Signal::SIGSTOP);
    let _gearmand = Stopped(pool.gearmands[0].pid());
    li3g_tests::signal(pool.redis_pid(), li3g_tests::Signal::SIGSTOP);
    let _redis = Stopped(pool.redis_pid());
    let started = std::time::Instant::now();
    let text = pool.status(&[]);
    let took = started.elapsed();
    eprintln!("status with a stopped gearmand and Redis answered in {took:?}: {}", text.stdout);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(took < Duration::from_secs(8), "status took {took:?}");
    let out = &text.stdout;
    assert!(out.contains(&format!("{stopped}: cannot ask: no answer within")), "{out}");
    assert!(out.contains("cannot read Redis: redis://127.0.0.1:") && out.contains("no answer within"), "{out}");
    assert!(out.contains("Nobody::serves  queued 1"), "the other job server answers: {out}");
    let started = std::time::Instant::now();
    let report = pool.json();
    assert!(started.elapsed() < Duration::from_secs(8), "status --json took {:?}", started.elapsed());
    let servers = report["servers"].as_array().unwrap();
    let down = servers.iter().find(|s| s["server"] == stopped.as_str()).unwrap();
    assert!(down["error"].as_str().is_some_and(|e| e.contains("no answer")), "{report}");
    assert!(report["scheduler"]["error"].as_str().is_some(), "{report}");
}

#[test]
fn status_without_a_daemon_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(host().args(["status", "--pid"]).arg(dir.path().join("none.pid")));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("no li3g daemon is running"), "{}", out.stderr);
}

/// `/proc/PID/cmdline` up to its first NUL, and `comm`.
fn title(pid: u32) -> (String, String) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let end = cmdline.iter().position(|&b| b == 0).unwrap_or(cmdline.len());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    (String::from_utf8_lossy(&cmdline[..end]).into_owned(), comm.trim().to_string())
}

#[test]
fn children_have_titles_in_ps() {
    let pool = Pool::start(1);
    // A child sets its title in its first steps after the fork, and a worker says `idle` once
    // its plugins are loaded, which on a loaded machine may come after its registration that
    // `Pool::start` waited for: await the titles, do not sample them once.
    let titles =
        || -> Vec<(String, String)> { li3g_tests::children(pool.daemon.id()).into_iter().map(title).collect() };
    let has =
        |titles: &[(String, String)], cmdline: &str, comm: &str| titles.iter().any(|(t, c)| t == cmdline && c == comm);
    wait_until_ok("the children's titles", WAIT, Duration::from_millis(20), || {
        let titles = titles();
        if has(&titles, "li3g-host: worker 1 idle", "li3g worker 1")
            && has(&titles, "li3g-host: scheduler", "li3g scheduler")
        {
            Ok(())
        } else {
            Err(format!("{titles:?}"))
        }
    });
    let worker =
        li3g_tests::children(pool.daemon.id()).into_iter().find(|&pid| title(pid).1 == "li3g worker 1").unwrap();
    // gearmand counts the job running once it handed it out; the worker retitles itself once
    // it took it: await that too (the job lasts long enough to be seen on a loaded machine).
    let slow = crate::daemon::sleep_in_flight(&pool.gearmands[0], 5.0);
    wait_until_ok("busy in the title", WAIT, Duration::from_millis(20), || {
        let (cmdline, _) = title(worker);
        if cmdline == "li3g-host: worker 1 busy Misbehave::sleep" {
            Ok(())
        } else {
            Err(cmdline)
        }
    });
    slow.join().unwrap().unwrap();
    wait_until("idle again", WAIT, || title(worker).0 == "li3g-host: worker 1 idle");
}

#[test]
fn restarts_are_counted_per_kind_and_reason() {
    let pool = Pool::start_with(1, &["--resuscitate"]);
    let worker = |report: &Value| {
        report["children"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "worker")
            .map(|c| c["pid"].as_u64().unwrap())
    };
    let victim = worker(&pool.json()).unwrap();
    // SAFETY: kill(2) on a worker of our own daemon.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait_until("a new worker has the slot", WAIT, || worker(&pool.json()).is_some_and(|pid| pid != victim));
    let report = pool.json();
    let restarts = report["restarts"].as_array().unwrap();
    assert!(restarts.iter().any(|r| r["kind"] == "worker" && r["reason"] == "killed" && r["count"] == 1), "{report}");
    assert!(pool.status(&[]).stdout.contains("Restarts: worker killed 1"));
}
