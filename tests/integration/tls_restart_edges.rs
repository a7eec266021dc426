//! `restart` and the TLS files at their edges (beside `tls_restart`): a CA path that names a
//! FIFO or a directory refuses the restart at once, and the supervisor keeps answering
//! (`shutdown` works); a CA that parses but did not sign the server's certificate refuses it
//! too; restarts in a row while jobs run lose none and run none twice.

use li3g_host::client::{Outcome, RunOptions};
use li3g_tests::tls::{Certs, Stunnel};
use li3g_tests::{host, run, wait_until, ChildGuard, Gearmand, Lines, PluginDir};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn workers(gearmand: &Gearmand, function: &str) -> u64 {
    gearmand.status().iter().find(|s| s.function == function).map_or(0, |s| s.workers)
}

/// A daemon (`workers` workers, `start --verbose`) reaching `gearmand` through stunnel as
/// `tls://localhost:PORT`, its CA `ca.pem` in its directory, with `extra` in its configuration.
struct TlsDaemon {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    pid_file: std::path::PathBuf,
    daemon: ChildGuard,
    log: Lines,
    stunnel: Option<Stunnel>,
}

impl TlsDaemon {
    fn start(gearmand: &Gearmand, certs: &Certs, plugins: &PluginDir, workers: usize, extra: &str) -> TlsDaemon {
        let stunnel = Stunnel::start(&certs.server, None, gearmand.port);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&certs.ca, dir.path().join("ca.pem")).unwrap();
        let config = dir.path().join("li3g.toml");
        std::fs::write(
            &config,
            format!(
                "[default]\nservers = [\"tls://localhost:{}\"]\ntls_ca = \"ca.pem\"\nplugins = {:?}\n{extra}",
                stunnel.port,
                plugins.path()
            ),
        )
        .unwrap();
        let pid_file = dir.path().join("li3g.pid");
        let mut start = host();
        start.current_dir(dir.path()).args(["start", "--workers", &workers.to_string(), "--verbose", "--config"]);
        start.arg(&config).arg("--pid").arg(&pid_file).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut daemon = ChildGuard::spawn(&mut start);
        let log = Lines::collect(daemon.child().stderr.take().unwrap());
        TlsDaemon { dir, config, pid_file, daemon, log, stunnel: Some(stunnel) }
    }

    fn control(&self, command: &str) -> li3g_tests::Run {
        run(host().arg(command).arg("--pid").arg(&self.pid_file))
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// The CA file replaced by a FIFO (nobody writing to it), then by a directory: each `restart`
/// is refused at once naming the file and why, the workers keep serving, and the daemon still
/// stops on `shutdown`. (Before, the supervisor opened the FIFO and waited there for a writer
/// for good: `restart` gave up after 10 s, and `shutdown` waited forever, SIGTERM unanswered.)
#[test]
fn a_tls_file_that_is_no_regular_file_refuses_the_restart_at_once_and_the_daemon_still_stops() {
    let certs = Certs::new();
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["hello"]);
    let mut daemon = TlsDaemon::start(&gearmand, &certs, &plugins, 1, "");
    wait_until("the worker registered through TLS", WAIT, || workers(&gearmand, "Hello::say") == 1);
    let running = gearmand.worker_pids();
    let ca = daemon.ca();
    for (what, make) in [
        (
            "a FIFO",
            (|p: &Path| assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success())) as fn(&Path),
        ),
        ("a directory", |p: &Path| std::fs::create_dir(p).unwrap()),
    ] {
        std::fs::remove_file(&ca).unwrap();
        make(&ca);
        let asked = Instant::now();
        let out = daemon.control("restart");
        assert_eq!(out.code, Some(1), "{what}: {}{}", out.stdout, out.stderr);
        for said in ["refused to restart", "ca.pem", "not a regular file"] {
            assert!(out.stderr.contains(said), "{what}: expected {said:?} in: {}", out.stderr);
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "{what}: answered at once, not after {:?}", asked.elapsed());
        assert_eq!(gearmand.worker_pids(), running, "{what}: the same workers serve");
        // Put back as a file for the next case.
        if std::fs::metadata(&ca).unwrap().is_dir() {
            std::fs::remove_dir(&ca).unwrap();
        } else {
            std::fs::remove_file(&ca).unwrap();
        }
        std::fs::copy(&certs.ca, &ca).unwrap();
    }
    daemon.log.wait_for("Restart refused", WAIT);
    let out = daemon.control("shutdown");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(daemon.daemon.wait_timeout(Duration::from_secs(10)).is_some(), "the daemon stopped");
}

/// A CA file replaced by another CA's certificate (it parses; it did not sign the server's
/// certificate): `restart` asks the `tls://` server with it, is refused, says why and keeps the
/// workers that serve. With the server down, the same restart is not held back (nothing can be
/// told about the files).
/// (Before, `restart` said "is restarting", the workers that served left, and the new ones
/// could not connect: nothing served.)
#[test]
fn a_ca_that_does_not_verify_the_server_refuses_the_restart_and_keeps_the_workers() {
    let certs = Certs::new();
    let other = Certs::new();
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["hello"]);
    let mut daemon = TlsDaemon::start(&gearmand, &certs, &plugins, 1, "");
    wait_until("the worker registered through TLS", WAIT, || workers(&gearmand, "Hello::say") == 1);
    let running = gearmand.worker_pids();
    std::fs::copy(&other.ca, daemon.ca()).unwrap();
    let out = daemon.control("restart");
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    for said in ["refused to restart", "refuses the new TLS files", "certificate is refused"] {
        assert!(out.stderr.contains(said), "expected {said:?} in: {}", out.stderr);
    }
    assert_eq!(gearmand.worker_pids(), running, "the same workers serve");
    // The right CA again: restarted, and a new worker serves through TLS.
    std::fs::copy(&certs.ca, daemon.ca()).unwrap();
    let out = daemon.control("restart");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    wait_until("a new worker serves", WAIT, || {
        let now = gearmand.worker_pids();
        now.len() == 1 && now != running
    });
    // The server down: nothing to ask, so the restart goes ahead.
    drop(daemon.stunnel.take());
    std::fs::copy(&other.ca, daemon.ca()).unwrap();
    let out = daemon.control("restart");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let out = daemon.control("shutdown");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(daemon.daemon.wait_timeout(Duration::from_secs(10)).is_some(), "the daemon stopped");
}

/// Ten `restart`s in a row while jobs are submitted: every `restart` is answered, and every
/// job the client was told is queued (straight to gearmand) or scheduled (in Redis, moved by
/// the daemon's scheduler, which each restart replaces since it reaches a `tls://` server)
/// runs exactly once, through TLS.
#[test]
fn ten_restarts_in_a_row_lose_no_job_and_run_none_twice() {
    let certs = Certs::new();
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let redis = li3g_tests::Redis::start();
    let daemon = TlsDaemon::start(&gearmand, &certs, &plugins, 2, &format!("redis = \"{}\"\n", redis.url()));
    wait_until("the workers registered through TLS", WAIT, || workers(&gearmand, "Misbehave::append") == 2);
    let path = daemon.dir.path().join("ran");
    let config = li3g_host::config::load(Some(&daemon.config), "default", None).unwrap();
    let submitter = {
        let path = path.display().to_string();
        let gearmand_addr = gearmand.addr();
        std::thread::spawn(move || {
            // Straight to gearmand (plaintext): the jobs reach the daemon's workers through TLS.
            let mut config = config;
            config.servers = vec![gearmand_addr.parse().unwrap()];
            let mut client = li3g_host::client::for_config(&config);
            let mut acked = Vec::new();
            let start = Instant::now();
            for n in 0..400 {
                let line = format!("j{n}");
                // Every other one scheduled, due a moment later.
                let schedule = (n % 2 == 1).then(|| std::time::SystemTime::now() + Duration::from_millis(100));
                let options = RunOptions { background: true, schedule, ..RunOptions::default() };
                let args = [json!(path), json!(line)];
                match client.run("Misbehave::append", &args, &options, &mut |_| {}) {
                    Ok(Outcome::Queued { .. } | Outcome::Scheduled { .. }) => acked.push(line),
                    other => panic!("{other:?}"),
                }
                std::thread::sleep(Duration::from_millis(5));
                if start.elapsed() > WAIT {
                    break;
                }
            }
            acked
        })
    };
    for n in 0..10 {
        let out = daemon.control("restart");
        assert_eq!(out.code, Some(0), "restart {n}: {}{}", out.stdout, out.stderr);
    }
    let acked = submitter.join().unwrap();
    wait_until("every job ran", WAIT, || {
        let ran = std::fs::read_to_string(&path).unwrap_or_default();
        ran.lines().count() >= acked.len()
    });
    wait_until("gearmand holds no job", WAIT, || {
        gearmand.status().iter().filter(|s| s.function == "Misbehave::append").all(|s| s.total == 0)
    });
    let ran: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    for line in &acked {
        assert_eq!(ran.iter().filter(|l| *l == line).count(), 1, "{line} ran once: {} lines", ran.len());
    }
    assert_eq!(ran.len(), acked.len(), "nothing else ran");
    eprintln!("10 restarts in a row: {} jobs queued or scheduled, {} ran", acked.len(), ran.len());
    let out = daemon.control("shutdown");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    drop(daemon);
}
