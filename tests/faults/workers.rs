//! Workers SIGKILLed mid-job, repeatedly, with and without `--atomic`, under gearmand.

use super::*;

const WORKERS: usize = 4;

/// **At-least-once across worker deaths.** gearmand requeues the job a vanished worker held,
/// so no job is lost; a job whose worker died after running it but before its WORK_COMPLETE
/// reached gearmand runs again. Each worker holds one job at a time, so every kill duplicates
/// at most one job: duplicated ≤ kills.
fn workers_killed(case: &str, jobs: usize, extra: &[&str]) {
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..jobs);
    let mut pool: Vec<ChildGuard> =
        (0..WORKERS).map(|_| Worker::on(server.port).plugins(plugins.path()).args(extra).spawn()).collect();
    let mut kills = 0;
    // Kills that landed while jobs remained (the others prove nothing).
    let mut under_load = 0;
    let mut next = 0;
    // Kill a worker every 20 ms, round robin, and start another in its place, while jobs remain.
    while ledger.count(0..jobs).completed < jobs * 9 / 10 {
        wait_until(&format!("{case}: the jobs make progress"), DRAIN, || ledger.lines() > kills * 10);
        pool[next].kill();
        kills += 1;
        if ledger.count(0..jobs).completed < jobs {
            under_load += 1;
        }
        pool[next] = Worker::on(server.port).plugins(plugins.path()).args(extra).spawn();
        next = (next + 1) % WORKERS;
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = ledger.drained(0..jobs, case);
    wait_until(&format!("{case}: gearmand holds no job"), DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..jobs).duplicated, ..count };
    report(case, count, &format!("workers SIGKILLed {kills} ({under_load} while jobs remained)"));
    assert!(
        under_load >= 10,
        "{case}: only {under_load} workers were killed while jobs remained; the case proves little"
    );
    assert!(
        count.duplicated <= kills,
        "{case}: at-least-once with at most one duplicate per killed worker: {} duplicates for {kills} kills",
        count.duplicated
    );
}

/// Workers (one process each) SIGKILLed mid-job: at-least-once, duplicated ≤ kills.
#[test]
fn workers_sigkilled_mid_job_lose_nothing() {
    workers_killed("workers SIGKILLed", 40_000, &[]);
}

/// `--atomic` workers (a forked child per job, killed with its parent) SIGKILLed mid-job:
/// at-least-once, duplicated ≤ kills.
#[test]
fn atomic_workers_sigkilled_mid_job_lose_nothing() {
    workers_killed("atomic workers SIGKILLed", 3000, &["--atomic"]);
}
