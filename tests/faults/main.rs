//! The fault-injection suite: every case runs thousands of counted jobs through several
//! workers, injects one kind of fault, and counts submitted against completed and duplicated
//! jobs. A job is `Misbehave::append(path, "i")`: one `write` with `O_APPEND` of the line `i`,
//! so the file says exactly which jobs ran and how often.
//!
//! Each case names the guarantee it checks in its doc comment and in its assertion messages,
//! and prints `case: submitted N, completed N, duplicated N` so the operations guide
//! (docs/OPERATIONS.md) can quote the figures. A case fails on any loss, and on any duplicate
//! its guarantee does not allow. Nothing here waits on a fixed sleep for an event: progress is
//! awaited with generous deadlines; the pauses between injected faults are the load's pacing,
//! not synchronisation.

use li3g_host::gearman::packet::{self, Decoded, Magic, Packet, Priority};
use li3g_tests::{
    alive, host, on_a_free_port, run, signal, wait_until, wait_until_ok, ChildGuard, Daemon, Gearmand, HostBuilder,
    PluginDir, Signal, Worker,
};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod daemon;
mod fuzz;
mod load;
mod plugin;
mod poison;
mod scheduler;
mod servers;
mod workers;

const APPEND: &str = "Misbehave::append";
/// How long a case may wait for its jobs to drain (the machine is loaded; debug builds).
const DRAIN: Duration = Duration::from_secs(120);

/// The file the jobs of one case append to, and what it says.
struct Ledger {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// What a ledger says about the jobs `0..submitted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    submitted: usize,
    /// Distinct jobs that ran at least once.
    completed: usize,
    /// Runs past the first, over every job.
    duplicated: usize,
    /// Lines no job of this suite writes (not a job number; must be 0).
    strangers: usize,
}

impl Ledger {
    fn new() -> Ledger {
        let dir = tempfile::tempdir().expect("a directory for the ledger");
        let path = dir.path().join("ran.txt");
        Ledger { _dir: dir, path }
    }

    /// The workload of job `i`.
    fn workload(&self, i: usize) -> Vec<u8> {
        serde_json::json!([self.path.to_str().expect("utf-8 path"), i.to_string()]).to_string().into_bytes()
    }

    /// How often each job ran.
    fn runs(&self) -> HashMap<String, usize> {
        let mut runs = HashMap::new();
        for line in std::fs::read_to_string(&self.path).unwrap_or_default().lines() {
            *runs.entry(line.to_string()).or_insert(0) += 1;
        }
        runs
    }

    /// Lines written so far.
    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.path).unwrap_or_default().lines().count()
    }

    fn count(&self, submitted: std::ops::Range<usize>) -> Count {
        let runs = self.runs();
        let mut count = Count { submitted: submitted.len(), completed: 0, duplicated: 0, strangers: 0 };
        for (line, n) in &runs {
            match line.parse::<usize>() {
                Ok(i) if submitted.contains(&i) => {
                    count.completed += 1;
                    count.duplicated += n - 1;
                }
                Ok(_) => {}
                Err(_) => count.strangers += n,
            }
        }
        count
    }

    /// Waits until every job of `range` ran at least once (at most [`DRAIN`]); its count.
    fn drained(&self, range: std::ops::Range<usize>, case: &str) -> Count {
        let what = format!("{case}: every job completed within {DRAIN:?} (else jobs were lost)");
        wait_until_ok(&what, DRAIN, Duration::from_millis(50), || {
            let count = self.count(range.clone());
            if count.completed == count.submitted {
                Ok(count)
            } else {
                Err(format!("only {} of {} completed", count.completed, count.submitted))
            }
        })
    }
}

/// Prints the case's one-line summary (the figures the operations guide quotes).
fn report(case: &str, count: Count, extra: &str) {
    println!(
        "{case}: submitted {}, completed {}, duplicated {}{}{extra}",
        count.submitted,
        count.completed,
        count.duplicated,
        if extra.is_empty() { "" } else { ", " }
    );
    assert_eq!(count.strangers, 0, "{case}: the ledger holds lines no job wrote");
}

/// Submits background jobs `range` of `function` (workloads from `ledger`) to the server on
/// `port`, pipelined, and waits for every JOB_CREATED. Unique ids are empty: nothing coalesces.
fn submit_background(port: u16, function: &str, ledger: &Ledger, range: std::ops::Range<usize>) {
    let mut wire = Vec::new();
    for i in range.clone() {
        let submit = Packet::SubmitJob {
            priority: Priority::Normal,
            background: true,
            function: function.as_bytes().to_vec(),
            unique: vec![],
            workload: ledger.workload(i),
        };
        packet::encode(Magic::Req, &submit, &mut wire).expect("encode SUBMIT_JOB_BG");
    }
    submit_wire(port, wire, range.len());
}

/// Writes `wire` (`jobs` submissions) to the server on `port` and reads `jobs` JOB_CREATED.
fn submit_wire(port: u16, wire: Vec<u8>, jobs: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the job server");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&wire).expect("write the submissions"))
    };
    let mut buf = Vec::new();
    let mut created = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while created < jobs {
        while let Decoded::Packet { packet, len, .. } = packet::decode(&buf, 1 << 20).expect("a response") {
            buf.drain(..len);
            assert!(matches!(packet, Packet::JobCreated { .. }), "expected JOB_CREATED, got {packet:?}");
            created += 1;
        }
        if created == jobs {
            break;
        }
        let n = stream.read(&mut chunk).expect("read JOB_CREATED");
        assert!(n > 0, "the server closed after {created} of {jobs} JOB_CREATED");
        buf.extend_from_slice(&chunk[..n]);
    }
    writer.join().unwrap();
}

/// gearmand itself (never the embedded server: the cases name which they test).
fn gearmand() -> Gearmand {
    on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &[]))
}

/// Restarts a server on `port` with `start`, retrying while the old socket lingers.
fn restart_on<T>(port: u16, start: impl Fn(u16) -> Result<T, String>) -> T {
    let what = format!("a server restarted on port {port}");
    wait_until_ok(&what, Duration::from_secs(30), Duration::from_millis(100), || start(port))
}

/// The jobs of `function` the server still holds (queued or running), by its admin `status`.
fn held(server: &Gearmand, function: &str) -> u64 {
    server.status().iter().filter(|s| s.function == function).map(|s| s.total).sum()
}

#[test]
fn the_ledger_counts_duplicates_and_strangers() {
    let ledger = Ledger::new();
    std::fs::write(&ledger.path, "0\n1\n1\n2\n9\nx\n").unwrap();
    let count = ledger.count(0..3);
    assert_eq!(count, Count { submitted: 3, completed: 3, duplicated: 1, strangers: 1 });
    assert!(alive(std::process::id()));
}
