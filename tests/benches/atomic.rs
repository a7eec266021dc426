//! What `--atomic` costs per job, measured against peers in the same run:
//!
//! 1. `li3g-host work` (release build): jobs run in the worker process;
//! 2. `li3g-host work --atomic`: every job in a freshly forked child;
//! 3. `gearman -w -f NAME -- /bin/true` (gearman-tools): fork and exec of a command per job.
//!
//! Each worker drains the same number of queued background jobs from its own fresh gearmand
//! (`--threads=1`) and exits (`--max-jobs N` / `-c N`); we time it from spawn to exit. The
//! machines are noisy, so the report gives ratios between the three, measured back to back.
//!
//! Run: `cargo bench -p li3g-tests --bench atomic` (`JOBS=N` to change the count, default 3000).

use li3g_host::gearman::client::{GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::{release_build, wait_until, Gearmand};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn queue(gearmand: &Gearmand, function: &str, workload: &[u8], jobs: usize) {
    let mut client = GearmanClient::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]);
    let job = Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() };
    for _ in 0..jobs {
        client.submit_background(&job).expect("queue a job");
    }
    wait_until("all jobs are queued", Duration::from_secs(30), || {
        gearmand.status().iter().any(|s| s.function == function && s.total == jobs as u64)
    });
}

/// Spawns the worker, waits for it to exit, checks it drained the queue; returns the time.
fn drain(gearmand: &Gearmand, function: &str, command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run the worker");
    let elapsed = started.elapsed();
    assert!(status.success(), "{command:?}: {status:?}");
    let left = gearmand.status().into_iter().find(|s| s.function == function).map(|s| s.total).unwrap_or(0);
    assert_eq!(left, 0, "{command:?} left {left} jobs");
    elapsed
}

fn main() {
    let jobs: usize = std::env::var("JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let release = release_build();
    let host = release.join("li3g-host");
    let mut results = Vec::new();
    for (name, atomic) in [("li3g-host work", false), ("li3g-host work --atomic", true)] {
        let gearmand = Gearmand::start();
        queue(&gearmand, "Hello::say", b"bench", jobs);
        let mut command = Command::new(&host);
        command
            .args(["work", "--max-jobs", &jobs.to_string(), "--servers", &gearmand.addr()])
            .arg("--plugins")
            .arg(&release);
        if atomic {
            command.arg("--atomic");
        }
        results.push((name, drain(&gearmand, "Hello::say", &mut command)));
    }
    let gearmand = Gearmand::start();
    queue(&gearmand, "bench_true", b"bench", jobs);
    let elapsed = drain(
        &gearmand,
        "bench_true",
        Command::new("gearman").args([
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &gearmand.port.to_string(),
            "-c",
            &jobs.to_string(),
            "-f",
            "bench_true",
            "--",
            "/bin/true",
        ]),
    );
    results.push(("gearman -w -- /bin/true", elapsed));

    println!("{jobs} background jobs, one worker process, gearmand --threads=1, loopback\n");
    println!("{:<26} {:>10} {:>12} {:>12}", "worker", "jobs/s", "us/job", "vs atomic");
    let atomic = results[1].1.as_secs_f64();
    for (name, elapsed) in &results {
        let secs = elapsed.as_secs_f64();
        println!("{name:<26} {:>10.0} {:>12.1} {:>11.2}x", jobs as f64 / secs, secs * 1e6 / jobs as f64, secs / atomic);
    }
    let per_job_cost = (results[1].1.as_secs_f64() - results[0].1.as_secs_f64()) * 1e6 / jobs as f64;
    println!("\natomic mode costs {per_job_cost:.1} us more per job than running in the worker;");
    println!(
        "gearman -w (fork+exec per job) takes {:.1}x as long as li3g --atomic",
        results[2].1.as_secs_f64() / atomic
    );
}
