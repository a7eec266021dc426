//! The configuration file as the commands use it: named configurations, environment
//! overrides, per-task timeouts, and errors that name the file and the key.

use li3g_tests::wait_until_ok;
use li3g_tests::{host, run, wait_for_workers, ChildGuard, Gearmand, PluginDir};
use std::process::Stdio;
use std::time::Duration;

fn write_config(dir: &PluginDir, text: &str) -> std::path::PathBuf {
    dir.write("li3g.toml", text.as_bytes())
}

#[test]
fn a_named_configuration_and_an_environment_pick_servers_plugins_and_environment() {
    let (staging, production) = (Gearmand::start(), Gearmand::start());
    let plugins = PluginDir::with(&["hello", "misbehave"]);
    let config = write_config(
        &plugins,
        &format!(
            "[default]\nservers = [\"127.0.0.1:1\"]\n\n\
             [reports]\nservers = [\"{}\"]\nplugins = \"{}\"\nenvironment = \"staging\"\n\n\
             [reports.environments.production]\nservers = \"{}\"\n",
            staging.addr(),
            plugins.path().display(),
            production.addr()
        ),
    );
    let spawn = |extra: &[&str]| {
        let mut command = host();
        command
            .args(["work", "reports", "--config"])
            .arg(&config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::spawn(&mut command)
    };
    let _staging_worker = spawn(&[]);
    wait_for_workers(&[&staging], "Misbehave::context", 1);
    let out = run(host().args(["run", "Misbehave::context", "--sync", "--name", "reports", "--config"]).arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("\"environment\":\"staging\""), "{}", out.stdout);

    let _production_worker = spawn(&["--environment", "production"]);
    wait_for_workers(&[&production], "Misbehave::context", 1);
    let out = run(host()
        .args(["run", "Misbehave::context", "--sync", "--name", "reports", "--environment", "production", "--config"])
        .arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("\"environment\":\"production\""), "{}", out.stdout);
}

#[test]
fn a_bad_configuration_line_is_an_error_naming_file_and_key() {
    let dir = PluginDir::empty();
    let config = write_config(&dir, "[default]\nservers = [\"gearman:forty\"]\n");
    let out = run(host().args(["work", "--config"]).arg(&config));
    assert_eq!(out.code, Some(1));
    let expected = format!("{}: default.servers[0]: ", config.display());
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert!(out.stderr.contains("expected host, host:port or tls://host:port"), "{}", out.stderr);

    let config = write_config(&dir, "[default]\ntimeout = 5\n");
    let out = run(host().args(["plugins", "--config"]).arg(&config));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("line 2") && out.stderr.contains("unknown field `timeout`"), "{}", out.stderr);

    let config = write_config(&dir, "[default]\n[reports]\n");
    let out = run(host().args(["work", "nightly", "--config"]).arg(&config));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no configuration named \"nightly\""), "{}", out.stderr);
    assert!(out.stderr.contains("(it has: default, reports)"), "{}", out.stderr);

    let missing = dir.path().join("missing.toml");
    let out = run(host().args(["plugins", "--config"]).arg(&missing));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains(&missing.display().to_string()), "{}", out.stderr);
}

#[test]
fn a_task_timeout_is_registered_with_the_job_server() {
    // gearmand requeues a job whose worker runs past its CAN_DO_TIMEOUT: the queue shows it
    // waiting again while the only worker is still busy with it.
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let config = write_config(
        &plugins,
        &format!(
            "[default]\nservers = [\"{}\"]\nplugins = \"{}\"\n\n[default.tasks.\"Misbehave::sleep\"]\ntimeout = 1\n",
            gearmand.addr(),
            plugins.path().display()
        ),
    );
    let mut command = host();
    command.args(["work", "--config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::null());
    let _worker = ChildGuard::spawn(&mut command);
    wait_for_workers(&[&gearmand], "Misbehave::sleep", 1);
    let out = run(host().args(["run", "Misbehave::sleep", "6", "--config"]).arg(&config));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let sleep_status = || gearmand.status().into_iter().find(|s| s.function == "Misbehave::sleep");
    let mut seen_running = false;
    wait_until_ok("the job was requeued", Duration::from_secs(5), Duration::from_millis(20), || {
        let status = sleep_status().expect("the function is registered");
        seen_running |= status.running == 1;
        if seen_running && status.running == 0 && status.total == 1 {
            Ok(()) // requeued while the worker still sleeps: the timeout reached gearmand
        } else {
            Err(format!("{status:?}"))
        }
    });
}
