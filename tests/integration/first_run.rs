//! What a new user tripped over (issue 17): a refused plugin stops `start` and `work`, `plugins`
//! counts it and fails, `ping` checks what the pool serves, `start` in the foreground holds its
//! PID file, and a JSON object workload is the task's arguments by name.

use li3g_tests::{free_port, host, run, wait_for_workers, ChildGuard, Gearmand, Lines, PluginDir};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a refused start may take to exit (the issue's bound).
const REFUSE_WITHIN: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(20);

/// `li3g-host start` for `dir`'s plugins with `config` as its configuration file, stderr
/// collected.
fn start(gearmand: &Gearmand, dir: &PluginDir, config: &str, args: &[&str]) -> (ChildGuard, Lines) {
    let config = dir.write("li3g.toml", config.as_bytes());
    let mut command = host();
    command
        .arg("start")
        .args(["--workers", "2", "--servers", &gearmand.addr()])
        .args(args)
        .arg("--plugins")
        .arg(dir.path())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(daemon.child().stderr.take().expect("piped stderr"));
    (daemon, lines)
}

/// Asserts that `daemon` exits non-zero within [`REFUSE_WITHIN`] with a line naming all of `says`.
fn assert_refused(daemon: &mut ChildGuard, lines: &Lines, says: &[&str]) {
    let status = daemon.wait_timeout(REFUSE_WITHIN).unwrap_or_else(|| panic!("still running: {:#?}", lines.all()));
    assert!(!status.success(), "{status:?} {:#?}", lines.all());
    let line = lines.wait_for(says[0], WAIT);
    for text in says {
        assert!(line.contains(text), "{text:?} not in {line:?}");
    }
}

#[test]
fn start_refuses_a_plugin_whose_settings_have_a_typo() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let config = "[default.plugins.redis_counter]\nurll = \"redis://127.0.0.1:6379/\"\n";
    let (mut daemon, lines) = start(&gearmand, &dir, config, &[]);
    assert_refused(
        &mut daemon,
        &lines,
        &["plugin redis_counter refused", "libredis_counter.so", "unknown field `urll`"],
    );
}

#[test]
fn start_refuses_a_failing_constructor_unless_the_plugin_is_optional() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let section = format!("[default.plugins.redis_counter]\nurl = \"redis://127.0.0.1:{}/\"\n", free_port());
    let (mut daemon, lines) = start(&gearmand, &dir, &section, &[]);
    assert_refused(&mut daemon, &lines, &["plugin redis_counter refused", "its state constructor failed"]);
    // Optional: skipped with a warning, and the other plugins are served.
    let config = format!("[default.plugins]\noptional = [\"redis_counter\"]\n\n{section}");
    let (mut daemon, lines) = start(&gearmand, &dir, &config, &["--verbose"]);
    wait_for_workers(&[&gearmand], "Hello::say", 2);
    assert!(daemon.wait_timeout(Duration::ZERO).is_none(), "{:#?}", lines.all());
    lines.wait_for("Skipped optional plugin redis_counter", WAIT);
}

#[test]
fn start_and_work_refuse_a_plugin_file_whose_loader_fails() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "loader_error"]);
    let (mut daemon, lines) = start(&gearmand, &dir, "", &[]);
    assert_refused(&mut daemon, &lines, &["plugin loader_error", "libloader_error.so", "its loader failed"]);
    let out = run(host()
        .args(["work", "--servers", &gearmand.addr(), "--plugins"])
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("li3g.toml")));
    assert_eq!(out.code, Some(78), "{}", out.stderr);
    assert!(out.stderr.contains("plugin loader_error (") && out.stderr.contains("its loader failed"), "{}", out.stderr);
}

#[test]
fn plugins_counts_a_plugin_refused_for_its_settings_and_fails() {
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let config = dir.write("li3g.toml", b"[default.plugins.redis_counter]\nurl = 5\n");
    let out = run(host().arg("plugins").arg("--plugins").arg(dir.path()).arg("--config").arg(&config));
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let header = format!("{}: 1 plugin loaded, 1 plugin refused, 0 files rejected\n", dir.path().display());
    assert!(out.stdout.starts_with(&header), "{}", out.stdout);
    assert!(out.stdout.contains("    REFUSED: plugin redis_counter refused: "), "{}", out.stdout);
    assert!(out.stderr.contains("invalid type: integer `5`, expected a string"), "{}", out.stderr);
}

#[test]
fn the_quick_start_directory_loads_quietly_without_settings() {
    // The example plugin that takes Redis settings loads without a section (its Redis tasks
    // say what to set), so `start` with no configuration is not refused and logs no refusal.
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let out = run(host().arg("plugins").arg("--plugins").arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(": 2 plugins loaded, 0 plugins refused, 0 files rejected\n"), "{}", out.stdout);
    let out = run(host().args(["exec", "Counter::incr", "k", "--plugins"]).arg(dir.path()));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no Redis configured"), "{}", out.stderr);
}

/// `li3g-host CMD` with the default PID file, in `run_dir` as `$XDG_RUNTIME_DIR`.
fn with_default_pid(run_dir: &std::path::Path, command: &mut Command) {
    command.env_remove("LI3G_PID").env("XDG_RUNTIME_DIR", run_dir);
}

#[test]
fn a_foreground_start_holds_the_default_pid_file_for_restart_and_shutdown() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let run_dir = tempfile::tempdir().unwrap();
    let foreground = |verbose: bool| {
        let mut command = host();
        command.args(["start", "--workers", "1", "--servers", &gearmand.addr(), "--plugins"]).arg(dir.path());
        if verbose {
            command.arg("--verbose");
        }
        with_default_pid(run_dir.path(), &mut command);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    let mut first = ChildGuard::spawn(&mut foreground(true));
    let lines = Lines::collect(first.child().stderr.take().unwrap());
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    let pid_file = run_dir.path().join("li3g-host.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), first.id().to_string());
    // A second foreground start on the same default is refused.
    let mut second = ChildGuard::spawn(&mut foreground(false));
    let status = second.wait_timeout(WAIT).expect("the second start is refused");
    assert_eq!(status.code(), Some(1));
    // restart and shutdown find the first.
    let out = run(&mut with_default_pid_cmd(run_dir.path(), "restart"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    lines.wait_for("Restarting", WAIT);
    let out = run(&mut with_default_pid_cmd(run_dir.path(), "shutdown"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(first.wait_timeout(WAIT).is_some_and(|s| s.success()));
}

fn with_default_pid_cmd(run_dir: &std::path::Path, sub: &str) -> Command {
    let mut command = host();
    command.arg(sub);
    with_default_pid(run_dir, &mut command);
    command
}

/// `gearman -f FUNCTION WORKLOAD` (the gearman-tools client), bounded by `timeout(1)`.
fn gearman_cli(gearmand: &Gearmand, function: &str, workload: &str) -> li3g_tests::Run {
    run(Command::new("timeout").args([
        "20",
        "gearman",
        "-h",
        "127.0.0.1",
        "-p",
        &gearmand.port.to_string(),
        "-f",
        function,
        workload,
    ]))
}

#[test]
fn a_json_object_that_is_no_envelope_is_the_arguments_by_name() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let mut worker = host();
    worker.args(["work", "--servers", &gearmand.addr(), "--plugins"]).arg(dir.path()).stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut worker);
    wait_for_workers(&[&gearmand], "Hello::count", 1);
    let out = gearman_cli(&gearmand, "Hello::count", r#"{"to":3}"#);
    // Hello::count reports 1/3, 2/3, 3/3: the CLI prints 33%, 66%, 100%.
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("33% Complete\n66% Complete\n100% Complete"), "{}", out.stdout);
    let out = gearman_cli(&gearmand, "Hello::say", r#"{"name":"Mariano"}"#);
    assert_eq!(out.stdout.trim(), "Hello Mariano", "{}", out.stderr);
    // A name the task does not have, or one it needs and did not get, is named.
    let out = gearman_cli(&gearmand, "Hello::count", r#"{"too":3}"#);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains(r#"Hello::count: no argument named "too"; it takes (to: u64)"#), "{}", out.stderr);
    let out = gearman_cli(&gearmand, "Hello::count", "{}");
    assert!(out.stderr.contains(r#"Hello::count: missing argument "to" (to: u64)"#), "{}", out.stderr);
    // An envelope is still one.
    let out = gearman_cli(&gearmand, "Hello::say", r#"{"args":["envelope"],"id":"x"}"#);
    assert_eq!(out.stdout.trim(), "Hello envelope", "{}", out.stderr);
}

#[test]
fn after_a_restart_with_a_typo_the_refused_workers_back_off_and_ping_names_the_unserved_tasks() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let pid_file = dir.path().join("li3g.pid");
    let config = dir.write("li3g.toml", b"");
    let mut command = host();
    command
        .args(["start", "--verbose", "--workers", "1", "--servers", &gearmand.addr(), "--plugins"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("--pid")
        .arg(&pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(daemon.child().stderr.take().unwrap());
    wait_for_workers(&[&gearmand], "Counter::incr", 1);
    let ping = || run(host().args(["ping", "--servers", &gearmand.addr()]).arg("--plugins").arg(dir.path()));
    let out = ping();
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Pinging... OK\n"), "{}", out.stderr);
    // A typo, then a restart: the new workers refuse to start and are retried after a backoff.
    dir.write("li3g.toml", b"[default.plugins.redis_counter]\nurll = \"redis://127.0.0.1:1/\"\n");
    assert_eq!(run(host().arg("restart").arg("--pid").arg(&pid_file)).code, Some(0));
    lines.wait_for("Not starting: plugin redis_counter refused", WAIT);
    lines.wait_for("Workers are failing fast; next spawn in", WAIT);
    li3g_tests::wait_until("the old worker is gone", WAIT, || {
        !gearmand.status().iter().any(|s| s.function == "Hello::say" && s.workers > 0)
    });
    let out = ping();
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), "Pinging... ERROR\n"), "{}", out.stderr);
    assert!(out.stderr.contains("no worker has registered li3g::ping"), "{}", out.stderr);
    assert!(daemon.wait_timeout(Duration::ZERO).is_none(), "the daemon keeps running: {:#?}", lines.all());
}

#[test]
fn ping_names_a_task_no_worker_serves() {
    let gearmand = Gearmand::start();
    let served = PluginDir::with(&["hello"]);
    let mut worker = host();
    worker.args(["work", "--servers", &gearmand.addr(), "--plugins"]).arg(served.path()).stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut worker);
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    // The plugins directory holds a plugin whose tasks no worker registered.
    let expected = PluginDir::with(&["hello", "redis_counter"]);
    let out = run(host().args(["ping", "--servers", &gearmand.addr()]).arg("--plugins").arg(expected.path()));
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), "Pinging... ERROR\n"), "{}", out.stderr);
    assert!(out.stderr.contains("Counter::incr (plugin redis_counter)"), "{}", out.stderr);
    // Listed in plugins.optional, it is not expected.
    let config = expected.write("li3g.toml", b"[default.plugins]\noptional = [\"redis_counter\"]\n");
    let out = run(host()
        .args(["ping", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(expected.path())
        .arg("--config")
        .arg(config));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Pinging... OK\n"), "{}", out.stderr);
}

#[test]
fn start_listen_puts_the_embedded_job_server_elsewhere() {
    let port = free_port();
    let dir = PluginDir::with(&["hello"]);
    let store = dir.path().join("queue.sqlite");
    let listen = format!("127.0.0.1:{port}");
    let mut command = host();
    command
        .args(["start", "--workers", "1", "--listen", &listen, "--store"])
        .arg(&store)
        .arg("--plugins")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(daemon.child().stderr.take().unwrap());
    lines.wait_for(&format!("Job server listening on {listen}"), WAIT);
    let mut out = None;
    li3g_tests::wait_until("a job runs through the embedded server", WAIT, || {
        let done = run(host().args(["run", "Hello::say", "there", "--sync", "--timeout", "5", "--servers", &listen]));
        let ok = done.code == Some(0);
        out = Some(done);
        ok
    });
    assert_eq!(out.unwrap().stdout, "Hello there\n");
    // Said once on stderr, whether the log went to syslog or (no syslog daemon) to stderr too.
    assert_eq!(lines.count("Job server listening"), 1, "{:#?}", lines.all());
    assert!(daemon.wait_timeout(Duration::ZERO).is_none());
}

/// `start` whose store another job server holds refuses to start, with the reason, and leaves
/// the port unbound (it used to bind it, then its server child failed and backed off while
/// clients connected and hung).
#[test]
fn start_refuses_a_store_another_server_holds() {
    let dir = PluginDir::with(&["hello"]);
    let store = dir.path().join("queue.sqlite");
    let holder_port = free_port();
    let mut holder = host();
    holder
        .args(["server", "--listen", &format!("127.0.0.1:{holder_port}"), "--store"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut holder = ChildGuard::spawn(&mut holder);
    let holder_lines = Lines::collect(holder.child().stderr.take().unwrap());
    holder_lines.wait_for("listening", WAIT);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let out = run(host()
        .args(["start", "--workers", "1", "--listen", &listen, "--store"])
        .arg(&store)
        .arg("--plugins")
        .arg(dir.path()));
    assert_ne!(out.code, Some(0), "start with a held store must fail: {}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "start took {:?} to refuse", started.elapsed());
    assert!(
        out.stderr.contains("not starting the embedded job server") && out.stderr.contains("locked"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Job server listening"), "{}", out.stderr);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens on {listen}");
}

#[test]
fn start_says_once_that_no_configured_job_server_is_reachable() {
    let dir = PluginDir::with(&["hello"]);
    let nobody = format!("127.0.0.1:{}", free_port());
    let mut command = host();
    command
        .args(["start", "--verbose", "--workers", "2", "--servers", &nobody, "--plugins"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(daemon.child().stderr.take().unwrap());
    let line = lines.wait_for("No job server is reachable", WAIT);
    assert!(line.contains(&format!("warning: No job server is reachable ({nobody}: ")), "{line}");
    // The workers back off, each saying so; the daemon's line came once.
    li3g_tests::wait_until("both workers retried", WAIT, || lines.count("retrying in") >= 4);
    // Once: with -v the log is stderr, and the warning is not said twice there.
    assert_eq!(lines.count("No job server is reachable"), 1, "{:#?}", lines.all());
    assert!(daemon.wait_timeout(Duration::ZERO).is_none());
}

#[test]
fn the_log_file_is_reopened_on_sigusr1_after_a_rename() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let log = dir.path().join("li3g.log");
    let mut command = host();
    command
        .args(["start", "--workers", "1", "--servers", &gearmand.addr(), "--plugins"])
        .arg(dir.path())
        .arg("--log-file")
        .arg(&log)
        .env("LI3G_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let daemon = ChildGuard::spawn(&mut command);
    wait_for_workers(&[&gearmand], "Hello::say", 1);
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    li3g_tests::wait_until("the worker's start is logged", WAIT, || read(&log).contains("(Worker) Worker started"));
    // logrotate: rename, then SIGUSR1.
    let rotated = dir.path().join("li3g.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGUSR1) };
    li3g_tests::wait_until("the daemon reopened", WAIT, || read(&log).contains("(Daemon) Reopening the log file"));
    // The worker reopens too: its next line (a job, at debug level) is in the new file.
    let out = run(host().args(["run", "Hello::say", "x", "--sync", "--timeout", "10", "--servers", &gearmand.addr()]));
    assert_eq!(out.stdout, "Hello x\n", "{}", out.stderr);
    li3g_tests::wait_until("the worker's job line is in the new file", WAIT, || read(&log).contains("(Worker) "));
    assert!(read(&rotated).contains("(Worker) Worker started"));
    assert!(!read(&rotated).contains("Hello::say"), "{}", read(&rotated));
}

#[test]
fn the_scheduler_lines_have_one_form_with_and_without_verbose() {
    let (gearmand, redis) = (Gearmand::start(), li3g_tests::Redis::start());
    let dir = PluginDir::with(&["hello"]);
    let config = dir.write("li3g.toml", format!("[default]\nredis = {:?}\n", redis.url()).as_bytes());
    let log = dir.path().join("li3g.log");
    let start = |verbose: bool| {
        let mut command = host();
        command
            .args(["start", "--workers", "1", "--servers", &gearmand.addr(), "--plugins"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if verbose {
            command.arg("--verbose");
        } else {
            command.arg("--log-file").arg(&log);
        }
        let mut daemon = ChildGuard::spawn(&mut command);
        let lines = Lines::collect(daemon.child().stderr.take().unwrap());
        (daemon, lines)
    };
    let (_quiet, _) = start(false);
    li3g_tests::wait_until("the scheduler's first line", WAIT, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("(Scheduler) Moving due jobs from")
    });
    assert!(!std::fs::read_to_string(&log).unwrap().contains("Scheduler: "));
    let (_verbose, lines) = start(true);
    lines.wait_for("(Scheduler) Moving due jobs from", WAIT);
}

#[test]
fn a_daemon_without_syslog_or_log_file_warns_and_logs_to_the_state_directory() {
    if std::path::Path::new("/dev/log").exists() {
        return; // syslog takes the lines here; the fallback is for machines without it
    }
    let dir = PluginDir::with(&["hello"]);
    let pid_file = dir.path().join("li3g.pid");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = run(host()
        .args(["start", "--daemon", "--workers", "1", "--listen", &listen, "--store"])
        .arg(dir.path().join("queue.sqlite"))
        .arg("--plugins")
        .arg(dir.path())
        .arg("--pid")
        .arg(&pid_file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let warning = "li3g-host: warning: no syslog socket (/dev/log) and no --log-file: the daemon logs to ";
    let log = out.stderr.lines().find_map(|l| l.strip_prefix(warning)).unwrap_or_else(|| panic!("{}", out.stderr));
    // In the store's directory (--store's), not the default store's.
    assert_eq!(std::path::Path::new(log), dir.path().join("li3g-host.log"), "{}", out.stderr);
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    li3g_tests::wait_until("the daemon's lines are in the file", WAIT, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.contains(&format!("li3g-host[{pid}]: (Daemon) Starting 1 worker\n"))
    });
    assert_eq!(run(host().arg("shutdown").arg("--pid").arg(&pid_file)).code, Some(0));
}

#[test]
fn ping_fails_when_one_of_two_job_servers_has_no_worker() {
    // A client may queue its job on either server: one without workers leaves it waiting.
    let (served, unserved) = (Gearmand::start(), Gearmand::start());
    let dir = PluginDir::with(&["hello"]);
    let mut worker = host();
    worker.args(["work", "--servers", &served.addr(), "--plugins"]).arg(dir.path()).stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut worker);
    wait_for_workers(&[&served], "Hello::say", 1);
    for servers in [format!("{},{}", served.addr(), unserved.addr()), format!("{},{}", unserved.addr(), served.addr())]
    {
        let out = run(host().args(["ping", "--servers", &servers]).arg("--plugins").arg(dir.path()));
        assert_eq!((out.code, out.stdout.as_str()), (Some(1), "Pinging... ERROR\n"), "{}", out.stderr);
        assert!(out.stderr.contains(&format!("li3g::ping on {}", unserved.addr())), "{}", out.stderr);
    }
    let out = run(host().args(["ping", "--servers", &served.addr()]).arg("--plugins").arg(dir.path()));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Pinging... OK\n"), "{}", out.stderr);
}

#[test]
fn sigusr1_for_logrotate_does_not_fail_the_jobs_in_hand() {
    // The supervisor passed SIGUSR1 on to its workers, whose Redis reads then failed with
    // EINTR: a logrotate failed the jobs in hand.
    let (gearmand, redis) = (Gearmand::start(), li3g_tests::Redis::start());
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let config =
        dir.write("li3g.toml", format!("[default.plugins.redis_counter]\nurl = {:?}\n", redis.url()).as_bytes());
    let log = dir.path().join("li3g.log");
    let mut command = host();
    command
        .args(["start", "--workers", "2", "--servers", &gearmand.addr(), "--plugins"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("--pid")
        .arg(dir.path().join("li3g.pid"))
        .arg("--log-file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let daemon = ChildGuard::spawn(&mut command);
    wait_for_workers(&[&gearmand], "Counter::incr", 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let (stop, pid) = (stop.clone(), daemon.id() as i32);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: kill(2) on our own child's PID.
                unsafe { libc::kill(pid, libc::SIGUSR1) };
                sent += 1;
            }
            sent
        })
    };
    let mut failed = Vec::new();
    for _ in 0..100 {
        let out =
            run(host().args(["run", "Counter::incr", "k", "--sync", "--timeout", "10", "--servers", &gearmand.addr()]));
        if out.code != Some(0) {
            failed.push(out.stderr);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(storm.join().unwrap() > 0);
    assert!(failed.is_empty(), "{} of 100 jobs failed: {:?}", failed.len(), failed.first());
    // The rename is still seen: the workers' next lines are in the new file.
    let rotated = dir.path().join("li3g.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGUSR1) };
    let out = run(host().args(["run", "Hello::say", "x", "--sync", "--timeout", "10", "--servers", &gearmand.addr()]));
    assert_eq!(out.stdout, "Hello x\n", "{}", out.stderr);
    let _ = run(host().arg("shutdown").arg("--pid").arg(dir.path().join("li3g.pid")));
    li3g_tests::wait_until("the workers' last lines are in the new file", WAIT, || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("(Worker) Worker ended")
    });
}

#[test]
fn plugins_does_not_hang_on_a_constructor_that_never_returns() {
    let dir = PluginDir::with(&["hello", "state_misbehave"]);
    let config = dir.write(
        "li3g.toml",
        b"[default.plugins]\nstate_timeout = 1\n\n[default.plugins.state_misbehave]\nmode = \"hang\"\n",
    );
    // timeout(1) bounds the old behaviour, which waited for ever.
    let out = run(Command::new("timeout")
        .arg("20")
        .arg(li3g_tests::artifacts().host.as_os_str())
        .arg("plugins")
        .arg("--plugins")
        .arg(dir.path())
        .arg("--config")
        .arg(&config));
    assert_eq!(out.code, Some(3), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("plugin state_misbehave's state constructor did not return within 1s (plugins.state_timeout)"),
        "{}",
        out.stderr
    );
}

#[test]
fn start_names_the_plugin_whose_constructor_aborts() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "state_misbehave"]);
    let (mut daemon, lines) = start(&gearmand, &dir, "[default.plugins.state_misbehave]\nmode = \"abort\"\n", &[]);
    assert_refused(&mut daemon, &lines, &["plugin state_misbehave's state constructor killed", "SIGABRT"]);
}
