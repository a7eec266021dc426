//! Cases found reviewing li3g-client (issue 22), against a real gearmand: calls that coalesce
//! on one connection, bytes a Gearman packet cannot carry, and batches longer than a request
//! timeout on a server that keeps answering.

use li3g_client::gearman::GearmanClient;
use li3g_client::{AsyncClient, Client, ClientError, RunError};
use li3g_tests::{wait_until, wait_until_ok, Gearmand, PluginDir, Worker};
use std::time::Duration;

use crate::async_client::{addr, runtime, total};

#[test]
fn async_calls_that_coalesce_on_one_connection_each_get_the_result() {
    // Two synchronous calls with one unique key, on one connection: gearmand answers both with
    // the same handle and sends the result once per submission. Both callers must hear it.
    let gearmand = Gearmand::start();
    let client = AsyncClient::new(vec![addr(gearmand.port)]);
    let rt = runtime();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            rt.spawn(async move {
                client
                    .job("Misbehave::echo", (7,))
                    .unique("review-coalesced")
                    .timeout(Duration::from_secs(20))
                    .call::<u64>()
                    .await
            })
        })
        .collect();
    // Both attached to the one job before a worker takes it.
    let mut status = GearmanClient::new(vec![addr(gearmand.port)]);
    wait_until_ok(
        "both calls attached to the job",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || match status.status_unique(b"review-coalesced") {
            Ok(s) if s.known && s.clients == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::echo");
    for call in calls {
        assert_eq!(rt.block_on(call).unwrap().unwrap(), 7);
    }
    wait_until("nothing left in flight", Duration::from_secs(10), || client.in_flight() == 0);
}

#[test]
fn a_task_name_or_key_a_packet_cannot_carry_is_an_error_not_a_panic_and_sends_nothing() {
    let gearmand = Gearmand::start();
    let async_client = AsyncClient::new(vec![addr(gearmand.port)]);
    let rt = runtime();
    let err = rt.block_on(async_client.submit("Bad\0Name::run", ())).unwrap_err();
    assert!(matches!(err, RunError::Invalid(_)), "{err:?}");
    let err = rt.block_on(async_client.job("Hello::say", ()).unique("a\0b").call::<String>()).unwrap_err();
    assert!(matches!(err, RunError::Invalid(_)), "{err:?}");
    let err = rt.block_on(async_client.job("Hello::say", ()).id("id\0x").submit()).unwrap_err();
    assert!(matches!(err, RunError::Invalid(_)), "{err:?}");

    // In a batch, only the bad job fails; the others are created.
    let jobs = vec![("Batch::ok".to_string(), 1), ("Bad\0::run".to_string(), 2), ("Batch::ok".to_string(), 3)];
    let results = rt.block_on(async_client.submit_many(jobs.clone()));
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(RunError::Invalid(_))), "{results:?}");

    let mut client = Client::new(vec![addr(gearmand.port)]);
    let err = client.submit("Bad\0Name::run", ()).unwrap_err();
    assert!(matches!(err, RunError::Invalid(_)), "{err:?}");
    let results = client.submit_many(jobs);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(RunError::Invalid(_))), "{results:?}");
    assert_eq!(total(&gearmand, "Batch::ok"), Some(4));
}

/// A proxy to gearmand that passes everything on, each `JOB_CREATED` `delay` after the one
/// before: a server that is slow but answers. After `answers` of them it passes no more
/// (a server that stopped answering). Returns its port.
fn slow_answers_proxy(gearmand: u16, delay: Duration, answers: usize) -> u16 {
    use std::io::{copy, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut server = TcpStream::connect(("127.0.0.1", gearmand)).unwrap();
            let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut header = [0u8; 12];
                let mut created = 0;
                while server.read_exact(&mut header).is_ok() {
                    let mut body = vec![0u8; u32::from_be_bytes(header[8..12].try_into().unwrap()) as usize];
                    if server.read_exact(&mut body).is_err() {
                        break;
                    }
                    // The answer to the OPTION_REQ goes at once; submissions' answers are slow.
                    if u32::from_be_bytes(header[4..8].try_into().unwrap()) == 8 {
                        created += 1;
                        if created > answers {
                            continue;
                        }
                        std::thread::sleep(delay);
                    }
                    if client.write_all(&header).and_then(|()| client.write_all(&body)).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn a_batch_longer_than_the_request_timeout_is_created_while_the_server_keeps_answering() {
    // 30 answers 50 ms apart: 1.5 s in all, each one well within the 0.5 s request timeout.
    let gearmand = Gearmand::start();
    let proxy = slow_answers_proxy(gearmand.port, Duration::from_millis(50), usize::MAX);
    let timeout = Duration::from_millis(500);

    let mut client = Client::with(GearmanClient::new(vec![addr(proxy)]).request_timeout(timeout));
    let results = client.submit_many((0..30u64).map(|i| ("Batch::slow".to_string(), (i,))));
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{} of 30 not created: {:?}", failed.len(), failed.first());

    let client = AsyncClient::new(vec![addr(proxy)]).request_timeout(timeout);
    let results = runtime().block_on(client.submit_many((0..30u64).map(|i| ("Batch::slow_async".to_string(), (i,)))));
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{} of 30 not created: {:?}", failed.len(), failed.first());
    assert_eq!(total(&gearmand, "Batch::slow"), Some(30));
    assert_eq!(total(&gearmand, "Batch::slow_async"), Some(30));

    // A server that stops answering mid-batch: the rest may be queued, each reported so at
    // the deadline, not hung.
    let proxy = slow_answers_proxy(gearmand.port, Duration::ZERO, 5);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy)]).request_timeout(timeout));
    let results = client.submit_many((0..10u64).map(|i| ("Batch::stopped".to_string(), (i,))));
    check_stopped_after_five(&results);
    let client = AsyncClient::new(vec![addr(proxy)]).request_timeout(timeout);
    let results = runtime().block_on(client.submit_many((0..10u64).map(|i| ("Batch::stopped".to_string(), (i,)))));
    check_stopped_after_five(&results);
}

fn check_stopped_after_five(results: &[Result<li3g_client::Queued, RunError>]) {
    assert_eq!(results.len(), 10);
    assert!(results[..5].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results[5..].iter().all(|r| matches!(r, Err(RunError::Client(ClientError::MaybeQueued { .. })))),
        "{results:?}"
    );
}

#[test]
fn an_unanswered_submission_does_not_cut_off_the_calls_waiting_on_its_connection() {
    // One connection through a proxy that passes its first JOB_CREATED only: call A is
    // accepted and runs for 3 s; submission B is never confirmed, so the client sends it again
    // on a new connection. A still waits on the first one and must get its result.
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::sleep");
    let proxy = slow_answers_proxy(gearmand.port, Duration::ZERO, 1);
    let client = AsyncClient::new(vec![addr(proxy)]).request_timeout(Duration::from_millis(500));
    let rt = runtime();
    let a = {
        let client = client.clone();
        rt.spawn(
            async move { client.job("Misbehave::sleep", (3.0,)).timeout(Duration::from_secs(30)).call::<f64>().await },
        )
    };
    wait_until("A is accepted", Duration::from_secs(10), || client.in_flight() == 1);
    let b = rt.block_on(client.job("Review::b", ()).unique("review-b").submit());
    assert!(b.is_ok(), "sent again on a new connection: {b:?}");
    assert_eq!(rt.block_on(a).unwrap().unwrap(), 3.0);
}

#[test]
fn the_trigger_example_queues_a_background_job_and_gets_a_synchronous_result() {
    // client/examples/trigger.rs, as the crate's docs tell a user to run it.
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello"]);
    let _worker = Worker::serving(&gearmand, &dir, "Hello::say");
    let root = li3g_tests::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["run", "-q", "-p", "li3g-client", "--example", "trigger", "--target-dir"])
        .arg(root.join("target/harness/main"))
        .arg("--")
        .arg(gearmand.addr())
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = stdout.lines();
    let queued = lines.next().unwrap_or_default();
    assert!(
        queued.starts_with("queued job ") && queued.ends_with(&format!(" on 127.0.0.1:{}", gearmand.port)),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("Hello Mariano"), "{stdout}");
    wait_until("the background job ran", Duration::from_secs(10), || {
        gearmand.status().iter().find(|s| s.function == "Hello::say").is_some_and(|s| s.total == 0 && s.running == 0)
    });
}

#[test]
fn a_killed_server_fails_every_waiting_async_call_at_once_and_a_restarted_one_is_used_again() {
    let gearmand = Gearmand::start();
    let port = gearmand.port;
    let client = AsyncClient::new(vec![addr(port)]);
    let rt = runtime();
    let calls: Vec<_> = (0..100u64)
        .map(|i| {
            let client = client.clone();
            rt.spawn(async move {
                let started = std::time::Instant::now();
                let result = client.job("Nobody::serves", (i,)).timeout(Duration::from_secs(60)).call::<String>().await;
                (result, started.elapsed())
            })
        })
        .collect();
    wait_until("100 calls accepted", Duration::from_secs(20), || client.in_flight() == 100);
    gearmand.kill();
    for call in calls {
        let (result, took) = rt.block_on(call).unwrap();
        assert!(matches!(result, Err(RunError::Client(ClientError::Lost(_)))), "{result:?}");
        assert!(took < Duration::from_secs(30), "{took:?}: not at once");
    }
    assert_eq!(client.in_flight(), 0);
    let again = li3g_tests::on_a_free_port("gearmand on the same port", |_| Gearmand::try_start_on(port));
    let queued = rt.block_on(client.submit("Review::again", ())).unwrap();
    assert_eq!(queued.handle.server, addr(port));
    assert_eq!(total(&again, "Review::again"), Some(1));
}

/// A server that answers the `OPTION_REQ`, then answers anything else with `reply`.
fn garbage_server(reply: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // OPTION_REQ "exceptions": 12 + 10 bytes.
                let mut got = 0;
                while got < 22 {
                    match stream.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let mut res = b"\0RES".to_vec();
                res.extend_from_slice(&27u32.to_be_bytes());
                res.extend_from_slice(&10u32.to_be_bytes());
                res.extend_from_slice(b"exceptions");
                let _ = stream.write_all(&res);
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    let _ = stream.write_all(reply);
                }
            });
        }
    });
    port
}

#[test]
fn garbage_or_an_oversize_packet_from_a_server_is_an_error_for_each_call_not_a_hang() {
    let rt = runtime();
    for reply in [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], b"\0RES\0\0\0\x08\xff\xff\xff\xff"] {
        let port = garbage_server(reply);
        let client = AsyncClient::new(vec![addr(port)]).request_timeout(Duration::from_secs(5));
        let started = std::time::Instant::now();
        let result = rt.block_on(client.job("Review::garbage", ()).timeout(Duration::from_secs(20)).call::<String>());
        assert!(result.is_err(), "{result:?}");
        let queued = rt.block_on(client.submit("Review::garbage", ()));
        assert!(matches!(queued, Err(RunError::Client(ClientError::MaybeQueued { .. }))), "{queued:?}");
        assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
        assert_eq!(client.in_flight(), 0);
    }
}
