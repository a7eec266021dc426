//! li3g-client against libgearman's client, submitting background jobs, in one run, and its
//! section of `docs/BENCHMARKS.md`.
//!
//! Run: `cargo bench -p li3g-tests --bench client` (under a minute; `REPS=N`, default 3;
//! `SCALE=0.5` submits half the jobs). Each measurement gets a gearmand of its own
//! (`--threads=1`, loopback, no worker: the jobs stay queued) and submits the same number of
//! background jobs of `Hello::run`:
//! - one at a time: li3g's `Client::submit` in a loop against libgearman's
//!   `gearman_client_do_background` in a loop (`tests/peers/bench_client.c`, mode `loop`);
//! - batched: li3g's `Client::submit_many` (windows of 512) and `AsyncClient::submit_many`
//!   against libgearman's pipelined task API (`gearman_client_add_task_background`, 1000 per
//!   `gearman_client_run_tasks`, mode `bg`).
//!
//! Every figure is the median of `REPS` runs; the ratios (li3g / C, >1 is faster) compare runs of
//! the same session. The C client is timed as a process (its start, a few ms, is included); li3g
//! in-process, connecting included. li3g sends more per job (its envelope `{"args","id","env"}`
//! and the id as unique key, as every li3g background job) than the C client (`[]`, no key).
//!
//! `docs/BENCHMARKS.md`: this bench keeps its section between two markers (`<!-- client bench -->`
//! ... `<!-- /client bench -->`), replacing it when present and appending it otherwise; the
//! workers bench, which writes the page's top, keeps every section below it.

use li3g_client::{AsyncClient, Client, ServerAddr};
use li3g_tests::{cc_peer, wait_until, workspace_root, Gearmand};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FUNCTION: &str = "Hello::run";
const START: &str = "<!-- client bench -->";
const END: &str = "<!-- /client bench -->";

fn queued(gearmand: &Gearmand) -> u64 {
    gearmand.status().iter().find(|s| s.function == FUNCTION).map_or(0, |s| s.total)
}

fn addr(gearmand: &Gearmand) -> Vec<ServerAddr> {
    vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port, tls: false }]
}

/// Jobs/s of one way to submit `jobs` background jobs, on a fresh gearmand; checks that all
/// were queued.
fn measure(jobs: usize, submit: impl FnOnce(&Gearmand)) -> f64 {
    let gearmand = Gearmand::start();
    let started = Instant::now();
    submit(&gearmand);
    let took = started.elapsed();
    wait_until("every job queued", Duration::from_secs(30), || queued(&gearmand) == jobs as u64);
    jobs as f64 / took.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn c_client(binary: &Path, gearmand: &Gearmand, mode: &str, jobs: usize) {
    let status = Command::new(binary)
        .args(["127.0.0.1", &gearmand.port.to_string(), FUNCTION, "[]", mode, &jobs.to_string()])
        .status()
        .expect("run the C client");
    assert!(status.success(), "the C client failed");
}

fn main() {
    let reps: usize = std::env::var("REPS").ok().and_then(|n| n.parse().ok()).unwrap_or(3).max(1);
    let scale: f64 = std::env::var("SCALE").ok().and_then(|n| n.parse().ok()).unwrap_or(1.0);
    let single = ((20_000.0 * scale) as usize).max(100);
    let batched = ((100_000.0 * scale) as usize).max(1000);
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let c = cc_peer("bench_client.c", &dir.join("bench_client"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let began = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let (mut c_loop, mut li3g_loop, mut c_pipe, mut li3g_many, mut async_many) =
        (vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..reps {
        eprintln!("client bench: run {} of {reps}", rep + 1);
        c_loop.push(measure(single, |g| c_client(&c, g, "loop", single)));
        li3g_loop.push(measure(single, |g| {
            let mut client = Client::new(addr(g));
            for _ in 0..single {
                client.submit(FUNCTION, ()).expect("submit");
            }
        }));
        c_pipe.push(measure(batched, |g| c_client(&c, g, "bg", batched)));
        li3g_many.push(measure(batched, |g| {
            let results = Client::new(addr(g)).submit_many((0..batched).map(|_| (FUNCTION.to_string(), ())));
            assert!(results.iter().all(Result::is_ok));
        }));
        async_many.push(measure(batched, |g| {
            let client = AsyncClient::new(addr(g));
            let results = runtime.block_on(client.submit_many((0..batched).map(|_| (FUNCTION.to_string(), ()))));
            assert!(results.iter().all(Result::is_ok));
        }));
    }
    let (c_loop, li3g_loop, c_pipe, li3g_many, async_many) =
        (median(c_loop), median(li3g_loop), median(c_pipe), median(li3g_many), median(async_many));
    let row =
        |name: &str, jobs: usize, rate: f64, c: f64| format!("| {name} | {jobs} | {rate:.0} | {:.2}x |\n", rate / c);
    let mut section = format!(
        "{START}\n## Submitting background jobs: li3g-client against libgearman\n\n\
         Written by `cargo bench -p li3g-tests --bench client` (`tests/benches/client.rs` says what it measures). \
         gearmand `--threads=1` with no worker (the jobs stay queued), a fresh one per measurement; task `{FUNCTION}`; \
         medians of {reps} runs; load average {} when the run began; whole run {:.0}s.\n\n\
         | client | jobs | jobs/s | vs C |\n|---|---:|---:|---:|\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        began.elapsed().as_secs_f64()
    );
    section += &row("C, one at a time (`gearman_client_do_background`)", single, c_loop, c_loop);
    section += &row("li3g, one at a time (`Client::submit`)", single, li3g_loop, c_loop);
    section += &row("C, pipelined (task API, 1000 per `run_tasks`)", batched, c_pipe, c_pipe);
    section += &row("li3g, batched (`Client::submit_many`)", batched, li3g_many, c_pipe);
    section += &row("li3g async, batched (`AsyncClient::submit_many`)", batched, async_many, c_pipe);
    section += &format!(
        "\nOne at a time li3g submits at {:.2}x the C client's rate; batched, {:.2}x the pipelined C client's \
         (async: {:.2}x).\n{END}\n",
        li3g_loop / c_loop,
        li3g_many / c_pipe,
        async_many / c_pipe
    );
    print!("{section}");
    let docs = workspace_root().join("docs");
    let path = docs.join("BENCHMARKS.md");
    let current = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let updated = match (current.find(START), current.find(END)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}{}", &current[..start], section.trim_end(), &current[end + END.len()..])
        }
        _ => format!("{}\n{section}", current.trim_end()),
    };
    std::fs::write(&path, updated).expect("write docs/BENCHMARKS.md");
    println!("wrote docs/BENCHMARKS.md (its client section)");
}
