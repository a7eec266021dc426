//! `--atomic`'s job child against a real gearmand: what each job cost (CPU time and peak
//! memory, from the child's resource usage) and the CPU limit.

use crate::daemon::{call, client, start, WAIT};
use li3g_tests::{wait_for_workers, Gearmand, PluginDir};
use serde_json::json;

/// The number before `unit` after `label` in `line` (`cpu 0.31 s` → 0.31).
fn figure(line: &str, label: &str) -> f64 {
    let rest = line.split_once(label).unwrap_or_else(|| panic!("no {label:?} in {line}")).1;
    rest.split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn an_atomic_job_reports_its_cpu_time_and_peak_memory() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, lines) = start(&gearmand, &dir, &["--workers", "1", "--atomic"]);
    wait_for_workers(&[&gearmand], "Misbehave::burn", 1);
    let mut client = client(&gearmand);
    assert_eq!(call(&mut client, "Misbehave::burn", &[json!(0.3), json!(64)]).unwrap(), b"0.3");
    let line = lines.wait_for("Misbehave::burn completed in", WAIT);
    let cpu = figure(&line, "cpu ");
    let rss = figure(&line, "max rss ");
    // The peak includes what the child inherited from its worker (a few MiB, see docs).
    assert!((0.24..=0.36).contains(&cpu), "CPU time within 20% of 0.3 s: {line}");
    assert!((64.0 * 0.8..=64.0 * 1.2).contains(&rss), "peak RSS within 20% of 64 MiB: {line}");
    assert!(line.contains("Job #"), "the line names the job by its id: {line}");
    eprintln!("{line}");

    // A small job costs little: the figures are the job's, not a running total.
    assert_eq!(call(&mut client, "Misbehave::burn", &[json!(0.01), json!(1)]).unwrap(), b"0.01");
    // Its line may come a moment after its answer: wait for it, not the first job's.
    li3g_tests::wait_until("the small job's line", WAIT, || lines.count("Misbehave::burn completed in") >= 2);
    let lines_now = lines.all();
    let small = lines_now.iter().rev().find(|l| l.contains("Misbehave::burn completed in")).expect("a line");
    assert!(figure(small, "cpu ") < 0.1 && figure(small, "max rss ") < 40.0, "{small}");
}

#[test]
fn a_job_past_its_cpu_limit_fails_and_the_worker_goes_on() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let (_daemon, lines) =
        start(&gearmand, &dir, &["--workers", "1", "--atomic", "--cpu-limit", "1", "--timeout", "60"]);
    wait_for_workers(&[&gearmand], "Misbehave::spin", 1);
    let mut client = client(&gearmand);
    let err = call(&mut client, "Misbehave::spin", &[]).unwrap_err();
    assert!(err.starts_with("task Misbehave::spin used its CPU limit of 1 s (cpu "), "{err}");
    // The kernel checks the limit against its precise run time; the rusage figure, scaled from
    // ticks, can read a little lower.
    assert!(figure(&err, "cpu ") >= 0.5, "{err}");
    let line = lines.wait_for("Misbehave::spin failed in", WAIT);
    assert!(line.contains("used its CPU limit of 1 s"), "{line}");
    // The next job runs in a fresh child, with its own limit.
    assert_eq!(call(&mut client, "Misbehave::counter", &[]).unwrap(), b"1");
    assert_eq!(call(&mut client, "Misbehave::sleep", &[json!(1.2)]).unwrap(), b"1.2", "waiting uses no CPU");
}
