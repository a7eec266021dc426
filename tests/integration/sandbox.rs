//! Per-task Landlock sandboxes against the real kernel and a real gearmand: what a task may
//! read, write and connect to, each refusal with a message that names the path or port, the
//! worker going on after it; a kernel that lacks what the sandbox needs; the whole worker
//! sandboxed without `--atomic`; `plugins` showing each task's sandbox.

use crate::daemon::{call, client, start, WAIT};
use li3g_tests::{host, run, wait_for_workers, Gearmand, PluginDir};
use serde_json::json;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// A scratch tree: `allowed/in.txt` (readable), `writable/`, `outside/`; two listening ports.
struct Scene {
    dir: tempfile::TempDir,
    open: TcpListener,
    closed: TcpListener,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["allowed", "writable", "outside"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("allowed/in.txt"), "hello").unwrap();
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        Scene { dir, open, closed }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn port(listener: &TcpListener) -> u16 {
        listener.local_addr().unwrap().port()
    }
    /// A configuration: `[default.sandbox]` as the scene says, `extra` after it.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "[default.sandbox]\nread = [{:?}]\nwrite = [{:?}]\nconnect = [{}]\n{extra}\n\
             [default.tasks.\"Misbehave::record\".sandbox]\nwrite = [{:?}]\n",
            self.path("allowed"),
            self.path("writable"),
            Scene::port(&self.open),
            self.path("outside"),
        );
        let file = self.path("li3g.toml");
        std::fs::write(&file, text).unwrap();
        file
    }
}

fn config_arg(file: &Path) -> &str {
    file.to_str().expect("UTF-8 path")
}

#[test]
fn a_sandboxed_job_gets_what_its_rules_allow_and_nothing_else() {
    let scene = Scene::new();
    let config = scene.config("");
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, _lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic", "--config", config_arg(&config)]);
    wait_for_workers(&[&gearmand], "Misbehave::read", 1);
    let mut client = client(&gearmand);
    let denied = "Permission denied (os error 13) (permission denied by the task's sandbox: it may read ";

    // Read: allowed beneath its paths, refused elsewhere (as root, /etc/shadow is readable
    // without the sandbox).
    let inside = scene.path("allowed/in.txt");
    assert_eq!(call(&mut client, "Misbehave::read", &[json!(inside)]).unwrap(), b"5");
    let err = call(&mut client, "Misbehave::read", &[json!("/etc/shadow")]).unwrap_err();
    assert!(err.starts_with(&format!("cannot read /etc/shadow: {denied}")), "{err}");

    // Write: allowed beneath its paths, refused elsewhere; nothing was created there.
    let written = scene.path("writable/out.txt");
    call(&mut client, "Misbehave::append", &[json!(written), json!("one")]).unwrap();
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "one\n");
    let outside = scene.path("outside/out.txt");
    let err = call(&mut client, "Misbehave::append", &[json!(outside), json!("two")]).unwrap_err();
    assert!(err.starts_with(&format!("{}: {denied}", outside.display())), "{err}");
    assert!(!outside.exists());

    // Connect: the listed port, not another one.
    let (open, closed) = (Scene::port(&scene.open), Scene::port(&scene.closed));
    assert_eq!(
        call(&mut client, "Misbehave::connect", &[json!(open)]).unwrap(),
        format!("connected to port {open}").as_bytes()
    );
    let err = call(&mut client, "Misbehave::connect", &[json!(closed)]).unwrap_err();
    assert!(err.starts_with(&format!("cannot connect to port {closed}: {denied}")), "{err}");
    assert!(err.contains(&format!("connect {open}")), "the message says what it may do: {err}");

    // A task's own sandbox: its `write` replaces the default's.
    let recorded = scene.path("outside/record.txt");
    call(&mut client, "Misbehave::record", &[json!(recorded), json!("tag")]).unwrap();
    assert!(recorded.exists());

    // The worker went on through every refusal.
    assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"1");
}

/// `li3g-host work` with the scene's configuration, `abi` pretended, until it exits (or 3 s).
fn work(scene: &Scene, gearmand: &Gearmand, dir: &PluginDir, extra: &str, abi: &str) -> li3g_tests::Run {
    let config = scene.config(extra);
    run(host()
        .args(["work", "--atomic", "--verbose", "--max-jobs", "1", "--servers", &gearmand.addr(), "--config"])
        .arg(&config)
        .arg("--plugins")
        .arg(dir.path())
        .env(li3g_host::worker::sandbox::ABI_ENV, abi))
}

#[test]
fn a_sandbox_refuses_to_start_on_a_kernel_that_lacks_what_it_needs() {
    let scene = Scene::new();
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    // ABI 3 has filesystem rules and no TCP rules.
    let out = work(&scene, &gearmand, &dir, "", "3");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("this kernel's Landlock ABI is 3 (0: no Landlock), the sandbox needs 4 (filesystem and TCP rules); refusing"),
        "{}",
        out.stderr
    );
    let out = work(&scene, &gearmand, &dir, "", "0");
    assert!(out.code == Some(2) && out.stderr.contains("Landlock ABI is 0"), "{}", out.stderr);
}

#[test]
fn a_best_effort_sandbox_warns_once_and_enforces_what_the_kernel_has() {
    let scene = Scene::new();
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let config = scene.config("best_effort = true");
    let mut command = host();
    command
        .args(["work", "--atomic", "--verbose", "--servers", &gearmand.addr(), "--config"])
        .arg(&config)
        .arg("--plugins")
        .arg(dir.path())
        .env(li3g_host::worker::sandbox::ABI_ENV, "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut worker = li3g_tests::ChildGuard::spawn(&mut command);
    let lines = li3g_tests::Lines::collect(worker.child().stderr.take().expect("piped stderr"));
    wait_for_workers(&[&gearmand], "Misbehave::read", 1);
    let mut client = client(&gearmand);
    let err = call(&mut client, "Misbehave::read", &[json!("/etc/shadow")]).unwrap_err();
    assert!(err.contains("Permission denied"), "ABI 3 has filesystem rules: {err}");
    let closed = Scene::port(&scene.closed);
    let connected = call(&mut client, "Misbehave::connect", &[json!(closed)]).unwrap();
    assert_eq!(connected, format!("connected to port {closed}").as_bytes(), "ABI 3 has no TCP rules");
    assert_eq!(lines.count("running best effort"), 1, "{:#?}", lines.all());
}

#[test]
fn without_atomic_the_sandbox_holds_the_whole_worker() {
    let scene = Scene::new();
    let config = scene.config("");
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, lines) = start(&gearmand, &dir, &["--workers", "1", "--config", config_arg(&config)]);
    wait_for_workers(&[&gearmand], "Misbehave::read", 1);
    lines.wait_for("per-task sandboxes (Misbehave::record) apply under --atomic only", WAIT);
    let mut client = client(&gearmand);
    let err = call(&mut client, "Misbehave::read", &[json!("/etc/shadow")]).unwrap_err();
    assert!(err.contains("cannot read /etc/shadow: Permission denied"), "{err}");
    // The worker still talks to its job server (its port is allowed) and keeps its globals.
    assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"1");
    assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"2");
}

#[test]
fn plugins_shows_each_tasks_sandbox() {
    let scene = Scene::new();
    let config = scene.config("");
    let dir = PluginDir::with(&["misbehave"]);
    let out = run(host().args(["plugins", "--config"]).arg(&config).arg("--plugins").arg(dir.path()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let default = format!(
        "sandbox: read {}; write {}; connect {}",
        scene.path("allowed").display(),
        scene.path("writable").display(),
        Scene::port(&scene.open)
    );
    let own = format!(
        "sandbox: read {}; write {}; connect {}",
        scene.path("allowed").display(),
        scene.path("outside").display(),
        Scene::port(&scene.open)
    );
    let after = |task: &str| {
        let at = out.stdout.find(task).unwrap_or_else(|| panic!("{task} in {}", out.stdout));
        out.stdout[at..].lines().nth(1).unwrap_or("").trim().to_string()
    };
    assert_eq!(after("Misbehave::read("), default, "{}", out.stdout);
    assert_eq!(after("Misbehave::record("), own, "{}", out.stdout);
}
