//! The embedded job server (`li3g-host server`, release build) against gearmand `--threads=1`,
//! in the same run, with the same workers and the same client:
//!
//! - throughput: one client pipelines `JOBS` background submissions (waiting for every
//!   `JOB_CREATED`) while two workers drain them; timed from the first submission to the last
//!   `WORK_COMPLETE` the workers sent;
//! - synchronous latency: one client submits `SYNC` foreground jobs one after the other;
//!   p50 and p99 of submit-to-result;
//! - with a store: gearmand's `--queue-type=libsqlite3` against `--store`, `STORE_JOBS` jobs.
//!
//! Workers and client are raw protocol peers written on li3g's codec, in threads of this
//! process, identical for both servers: a worker grabs, answers `WORK_COMPLETE` at once (in
//! the same write as its next `GRAB_JOB`), and sleeps with `PRE_SLEEP` when there is nothing.
//! Rounds alternate the servers; the report gives medians and ratios (the machine is noisy).
//!
//! Run: `cargo bench -p li3g-tests --bench server` (`JOBS`, `STORE_JOBS`, `SYNC`, `ROUNDS`).

use li3g_host::gearman::packet::{self, Decoded, Magic, Packet, Priority};
use li3g_tests::{on_a_free_port, release_build, Gearmand};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FUNCTION: &[u8] = b"bench";
const WORKERS: usize = 2;

struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Peer {
    fn connect(port: u16) -> Peer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        Peer { stream, buf: Vec::with_capacity(1 << 16), start: 0 }
    }

    fn send(&mut self, packets: &[Packet]) {
        let mut wire = Vec::new();
        for p in packets {
            packet::encode(Magic::Req, p, &mut wire).unwrap();
        }
        self.stream.write_all(&wire).unwrap();
    }

    /// The next packet; `None` on a read timeout or end of stream.
    fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Decoded::Packet { packet, len, .. } = packet::decode(&self.buf[self.start..], 1 << 20).unwrap() {
                self.start += len;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Some(packet);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A worker thread: counts the jobs it completed in `done` until `stop`.
fn worker(port: u16, done: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut peer = Peer::connect(port);
        peer.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        peer.send(&[Packet::CanDo { function: FUNCTION.to_vec() }, Packet::GrabJob]);
        while !stop.load(Ordering::Relaxed) {
            match peer.recv() {
                Some(Packet::JobAssign { handle, .. }) => {
                    peer.send(&[Packet::WorkComplete { handle, data: Vec::new() }, Packet::GrabJob]);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Some(Packet::NoJob) => peer.send(&[Packet::PreSleep]),
                Some(Packet::Noop) => peer.send(&[Packet::GrabJob]),
                Some(other) => panic!("worker got {other:?}"),
                None => {}
            }
        }
    })
}

struct Figures {
    jobs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn measure(server: &Gearmand, jobs: usize, sync: usize) -> Figures {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS).map(|_| worker(server.port, done.clone(), stop.clone())).collect();
    let mut client = Peer::connect(server.port);
    // Let the workers register (a status poll sees them).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.status().iter().any(|s| s.function.as_bytes() == FUNCTION && s.workers == WORKERS as u64) {
        assert!(Instant::now() < deadline, "workers did not register");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut wire = Vec::new();
    for i in 0..jobs {
        let submit = Packet::SubmitJob {
            priority: Priority::Normal,
            background: true,
            function: FUNCTION.to_vec(),
            unique: Vec::new(),
            workload: format!("job {i}").into_bytes(),
        };
        packet::encode(Magic::Req, &submit, &mut wire).unwrap();
    }
    let started = Instant::now();
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&wire).unwrap())
    };
    for _ in 0..jobs {
        assert!(matches!(client.recv(), Some(Packet::JobCreated { .. })));
    }
    writer.join().unwrap();
    while done.load(Ordering::Relaxed) < jobs {
        assert!(started.elapsed() < Duration::from_secs(300), "jobs did not drain");
        std::thread::sleep(Duration::from_micros(200));
    }
    let jobs_per_s = jobs as f64 / started.elapsed().as_secs_f64();

    let mut latencies = Vec::with_capacity(sync);
    for i in 0..sync {
        let t = Instant::now();
        client.send(&[Packet::SubmitJob {
            priority: Priority::Normal,
            background: false,
            function: FUNCTION.to_vec(),
            unique: Vec::new(),
            workload: format!("sync {i}").into_bytes(),
        }]);
        loop {
            match client.recv() {
                Some(Packet::JobCreated { .. }) => {}
                Some(Packet::WorkComplete { .. }) => break,
                other => panic!("client got {other:?}"),
            }
        }
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Figures { jobs_per_s, p50_us: pct(0.5), p99_us: pct(0.99) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn main() {
    let (jobs, store_jobs, sync, rounds) =
        (env("JOBS", 20_000), env("STORE_JOBS", 5_000), env("SYNC", 2_000), env("ROUNDS", 3));
    let host = release_build().join("li3g-host");
    type Start<'a> = Box<dyn Fn(&Path) -> Gearmand + 'a>;
    let backends: Vec<(&str, usize, Start)> = vec![
        ("gearmand --threads=1", jobs, Box::new(|_| on_a_free_port("gearmand", |p| Gearmand::try_gearmand_on(p, &[])))),
        (
            "li3g-host server",
            jobs,
            Box::new(|_| on_a_free_port("li3g-host server", |p| Gearmand::try_binary_on(&host, p, None, &[]))),
        ),
        (
            "gearmand libsqlite3",
            store_jobs,
            Box::new(|dir| {
                let db = format!("--libsqlite3-db={}", dir.join("gearmand.sqlite").display());
                on_a_free_port("gearmand", |p| Gearmand::try_gearmand_on(p, &["--queue-type=libsqlite3", &db]))
            }),
        ),
        (
            "li3g-host server --store",
            store_jobs,
            Box::new(|dir| {
                let store = dir.join("li3g.sqlite");
                on_a_free_port("li3g-host server", |p| Gearmand::try_binary_on(&host, p, Some(&store), &[]))
            }),
        ),
    ];
    let mut results: Vec<Vec<Figures>> = backends.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, n, start)) in backends.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let server = start(dir.path());
            let figures = measure(&server, *n, sync);
            eprintln!(
                "round {round}: {name}: {:.0} jobs/s, sync p50 {:.0} µs p99 {:.0} µs",
                figures.jobs_per_s, figures.p50_us, figures.p99_us
            );
            results[i].push(figures);
        }
    }
    println!("\nmedians of {rounds} rounds ({jobs} background jobs in memory, {store_jobs} with a store, {sync} sync jobs; {WORKERS} workers):");
    println!("{:<26} {:>12} {:>10} {:>10}", "server", "jobs/s", "p50 µs", "p99 µs");
    let mut medians = Vec::new();
    for ((name, _, _), figures) in backends.iter().zip(&results) {
        let m = (
            median(figures.iter().map(|f| f.jobs_per_s).collect()),
            median(figures.iter().map(|f| f.p50_us).collect()),
            median(figures.iter().map(|f| f.p99_us).collect()),
        );
        println!("{name:<26} {:>12.0} {:>10.0} {:>10.0}", m.0, m.1, m.2);
        medians.push(m);
    }
    let ratio = |ours: usize, theirs: usize| {
        format!(
            "throughput {:.2}x, sync p50 {:.2}x faster, p99 {:.2}x faster",
            medians[ours].0 / medians[theirs].0,
            medians[theirs].1 / medians[ours].1,
            medians[theirs].2 / medians[ours].2
        )
    };
    println!("li3g-host server vs gearmand, in memory: {}", ratio(1, 0));
    println!("li3g-host server --store vs gearmand libsqlite3: {}", ratio(3, 2));
}
