//! A worker with several servers: every server is served fairly, a hostile one (a peer this
//! test runs in-process) never stalls the good one, and a stop signal always ends a wait.

use li3g_host::gearman::client::{GearmanClient, Submit};
use li3g_host::gearman::conn::ServerAddr;
use li3g_tests::Worker;
use li3g_tests::{signal, Signal};
use li3g_tests::{wait_for_workers, wait_until, Gearmand, PluginDir};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn client(port: u16) -> GearmanClient {
    GearmanClient::new(vec![ServerAddr { host: "127.0.0.1".into(), port, tls: false }])
}

fn job(function: &str, workload: &[u8]) -> Submit {
    Submit { function: function.into(), workload: workload.to_vec(), ..Submit::default() }
}

/// How long a sync `Hello::say` takes through `port`.
fn round_trip(port: u16) -> Duration {
    let started = Instant::now();
    let (_, result) = client(port)
        .submit_sync(&job("Hello::say", b"A"), Some(WAIT), &mut |_| {})
        .expect("the job on the idle server is answered");
    assert_eq!(result, b"Hello A");
    started.elapsed()
}

#[test]
fn a_job_on_an_idle_server_is_not_held_by_another_servers_queue() {
    let (a, b) = (Gearmand::start(), Gearmand::start());
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = Worker::builder(&[a.addr(), b.addr()]).plugins(dir.path()).spawn();
    wait_for_workers(&[&a, &b], "Misbehave::sleep", 1);
    // Let A's connection settle into its sleep (PRE_SLEEP), as in production.
    round_trip(a.port);
    let mut queue = client(b.port);
    for _ in 0..400 {
        queue.submit_background(&job("Misbehave::sleep", b"[0.02]")).expect("queue on B");
    }
    wait_until("the worker is busy on B", WAIT, || {
        b.status().iter().any(|s| s.function == "Misbehave::sleep" && s.running == 1)
    });
    let took = round_trip(a.port);
    let left = b.status().iter().find(|s| s.function == "Misbehave::sleep").map_or(0, |s| s.total);
    assert!(took < Duration::from_secs(1), "a job on A waited {took:?} behind B's queue");
    assert!(left > 100, "B's queue ran dry ({left} left) before A's job was tried: the test proves nothing");
}

/// How a hostile server misbehaves.
#[derive(Clone, Copy, Debug)]
enum Hostility {
    /// Bytes that are not Gearman.
    Garbage,
    /// The first 6 bytes of a packet, and then nothing.
    Partial,
    /// NOOPs as fast as the socket takes them.
    NoopFlood,
}

/// A TCP peer that accepts workers and misbehaves at each; counts connections and the
/// `GRAB_JOB_UNIQ` requests it received.
struct Hostile {
    port: u16,
    accepted: Arc<AtomicUsize>,
    grabs: Arc<AtomicUsize>,
}

impl Hostile {
    fn start(how: Hostility) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a hostile peer");
        let port = listener.local_addr().expect("its address").port();
        let (accepted, grabs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (count, grabbed) = (accepted.clone(), grabs.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let grabbed = grabbed.clone();
                std::thread::spawn(move || misbehave(stream, how, &grabbed));
            }
        });
        Hostile { port, accepted, grabs }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn misbehave(mut stream: TcpStream, how: Hostility, grabs: &Arc<AtomicUsize>) {
    // Drain what the worker sends, so it never waits on a full socket; count its grabs.
    let mut reader = stream.try_clone().expect("clone the stream");
    let grabs = grabs.clone();
    std::thread::spawn(move || {
        const GRAB_JOB_UNIQ: &[u8] = b"\0REQ\0\0\0\x1e\0\0\0\0";
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            let count = seen.windows(GRAB_JOB_UNIQ.len()).filter(|w| *w == GRAB_JOB_UNIQ).count();
            grabs.store(count, Ordering::SeqCst);
        }
    });
    match how {
        Hostility::Garbage => {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
        Hostility::Partial => {
            let _ = stream.write_all(b"\0RES\0\0");
        }
        Hostility::NoopFlood => {
            let noops: Vec<u8> = b"\0RES\0\0\0\x06\0\0\0\0".repeat(4096);
            while stream.write_all(&noops).is_ok() {}
        }
    }
    // Hold the connection open until the worker closes it.
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_hostile_server_never_stalls_jobs_from_a_good_one() {
    let dir = PluginDir::with(&["hello"]);
    for how in [Hostility::Partial, Hostility::NoopFlood, Hostility::Garbage] {
        let good = Gearmand::start();
        let hostile = Hostile::start(how);
        // The hostile server first: a worker that serves servers in order meets it first.
        let _worker = Worker::builder(&[hostile.addr(), good.addr()]).plugins(dir.path()).spawn();
        wait_for_workers(&[&good], "Hello::say", 1);
        wait_until("the worker reached the hostile peer", WAIT, || hostile.accepted.load(Ordering::SeqCst) > 0);
        for _ in 0..5 {
            let took = round_trip(good.port);
            assert!(took < Duration::from_secs(3), "{how:?}: a job on the good server took {took:?}");
        }
    }
}

#[test]
fn sigterm_during_a_stalled_read_stops_the_worker_promptly() {
    let dir = PluginDir::with(&["hello"]);
    let hostile = Hostile::start(Hostility::Partial);
    let mut worker = Worker::builder(&[hostile.addr()]).plugins(dir.path()).spawn();
    // It asked for a job and got half a packet: now it waits for the rest.
    wait_until("the worker asked the hostile peer for a job", WAIT, || hostile.grabs.load(Ordering::SeqCst) > 0);
    let sent = Instant::now();
    signal(worker.id(), Signal::SIGTERM);
    let status = worker.wait_timeout(WAIT).expect("the worker exits on SIGTERM");
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?} to stop a worker stuck on a partial packet");
}
