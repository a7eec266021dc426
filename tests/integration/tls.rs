//! TLS on Gearman connections: li3g's worker and client through stunnel in front of a real
//! gearmand, and against the embedded server's TLS listener, with and without mutual TLS;
//! every verification failure named; a worker reconnecting through TLS after its server
//! restarts; plaintext on a non-loopback address refused.

use li3g_tests::tls::{CertFiles, Certs, Stunnel, TlsServer};
use li3g_tests::{host, run, wait_for_workers, Gearmand, PluginDir, Run, Worker};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `li3g-host run Hello::say NAME --sync` against `server` with `tls` arguments.
fn hello(server: &str, tls: &[&Path]) -> Run {
    let mut command = host();
    command.args(["run", "Hello::say", "TLS", "--sync", "--servers", server]);
    add_tls(&mut command, tls);
    run(&mut command)
}

/// `--tls-ca CA [--tls-cert CERT --tls-key KEY]` from `[ca, cert, key]` (as many as given).
fn add_tls(command: &mut Command, tls: &[&Path]) {
    for (flag, path) in ["--tls-ca", "--tls-cert", "--tls-key"].iter().zip(tls) {
        command.arg(flag).arg(path);
    }
}

fn answered(out: &Run) {
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "Hello TLS\n"), "{}", out.stderr);
}

fn refused(out: &Run, cause: &str) {
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stderr.contains("TLS: ") && out.stderr.contains(cause), "expected {cause:?} in: {}", out.stderr);
}

/// A worker of the hello plugin on the TLS server `server`, registered on `plain` (the
/// plaintext side the harness asks).
fn tls_worker(dir: &PluginDir, server: &str, plain: &Gearmand, tls: &[&Path]) -> li3g_tests::ChildGuard {
    let mut args = Vec::new();
    for (flag, path) in ["--tls-ca", "--tls-cert", "--tls-key"].iter().zip(tls) {
        args.push(flag.to_string());
        args.push(path.display().to_string());
    }
    Worker::builder(&[server]).plugins(dir.path()).args(args).registered(&[plain], "Hello::say", 1).spawn()
}

#[test]
fn worker_and_client_through_stunnel_in_front_of_gearmand() {
    let certs = Certs::new();
    let gearmand = Gearmand::start();
    let stunnel = Stunnel::start(&certs.server, None, gearmand.port);
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{}", stunnel.port);
    let _worker = tls_worker(&dir, &server, &gearmand, &[&certs.ca]);
    answered(&hello(&server, &[&certs.ca]));
    // The IP address is in the certificate too.
    answered(&hello(&format!("tls://127.0.0.1:{}", stunnel.port), &[&certs.ca]));
    // The port speaks TLS only: a plaintext client gets nothing through it.
    let out = hello(&format!("127.0.0.1:{}", stunnel.port), &[]);
    assert_ne!(out.code, Some(0), "plaintext went through stunnel: {}", out.stdout);
}

#[test]
fn mutual_tls_through_stunnel() {
    let certs = Certs::new();
    let gearmand = Gearmand::start();
    let stunnel = Stunnel::start(&certs.server, Some(&certs.ca), gearmand.port);
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{}", stunnel.port);
    let client = [certs.ca.as_path(), &certs.client.cert, &certs.client.key];
    let _worker = tls_worker(&dir, &server, &gearmand, &client);
    answered(&hello(&server, &client));
    refused(&hello(&server, &[&certs.ca]), "client certificate");
}

#[test]
fn embedded_server_tls_beside_loopback_plaintext() {
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{}", tls.tls_port);
    let _worker = tls_worker(&dir, &server, &tls.server, &[&certs.ca]);
    answered(&hello(&server, &[&certs.ca]));
    // Local tools keep the plaintext listener on loopback; the same worker serves both.
    answered(&hello(&tls.server.addr(), &[]));
}

#[test]
fn embedded_server_mutual_tls_admits_only_clients_with_a_certificate_of_its_ca() {
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, Some(&certs.ca));
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{}", tls.tls_port);
    let client = [certs.ca.as_path(), &certs.client.cert, &certs.client.key];
    let _worker = tls_worker(&dir, &server, &tls.server, &client);
    answered(&hello(&server, &client));
    refused(&hello(&server, &[&certs.ca]), "demands a client certificate");
    let stranger = [certs.ca.as_path(), &certs.stranger.cert, &certs.stranger.key];
    refused(&hello(&server, &stranger), "unknown CA");
}

#[test]
fn verification_failures_name_their_cause() {
    let certs = Certs::new();
    let check = |cert: &CertFiles, ca: &Path, cause: &str| {
        let tls = TlsServer::start(cert, None);
        refused(&hello(&format!("tls://localhost:{}", tls.tls_port), &[ca]), cause);
    };
    check(&certs.server, &certs.other_ca, "unknown CA");
    check(&certs.expired, &certs.ca, "expired");
    check(&certs.wrong_host, &certs.ca, "wrong host name");
    // A plaintext server where TLS was asked for.
    let plain = Gearmand::start();
    refused(&hello(&format!("tls://localhost:{}", plain.port), &[&certs.ca]), "does not speak TLS");
}

#[test]
fn the_worker_reconnects_through_tls_after_the_server_restarts() {
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let (port, tls_port) = (tls.server.port, tls.tls_port);
    let dir = PluginDir::with(&["hello"]);
    let server = format!("tls://localhost:{tls_port}");
    let _worker = tls_worker(&dir, &server, &tls.server, &[&certs.ca]);
    answered(&hello(&server, &[&certs.ca]));
    tls.server.kill();
    let again = li3g_tests::wait_until_ok(
        "the TLS server restarted on its ports",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || TlsServer::try_start_on(port, tls_port, &certs.server, None),
    );
    wait_for_workers(&[&again.server], "Hello::say", 1);
    answered(&hello(&server, &[&certs.ca]));
}

#[test]
fn plaintext_on_a_non_loopback_address_is_refused_with_the_reason() {
    let out = run(host().args(["server", "--listen", "0.0.0.0:0"]));
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("refusing to listen on 0.0.0.0:0 in plaintext")
            && out.stderr.contains("whoever reaches that port")
            && out.stderr.contains("--insecure-listen"),
        "{}",
        out.stderr
    );
    // The daemon's embedded server too.
    let out = run(host().args(["start", "--listen", "0.0.0.0:0"]));
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("refusing to listen on 0.0.0.0:0 in plaintext"), "{}", out.stderr);
}

#[test]
fn a_worker_on_a_tls_and_a_plaintext_server_at_once_moves_big_results_through_tls() {
    // Two servers put the worker in its non-blocking mode (one poll over both connections).
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let server = format!("tls://localhost:{}", tls.tls_port);
    let _worker = Worker::builder(&[server.as_str(), &gearmand.addr()])
        .plugins(dir.path())
        .arg("--tls-ca")
        .arg(&certs.ca)
        .registered(&[&tls.server, &gearmand], "Misbehave::big", 1)
        .spawn();
    for target in [&server, &gearmand.addr()] {
        let mut command = host();
        command.args(["run", "Misbehave::big", "8", "--sync", "--servers", target]).arg("--tls-ca").arg(&certs.ca);
        let out = run(&mut command);
        assert_eq!(out.code, Some(0), "{target}: {}", out.stderr);
        // 8 MiB of result (and its JSON quotes and line end), through TLS both ways.
        assert!(out.stdout.len() >= 8 << 20, "{target}: {} bytes", out.stdout.len());
    }
}

#[test]
fn the_scheduler_worker_and_client_of_a_configuration_use_its_tls_keys() {
    // Mutual TLS through stunnel, with every TLS setting in the configuration file.
    let certs = Certs::new();
    let gearmand = Gearmand::start();
    let stunnel = Stunnel::start(&certs.server, Some(&certs.ca), gearmand.port);
    let redis = li3g_tests::Redis::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("li3g.toml");
    std::fs::write(
        &config,
        format!(
            "[default]\nservers = [\"tls://localhost:{}\"]\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\nredis = \"{}\"\nplugins = {:?}\n",
            stunnel.port,
            certs.ca,
            certs.client.cert,
            certs.client.key,
            redis.url(),
            plugins.path()
        ),
    )
    .unwrap();
    let _worker = Worker::builder::<&str>(&[]).config(&config).registered(&[&gearmand], "Misbehave::append", 1).spawn();
    let mut scheduler = host();
    scheduler.args(["scheduler", "--verbose", "--config"]).arg(&config).stdout(std::process::Stdio::null());
    scheduler.stderr(std::process::Stdio::piped());
    let mut scheduler = li3g_tests::ChildGuard::spawn(&mut scheduler);
    let lines = li3g_tests::Lines::collect(scheduler.child().stderr.take().unwrap());
    lines.wait_for("Moving due jobs", Duration::from_secs(30));
    let file = dir.path().join("ran");
    let out = run(host()
        .args(["run", "Misbehave::append", &file.display().to_string(), "scheduled", "--in", "1s", "--config"])
        .arg(&config));
    assert!(out.code == Some(0) && out.stdout.starts_with("scheduled job "), "{}{}", out.stdout, out.stderr);
    li3g_tests::wait_until("the scheduled job ran through TLS", Duration::from_secs(30), || {
        std::fs::read_to_string(&file).is_ok_and(|text| text.lines().any(|l| l == "scheduled"))
    });
    // The same configuration without its client certificate is refused by stunnel.
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        format!("[default]\nservers = [\"tls://localhost:{}\"]\ntls_ca = {:?}\n", stunnel.port, certs.ca),
    )
    .unwrap();
    let out = run(host().args(["run", "Misbehave::append", "x", "y", "--sync", "--config"]).arg(&bare));
    refused(&out, "client certificate");
}

#[test]
fn the_embedded_server_takes_its_tls_settings_from_the_configuration() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("li3g.toml");
    let (server, tls_port) = li3g_tests::on_a_free_port("li3g-host server configured for TLS", |tls_port| {
        std::fs::write(
            &config,
            format!(
                "[default]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
                certs.server.cert, certs.server.key, certs.ca
            ),
        )
        .unwrap();
        let server = Gearmand::try_embedded_on(li3g_tests::free_port(), None, &["--config", config.to_str().unwrap()])?;
        li3g_tests::wait_for_port(tls_port, Duration::from_secs(10))
            .then_some((server, tls_port))
            .ok_or_else(|| format!("the TLS port {tls_port} does not accept"))
    });
    let dir_plugins = PluginDir::with(&["hello"]);
    let target = format!("tls://localhost:{tls_port}");
    let client = [certs.ca.as_path(), &certs.client.cert, &certs.client.key];
    let _worker = tls_worker(&dir_plugins, &target, &server, &client);
    answered(&hello(&target, &client));
    refused(&hello(&target, &[&certs.ca]), "demands a client certificate");
}
