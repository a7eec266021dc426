//! Poison jobs: tasks that crash the process running them (`Misbehave::segfault`,
//! `Misbehave::abort`), mixed into a load of counted jobs.

use super::*;

const JOBS: usize = 2000;
const WORKERS: usize = 4;
/// Poison jobs of each kind.
const POISON: usize = 2;
const KINDS: [&str; 2] = ["Misbehave::segfault", "Misbehave::abort"];

/// Submits the poison jobs (before the load, so they are handed out early).
fn submit_poison(port: u16) {
    let mut wire = Vec::new();
    for function in KINDS {
        for _ in 0..POISON {
            let submit = Packet::SubmitJob {
                priority: Priority::High,
                background: true,
                function: function.as_bytes().to_vec(),
                unique: vec![],
                workload: b"[]".to_vec(),
            };
            packet::encode(Magic::Req, &submit, &mut wire).unwrap();
        }
    }
    submit_wire(port, wire, KINDS.len() * POISON);
}

/// Runs the load with `POISON` jobs of each kind on `server`; workers that die are replaced
/// (as `start --resuscitate` or systemd would). Returns (count, worker deaths).
fn poisoned(case: &str, server: &Gearmand, extra: &[&str]) -> (Count, usize) {
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    submit_poison(server.port);
    submit_background(server.port, APPEND, &ledger, 0..JOBS);
    let mut pool: Vec<ChildGuard> =
        (0..WORKERS).map(|_| Worker::on(server.port).plugins(plugins.path()).args(extra).spawn()).collect();
    let mut deaths = 0;
    let poison_left = || KINDS.iter().map(|f| held(server, f)).sum::<u64>();
    let what = format!("{case}: every job completed and no poison job is held within {DRAIN:?} (a poison job must end failed, not loop forever)");
    wait_until_ok(&what, DRAIN, Duration::from_millis(20), || {
        let (completed, poison) = (ledger.count(0..JOBS).completed, poison_left());
        if completed >= JOBS && poison == 0 {
            return Ok(());
        }
        for slot in pool.iter_mut() {
            if slot.wait_timeout(Duration::ZERO).is_some() {
                deaths += 1;
                *slot = Worker::on(server.port).plugins(plugins.path()).args(extra).spawn();
            }
        }
        Err(format!("{completed} of {JOBS} jobs completed and {poison} poison jobs are still held"))
    });
    let count = ledger.count(0..JOBS);
    report(case, count, &format!("poison jobs {} ended failed, worker deaths {deaths}", KINDS.len() * POISON));
    (count, deaths)
}

/// **A poison job ends failed after bounded requeues; every other job runs exactly once.**
/// Without `--atomic` the crash takes the worker with it: the embedded server requeues the
/// job until it ran `--job-retries` times (default 3, as gearmand counts), then fails it, so it
/// kills at most 3 workers and never loops.
#[test]
fn poison_jobs_on_the_embedded_server_end_failed_after_bounded_requeues() {
    let case = "poison jobs, embedded server";
    let server = Gearmand::embedded(None);
    let (count, deaths) = poisoned(case, &server, &[]);
    assert_eq!(count.duplicated, 0, "{case}: the other jobs run exactly once");
    let bound = KINDS.len() * POISON * li3g_host::server::DEFAULT_JOB_RETRIES as usize;
    assert!(deaths <= bound, "{case}: at most `--job-retries` crashes per poison job: {deaths} > {bound}");
}

/// **Under `--atomic` a poison job fails once and kills no worker.** The crash is the job's
/// forked child's alone: the worker reports the failure, and no job is lost or run twice.
#[test]
fn poison_jobs_under_atomic_fail_once_and_kill_no_worker() {
    let case = "poison jobs, embedded server, --atomic";
    let server = Gearmand::embedded(None);
    let (count, deaths) = poisoned(case, &server, &["--atomic"]);
    assert_eq!(count.duplicated, 0, "{case}: the other jobs run exactly once");
    assert_eq!(deaths, 0, "{case}: no worker dies of a job's crash under --atomic");
}

/// **gearmand needs `--job-retries`.** With `--job-retries=3` the poison job is dropped after
/// three tries (gearmand 1.1.20's default, 0, requeues it forever: the operations guide says
/// to set it). Every other job runs exactly once.
#[test]
fn poison_jobs_on_gearmand_with_job_retries_end_failed() {
    let case = "poison jobs, gearmand --job-retries=3";
    let server = on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &["--job-retries=3"]));
    let (count, deaths) = poisoned(case, &server, &[]);
    assert_eq!(count.duplicated, 0, "{case}: the other jobs run exactly once");
    assert!(deaths <= KINDS.len() * POISON * 4, "{case}: bounded crashes: {deaths}");
}
