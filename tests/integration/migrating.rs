//! Moving from li3_gearman: a monitoring check written for the PHP daemon works unchanged
//! against li3g. The original's `li3 gearmand ping` runs the task `\li3_gearman\Gearman::ping`
//! through its envelope, high priority, synchronous, and expects `OK`: here the envelope is
//! sent by a real PHP client (the gearman extension, `tests/peers/li3_gearman_client.php`,
//! built as li3_gearman's `Job::run` builds it) through a real gearmand.

use li3g_tests::{host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, PluginDir};
use std::process::{Command, Stdio};

fn worker(gearmand: &Gearmand, dir: &PluginDir, extra: &[&str]) -> ChildGuard {
    let worker = ChildGuard::spawn(
        host()
            .args(["work", "--servers", &gearmand.addr()])
            .args(extra)
            .arg("--plugins")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[gearmand], li3g_host::workload::COMPAT_FUNCTION, 1);
    worker
}

/// What the original's `li3 gearmand ping` sends: `doHigh`, synchronous, task
/// `li3_gearman\Gearman::ping` (the client adds the leading `\`), no arguments.
fn php_ping(gearmand: &Gearmand) -> li3g_tests::Run {
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_client.php");
    run(Command::new("php").arg(script).arg(gearmand.addr()).args(["doHigh", "li3_gearman\\Gearman::ping"]))
}

#[test]
fn li3_gearmans_ping_gets_ok_from_li3g_workers() {
    let gearmand = Gearmand::start();
    // Plugins that know nothing of li3_gearman: the answer is built in.
    let dir = PluginDir::with(&["hello"]);
    let mut plain = worker(&gearmand, &dir, &[]);
    let out = php_ping(&gearmand);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "OK\n"), "{}", out.stderr);
    plain.kill();

    // The same from an --atomic worker, whose jobs run in forked children.
    let _atomic = worker(&gearmand, &dir, &["--atomic"]);
    let out = php_ping(&gearmand);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "OK\n"), "{}", out.stderr);
}

#[test]
fn li3_gearmans_ping_task_runs_locally_too() {
    let dir = PluginDir::with(&["hello"]);
    let out = run(host().args(["exec", "\\li3_gearman\\Gearman::ping", "--plugins"]).arg(dir.path()));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "OK\n"), "{}", out.stderr);
}

/// li3_gearman's own PHP worker (`tests/peers/li3_gearman_worker.php`) on `gearmand`.
fn php_worker(gearmand: &Gearmand) -> ChildGuard {
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_worker.php");
    let worker = ChildGuard::spawn(
        Command::new("php").arg(script).arg(gearmand.addr()).stdout(Stdio::null()).stderr(Stdio::null()),
    );
    wait_for_workers(&[gearmand], li3g_host::workload::COMPAT_FUNCTION, 1);
    worker
}

fn li3g_run(gearmand: &Gearmand, args: &[&str]) -> li3g_tests::Run {
    run(host().args(["run", "--li3-gearman", "--servers", &gearmand.addr(), "--environment", "staging"]).args(args))
}

#[test]
fn li3gs_client_triggers_a_php_li3_gearman_task_sync_background_and_failing() {
    let gearmand = Gearmand::start();
    let _worker = php_worker(&gearmand);

    // Sync: the PHP task's result; its environment and arguments came through the envelope.
    let out = li3g_run(&gearmand, &["app\\tasks\\Report::build", "3", "--sync", "--timeout", "20"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "report of 3 rows in staging for unset\n"), "{}", out.stderr);

    // Background: queued with a handle; the PHP task runs.
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("written.txt");
    let out = li3g_run(&gearmand, &["\\app\\tasks\\Report::write", &file.display().to_string(), "from li3g"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("queued job "), "{}", out.stdout);
    wait_until("the PHP task wrote its file", std::time::Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|text| text == "from li3g in staging")
    });

    // A failure: the task's message, exit 1.
    let out = li3g_run(&gearmand, &["app\\tasks\\Report::fail", "the disk is full", "--sync", "--timeout", "20"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("the disk is full"), "{}", out.stderr);
    // A task the PHP side does not have: its worker's message.
    let out = li3g_run(&gearmand, &["app\\tasks\\Nope::run", "--sync", "--timeout", "20"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("Invalid task \\app\\tasks\\Nope::run"), "{}", out.stderr);
}

#[test]
fn the_envelope_li3gs_client_sends_is_the_one_li3g_workers_read_too() {
    // So one client call works whichever side serves the task, during the move.
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = worker(&gearmand, &dir, &[]);
    let out = li3g_run(&gearmand, &["app\\tasks\\Hello::say", "Mariano", "--sync", "--timeout", "20"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello Mariano\n"), "{}", out.stderr);
}

#[test]
fn unique_args_key_li3_gearman_jobs_by_their_task_too() {
    // Every li3_gearman task goes to one function, so the task must be part of the key: two
    // tasks with the same arguments are two jobs, the same task twice is one.
    let gearmand = Gearmand::start();
    for task in ["app\\tasks\\Report::build", "app\\tasks\\Report::fail", "\\app\\tasks\\Report::build"] {
        let out = li3g_run(&gearmand, &[task, "3", "--unique-args"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
    let queued = gearmand.status().into_iter().find(|f| f.function == li3g_host::workload::COMPAT_FUNCTION);
    assert_eq!(queued.map(|f| f.total), Some(2), "{:?}", gearmand.status());
}
