//! The Redis scheduler under faults: a scheduler SIGKILLed between taking a batch and
//! submitting it, then Redis (durable: append-only file, fsync per write) SIGKILLed and
//! restarted under the scheduler that took over.

use super::*;
use li3g_host::scheduler::record::unique_for;
use li3g_host::scheduler::{Record, Schedule};
use li3g_tests::{Lines, Redis};
use std::time::SystemTime;

const JOBS: usize = 3000;
const WORKERS: usize = 4;
/// The scheduler's lease (seconds): a taken batch is taken over this long after its scheduler died.
const LEASE: u64 = 2;

fn scheduler(config: &Path, env: &[(&str, &str)]) -> (ChildGuard, Lines) {
    let mut command = host();
    command.args(["scheduler", "--verbose", "--config"]).arg(config).stdout(Stdio::null());
    command.stderr(Stdio::piped()).envs(env.iter().copied());
    let mut child = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(child.child().stderr.take().unwrap());
    (child, lines)
}

/// **The scheduler loses nothing: at-least-once.** A scheduler SIGKILLed after taking a batch
/// and before submitting it leaves the batch leased in Redis; another scheduler takes it over
/// when the lease runs out. Redis SIGKILLed and restarted on its append-only file loses no
/// scheduled job. A job submitted but not yet acknowledged when Redis died is submitted again
/// after its lease: duplicated ≤ one batch (1000) per Redis restart.
#[test]
fn a_scheduler_sigkilled_mid_batch_and_redis_restarted_lose_nothing() {
    let case = "scheduler SIGKILLed mid-batch + Redis SIGKILLed";
    let server = gearmand();
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = on_a_free_port("redis-server", |port| Redis::try_durable_on(port, redis_dir.path()));
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    let config_path = plugins.path().join("li3g.toml");
    std::fs::write(
        &config_path,
        format!(
            "[default]\nservers = [\"{}\"]\nredis = \"{}\"\nplugins = \"{}\"\n\n[default.scheduler]\nlease = {LEASE}\n",
            server.addr(),
            redis.url(),
            plugins.path().display()
        ),
    )
    .unwrap();
    let config = li3g_host::config::load(Some(&config_path), "default", None).unwrap();

    // Due over the next 6 s, so the faults land while jobs are still scheduled.
    let now = SystemTime::now();
    let records = append_records(&ledger, JOBS);
    let due: Vec<SystemTime> = (0..JOBS).map(|i| now + Duration::from_millis(2 * i as u64)).collect();
    Schedule::open(config.redis.as_deref().unwrap(), &config.scheduler).unwrap().schedule_many(&records, &due).unwrap();

    let _pool: Vec<ChildGuard> = (0..WORKERS)
        .map(|_| {
            ChildGuard::spawn(
                host().args(["work", "--config"]).arg(&config_path).stdout(Stdio::null()).stderr(Stdio::null()),
            )
        })
        .collect();

    let (mut first, log) = scheduler(&config_path, &[(li3g_host::scheduler::run::STOP_AFTER_TAKE_ENV, "1")]);
    let took = log.wait_for("stopping before submitting them", DRAIN);
    first.kill();
    let taken: usize = took.split("Took ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();

    let (second, second_log) = scheduler(&config_path, &[]);
    wait_until("the second scheduler moves jobs", DRAIN, || ledger.lines() >= JOBS / 3);
    let port = redis.port;
    redis.kill();
    let _redis = restart_on(port, |p| Redis::try_durable_on(p, redis_dir.path()));
    assert!(ledger.count(0..JOBS).completed < JOBS, "{case}: Redis was killed after every job ran");

    let count = ledger.drained(0..JOBS, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    report(case, count, &format!("batch of {taken} taken by the killed scheduler"));
    assert!(taken > 0, "{case}: the first scheduler took a batch");
    assert!(alive(second.id()), "{case}: the scheduler rode out the Redis restart: {:#?}", second_log.all());
    assert!(count.duplicated <= 1000, "{case}: at most one batch runs twice per Redis restart: {}", count.duplicated);
}

/// A configuration of `server`, `redis` and the misbehave plugin with a short lease.
fn write_config(path: &Path, server: &str, redis: &str, plugins: &Path, lease: f64) {
    std::fs::write(
        path,
        format!(
            "[default]\nservers = [\"{server}\"]\nredis = \"{redis}\"\nplugins = \"{}\"\n\n[default.scheduler]\nlease = {lease}\n",
            plugins.display()
        ),
    )
    .unwrap();
}

/// The records of `Misbehave::append(ledger, i)` for `i` in `0..jobs`, each with a new id.
fn append_records(ledger: &Ledger, jobs: usize) -> Vec<Record> {
    (0..jobs)
        .map(|i| {
            let id = li3g_host::job_id::generate();
            let args = serde_json::json!([ledger.path.display().to_string(), i.to_string()]);
            Record {
                unique: unique_for(&id, 0),
                workload: String::from_utf8(li3g_host::workload::encode(&args, &id, None)).unwrap(),
                id,
                function: APPEND.into(),
                priority: Default::default(),
                retry: 0,
            }
        })
        .collect()
}

/// Schedules `Misbehave::append(ledger, i)` for `i` in `0..jobs`, all due at `due`.
fn schedule_appends(config: &Path, ledger: &Ledger, jobs: usize, due: SystemTime) {
    let config = li3g_host::config::load(Some(config), "default", None).unwrap();
    let records = append_records(ledger, jobs);
    Schedule::open(config.redis.as_deref().unwrap(), &config.scheduler)
        .unwrap()
        .schedule_many(&records, &vec![due; jobs])
        .unwrap();
}

fn workers(config: &Path, n: usize) -> Vec<ChildGuard> {
    (0..n)
        .map(|_| {
            ChildGuard::spawn(host().args(["work", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::null()))
        })
        .collect()
}

/// The counted summary of a scheduler case: scheduled, run, duplicated, lost.
fn report_runs(case: &str, scheduled: usize, count: Count) {
    let lost = count.submitted - count.completed;
    println!(
        "{case}: scheduled {scheduled}, run {}, duplicated {}, lost {lost}",
        count.completed + count.duplicated,
        count.duplicated
    );
    assert_eq!(count.strangers, 0, "{case}: the ledger holds lines no job wrote");
    assert_eq!(lost, 0, "{case}: jobs lost");
    assert_eq!(count.duplicated, 0, "{case}: jobs ran twice");
}

/// **Fencing: gearmand down longer than the lease, three schedulers, no job twice.** 300 jobs
/// due while gearmand is down for eight leases: the scheduler holding them renews their lease
/// while it retries, the others find nothing to take, and once gearmand is back each job runs
/// exactly once.
#[test]
fn gearmand_down_longer_than_the_lease_with_three_schedulers_runs_each_job_once() {
    const JOBS: usize = 300;
    const LEASE: f64 = 1.0;
    let case = "gearmand down for 8 leases, 3 schedulers";
    let server = gearmand();
    let port = server.port;
    let redis = Redis::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    let config = plugins.path().join("li3g.toml");
    write_config(&config, &server.addr(), &redis.url(), plugins.path(), LEASE);
    let schedulers: Vec<(ChildGuard, Lines)> = (0..3).map(|_| scheduler(&config, &[])).collect();
    for (_, log) in &schedulers {
        log.wait_for("Moving due jobs", DRAIN);
    }
    server.kill();
    schedule_appends(&config, &ledger, JOBS, SystemTime::now());
    wait_until("a scheduler fails to submit", DRAIN, || {
        schedulers.iter().any(|(_, log)| log.count("Cannot submit to a job server") > 0)
    });
    // The outage: eight leases long (the load's pacing, not synchronisation), so that
    // schedulers without fencing would each hold the batch, out of step.
    // Workers started a moment before gearmand returns connect within their first backoff
    // steps, so the jobs run as soon as the first submission is in: a stale submission by
    // another scheduler seconds later would run them again.
    std::thread::sleep(Duration::from_secs_f64(LEASE * 7.0));
    let _pool = workers(&config, 2);
    std::thread::sleep(Duration::from_secs_f64(LEASE));
    let server = restart_on(port, |p| Gearmand::try_gearmand_on(p, &[]));
    let count = ledger.drained(0..JOBS, case);
    // A scheduler still holding a stale copy of the batch submits it at its next attempt,
    // at most the longest backoff (5 s) away: give it that long to show (absence of an
    // event cannot be awaited).
    std::thread::sleep(Duration::from_secs(5));
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    let moved: Vec<usize> = schedulers.iter().map(|(_, log)| log.count("moved for immediate execution")).collect();
    println!("{case}: submissions accepted per scheduler {moved:?}");
    report_runs(case, JOBS, count);
}

/// **Fencing: a scheduler stopped past its lease drops its stale batch.** A scheduler takes
/// every job and is SIGSTOPped before submitting; another takes the jobs over after the lease
/// and runs them; SIGCONT: the first finds its leases taken and drops the batch.
#[test]
fn a_scheduler_stopped_past_its_lease_drops_its_batch_when_resumed() {
    const JOBS: usize = 300;
    let case = "scheduler SIGSTOPped past its lease, then SIGCONT";
    let server = gearmand();
    let redis = Redis::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    let config = plugins.path().join("li3g.toml");
    write_config(&config, &server.addr(), &redis.url(), plugins.path(), 1.0);
    let _pool = workers(&config, 2);
    schedule_appends(&config, &ledger, JOBS, SystemTime::now());
    let (first, first_log) = scheduler(&config, &[(li3g_host::scheduler::run::STOP_AFTER_TAKE_ENV, "1")]);
    first_log.wait_for("stopping before submitting them", DRAIN);
    let (_second, _second_log) = scheduler(&config, &[]);
    let count = ledger.drained(0..JOBS, case);
    signal(first.id(), Signal::SIGCONT);
    // It either drops its batch or (without fencing) submits it again.
    wait_until("the resumed scheduler acts on its batch", DRAIN, || {
        first_log.count("another scheduler took them") + first_log.count("moved for immediate execution") > 0
    });
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let dropped = first_log.all().into_iter().find(|l| l.contains("Dropped")).unwrap_or_default();
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    println!("{case}: {dropped}");
    report_runs(case, JOBS, count);
    assert!(alive(first.id()), "{case}: the resumed scheduler runs on");
}

/// **A retry is not lost to a Redis outage.** 100 background jobs that fail their first run,
/// with one retry each, while Redis is down: a worker does not answer a failed job until
/// Redis has its retry, so once Redis is back every job runs its retry, exactly once.
#[test]
fn redis_down_while_jobs_with_retries_fail_loses_no_retry() {
    const JOBS: usize = 100;
    const WORKERS: usize = 4;
    let case = "Redis down while 100 jobs with retries fail";
    let server = gearmand();
    let redis = Redis::start();
    let redis_port = redis.port;
    let plugins = PluginDir::with(&["misbehave"]);
    let dir = tempfile::tempdir().unwrap();
    let config = plugins.path().join("li3g.toml");
    write_config(&config, &server.addr(), &redis.url(), plugins.path(), 1.0);
    let _pool = workers(&config, WORKERS);
    let (_scheduler, _log) = scheduler(&config, &[]);
    redis.kill();

    let loaded = li3g_host::config::load(Some(&config), "default", None).unwrap();
    let mut client = li3g_host::client::Client::new(loaded.servers.clone());
    let retries = li3g_host::retry_policy::Retries { maximum: 1, increments: vec![Duration::from_millis(200)] };
    let options = li3g_host::client::RunOptions { retries: Some(retries), ..Default::default() };
    let file = |i: usize| dir.path().join(format!("job-{i}"));
    for i in 0..JOBS {
        let args = [serde_json::json!(file(i).display().to_string()), serde_json::json!(1)];
        client.run("Misbehave::flaky", &args, &options, &mut |_| {}).unwrap();
    }
    let runs = |i: usize| std::fs::read_to_string(file(i)).map(|t| t.lines().count()).unwrap_or(0);
    wait_until("a failure per worker while Redis is down", DRAIN, || {
        (0..JOBS).filter(|i| runs(*i) > 0).count() >= WORKERS
    });
    // The outage goes on a little while the workers hold their failed jobs (pacing).
    std::thread::sleep(Duration::from_secs(1));
    let failed_while_down = (0..JOBS).filter(|i| runs(*i) > 0).count();
    let _redis = restart_on(redis_port, Redis::try_start_on);

    // Not an assertion: the count below says how many completed.
    li3g_tests::poll_until(DRAIN, Duration::from_millis(50), || (0..JOBS).all(|i| runs(i) >= 2));
    wait_until("gearmand holds no job", DRAIN, || held(&server, "Misbehave::flaky") == 0);
    let completed = (0..JOBS).filter(|i| runs(*i) >= 2).count();
    let duplicated: usize = (0..JOBS).map(|i| runs(i).saturating_sub(2)).sum();
    println!("{case}: {failed_while_down} failed while Redis was down");
    // A job's two runs (the failure and its retry) are one scheduled job run as planned.
    report_runs(case, JOBS, Count { submitted: JOBS, completed, duplicated, strangers: 0 });
}
