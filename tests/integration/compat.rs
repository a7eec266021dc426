//! li3_gearman compatibility with real peers: a PHP application (the gearman extension) and a
//! python3-gearman client send `json_encode` of the original's envelope, `env` as an object,
//! through gearmand to li3g workers.

use li3g_tests::Worker;
use li3g_tests::{run, wait_until, Gearmand, PluginDir};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const RETRIES: [&str; 3] = ["[]", "3", r#"{"maximum":2,"increment":["5 minutes"]}"#];

/// The PHP peer: `php li3_gearman_client.php HOST:PORT ACTION TASK ARGS...`.
fn php(gearmand: &Gearmand, action: &str, task: &str, args: &[&str]) -> Command {
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_client.php");
    let mut command = Command::new("php");
    command.arg(script).arg(gearmand.addr()).arg(action).arg(task).args(args);
    command.env("HTTP_HOST", "shop.example.com").env("HTTPS", "on").env("LITHIUM_ENVIRONMENT", "production");
    command
}

/// The python3-gearman peer: `LI3G_ACTION=... li3_gearman_client.py HOST:PORT TASK ARGS...`.
fn python(gearmand: &Gearmand, action: &str, task: &str, args: &[&str]) -> Command {
    let script = li3g_tests::workspace_root().join("tests/peers/li3_gearman_client.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(gearmand.addr()).arg(task).args(args);
    command.env("LI3G_ACTION", action).env("HTTP_HOST", "shop.example.com").env("LITHIUM_ENVIRONMENT", "production");
    command
}

fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert_eq!(out.code, Some(0), "{command:?}: {}{}", out.stdout, out.stderr);
    out.stdout.trim_end().to_string()
}

/// Each peer, through `peer(gearmand, action, task, args)`, with its action names.
fn peer_scenario(peer: fn(&Gearmand, &str, &str, &[&str]) -> Command, actions: [&str; 3]) {
    let [normal, high_background, low_background] = actions;
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = Worker::builder(&[gearmand.addr()])
        .plugins(dir.path())
        .env("LI3G_ENVIRONMENT", "staging")
        .registered(&[&gearmand], li3g_host::workload::COMPAT_FUNCTION, 1)
        .spawn();

    // doNormal returns the task's result.
    assert_eq!(ok(&mut peer(&gearmand, normal, "Hello::say", &["Mariano"])), "Hello Mariano");
    // `\Hello` means Hello::run.
    assert_eq!(ok(&mut peer(&gearmand, normal, "Hello", &[])), "I am Hello::run");
    // The application's namespace, as li3_gearman's tasks had it, reaches the plugin's class.
    assert_eq!(ok(&mut peer(&gearmand, normal, "app\\tasks\\Hello::say", &["Nate"])), "Hello Nate");

    // The task reads HTTP_HOST and the environment the envelope carried.
    let server: Value = serde_json::from_str(&ok(&mut peer(&gearmand, normal, "Misbehave::server", &[]))).unwrap();
    assert_eq!(server["environment"], "production", "{server}");
    assert_eq!(server["HTTP_HOST"], "shop.example.com", "{server}");
    let script = server["vars"]["SCRIPT_FILENAME"].as_str().unwrap_or_default();
    assert!(script.contains("/tests/peers/li3_gearman_client"), "`\\/` escapes read back as `/`: {server}");
    assert_eq!(server["vars"]["PHP_SELF"], server["vars"]["SCRIPT_NAME"], "{server}");

    // Background jobs, high and low priority, run: the task records them in a file.
    let record = tempfile::tempdir().unwrap();
    let path = record.path().join("jobs.txt");
    let path_arg = path.to_str().unwrap();
    let handle = ok(&mut peer(&gearmand, high_background, "Misbehave::record", &[path_arg, "high"]));
    assert!(handle.starts_with("H:"), "a background job answers its handle: {handle}");
    ok(&mut peer(&gearmand, low_background, "Misbehave::record", &[path_arg, "low"]));
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    wait_until("both background jobs ran", Duration::from_secs(20), || read().lines().count() == 2);
    let mut lines: Vec<String> = read().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["high production shop.example.com", "low production shop.example.com"]);

    // Every form of `retries` decodes.
    for retries in RETRIES {
        let mut command = peer(&gearmand, normal, "Hello::say", &[retries]);
        assert_eq!(ok(command.env("LI3G_RETRIES", retries)), format!("Hello {retries}"));
    }
}

#[test]
fn a_php_application_triggers_jobs_as_with_li3_gearman() {
    peer_scenario(php, ["doNormal", "doHighBackground", "doLowBackground"]);
}

#[test]
fn python3_gearman_sends_the_same_envelopes() {
    peer_scenario(python, ["normal", "high_background", "low_background"]);
}

#[test]
fn the_php_envelope_bytes_decode_as_sent() {
    // What PHP's json_encode writes for the original's envelope, byte for byte: the decoder
    // reads it exactly (a unit check on bytes from the real encoder).
    let out = run(Command::new("php").args([
        "-r",
        r#"echo json_encode(['id' => sha1('x'), 'args' => ['a/b'], 'env' => ['HTTP_HOST' => 'h', 'SCRIPT_NAME' => '/i.php', 'environment' => 'production'], 'configName' => 'default', 'task' => '\app\tasks\Hello::say', 'background' => true, 'retry' => 0, 'retries' => []]);"#,
    ]));
    assert!(out.stdout.contains(r#""\/i.php""#), "PHP escapes slashes: {}", out.stdout);
    let job = li3g_host::workload::decode(li3g_host::workload::COMPAT_FUNCTION, out.stdout.as_bytes()).unwrap();
    assert_eq!(job.task, "\\app\\tasks\\Hello::say");
    assert_eq!(job.args, json!(["a/b"]));
    assert_eq!(job.env.as_deref(), Some("production"));
    assert_eq!(job.env_vars, [("HTTP_HOST".into(), "h".into()), ("SCRIPT_NAME".to_string(), "/i.php".to_string())]);
    assert!(job.retries.is_none());
}
