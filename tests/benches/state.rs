//! What plugin state costs per job under `--atomic`, where each job child builds its own
//! (here: a Redis connection: TCP connect + `CLIENT SETNAME`, closed after the job).
//!
//! Four runs, back to back, each a `li3g-host work` (release build) draining the same number of
//! queued background jobs from its own fresh gearmand and exiting (`--max-jobs N`), timed from
//! spawn to exit, with the example plugin `redis_counter` against one redis-server:
//!
//! 1. `Counter::pid` in the worker (no state used);
//! 2. `Counter::incr` in the worker (the worker's one connection, one `INCR` per job);
//! 3. `Counter::pid --atomic` (a child per job, no state built: the task takes none);
//! 4. `Counter::incr --atomic` (a child per job, each building and dropping its connection).
//!
//! (4) - (3) is the state's cost per job under `--atomic` (constructor + `INCR`); subtracting
//! (2) - (1), the `INCR` round trip, leaves the constructor's.
//!
//! Run: `cargo bench -p li3g-tests --bench state` (`JOBS=N` to change the count, default 2000).

use li3g_host::gearman::client::{GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::{release_build, wait_until, Gearmand, Redis};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn queue(gearmand: &Gearmand, function: &str, workload: &[u8], jobs: usize) {
    let mut client = GearmanClient::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    let job = Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() };
    for _ in 0..jobs {
        client.submit_background(&job).expect("queue a job");
    }
    wait_until("all jobs are queued", Duration::from_secs(60), || {
        gearmand.status().iter().any(|s| s.function == function && s.total == jobs as u64)
    });
}

fn main() {
    let jobs: usize = std::env::var("JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let release = release_build();
    let host = release.join("li3g-host");
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("a plugins directory");
    let plugin = dir.path().join("libredis_counter.so");
    std::fs::copy(release.join("libredis_counter.so"), &plugin).expect("copy the plugin");
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.path().join("li3g.toml");
    std::fs::write(&config, format!("[default.plugins.redis_counter]\nurl = {:?}\n", redis.url())).expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut results = Vec::new();
    for (name, task, atomic) in [
        ("Counter::pid", "Counter::pid", false),
        ("Counter::incr", "Counter::incr", false),
        ("Counter::pid --atomic", "Counter::pid", true),
        ("Counter::incr --atomic", "Counter::incr", true),
    ] {
        let gearmand = Gearmand::start();
        queue(&gearmand, task, br#"["bench"]"#, jobs);
        let mut command = Command::new(&host);
        command
            .args(["work", "--max-jobs", &jobs.to_string(), "--servers", &gearmand.addr()])
            .arg("--plugins")
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if atomic {
            command.arg("--atomic");
        }
        let started = Instant::now();
        let status = command.status().expect("run the worker");
        let elapsed = started.elapsed();
        // A worker that did its --max-jobs exits with the recycle code (the pool replaces it).
        let recycled = status.code() == Some(li3g_host::daemon::EXIT_RECYCLE);
        assert!(status.success() || recycled, "{command:?}: {status:?}");
        let left = gearmand.status().into_iter().find(|s| s.function == task).map(|s| s.total).unwrap_or(0);
        assert_eq!(left, 0, "{name} left {left} jobs");
        results.push((name, elapsed.as_secs_f64() * 1e6 / jobs as f64));
    }
    println!("{jobs} background jobs per run, one worker process, gearmand --threads=1, redis-server, loopback\n");
    println!("{:<24} {:>10} {:>10}", "run", "us/job", "jobs/s");
    for (name, us) in &results {
        println!("{name:<24} {us:>10.1} {:>10.0}", 1e6 / us);
    }
    let state_atomic = results[3].1 - results[2].1;
    let incr = results[1].1 - results[0].1;
    println!("\nunder --atomic, a job that takes the state costs {state_atomic:.1} us more than one that does not");
    println!(
        "({incr:.1} us of it is the INCR round trip itself, so the constructor costs about {:.1} us per job;",
        state_atomic - incr
    );
    println!(
        " the whole --atomic job with state takes {:.2}x as long as the same job in the worker)",
        results[3].1 / results[1].1
    );
}
