//! The embedded server's durable store (`--store`) against real processes: a finished job is
//! not run again after SIGKILL, a full disk neither runs a refused job nor loses an
//! acknowledged one, and `listening` is said only once the store is open.

use super::Peer;
use li3g_host::gearman::packet::{Packet, Priority};
use li3g_tests::{host, run, Gearmand};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// **Deletes are committed with the turn (issue 20, item 9).** A worker completes every job,
/// then an `ECHO` is answered: the server has handled every `WORK_COMPLETE` and committed its
/// turn. SIGKILLed then, it must not hand out any of the finished jobs again after a restart
/// (deletes batched for 100 ms handed out all 20).
#[test]
fn a_finished_job_is_not_run_again_after_sigkill() {
    const JOBS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("queue.sqlite");
    let server = Gearmand::embedded(Some(&store));
    let mut client = Peer::connect(&server);
    for i in 0..JOBS {
        client.submit("f", "", &i.to_string(), Priority::Normal, true);
    }
    let mut worker = Peer::worker(&server, "f");
    for _ in 0..JOBS {
        let (handle, _) = worker.grab().expect("a stored job");
        worker.send(&Packet::WorkComplete { handle, data: Vec::new() });
    }
    worker.send(&Packet::EchoReq { data: b"done".to_vec() });
    assert_eq!(worker.expect(), Packet::EchoRes { data: b"done".to_vec() });
    server.kill();

    let server = Gearmand::embedded(Some(&store));
    let mut worker = Peer::worker(&server, "f");
    let mut again = Vec::new();
    while let Some((_, workload)) = worker.grab() {
        again.push(String::from_utf8_lossy(&workload).into_owned());
    }
    assert!(again.is_empty(), "finished jobs handed out again after SIGKILL: {again:?}");
}

/// A tmpfs of its own (the test runs as root, as CI does), unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`), or `None` where mounting is not allowed.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out =
            run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()));
        if out.code != Some(0) {
            eprintln!("skipped: cannot mount a tmpfs: {}", out.stderr);
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn resize(&self, size: &str) {
        let out = run(Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir.path()));
        assert_eq!(out.code, Some(0), "remount: {}", out.stderr);
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(self.dir.path()));
    }
}

/// Submits background job `i` (4 KiB, unique `u<i>`) on a connection of its own: `true` when
/// acknowledged, `false` when refused with `ERROR STORE_FAILED`.
fn submit_4k(server: &Gearmand, i: usize) -> bool {
    let mut peer = Peer::connect(server);
    let mut workload = format!("{i}:").into_bytes();
    workload.resize(4096, b'x');
    peer.send(&Packet::SubmitJob {
        priority: Priority::Normal,
        background: true,
        function: b"f".to_vec(),
        unique: format!("u{i}").into_bytes(),
        workload,
    });
    match peer.expect() {
        Packet::JobCreated { .. } => true,
        Packet::Error { code, .. } if code == b"STORE_FAILED" => false,
        other => panic!("job {i}: expected JOB_CREATED or ERROR STORE_FAILED, got {other:?}"),
    }
}

/// The jobs a worker is handed until `NO_JOB` (by the number their workload starts with).
fn grab_all(server: &Gearmand) -> BTreeSet<usize> {
    let mut worker = Peer::worker(server, "f");
    let mut got = BTreeSet::new();
    while let Some((_, workload)) = worker.grab() {
        let text = String::from_utf8_lossy(&workload);
        got.insert(text.split(':').next().unwrap().parse().expect("a job number"));
    }
    got
}

/// **On a full disk no job is both refused and run, and none is acknowledged and then lost
/// (issue 20, item 10).** 4 KiB jobs into a store on a 1 MiB tmpfs until one is refused; more
/// submissions, and the refused ones again with the same unique key; then a worker is handed
/// exactly the acknowledged jobs, and after the disk is grown, a SIGKILL and a restart, the
/// store still holds every acknowledged job and no refused one.
#[test]
fn on_a_full_disk_no_job_is_both_refused_and_run_nor_acknowledged_and_lost() {
    let Some(disk) = Tmpfs::mount("1m") else { return };
    let store = disk.path().join("queue.sqlite");
    let server = Gearmand::embedded(Some(&store));
    let (mut acknowledged, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..1000 {
        if submit_4k(&server, i) {
            acknowledged.insert(i);
        } else {
            refused.insert(i);
            if refused.len() == 5 {
                break;
            }
        }
    }
    assert!(!refused.is_empty(), "a 1 MiB disk took 1000 jobs of 4 KiB");
    // A client retrying with the same unique key (as after a lost connection).
    for i in refused.clone() {
        if submit_4k(&server, i) {
            refused.remove(&i);
            acknowledged.insert(i);
        }
    }
    let handed = grab_all(&server);
    let both: Vec<_> = handed.intersection(&refused).collect();
    assert!(both.is_empty(), "refused jobs handed to a worker: {both:?}");
    assert_eq!(handed, acknowledged, "the worker is handed exactly the acknowledged jobs");

    disk.resize("16m");
    server.kill();
    let server = Gearmand::embedded(Some(&store));
    let restored = grab_all(&server);
    let lost: Vec<_> = acknowledged.difference(&restored).collect();
    assert!(lost.is_empty(), "acknowledged jobs lost across SIGKILL: {lost:?}");
    let both: Vec<_> = restored.intersection(&refused).collect();
    assert!(both.is_empty(), "refused jobs stored: {both:?}");
    drop(server);
}

/// **`listening` only once the store is open (issue 20, item 11).** A store that cannot be
/// opened (its path is a directory) fails the server with the store's error, and the server
/// never said it was listening.
#[test]
fn listening_is_said_only_once_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(host().args(["server", "--listen", "127.0.0.1:0", "--store"]).arg(dir.path()));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("job store"), "the store's error is reported: {}", out.stderr);
    assert!(!out.stderr.contains("listening"), "said listening with no store: {}", out.stderr);
}

/// **A failed commit does not take back a foreground job another client joined (review
/// finding).** On a full disk, connection A sends a background job (its insert fails) and then
/// a foreground job with unique `U` in one write; B submits `U` too in the same turn and is told
/// `JOB_CREATED` at once (nothing of it waits for the store). A is refused; the job was dropped
/// with A's submissions, so no worker ever got it and B waited forever. The server is stopped
/// (SIGSTOP) while both write, so both are read in one turn.
#[test]
fn a_foreground_job_joined_from_another_connection_survives_a_failed_commit() {
    let Some(disk) = Tmpfs::mount("1m") else { return };
    let store = disk.path().join("queue.sqlite");
    let server = Gearmand::embedded(Some(&store));
    let mut i = 0;
    while submit_4k(&server, i) {
        i += 1;
        assert!(i < 1000, "a 1 MiB disk took 1000 jobs of 4 KiB");
    }
    let (mut a, mut b) = (Peer::connect(&server), Peer::connect(&server));
    for peer in [&mut a, &mut b] {
        peer.send(&Packet::EchoReq { data: b"accepted".to_vec() });
        assert_eq!(peer.expect(), Packet::EchoRes { data: b"accepted".to_vec() });
    }
    let signal = |name: &str| {
        let out = run(Command::new("kill").args([name, &server.pid().to_string()]));
        assert_eq!(out.code, Some(0), "kill {name}: {}", out.stderr);
    };
    let foreground = Packet::SubmitJob {
        priority: Priority::Normal,
        background: false,
        function: b"joined".to_vec(),
        unique: b"U".to_vec(),
        workload: b"w".to_vec(),
    };
    signal("-STOP");
    // Loopback writes land in the server's receive queues at once: A's first.
    let mut wire = Vec::new();
    let mut workload = b"a:".to_vec();
    workload.resize(4096, b'x');
    let background = Packet::SubmitJob {
        priority: Priority::Normal,
        background: true,
        function: b"f".to_vec(),
        unique: b"a".to_vec(),
        workload,
    };
    for packet in [&background, &foreground] {
        li3g_host::gearman::packet::encode(li3g_host::gearman::packet::Magic::Req, packet, &mut wire).unwrap();
    }
    std::io::Write::write_all(&mut a.stream, &wire).unwrap();
    b.send(&foreground);
    signal("-CONT");
    assert!(matches!(a.expect(), Packet::Error { code, .. } if code == b"STORE_FAILED"), "A is refused");
    let Packet::JobCreated { handle } = b.expect() else { panic!("B: expected JOB_CREATED") };
    let mut worker = Peer::worker(&server, "joined");
    let (grabbed, workload) = worker.grab().expect("the job B was told about is handed out");
    assert_eq!((grabbed.as_slice(), workload.as_slice()), (handle.as_slice(), b"w".as_slice()));
    worker.send(&Packet::WorkComplete { handle: handle.clone(), data: b"done".to_vec() });
    assert_eq!(b.expect(), Packet::WorkComplete { handle, data: b"done".to_vec() });
}
