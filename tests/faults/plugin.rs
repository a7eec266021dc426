//! A plugin overwritten in place (`cp` over the loaded file) while its jobs run.

use super::*;

const WORKERS: usize = 4;

/// **A plugin overwritten in place while jobs run loses no job and crashes no worker.**
/// Workers run a sealed snapshot of the plugin taken when they loaded it, so writing over the
/// file (truncate and rewrite, as `cp` does; five times under load) never reaches the code
/// they run: every job runs exactly once, and every worker lives on. (More jobs than `jobs` are
/// submitted when the workers ran most of them before a copy.)
fn overwritten(case: &str, jobs: usize, extra: &[&str]) {
    let server = gearmand();
    let plugins = PluginDir::with(&["misbehave"]);
    let file = plugins.path().join("libmisbehave.so");
    let ledger = Ledger::new();
    submit_background(server.port, APPEND, &ledger, 0..jobs);
    let pool: Vec<ChildGuard> =
        (0..WORKERS).map(|_| Worker::on(server.port).plugins(plugins.path()).args(extra).spawn()).collect();
    // Each copy is `cp`'s two steps: the file is truncated (O_TRUNC) while the workers run,
    // and jobs are seen to complete while it is empty; then the workers are stopped (SIGSTOP)
    // while the contents are written back, and go on. So every copy lands while jobs remain,
    // however slow writing is on a loaded machine (with the workers running throughout, a slow
    // copy once ended after every job had run), and jobs surely ran against the emptied file.
    let contents = std::fs::read(li3g_tests::artifacts().lib("misbehave")).expect("read the plugin");
    let copies = 5;
    let mut submitted = jobs;
    let stop_all = |pool: &[ChildGuard]| {
        for w in pool {
            signal(w.id(), Signal::SIGSTOP);
        }
        wait_until("the workers are stopped", DRAIN, || pool.iter().all(|w| stopped(w.id())));
    };
    let continue_all = |pool: &[ChildGuard]| {
        for w in pool {
            signal(w.id(), Signal::SIGCONT);
        }
    };
    for k in 1..=copies {
        wait_until("the jobs make progress", DRAIN, || ledger.lines() >= jobs * k / (2 * (copies + 1)));
        // The truncation lands while jobs remain, however far the workers got (on a loaded
        // machine they once ran every job before the test thread truncated the file, and the
        // wait below then waited for jobs there were none of): it is made while they are
        // stopped, after topping the queue up if few jobs are left.
        stop_all(&pool);
        if ledger.count(0..submitted).completed + 1000 > submitted {
            submit_background(server.port, APPEND, &ledger, submitted..submitted + jobs / 4);
            submitted += jobs / 4;
        }
        let mut cp = std::fs::OpenOptions::new().write(true).truncate(true).open(&file).expect("truncate the plugin");
        let at = ledger.lines();
        continue_all(&pool);
        let what = format!("{case}: jobs complete while the plugin file is empty (copy {k})");
        wait_until_ok(&what, DRAIN, Duration::from_millis(20), || {
            let lines = ledger.lines();
            if lines >= at + 10 {
                return Ok(());
            }
            let workers: Vec<String> = pool
                .iter()
                .map(|w| {
                    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.id())).unwrap_or_default();
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next().unwrap_or('-');
                    format!("{} {state}", w.id())
                })
                .collect();
            Err(format!(
                "{lines} lines ({at} at the truncation) of {submitted} jobs; gearmand holds {}; workers {workers:?}",
                held(&server, APPEND)
            ))
        });
        stop_all(&pool);
        std::io::Write::write_all(&mut cp, &contents).expect("write the plugin back");
        drop(cp);
        let completed = ledger.count(0..submitted).completed;
        continue_all(&pool);
        assert!(completed < submitted, "{case}: copy {k} ended after every job ran ({completed} of {submitted})");
    }
    let count = ledger.drained(0..submitted, case);
    wait_until("gearmand holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = Count { duplicated: ledger.count(0..submitted).duplicated, ..count };
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

/// Whether `pid` is stopped (state `T` in `/proc/PID/stat`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('T'))
}
