//! The harness itself: servers it starts are ours (by PID), even when tests race for ports.

use li3g_tests::{alive, on_a_free_port, Gearmand, Redis};

#[test]
fn servers_started_in_parallel_each_serve_their_own_port() {
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(|| (Gearmand::start(), Redis::start()))).collect();
    let started: Vec<(Gearmand, Redis)> = handles.into_iter().map(|h| h.join().expect("a server started")).collect();
    let mut ports: Vec<u16> = started.iter().flat_map(|(g, r)| [g.port, r.port]).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 8, "every server has a port of its own");
    for (g, r) in &started {
        assert!(alive(g.pid()) && alive(r.pid()));
    }
}

#[test]
fn a_taken_port_is_detected_by_pid_and_another_one_used() {
    let first = Redis::start();
    // Start "on a free port" where the first try is the port the first server holds.
    let tries = std::cell::Cell::new(0);
    let second = on_a_free_port("redis-server", |port| {
        tries.set(tries.get() + 1);
        let port = if tries.get() == 1 { first.port } else { port };
        Redis::try_start_on(port)
    });
    assert!(tries.get() >= 2, "the taken port was refused");
    assert_ne!(second.port, first.port);
    assert_ne!(second.pid(), first.pid());
}
