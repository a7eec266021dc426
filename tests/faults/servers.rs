//! Job servers killed under load: gearmand with its in-memory queue, and li3g's embedded server
//! with its SQLite store (`li3g-host server --store PATH`).

use super::*;

const JOBS: usize = 3000;
const WORKERS: usize = 4;

/// **gearmand without a durable queue: what is lost is exactly what it held in memory.**
/// SIGKILLed under load, gearmand loses every background job it had queued and not yet handed
/// out; a job a worker had in hand still runs (its WORK_COMPLETE finds no server). Nothing
/// runs twice. Once gearmand is back on its port, the same workers reconnect and every job
/// submitted from then on completes.
#[test]
fn gearmand_killed_under_load_loses_its_memory_queue_and_nothing_else() {
    let case = "gearmand SIGKILLed (in-memory queue)";
    let server = gearmand();
    let port = server.port;
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    submit_background(port, APPEND, &ledger, 0..JOBS);
    let _pool: Vec<ChildGuard> = (0..WORKERS).map(|_| Worker::on(port).plugins(plugins.path()).spawn()).collect();
    wait_until("a quarter of the jobs ran", DRAIN, || ledger.lines() >= JOBS / 4);
    server.kill();
    let at_kill = ledger.lines();
    assert!(at_kill < JOBS, "{case}: gearmand was killed after every job ran; the case proves nothing");

    let server = restart_on(port, |p| Gearmand::try_gearmand_on(p, &[]));
    li3g_tests::wait_for_workers(&[&server], APPEND, WORKERS as u64);
    submit_background(port, APPEND, &ledger, JOBS..2 * JOBS);
    let after = ledger.drained(JOBS..2 * JOBS, case);
    let before = ledger.count(0..JOBS);
    let lost = JOBS - before.completed;
    report(case, before, &format!("lost {lost} (queued in gearmand's memory at the kill)"));
    report(&format!("{case}, submitted after the restart"), after, "");
    assert!(
        before.completed <= at_kill + WORKERS,
        "{case}: only the jobs in hand at the kill may finish after it: {} completed, {at_kill} at the kill",
        before.completed
    );
    assert_eq!(before.duplicated + after.duplicated, 0, "{case}: no job runs twice when only gearmand dies");
    assert_eq!(after.completed, JOBS, "{case}: every job submitted after the restart completes");
}

/// **The embedded server with `--store`: nothing lost across SIGKILL; reruns bounded by the jobs
/// in flight.** Every background job is in SQLite before its JOB_CREATED, so SIGKILLing the
/// server (twice, under load) and restarting it on the same store loses nothing. A finished
/// job's row is deleted in the same turn's commit (WAL, without an fsync), so the only jobs that
/// run again are those a worker held at the kill: duplicated ≤ kills × workers (each li3g
/// worker holds one job at a time). Deletes batched for 100 ms gave 112-1,338 here.
#[test]
fn embedded_server_sigkilled_with_a_store_loses_nothing() {
    let case = "embedded server SIGKILLed (--store)";
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.sqlite");
    let mut server = Gearmand::embedded(Some(&store));
    let port = server.port;
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    submit_background(port, APPEND, &ledger, 0..JOBS);
    let _pool: Vec<ChildGuard> = (0..WORKERS).map(|_| Worker::on(port).plugins(plugins.path()).spawn()).collect();
    let kills = 2;
    for k in 1..=kills {
        wait_until("the workers made progress", DRAIN, || ledger.lines() >= JOBS * k / (kills + 1));
        server.kill();
        assert!(ledger.count(0..JOBS).completed < JOBS, "{case}: killed after every job ran");
        server = restart_on(port, |p| Gearmand::try_embedded_on(p, Some(&store), &[]));
    }
    let count = ledger.drained(0..JOBS, case);
    wait_until("the server holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    report(case, count, &format!("server SIGKILLed {kills}"));
    assert!(
        count.duplicated <= kills * WORKERS,
        "{case}: reruns bounded by the jobs in flight at the kills (at most {}): {} duplicates",
        kills * WORKERS,
        count.duplicated
    );
}

/// **gearmand with a persistent queue (`--queue-type=libsqlite3`) and li3g's client: nothing
/// lost across SIGKILL.** The remedy for the loss above, proven the same way: each background
/// job is in gearmand's SQLite queue before its JOB_CREATED and deleted when it completes, so a
/// job runs twice only if gearmand died between its WORK_COMPLETE and that delete: duplicated
/// ≤ workers. It needs a unique key per job: gearmand 1.1.20 stores jobs keyed by (unique,
/// function) with `INSERT OR REPLACE`, so jobs submitted with an empty key overwrite one
/// another and all but one are lost; li3g's client sends the job id as the key of a background
/// job (without that, this case lost ~1,000 of 1,500 jobs).
#[test]
fn gearmand_with_a_sqlite_queue_killed_under_load_loses_nothing() {
    let case = "gearmand SIGKILLed (--queue-type=libsqlite3)";
    const JOBS: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("--libsqlite3-db={}", dir.path().join("gearmand.sqlite").display());
    let args = ["--queue-type=libsqlite3", db.as_str()];
    let server = on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &args));
    let port = server.port;
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = Ledger::new();
    let mut client = li3g_host::client::Client::new(vec![li3g_host::gearman::conn::ServerAddr {
        host: "127.0.0.1".into(),
        port,
        tls: false,
    }]);
    let options = li3g_host::client::RunOptions::default();
    for i in 0..JOBS {
        let args = [serde_json::json!(ledger.path.to_str().unwrap()), serde_json::json!(i.to_string())];
        let outcome = client.run(APPEND, &args, &options, &mut |_| {}).expect("queue a background job");
        assert!(matches!(outcome, li3g_host::client::Outcome::Queued { .. }), "{outcome:?}");
    }
    let _pool: Vec<ChildGuard> = (0..WORKERS).map(|_| Worker::on(port).plugins(plugins.path()).spawn()).collect();
    wait_until("a quarter of the jobs ran", DRAIN, || ledger.lines() >= JOBS / 4);
    server.kill();
    assert!(ledger.count(0..JOBS).completed < JOBS, "{case}: killed after every job ran");
    let server = restart_on(port, |p| Gearmand::try_gearmand_on(p, &args));
    let count = ledger.drained(0..JOBS, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    report(case, count, "");
    assert!(count.duplicated <= WORKERS, "{case}: at most one duplicate per worker: {}", count.duplicated);
}
