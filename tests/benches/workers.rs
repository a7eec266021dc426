//! li3g's worker against its peers, side by side in one run, and `docs/BENCHMARKS.md`.
//!
//! Run: `cargo bench -p li3g-tests --bench workers` (about 2-3 minutes; `REPS=N`, default 3;
//! `SCALE=0.5` runs half the jobs). It builds and starts all it needs:
//! - the release `li3g-host` and the example plugin (the no-op task `Hello::run`);
//! - from `tests/peers/*.c` with `cc ... -lgearman` (`libgearman-dev`): a no-op C worker on
//!   libgearman (`gearman_worker_work`, empty result) and a C client that queues background jobs
//!   pipelined (1000 per `gearman_client_run_tasks`) and times synchronous round trips;
//! - a python3-gearman worker (`tests/peers/noop_worker.py`) and `gearman -w -- /bin/true`
//!   (fork and exec per job);
//! - the fork floor (`tests/peers/fork_floor.c`): a C process with the idle `--atomic` li3g
//!   worker's anonymous memory (`RssAnon`, read from `/proc` first) that forks a child which
//!   writes one byte to a pipe and `_exit`s, read and reaped by the parent: the least any
//!   process-per-job isolation costs here, no Gearman at all. Its "jobs/s" are forks/s, timed
//!   from spawn to exit, in the same rounds as the others;
//! - its own gearmand (`--threads=1`) on a free port, a fresh one per measurement.
//!
//! Background throughput: N jobs are queued first, then P worker processes each take N/P and
//! exit; the time is from the first job taken (gearmand's `status`, polled) to the last exit
//! (median of REPS runs), so start-up is not counted. Synchronous
//! round trips: one worker, the C client submits one job at a time; p50 and p99. Memory: the
//! resident set (VmRSS) of an idle `start` supervisor, its idle worker, and the idle C worker.
//!
//! `COMPARE=before=DIR,...` adds other li3g builds (release directories with `li3g-host` and the
//! example plugin) to the same rounds and prints their ratios to this build instead of writing
//! docs/: "no slower than before" in one run.
//!
//! Not part of `cargo test`: it takes minutes and its figures depend on the machine.

use li3g_host::gearman::admin_protocol::parse_status;
use li3g_host::gearman::conn::{Conn, ServerAddr};
use li3g_tests::{cc_peer, signal, Signal};
use li3g_tests::{children, release_build, wait_until, workspace_root, ChildGuard, Gearmand};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// One worker under test.
struct Kind {
    name: String,
    /// Another li3g build (`COMPARE`): its `li3g-host` and its plugins directory.
    build: Option<(PathBuf, PathBuf)>,
    function: &'static str,
    workload: &'static str,
    /// Background jobs per measurement.
    jobs: usize,
    /// Synchronous jobs for the latency figures.
    sync_jobs: usize,
}

struct Tools {
    host: PathBuf,
    plugins: PathBuf,
    c_worker: PathBuf,
    c_client: PathBuf,
    python_worker: PathBuf,
    fork_floor: PathBuf,
}

impl Tools {
    /// The command for one worker process of `kind` that exits after `count` jobs (0: never).
    fn worker(&self, kind: &Kind, gearmand: &Gearmand, count: usize) -> Command {
        let port = gearmand.port.to_string();
        let count = count.to_string();
        match kind.name.as_str() {
            "C (libgearman)" => {
                let mut c = Command::new(&self.c_worker);
                c.args(["127.0.0.1", &port, kind.function, &count]);
                c
            }
            "Python" => {
                let mut c = Command::new("python3");
                c.arg(&self.python_worker).args([&gearmand.addr(), kind.function, &count]);
                c
            }
            "fork+exec" => {
                let mut c = Command::new("gearman");
                c.args(["-w", "-h", "127.0.0.1", "-p", &port, "-f", kind.function]);
                if count != "0" {
                    c.args(["-c", &count]);
                }
                c.args(["--", "/bin/true"]);
                c
            }
            name => {
                let (host, plugins) = kind.build.as_ref().map_or((&self.host, &self.plugins), |(h, p)| (h, p));
                let mut c = Command::new(host);
                c.args(["work", "--servers", &gearmand.addr()]).arg("--plugins").arg(plugins);
                if count != "0" {
                    c.args(["--max-jobs", &count]);
                }
                if name.contains("atomic") {
                    c.arg("--atomic");
                }
                c
            }
        }
    }

    fn client(&self, gearmand: &Gearmand, kind: &Kind, mode: &str, n: usize) -> String {
        let out = Command::new(&self.c_client)
            .args(["127.0.0.1", &gearmand.port.to_string(), kind.function, kind.workload, mode, &n.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run the C client");
        assert!(out.status.success(), "the C client failed ({mode} {n} {})", kind.name);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn queued(gearmand: &Gearmand, function: &str) -> u64 {
    gearmand.status().iter().find(|s| s.function == function).map_or(0, |s| s.total)
}

/// Background jobs/s with `procs` worker processes.
fn throughput(tools: &Tools, kind: &Kind, procs: usize) -> f64 {
    let gearmand = Gearmand::start();
    tools.client(&gearmand, kind, "bg", kind.jobs);
    wait_until("the jobs are queued", WAIT, || queued(&gearmand, kind.function) == kind.jobs as u64);
    // The clock starts when the first job is taken, so a worker's start-up (loading plugins,
    // connecting) is not counted: gearmand's status, asked over one kept admin connection.
    let mut admin = Conn::connect(&ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }, WAIT)
        .expect("an admin connection");
    let mut waiting = 0;
    let spawned = Instant::now();
    let mut workers: Vec<ChildGuard> = (0..procs)
        .map(|_| {
            ChildGuard::spawn(
                tools.worker(kind, &gearmand, kind.jobs / procs).stdout(Stdio::null()).stderr(Stdio::null()),
            )
        })
        .collect();
    let started = loop {
        let lines = admin.admin("status").expect("gearmand answers status");
        let status = parse_status(lines.iter().map(String::as_str)).expect("status lines");
        let s = status.iter().find(|s| s.function == kind.function).expect("the function is listed");
        if s.running > 0 || s.total < kind.jobs as u64 {
            break Instant::now();
        }
        waiting += 1;
        assert!(spawned.elapsed() < WAIT, "{} took no job ({waiting} looks)", kind.name);
    };
    for worker in &mut workers {
        let status = worker.wait_timeout(Duration::from_secs(300)).expect("the worker finishes its jobs");
        // li3g's worker ends with the recycle code (75) after --max-jobs.
        let recycled = status.code() == Some(li3g_host::daemon::EXIT_RECYCLE);
        assert!(status.success() || recycled, "{}: {status:?}", kind.name);
    }
    let elapsed = started.elapsed();
    assert_eq!(queued(&gearmand, kind.function), 0, "{} left jobs behind", kind.name);
    kind.jobs as f64 / elapsed.as_secs_f64()
}

/// Forks/s of `procs` fork-floor processes, `jobs` forks in all, each process `anon_kib` KiB of
/// anonymous memory: from spawn to the last exit, as [`throughput`] times the workers.
fn fork_floor(tools: &Tools, anon_kib: u64, jobs: usize, procs: usize) -> f64 {
    let started = Instant::now();
    let mut floors: Vec<ChildGuard> = (0..procs)
        .map(|_| {
            ChildGuard::spawn(
                Command::new(&tools.fork_floor)
                    .args([anon_kib.to_string(), (jobs / procs).to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit()),
            )
        })
        .collect();
    for floor in &mut floors {
        let status = floor.wait_timeout(Duration::from_secs(300)).expect("the fork floor finishes");
        assert!(status.success(), "fork floor: {status:?}");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// The `RssAnon` (KiB) of an idle `work --atomic` li3g worker: the fork floor's shape.
fn atomic_worker_anon_kib(tools: &Tools, kind: &Kind) -> u64 {
    let gearmand = Gearmand::start();
    let worker = ChildGuard::spawn(tools.worker(kind, &gearmand, 0).stdout(Stdio::null()).stderr(Stdio::null()));
    wait_registered(&gearmand, kind.function, 1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

fn wait_registered(gearmand: &Gearmand, function: &str, workers: u64) {
    wait_until("the worker registered", WAIT, || {
        gearmand.status().iter().any(|s| s.function == function && s.workers >= workers)
    });
}

/// Synchronous round trips (us): p50, p99.
fn latency(tools: &Tools, kind: &Kind) -> (f64, f64) {
    let gearmand = Gearmand::start();
    let _worker = ChildGuard::spawn(tools.worker(kind, &gearmand, 0).stdout(Stdio::null()).stderr(Stdio::null()));
    wait_registered(&gearmand, kind.function, 1);
    tools.client(&gearmand, kind, "sync", 50); // warm up
    let out = tools.client(&gearmand, kind, "sync", kind.sync_jobs);
    let mut times: Vec<f64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.50), at(0.99))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident KiB of an idle supervisor, its idle worker, an idle C worker.
fn memory(tools: &Tools, li3g: &Kind, c: &Kind) -> (u64, u64, u64) {
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().expect("a directory for the PID file");
    let mut start = Command::new(&tools.host);
    start
        .args(["start", "--workers", "1", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(&tools.plugins)
        .arg("--pid")
        .arg(dir.path().join("li3g.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let supervisor = ChildGuard::spawn(&mut start);
    wait_registered(&gearmand, li3g.function, 1);
    let worker = children(supervisor.id()).into_iter().next().expect("the supervisor has a worker");
    let (sup, work) = (rss_kib(supervisor.id()), rss_kib(worker));
    signal(supervisor.id(), Signal::SIGTERM);
    let c_worker = ChildGuard::spawn(tools.worker(c, &gearmand, 0).stdout(Stdio::null()));
    wait_registered(&gearmand, c.function, 1);
    (sup, work, rss_kib(c_worker.id()))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The first non-empty line a command prints (stdout, then stderr).
fn version(command: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(command).args(args).output() else { return "?".into() };
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text).lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("?").to_string()
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let scale: f64 = std::env::var("SCALE").ok().and_then(|n| n.parse().ok()).unwrap_or(1.0);
    let jobs = |n: usize| ((n as f64 * scale) as usize / 2 * 2).max(2);
    let release = release_build();
    let bench = workspace_root().join("target/bench");
    std::fs::create_dir_all(&bench).expect("create target/bench");
    let tools = Tools {
        host: release.join("li3g-host"),
        plugins: release.clone(),
        c_worker: cc_peer("noop_worker.c", &bench.join("noop_worker")),
        c_client: cc_peer("bench_client.c", &bench.join("bench_client")),
        python_worker: workspace_root().join("tests/peers/noop_worker.py"),
        fork_floor: cc_peer("fork_floor.c", &bench.join("fork_floor")),
    };
    let kind = |name: &str, function: &'static str, workload: &'static str, jobs: usize, sync_jobs: usize| Kind {
        name: name.to_string(),
        build: None,
        function,
        workload,
        jobs,
        sync_jobs,
    };
    let mut kinds = vec![
        kind("C (libgearman)", "noop", "x", jobs(30000), 2000),
        kind("li3g", "Hello::run", "[]", jobs(30000), 2000),
        kind("li3g --atomic", "Hello::run", "[]", jobs(8000), 1000),
        kind("Python", "noop", "x", jobs(6000), 1000),
        kind("fork+exec", "noop", "x", jobs(2000), 300),
        kind("fork floor", "", "", jobs(16000), 0),
    ];
    // `COMPARE=label=DIR,...`: other li3g builds (a release directory holding `li3g-host` and the
    // example plugin), measured in the same rounds, for "no slower than before" checks. The
    // figures are then printed only, not written to docs/.
    let compare: Vec<(String, PathBuf)> = std::env::var("COMPARE")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (label, dir) = s.split_once('=').expect("COMPARE is label=DIR,...");
            (label.to_string(), PathBuf::from(dir))
        })
        .collect();
    for (label, dir) in &compare {
        for base in 1..=2 {
            let mut k = kind(&format!("{} @{label}", kinds[base].name), "Hello::run", "[]", kinds[base].jobs, 0);
            k.build = Some((dir.join("li3g-host"), dir.clone()));
            kinds.push(k);
        }
    }
    let anon_kib = atomic_worker_anon_kib(&tools, &kinds[2]);
    eprintln!("the idle --atomic worker's RssAnon: {anon_kib} KiB (the fork floor's)");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    // Rounds over every kind, so that the machine's load drifting during the run reaches all
    // kinds alike and the ratios stay fair.
    let mut runs = vec![[Vec::new(), Vec::new()]; kinds.len()];
    for round in 0..reps {
        for (kind, runs) in kinds.iter().zip(&mut runs) {
            for (procs, runs) in [1, 2].into_iter().zip(runs.iter_mut()) {
                runs.push(if kind.name == "fork floor" {
                    fork_floor(&tools, anon_kib, kind.jobs, procs)
                } else {
                    throughput(&tools, kind, procs)
                });
            }
            eprintln!(
                "round {}/{reps}: {:<16} {:>8.0} {:>8.0} jobs/s",
                round + 1,
                kind.name,
                runs[0][round],
                runs[1][round]
            );
        }
    }
    let mut rows = Vec::new();
    for (kind, [one, two]) in kinds.iter().zip(runs) {
        let (one, two) = (median(one), median(two));
        let (p50, p99) = if kind.sync_jobs == 0 { (f64::NAN, f64::NAN) } else { latency(&tools, kind) };
        eprintln!("{:<16} {one:>8.0} {two:>8.0} jobs/s   p50 {p50:.0} us p99 {p99:.0} us", kind.name);
        rows.push((kind.name.as_str(), one, two, p50, p99));
    }
    if !compare.is_empty() {
        println!("\n| worker | jobs/s, 1 process | jobs/s, 2 processes | vs C (1 / 2) | vs this build (1 / 2) |");
        println!("|---|---:|---:|---:|---:|");
        for (i, (name, one, two, ..)) in rows.iter().enumerate() {
            let this = if name.contains("atomic") { rows[2] } else { rows[1] };
            if i == 1 || i == 2 || i >= 6 {
                println!(
                    "| {name} | {one:.0} | {two:.0} | {:.2}x / {:.2}x | {:.2}x / {:.2}x |",
                    one / rows[0].1,
                    two / rows[0].2,
                    one / this.1,
                    two / this.2
                );
            }
        }
        println!("(medians of {reps}, the same rounds; run took {:.0?})", started.elapsed());
        return;
    }
    let (sup, work, c_rss) = memory(&tools, &kinds[1], &kinds[0]);
    let took = started.elapsed();

    let c = rows[0];
    let fe = rows[4];
    let floor = rows[5];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| worker | jobs/s, 1 process | jobs/s, 2 processes | vs C (1 / 2) | vs fork+exec (1 / 2) | vs fork floor (1 / 2) | sync p50 | sync p99 |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let us = |t: f64| if t.is_nan() { "-".to_string() } else { format!("{t:.0} us") };
    for (name, one, two, p50, p99) in &rows {
        let _ = writeln!(
            table,
            "| {name} | {one:.0} | {two:.0} | {:.2}x / {:.2}x | {:.1}x / {:.1}x | {:.2}x / {:.2}x | {} | {} |",
            one / c.1,
            two / c.2,
            one / fe.1,
            two / fe.2,
            one / floor.1,
            two / floor.2,
            us(*p50),
            us(*p99)
        );
    }
    let atomic = rows[2];
    let _ = writeln!(
        table,
        "\n`--atomic` reaches {:.2}x (1 process) and {:.2}x (2 processes) of the fork floor, and {:.1}x / {:.1}x \
         fork+exec, measured in the same run (medians of {reps}). The fork floor: a C process with \
         the idle `--atomic` worker's {anon_kib} KiB of anonymous memory (`RssAnon`) forking a child \
         that writes one byte to a pipe and `_exit`s, read and reaped (`tests/peers/fork_floor.c`); \
         its jobs/s are forks/s.",
        atomic.1 / floor.1,
        atomic.2 / floor.2,
        atomic.1 / fe.1,
        atomic.2 / fe.2
    );
    let _ = writeln!(table);
    let _ = writeln!(table, "| idle process | resident memory |");
    let _ = writeln!(table, "|---|---:|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(table, "| li3g supervisor (`start`) | {:.1} MiB |", mib(sup));
    let _ = writeln!(table, "| li3g worker (hello plugin loaded) | {:.1} MiB |", mib(work));
    let _ = writeln!(table, "| C worker (libgearman) | {:.1} MiB |", mib(c_rss));
    println!("\n{table}");
    println!("(run took {took:.0?})");

    let machine = format!(
        "{}, {} cores, {}; load average {load} when the run began (other work on the machine makes \
         single figures noisy: compare within one run)",
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        version("uname", &["-sr"]),
    );
    let doc = format!(
        "# Benchmarks\n\n\
         Written by `cargo bench -p li3g-tests --bench workers` (the source, \
         `tests/benches/workers.rs`, says what it measures and how). Rerun it to replace this page.\n\n\
         - Machine: {machine}\n\
         - gearmand: {} (`--threads=1`, its own on a free port, loopback)\n\
         - Rust: {}; li3g release build, task `Hello::run` (returns a constant)\n\
         - Peers: no-op C worker on libgearman and C client (`tests/peers/*.c`), python3-gearman \
         worker (`tests/peers/noop_worker.py`), `gearman -w -- /bin/true` (fork+exec per job)\n\
         - Background: jobs queued first (pipelined by the C client), then drained, timed from the first job taken to the last worker's exit; median of {reps} \
         runs. Sync: one job at a time, one worker. Whole run: {took:.0?}.\n\n\
         {table}\n\
         ![background throughput](benchmarks.svg)\n",
        version("gearmand", &["--version"]),
        version("rustc", &["--version"]),
    );
    let docs = workspace_root().join("docs");
    std::fs::create_dir_all(&docs).expect("create docs/");
    // The page's other sections (the client and TLS benches', from their first `## ` heading or
    // `<!--` marker on) are kept: this run rewrites only its own part, above them.
    let path = docs.join("BENCHMARKS.md");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let others = current
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| current[i..].starts_with("## ") || current[i..].starts_with("<!--"))
        .map_or("", |i| &current[i..]);
    let doc = if others.is_empty() { doc } else { format!("{}\n\n{others}", doc.trim_end()) };
    std::fs::write(&path, doc).expect("write docs/BENCHMARKS.md");
    std::fs::write(docs.join("benchmarks.svg"), svg(&rows)).expect("write docs/benchmarks.svg");
    println!("wrote docs/BENCHMARKS.md and docs/benchmarks.svg");
}

/// A grouped bar chart (1 and 2 processes per worker), hand-written SVG: no plotting crate is
/// worth its build time for six bars.
fn svg(rows: &[(&str, f64, f64, f64, f64)]) -> String {
    let (width, height, left, top, bottom) = (720.0, 360.0, 70.0, 40.0, 60.0);
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max) * 1.1;
    let plot_h = height - top - bottom;
    let group = (width - left - 20.0) / rows.len() as f64;
    let bar = group * 0.35;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Background no-op jobs per second (higher is better)</text>\n",
        width / 2.0
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (i, (name, one, two, _, _)) in rows.iter().enumerate() {
        let x = left + group * i as f64 + group * 0.12;
        for (j, (value, color)) in [(*one, "#4e79a7"), (*two, "#f28e2b")].into_iter().enumerate() {
            let h = plot_h * value / max;
            let bx = x + bar * j as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{value:.0}</text>",
                top + plot_h - h,
                bx + bar / 2.0,
                top + plot_h - h - 3.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            x + bar,
            top + plot_h + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"#4e79a7\"/><text x=\"{}\" y=\"{:.1}\">1 worker process</text>\
         <rect x=\"{}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"#f28e2b\"/><text x=\"{}\" y=\"{:.1}\">2 worker processes</text>",
        height - 24.0,
        left + 16.0,
        height - 14.0,
        left + 160.0,
        height - 24.0,
        left + 176.0,
        height - 14.0
    );
    s.push_str("</svg>\n");
    s
}
