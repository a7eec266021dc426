//! The differential suite: li3g's embedded job server (`li3g-host server`) against gearmand
//! 1.1.20, as a client or a worker can tell them apart.
//!
//! Each scripted scenario (`scenarios.rs`, played by the raw-protocol driver `driver.rs`) runs
//! against a gearmand and a `li3g-host server`, both started once by the harness on free
//! loopback ports (a scenario that looks at server-wide state gets a pair of its own), each
//! scenario on function names of its own. What each connection received is normalised and
//! compared line by line. A scenario that differs must be listed, once, in [`DELIBERATE`] (a
//! difference li3g keeps, with the reason; mirrored in docs/EMBEDDED_SERVER.md, "Deliberate
//! differences from gearmand") or in [`KNOWN_TO_FIX`] (a difference of today's code that issue
//! 19 says must go, with its item); a listed scenario that no longer differs fails the test too
//! (stale), so the tables stay true.
//!
//! The peers (`peers.rs`: PHP, Perl, python3-gearman, gearadmin) run against both servers; one
//! in [`KNOWN_TO_FIX`] must still fail against li3g (and pass against gearmand), and is stale
//! once it passes.
//!
//! `LI3G_CONFORMANCE_REPORT=1` prints every scenario (match or differs, and both transcripts);
//! without it only the differing ones are printed. `LI3G_CONFORMANCE_SELF=1` plays gearmand
//! against a second gearmand instead: every scenario must match (a check of the suite's own
//! determinism).

mod driver;
mod peers;
mod scenarios;

use driver::{play, Scenario, Transcript};
use li3g_tests::{on_a_free_port, Gearmand};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Differences li3g keeps on purpose: (scenario, why). The same list is in
/// docs/EMBEDDED_SERVER.md, "Deliberate differences from gearmand".
pub const DELIBERATE: &[(&str, &str)] = &[
    (
        "admin_maxqueue",
        "`maxqueue f N` applies to a function the server does not know yet; gearmand 1.1.20 ignores a limit set before the function's first job or worker, and queues past it",
    ),
    ("admin_maxqueue_counts_running", "as admin_maxqueue: the limit applies from the first job (gearmand counts running jobs too, once it knows the function)"),
    ("admin_maxqueue_per_priority", "as admin_maxqueue, per priority (`maxqueue f HIGH NORMAL LOW`)"),
    (
        "admin_cancel_job",
        "`cancel job H` fails the job to its clients and removes it at once; gearmand keeps it as ignored (still counted by status and listed by show jobs) until a worker grabs it",
    ),
    ("gearadmin_cancel_job", "as admin_cancel_job, through gearadmin --cancel-job"),
    (
        "admin_create_and_drop_function",
        "`create function f` creates `f`; gearmand 1.1.20 creates a function with an empty name (an off-by-two in its parser), so its `drop function f` then finds nothing",
    ),
    (
        "res_magic_from_a_client",
        "a \\0RES packet from a client is bad input as bad_magic is: ERROR INVALID_PACKET and a close; gearmand answers ERROR INVALID_MAGIC and keeps reading",
    ),
    (
        "epoch_due_wakes_a_sleeping_worker",
        "li3g runs an epoch job when it is due and wakes a sleeping worker (NOOP); gearmand has no timer, so the job waits for the worker's next GRAB_JOB",
    ),
    (
        "coalesce_fg_then_bg_fg_client_leaves",
        "a background submission that joined a foreground job keeps it when the foreground client leaves; gearmand drops the job, and the background submitter's work with it",
    ),
    (
        "worker_lost_five_times",
        "li3g fails a job (WORK_FAIL to its clients) after it lost 3 workers (--job-retries 3, counted as gearmand counts its flag), so a job that kills its workers cannot loop forever; gearmand 1.1.20 requeues it without end",
    ),
    (
        "work_exception",
        "a WORK_EXCEPTION turned into WORK_FAIL (the client did not ask for exceptions) is sent as `handle`; gearmand sends `handle\\0`, on which the gearman CLI, python3-gearman and PHP clients hang or raise",
    ),
    (
        "unique_64_bytes",
        "li3g keeps a 64-byte unique key whole and coalesces on it; gearmand 1.1.20 keeps 63 bytes of it (JOB_ASSIGN_UNIQ shows 63) and never coalesces two submissions with it",
    ),
    (
        "can_do_twice",
        "a worker that sends CAN_DO twice for one function counts once; gearmand counts (and lists) it twice in status and workers",
    ),
    (
        "work_complete_empty",
        "a WORK_COMPLETE with no data separator (`handle` alone) is an empty result; gearmand drops the worker and requeues the job",
    ),
    ("work_complete_empty_exceptions", "as work_complete_empty, for a client that asked for exceptions"),
    (
        "submit_reduce_job",
        "SUBMIT_REDUCE_JOB (map-reduce, unsupported) is answered ERROR INVALID_COMMAND; gearmand 1.1.20 drops the connection without a word",
    ),
    (
        "bad_magic",
        "bad input gets a clear error: ERROR INVALID_PACKET, then the connection closes; gearmand closes without a word",
    ),
    ("unknown_type", "as bad_magic: ERROR INVALID_PACKET before the close; gearmand closes without a word"),
    (
        "oversize_declared_length",
        "a header declaring a body over li3g's limit is refused at once (ERROR, close) before anything is buffered; gearmand waits for the 4 GiB body",
    ),
    (
        "reset_abilities_while_running",
        "a worker that drops its abilities (RESET_ABILITIES) while holding a job can still finish it; gearmand answers its WORK_COMPLETE with ERROR JOB_NOT_FOUND and the client waits until the worker leaves",
    ),
    ("cant_do_while_running", "as reset_abilities_while_running, after CANT_DO for the job's function"),
    (
        "set_client_id_with_a_space",
        "a client id with blanks is shown with `_` for them in `workers`, so the line stays `FD IP ID : FUNCTIONS`; gearmand prints it as sent",
    ),
    (
        "submit_missing_arguments",
        "a SUBMIT_JOB without its unique and workload gets ERROR INVALID_PACKET and a close; gearmand waits for more silently",
    ),
];

/// Differences of today's code that issue 19 says must be fixed: (scenario or peer, the issue's
/// item, what differs). Item numbers are the issue's numbered list; `admin` is "The admin
/// protocol, whole", `smaller` is "Smaller differences".
pub const KNOWN_TO_FIX: &[(&str, &str, &str)] = &[];

/// Whether `name` is listed as a difference: in [`KNOWN_TO_FIX`] or [`DELIBERATE`].
pub fn listed_difference(name: &str) -> bool {
    known_to_fix(name) || DELIBERATE.iter().any(|(n, _)| *n == name)
}

/// Whether `name` is listed in [`KNOWN_TO_FIX`].
pub fn known_to_fix(name: &str) -> bool {
    KNOWN_TO_FIX.iter().any(|(n, _, _)| *n == name)
}

/// A gearmand and a li3g server (or a second gearmand, for the self-check).
struct Pair {
    gearmand: Gearmand,
    li3g: Gearmand,
}

fn self_check() -> bool {
    std::env::var("LI3G_CONFORMANCE_SELF").is_ok_and(|v| v == "1")
}

fn gearmand() -> Gearmand {
    on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &[]))
}

impl Pair {
    fn start() -> Pair {
        let li3g = if self_check() { gearmand() } else { Gearmand::embedded(None) };
        Pair { gearmand: gearmand(), li3g }
    }
}

struct Outcome {
    name: &'static str,
    gearmand: Transcript,
    li3g: Transcript,
}

impl Outcome {
    fn differs(&self) -> bool {
        self.gearmand != self.li3g
    }
}

/// Plays `scenario` on both servers of `pair` at once.
fn both(scenario: &Scenario, pair: &Pair, prefix: &str) -> Outcome {
    let (g, l) = std::thread::scope(|s| {
        let g = s.spawn(|| play(scenario, pair.gearmand.port, prefix));
        let l = s.spawn(|| play(scenario, pair.li3g.port, prefix));
        (g.join().expect("the gearmand side"), l.join().expect("the li3g side"))
    });
    Outcome { name: scenario.name, gearmand: g, li3g: l }
}

fn print_outcome(outcome: &Outcome, verdict: &str) {
    println!("=== {}: {verdict}", outcome.name);
    if !outcome.differs() {
        for line in &outcome.gearmand {
            println!("    {line}");
        }
        return;
    }
    if let Some(i) =
        (0..outcome.gearmand.len().max(outcome.li3g.len())).find(|&i| outcome.gearmand.get(i) != outcome.li3g.get(i))
    {
        println!(
            "  first difference, line {}: gearmand {:?} / li3g {:?}",
            i + 1,
            outcome.gearmand.get(i).map_or("(nothing)", String::as_str),
            outcome.li3g.get(i).map_or("(nothing)", String::as_str)
        );
    }
    for (side, lines) in [("gearmand", &outcome.gearmand), ("li3g", &outcome.li3g)] {
        println!("  --- {side}");
        for line in lines {
            println!("    {line}");
        }
    }
}

#[test]
fn every_scenario_matches_gearmand_or_is_a_listed_difference() {
    // Not beside the 64 MiB and 1,000,000-job tests: under their load a read times out.
    let _heavy = crate::server::conformance::heavy();
    let started = Instant::now();
    let scenarios = scenarios::all();
    let mut problems = table_problems(&scenarios);

    let shared = Pair::start();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(scenario) = scenarios.get(i) else { break };
                let prefix = format!("cf{i:03}");
                let outcome = if scenario.own_servers {
                    let own = Pair::start();
                    both(scenario, &own, &prefix)
                } else {
                    both(scenario, &shared, &prefix)
                };
                outcomes.lock().unwrap().push((i, outcome));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|(i, _)| *i);

    let report = std::env::var("LI3G_CONFORMANCE_REPORT").is_ok_and(|v| v == "1");
    let check = !self_check();
    let mut differing = 0;
    for (_, outcome) in &outcomes {
        let deliberate = DELIBERATE.iter().find(|(n, _)| *n == outcome.name);
        let to_fix = KNOWN_TO_FIX.iter().find(|(n, _, _)| *n == outcome.name);
        let verdict = match (outcome.differs(), deliberate, to_fix) {
            (false, None, None) => "match".to_string(),
            (false, _, _) if !check => "match".to_string(),
            (false, Some(_), _) | (false, _, Some(_)) => {
                problems.push(format!("{}: listed as a difference but matches gearmand now (stale)", outcome.name));
                "match, STALE entry".to_string()
            }
            (true, Some((_, why)), _) if check => format!("differs, deliberate: {why}"),
            (true, _, Some((_, item, what))) if check => {
                format!("differs, known to fix (issue 19 item {item}): {what}")
            }
            (true, _, _) => {
                problems.push(format!("{}: differs from gearmand and is not listed", outcome.name));
                "DIFFERS, NOT LISTED".to_string()
            }
        };
        if outcome.differs() {
            differing += 1;
        }
        if report || verdict.contains("NOT LISTED") || verdict.contains("STALE") {
            print_outcome(outcome, &verdict);
        }
    }
    println!(
        "conformance: {} scenarios, {} match, {differing} differ ({} deliberate, {} known to fix), in {:.1?}",
        outcomes.len(),
        outcomes.len() - differing,
        DELIBERATE.len(),
        KNOWN_TO_FIX.iter().filter(|(n, _, _)| scenarios.iter().any(|s| s.name == *n)).count(),
        started.elapsed()
    );
    drop(shared);
    assert!(problems.is_empty(), "the differential suite:\n{}", problems.join("\n"));
}

/// Names in the tables that are no scenario or peer, or listed twice.
fn table_problems(scenarios: &[Scenario]) -> Vec<String> {
    let mut problems = Vec::new();
    let names: Vec<&str> = DELIBERATE.iter().map(|(n, _)| *n).chain(KNOWN_TO_FIX.iter().map(|(n, _, _)| *n)).collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            problems.push(format!("{name}: listed twice"));
        }
        if !scenarios.iter().any(|s| s.name == *name) && !peers::NAMES.contains(name) {
            problems.push(format!("{name}: listed, but there is no such scenario or peer"));
        }
    }
    for (i, s) in scenarios.iter().enumerate() {
        if scenarios[..i].iter().any(|o| o.name == s.name) {
            problems.push(format!("{}: two scenarios have this name", s.name));
        }
    }
    problems
}

#[test]
fn the_deliberate_differences_in_the_docs_are_the_table() {
    let doc = std::fs::read_to_string(li3g_tests::workspace_root().join("docs/EMBEDDED_SERVER.md"))
        .expect("docs/EMBEDDED_SERVER.md");
    let section = doc
        .split("## Deliberate differences from gearmand")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/EMBEDDED_SERVER.md has a section \"Deliberate differences from gearmand\"");
    let mut documented: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| l.split('|').nth(1).unwrap_or("").split(',').map(|n| n.trim().trim_matches('`')))
        .collect();
    documented.sort_unstable();
    let mut listed: Vec<&str> = DELIBERATE.iter().map(|(n, _)| *n).collect();
    listed.sort_unstable();
    assert_eq!(documented, listed, "docs/EMBEDDED_SERVER.md and DELIBERATE list different scenarios");
}
