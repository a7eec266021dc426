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
}
