//! The li3g client API (`li3g_host::client`) against a real gearmand and a li3g worker:
//! every priority in both modes, unique keys that merge jobs, and status by handle and key.

use li3g_host::client::{Client, Outcome, RunOptions, Unique};
use li3g_host::gearman::conn::ServerAddr;
use li3g_host::gearman::packet::Priority;
use li3g_tests::{host, wait_for_workers, ChildGuard, Gearmand, PluginDir};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn client(gearmand: &Gearmand) -> Client {
    Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port: gearmand.port }])
}

fn worker(gearmand: &Gearmand, dir: &PluginDir) -> ChildGuard {
    let mut command = host();
    command
        .args(["work", "--servers", &gearmand.addr()])
        .arg("--plugins")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let worker = ChildGuard::spawn(&mut command);
    wait_for_workers(&[gearmand], "Misbehave::counter", 1);
    worker
}

fn sync() -> RunOptions {
    RunOptions { background: false, timeout: Some(Duration::from_secs(20)), ..RunOptions::default() }
}

#[test]
fn every_priority_in_background_and_sync() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["hello", "misbehave"]);
    let _worker = worker(&gearmand, &dir);
    let mut client = client(&gearmand);
    for priority in [Priority::Low, Priority::Normal, Priority::High] {
        let options = RunOptions { priority, ..sync() };
        let outcome = client.run("Hello::say", &[json!(format!("{priority:?}"))], &options, &mut |_| {}).unwrap();
        let Outcome::Completed { result, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(result, format!("Hello {priority:?}").as_bytes());

        let options = RunOptions { priority, id: Some(format!("bg-{priority:?}")), ..RunOptions::default() };
        let outcome = client.run("Misbehave::sleep", &[json!(0.01)], &options, &mut |_| {}).unwrap();
        let Outcome::Queued { id, handle } = outcome else { panic!("{outcome:?}") };
        assert_eq!(id, format!("bg-{priority:?}"));
        // The worker takes it and finishes it: the server forgets the handle.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.gearman().status(handle.as_bytes()).unwrap().known {
            assert!(Instant::now() < deadline, "background job {handle} never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn jobs_with_the_same_unique_key_run_once_for_all_their_clients() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let port = gearmand.port;
            std::thread::spawn(move || {
                let mut client = Client::new(vec![ServerAddr { host: "127.0.0.1".into(), port }]);
                let options = RunOptions { unique: Unique::Key("count-once".into()), ..sync() };
                client.run("Misbehave::counter", &[], &options, &mut |_| {}).unwrap()
            })
        })
        .collect();
    // Both clients are attached to one queued job before any worker exists.
    let mut probe = client(&gearmand);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = probe.gearman().status_unique(b"count-once").unwrap();
        if status.known && status.clients == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the two jobs never merged: {status:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _worker = worker(&gearmand, &dir);
    for thread in waiting {
        let Outcome::Completed { result, .. } = thread.join().unwrap() else { panic!() };
        assert_eq!(result, b"1", "both clients get the one run's result");
    }
    // The worker's counter moved once: the next job is its second.
    let Outcome::Completed { result, .. } = probe.run("Misbehave::counter", &[], &sync(), &mut |_| {}).unwrap() else {
        panic!()
    };
    assert_eq!(result, b"2");
}

#[test]
fn a_unique_key_from_the_arguments_merges_equal_jobs_only() {
    let gearmand = Gearmand::start();
    let mut client = client(&gearmand);
    let options = RunOptions { unique: Unique::FromArgs, ..RunOptions::default() };
    for args in [json!([1]), json!([1]), json!([2])] {
        let Outcome::Queued { .. } = client.run("Misbehave::echo", &[args], &options, &mut |_| {}).unwrap() else {
            panic!()
        };
    }
    // Three submissions, two distinct argument lists: two queued jobs.
    let total = gearmand.status().into_iter().find(|s| s.function == "Misbehave::echo").map(|s| s.total);
    assert_eq!(total, Some(2));
}

#[test]
fn a_failing_task_is_an_error_with_its_message() {
    let gearmand = Gearmand::start();
    let dir = PluginDir::with(&["misbehave"]);
    let _worker = worker(&gearmand, &dir);
    let err = client(&gearmand).run("Misbehave::fail", &[json!("no disk")], &sync(), &mut |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "no disk");
}
