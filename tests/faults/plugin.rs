//! A plugin overwritten in place (`cp` over the loaded file) while its jobs run.

use super::*;

const WORKERS: usize = 4;

/// **A plugin overwritten in place while jobs run loses no job and crashes no worker.**
/// Workers run a sealed snapshot of the plugin taken when they loaded it, so writing over the
/// file (truncate and rewrite, as `cp` does; five times under load) never reaches the code
/// they run: every job runs exactly once, and every worker lives on.
fn overwritten(case: &str, jobs: usize, extra: &[&str]) {
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let file = plugins.path().join("libmisbehave.so");
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..jobs);
    let pool: Vec<ChildGuard> =
        (0..WORKERS).map(|_| Worker::on(server.port).plugins(plugins.path()).args(extra).spawn()).collect();
    // The copies come in the first half of the run (at 1/12 .. 5/12 of the jobs), so more than
    // half the jobs are still to run when the last one ends, even on a loaded machine where a
    // copy takes long (at 5/7, a slow last copy once ended after every job had run).
    let copies = 5;
    for k in 1..=copies {
        wait_until("the jobs make progress", DRAIN, || ledger.lines() >= jobs * k / (2 * (copies + 1)));
        // std::fs::copy opens the existing file with O_TRUNC and writes into it, as cp does.
        std::fs::copy(li3g_tests::artifacts().lib("misbehave"), &file).expect("cp over the plugin");
        let completed = ledger.count(0..jobs).completed;
        assert!(completed < jobs, "{case}: copy {k} ended after every job ran ({completed} of {jobs})");
    }
    let count = ledger.drained(0..jobs, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..jobs).duplicated, ..count };
    report(case, count, &format!("plugin overwritten {copies} times"));
    assert_eq!(count.duplicated, 0, "{case}: no job runs twice");
    for w in &pool {
        assert!(alive(w.id()), "{case}: worker {} crashed after the plugin was overwritten", w.id());
    }
}

/// Plugin overwritten under workers: nothing lost, doubled or crashed.
#[test]
fn a_plugin_overwritten_in_place_loses_nothing() {
    overwritten("plugin overwritten in place", 20_000, &[]);
}

/// Plugin overwritten under `--atomic` workers (each job's child runs the snapshot too).
#[test]
fn a_plugin_overwritten_in_place_under_atomic_loses_nothing() {
    overwritten("plugin overwritten in place, --atomic", 3000, &["--atomic"]);
}
