//! What TLS costs per job, measured against plaintext in the same run, on both job servers:
//!
//! - gearmand `--threads=1` in plaintext, and the same gearmand behind stunnel (TLS);
//! - the embedded server (`li3g-host server`, release build) on its plaintext listener, and
//!   on its TLS listener (rustls in the server's event loop).
//!
//! For each, one `li3g-host work` (release build, the hello plugin) connects the same way as
//! the client (plain or `tls://`), and li3g's client in this process runs `SYNC` synchronous
//! jobs one after the other over one kept connection: every job crosses the server twice
//! (client to worker and back), so the time per job is the round trip TLS adds to. Rounds
//! alternate the setups; the report gives medians and the TLS/plaintext throughput ratio
//! per server (the machine is noisy: only the ratios within a run mean much).
//!
//! Run: `cargo bench -p li3g-tests --bench tls` (`SYNC`, `ROUNDS`).

use li3g_host::gearman::client::{GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::tls::{Certs, Stunnel, TlsServer};
use li3g_tests::{free_port, on_a_free_port, release_build, wait_for_workers, ChildGuard, Gearmand};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `jobs` synchronous jobs against `server` with a worker there; returns jobs per second.
fn measure(host: &Path, plugins: &Path, certs: &Certs, server: ServerAddr, registry: &Gearmand, jobs: usize) -> f64 {
    let _worker = ChildGuard::spawn(
        Command::new(host)
            .args(["work", "--servers", &server.to_string()])
            .arg("--tls-ca")
            .arg(&certs.ca)
            .arg("--plugins")
            .arg(plugins)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[registry], "Hello::say", 1);
    let mut client = GearmanClient::new(vec![server]);
    let job = Submit { function: "Hello::say".into(), workload: b"[\"bench\"]".to_vec(), ..Submit::default() };
    // One job first: the connection (and its handshake) is not what is measured.
    client.submit_sync(&job, Some(Duration::from_secs(20)), &mut |_| {}).expect("a first job");
    let started = Instant::now();
    for _ in 0..jobs {
        let (_, result) = client.submit_sync(&job, Some(Duration::from_secs(20)), &mut |_| {}).expect("a job");
        assert_eq!(result, b"Hello bench");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (jobs, rounds) = (env("SYNC", 2000), env("ROUNDS", 3));
    let release = release_build();
    let host = release.join("li3g-host");
    let certs = Certs::new();
    let files = li3g_host::tls::ClientFiles { ca: Some(certs.ca.clone()), ..Default::default() };
    li3g_host::gearman::transport::install_client_config(li3g_host::tls::client_config(&files).expect("TLS settings"));
    let addr =
        |port: u16, tls: bool| ServerAddr { host: if tls { "localhost" } else { "127.0.0.1" }.into(), port, tls };
    let names = ["gearmand", "gearmand via stunnel", "embedded", "embedded TLS"];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        let gearmand = Gearmand::try_gearmand_on(free_port(), &[]).expect("gearmand");
        results[0].push(measure(&host, &release, &certs, addr(gearmand.port, false), &gearmand, jobs));
        let stunnel = Stunnel::start(&certs.server, None, gearmand.port);
        results[1].push(measure(&host, &release, &certs, addr(stunnel.port, true), &gearmand, jobs));
        drop((stunnel, gearmand));
        let embedded = on_a_free_port("li3g-host server with TLS", |tls_port| {
            TlsServer::try_binary_on(&host, free_port(), tls_port, &certs.server, None)
        });
        results[2].push(measure(&host, &release, &certs, addr(embedded.server.port, false), &embedded.server, jobs));
        results[3].push(measure(&host, &release, &certs, addr(embedded.tls_port, true), &embedded.server, jobs));
    }
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    println!("{jobs} synchronous jobs one after the other, one li3g worker, loopback; median of {rounds} rounds\n");
    println!("{:<22} {:>10} {:>10}", "server", "jobs/s", "us/job");
    for (name, rate) in names.iter().zip(&medians) {
        println!("{name:<22} {rate:>10.0} {:>10.1}", 1e6 / rate);
    }
    println!(
        "\nTLS/plaintext throughput: gearmand via stunnel {:.2}x, embedded server {:.2}x",
        medians[1] / medians[0],
        medians[3] / medians[2]
    );
    println!(
        "TLS adds {:.1} us per job via stunnel, {:.1} us on the embedded server",
        1e6 / medians[1] - 1e6 / medians[0],
        1e6 / medians[3] - 1e6 / medians[2]
    );
}
