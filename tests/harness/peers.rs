//! The real peers the tests start and talk to, checked once per test process before the first
//! test uses one: with one missing, the process stops at once with one line naming the Debian
//! package (or pip package) to install and `tests/setup`, which installs them all, instead of
//! every test that needs it failing on its own.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One peer: a description, the package that provides it, and the check.
type Peer = (&'static str, &'static str, fn() -> bool);

/// What is checked.
const PEERS: &[Peer] = &[
    ("gearmand", "gearman-job-server", || on_path("gearmand")),
    ("the gearman and gearadmin CLIs", "gearman-tools", || on_path("gearman") && on_path("gearadmin")),
    ("redis-server", "redis-server", || on_path("redis-server")),
    ("redis-sentinel", "redis-sentinel", || on_path("redis-sentinel")),
    ("openssl", "openssl", || on_path("openssl")),
    ("systemd-analyze", "systemd", || on_path("systemd-analyze")),
    ("php", "php-cli", || on_path("php")),
    ("PHP's gearman extension", "php-gearman", || php_has_module("gearman")),
    ("python3", "python3", || on_path("python3")),
    ("python3_gearman", "pip: python3-gearman", || python_imports("python3_gearman")),
    ("supervisor", "pip: supervisor", || python_imports("supervisor")),
];

/// The environment variable that skips the check (for a test run that needs none of them).
pub const SKIP_VAR: &str = "LI3G_TEST_SKIP_PEER_CHECK";

/// Checks every peer once; the first call with one missing ends the process with exit code 2
/// and a line per missing peer.
pub fn require_peers() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        if std::env::var_os(SKIP_VAR).is_some() {
            return;
        }
        let missing = missing_peers();
        if !missing.is_empty() {
            // Straight to the process's stderr: the test harness captures `eprintln!`, and
            // what it captured is lost at exit.
            let mut stderr = std::io::stderr().lock();
            for (what, package) in &missing {
                let _ = writeln!(
                    stderr,
                    "li3g tests: {what} is missing: install {package} (tests/setup installs every peer)"
                );
            }
            std::process::exit(2);
        }
    });
}

/// The peers that are missing, as (what, package).
pub fn missing_peers() -> Vec<(&'static str, &'static str)> {
    PEERS.iter().filter(|(_, _, present)| !present()).map(|&(what, package, _)| (what, package)).collect()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let file = dir.join(program);
            std::fs::metadata(&file)
                .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        })
    })
}

fn quiet(command: &mut Command) -> Option<std::process::Output> {
    command.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()
}

fn php_has_module(module: &str) -> bool {
    quiet(Command::new("php").arg("-m"))
        .is_some_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|line| line.trim() == module))
}

fn python_imports(module: &str) -> bool {
    quiet(Command::new("python3").args(["-c", &format!("import {module}")])).is_some_and(|out| out.status.success())
}
