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
    let records: Vec<Record> = (0..JOBS)
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
        .collect();
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
