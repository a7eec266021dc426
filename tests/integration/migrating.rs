//! Moving from li3_gearman: a monitoring check written for the PHP daemon works unchanged
//! against li3g. The original's `li3 gearmand ping` runs the task `\li3_gearman\Gearman::ping`
//! through its envelope, high priority, synchronous, and expects `OK`: here the envelope is
//! sent by a real PHP client (the gearman extension, `tests/peers/li3_gearman_client.php`,
//! built as li3_gearman's `Job::run` builds it) through a real gearmand.

use li3g_tests::{host, run, wait_for_workers, ChildGuard, Gearmand, PluginDir};
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
