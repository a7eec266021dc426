//! Workers SIGKILLed mid-job, repeatedly, with and without `--atomic`, under gearmand.

use super::*;

const WORKERS: usize = 4;

/// How many workers each case kills.
const KILLS: usize = 30;

/// **At-least-once across worker deaths.** gearmand requeues the job a vanished worker held,
/// so no job is lost; a job whose worker died after running it but before its WORK_COMPLETE
/// reached gearmand runs again. Each worker holds one job at a time, so every kill duplicates
/// at most one job: duplicated ≤ kills.
///
/// The kills must land while jobs remain (else they prove nothing): jobs are submitted in
/// batches of `batch`, and another batch whenever gearmand holds less than half of one, until
/// the [`KILLS`]th kill. So however fast or slow the machine runs the workers against this
/// loop (a loaded machine ran all 40 000 jobs before ten kills), gearmand holds jobs at every
/// kill; each kill is counted as under load only if gearmand said so right before it.
fn workers_killed(case: &str, batch: usize, extra: &[&str]) {
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..batch);
    let mut submitted = batch;
    let mut pool: Vec<ChildGuard> =
        (0..WORKERS).map(|_| Worker::on(server.port).plugins(plugins.path()).args(extra).spawn()).collect();
    let mut kills = 0;
    // Kills that landed while jobs remained (the others prove nothing).
    let mut under_load = 0;
    let mut next = 0;
    // Kill a worker once the jobs moved on since the last kill, round robin, and start another
    // in its place.
    while kills < KILLS {
        wait_until(&format!("{case}: the jobs make progress"), DRAIN, || ledger.lines() > kills * 10);
        if held(&server, APPEND) < batch as u64 / 2 {
            submit_background(server.port, APPEND, &ledger, submitted..submitted + batch);
            submitted += batch;
        }
        if held(&server, APPEND) > 0 {
            under_load += 1;
        }
        pool[next].kill();
        kills += 1;
        pool[next] = Worker::on(server.port).plugins(plugins.path()).args(extra).spawn();
        next = (next + 1) % WORKERS;
    }
    let count = ledger.drained(0..submitted, case);
    wait_until(&format!("{case}: gearmand holds no job"), DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..submitted).duplicated, ..count };
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
    workers_killed("workers SIGKILLed", 5000, &[]);
}

/// `--atomic` workers (a forked child per job, killed with its parent) SIGKILLed mid-job:
/// at-least-once, duplicated ≤ kills.
#[test]
fn atomic_workers_sigkilled_mid_job_lose_nothing() {
    workers_killed("atomic workers SIGKILLed", 500, &["--atomic"]);
}
