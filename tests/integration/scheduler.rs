//! The Redis scheduler (`li3g-host scheduler`) with a real redis-server and gearmand: on
//! time, never lost (SIGKILL, Redis restart), never twice (two schedulers), retries and the
//! dead set, and li3_gearman's scheduled members and status keys.

use li3g_host::client::{Outcome, RunOptions};
use li3g_host::config::Config;
use li3g_host::scheduler::record::unique_for;
use li3g_host::scheduler::{Record, Schedule};
use li3g_tests::Worker;
use li3g_tests::{host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, Lines, PluginDir, Redis};
use li3g_tests::{signal, Signal};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

const APPEND: &str = "Misbehave::append";
const LONG: Duration = Duration::from_secs(60);

/// gearmand, redis-server, the misbehave plugin and a configuration naming them.
struct Setup {
    gearmand: Option<Gearmand>,
    redis: Option<Redis>,
    _plugins: PluginDir,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    /// How many workers [`Setup::worker`] started, so it waits until the server lists them all.
    workers: std::cell::Cell<u64>,
}

impl Setup {
    fn new() -> Setup {
        let gearmand = Gearmand::start();
        let redis = Redis::start();
        let plugins = PluginDir::with(&["misbehave"]);
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("li3g.toml");
        std::fs::write(
            &config_path,
            format!(
                "[default]\nservers = [\"{}\"]\nredis = \"{}\"\nplugins = \"{}\"\n\n[default.scheduler]\nlease = 2\n",
                gearmand.addr(),
                redis.url(),
                plugins.path().display()
            ),
        )
        .unwrap();
        Setup {
            gearmand: Some(gearmand),
            redis: Some(redis),
            _plugins: plugins,
            dir,
            config_path,
            workers: std::cell::Cell::new(0),
        }
    }

    fn gearmand(&self) -> &Gearmand {
        self.gearmand.as_ref().unwrap()
    }

    fn config(&self) -> Config {
        li3g_host::config::load(Some(&self.config_path), "default", None).unwrap()
    }

    fn store(&self) -> Schedule {
        let config = self.config();
        Schedule::open(config.redis.as_deref().unwrap(), &config.scheduler).unwrap()
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.as_ref().unwrap().url()).unwrap().get_connection().unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn worker(&self) -> ChildGuard {
        self.workers.set(self.workers.get() + 1);
        Worker::builder::<&str>(&[])
            .config(&self.config_path)
            .registered(&[self.gearmand()], APPEND, self.workers.get())
            .spawn()
    }

    /// A worker with `--verbose`, registered, its log lines collected.
    fn verbose_worker(&self) -> (ChildGuard, Lines) {
        let mut command = host();
        command.args(["work", "--verbose", "--config"]).arg(&self.config_path).stdout(Stdio::null());
        let mut child = ChildGuard::spawn(command.stderr(Stdio::piped()));
        wait_for_workers(&[self.gearmand()], APPEND, 1);
        let lines = Lines::collect(child.child().stderr.take().unwrap());
        (child, lines)
    }

    /// Waits until Redis holds no job of the default prefix: none scheduled, leased or stored.
    fn wait_schedule_empty(&self) {
        let mut redis = self.redis();
        wait_until("the schedule is empty", LONG, || {
            let (s, l, j): (u64, u64, u64) = redis::pipe()
                .zcard("{li3g}:scheduled")
                .zcard("{li3g}:leased")
                .hlen("{li3g}:jobs")
                .query(&mut redis)
                .unwrap();
            s + l + j == 0
        });
    }

    /// A scheduler with `--verbose`, its log lines collected.
    fn scheduler(&self, env: &[(&str, &str)]) -> (ChildGuard, Lines) {
        let mut command = host();
        command.args(["scheduler", "--verbose", "--config"]).arg(&self.config_path).stdout(Stdio::null());
        command.stderr(Stdio::piped()).envs(env.iter().copied());
        let mut child = ChildGuard::spawn(&mut command);
        let lines = Lines::collect(child.child().stderr.take().unwrap());
        lines.wait_for("Moving due jobs", LONG);
        (child, lines)
    }

    fn li3g(&self, args: &[&str]) -> li3g_tests::Run {
        run(host().args(args).arg("--config").arg(&self.config_path))
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A job appending `line` to `path`, as the client stores it.
fn append_record(path: &Path, line: &str) -> Record {
    let id = li3g_host::job_id::generate();
    let args = json!([path.display().to_string(), line]);
    Record {
        unique: unique_for(&id, 0),
        workload: String::from_utf8(li3g_host::workload::encode(&args, &id, None)).unwrap(),
        id,
        function: APPEND.into(),
        priority: Default::default(),
        retry: 0,
    }
}

fn schedule(setup: &Setup, path: &Path, line: &str, at: SystemTime) -> String {
    let options = RunOptions { schedule: Some(at), ..RunOptions::default() };
    let args = [json!(path.display().to_string()), json!(line)];
    match li3g_host::client::for_config(&setup.config()).run(APPEND, &args, &options, &mut |_| {}).unwrap() {
        Outcome::Scheduled { id, .. } | Outcome::Queued { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn on_time_at_once_and_cancelled_never() {
    let setup = Setup::new();
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);

    // One second ahead: runs then, not before, not much after (loosely: the machine is loaded).
    let ahead = setup.file("ahead");
    let due = SystemTime::now() + Duration::from_secs(1);
    let id = schedule(&setup, &ahead, "ahead", due);
    assert_eq!(id.len(), 32);
    wait_until("the job scheduled 1 s ahead runs", LONG, || lines(&ahead).len() == 1);
    let ran = mtime(&ahead);
    assert!(ran + Duration::from_millis(20) >= due, "ran {:?} early", due.duration_since(ran).unwrap_or_default());
    let late = ran.duration_since(due).unwrap_or_default();
    assert!(late < Duration::from_millis(1500), "ran {late:?} late");
    log.wait_for(&format!("Job #{id} moved for immediate execution"), LONG);

    // In the past: at once.
    let past = setup.file("past");
    let before = SystemTime::now();
    schedule(&setup, &past, "past", before - Duration::from_secs(3600));
    wait_until("the job scheduled in the past runs", LONG, || lines(&past).len() == 1);
    assert!(mtime(&past).duration_since(before).unwrap_or_default() < Duration::from_secs(5));

    // Cancelled: never runs, while a job due after it does.
    let cancelled = setup.file("cancelled");
    let marker = setup.file("marker");
    let now = SystemTime::now();
    let victim = schedule(&setup, &cancelled, "cancelled", now + Duration::from_secs(2));
    schedule(&setup, &marker, "marker", now + Duration::from_millis(2500));
    let listed = setup.li3g(&["scheduled"]);
    assert!(listed.stdout.contains(&victim) && listed.stdout.contains(APPEND), "{}", listed.stdout);
    let out = setup.li3g(&["cancel", &victim]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(setup.li3g(&["cancel", &victim]).code, Some(1), "a second cancel finds nothing");
    assert!(!setup.li3g(&["scheduled"]).stdout.contains(&victim));
    wait_until("the marker due after the cancelled job runs", LONG, || lines(&marker).len() == 1);
    assert!(lines(&cancelled).is_empty(), "the cancelled job ran");

    // Only background jobs can be scheduled.
    let sync = RunOptions { background: false, schedule: Some(now), ..RunOptions::default() };
    let err = li3g_host::client::for_config(&setup.config()).run(APPEND, &[], &sync, &mut |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "only background jobs can be scheduled");
    let out = setup.li3g(&["run", APPEND, "x", "y", "--sync", "--in", "5s"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
}

#[test]
fn the_cli_schedules_with_at_and_in() {
    let setup = Setup::new();
    let path = setup.file("cli");
    let out = setup.li3g(&["run", APPEND, &path.display().to_string(), "in", "--in", "90s"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = out.stdout.strip_prefix("scheduled job ").and_then(|r| r.split(' ').next()).unwrap().to_string();
    let out = setup.li3g(&["run", APPEND, &path.display().to_string(), "at", "--at", "2099-12-01T10:00:00Z"]);
    assert!(out.stdout.ends_with("for 2099-12-01T10:00:00Z\n"), "{}", out.stdout);
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(
        listed.contains("Pending: 2") && listed.contains(&id) && listed.contains("2099-12-01T10:00:00.000Z"),
        "{listed}"
    );
    let out = setup.li3g(&["run", APPEND, "--at", "tomorrow"]);
    assert_ne!(out.code, Some(0));
    // Without Redis: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let out = run(host().args(["scheduler", "--servers", &setup.gearmand().addr()]).current_dir(empty.path()));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no redis URL is configured"), "{}", out.stderr);
    // `run --in` without Redis: the job server keeps the job (SUBMIT_JOB_EPOCH).
    let out = run(host()
        .args(["run", APPEND, "--in", "5m", "--servers", &setup.gearmand().addr()])
        .current_dir(empty.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("scheduled job "), "{}", out.stdout);
    let status = setup.li3g(&["status", &id]);
    assert!(status.stdout.starts_with("pending (expires in "), "{}", status.stdout);
}

#[test]
fn ten_thousand_jobs_due_at_once_with_two_schedulers_run_exactly_once() {
    let setup = Setup::new();
    let count = 10_000;
    let path = setup.file("counter");
    let records: Vec<Record> = (0..count).map(|i| append_record(&path, &format!("job {i}"))).collect();
    let due = SystemTime::now() + Duration::from_secs(2);
    setup.store().schedule_many(&records, &vec![due; count]).unwrap();
    let (_a, log_a) = setup.scheduler(&[]);
    let (_b, log_b) = setup.scheduler(&[]);
    let _workers = [setup.worker(), setup.worker()];
    wait_until("every job ran", Duration::from_secs(120), || lines(&path).len() >= count);
    // Nothing left anywhere that could run a job again.
    setup.wait_schedule_empty();
    wait_until("gearmand has no job left", LONG, || {
        setup.gearmand().status().iter().filter(|f| f.function == APPEND).all(|f| f.total == 0)
    });
    let ran = lines(&path);
    let distinct: HashSet<&String> = ran.iter().collect();
    assert_eq!((ran.len(), distinct.len()), (count, count), "every job exactly once");
    let moved = log_a.count("moved for immediate execution") + log_b.count("moved for immediate execution");
    assert_eq!(moved, count, "each job moved by exactly one scheduler");
}

#[test]
fn a_scheduler_killed_after_taking_a_batch_is_taken_over_after_the_lease() {
    let setup = Setup::new();
    let path = setup.file("taken");
    let records: Vec<Record> = (0..50).map(|i| append_record(&path, &format!("job {i}"))).collect();
    setup.store().schedule_many(&records, &vec![SystemTime::now(); 50]).unwrap();
    let _worker = setup.worker();
    let (mut first, log) = setup.scheduler(&[(li3g_host::scheduler::run::STOP_AFTER_TAKE_ENV, "1")]);
    log.wait_for("Took 50 jobs; stopping before submitting them", LONG);
    let pid = first.id();
    wait_until("the scheduler is stopped", LONG, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T')
    });
    first.kill();
    let taken_at = SystemTime::now();
    let mut redis = setup.redis();
    let leased: u64 = redis::cmd("ZCARD").arg("{li3g}:leased").query(&mut redis).unwrap();
    assert_eq!(leased, 50, "the batch is leased, not lost");
    assert!(lines(&path).is_empty(), "nothing was submitted");

    let (_second, log) = setup.scheduler(&[]);
    wait_until("the other scheduler moved every job", LONG, || lines(&path).len() >= 50);
    assert!(mtime(&path) >= taken_at + Duration::from_secs(1), "taken over before the 2 s lease ran out");
    let ran = lines(&path);
    assert_eq!(ran.iter().collect::<HashSet<_>>().len(), 50);
    // The scheduler logs a move when the job server's JOB_CREATED comes back, which may be
    // after the worker ran the job: wait for the lines, then count them.
    wait_until("the scheduler logged every move", LONG, || log.count("moved for immediate execution") >= 50);
    assert_eq!(log.count("moved for immediate execution"), 50);
}

#[test]
fn redis_restarted_under_a_running_scheduler() {
    let mut setup = Setup::new();
    let _worker = setup.worker();
    let (scheduler, log) = setup.scheduler(&[]);
    let before = setup.file("before");
    schedule(&setup, &before, "before", SystemTime::now() + Duration::from_millis(300));
    wait_until("a job runs before the restart", LONG, || lines(&before).len() == 1);

    let redis = setup.redis.take().unwrap();
    let port = redis.port;
    redis.kill();
    log.wait_for("Cannot take due jobs", LONG);
    setup.redis = Some(Redis::start_on(port));
    log.wait_for("Redis is back", LONG);
    let after = setup.file("after");
    for i in 0..20 {
        schedule(&setup, &after, &format!("after {i}"), SystemTime::now() + Duration::from_millis(500));
    }
    wait_until("every job scheduled after the restart runs", LONG, || lines(&after).len() == 20);
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up");
}

/// The id printed by `run` (`queued job ID as H:...`).
fn queued_id(out: &li3g_tests::Run) -> String {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.strip_prefix("queued job ").and_then(|r| r.split(' ').next()).unwrap().to_string()
}

#[test]
fn retries_then_the_dead_set_and_back() {
    let setup = Setup::new();
    let _worker = setup.worker();
    let (_scheduler, _log) = setup.scheduler(&[]);

    // Fails twice, succeeds the third time: with 3 retries it runs three times.
    let flaky = setup.file("flaky");
    let flaky_path = flaky.display().to_string();
    let id = queued_id(&setup.li3g(&[
        "run",
        "Misbehave::flaky",
        &flaky_path,
        "2",
        "--retries",
        "3",
        "--retry-delays",
        "100ms",
    ]));
    wait_until("the job finishes", LONG, || setup.li3g(&["status", &id]).stdout.starts_with("finished"));
    assert_eq!(lines(&flaky).len(), 3);

    // With 1 retry it fails twice and goes to the dead set with its last error.
    let doomed = setup.file("doomed");
    let doomed_path = doomed.display().to_string();
    let id = queued_id(&setup.li3g(&[
        "run",
        "Misbehave::flaky",
        &doomed_path,
        "5",
        "--retries",
        "1",
        "--retry-delays",
        "100ms",
    ]));
    let dead_line = |text: &str| setup.li3g(&["scheduled"]).stdout.lines().any(|l| l.contains(&id) && l.contains(text));
    wait_until("the job is dead", LONG, || dead_line("error: failure 2 of 5"));
    assert_eq!(lines(&doomed).len(), 2);
    let status = setup.li3g(&["status", &id]).stdout;
    assert!(status.starts_with("dead: failure 2 of 5"), "{status}");
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(listed.contains("Dead: 1") && listed.contains("retry 1"), "{listed}");

    // `retry` brings it back: it runs once more (no retries left) and dies again.
    let out = setup.li3g(&["retry", &id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    wait_until("the requeued job ran and died again", LONG, || dead_line("error: failure 3 of 5"));
    assert_eq!(lines(&doomed).len(), 3);
    assert_eq!(setup.li3g(&["retry", "no-such-job"]).code, Some(1));
}

#[test]
fn li3_gearman_members_are_moved_and_status_reads_as_the_original_reads_it() {
    let setup = Setup::new();
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("php");
    // Exactly as li3_gearman's Gearman::schedule writes it: json_encode (slashes escaped),
    // ZADD job_scheduled <UTC epoch seconds> <member>.
    let id = "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33";
    let workload = json!({
        "id": id, "args": [path.display().to_string(), "from php"],
        "env": {"environment": "production", "HTTP_HOST": "example.com"},
        "configName": "default", "task": "\\Misbehave::append", "background": true, "retry": 0, "retries": [],
    });
    let member = json!({"id": id, "action": "doHighBackground", "workload": workload, "options": {"schedule": 1}})
        .to_string()
        .replace('/', "\\/");
    let mut redis = setup.redis();
    let past = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() - 5;
    let _: () = redis::cmd("ZADD").arg("job_scheduled").arg(past).arg(&member).query(&mut redis).unwrap();
    let _: () = redis::cmd("ZADD").arg("job_scheduled").arg(past).arg("not json").query(&mut redis).unwrap();
    wait_until("the li3_gearman job runs", LONG, || lines(&path) == ["from php"]);
    log.wait_for(&format!("Job #{id} moved for immediate execution"), LONG);
    let left: u64 = redis::cmd("ZCARD").arg("job_scheduled").query(&mut redis).unwrap();
    assert_eq!(left, 0);

    // getStatus: GET <prefix><id>.status, and it really expires.
    wait_until("the status is finished", LONG, || {
        redis::cmd("GET").arg(format!("{{li3g}}:{id}.status")).query::<Option<String>>(&mut redis).unwrap().as_deref()
            == Some("finished")
    });
    let ttl: i64 = redis::cmd("TTL").arg(format!("{{li3g}}:{id}.status")).query(&mut redis).unwrap();
    assert!(ttl > 0 && ttl <= 86400, "ttl {ttl}");

    // A future member is listed, and cancelled by its id.
    let future = member.replace(id, "62cdb7020ff920e5aa642c3d4066950dd1f01f4d");
    let _: () = redis::cmd("ZADD").arg("job_scheduled").arg(past + 3600).arg(&future).query(&mut redis).unwrap();
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(
        listed.lines().any(|l| l.contains("62cdb7020ff920e5aa642c3d4066950dd1f01f4d") && l.contains("li3_gearman")),
        "{listed}"
    );
    assert_eq!(setup.li3g(&["cancel", "62cdb7020ff920e5aa642c3d4066950dd1f01f4d"]).code, Some(0));
    let left: u64 = redis::cmd("ZCARD").arg("job_scheduled").query(&mut redis).unwrap();
    assert_eq!(left, 0);

    // An unreadable member goes to the dead set with why.
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(listed.contains("Dead: 1") && listed.contains("not a li3g job nor a li3_gearman member"), "{listed}");
}

#[test]
fn start_supervises_a_scheduler_when_redis_is_configured() {
    let setup = Setup::new();
    let start = |extra: &[&str]| {
        let mut command = host();
        command.args(["start", "--workers", "1", "--resuscitate", "--verbose", "--config"]).arg(&setup.config_path);
        command.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut daemon = ChildGuard::spawn(&mut command);
        let lines = Lines::collect(daemon.child().stderr.take().unwrap());
        (daemon, lines)
    };
    let (mut daemon, log) = start(&[]);
    log.wait_for("(Scheduler) Moving due jobs", LONG);
    wait_for_workers(&[setup.gearmand()], APPEND, 1);
    let path = setup.file("started");
    let id = schedule(&setup, &path, "started", SystemTime::now() + Duration::from_millis(500));
    wait_until("the job runs", LONG, || lines(&path).len() == 1);
    log.wait_for(&format!("Job #{id} moved for immediate execution"), LONG);

    // A scheduler that dies is replaced.
    let line = log.wait_for("Created scheduler", LONG);
    let pid: u32 = line.rsplit("PID ").next().and_then(|p| p.trim().parse().ok()).expect(&line);
    signal(pid, Signal::SIGKILL);
    wait_until("a new scheduler", LONG, || log.count("(Scheduler) Moving due jobs") == 2);
    let again = setup.file("again");
    schedule(&setup, &again, "again", SystemTime::now() + Duration::from_millis(300));
    wait_until("the job runs", LONG, || lines(&again).len() == 1);
    signal(daemon.id(), Signal::SIGTERM);
    assert!(daemon.wait_timeout(LONG).is_some(), "the daemon stops");

    let (_daemon, log) = start(&["--no-scheduler"]);
    wait_for_workers(&[setup.gearmand()], APPEND, 1);
    log.wait_for("Created worker", LONG);
    assert_eq!(log.count("Created scheduler") + log.count("(Scheduler)"), 0, "{:#?}", log.all());
}

#[test]
fn gearmand_restarted_under_a_running_scheduler_loses_nothing() {
    let mut setup = Setup::new();
    let (scheduler, log) = setup.scheduler(&[]);
    let gearmand = setup.gearmand.take().unwrap();
    let port = gearmand.port;
    gearmand.kill();
    let path = setup.file("while-down");
    for i in 0..20 {
        schedule(&setup, &path, &format!("job {i}"), SystemTime::now() + Duration::from_millis(300));
    }
    log.wait_for("Cannot submit to a job server", LONG);
    let mut redis = setup.redis();
    let held: (u64, u64) = redis::pipe().zcard("{li3g}:scheduled").zcard("{li3g}:leased").query(&mut redis).unwrap();
    assert_eq!(held.0 + held.1, 20, "the jobs wait in Redis");
    setup.gearmand = Some(Gearmand::start_on(port));
    let _worker = setup.worker();
    wait_until("every job runs once gearmand is back", LONG, || lines(&path).len() >= 20);
    assert_eq!(lines(&path).iter().collect::<HashSet<_>>().len(), 20);
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up");
}

#[path = "scheduler_durability.rs"]
mod durability;

#[path = "scheduler_redis.rs"]
mod redis_setups;

#[path = "scheduler_in_flight.rs"]
mod in_flight;

/// A Rust service with li3g-client alone (feature `redis`): `Client::from_config` reads the
/// configuration, schedules a job 1 s ahead in its Redis, a running daemon's scheduler moves it,
/// a worker runs it, and the client reads its status. Only `li3g_client` calls schedule and read.
#[test]
fn li3g_client_alone_schedules_in_redis_and_reads_status() {
    let setup = Setup::new();
    let mut command = host();
    command.args(["start", "--workers", "1", "--verbose", "--config"]).arg(&setup.config_path);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let log = Lines::collect(daemon.child().stderr.take().unwrap());
    log.wait_for("(Scheduler) Moving due jobs", LONG);
    wait_for_workers(&[setup.gearmand()], APPEND, 1);

    let path = setup.file("from-the-client");
    let config = setup.config_path.display().to_string();
    let mut client = temp_env_client(&config);
    let submitted = client
        .job(APPEND, (path.display().to_string(), "scheduled by li3g-client"))
        .after(Duration::from_secs(1))
        .submit()
        .unwrap();
    let li3g_client::Submitted::Scheduled { id, .. } = submitted else { panic!("{submitted:?}") };
    // In Redis, not in the job server: pending until the scheduler moves it.
    assert_eq!(client.status(&id).unwrap().as_deref(), Some("pending"));
    assert!(setup.store().pending().unwrap().iter().any(|p| p.id == id), "the scheduler's schedule has it");
    wait_until("the job runs", LONG, || lines(&path) == ["scheduled by li3g-client"]);
    log.wait_for(&format!("Job #{id} moved for immediate execution"), LONG);
    wait_until("the client reads it finished", LONG, || client.status(&id).unwrap().as_deref() == Some("finished"));
    assert_eq!(client.status("no-such-job").unwrap(), None);
    signal(daemon.id(), Signal::SIGTERM);
    assert!(daemon.wait_timeout(LONG).is_some(), "the daemon stops");
}

/// `Client::from_config("default")` with `LI3G_CONFIG` naming `config`, read the way a service
/// reads it (the variable only for this call: tests run in parallel).
fn temp_env_client(config: &str) -> li3g_client::Client {
    let target = li3g_client::config::from_vars("default", |var| {
        (var == li3g_client::config::CONFIG_VAR).then(|| config.to_string())
    })
    .unwrap();
    li3g_client::Client::from_target(&target)
}
