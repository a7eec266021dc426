//! li3g-client's typed API (`Client::submit`, `Client::call`, `Client::job`) against a real
//! gearmand and a li3g worker, and the client's guarantees through it: a deadline on every
//! request, no silent duplicate, handles that name their server, never an empty unique key for
//! a background job.

use crate::async_client::{addr, total};
use crate::gearman_client::{unconfirming_proxy, wedged_server};
use li3g_client::config::Target;
use li3g_client::gearman::GearmanClient;
use li3g_client::{config, Client, ClientError, JobEvent, Priority, RunError, Submitted};
use li3g_tests::{wait_until, Gearmand, PluginDir, Worker};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};

#[test]
fn typed_calls_submit_and_call_with_results_and_failures() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = Worker::serving(&gearmand, &dir, "Misbehave::counter");
    let mut client = Client::new(vec![addr(gearmand.port)]);

    let hello: String = client.call("Hello::say", ("Mariano",)).unwrap();
    assert_eq!(hello, "Hello Mariano");
    assert_eq!(client.call::<i64>("Misbehave::add", (40, 2)).unwrap(), 42);
    let echoed: Value = client.call("Misbehave::echo", json!({"a": [1, 2]})).unwrap();
    assert_eq!(echoed, json!({"a": [1, 2]}));

    // A task's failure is an error carrying its message.
    let err = client.call::<String>("Misbehave::fail", ("no disk",)).unwrap_err();
    assert_eq!(err.task_failure(), Some("no disk"), "{err:?}");
    assert_eq!(err.to_string(), "no disk");
    // A result of another type is an error naming the task, not a panic.
    let err = client.call::<u32>("Hello::say", ("Mariano",)).unwrap_err();
    assert!(matches!(err, RunError::Result { ref task, .. } if task == "Hello::say"), "{err:?}");

    // Background: the job id and a handle naming the server; the worker runs it.
    let queued = client.submit("Misbehave::counter", ()).unwrap();
    assert_eq!(queued.id.len(), 32);
    assert_eq!(queued.handle.server, addr(gearmand.port));
    wait_until("the background job ran", Duration::from_secs(10), || {
        !client.gearman().status(&queued.handle).unwrap().known
    });
    assert_eq!(client.call::<u64>("Misbehave::counter", ()).unwrap(), 2, "the background job ran once");

    // The builder: priority, timeout, a progress and data callback; a job named by its class.
    let mut events = Vec::new();
    let counted: u64 = client
        .job("Hello::count", (2,))
        .priority(Priority::High)
        .timeout(Duration::from_secs(20))
        .on_event(|event| match event {
            JobEvent::Status(n, d) => events.push(format!("{n}/{d}")),
            JobEvent::Data(data) => events.push(String::from_utf8_lossy(data).into_owned()),
            other => events.push(format!("{other:?}")),
        })
        .call()
        .unwrap();
    assert_eq!(counted, 2);
    assert_eq!(events, ["1\n", "1/2", "2\n", "2/2"]);
    assert_eq!(client.call::<String>("Hello", ()).unwrap(), "I am Hello::run");
    let Submitted::Queued(queued) = client.job("Misbehave::counter", ()).id("my-id").submit().unwrap() else {
        panic!("not queued")
    };
    assert_eq!(queued.id, "my-id");
}

#[test]
fn a_background_job_never_has_an_empty_unique_key() {
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let queued = client.submit("Nobody::serves", ("x",)).unwrap();
    // Its key is its id: the server knows a job by it (an empty key would not be found).
    let status = client.gearman().status_unique(queued.id.as_bytes()).unwrap();
    assert!(status.known, "{status:?}");
    // Two submissions of equal jobs are two jobs (their keys are their ids).
    client.submit("Nobody::serves", ("x",)).unwrap();
    assert_eq!(total(&gearmand, "Nobody::serves"), Some(2));
    // A key asked for merges them.
    client.job("Nobody::serves", ("y",)).unique("k").submit().unwrap();
    client.job("Nobody::serves", ("y",)).unique("k").submit().unwrap();
    assert_eq!(total(&gearmand, "Nobody::serves"), Some(3));
}

#[test]
fn a_handle_names_the_server_that_holds_the_job() {
    let (one, two) = (Gearmand::start(), Gearmand::start());
    let mut client = Client::with(GearmanClient::new(vec![addr(one.port), addr(two.port)]).start_at(1));
    let queued = client.submit("Held::here", ()).unwrap();
    assert_eq!(queued.handle.server, addr(two.port));
    assert_eq!((total(&one, "Held::here"), total(&two, "Held::here")), (None, Some(1)));
    // Its status is asked of that server, whatever the client's next server is.
    assert!(client.gearman().status(&queued.handle).unwrap().known);
}

#[test]
fn an_unconfirmed_typed_submission_is_never_sent_twice() {
    let gearmand = Gearmand::start();
    // A synchronous job has no key unless asked: unconfirmed, it is an error, and it was not
    // sent to the next server (gearmand itself), where it would run twice.
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0));
    let err = client.job("Once::only", ()).timeout(Duration::from_secs(20)).call_raw().unwrap_err();
    assert!(
        matches!(err, RunError::Client(ClientError::MaybeQueued { ref server, .. }) if *server == addr(proxy)),
        "{err:?}"
    );
    // Sent once: gearmand keeps it queued; li3g's embedded server drops a synchronous job whose
    // client has gone. Never twice.
    let once = total(&gearmand, "Once::only");
    assert!(matches!(once, None | Some(1)), "{once:?}");

    // A background job always has a key (its id): sent again to the same server, it coalesces.
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0));
    let queued = client.submit("Background::once", ()).unwrap();
    assert_eq!(queued.handle.server, addr(proxy), "sent again to the same server");
    assert_eq!(total(&gearmand, "Background::once"), Some(1));

    // So does a job with a key of its own.
    let proxy = unconfirming_proxy(gearmand.port);
    let mut client = Client::with(GearmanClient::new(vec![addr(proxy), addr(gearmand.port)]).start_at(0));
    let Submitted::Queued(queued) = client.job("Keyed::once", ()).unique("only-once").submit().unwrap() else {
        panic!()
    };
    assert_eq!(queued.handle.server, addr(proxy));
    assert_eq!(total(&gearmand, "Keyed::once"), Some(1));
}

#[test]
fn every_typed_request_has_a_deadline() {
    let port = wedged_server();
    let mut client = Client::with(GearmanClient::new(vec![addr(port)]).request_timeout(Duration::from_secs(1)));
    let started = Instant::now();
    let err = client.submit("Any::task", ()).unwrap_err();
    assert!(err.to_string().ends_with("no answer within 1.0 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // A call's timeout bounds the wait for a result no worker will give.
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let started = Instant::now();
    let err = client.job("Nobody::serves", ()).timeout(Duration::from_secs(1)).call::<String>().unwrap_err();
    assert!(matches!(err, RunError::Client(ClientError::Timeout(_))), "{err:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(15), "{waited:?}");
}

#[test]
fn from_config_reads_the_named_configuration_as_the_host_does() {
    let gearmand = Gearmand::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("li3g.toml");
    std::fs::write(
        &file,
        format!(
            "[svc]\nservers = [\"127.0.0.1:1\"]\nplugins.dir = \"/nowhere\"\n\
             [svc.environments.staging]\nservers = [\"127.0.0.1:{}\"]\n",
            gearmand.port
        ),
    )
    .unwrap();
    let vars = |var: &str| match var {
        config::CONFIG_VAR => Some(file.display().to_string()),
        config::ENVIRONMENT_VAR => Some("staging".to_string()),
        _ => None,
    };
    let target = config::from_vars("svc", vars).unwrap();
    // The host's reader takes the same servers from the same file and name.
    let host = li3g_host::config::load(Some(&file), "svc", Some("staging")).unwrap();
    assert_eq!(target.servers, host.servers);
    assert_eq!(target.environment.as_deref(), Some("staging"));
    let mut client = Client::from_target(&target);
    assert_eq!(client.config_name(), "svc");
    let queued = client.submit("Configured::task", ()).unwrap();
    assert_eq!(queued.handle.server, addr(gearmand.port));

    // A name that is not there is the host's error.
    let err = config::from_vars("nope", vars).unwrap_err();
    assert!(err.to_string().starts_with("no configuration named \"nope\""), "{err}");
}

#[test]
fn a_time_without_redis_goes_to_the_job_servers_epoch_and_with_redis_never_there() {
    let gearmand = Gearmand::start();
    let mut client = Client::new(vec![addr(gearmand.port)]);
    let at = SystemTime::now() + Duration::from_secs(3600);
    let submitted = client.job("Later::task", ()).at(at).submit().unwrap();
    assert!(matches!(submitted, Submitted::Scheduled { at: when, .. } if when == at), "{submitted:?}");
    assert_eq!(total(&gearmand, "Later::task"), Some(1), "gearmand holds it (SUBMIT_JOB_EPOCH)");

    // A configuration naming a Redis that does not answer: the job waits there (li3g-client's
    // `redis` feature) or not at all, never in the job server's epoch.
    let target =
        config::Target { redis: Some("redis://127.0.0.1:1/0".into()), ..config::load(None, "default", None).unwrap() };
    let mut client = Client::from_target(&Target { servers: vec![addr(gearmand.port)], ..target });
    let err = client.job("Later::other", ()).after(Duration::from_secs(60)).submit().unwrap_err();
    assert!(err.to_string().contains("redis"), "{err}");
    assert_eq!(total(&gearmand, "Later::other"), None);
}
