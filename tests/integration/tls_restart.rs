//! `li3g-host restart` reads the TLS files for `tls://` servers again: a daemon whose workers
//! reach gearmand through stunnel (mutual TLS) gets a new CA, server and client certificate
//! on disk and on stunnel, is restarted, and runs jobs again through TLS with the new files
//! (its scheduler and monitor too); a file broken at a restart refuses it, `restart` says why, and the
//! workers keep running.

use li3g_tests::tls::{Certs, Stunnel};
use li3g_tests::{host, run, wait_until, wait_until_ok, ChildGuard, Gearmand, Lines, PluginDir};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Copies `certs`' CA and client certificate and key to `dir`'s `ca.pem`, `client.pem`,
/// `client.key`: the files the configuration names, rotated in place.
fn install(certs: &Certs, dir: &Path) {
    for (from, to) in [(&certs.ca, "ca.pem"), (&certs.client.cert, "client.pem"), (&certs.client.key, "client.key")] {
        // Written beside and renamed over, as an operator's deployment does: never half a file.
        let new = dir.join(format!("{to}.new"));
        std::fs::copy(from, &new).unwrap();
        std::fs::rename(&new, dir.join(to)).unwrap();
    }
}

/// `li3g-host run Hello::say TLS --sync` through `server` with `certs`' client files.
fn hello(server: &str, certs: &Certs) {
    let out = run(host()
        .args(["run", "Hello::say", "TLS", "--sync", "--servers", server, "--tls-ca"])
        .arg(&certs.ca)
        .arg("--tls-cert")
        .arg(&certs.client.cert)
        .arg("--tls-key")
        .arg(&certs.client.key));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello TLS\n"), "{}", out.stderr);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn workers(gearmand: &Gearmand) -> u64 {
    gearmand.status().iter().find(|s| s.function == "Hello::say").map_or(0, |s| s.workers)
}

#[test]
fn restart_reads_rotated_tls_files_and_a_broken_one_keeps_the_workers_running() {
    let old = Certs::new();
    let gearmand = Gearmand::start();
    let mut stunnel = Stunnel::start(&old.server, Some(&old.ca), gearmand.port);
    let port = stunnel.port;
    let server = format!("tls://localhost:{port}");
    let plugins = PluginDir::with(&["hello", "misbehave"]);
    let redis = li3g_tests::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    install(&old, dir.path());
    let config = dir.path().join("li3g.toml");
    // Relative TLS paths: read from the directory `start` ran in, at start and at each restart.
    std::fs::write(
        &config,
        format!(
            "[default]\nservers = [\"{server}\"]\ntls_ca = \"ca.pem\"\ntls_cert = \"client.pem\"\ntls_key = \"client.key\"\nredis = \"{}\"\nplugins = {:?}\n",
            redis.url(),
            plugins.path()
        ),
    )
    .unwrap();
    let pid_file = dir.path().join("li3g.pid");
    let metrics = li3g_tests::free_port();
    let up = |answer: u8| {
        let (status, body) = crate::monitor::http(metrics, "GET", "/metrics", &[], "");
        status == 200 && body.contains(&format!("li3g_server_up{{server=\"{server}\"}} {answer}"))
    };
    let mut start = host();
    start.current_dir(dir.path()).args(["start", "--workers", "1", "--verbose", "--metrics"]);
    start.arg(format!("127.0.0.1:{metrics}")).arg("--config").arg(&config);
    start.arg("--pid").arg(&pid_file).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut start);
    let log = Lines::collect(daemon.child().stderr.take().unwrap());
    wait_until("the worker registered through TLS", WAIT, || workers(&gearmand) == 1);
    hello(&server, &old);
    wait_until("the monitor asks the server through TLS", WAIT, || up(1));

    // Rotation: a new CA, server and client certificate, on disk and on stunnel (same port).
    let new = Certs::new();
    install(&new, dir.path());
    drop(stunnel);
    stunnel = wait_until_ok("stunnel restarted with the new certificate", WAIT, Duration::from_millis(100), || {
        Stunnel::try_start_on(port, &new.server, Some(&new.ca), gearmand.port)
    });
    // The worker started before the rotation cannot come back: it holds the old files.
    wait_until("the old worker left gearmand with stunnel", WAIT, || workers(&gearmand) == 0);
    wait_until("the monitor cannot ask the server with the old files", WAIT, || up(0));
    let out = run(host().arg("restart").arg("--pid").arg(&pid_file));
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("is restarting its workers"), "{}", out.stdout);
    wait_until("a new worker registered through TLS with the new files", WAIT, || workers(&gearmand) == 1);
    hello(&server, &new);
    // The monitor was replaced too, and asks the server with the new files.
    wait_until("the monitor asks the server through TLS with the new files", WAIT, || up(1));
    // The scheduler was replaced too: a scheduled job reaches gearmand through the new files.
    let ran = dir.path().join("ran");
    let out = run(host()
        .current_dir(dir.path())
        .args(["run", "Misbehave::append", path(&ran), "scheduled", "--in", "1s", "--config"])
        .arg(&config));
    assert!(out.code == Some(0) && out.stdout.starts_with("scheduled job "), "{}{}", out.stdout, out.stderr);
    wait_until("the scheduled job ran through TLS after the rotation", WAIT, || {
        std::fs::read_to_string(&ran).is_ok_and(|text| text.lines().any(|l| l == "scheduled"))
    });

    // A broken file at the next restart: refused, said why, and the workers keep serving.
    let running = gearmand.worker_pids();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let out = run(host().arg("restart").arg("--pid").arg(&pid_file));
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    for said in ["refused to restart", "TLS settings for tls:// servers", "ca.pem", "keep running"] {
        assert!(out.stderr.contains(said), "expected {said:?} in: {}", out.stderr);
    }
    log.wait_for("Restart refused: TLS settings for tls:// servers", WAIT);
    hello(&server, &new);
    assert_eq!(gearmand.worker_pids(), running, "the workers that ran before the refused restart still serve");
    // A missing file too (the CA good again).
    std::fs::copy(&new.ca, dir.path().join("ca.pem")).unwrap();
    std::fs::remove_file(dir.path().join("client.key")).unwrap();
    let out = run(host().arg("restart").arg("--pid").arg(&pid_file));
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("client.key"), "{}", out.stderr);
    hello(&server, &new);
    assert!(daemon.wait_timeout(Duration::ZERO).is_none(), "the daemon keeps running");
    let out = run(host().arg("shutdown").arg("--pid").arg(&pid_file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    drop(stunnel);
}
