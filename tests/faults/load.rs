//! Load held by the embedded server (`li3g-host server`) and a pool of workers: 1,000
//! concurrent client connections each waiting on a synchronous job, and a deep queue of
//! background jobs whose memory per job is measured.
//!
//! Sizes come from the environment so the same test runs in CI and at full scale:
//! `LI3G_LOAD_CONNECTIONS` (default 1000) and `LI3G_LOAD_QUEUE` (default 100,000 in CI; the
//! operations guide quotes a run with `LI3G_LOAD_QUEUE=1000000`).

use super::fuzz::rss_kib;
use super::*;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Raises this process's soft descriptor limit to its hard limit (children inherit it), and
/// returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// **1,000 concurrent clients, each waiting on a synchronous job: every one answered.** All
/// connections are open and have submitted before the first answer is awaited; 4 workers
/// serve them. Latency (submit to WORK_COMPLETE) is reported, p50/p99/max.
#[test]
fn load_concurrent_synchronous_clients() {
    let connections = size("LI3G_LOAD_CONNECTIONS", 1000);
    let nofile = raise_nofile();
    assert!(nofile as usize > connections * 2 + 64, "RLIMIT_NOFILE {nofile} is too low for {connections} connections");
    let case = format!("load: {connections} concurrent synchronous clients");
    let server = Gearmand::embedded(None);
    let port = server.port;
    let plugins = PluginDir::with(&["misbehave"]);
    let ledger = std::sync::Arc::new(Ledger::new());
    let _pool: Vec<ChildGuard> = (0..4).map(|_| Worker::on(port).plugins(plugins.path()).spawn()).collect();
    li3g_tests::wait_for_workers(&[&server], APPEND, 4);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(connections + 1));
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let (ledger, barrier) = (ledger.clone(), barrier.clone());
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || -> Result<Duration, String> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
                    stream.set_read_timeout(Some(DRAIN)).unwrap();
                    barrier.wait();
                    let mut wire = Vec::new();
                    let submit = Packet::SubmitJob {
                        priority: Priority::Normal,
                        background: false,
                        function: APPEND.as_bytes().to_vec(),
                        unique: vec![],
                        workload: ledger.workload(i),
                    };
                    packet::encode(Magic::Req, &submit, &mut wire).unwrap();
                    let started = Instant::now();
                    stream.write_all(&wire).map_err(|e| format!("submit: {e}"))?;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while let Decoded::Packet { packet, len, .. } = packet::decode(&buf, 1 << 20).unwrap() {
                            buf.drain(..len);
                            match packet {
                                Packet::WorkComplete { .. } => return Ok(started.elapsed()),
                                Packet::JobCreated { .. } | Packet::WorkStatus { .. } | Packet::WorkData { .. } => {}
                                other => return Err(format!("unexpected {other:?}")),
                            }
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) => return Err("the server closed".into()),
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e) => return Err(format!("read: {e}")),
                        }
                    }
                })
                .expect("spawn a client thread")
        })
        .collect();
    barrier.wait();
    let rss_loaded = rss_kib(server.pid());
    let mut latencies: Vec<Duration> = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        match client.join().unwrap() {
            Ok(latency) => latencies.push(latency),
            Err(why) => failures.push(why),
        }
    }
    latencies.sort();
    let count = ledger.count(0..connections);
    report(
        &case,
        count,
        &format!(
            "latency p50 {:.1?} p99 {:.1?} max {:.1?}, server RSS {rss_loaded} KiB",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().unwrap()
        ),
    );
    assert!(
        failures.is_empty(),
        "{case}: every client gets its result: {} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!((count.completed, count.duplicated), (connections, 0), "{case}: every job ran exactly once");
}

/// **A deep queue of background jobs: memory per queued job measured, nothing lost.** The
/// jobs are queued with no worker connected (the server's RSS is read before and after), then
/// 4 workers drain them: every job runs exactly once.
#[test]
fn load_deep_background_queue() {
    let jobs = size("LI3G_LOAD_QUEUE", 100_000);
    let case = format!("load: {jobs} queued background jobs");
    let server = Gearmand::embedded(None);
    let port = server.port;
    let ledger = Ledger::new();
    let before = rss_kib(server.pid());
    let started = Instant::now();
    // In chunks, so the test's own buffers stay small.
    let chunk = 50_000;
    for start in (0..jobs).step_by(chunk) {
        submit_background(port, APPEND, &ledger, start..(start + chunk).min(jobs));
    }
    let queued_in = started.elapsed();
    let after = rss_kib(server.pid());
    let per_job = (after.saturating_sub(before) * 1024) as f64 / jobs as f64;
    let plugins = PluginDir::with(&["misbehave"]);
    let started = Instant::now();
    let _pool: Vec<ChildGuard> = (0..4).map(|_| Worker::on(port).plugins(plugins.path()).spawn()).collect();
    let drain = DRAIN * (1 + jobs as u32 / 100_000);
    wait_until_ok(&format!("{case}: every job ran (else jobs were lost)"), drain, Duration::from_millis(100), || {
        let ran = ledger.lines();
        if ran >= jobs {
            Ok(())
        } else {
            Err(format!("{ran} of {jobs} ran"))
        }
    });
    let drained_in = started.elapsed();
    wait_until("the server holds no job", DRAIN, || held(&server, APPEND) == 0);
    let count = ledger.count(0..jobs);
    report(
        &case,
        count,
        &format!(
            "server RSS {before} KiB empty, {after} KiB queued ({per_job:.0} bytes per queued job), \
             queued in {queued_in:.1?}, drained by 4 workers in {drained_in:.1?}"
        ),
    );
    assert_eq!((count.completed, count.duplicated), (jobs, 0), "{case}: every queued job ran exactly once");
}
