//! Peers real users run, each against a gearmand and a `li3g-host server` of its own: PHP's
//! gearman extension (`addTask` twice on one unique, then `runTasks`; a status callback),
//! Perl's Gearman::Worker and Gearman::Client, python3-gearman's `send_job_status`, and
//! gearadmin with each option.
//!
//! Each check asserts gearmand's behaviour against gearmand always, then compares li3g's
//! output (normalised) with gearmand's. A check named in [`super::KNOWN_TO_FIX`] must still
//! differ on li3g (it fails as stale once it does not); every other check must match.
//! Peers wait a few seconds at most (client timeouts), so a hang on one side costs little.

use super::listed_difference;
use li3g_tests::{run, wait_for_workers, ChildGuard, Gearmand, Run};
use std::process::{Command, Stdio};

/// The peer checks, by the name the tables use.
pub const NAMES: &[&str] = &[
    "php_add_task_twice_one_unique",
    "php_status_callback_from_python_fractional",
    "perl_register_function_timeout_0",
    "perl_client_and_worker",
    "gearman_cli_client_and_worker",
    "gearadmin_status",
    "gearadmin_workers",
    "gearadmin_server_version",
    "gearadmin_getpid",
    "gearadmin_show_jobs",
    "gearadmin_show_unique_jobs",
    "gearadmin_priority_status",
    "gearadmin_create_function",
    "gearadmin_drop_function",
    "gearadmin_server_verbose",
    "gearadmin_cancel_job",
];

struct Servers {
    gearmand: Gearmand,
    li3g: Gearmand,
}

fn servers() -> Servers {
    Servers {
        gearmand: li3g_tests::on_a_free_port("gearmand", |port| Gearmand::try_gearmand_on(port, &[])),
        li3g: Gearmand::embedded(None),
    }
}

/// Runs `check` against both servers: `expect` must hold for gearmand's output; li3g's must
/// equal it unless `name` is known to differ (then it must still differ).
fn compare(
    name: &str,
    servers: &Servers,
    check: impl Fn(&Gearmand) -> String,
    expect: impl Fn(&str) -> bool,
) -> Result<(), String> {
    assert!(NAMES.contains(&name), "{name} is not in peers::NAMES");
    let g = check(&servers.gearmand);
    if !expect(&g) {
        return Err(format!("{name}: gearmand itself did not behave as expected:\n{g}"));
    }
    let l = check(&servers.li3g);
    if std::env::var("LI3G_CONFORMANCE_REPORT").is_ok_and(|v| v == "1") {
        println!("=== {name}: {}\n  --- gearmand\n{g}\n  --- li3g\n{l}", if g == l { "match" } else { "differs" });
    }
    match (g == l, listed_difference(name)) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => Err(format!("{name}: listed as a difference but li3g now behaves as gearmand (stale entry)")),
        (false, false) => Err(format!("{name}: li3g differs from gearmand\n--- gearmand\n{g}\n--- li3g\n{l}")),
    }
}

fn outcome(out: &Run) -> String {
    format!("exit {:?}\n{}", out.code, out.stdout)
}

/// A gearman CLI worker reversing its input for `function`, until dropped.
fn rev_worker(server: &Gearmand, function: &str) -> ChildGuard {
    let worker = ChildGuard::spawn(
        Command::new("gearman")
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-w", "-f", function, "--", "rev"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_workers(&[server], function, 1);
    worker
}

const PHP_TWO_TASKS: &str = r#"
list(, $port, $function) = $argv;
$client = new GearmanClient();
$client->addServer('127.0.0.1', (int) $port);
$client->setTimeout(3000);
$done = array();
$client->setCompleteCallback(function ($task) use (&$done) { $done[] = $task->data(); });
$client->addTask($function, "same", null, "U1");
$client->addTask($function, "same", null, "U1");
$ok = $client->runTasks();
echo "runTasks ", $ok ? "true" : "false", ", completed ", count($done), ": ", implode(",", $done), "\n";
"#;

#[test]
fn php_add_task_twice_with_one_unique_then_run_tasks() {
    let servers = servers();
    let f = "php_two_tasks";
    let _workers = (rev_worker(&servers.gearmand, f), rev_worker(&servers.li3g, f));
    let result = compare(
        "php_add_task_twice_one_unique",
        &servers,
        |server| outcome(&run(Command::new("php").args(["-r", PHP_TWO_TASKS, &server.port.to_string(), f]))),
        |g| g.contains("completed 2: emas,emas"),
    );
    result.unwrap();
}

const PYTHON_STATUS_WORKER: &str = r#"
import sys, python3_gearman as g
w = g.GearmanWorker([sys.argv[1]])
def job(worker, job):
    worker.send_job_status(job, 0.5, 1)
    return "done"
w.register_task(sys.argv[2], job)
w.work()
"#;

const PHP_STATUS_CLIENT: &str = r#"
list(, $port, $function) = $argv;
$client = new GearmanClient();
$client->addServer('127.0.0.1', (int) $port);
$client->setTimeout(3000);
$client->setStatusCallback(function ($task) {
    echo "status ", $task->taskNumerator(), "/", $task->taskDenominator(), "\n";
});
$client->setCompleteCallback(function ($task) { echo "complete ", $task->data(), "\n"; });
$client->addTask($function, "x");
echo "runTasks ", $client->runTasks() ? "true" : "false", "\n";
"#;

#[test]
fn python_fractional_progress_reaches_a_php_client() {
    let servers = servers();
    let f = "py_status";
    let worker = |server: &Gearmand| {
        let guard = ChildGuard::spawn(
            Command::new("python3")
                .args(["-c", PYTHON_STATUS_WORKER, &server.addr(), f])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_workers(&[server], f, 1);
        guard
    };
    let _workers = (worker(&servers.gearmand), worker(&servers.li3g));
    let result = compare(
        "php_status_callback_from_python_fractional",
        &servers,
        |server| outcome(&run(Command::new("php").args(["-r", PHP_STATUS_CLIENT, &server.port.to_string(), f]))),
        |g| g.contains("status ") && g.contains("complete done"),
    );
    result.unwrap();
}

const PERL_WORKER: &str = r#"
use Gearman::Worker;
my ($server, $function, $timeout) = @ARGV;
my $w = Gearman::Worker->new(job_servers => [$server]);
if ($timeout eq "none") {
    $w->register_function($function => sub { scalar reverse $_[0]->arg });
} else {
    $w->register_function($function => $timeout => sub { scalar reverse $_[0]->arg });
}
$w->work while 1;
"#;

const PERL_CLIENT: &str = r#"
use Gearman::Client;
my ($server, $function) = @ARGV;
my $c = Gearman::Client->new(job_servers => [$server]);
for my $arg ("abc", "hello") {
    my $r = $c->do_task($function => $arg, { timeout => 3 });
    print defined $r ? "result $$r\n" : "failed\n";
}
my $handle = $c->dispatch_background($function => "bg");
print defined $handle ? "background queued\n" : "background refused\n";
"#;

fn perl(name: &str, function: &str, timeout: &str) -> Result<(), String> {
    let servers = servers();
    let worker = |server: &Gearmand| {
        let guard = ChildGuard::spawn(
            Command::new("perl")
                .args(["-e", PERL_WORKER, &server.addr(), function, timeout])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_workers(&[server], function, 1);
        guard
    };
    let _workers = (worker(&servers.gearmand), worker(&servers.li3g));
    compare(
        name,
        &servers,
        |server| outcome(&run(Command::new("perl").args(["-e", PERL_CLIENT, &server.addr(), function]))),
        |g| g.contains("result cba\nresult olleh\nbackground queued"),
    )
}

#[test]
fn perl_register_function_with_timeout_0() {
    perl("perl_register_function_timeout_0", "perl_t0", "0").unwrap();
}

#[test]
fn perl_gearman_client_and_worker() {
    perl("perl_client_and_worker", "perl_plain", "none").unwrap();
}

#[test]
fn the_gearman_cli_as_client_and_worker() {
    let servers = servers();
    let f = "cli_rev";
    let _workers = (rev_worker(&servers.gearmand, f), rev_worker(&servers.li3g, f));
    let runs: &[&[&str]] = &[
        &["-f", f, "hello"],
        &["-I", "-u", "same", "-f", f, "high"],
        &["-L", "-f", f, "low"],
        &["-b", "-f", f, "background"],
        &["-n", "-f", f],
    ];
    let check = |server: &Gearmand| {
        let mut out = String::new();
        for args in runs {
            let mut command = Command::new("gearman");
            command.args(["-h", "127.0.0.1", "-p", &server.port.to_string()]).args(*args);
            let result = if args.contains(&"-n") {
                // One job per line of stdin.
                run_with_stdin(&mut command, "one\ntwo\n")
            } else {
                run(&mut command)
            };
            out.push_str(&format!("{args:?}: {}", normalise_gearadmin(&result, server)));
            out.push('\n');
        }
        out
    };
    compare("gearman_cli_client_and_worker", &servers, check, |g| {
        g.contains("olleh") && g.contains("hgih") && g.contains("eno")
    })
    .unwrap();
}

/// Runs `command` with `input` on its stdin (at most a minute), like [`run`].
fn run_with_stdin(command: &mut Command, input: &str) -> Run {
    use std::io::Write;
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn gearman");
    child.stdin.take().expect("piped stdin").write_all(input.as_bytes()).expect("write stdin");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    let reaper = std::thread::spawn(move || {
        let out = child.wait_with_output().expect("wait for gearman");
        let _ = done.send(());
        out
    });
    if wait.recv_timeout(li3g_tests::RUN_TIMEOUT).is_err() {
        // SAFETY: kill(2) on the PID of our own child, not yet reaped (the reaper still waits).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let out = reaper.join().expect("the reaper");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// gearadmin's output with what is the server's own (PIDs, versions, descriptors, handles)
/// replaced.
fn normalise_gearadmin(out: &Run, server: &Gearmand) -> String {
    let pid = server.pid().to_string();
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .map(|line| {
            let words: Vec<String> = line
                .split(['\t', ' '])
                .enumerate()
                .map(|(i, w)| {
                    if w == pid {
                        "<pid>".to_string()
                    } else if w.starts_with("H:") {
                        "<handle>".to_string()
                    } else if i == 0 && w.parse::<u32>().is_ok() && line.contains(" :") {
                        "<fd>".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            words.join(" ")
        })
        .collect();
    lines.sort();
    format!("exit {:?}\n{}", out.code, lines.join("\n"))
}

/// A gearadmin check: its name in the tables, gearadmin's arguments, what gearmand's
/// (normalised) output must show.
type GearadminOption = (&'static str, &'static [&'static str], fn(&str) -> bool);

#[test]
fn gearadmin_every_option_as_against_gearmand() {
    let servers = servers();
    let port = |server: &Gearmand| server.port.to_string();
    let gearadmin = |server: &Gearmand, args: &[&str]| {
        run(Command::new("gearadmin").args(["-h", "127.0.0.1", "-p", &port(server)]).args(args))
    };
    // Each server: a worker for `ga_f` (a gearman CLI worker, client id `-`) and queued jobs
    // for `ga_q`, one of them high priority, with unique keys.
    let _workers = (rev_worker(&servers.gearmand, "ga_f"), rev_worker(&servers.li3g, "ga_f"));
    for server in [&servers.gearmand, &servers.li3g] {
        for (flags, unique) in [(&["-b"][..], "ga-u1"), (&["-b", "-I"][..], "ga-u2")] {
            let out = run(Command::new("gearman")
                .args(["-h", "127.0.0.1", "-p", &port(server), "-f", "ga_q", "-u", unique])
                .args(flags)
                .arg("w"));
            assert_eq!(out.code, Some(0), "{}", out.stderr);
        }
    }
    let mut failures = Vec::new();
    let options: &[GearadminOption] = &[
        ("gearadmin_status", &["--status"], |g| g.contains("ga_f 0 0 1") && g.contains("ga_q 2 0 0")),
        ("gearadmin_workers", &["--workers"], |g| g.contains("ga_f")),
        ("gearadmin_server_version", &["--server-version"], |g| g.contains("exit Some(0)") && g.lines().count() > 1),
        ("gearadmin_getpid", &["--getpid"], |g| g.contains("<pid>")),
        ("gearadmin_show_jobs", &["--show-jobs"], |g| g.matches("<handle>").count() == 2),
        ("gearadmin_show_unique_jobs", &["--show-unique-jobs"], |g| g.contains("ga-u1") && g.contains("ga-u2")),
        ("gearadmin_priority_status", &["--priority-status"], |g| g.contains("ga_q 1 1 0 0")),
        ("gearadmin_create_function", &["--create-function=ga_new"], |g| g.contains("OK")),
        ("gearadmin_drop_function", &["--drop-function=ga_new"], |g| g.contains("OK")),
        ("gearadmin_server_verbose", &["--server-verbose"], |g| g.contains("exit Some(0)") && g.lines().count() > 1),
    ];
    for (name, args, expect) in options {
        let check = |server: &Gearmand| {
            let out = gearadmin(server, args);
            // The version is the server's own: only whether it answers is compared.
            if *name == "gearadmin_server_version" {
                return format!("exit {:?}\n{}", out.code, if out.stdout.trim().is_empty() { "" } else { "<version>" });
            }
            normalise_gearadmin(&out, server)
        };
        if let Err(why) = compare(name, &servers, check, expect) {
            failures.push(why);
        }
    }
    // --cancel-job takes a handle: each server's own, from its `show jobs`. (gearmand's status
    // still counts a cancelled job; a worker no longer gets it: scenario admin_cancel_job.)
    let cancel = |server: &Gearmand| {
        let jobs = super::driver::admin_lines(server.port, "show jobs\n");
        let handle = jobs
            .iter()
            .find_map(|l| l.split('\t').next().filter(|h| h.starts_with("H:")))
            .unwrap_or("H:none:0")
            .to_string();
        let out = gearadmin(server, &["--cancel-job", &handle]);
        let status = super::driver::admin_lines(server.port, "status\n");
        let queued = status.iter().find(|l| l.starts_with("ga_q\t")).cloned().unwrap_or_default();
        format!("{}\nafter: {queued}", normalise_gearadmin(&out, server))
    };
    if let Err(why) = compare("gearadmin_cancel_job", &servers, cancel, |g| g.lines().nth(1) == Some("OK")) {
        failures.push(why);
    }
    assert!(failures.is_empty(), "gearadmin:\n{}", failures.join("\n\n"));
}
