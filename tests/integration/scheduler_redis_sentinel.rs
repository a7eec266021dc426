//! Sentinel beyond the failover of `super`: `rediss+sentinel://` reaching the sentinels over
//! TLS (and refusing a plaintext one), and a demoted master that still holds the connections of
//! the scheduler, the workers and a client (its `READONLY` answers).

use super::*;

/// `rediss+sentinel://` with `redis_tls_ca`: three sentinels listening on TLS alone (`port
/// 0`), a master and a replica replicating over TLS. The scheduler, the workers and the client
/// ask the sentinels over TLS, checked against the CA, and follow a failover (the master
/// SIGKILLed) through them. A sentinel without a `tls-port`, named in `rediss+sentinel://`, is
/// refused with an error naming it and saying why, and so is a CA that did not sign the
/// sentinels' certificates; `?sentinel_tls=off` asks that plaintext sentinel and still reaches
/// the master over TLS. (Before, the sentinels were asked in plaintext: against these TLS-only
/// sentinels nothing could be scheduled.)
#[test]
fn rediss_sentinel_asks_the_sentinels_over_tls_and_follows_a_failover_through_them() {
    let certs = TestCerts::new();
    let mut sentinel = SentinelSetup::start_tls(&certs);
    let ca = format!("redis_tls_ca = \"{}\"\n", certs.ca().display());
    let setup = setup_on(&sentinel.url(), &ca, "");
    let _worker = setup.worker();
    let (scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("tls-sentinel");
    let file = path.display().to_string();
    let id = scheduled_id(&setup.li3g(&["run", APPEND, &file, "before", "--in", "1s"]));
    wait_until("the job ran", LONG, || lines(&path) == ["before"]);
    wait_until("its status is finished", LONG, || setup.li3g(&["status", &id]).stdout.starts_with("finished"));

    // A sentinel without a tls-port (it watches the same master, over TLS).
    let plain = sentinel.add_plaintext_sentinel(Some(&certs));
    let refused = setup.file("plaintext-sentinel.toml");
    configure(&setup, &refused, &format!("rediss+sentinel://127.0.0.1:{plain}/{}/0", "mymaster"), &ca, "");
    let out = run(host().args(["run", APPEND, &file, "no", "--in", "1s", "--config"]).arg(&refused));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let named = format!("127.0.0.1:{plain}");
    eprintln!("plaintext sentinel refused: {}", out.stderr.trim());
    assert!(
        out.stderr.contains(&named) && out.stderr.contains("tls-port"),
        "names the sentinel and why: {}",
        out.stderr
    );
    let opted_out = setup.file("sentinel-tls-off.toml");
    let url = format!("rediss+sentinel://127.0.0.1:{plain}/mymaster/0?sentinel_tls=off");
    configure(&setup, &opted_out, &url, &ca, "");
    scheduled_id(&run(host()
        .args(["run", APPEND, &file, "plaintext sentinel", "--in", "1s", "--config"])
        .arg(&opted_out)));
    wait_until("the job scheduled through the plaintext sentinel ran", LONG, || lines(&path).len() == 2);
    // A CA that did not sign the sentinels' certificates.
    let wrong = setup.file("wrong-ca.toml");
    configure(&setup, &wrong, &sentinel.url(), &format!("redis_tls_ca = \"{}\"\n", certs.wrong_ca().display()), "");
    let out = run(host().args(["run", APPEND, &file, "no", "--in", "1s", "--config"]).arg(&wrong));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("certificate"), "names the certificate: {}", out.stderr);

    // The failover, seen through the TLS sentinels.
    sentinel.master.take().unwrap().kill();
    let (_, replica_tls) = sentinel.tls_ports.unwrap();
    wait_until("the sentinels promote the replica", LONG, || sentinel.master_port() == Some(replica_tls));
    wait_until("the client schedules on the new master", LONG, || {
        setup.li3g(&["run", APPEND, &file, "after", "--in", "1s"]).code == Some(0)
    });
    wait_until("the scheduler moved the job scheduled after the failover", LONG, || {
        lines(&path).contains(&"after".to_string())
    });
    assert_eq!(lines(&path), ["before", "plaintext sentinel", "after"], "each once");
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up: {:#?}", log.all());
    assert_eq!(log.count("Cannot subscribe"), 0, "the wake-up subscription found the master too: {:#?}", log.all());
}

/// A field of `INFO replication` on the server on `port`.
fn replication(port: u16, field: &str) -> Option<u64> {
    let info = redis_cli(port, &["INFO", "replication"]);
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).and_then(|v| v.trim().parse().ok())
}

/// A master demoted under open connections: while the scheduler, a worker and a client (a
/// long-lived `Client`, scheduling without pause) hold connections to the master, its writes
/// are paused (`CLIENT PAUSE WRITE`: a master that stops answering, since the sentinels' own
/// PINGs then wait behind their paused PUBLISH), the replica has every write, the sentinels
/// fail over, the old master is made a replica of the new one (`REPLICAOF`) and its writes
/// resume: every write held on those connections is answered
/// `READONLY`. A failing job with retries, run meanwhile, has its retry recorded through the
/// worker's connection to the old master. Afterwards: every job the client was told is
/// scheduled runs exactly once, the retry runs once, and the scheduler and the client are on
/// the new master within seconds of the writes resuming, neither of them shown `READONLY`
/// (each such answer is met with a fresh connection, to the master the sentinels name now, and
/// the same call once more; before, the client's call failed with `READONLY` and the
/// scheduler logged `Cannot take due jobs` and backed off). Last, a sentinel with a stale view
/// (it names a replica as `mymaster`), first in the URL, is passed over for the next sentinel
/// (before, every connection asked it first and failed: "not a master").
#[test]
fn a_master_demoted_under_open_connections_is_left_for_the_new_one_and_every_job_runs_once() {
    let mut sentinel = SentinelSetup::start();
    let setup = setup_on(&sentinel.url(), "", "");
    let (_worker, wlog) = setup.verbose_worker();
    let (scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("demoted");
    let config = setup.config();
    type Acked = Vec<(String, std::time::Instant)>;
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (acked, errors) = (acked.clone(), errors.clone());
        super::scheduling_client(config, path.clone(), stop.clone(), move |line, outcome| match outcome {
            Ok(Outcome::Scheduled { .. } | Outcome::Queued { .. }) => {
                acked.lock().unwrap().push((line, std::time::Instant::now()))
            }
            Ok(other) => panic!("{other:?}"),
            Err(err) => errors.lock().unwrap().push(err.to_string()),
        })
    };
    wait_until("jobs are being scheduled and moved", LONG, || lines(&path).len() >= 30);

    let old = sentinel.master.as_ref().unwrap().port;
    let new = sentinel.replica.port;
    assert!(redis_cli(old, &["CLIENT", "PAUSE", "20000", "WRITE"]).starts_with("OK"));
    let paused = std::time::Instant::now();
    wait_until("the replica has every write of the master", LONG, || {
        let (master, replica) = (replication(old, "master_repl_offset"), replication(new, "slave_repl_offset"));
        master.is_some() && master == replica
    });
    // A job that fails once, with a retry: the worker takes it while the old master is paused
    // (its status write waits on its connection to it), and records its retry once the writes
    // resume.
    let flaky = setup.file("flaky");
    let queued = {
        let (config_path, flaky) = (setup.config_path.clone(), flaky.display().to_string());
        std::thread::spawn(move || {
            let args = ["run", "Misbehave::flaky", &flaky, "1", "--retries", "2", "--retry-delays", "100ms"];
            run(host().args(args).arg("--config").arg(&config_path))
        })
    };
    wait_until("the sentinels name the new master", LONG, || (0..3).all(|i| sentinel.master_port_by(i) == Some(new)));
    assert!(redis_cli(old, &["REPLICAOF", "127.0.0.1", &new.to_string()]).starts_with("OK"));
    let acked_before = acked.lock().unwrap().len();
    let cannot_before = log.count("Cannot take due jobs");
    assert!(redis_cli(old, &["CLIENT", "UNPAUSE"]).starts_with("OK"));
    let resumed = std::time::Instant::now();
    let paused_for = resumed - paused;
    assert!(redis_cli(old, &["ROLE"]).starts_with("slave"), "the old master is a replica");

    wait_until("the client schedules on the new master", LONG, || acked.lock().unwrap().len() > acked_before);
    let client_back = resumed.elapsed();
    let first_after = acked.lock().unwrap()[acked_before].0.clone();
    wait_until("the scheduler moves a job scheduled after the switch", LONG, || lines(&path).contains(&first_after));
    let scheduler_back = resumed.elapsed();
    wait_until("50 more jobs are scheduled", LONG, || acked.lock().unwrap().len() >= acked_before + 50);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let queued = queued.join().unwrap();
    assert_eq!(queued.code, Some(0), "{}", queued.stderr);
    wait_until("the flaky job's retry ran", LONG, || lines(&flaky).len() == 2);

    let mut master = li3g_tests::redis_setups::connect(new);
    wait_until("the schedule is empty", LONG, || {
        let (s, l): (u64, u64) =
            redis::pipe().zcard("{li3g}:scheduled").zcard("{li3g}:leased").query(&mut master).unwrap();
        s + l == 0
    });
    wait_until("gearmand holds no job", LONG, || {
        setup.gearmand().status().iter().filter(|s| s.function == APPEND).all(|s| s.total == 0)
    });
    let acked = acked.lock().unwrap().clone();
    let ran = lines(&path);
    let errors = errors.lock().unwrap().clone();
    eprintln!(
        "demoted master: writes paused {paused_for:?}; scheduled (acknowledged) {}, ran {}, client errors {errors:?}; after the writes resumed the client scheduled on the new master in {client_back:?}, the scheduler moved its job in {scheduler_back:?}; scheduler lines 'Cannot take' {} after the switch; worker: {:?}",
        acked.len(),
        ran.len(),
        log.count("Cannot take due jobs") - cannot_before,
        wlog.all().iter().filter(|l| l.contains("Cannot")).collect::<Vec<_>>()
    );
    // A batch in flight whose lease ran out while the writes were paused, handed back to the
    // scheduler by its next take: kept, not submitted again (before, its jobs ran twice).
    eprintln!(
        "demoted master: handed back to the scheduler in flight: {:?}",
        log.all().iter().filter(|l| l.contains("Took back")).collect::<Vec<_>>()
    );
    for (line, _) in &acked {
        assert_eq!(
            ran.iter().filter(|l| *l == line).count(),
            1,
            "{line}, acknowledged, ran once: {ran:?}\nthe scheduler's log: {:#?}",
            log.all()
        );
    }
    assert!(!errors.iter().any(|e| e.contains("read only replica")), "the client is not shown READONLY: {errors:?}");
    assert_eq!(log.count("Cannot take due jobs"), cannot_before, "the scheduler went on: {:#?}", log.all());
    assert_eq!(lines(&flaky).len(), 2, "the retry ran once");
    assert!(client_back < Duration::from_secs(10) && scheduler_back < Duration::from_secs(15));
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up");

    // A sentinel with a stale view, first in the URL, names a replica: the next is asked.
    let stale = sentinel.add_stale_sentinel();
    let ports: Vec<String> = [stale].iter().chain(&sentinel.sentinel_ports).map(|p| format!("127.0.0.1:{p}")).collect();
    let stale_first = setup.file("stale-first.toml");
    configure(&setup, &stale_first, &format!("redis+sentinel://{}/mymaster/0", ports.join(",")), "", "");
    let out = run(host()
        .args(["run", APPEND, &path.display().to_string(), "past the stale sentinel", "--in", "1s", "--config"])
        .arg(&stale_first));
    scheduled_id(&out);
    wait_until("the job scheduled past the stale sentinel ran", LONG, || {
        lines(&path).contains(&"past the stale sentinel".to_string())
    });
}
