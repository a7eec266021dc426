//! li3g-client's `AsyncClient` (feature `tokio`) inside a tokio runtime, against a real gearmand
//! and li3g workers: many calls in flight on one connection, each answer matched to its call;
//! deadlines against a server that stops answering (SIGSTOP); dropped calls leave nothing
//! behind; pipelined submission (`submit_many`, blocking and async) reports per job and fails
//! over for what it never sent; a stalled Redis holds up no other task.

use crate::gearman_client::unconfirming_proxy;
use li3g_client::gearman::GearmanClient;
use li3g_client::{AsyncClient, Client, ClientError, RunError, ServerAddr};
use li3g_tests::tls::{Certs, TlsServer};
use li3g_tests::{wait_until, Gearmand, PluginDir, Worker};
use std::time::{Duration, Instant};

pub(crate) fn addr(port: u16) -> ServerAddr {
    ServerAddr { host: "127.0.0.1".into(), port, tls: false }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Jobs gearmand holds for `function` (queued and running).
pub(crate) fn total(gearmand: &Gearmand, function: &str) -> Option<u64> {
    gearmand.status().iter().find(|s| s.function == function).map(|s| s.total)
}

/// `n` concurrent `Misbehave::echo` calls of `client`, call `i` sending `args(i)`, each within
/// `timeout`: what each got back, by call.
async fn concurrent_echoes(
    client: &AsyncClient,
    n: u64,
    timeout: Duration,
    args: fn(u64) -> Vec<u64>,
) -> Vec<(u64, Vec<u64>)> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let echoed: Vec<u64> = client.job("Misbehave::echo", (args(i),)).timeout(timeout).call().await.unwrap();
                (i, echoed)
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

/// A Redis, an async client of `gearmand` that schedules in it, and a single-threaded runtime
/// (where a call that blocks its thread holds up every other task).
fn client_with_redis(gearmand: &Gearmand) -> (li3g_tests::Redis, AsyncClient, tokio::runtime::Runtime) {
    let redis = li3g_tests::Redis::start();
    let target = li3g_client::config::Target {
        servers: vec![addr(gearmand.port)],
        redis: Some(redis.url()),
        ..li3g_client::config::load(None, "default", None).unwrap()
    };
    let client = AsyncClient::from_target(&target);
    (redis, client, tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// Connections that registered no function: clients (and gearadmin's own).
fn client_connections(gearmand: &Gearmand) -> usize {
    gearmand.workers().iter().filter(|w| w.functions.is_empty()).count()
}

#[test]
fn a_thousand_concurrent_calls_on_one_connection_each_get_their_own_result() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::echo");
    let before = client_connections(&gearmand);
    let client = AsyncClient::new(vec![addr(gearmand.port)]);
    // The runtime lives to the end: its tasks hold the connection.
    let rt = runtime();
    let results = rt.block_on(concurrent_echoes(&client, 1000, Duration::from_secs(120), |i| vec![i, i * 7]));
    assert_eq!(results.len(), 1000);
    for (i, echoed) in results {
        assert_eq!(echoed, vec![i, i * 7], "call {i} got another call's result");
    }
    // All of them went over one connection.
    assert_eq!(client_connections(&gearmand), before + 1, "{:?}", gearmand.workers());
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_server_that_stops_answering_times_out_each_call_at_its_deadline_and_leaves_nothing() {
    let gearmand = Gearmand::start();
    let client = AsyncClient::new(vec![addr(gearmand.port)]);
    let rt = runtime();
    // Connected, then the server stops.
    rt.block_on(client.submit("Nobody::serves", ())).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gearmand.pid() as i32), nix::sys::signal::Signal::SIGSTOP)
        .unwrap();
    let cont = || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(gearmand.pid() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let calls: Vec<_> = (0..20u64)
                .map(|i| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let timeout = Duration::from_millis(500 + 50 * i);
                        let err = client.job("Hello::say", ("x",)).timeout(timeout).call::<String>().await.unwrap_err();
                        (timeout, started.elapsed(), err)
                    })
                })
                .collect();
            for call in calls {
                let (timeout, took, err) = call.await.unwrap();
                assert!(matches!(err, RunError::Client(ClientError::Timeout(t)) if t == timeout), "{err:?}");
                assert!(took >= timeout && took < timeout + Duration::from_secs(2), "{took:?} for {timeout:?}");
            }
        });
        // The submissions are unanswered: their connection is retired for new calls, and either
        // still reads (it ends with its last caller) or is already closed, as the tasks ran.
        assert!(client.in_flight() <= 20);
    }));
    cont();
    outcome.unwrap();
    // Once the server answers, no handle is filed for calls that gave up...
    wait_until("the late JOB_CREATEDs are read", Duration::from_secs(10), || client.in_flight() == 0);
    assert_eq!(total(&gearmand, "Hello::say"), Some(20));
    // ...and the client goes on, on a new connection.
    rt.block_on(client.submit("Nobody::serves", ())).unwrap();
    assert_eq!(total(&gearmand, "Nobody::serves"), Some(2));
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_dropped_call_leaves_no_stale_handle_behind() {
    let gearmand = Gearmand::start();
    let client = AsyncClient::new(vec![addr(gearmand.port)]);
    let rt = runtime();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            rt.spawn(async move { client.call::<String>("Nobody::serves", (i,)).await })
        })
        .collect();
    // Every call has its handle and waits for a worker that never comes.
    wait_until("50 jobs queued", Duration::from_secs(10), || total(&gearmand, "Nobody::serves") == Some(50));
    wait_until("50 handles filed", Duration::from_secs(10), || client.in_flight() == 50);
    for call in &calls {
        call.abort();
    }
    wait_until("the dropped calls' handles are gone", Duration::from_secs(10), || client.in_flight() == 0);
    for call in calls {
        assert!(rt.block_on(call).unwrap_err().is_cancelled());
    }
}

#[test]
fn submit_many_pipelines_background_jobs_and_reports_each() {
    let gearmand = Gearmand::start();
    // Blocking: 1,500 jobs (three windows).
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let jobs = (0..1500u64).map(|i| ("Batch::blocking".to_string(), (i,)));
    let results = client.submit_many(jobs);
    assert_eq!(results.len(), 1500);
    assert!(results.iter().all(Result::is_ok));
    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids.len(), 1500);
    assert_eq!(total(&gearmand, "Batch::blocking"), Some(1500));

    // Async: the same through the connection's writer and reader.
    let async_client = AsyncClient::new(vec![addr(gearmand.port)]);
    let results =
        runtime().block_on(async_client.submit_many((0..1500u64).map(|i| ("Batch::async".to_string(), (i,)))));
    assert!(results.iter().all(Result::is_ok));
    assert!(results.iter().all(|r| r.as_ref().unwrap().handle.server == addr(gearmand.port)));
    assert_eq!(total(&gearmand, "Batch::async"), Some(1500));
}

#[test]
fn submit_many_never_resends_what_a_server_may_have_queued() {
    let gearmand = Gearmand::start();
    // The proxy delivers every submission and closes on the first JOB_CREATED: each job is
    // queued and none is confirmed. None may be sent again, here or to gearmand directly.
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0));
    let results = client.submit_many((0..100u64).map(|i| ("Batch::unconfirmed".to_string(), (i,))));
    assert!(
        results.iter().all(
            |r| matches!(r, Err(RunError::Client(ClientError::MaybeQueued { server, .. })) if *server == addr(proxy))
        ),
        "{:?}",
        results.iter().find(|r| !matches!(r, Err(RunError::Client(ClientError::MaybeQueued { .. }))))
    );
    wait_until("the proxy delivered them", Duration::from_secs(10), || {
        total(&gearmand, "Batch::unconfirmed") == Some(100)
    });

    let proxy = unconfirming_proxy(gearmand.port);
    let client = AsyncClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0);
    let results =
        runtime().block_on(client.submit_many((0..100u64).map(|i| ("Batch::unconfirmed_async".to_string(), (i,)))));
    assert!(results.iter().all(|r| matches!(r, Err(RunError::Client(ClientError::MaybeQueued { .. })))), "{results:?}");
    wait_until("the proxy delivered them", Duration::from_secs(10), || {
        total(&gearmand, "Batch::unconfirmed_async") == Some(100)
    });
}

/// A client speaking TLS with CA `ca` (the configuration the blocking client would use).
fn tls_client(port: u16, ca: &std::path::Path) -> AsyncClient {
    let files = li3g_client::protocol::tls::ClientFiles { ca: Some(ca.into()), cert: None, key: None };
    let server = ServerAddr { host: "localhost".into(), port, tls: true };
    AsyncClient::new(vec![server]).with_tls(li3g_client::protocol::tls::client_config(&files).unwrap())
}

#[test]
fn tls_servers_are_spoken_to_with_many_calls_in_flight_on_one_tls_connection() {
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let dir = PluginDir::with(&["misbehave"]);
    // The worker on the server's plaintext loopback listener; the client through TLS only.
    let _worker = Worker::serving(&tls.server, &dir, "Misbehave::echo");
    let before = client_connections(&tls.server);
    let client = tls_client(tls.tls_port, &certs.ca);
    let rt = runtime();
    let results = rt.block_on(async {
        let results = concurrent_echoes(&client, 200, Duration::from_secs(60), |i| vec![i]).await;
        let queued = client.submit("Later::tls", ("x",)).await.unwrap();
        assert!(queued.handle.to_string().contains(&format!("tls://localhost:{}", tls.tls_port)), "{}", queued.handle);
        results
    });
    for (i, echoed) in results {
        assert_eq!(echoed, vec![i], "call {i} got another call's result");
    }
    assert_eq!(total(&tls.server, "Later::tls"), Some(1));
    assert_eq!(client_connections(&tls.server), before + 1, "one TLS connection: {:?}", tls.server.workers());
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn a_tls_server_whose_certificate_another_ca_signed_is_refused_naming_the_cause() {
    let certs = Certs::new();
    let tls = TlsServer::start(&certs.server, None);
    let client = tls_client(tls.tls_port, &certs.other_ca);
    let err = runtime().block_on(client.submit("Any::task", ())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("tls://localhost:{}: TLS: ", tls.tls_port)) && text.contains("unknown CA"),
        "{text}"
    );
    assert_eq!(total(&tls.server, "Any::task"), None, "nothing was submitted");
    // A plaintext server where TLS was asked for: refused too, nothing sent in plaintext.
    let gearmand = Gearmand::start();
    let err = runtime().block_on(tls_client(gearmand.port, &certs.ca).submit("Any::task", ())).unwrap_err();
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
    assert_eq!(total(&gearmand, "Any::task"), None, "nothing was sent in plaintext");
}

#[test]
fn a_stalled_redis_holds_up_no_other_call_of_the_async_client() {
    // Scheduling in Redis is a blocking round trip; run on a runtime's own thread it stopped
    // every other task of a single-threaded runtime until Redis answered or timed out.
    use nix::sys::signal::{kill, Signal};
    let gearmand = Gearmand::start();
    let (redis, client, runtime) = client_with_redis(&gearmand);
    let redis_pid = nix::unistd::Pid::from_raw(redis.pid() as i32);
    runtime.block_on(async {
        assert_eq!(client.status("no-such-job").await.unwrap(), None, "the store answers");
        kill(redis_pid, Signal::SIGSTOP).unwrap();
        let scheduler = client.clone();
        let scheduling =
            tokio::spawn(
                async move { scheduler.job("Async::later", ()).after(Duration::from_secs(3600)).submit().await },
            );
        tokio::task::yield_now().await;
        for n in 0..10 {
            client.submit("Async::now", n).await.expect("a job server call while Redis is stopped");
        }
        assert!(!scheduling.is_finished(), "the calls on the job server waited for the stopped Redis");
        kill(redis_pid, Signal::SIGCONT).unwrap();
        let scheduled = scheduling.await.unwrap().expect("scheduled once Redis answers");
        assert!(matches!(scheduled, li3g_client::Submitted::Scheduled { .. }), "{scheduled:?}");
    });
    assert_eq!(total(&gearmand, "Async::now"), Some(10));
    assert_eq!(total(&gearmand, "Async::later"), None, "scheduled in Redis, not in the job server");
}

#[test]
fn blocking_submit_many_fails_over_to_the_next_server_for_what_it_never_sent() {
    let gearmand = Gearmand::start();
    // A first server that is down: every window goes to the next one.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut client = Client::with(GearmanClient::new(vec![addr(dead), addr(gearmand.port)]).start_at(0));
    let results = client.submit_many((0..1100u64).map(|i| ("Batch::failover".to_string(), (i,))));
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    assert_eq!(total(&gearmand, "Batch::failover"), Some(1100));

    // A first server that takes the first window and confirms none of it: that window is
    // "maybe queued" (and was), the windows after it go to gearmand, and nothing runs twice.
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0));
    let jobs = 3 * li3g_client::gearman::PIPELINE_WINDOW as u64;
    let results = client.submit_many((0..jobs).map(|i| ("Batch::broken".to_string(), (i,))));
    let window = li3g_client::gearman::PIPELINE_WINDOW;
    assert!(
        results[..window].iter().all(|r| matches!(r, Err(RunError::Client(ClientError::MaybeQueued { .. })))),
        "{:?}",
        results[..window].iter().find(|r| r.is_ok())
    );
    assert!(
        results[window..].iter().all(|r| r.as_ref().is_ok_and(|q| q.handle.server == addr(gearmand.port))),
        "{:?}",
        results[window..].iter().find(|r| r.is_err())
    );
    // The confirmed windows are there; of the first, what the proxy passed on before it closed.
    let held = total(&gearmand, "Batch::broken").unwrap_or(0);
    assert!((2 * window as u64..=jobs).contains(&held), "{held} of {jobs}");
}

#[test]
fn calls_queued_behind_a_stalled_redis_take_no_blocking_threads_and_give_up_in_time() {
    // Each scheduling call waited for the store on a thread of tokio's blocking pool: 600 of
    // them behind a stopped Redis held its 512 threads, so whatever else needs the pool (tokio
    // resolves a job server's name there) waited too, and each call waited for every call
    // before it, without a deadline of its own.
    use nix::sys::signal::{kill, Signal};
    let gearmand = Gearmand::start();
    let redis = li3g_tests::Redis::start();
    let target = li3g_client::config::Target {
        servers: vec![ServerAddr { host: "localhost".into(), port: gearmand.port, tls: false }],
        redis: Some(redis.url()),
        ..li3g_client::config::load(None, "default", None).unwrap()
    };
    let client = AsyncClient::from_target(&target).request_timeout(Duration::from_secs(1));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis_pid = nix::unistd::Pid::from_raw(redis.pid() as i32);
    /// Lets Redis go on however the test ends: dropping the runtime waits for the calls in Redis.
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }
    runtime.block_on(async {
        assert_eq!(client.status("no-such-job").await.unwrap(), None, "the store answers");
        kill(redis_pid, Signal::SIGSTOP).unwrap();
        let _resume = Resume(redis_pid);
        let schedules: Vec<_> = (0..600)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(
                    async move { client.job("Async::later", (n,)).after(Duration::from_secs(3600)).submit().await },
                )
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        client.submit("Async::now", (0,)).await.expect("a job server by name while Redis is stopped");
        // A server that takes the connection and answers nothing: named with the time it had.
        let stopped = Gearmand::start();
        kill(nix::unistd::Pid::from_raw(stopped.pid() as i32), Signal::SIGSTOP).unwrap();
        let err = AsyncClient::new(vec![addr(stopped.port)])
            .request_timeout(Duration::from_secs(1))
            .submit("Async::never", (0,))
            .await
            .expect_err("a stopped server confirms nothing");
        assert!(err.to_string().contains("no connection within 1.0 s"), "{err}");
        // All but the call in Redis give up within their request timeout, having done nothing.
        let mut schedules = schedules.into_iter();
        let first = schedules.next().unwrap();
        let by = tokio::time::Instant::now() + Duration::from_secs(8);
        for schedule in schedules {
            let err = tokio::time::timeout_at(by, schedule).await.expect("within the request timeout").unwrap();
            let err = err.expect_err("nothing scheduled while Redis is stopped").to_string();
            assert!(err.contains("nothing was scheduled"), "{err}");
        }
        assert!(!first.is_finished(), "the call in Redis waits for its answer");
        kill(redis_pid, Signal::SIGCONT).unwrap();
        let scheduled = first.await.unwrap().expect("scheduled once Redis answers");
        let li3g_client::Submitted::Scheduled { id, .. } = scheduled else { panic!("{scheduled:?}") };
        assert!(client.status(&id).await.unwrap().is_some(), "job {id} is in Redis");
    });
    assert_eq!(total(&gearmand, "Async::now"), Some(1));
}

#[test]
fn blocking_submit_many_passes_over_a_stopped_server_and_one_that_died_under_its_kept_connection() {
    use nix::sys::signal::{kill, Signal};
    let live = Gearmand::start();
    let stopped = Gearmand::start();
    let dying = Gearmand::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let servers = vec![addr(dying.port), addr(dead), addr(stopped.port), addr(live.port)];
    let mut client = Client::with(GearmanClient::new(servers).start_at(0).request_timeout(Duration::from_secs(1)));
    let window = li3g_client::gearman::PIPELINE_WINDOW as u64;
    let results = client.submit_many((0..10u64).map(|i| ("Batch::kept".to_string(), (i,))));
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|q| q.handle.server == addr(dying.port))));
    kill(nix::unistd::Pid::from_raw(stopped.pid() as i32), Signal::SIGSTOP).unwrap();
    drop(dying);
    let results = client.submit_many((0..2 * window).map(|i| ("Batch::moved".to_string(), (i,))));
    assert!(
        results.iter().all(|r| r.as_ref().is_ok_and(|q| q.handle.server == addr(live.port))),
        "{:?}",
        results.iter().find(|r| r.as_ref().map_or(true, |q| q.handle.server != addr(live.port)))
    );
    kill(nix::unistd::Pid::from_raw(stopped.pid() as i32), Signal::SIGCONT).unwrap();
    assert_eq!(total(&live, "Batch::moved"), Some(2 * window));
    assert_eq!(total(&stopped, "Batch::moved"), None, "nothing reached the stopped server");
}

#[test]
fn a_dropped_schedule_is_scheduled_once_its_redis_call_started_and_not_before() {
    // What the caller of a dropped (timed out) `submit()` of a scheduled job can count on: a
    // call whose Redis round trip had started completes it; one still waiting for the call
    // before it did nothing.
    use nix::sys::signal::{kill, Signal};
    let gearmand = Gearmand::start();
    let (redis, client, runtime) = client_with_redis(&gearmand);
    let redis_pid = nix::unistd::Pid::from_raw(redis.pid() as i32);
    runtime.block_on(async {
        assert_eq!(client.status("started").await.unwrap(), None, "the store answers");
        kill(redis_pid, Signal::SIGSTOP).unwrap();
        let schedule = |id: &'static str| {
            let client = client.clone();
            async move { client.job("Async::later", (1,)).id(id).after(Duration::from_secs(3600)).submit().await }
        };
        let started = tokio::time::timeout(Duration::from_millis(300), schedule("started")).await;
        assert!(started.is_err(), "Redis is stopped: {started:?}");
        let waiting = tokio::time::timeout(Duration::from_millis(300), schedule("waiting")).await;
        assert!(waiting.is_err(), "behind the call in Redis: {waiting:?}");
        kill(redis_pid, Signal::SIGCONT).unwrap();
        // Store calls run in turn: this one after the dropped call's round trip.
        assert!(client.status("started").await.unwrap().is_some(), "the started call was completed");
        assert_eq!(client.status("waiting").await.unwrap(), None, "the waiting call did nothing");
    });
}

#[test]
fn a_job_store_that_panics_is_reported_and_not_used_again() {
    // A panic in a store call is the call's error, not a panicked task; the store may be
    // half-way through a request (a Redis answer left unread), so later calls are refused.
    struct Panicking(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl li3g_client::JobStore for Panicking {
        fn schedule(
            &mut self,
            _: &li3g_client::ScheduledJob,
            _: std::time::SystemTime,
        ) -> Result<(), li3g_client::client::StoreError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("the store broke");
        }
    }
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = AsyncClient::new(vec![addr(1)]).with_store(Box::new(Panicking(calls.clone())));
    runtime().block_on(async {
        for _ in 0..2 {
            let err = client.job("Async::later", (1,)).after(Duration::from_secs(60)).submit().await.unwrap_err();
            assert!(matches!(err, RunError::Schedule(_)), "{err:?}");
            let err = err.to_string();
            assert!(err.contains("panicked (the store broke); it is not used again"), "{err}");
        }
    });
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the broken store was called once");
}

#[test]
fn a_long_queue_of_store_calls_on_a_live_redis_is_not_cut_off_by_the_request_timeout() {
    // The calls run one at a time: thousands at once take longer in all than a short request
    // timeout, and none may fail for it while the store keeps answering.
    let redis = li3g_tests::Redis::start();
    let target = li3g_client::config::Target {
        servers: vec![addr(1)],
        redis: Some(redis.url()),
        ..li3g_client::config::load(None, "default", None).unwrap()
    };
    let client = AsyncClient::from_target(&target).request_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let results = runtime().block_on(async {
        let calls: Vec<_> = (0..10_000u64)
            .map(|n| {
                let client = client.clone();
                tokio::spawn(
                    async move { client.job("Async::later", (n,)).after(Duration::from_secs(3600)).submit().await },
                )
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await.unwrap());
        }
        results
    });
    let took = started.elapsed();
    assert!(results.iter().all(Result::is_ok), "in {took:?}: {:?}", results.iter().find(|r| r.is_err()));
}
