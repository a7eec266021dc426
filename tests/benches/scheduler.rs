//! The Redis scheduler against li3_gearman's way of moving due jobs, in the same run, on the
//! same redis-server and gearmand:
//!
//! 1. **Move rate.** `JOBS` jobs (default 50,000) all due, moved into gearmand by one
//!    `li3g-host scheduler` (release build: Lua-leased batches of 1000, pipelined
//!    submissions), timed from the moment they all become due until the last is
//!    acknowledged. Then the original's method written here in Rust over the same crates
//!    (faster than the PHP it was): per job `WATCH`, `ZRANGEBYSCORE ... LIMIT 0 1`, `MULTI`, `ZREM`,
//!    `EXEC`, then one `SUBMIT_JOB_BG` waiting for `JOB_CREATED`, over `ORIGINAL_JOBS` jobs
//!    (default 5,000); and the original itself, that loop in PHP with phpredis and the gearman
//!    extension (`tests/peers/li3_gearman_scheduler_move.php`).
//! 2. **Lateness**, due time to the job server's `JOB_CREATED` (the scheduler's per-job
//!    `--verbose` line, stamped as it arrives on a pipe): 2,000 jobs scheduled ahead, spread
//!    over 4 s, and 200 jobs each scheduled 0–100 ms ahead while the scheduler sleeps (the
//!    pub/sub wake-up path). The original polled every 30 s: 15 s late on average by design.
//!
//! Goals (issue 9): at least 50,000 jobs/s and 20x the original's rate; lateness p99 < 50 ms.
//! Run: `cargo bench -p li3g-tests --bench scheduler`.

use li3g_host::config::SchedulerSettings;
use li3g_host::gearman::client::{GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::scheduler::record::unique_for;
use li3g_host::scheduler::{Record, Schedule};
use li3g_tests::{release_build, wait_until, ChildGuard, Gearmand, Redis};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FUNCTION: &str = "Bench::noop";

fn record(i: usize) -> Record {
    let id = format!("{:032x}", (i as u128) * 0x9e37_79b9_7f4a_7c15 + 1);
    Record {
        unique: unique_for(&id, 0),
        workload: format!(r#"{{"args":[{i}],"id":"{id}","background":true,"retry":0,"retries":[]}}"#),
        id,
        function: FUNCTION.into(),
        priority: Default::default(),
        retry: 0,
    }
}

fn epoch_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The scheduler (release build) with its per-job lines stamped on arrival.
struct Scheduler {
    _child: ChildGuard,
    moved: Arc<Mutex<HashMap<String, SystemTime>>>,
}

fn scheduler(host: &std::path::Path, redis: &Redis, gearmand: &Gearmand, verbose: bool) -> Scheduler {
    let mut child = ChildGuard::spawn(
        Command::new(host)
            .args(["scheduler", "--servers", &gearmand.addr()])
            .args(verbose.then_some("--verbose"))
            .arg("--config")
            .arg(config_file(redis))
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = child.child().stderr.take().unwrap();
    let moved = Arc::new(Mutex::new(HashMap::new()));
    let sink = moved.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let now = SystemTime::now();
            if let Some(rest) = line.split("Job #").nth(1) {
                if let Some(id) = rest.strip_suffix(" moved for immediate execution") {
                    sink.lock().unwrap().insert(id.to_string(), now);
                }
            } else if line.contains("Moving due jobs") {
                let _ = ready_tx.send(());
            }
        }
    });
    if verbose {
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("the scheduler starts");
    }
    // Ready once it listens for wake-ups.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    wait_until("the scheduler subscribes", Duration::from_secs(30), || {
        let subscribers: (String, u64) = redis::cmd("PUBSUB").arg("NUMSUB").arg("li3g:wake").query(&mut conn).unwrap();
        subscribers.1 == 1
    });
    Scheduler { _child: child, moved }
}

fn config_file(redis: &Redis) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("li3g-bench-scheduler-{}.toml", std::process::id()));
    std::fs::write(&path, format!("[default]\nredis = \"{}\"\n", redis.url())).unwrap();
    path
}

fn main() {
    let jobs: usize = std::env::var("JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(50_000);
    let original_jobs: usize = std::env::var("ORIGINAL_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let host = release_build().join("li3g-host");
    let redis = Redis::start();
    let gearmand = Gearmand::start();
    let mut store = Schedule::open(&redis.url(), &SchedulerSettings::default()).unwrap();
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();

    let reps: usize = std::env::var("REPS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let mut rounds = Vec::new();
    for rep in 0..reps {
        rounds.push(move_rates(&host, &redis, &mut store, &mut conn, (jobs, original_jobs, rep)));
    }
    let median = |pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(pick).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (li3g_rate, original_rate, php_rate) = (median(|r| r.0), median(|r| r.1), median(|r| r.2));

    // 2. Lateness: jobs scheduled ahead, spread over 4 s; then jobs scheduled while it sleeps.
    let sched = scheduler(&host, &redis, &gearmand, true);
    let ahead = 2000;
    let base = SystemTime::now() + Duration::from_millis(500);
    let mut due_at: HashMap<String, SystemTime> = HashMap::new();
    let spread: Vec<Record> = (0..ahead).map(|i| record(1_000_000 + i)).collect();
    let dues: Vec<SystemTime> =
        (0..ahead).map(|i| base + Duration::from_micros((i as u64 * 4_000_000) / ahead as u64)).collect();
    store.schedule_many(&spread, &dues).unwrap();
    for (r, d) in spread.iter().zip(&dues) {
        due_at.insert(r.id.clone(), *d);
    }
    let woken = 200;
    let mut woken_ids = Vec::new();
    std::thread::sleep(Duration::from_millis(4800));
    for i in 0..woken {
        let r = record(2_000_000 + i);
        let d = SystemTime::now() + Duration::from_millis((i as u64 * 37) % 100);
        store.schedule(&r, d).unwrap();
        due_at.insert(r.id.clone(), d);
        woken_ids.push(r.id.clone());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("every lateness job is moved", Duration::from_secs(60), || {
        let moved = sched.moved.lock().unwrap();
        due_at.keys().all(|id| moved.contains_key(id))
    });
    let moved = sched.moved.lock().unwrap();
    let lateness = |ids: &mut dyn Iterator<Item = &String>| {
        let mut ms: Vec<f64> = ids.map(|id| epoch_ms(moved[id]) - epoch_ms(due_at[id])).collect();
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        ms
    };
    let all = lateness(&mut due_at.keys());
    let spread_ms = lateness(&mut spread.iter().map(|r| &r.id));
    let woken_ms = lateness(&mut woken_ids.iter());

    println!("Redis scheduler vs li3_gearman's move, same redis-server 7 and gearmand --threads=1, loopback\n");
    println!("move rate (due jobs into gearmand):");
    for (rep, (li3g, rust, php)) in rounds.iter().enumerate() {
        println!("  round {}: li3g {li3g:>8.0}  PHP original {php:>6.0}  Rust original {rust:>6.0} jobs/s", rep + 1);
    }
    println!("  median of {reps} rounds ({jobs} jobs for li3g, {original_jobs} for the originals):");
    println!("  li3g-host scheduler       {li3g_rate:>8.0} jobs/s");
    println!("  li3_gearman's move, PHP   {php_rate:>8.0} jobs/s");
    println!("  same move in Rust         {original_rate:>8.0} jobs/s");
    println!(
        "  ratio: {:.1}x the original (PHP), {:.1}x its method in Rust   (goals: >= 50000 jobs/s, >= 20x)",
        li3g_rate / php_rate,
        li3g_rate / original_rate
    );
    println!("\nlateness, due time to JOB_CREATED (ms):      p50      p99      max");
    for (name, ms) in
        [("scheduled ahead (2000)", &spread_ms), ("scheduled while asleep (200)", &woken_ms), ("all", &all)]
    {
        println!(
            "  {name:<30} {:>8.1} {:>8.1} {:>8.1}",
            percentile(ms, 0.5),
            percentile(ms, 0.99),
            ms.last().copied().unwrap_or(0.0)
        );
    }
    println!("  (goal: p99 < 50 ms; the original polled every 30 s)");
    let early = all.iter().filter(|&&ms| ms < -1.0).count();
    println!("  moved more than 1 ms early: {early}");
}

/// One round of the move-rate comparison; returns jobs/s of li3g, the original's method in
/// Rust, and the original in PHP.
fn move_rates(
    host: &std::path::Path,
    redis: &Redis,
    store: &mut Schedule,
    conn: &mut redis::Connection,
    (jobs, original_jobs, rep): (usize, usize, usize),
) -> (f64, f64, f64) {
    // A fresh gearmand per round: its unique-key hash table has a fixed number of buckets, so
    // submissions slow down as its queue grows, whoever submits.
    let gearmand = &Gearmand::start();
    let original_key = format!("bench_original_{rep}");
    let php_key = format!("bench_php_{rep}");
    // 1a. li3g: stored due in an hour, then all made due at one moment (every score set to 0
    // in one command) and the scheduler woken, as a client scheduling an earlier job does.
    let quiet = scheduler(host, redis, gearmand, false);
    let records: Vec<Record> = (0..jobs).map(|i| record(rep * 10_000_000 + i)).collect();
    let later = SystemTime::now() + Duration::from_secs(3600);
    for chunk in records.chunks(5000) {
        store.schedule_many(chunk, &vec![later; chunk.len()]).unwrap();
    }
    let queued_before = queued(gearmand);
    let start = Instant::now();
    let _: () = redis::pipe()
        .cmd("ZUNIONSTORE")
        .arg("li3g:scheduled")
        .arg(1)
        .arg("li3g:scheduled")
        .arg("WEIGHTS")
        .arg(0)
        .ignore()
        .cmd("PUBLISH")
        .arg("li3g:wake")
        .arg(0)
        .ignore()
        .query(conn)
        .unwrap();
    wait_until("every job is moved", Duration::from_secs(300), || {
        let (s, l): (u64, u64) = redis::pipe().zcard("li3g:scheduled").zcard("li3g:leased").query(conn).unwrap();
        s + l == 0
    });
    let li3g_secs = start.elapsed().as_secs_f64();
    assert_eq!(queued(gearmand) - queued_before, jobs as u64, "gearmand holds every job");
    let li3g_rate = jobs as f64 / li3g_secs;
    drop(quiet);

    // 1b. The original's move, one job at a time, then its submission.
    let members: Vec<(f64, String)> = (0..original_jobs)
        .map(|i| (1.0, format!(r#"{{"id":"o{rep}-{i}","action":"doBackground","workload":{{}}}}"#)))
        .collect();
    for chunk in members.chunks(5000) {
        let _: () = redis::cmd("ZADD").arg(&original_key).arg(chunk).query(conn).unwrap();
    }
    let mut gearman =
        GearmanClient::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    let start = Instant::now();
    let mut moved = 0;
    loop {
        let _: () = redis::cmd("WATCH").arg(&original_key).query(conn).unwrap();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&original_key)
            .arg("-inf")
            .arg(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query(conn)
            .unwrap();
        let Some(member) = due.into_iter().next() else {
            let _: () = redis::cmd("UNWATCH").query(conn).unwrap();
            break;
        };
        let done: Option<(i64,)> = redis::pipe().atomic().zrem(&original_key, &member).query(conn).unwrap();
        if done.is_none() {
            continue; // another scheduler touched the set: try again
        }
        let job = Submit { function: FUNCTION.into(), workload: member.into_bytes(), ..Submit::default() };
        gearman.submit_background(&job).unwrap();
        moved += 1;
    }
    let original_secs = start.elapsed().as_secs_f64();
    assert_eq!(moved, original_jobs);
    let original_rate = original_jobs as f64 / original_secs;

    // 1c. The original itself: the same loop in PHP with phpredis and the gearman extension.
    let members: Vec<(f64, String)> = (0..original_jobs)
        .map(|i| {
            (1.0, format!(r#"{{"id":"p{rep}-{i}","action":"doBackground","workload":{{"args":[{i}]}},"options":[]}}"#))
        })
        .collect();
    for chunk in members.chunks(5000) {
        let _: () = redis::cmd("ZADD").arg(&php_key).arg(chunk).query(conn).unwrap();
    }
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_scheduler_move.php");
    let out = Command::new("php")
        .arg(script)
        .args([redis.port.to_string(), gearmand.port.to_string(), php_key.clone()])
        .output()
        .expect("run php (php-cli, php-redis, php-gearman)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "php: {text} {}", String::from_utf8_lossy(&out.stderr));
    let mut fields = text.split_whitespace();
    let php_moved: usize = fields.next().unwrap().parse().unwrap();
    let php_secs: f64 = fields.next().unwrap().parse().unwrap();
    assert_eq!(php_moved, original_jobs);
    let php_rate = php_moved as f64 / php_secs;

    (li3g_rate, original_rate, php_rate)
}

fn queued(gearmand: &Gearmand) -> u64 {
    gearmand.status().iter().filter(|s| s.function == FUNCTION).map(|s| s.total).sum()
}
