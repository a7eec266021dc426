//! A fresh machine: with a peer missing, the tests stop at once with one line naming the package
//! to install, instead of every test that needs it failing on its own (`tests/setup` installs
//! them all).

use std::path::PathBuf;
use std::process::Command;

const CHILD: &str = "LI3G_TEST_PEER_CHECK_CHILD";

/// Where `program` really is (symlinks and shims resolved), found on the current PATH.
fn real(program: &str) -> PathBuf {
    if program == "python3" {
        // A shim (pyenv) needs its own tools on PATH: take the interpreter it runs.
        let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3");
        return PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
    }
    let path = std::env::var_os("PATH").expect("PATH");
    let found = std::env::split_paths(&path).map(|dir| dir.join(program)).find(|file| file.is_file());
    std::fs::canonicalize(found.unwrap_or_else(|| panic!("{program} is on PATH"))).expect("canonical path")
}

#[test]
fn a_missing_peer_stops_the_tests_with_one_line_naming_its_package() {
    if std::env::var_os(CHILD).is_some() {
        // In the child, with redis-server off PATH: the first artifact asked for stops it.
        li3g_tests::artifacts();
        unreachable!("the peer check let the tests run without redis-server");
    }
    assert!(li3g_tests::missing_peers().is_empty(), "this machine has every peer (tests/setup)");
    let bin = tempfile::tempdir().expect("a PATH directory");
    for program in
        ["gearmand", "gearman", "gearadmin", "systemd-analyze", "php", "python3", "redis-sentinel", "openssl"]
    {
        std::os::unix::fs::symlink(real(program), bin.path().join(program)).expect("link a peer");
    }
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "setup::a_missing_peer_stops_the_tests_with_one_line_naming_its_package", "--test-threads=1"])
        .env(CHILD, "1")
        .env("PATH", bin.path())
        .output()
        .expect("run the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stopped with exit code 2; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("li3g tests:")).collect();
    assert_eq!(
        lines,
        ["li3g tests: redis-server is missing: install redis-server (tests/setup installs every peer)"],
        "stderr:\n{stderr}"
    );
}
