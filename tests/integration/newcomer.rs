//! What a newcomer following the README tripped over (session 5): commands that did what was
//! asked only in part, or failed without saying what to do.

use li3g_tests::{host, run, Gearmand, Redis};
use std::process::Command;

/// `li3g-host CMD` with the default PID file, in `run_dir` as `$XDG_RUNTIME_DIR`.
fn with_default_pid(run_dir: &std::path::Path, sub: &str) -> Command {
    let mut command = host();
    command.arg(sub).env_remove("LI3G_PID").env("XDG_RUNTIME_DIR", run_dir);
    command
}

/// A daemon started with `--daemon --pid PATH` is not found by a plain `restart`/`shutdown`/`status`:
/// the error says to pass the same `--pid`. Given a `--pid`, the error is the PID file's alone.
#[test]
fn restart_and_shutdown_without_a_daemon_say_to_pass_the_pid_file_it_was_started_with() {
    let run_dir = tempfile::tempdir().unwrap();
    for sub in ["restart", "shutdown", "status"] {
        let out = run(&mut with_default_pid(run_dir.path(), sub));
        assert_eq!(out.code, Some(1), "{sub}: {}", out.stderr);
        assert!(out.stderr.contains("daemon is running"), "{sub}: {}", out.stderr);
        assert!(out.stderr.contains("is reached with the same --pid PATH"), "{sub}: {}", out.stderr);
        let given = run(with_default_pid(run_dir.path(), sub).arg("--pid").arg(run_dir.path().join("other.pid")));
        assert_eq!(given.code, Some(1), "{sub}: {}", given.stderr);
        assert!(given.stderr.contains("daemon is running"), "{sub}: {}", given.stderr);
        assert!(!given.stderr.contains("same --pid"), "{sub}: {}", given.stderr);
    }
}

/// `run --retries` with a configuration that names no Redis queues the job and says that only
/// workers with a Redis retry it (before: nothing said, and the retries silently never came).
#[test]
fn run_with_retries_and_no_redis_warns_that_the_retries_need_redis() {
    let gearmand = Gearmand::start();
    let submit = |config: &str, retries: bool| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("li3g.toml");
        std::fs::write(&file, config).unwrap();
        let mut command = host();
        command.args(["run", "Hello::say", "Mariano", "--servers", &gearmand.addr(), "--config"]).arg(&file);
        if retries {
            command.args(["--retries", "2"]);
        }
        run(&mut command)
    };
    let out = submit("[default]\n", true);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("queued job "), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("warning: --retries: configuration default names no redis; the job is retried only by workers"),
        "{}",
        out.stderr
    );
    let out = submit("[default]\n", false);
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""), "no --retries, no warning");
    let redis = Redis::start();
    let out = submit(&format!("[default]\nredis = \"{}\"\n", redis.url()), true);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "with Redis configured, no warning: {}", out.stderr);
}

/// `run` with no job server configured and none running: the error says what was tried and
/// that `li3g-host start` runs one (before: only "Connection refused"). `ping` says the same.
/// With `--servers`, the error is the server's alone.
#[test]
fn run_and_ping_with_no_job_server_say_that_start_runs_one() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let config = tempfile::tempdir().unwrap();
    let file = config.path().join("li3g.toml");
    // A configuration without `servers`: the default address, 127.0.0.1:4730, is tried.
    std::fs::write(&file, "[default]\n").unwrap();
    let given = run(host().args(["run", "Hello::say", "Mariano", "--servers", &addr, "--config"]).arg(&file));
    assert_eq!(given.code, Some(1), "{}", given.stderr);
    assert!(given.stderr.contains("no job server could take the job"), "{}", given.stderr);
    assert!(!given.stderr.contains("li3g-host start"), "--servers given: no hint: {}", given.stderr);
    if std::net::TcpStream::connect("127.0.0.1:4730").is_ok() {
        eprintln!("127.0.0.1:4730 is taken on this machine: the default-address case is not checked");
        return;
    }
    for args in [&["run", "Hello::say", "Mariano"][..], &["run", "Hello::say", "Mariano", "--sync"], &["ping"]] {
        let out = run(host().args(args).arg("--config").arg(&file));
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("no job server is configured, so 127.0.0.1:4730 was tried: `li3g-host start` runs one"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// `run --at` with something that is no time says what a time looks like.
#[test]
fn run_at_with_no_time_shows_the_form_it_takes() {
    let out = run(host().args(["run", "Hello::say", "Mariano", "--at", "tomorrow"]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("expected a date and time such as 2026-12-01T10:00:00Z"), "{}", out.stderr);
}
