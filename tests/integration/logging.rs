//! Log lines: what `--verbose` shows at the default level, and lines from several workers that
//! never interleave.

use li3g_host::gearman::client::{ClientError, GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::{host, wait_for_workers, wait_until, ChildGuard, Gearmand, Lines, PluginDir};
use li3g_tests::{signal, Signal};
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn client(gearmand: &Gearmand) -> GearmanClient {
    GearmanClient::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }])
}

fn job(function: &str, workload: &[u8]) -> Submit {
    Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() }
}

#[test]
fn verbose_shows_the_start_and_failures_and_nothing_per_successful_job() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let mut command = host();
    command
        .args(["work", "--verbose", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("LI3G_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut worker = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(worker.child().stderr.take().expect("piped stderr"));
    let pid = worker.id();
    let started = lines.wait_for("(Worker) Worker started", WAIT);
    assert!(started.starts_with(&format!("li3g-host[{pid}]: (Worker) ")), "{started}");
    wait_for_workers(&[&gearmand], "Hello::say", 1);

    let mut client = client(&gearmand);
    let ok = client.submit_sync(&job("Hello::say", b"quiet"), Some(WAIT), &mut |_| {});
    assert_eq!(ok.expect("Hello::say completes").1, b"Hello quiet");
    let failed = client.submit_sync(&job("Misbehave::fail", b"[\"the disk is full\"]"), Some(WAIT), &mut |_| {});
    assert!(matches!(failed, Err(ClientError::Exception(_)) | Err(ClientError::Failed)), "{failed:?}");
    let line = lines.wait_for("Misbehave::fail", WAIT);
    assert!(line.contains("the disk is full"), "the failure line names task and message: {line}");
    // Every line before the failure: none is about the successful job.
    let all = lines.all();
    let before: Vec<&String> = all.iter().take_while(|l| !l.contains("Misbehave::fail")).collect();
    assert!(before.iter().all(|l| !l.contains("Hello::say") && !l.contains("quiet")), "{before:#?}");

    signal(pid, Signal::SIGTERM);
    worker.wait_timeout(WAIT).expect("the worker stops");
    lines.wait_for("(Worker) Worker ended: 1 job completed, 1 failed", WAIT);
}

#[test]
fn lines_from_several_workers_never_interleave() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let mut command = host();
    command
        .args(["start", "--workers", "4", "--verbose", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .env("LI3G_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = ChildGuard::spawn(&mut command);
    let lines = Lines::collect(daemon.child().stderr.take().expect("piped stderr"));
    wait_for_workers(&[&gearmand], "Hello::say", 4);
    let mut client = client(&gearmand);
    const JOBS: usize = 2000;
    for _ in 0..JOBS {
        client.submit_background(&job("Hello::say", b"x")).expect("queue a job");
    }
    wait_until("every job ran", Duration::from_secs(120), || {
        gearmand.status().iter().all(|s| s.function != "Hello::say" || s.total == 0)
    });
    // Every job's line arrives (whole ones name the task; a torn one may not: checked below).
    // Not an assertion: a torn line may not name the task; what arrived is checked below.
    li3g_tests::poll_until(WAIT, Duration::from_millis(50), || lines.count("Hello::say") >= JOBS);
    let all = lines.all();
    let torn: Vec<&String> = all
        .iter()
        .filter(|line| {
            let Some(rest) = line.strip_prefix("li3g-host[") else { return true };
            let Some((pid, rest)) = rest.split_once("]: (") else { return true };
            let Some((role, _)) = rest.split_once(") ") else { return true };
            !pid.chars().all(|c| c.is_ascii_digit()) || !matches!(role, "Worker" | "Daemon")
        })
        .collect();
    assert!(torn.is_empty(), "{} of {} lines are torn, e.g. {:?}", torn.len(), all.len(), &torn[..torn.len().min(5)]);
    assert!(lines.count("Hello::say") >= JOBS, "a line for every job at debug level");
}
