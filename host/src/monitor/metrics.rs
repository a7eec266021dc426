//! The Prometheus text format (version 0.0.4) of a [`Report`]: what `GET /metrics` serves.
//!
//! Counters come from the workers' slots, summed per task over the children alive now plus
//! those that ended (the scoreboard's retired totals): a recycled worker's counts stay, so a
//! counter never goes down.

use crate::scoreboard::{Kind, State, BUCKETS};
use crate::status::{Child, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The `pool` label of the default pool's workers.
const DEFAULT_POOL: &str = "default";

/// A child's `pool` label: its pool's name, or [`DEFAULT_POOL`].
fn pool_name(child: &Child) -> &str {
    child.pool.as_deref().unwrap_or(DEFAULT_POOL)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[derive(Default)]
struct Task {
    completed: u64,
    failed: u64,
    seconds: f64,
    buckets: Vec<u64>,
    cpu_seconds: f64,
    max_rss: u64,
}

/// The metrics text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, "li3g_up", "gauge", "Whether the li3g daemon runs (1).");
    let _ = writeln!(out, "li3g_up 1");
    header(&mut out, "li3g_build_info", "gauge", "The li3g version, as a label.");
    let _ = writeln!(out, "li3g_build_info{{version=\"{}\"}} 1", label(&report.daemon.version));

    let mut tasks: BTreeMap<&str, Task> = BTreeMap::new();
    // (pool, task) -> (completed, failed)
    let mut by_pool: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    // The live children's counters, plus those of the children that ended (kept per pool as
    // `pool TAB task`): totals that never go down when a worker is recycled.
    let live = report
        .children
        .iter()
        .flat_map(|child| child.tasks.iter().map(move |t| (pool_name(child), t.name.as_str(), t)));
    let ended = report.retired.iter().map(|t| {
        let (pool, name) = t.name.split_once('\t').unwrap_or((DEFAULT_POOL, t.name.as_str()));
        (pool, name, t)
    });
    for (pool, name, t) in live.chain(ended) {
        let counts = by_pool.entry((pool, name)).or_default();
        counts.0 += t.completed;
        counts.1 += t.failed;
        let entry = tasks.entry(name).or_default();
        entry.completed += t.completed;
        entry.failed += t.failed;
        entry.seconds += t.duration_seconds;
        entry.buckets.resize(t.buckets.len().max(entry.buckets.len()), 0);
        for (sum, n) in entry.buckets.iter_mut().zip(&t.buckets) {
            *sum += n;
        }
        entry.cpu_seconds += t.cpu_seconds;
        entry.max_rss = entry.max_rss.max(t.max_rss_bytes);
    }
    header(&mut out, "li3g_jobs_total", "counter", "Jobs the workers ran, per pool, task and outcome.");
    for ((pool, task), (completed, failed)) in &by_pool {
        let (pool, task) = (label(pool), label(task));
        let _ = writeln!(out, "li3g_jobs_total{{pool=\"{pool}\",task=\"{task}\",outcome=\"completed\"}} {completed}");
        let _ = writeln!(out, "li3g_jobs_total{{pool=\"{pool}\",task=\"{task}\",outcome=\"failed\"}} {failed}");
    }
    header(&mut out, "li3g_job_duration_seconds", "histogram", "How long jobs ran, per task.");
    for (task, t) in &tasks {
        let task = label(task);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += t.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "li3g_job_duration_seconds_bucket{{task=\"{task}\",le=\"{bound}\"}} {cumulative}");
        }
        let count = t.completed + t.failed;
        let _ = writeln!(out, "li3g_job_duration_seconds_bucket{{task=\"{task}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "li3g_job_duration_seconds_sum{{task=\"{task}\"}} {}", t.seconds);
        let _ = writeln!(out, "li3g_job_duration_seconds_count{{task=\"{task}\"}} {count}");
    }
    if tasks.values().any(|t| t.cpu_seconds > 0.0 || t.max_rss > 0) {
        header(&mut out, "li3g_job_cpu_seconds_total", "counter", "CPU time of the job children (--atomic), per task.");
        for (task, t) in &tasks {
            let _ = writeln!(out, "li3g_job_cpu_seconds_total{{task=\"{}\"}} {}", label(task), t.cpu_seconds);
        }
        header(
            &mut out,
            "li3g_job_max_rss_bytes",
            "gauge",
            "The largest peak RSS of a job child (--atomic), per task.",
        );
        for (task, t) in &tasks {
            let _ = writeln!(out, "li3g_job_max_rss_bytes{{task=\"{}\"}} {}", label(task), t.max_rss);
        }
    }

    header(&mut out, "li3g_workers", "gauge", "Worker processes, per pool and state.");
    let workers = || report.children.iter().filter(|c| c.kind == Kind::Worker);
    // The default pool always, and every pool that has a worker now.
    let pools: BTreeSet<&str> = std::iter::once(DEFAULT_POOL).chain(workers().map(pool_name)).collect();
    for pool in pools {
        for state in [State::Starting, State::Idle, State::Busy, State::Stopping] {
            let n = workers().filter(|c| pool_name(c) == pool && c.state == state).count();
            let _ = writeln!(out, "li3g_workers{{pool=\"{}\",state=\"{}\"}} {n}", label(pool), state.name());
        }
    }
    header(&mut out, "li3g_child_restarts_total", "counter", "Children replaced, per kind and reason.");
    for r in &report.restarts {
        let _ = writeln!(
            out,
            "li3g_child_restarts_total{{kind=\"{}\",reason=\"{}\"}} {}",
            label(r.kind.name()),
            r.reason,
            r.count
        );
    }
    header(&mut out, "li3g_server_up", "gauge", "Whether the job server answered its admin status (1) or not (0).");
    for s in &report.servers {
        let _ = writeln!(out, "li3g_server_up{{server=\"{}\"}} {}", label(&s.server), u8::from(s.error.is_none()));
    }
    if let Some(s) = &report.scheduler {
        header(&mut out, "li3g_redis_up", "gauge", "Whether Redis answered the scheduler's listing (1) or not (0).");
        let _ = writeln!(out, "li3g_redis_up {}", u8::from(s.error.is_none()));
    }
    header(&mut out, "li3g_queue_jobs", "gauge", "Jobs on each job server, per function and state.");
    for s in &report.servers {
        for f in &s.functions {
            let (server, function) = (label(&s.server), label(&f.function));
            let _ = writeln!(
                out,
                "li3g_queue_jobs{{server=\"{server}\",function=\"{function}\",state=\"queued\"}} {}",
                f.queued
            );
            let _ = writeln!(
                out,
                "li3g_queue_jobs{{server=\"{server}\",function=\"{function}\",state=\"running\"}} {}",
                f.running
            );
        }
    }
    header(&mut out, "li3g_queue_workers", "gauge", "Workers registered on each job server, per function.");
    for s in &report.servers {
        for f in &s.functions {
            let _ = writeln!(
                out,
                "li3g_queue_workers{{server=\"{}\",function=\"{}\"}} {}",
                label(&s.server),
                label(&f.function),
                f.workers
            );
        }
    }
    if let Some(s) = report.scheduler.as_ref().filter(|s| s.error.is_none()) {
        header(&mut out, "li3g_scheduled_jobs", "gauge", "Jobs waiting in Redis for their time.");
        let _ = writeln!(out, "li3g_scheduled_jobs {}", s.pending);
        header(&mut out, "li3g_leased_jobs", "gauge", "Jobs a scheduler is moving.");
        let _ = writeln!(out, "li3g_leased_jobs {}", s.leased);
        header(&mut out, "li3g_dead_jobs", "gauge", "Jobs in the dead set.");
        let _ = writeln!(out, "li3g_dead_jobs {}", s.dead);
    }
    out
}
