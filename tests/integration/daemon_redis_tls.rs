//! `start --daemon` and `rediss://`: the daemon works from `/`, and `redis_tls_ca` is relative
//! to the configuration file, which may be named by a relative path; `restart` reads it again.
//! Sandbox paths, relative to where `start` ran, too.

use li3g_tests::redis_setups::TestCerts;
use li3g_tests::{host, run, wait_until, Gearmand, PluginDir, Redis, Run};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// `li3g-host ARGS --config li3g.toml` run in `dir`: the configuration named by its relative path.
fn in_dir(dir: &Path, args: &[&str]) -> Run {
    run(host().current_dir(dir).args(args).arg("--config").arg("li3g.toml"))
}

/// `li3g-host start --daemon --workers 1` run in `dir` with `dir/li3g.toml` holding `config`,
/// logging to `dir/li3g.log`; the PID file's path and the log's.
fn start_daemon_in(dir: &Path, config: &str) -> (String, PathBuf) {
    std::fs::write(dir.join("li3g.toml"), config).unwrap();
    let (pid, log) = (dir.join("li3g.pid").display().to_string(), dir.join("li3g.log"));
    let out = in_dir(dir, &["start", "--daemon", "--workers", "1", "--log-file", log.to_str().unwrap(), "--pid", &pid]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    (pid, log)
}

/// `cd DIR && li3g-host start --daemon --config li3g.toml` with `redis_tls_ca = "ca.pem"` (in
/// DIR) and a `rediss://` Redis: a job scheduled through it runs, moved by the daemon's
/// scheduler. (Before, the scheduler, forked after the daemon moved to `/`, looked for
/// `/ca.pem`: `Cannot start: the Redis TLS CA file ca.pem: No such file or directory`, again
/// and again, and no scheduled job ever ran.)
#[test]
fn a_daemon_started_with_a_relative_configuration_path_reads_its_redis_tls_ca() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let tls_port = li3g_tests::free_port();
    let args = certs.redis_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = tempfile::tempdir().unwrap();
    let _redis =
        li3g_tests::on_a_free_port("redis-server", |port| Redis::try_start_with(port, data.path(), &args, None));
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["misbehave"]);
    std::fs::copy(certs.ca(), dir.path().join("ca.pem")).unwrap();
    let config = format!(
        "[default]\nservers = [\"{}\"]\nredis = \"rediss://127.0.0.1:{tls_port}/0\"\nredis_tls_ca = \"ca.pem\"\nplugins = {:?}\n",
        gearmand.addr(),
        plugins.path()
    );
    let (pid, log) = start_daemon_in(dir.path(), &config);
    let pid = pid.as_str();
    let li3g = |args: &[&str]| in_dir(dir.path(), args);
    let ran = dir.path().join("ran");
    let out = li3g(&["run", "Misbehave::append", ran.to_str().unwrap(), "over tls", "--in", "1s"]);
    assert!(out.code == Some(0) && out.stdout.starts_with("scheduled job "), "{}{}", out.stdout, out.stderr);
    wait_until("the daemon's scheduler moved the job over TLS", WAIT, || {
        std::fs::read_to_string(&ran).is_ok_and(|text| text == "over tls\n")
    });
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("Cannot start"), "{logged}");
    let out = run(host().args(["shutdown", "--pid", pid]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// Redis' certificate rotated to a new CA (redis-server restarted with it on the same TLS
/// port) and the new CA written over `redis_tls_ca`: after `restart`, a job scheduled through
/// it is moved by the daemon's scheduler, replaced by the restart. A CA file broken at the next
/// restart refuses it, naming `redis_tls_ca`. (Before, the scheduler kept the CA it read at
/// start: `Cannot take due jobs: redis: invalid peer certificate: UnknownIssuer` for good, and
/// the job never ran; a broken CA file was not looked at.)
#[test]
fn restart_replaces_the_scheduler_with_one_that_reads_the_rotated_redis_tls_ca() {
    let (old, new) = (TestCerts::new(), TestCerts::new());
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let tls_port = li3g_tests::free_port();
    let redis_with = |certs: &TestCerts| {
        let args = certs.redis_args(tls_port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        li3g_tests::on_a_free_port("redis-server", |port| Redis::try_start_with(port, data.path(), &args, None))
    };
    let redis = redis_with(&old);
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let ca = dir.path().join("ca.pem");
    std::fs::copy(old.ca(), &ca).unwrap();
    let config = dir.path().join("li3g.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\nservers = [\"{}\"]\nredis = \"rediss://127.0.0.1:{tls_port}/0\"\nredis_tls_ca = {ca:?}\nplugins = {:?}\n",
            gearmand.addr(),
            plugins.path()
        ),
    )
    .unwrap();
    let (pid, log) = (dir.path().join("li3g.pid"), dir.path().join("li3g.log"));
    let pid = pid.to_str().unwrap();
    let li3g = |args: &[&str]| run(host().args(args).arg("--config").arg(&config));
    let out = li3g(&["start", "--daemon", "--workers", "1", "--log-file", log.to_str().unwrap(), "--pid", pid]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ran = dir.path().join("ran");
    let schedule = |line: &str| {
        let out = li3g(&["run", "Misbehave::append", ran.to_str().unwrap(), line, "--in", "1s"]);
        assert!(out.code == Some(0) && out.stdout.starts_with("scheduled job "), "{}{}", out.stdout, out.stderr);
    };
    let lines = || std::fs::read_to_string(&ran).unwrap_or_default();
    schedule("before");
    wait_until("the job ran", WAIT, || lines() == "before\n");

    drop(redis);
    let _redis = redis_with(&new);
    std::fs::copy(new.ca(), &ca).unwrap();
    let out = run(host().args(["restart", "--pid", pid]));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    schedule("after");
    wait_until("the job scheduled after the rotation ran", WAIT, || lines() == "before\nafter\n");

    std::fs::write(&ca, "not a certificate\n").unwrap();
    let out = run(host().args(["restart", "--pid", pid]));
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("redis_tls_ca") && out.stderr.contains("ca.pem"), "{}", out.stderr);
    let out = run(host().args(["shutdown", "--pid", pid]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// The same for the sandbox: `cd DIR && li3g-host start --daemon --config li3g.toml` with
/// `[default.sandbox] read = ["data"]` (a directory in DIR): the daemon's worker serves, as
/// `work` there does. (Before, the worker forked by the daemon opened `/data`: `Sandbox: sandbox
/// path data: failed to open "data"`, it exited, and the daemon with it: no children left.)
#[test]
fn a_daemon_started_from_a_directory_opens_relative_sandbox_paths_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["hello"]);
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let config = format!(
        "[default]\nservers = [\"{}\"]\nplugins = {:?}\n[default.sandbox]\nread = [\"data\"]\nbest_effort = true\n",
        gearmand.addr(),
        plugins.path()
    );
    let (pid, log) = start_daemon_in(dir.path(), &config);
    let pid = pid.as_str();
    wait_until("the daemon's worker serves", WAIT, || {
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!logged.contains("No children left"), "the daemon ended: {logged}");
        in_dir(dir.path(), &["ping"]).code == Some(0)
    });
    let out = run(host().args(["shutdown", "--pid", pid]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}
