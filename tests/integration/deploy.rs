//! The deployment examples in `deploy/`: the systemd unit passes `systemd-analyze verify`, and
//! the supervisor program really runs li3g under supervisord and serves a job.

use li3g_tests::{artifacts, run, wait_for_workers, workspace_root, ChildGuard, Gearmand, PluginDir};
use li3g_tests::{signal, Signal};
use std::process::{Command, Stdio};

/// The shipped file with the binary and config paths pointing at this test's, and without
/// the `li3g` user (which this machine does not have).
fn adapted(file: &str, config: &std::path::Path) -> String {
    std::fs::read_to_string(workspace_root().join("deploy").join(file))
        .unwrap()
        .replace("/usr/bin/li3g-host", &artifacts().host.display().to_string())
        .replace("/etc/li3g/li3g.toml", &config.display().to_string())
        .lines()
        .filter(|l| !l.starts_with("User=") && !l.starts_with("Group=") && !l.starts_with("user="))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        panic!("systemd-analyze is missing: .ci/run installs systemd");
    }
    let dir = PluginDir::empty();
    let config = dir.write("li3g.toml", b"[default]\n");
    let unit = dir.write("li3g-host.service", adapted("li3g-host.service", &config).as_bytes());
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("li3g-host.service"), "{}", out.stderr);
    // The check can fail: a unit with a misspelt key does not verify.
    let broken = dir
        .write("broken.service", adapted("li3g-host.service", &config).replace("ExecStart=", "ExecStrat=").as_bytes());
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&broken));
    assert_ne!(out.code, Some(0));
}

#[test]
fn the_supervisor_program_runs_the_daemon_and_serves_a_job() {
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["hello"]);
    let config = plugins.write(
        "li3g.toml",
        format!("[default]\nservers = [\"{}\"]\nplugins = \"{}\"\n", gearmand.addr(), plugins.path().display())
            .as_bytes(),
    );
    let work = PluginDir::empty();
    let conf = format!(
        "[supervisord]\nnodaemon=true\nlogfile={dir}/supervisord.log\npidfile={dir}/supervisord.pid\n\n{program}\n",
        dir = work.path().display(),
        program = adapted("supervisor-li3g.conf", &config)
    );
    let conf = work.write("supervisord.conf", conf.as_bytes());
    let mut supervisord = ChildGuard::spawn(
        Command::new("python3")
            .args(["-m", "supervisor.supervisord", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[&gearmand], "Hello::say", 4);
    let out = run(Command::new(&artifacts().host)
        .args(["run", "Hello::say", "supervisor", "--sync", "--config"])
        .arg(&config));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello supervisor\n"), "{}", out.stderr);
    let workers = gearmand.worker_pids();
    // Stopping supervisord stops the program with SIGTERM: the pool goes down with it.
    signal(supervisord.id(), Signal::SIGTERM);
    assert!(supervisord.wait_timeout(std::time::Duration::from_secs(30)).is_some(), "supervisord stops");
    li3g_tests::wait_until("the workers are gone", std::time::Duration::from_secs(20), || {
        workers.iter().all(|pid| !li3g_tests::alive(*pid))
    });
}
