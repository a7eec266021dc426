//! Plugin settings and per-worker state through `li3g-host start`, with the example plugin
//! `redis_counter` (a Redis connection as its state) against a real redis-server.

use li3g_host::client::{Client, Outcome, RunOptions};
use li3g_host::gearman::client::ClientError;
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::{free_port, host, run, wait_for_workers, wait_until, ChildGuard, Gearmand, Lines, PluginDir, Redis};
use li3g_tests::{signal, Signal};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "li3g-redis-counter";

/// `li3g-host start --workers N ARGS --verbose` with `settings` as the plugin's config section.
fn start(gearmand: &Gearmand, dir: &PluginDir, settings: &str, args: &[&str]) -> (ChildGuard, Lines) {
    start_with(gearmand, dir, &format!("[default.plugins.redis_counter]\n{settings}\n"), args)
}

/// [`start`] with redis_counter in `plugins.optional`: refused, it is skipped and the others
/// are served (without, `start` refuses to start: see `first_run::`).
fn start_optional(gearmand: &Gearmand, dir: &PluginDir, settings: &str, args: &[&str]) -> (ChildGuard, Lines) {
    let config =
        format!("[default.plugins]\noptional = [\"redis_counter\"]\n\n[default.plugins.redis_counter]\n{settings}\n");
    start_with(gearmand, dir, &config, args)
}

/// `li3g-host start ARGS --verbose` with `config` as the configuration file.
fn start_with(gearmand: &Gearmand, dir: &PluginDir, config: &str, args: &[&str]) -> (ChildGuard, Lines) {
    let config = dir.write("li3g.toml", config.as_bytes());
    let mut command = host();
    command
        .arg("start")
        .args(args)
        .args(["--verbose", "--servers", &gearmand.addr()])
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

fn call(client: &mut Client, task: &str, args: &[Value]) -> Result<Vec<u8>, String> {
    let options = RunOptions { background: false, timeout: Some(WAIT), ..RunOptions::default() };
    match client.run(task, args, &options, &mut |_| {}) {
        Ok(Outcome::Completed { result, .. }) => Ok(result),
        Ok(other) => panic!("{other:?}"),
        Err(li3g_host::client::RunError::Client(ClientError::Exception(message))) => Err(message),
        Err(err) => panic!("{task}: {err}"),
    }
}

/// The connections named [`NAME`] that redis-server lists (`CLIENT LIST`, asked with redis-cli).
fn plugin_connections(redis: &Redis) -> usize {
    let out = run(Command::new("redis-cli").args(["-p", &redis.port.to_string(), "CLIENT", "LIST"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.lines().filter(|l| l.contains(&format!(" name={NAME} "))).count()
}

fn stop(daemon: &mut ChildGuard) {
    signal(daemon.id(), Signal::SIGTERM);
    let status = daemon.wait_timeout(WAIT).expect("the daemon stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_thousand_jobs_through_two_workers_use_two_connections_closed_at_shutdown() {
    let (gearmand, redis) = (Gearmand::start(), Redis::start());
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let settings = format!("url = {:?}\nclosed_key = \"closed\"", redis.url());
    let (mut daemon, lines) = start(&gearmand, &dir, &settings, &["--workers", "2"]);
    wait_for_workers(&[&gearmand], "Counter::incr", 2);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    for i in 1..=1000 {
        assert_eq!(call(&mut client, "Counter::incr", &[json!("jobs")]).unwrap(), i.to_string().into_bytes());
    }
    assert_eq!(plugin_connections(&redis), 2, "{:#?}", lines.all());
    // One state was built and dropped by `start`'s start-up check (before the pool starts).
    assert_eq!(get(&redis, "closed"), "1");
    stop(&mut daemon);
    wait_until("the workers' connections are closed", WAIT, || plugin_connections(&redis) == 0);
    // Closed by the state's destructor (the host dropped it), not only by the process's exit.
    assert_eq!(get(&redis, "closed"), "3");
}

/// `GET key` with redis-cli (empty when unset).
fn get(redis: &Redis, key: &str) -> String {
    let out = run(Command::new("redis-cli").args(["-p", &redis.port.to_string(), "GET", key]));
    out.stdout.trim().to_string()
}

#[test]
fn under_atomic_no_connection_is_shared_between_processes() {
    let (gearmand, redis) = (Gearmand::start(), Redis::start());
    let dir = PluginDir::with(&["redis_counter"]);
    let settings = format!("url = {:?}\nclosed_key = \"closed\"", redis.url());
    let (mut daemon, _lines) = start(&gearmand, &dir, &settings, &["--workers", "2", "--atomic"]);
    wait_for_workers(&[&gearmand], "Counter::whoami", 2);
    // Two clients at once, so both workers fork job children side by side.
    let port = gearmand.port;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port, tls: false }]);
                (0..100)
                    .map(|_| {
                        let out = call(&mut client, "Counter::whoami", &[]).expect("every job succeeds");
                        serde_json::from_slice::<Value>(&out).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let records: Vec<Value> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(records.len(), 200);
    let mut pids_by_connection: HashMap<i64, HashSet<u64>> = HashMap::new();
    for record in &records {
        pids_by_connection.entry(record["id"].as_i64().unwrap()).or_default().insert(record["pid"].as_u64().unwrap());
    }
    for (id, pids) in &pids_by_connection {
        assert_eq!(pids.len(), 1, "connection {id} was used by processes {pids:?}");
    }
    // Each job ran in its own child, with its own connection, closed when the job ended.
    let pids: HashSet<u64> = records.iter().map(|r| r["pid"].as_u64().unwrap()).collect();
    assert_eq!((pids.len(), pids_by_connection.len()), (200, 200));
    wait_until("the job children's connections are closed", WAIT, || plugin_connections(&redis) == 0);
    // Every child dropped its state after its job, and each worker the one it built to check
    // the settings at start (before any fork), and so did `start`'s start-up check.
    assert_eq!(get(&redis, "closed"), "203");
    // A task that does not take the state opens no connection, even in a stateful plugin.
    let before = connections_received(&redis);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    for _ in 0..20 {
        call(&mut client, "Counter::pid", &[]).expect("Counter::pid succeeds");
    }
    // Our own redis-cli INFO is one connection.
    assert_eq!(connections_received(&redis), before + 1);
    stop(&mut daemon);
}

/// redis-server's `total_connections_received`.
fn connections_received(redis: &Redis) -> u64 {
    let out = run(Command::new("redis-cli").args(["-p", &redis.port.to_string(), "INFO", "stats"]));
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in {}", out.stdout))
}

#[test]
fn a_bad_setting_refuses_the_plugin_by_name_and_the_others_are_served() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let (_daemon, lines) = start_optional(&gearmand, &dir, "url = 5", &["--workers", "1"]);
    let line = lines.wait_for("plugin redis_counter refused", WAIT);
    assert!(
        line.contains("li3g.toml: default.plugins.redis_counter.url: invalid type: integer `5`, expected a string"),
        "{line}"
    );
    assert_others_served(&gearmand, "Counter::incr");
}

#[test]
fn a_failing_constructor_refuses_the_plugin_in_that_worker_and_the_others_are_served() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let nobody = format!("url = \"redis://127.0.0.1:{}/\"", free_port());
    let (_daemon, lines) = start_optional(&gearmand, &dir, &nobody, &["--workers", "1"]);
    let line = lines.wait_for("plugin redis_counter refused in this worker", WAIT);
    assert!(line.contains("its state constructor failed: "), "{line}");
    assert_others_served(&gearmand, "Counter::incr");
}

#[test]
fn plugins_lists_the_settings_a_plugin_takes() {
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let out = run(host().arg("plugins").arg("--plugins").arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "    settings: Settings { url, tls_ca, client_name, closed_key } (section [default.plugins.redis_counter])\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("    Counter::incr(key: String) -> i64  (takes the plugin's state)\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("    Counter::pid() -> u32\n"), "{}", out.stdout);
}

#[test]
fn exec_builds_the_state_from_the_settings() {
    let redis = Redis::start();
    let dir = PluginDir::with(&["redis_counter"]);
    let config =
        dir.write("li3g.toml", format!("[default.plugins.redis_counter]\nurl = {:?}\n", redis.url()).as_bytes());
    let exec = |key: &str| {
        run(host().args(["exec", "Counter::incr", key, "--config"]).arg(&config).arg("--plugins").arg(dir.path()))
    };
    let out = exec("k");
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "1\n"), "{}", out.stderr);
    assert_eq!(exec("k").stdout, "2\n");
    // Without settings the plugin loads, and its Redis task says what to set.
    let out = run(host().args(["exec", "Counter::incr", "k"]).arg("--plugins").arg(dir.path()));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("set url in the plugin's section"), "{}", out.stderr);
}

/// `li3g-host work --verbose` for `dir`'s plugins with `config` as the configuration file.
fn work(gearmand: &Gearmand, dir: &PluginDir, config: &str) -> (ChildGuard, Lines) {
    work_with(gearmand, dir, config, &[])
}

/// [`work`] with more flags.
fn work_with(gearmand: &Gearmand, dir: &PluginDir, config: &str, args: &[&str]) -> (ChildGuard, Lines) {
    let config = dir.write("li3g.toml", config.as_bytes());
    let mut command = host();
    command
        .args(["work", "--verbose", "--servers", &gearmand.addr()])
        .args(args)
        .arg("--plugins")
        .arg(dir.path())
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut worker = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(worker.child().stderr.take().expect("piped stderr"));
    (worker, lines)
}

/// A Redis that accepts connections and never answers: a listener nobody accepts from (the
/// kernel completes the handshakes).
fn hung_redis() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a listener");
    let url = format!("redis://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    (listener, url)
}

#[test]
fn a_blocking_state_constructor_is_named_and_ends_the_worker_at_its_deadline() {
    let gearmand = Gearmand::start();
    let (_listener, url) = hung_redis();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    // The plugin's own read timeout (5 s) is longer than this deadline.
    let config = format!("[default.plugins]\nstate_timeout = 1\n\n[default.plugins.redis_counter]\nurl = {url:?}\n");
    let (mut worker, lines) = work(&gearmand, &dir, &config);
    lines.wait_for("Building the state of plugin redis_counter", WAIT);
    let status = worker.wait_timeout(WAIT).expect("the worker exits at the deadline");
    assert_eq!(status.code(), Some(li3g_host::signals::EXIT_STATE_TIMEOUT), "{:#?}", lines.all());
    let line = lines.wait_for("did not return within", WAIT);
    assert!(line.contains("plugin redis_counter's state constructor did not return within 1s"), "{line}");
}

#[test]
fn a_stop_signal_while_a_constructor_blocks_ends_the_worker_at_once() {
    let gearmand = Gearmand::start();
    let (_listener, url) = hung_redis();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let (mut worker, lines) = work(&gearmand, &dir, &format!("[default.plugins.redis_counter]\nurl = {url:?}\n"));
    lines.wait_for("Building the state of plugin redis_counter", WAIT);
    signal(worker.id(), Signal::SIGTERM);
    let status = worker.wait_timeout(WAIT).expect("the worker stops on the first SIGTERM");
    assert_eq!(status.code(), Some(0), "{:#?}", lines.all());
    // It ended there: the constructor was not left to fail and the worker never started.
    assert_eq!(lines.count("Worker started"), 0, "{:#?}", lines.all());
    assert_eq!(lines.count("refused"), 0, "{:#?}", lines.all());
}

#[test]
fn redis_restarted_under_a_running_worker_later_jobs_succeed() {
    let (gearmand, redis) = (Gearmand::start(), Redis::start());
    let port = redis.port;
    let dir = PluginDir::with(&["redis_counter"]);
    let (_worker, lines) =
        work(&gearmand, &dir, &format!("[default.plugins.redis_counter]\nurl = {:?}\n", redis.url()));
    wait_for_workers(&[&gearmand], "Counter::incr", 1);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    assert_eq!(call(&mut client, "Counter::incr", &[json!("k")]).unwrap(), b"1");
    redis.kill();
    let _redis = Redis::start_on(port);
    // The first job may meet the broken connection; the state reconnects and later jobs succeed.
    let mut outcomes = Vec::new();
    wait_until("a job succeeds after the restart", WAIT, || {
        let outcome = call(&mut client, "Counter::incr", &[json!("k")]);
        let ok = outcome.is_ok();
        outcomes.push(outcome);
        ok
    });
    // At most the one job that met the broken connection failed.
    assert!(outcomes.len() <= 2, "{outcomes:?} {:#?}", lines.all());
    for _ in 0..3 {
        call(&mut client, "Counter::incr", &[json!("k")]).expect("later jobs succeed");
    }
}

#[test]
fn under_atomic_a_constructor_that_starts_a_thread_refuses_only_its_plugin() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "threaded_state"]);
    let (_worker, lines) =
        work_with(&gearmand, &dir, "[default.plugins]\noptional = [\"threaded_state\"]\n", &["--atomic"]);
    let line = lines.wait_for("plugin threaded_state refused under --atomic", WAIT);
    assert!(line.contains("its state constructor started a thread"), "{line}");
    // The worker stayed single-threaded: it forks the other plugins' jobs.
    assert_others_served(&gearmand, "ThreadedState::run");
}

#[test]
fn a_panicking_state_destructor_is_reported_and_the_worker_ends_cleanly() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "drop_panic"]);
    for atomic in [false, true] {
        let args: &[&str] = if atomic { &["--atomic"] } else { &[] };
        let (mut worker, lines) = work_with(&gearmand, &dir, "", args);
        wait_for_workers(&[&gearmand], "DropPanic::run", 1);
        let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
        assert_eq!(call(&mut client, "DropPanic::run", &[]).unwrap(), b"DropPanic::run");
        signal(worker.id(), Signal::SIGTERM);
        let status = worker.wait_timeout(WAIT).expect("the worker stops");
        assert_eq!(status.code(), Some(0), "atomic {atomic}: {status:?} {:#?}", lines.all());
        let line = lines.wait_for("the state destructor of plugin drop_panic panicked", WAIT);
        assert!(line.contains("Fragile cannot be dropped"), "{line}");
        wait_until("the worker is gone from the server", WAIT, || {
            !gearmand.status().iter().any(|s| s.function == "DropPanic::run" && s.workers > 0)
        });
    }
}

/// The connections named `name` that redis-server lists.
fn connections_named(redis: &Redis, name: &str) -> usize {
    let out = run(Command::new("redis-cli").args(["-p", &redis.port.to_string(), "CLIENT", "LIST"]));
    out.stdout.lines().filter(|l| l.contains(&format!(" name={name} "))).count()
}

#[test]
fn restart_applies_edited_plugin_settings_and_a_broken_file_keeps_the_old_ones() {
    let (gearmand, redis) = (Gearmand::start(), Redis::start());
    let dir = PluginDir::with(&["redis_counter"]);
    let section = |name: &str| format!("url = {:?}\nclient_name = {name:?}", redis.url());
    let (mut daemon, lines) = start(&gearmand, &dir, &section("before-restart"), &["--workers", "1"]);
    wait_until("the worker connects", WAIT, || connections_named(&redis, "before-restart") == 1);
    dir.write("li3g.toml", format!("[default.plugins.redis_counter]\n{}\n", section("after-restart")).as_bytes());
    signal(daemon.id(), Signal::SIGHUP);
    wait_until("the new worker uses the new settings", WAIT, || {
        connections_named(&redis, "after-restart") == 1 && connections_named(&redis, "before-restart") == 0
    });
    // A file that no longer reads: the next workers get the settings the daemon started with.
    dir.write("li3g.toml", b"[default.plugins.redis_counter\n");
    signal(daemon.id(), Signal::SIGHUP);
    lines.wait_for("Keeping the plugin settings read at start", WAIT);
    wait_until("the replacement worker connects", WAIT, || connections_named(&redis, "before-restart") == 1);
    stop(&mut daemon);
}

#[test]
fn settings_sections_no_plugin_reads_are_reported() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "redis_counter"]);
    let config =
        "[default.plugins.redis_countr]\nurl = \"x\"\n\n[default.plugins.li3g-plugin-hello]\ngreeting = \"Hi\"\n";
    let file = dir.write("li3g.toml", config.as_bytes());
    let out = run(host().arg("plugins").arg("--plugins").arg(dir.path()).arg("--config").arg(&file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("default.plugins.redis_countr names no loaded plugin; its settings are unused"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "default.plugins.li3g-plugin-hello: plugin li3g-plugin-hello takes no settings; the section is unused"
        ),
        "{}",
        out.stderr
    );
    // A worker says the same in its log.
    let (_worker, lines) = work(&gearmand, &dir, config);
    lines.wait_for("redis_countr names no loaded plugin", WAIT);
    lines.wait_for("plugin li3g-plugin-hello takes no settings", WAIT);
}

#[test]
fn a_bad_value_from_an_environment_override_names_the_override_key() {
    let redis = Redis::start();
    let dir = PluginDir::with(&["redis_counter"]);
    let config = format!(
        "[default.plugins.redis_counter]\nurl = {:?}\n\n[default.environments.production.plugins.redis_counter]\nclient_name = 7\n",
        redis.url()
    );
    let file = dir.write("li3g.toml", config.as_bytes());
    let exec = |env: &str| {
        run(host()
            .args(["exec", "Counter::incr", "k", "--environment", env, "--config"])
            .arg(&file)
            .arg("--plugins")
            .arg(dir.path()))
    };
    let out = exec("production");
    assert!(
        out.stderr.contains("default.environments.production.plugins.redis_counter.client_name: invalid type: integer"),
        "{}",
        out.stderr
    );
    // The base section alone is fine.
    let out = exec("development");
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "1\n"), "{}", out.stderr);
}

/// The worker serves the other plugins (`Hello::say` answers) and registers no task `refused`.
fn assert_others_served(gearmand: &Gearmand, refused: &str) {
    wait_for_workers(&[gearmand], "Hello::say", 1);
    let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    assert_eq!(call(&mut client, "Hello::say", &[json!("x")]).unwrap(), b"Hello x");
    assert!(!gearmand.status().iter().any(|s| s.function == refused && s.workers > 0), "{refused} is not served");
}
