//! The daemon (`li3g-host start`) stopped with SIGTERM and restarted with `restart` under load.

use super::*;

const JOBS: usize = 3000;

/// `li3g-host start --workers 4` in the foreground with a PID file; its output discarded.
fn daemon_on(server: &Gearmand, plugins: &Path, pid_file: &Path) -> HostBuilder<'static> {
    Daemon::on(server.port).args(["--workers", "4"]).plugins(plugins).arg("--pid").arg(pid_file)
}

/// **SIGTERM finishes every job in hand, loses none and runs none twice.** The daemon is
/// stopped mid-load; when it has exited, every job either ran exactly once or is still queued
/// in gearmand (ran + queued = submitted). A second daemon then drains the rest: every job ran
/// exactly once.
fn sigterm_under_load(case: &str, extra: &[&str]) {
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let pid_file = plugins.path().join("li3g.pid");
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..JOBS);
    let mut first = daemon_on(&server, plugins.path(), &pid_file).args(extra).spawn();
    wait_until("a quarter of the jobs ran", DRAIN, || ledger.lines() >= JOBS / 4);
    signal(first.id(), Signal::SIGTERM);
    let status = first.wait_timeout(Duration::from_secs(60)).expect("the daemon ends within 60 s of SIGTERM");
    assert!(status.success(), "{case}: the daemon ends cleanly on SIGTERM: {status:?}");
    let stopped = ledger.count(0..JOBS);
    let queued = held(&server, APPEND) as usize;
    assert!(stopped.completed < JOBS, "{case}: stopped after every job ran; the case proves little");
    assert_eq!(
        stopped.completed + queued,
        JOBS,
        "{case}: every job in hand completes before the daemon exits ({} ran, {queued} still queued)",
        stopped.completed
    );
    let _second = daemon_on(&server, plugins.path(), &pid_file).args(extra).spawn();
    let count = ledger.drained(0..JOBS, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    report(case, count, &format!("{} ran before SIGTERM, {queued} queued after it", stopped.completed));
    assert_eq!(count.duplicated, 0, "{case}: no job runs twice across a SIGTERM");
}

/// SIGTERM to a daemon of 4 workers: every job in hand completes, nothing lost or doubled.
#[test]
fn sigterm_to_the_daemon_finishes_jobs_in_hand() {
    sigterm_under_load("daemon SIGTERM", &[]);
}

/// SIGTERM to a daemon of 4 `--atomic` workers: the same.
#[test]
fn sigterm_to_an_atomic_daemon_finishes_jobs_in_hand() {
    sigterm_under_load("atomic daemon SIGTERM", &["--atomic"]);
}

/// **`restart` under load loses no job and runs none twice.** Each restart starts new
/// workers and lets the old ones finish the job in hand before they leave; three restarts
/// while the jobs run, then every job ran exactly once.
#[test]
fn restart_under_load_loses_nothing_and_runs_nothing_twice() {
    let case = "daemon restart x3";
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let pid_file = plugins.path().join("li3g.pid");
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..JOBS);
    let daemon = daemon_on(&server, plugins.path(), &pid_file).spawn();
    wait_until("the daemon wrote its PID file", DRAIN, || pid_file.exists());
    // The restarts come in the first half of the run (at 1/8 .. 3/8 of the jobs), so more than
    // half the jobs are still to run when the last one returns, even on a loaded machine where
    // `restart` takes long (at 3/5, a slow last restart once returned after every job had run).
    let restarts = 3;
    for k in 1..=restarts {
        wait_until("the jobs make progress", DRAIN, || ledger.lines() >= JOBS * k / (2 * (restarts + 1)));
        let out = run(host().arg("restart").arg("--pid").arg(&pid_file));
        assert_eq!(out.code, Some(0), "{case}: restart {k} failed: {}", out.stderr);
        let completed = ledger.count(0..JOBS).completed;
        assert!(completed < JOBS, "{case}: restart {k} returned after every job ran ({completed} of {JOBS})");
    }
    let count = ledger.drained(0..JOBS, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..JOBS).duplicated, ..count };
    report(case, count, "");
    assert_eq!(count.duplicated, 0, "{case}: no job runs twice across restarts");
    assert!(alive(daemon.id()), "{case}: the daemon stays up across restarts");
}
