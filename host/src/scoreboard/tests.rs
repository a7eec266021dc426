//! The scoreboard across real forked processes.

use super::*;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

fn board(slots: u32) -> (tempfile::TempDir, PathBuf, Scoreboard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("li3g-host.scoreboard");
    let board = Scoreboard::create(&path, slots, "/etc/li3g/li3g.toml").unwrap();
    (dir, path, board)
}

#[test]
fn a_reader_sees_what_a_forked_child_wrote() {
    let (_dir, path, board) = board(4);
    // SAFETY: the test process forks a child that only writes atomics and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let w = board.writer(2).unwrap();
            w.claim(Kind::Worker, 3, Some("reports"), std::process::id(), 0);
            w.loaded([("hello", "0.1.0")], &["Hello::say", "Hello::run"]);
            w.busy("Hello::say", "job-1", "H:host:1", "127.0.0.1:4730");
            w.done("Hello::say", 0.02, None, None);
            w.busy("Hello::run", "job-2", "H:host:2", "127.0.0.1:4730");
            w.done("Hello::run", 2.0, Some("no disk"), Some((0.5, 1 << 20)));
            w.busy("Hello::say", "job-3", "H:host:3", "127.0.0.1:4730");
            board.record_failure(&Failure {
                at_ms: now_ms(),
                task: "Hello::run".into(),
                id: "job-2".into(),
                handle: "H:host:2".into(),
                server: "127.0.0.1:4730".into(),
                message: "no disk".into(),
                signal: None,
            });
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            waitpid(child, None).unwrap();
            let reader = Scoreboard::open(&path).unwrap();
            let snap = reader.snapshot();
            assert_eq!(snap.config, "/etc/li3g/li3g.toml");
            assert_eq!(snap.children.len(), 1);
            let c = &snap.children[0];
            assert_eq!((c.slot, c.kind, c.number, c.pid), (2, Kind::Worker, 3, child.as_raw() as u32));
            assert_eq!(c.pool.as_deref(), Some("reports"));
            assert_eq!(c.state, State::Busy);
            let job = c.job.as_ref().unwrap();
            assert_eq!((job.task.as_str(), job.id.as_str(), job.handle.as_str()), ("Hello::say", "job-3", "H:host:3"));
            assert_eq!((c.completed, c.failed), (1, 1));
            assert_eq!(c.last_failure.as_deref(), Some("no disk"));
            assert_eq!(c.plugins, vec![("hello".to_string(), "0.1.0".to_string())]);
            let run = c.tasks.iter().find(|t| t.name == "Hello::run").unwrap();
            assert_eq!((run.completed, run.failed), (0, 1));
            assert_eq!(run.buckets[BUCKETS.iter().position(|&b| b == 5.0).unwrap()], 1);
            assert_eq!(run.max_rss_bytes, 1 << 20);
            assert_eq!(snap.failures.len(), 1);
            assert_eq!(snap.failures[0].message, "no disk");
            assert!(reader.writer(0).is_none(), "a reader cannot write");
        }
    }
}

#[test]
fn the_ring_keeps_the_last_hundred_newest_first() {
    let (_dir, _path, board) = board(1);
    for i in 0..250 {
        board.record_failure(&Failure {
            at_ms: 1 + i,
            task: "T::run".into(),
            id: format!("{i}"),
            handle: String::new(),
            server: String::new(),
            message: format!("failure {i}"),
            signal: Some(11),
        });
    }
    let failures = board.snapshot().failures;
    assert_eq!(failures.len(), FAILURES);
    assert_eq!(failures[0].message, "failure 249");
    assert_eq!(failures[99].message, "failure 150");
    assert_eq!(failures[0].signal, Some(11));
}

#[test]
fn text_is_cut_at_a_character_boundary_and_a_torn_copy_is_never_seen() {
    let (_dir, path, board) = board(1);
    let long = "é".repeat(100);
    let w = board.writer(0).unwrap();
    w.claim(Kind::Worker, 1, Some("reports"), 1, 0);
    // A new claim of the default pool clears the pool the slot's previous child had.
    w.claim(Kind::Worker, 1, None, 1, 0);
    assert_eq!(board.read_slot(0).unwrap().pool, None);
    w.busy(&long, "", "", "");
    let task = board.read_slot(0).unwrap().job.unwrap().task;
    assert_eq!(task, "é".repeat(32));
    // A reader copying while a child rewrites the job name sees one name or the other.
    // SAFETY: the child only writes atomics and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            for i in 0..200_000u32 {
                let name = if i % 2 == 0 { "A".repeat(64) } else { "B".repeat(64) };
                w.busy(&name, "", "", "");
            }
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let reader = Scoreboard::open(&path).unwrap();
            let mut seen = 0;
            while seen < 2000 {
                if let Some(job) = reader.read_slot(0).and_then(|c| c.job) {
                    let t = job.task;
                    assert!(t == "A".repeat(64) || t == "B".repeat(64) || t == "é".repeat(32), "torn: {t}");
                    seen += 1;
                }
            }
            waitpid(child, None).unwrap();
        }
    }
}

#[test]
fn a_file_of_another_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.scoreboard");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    assert!(matches!(Scoreboard::open(&path), Err(ScoreboardError::Layout(_))));
    let missing = dir.path().join("none");
    assert!(matches!(Scoreboard::open(&missing), Err(ScoreboardError::Open(..))));
}

#[test]
fn create_never_follows_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.path().join("li3g-host.scoreboard");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = Scoreboard::create(&link, 1, "").err().expect("a symlink is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is left as it was");
}

#[test]
fn create_makes_a_fresh_file_whatever_was_left_there() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // A file left at the path (a killed daemon's, or anyone's) with mode 0666: the new board
    // must not inherit its mode (nor its owner, nor its inode and so any other open of it).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("li3g-host.scoreboard");
    std::fs::write(&path, vec![1u8; 100]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let old = std::fs::metadata(&path).unwrap();
    assert_eq!(old.mode() & 0o777, 0o666);
    let _keep_old_inode = std::fs::File::open(&path).unwrap();

    let _board = Scoreboard::create(&path, 2, "").unwrap();
    let new = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(new.mode() & 0o777, 0o640, "mode {:o}", new.mode() & 0o777);
    assert_ne!(new.ino(), old.ino(), "a new file, not the old one truncated");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(new.uid(), unsafe { libc::geteuid() });
    assert!(Scoreboard::open(&path).is_ok());
}

#[test]
fn totals_survive_a_recycled_worker() {
    // A worker did three jobs and was recycled (the supervisor retires and frees its slot, as
    // its reap does); its replacement in the same slot did one. A Prometheus counter must not
    // go down: /metrics says 4 completed and 1 failed, not the replacement's 1 and 0.
    let (_dir, path, board) = board(2);
    let w = board.writer(0).unwrap();
    w.claim(Kind::Worker, 1, None, 100, 0);
    w.loaded([("hello", "0.1.0")], &["Hello::say"]);
    for failure in [None, None, Some("no disk")] {
        w.busy("Hello::say", "job", "H:host:1", "127.0.0.1:4730");
        w.done("Hello::say", 0.02, failure, None);
    }
    board.retire(0);
    w.release();
    board.retire(0);
    w.claim(Kind::Worker, 1, None, 101, 0);
    w.loaded([("hello", "0.1.0")], &["Hello::say"]);
    w.busy("Hello::say", "job", "H:host:2", "127.0.0.1:4730");
    w.done("Hello::say", 0.02, None, None);
    // A pool's worker that ended: its counts stay under its pool.
    let p = board.writer(1).unwrap();
    p.claim(Kind::Worker, 1, Some("slow"), 102, 0);
    p.loaded([("hello", "0.1.0")], &["Hello::say"]);
    p.busy("Hello::say", "job", "H:host:3", "127.0.0.1:4730");
    p.done("Hello::say", 0.02, None, None);
    board.retire(1);
    p.release();

    let snap = Scoreboard::open(&path).unwrap().snapshot();
    let mut config = crate::config::load(None, "default", None).unwrap();
    config.servers.clear();
    config.redis = None;
    let text = crate::monitor::metrics::render(&crate::status::report(&snap, &config));
    let line = |pool: &str, outcome: &str, n: u64| {
        format!("li3g_jobs_total{{pool=\"{pool}\",task=\"Hello::say\",outcome=\"{outcome}\"}} {n}\n")
    };
    assert!(text.contains(&line("default", "completed", 3)), "{text}");
    assert!(text.contains(&line("default", "failed", 1)), "{text}");
    assert!(text.contains(&line("slow", "completed", 1)), "{text}");
    assert!(text.contains("li3g_job_duration_seconds_count{task=\"Hello::say\"} 5\n"), "{text}");
}
