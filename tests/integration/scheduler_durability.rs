//! The scheduler's durability findings (issue 20), each against a real redis-server and
//! gearmand: a take over a wrong-typed key loses nothing, a full queue defers instead of
//! burying, an ACL without channels only costs the wake-up, times are bounded, `compat = false`
//! needs no li3_gearman key, over-long unique keys are refused when scheduled, `status` says
//! `cancelled`, and a garbage Redis URL is refused at start.

use super::*;
use li3g_tests::ChildGuard;
use std::io::{BufRead, BufReader, Write};

/// Rewrites the setup's configuration: its servers and Redis URL, plus `extra` lines under
/// `[default]` and `scheduler` lines under `[default.scheduler]`.
fn configure(setup: &Setup, servers: &[String], redis: &str, scheduler: &str) {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(
        &setup.config_path,
        format!(
            "[default]\nservers = [{}]\nredis = \"{redis}\"\nplugins = \"{}\"\n\n[default.scheduler]\nlease = 2\n{scheduler}",
            servers.join(", "),
            setup._plugins.path().display()
        ),
    )
    .unwrap();
}

fn scheduled_id(out: &li3g_tests::Run) -> String {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.strip_prefix("scheduled job ").and_then(|r| r.split(' ').next()).unwrap().to_string()
}

/// Item 1: with li3_gearman's `job_scheduled` holding a string, the take fails naming the key,
/// and the five due jobs stay scheduled; once the key is fixed they all run once.
#[test]
fn a_take_over_a_wrong_typed_key_loses_nothing() {
    let setup = Setup::new();
    let _: () = redis::cmd("SET").arg("job_scheduled").arg("oops").query(&mut setup.redis()).unwrap();
    let path = setup.file("wrongtype");
    for i in 0..5 {
        scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), &format!("job {i}"), "--in", "1s"]));
    }
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let line = log.wait_for("Cannot take due jobs", LONG);
    assert!(line.contains("job_scheduled") && line.contains("string"), "the error names the key: {line}");
    // Wait past the due time and a few failed takes: nothing was taken, nothing lost.
    wait_until("three failed takes", LONG, || log.count("Cannot take due jobs") >= 3);
    let zcard = |key: &str| -> u64 { redis::cmd("ZCARD").arg(key).query(&mut setup.redis()).unwrap() };
    assert_eq!(zcard("{li3g}:scheduled"), 5, "the five jobs are still scheduled");
    assert_eq!(zcard("{li3g}:leased"), 0, "and none is leased");
    let listed = setup.li3g(&["scheduled"]);
    assert!(listed.stderr.contains("job_scheduled"), "the listing names the key: {}", listed.stderr);
    assert!(lines(&path).is_empty());
    let _: () = redis::cmd("DEL").arg("job_scheduled").query(&mut setup.redis()).unwrap();
    wait_until("the five jobs ran", LONG, || lines(&path).len() >= 5);
    let mut ran = lines(&path);
    ran.sort();
    assert_eq!(ran, (0..5).map(|i| format!("job {i}")).collect::<Vec<_>>());
}

/// Sends a line of gearmand's text admin protocol and reads its one-line answer.
fn admin(addr: &str, command: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// Item 5: two servers, room for 5 jobs on one and 10 on the other, 20 jobs due: none goes to
/// the dead set; the refused ones are tried on the other server and later again, and once
/// workers drain the queues all 20 run exactly once.
#[test]
fn a_full_queue_defers_jobs_and_tries_the_other_server() {
    let setup = Setup::new();
    let second = Gearmand::start();
    let servers = [setup.gearmand().addr(), second.addr()];
    configure(&setup, &servers, &setup.redis.as_ref().unwrap().url(), "");
    // gearmand applies `maxqueue` only to a function it knows: a worker registers it and leaves.
    let mut registers = setup.worker();
    wait_for_workers(&[&second], APPEND, 1);
    registers.kill();
    assert!(admin(&servers[0], &format!("maxqueue {APPEND} 5")).starts_with("OK"));
    assert!(admin(&servers[1], &format!("maxqueue {APPEND} 10")).starts_with("OK"));
    let path = setup.file("full");
    let records: Vec<Record> = (0..20).map(|i| append_record(&path, &format!("job {i}"))).collect();
    setup.store().schedule_many(&records, &vec![SystemTime::now(); 20]).unwrap();
    let (_scheduler, log) = setup.scheduler(&[]);
    li3g_tests::wait_until_ok("the queues hold 5 and 10", LONG, Duration::from_millis(20), || {
        let (a, b) = (held(setup.gearmand()), held(&second));
        if (a, b) == (5, 10) {
            Ok(())
        } else {
            Err(format!("they hold {a} and {b}: {:#?}", log.all()))
        }
    });
    log.wait_for("refused by every job server for now", LONG);
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(listed.contains("Dead: 0"), "nothing is buried for a full queue: {listed}");
    // Workers on both servers drain the queues; the deferred jobs follow.
    let _worker = li3g_tests::Worker::builder::<&str>(&[]).config(&setup.config_path).spawn();
    wait_until("all 20 jobs ran", LONG, || lines(&path).len() >= 20);
    wait_until("nothing is pending", LONG, || setup.li3g(&["scheduled"]).stdout.starts_with("Pending: 0"));
    let mut ran = lines(&path);
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), 20, "each job ran: {ran:?}");
    assert_eq!(lines(&path).len(), 20, "and only once");
    assert!(setup.li3g(&["scheduled"]).stdout.contains("Dead: 0"));
}

fn held(server: &Gearmand) -> u64 {
    server.status().iter().filter(|s| s.function == APPEND).map(|s| s.total).sum()
}

/// Item 6 (and 8's redaction): an ACL user without channel permissions. `run --in` stores the
/// job and succeeds, the scheduler logs that it cannot subscribe and polls, the job runs, and
/// the password is in no log line.
#[test]
fn an_acl_without_channels_costs_only_the_wake_up() {
    let setup = Setup::new();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">apppw", "~*", "resetchannels", "+@all"])
        .query(&mut setup.redis())
        .unwrap();
    let url = setup.redis.as_ref().unwrap().url().replace("redis://", "redis://app:apppw@");
    configure(&setup, &[setup.gearmand().addr()], &url, "");
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    log.wait_for("Cannot subscribe to the wake-up channel", LONG);
    let path = setup.file("acl");
    let out = setup.li3g(&["run", APPEND, &path.display().to_string(), "hint", "--in", "1s"]);
    assert_eq!(out.code, Some(0), "a failed wake-up is no error: {}", out.stderr);
    wait_until("the job ran", LONG, || lines(&path) == ["hint"]);
    // `retry` publishes too: a dead job comes back without an error.
    let dead = append_record(&path, "again");
    let entry = json!({"job": dead.encode(), "error": "failed", "at": 0}).to_string();
    let _: () = redis::cmd("HSET").arg("{li3g}:dead").arg(&dead.id).arg(entry).query(&mut setup.redis()).unwrap();
    let out = setup.li3g(&["retry", &dead.id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    wait_until("the requeued job ran", LONG, || lines(&path) == ["hint", "again"]);
    let all = log.all();
    assert!(all.iter().all(|l| !l.contains("apppw")), "no log line shows the password: {all:#?}");
    assert!(all[0].contains("redis://***@"), "{}", all[0]);
}

/// Item 7: times are bounded where parsed, offsets are accepted, and a stored time out of range
/// never panics a listing.
#[test]
fn times_are_bounded_and_never_panic() {
    let setup = Setup::new();
    for delay in ["18446744073709551615s", "300000y"] {
        let out = setup.li3g(&["run", APPEND, "--in", delay]);
        assert_eq!(out.code, Some(2), "--in {delay} is refused: {}", out.stderr);
        assert!(out.stderr.contains("100 years") || out.stderr.contains("invalid"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let out = setup.li3g(&["run", APPEND, "x", "--at", "2099-12-01T08:00:00+01:00"]);
    assert!(out.stdout.ends_with("for 2099-12-01T07:00:00Z\n"), "{} {}", out.stdout, out.stderr);
    // A time no RFC 3339 can show, written by hand (or by an older version).
    let record = append_record(&setup.file("far"), "far");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("{li3g}:jobs")
        .arg(&record.id)
        .arg(record.encode())
        .cmd("ZADD")
        .arg("{li3g}:scheduled")
        .arg(9.0e18)
        .arg(&record.id)
        .query(&mut setup.redis())
        .unwrap();
    let out = setup.li3g(&["scheduled"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("Pending: 2") && out.stdout.contains(&record.id), "{}", out.stdout);
}

/// Item 8: with `compat = false` and an ACL limited to li3g's keys and channel, scheduling,
/// moving, listing, cancelling and status all work (nothing names `job_scheduled`).
#[test]
fn compat_off_touches_no_li3_gearman_key() {
    let setup = Setup::new();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "li3g", "on", ">pw", "~{li3g}:*", "&{li3g}:*", "+@all"])
        .query(&mut setup.redis())
        .unwrap();
    let url = setup.redis.as_ref().unwrap().url().replace("redis://", "redis://li3g:pw@");
    configure(&setup, &[setup.gearmand().addr()], &url, "compat = false\n");
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("compat-off");
    scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), "moved", "--in", "1s"]));
    let later = scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), "never", "--in", "1h"]));
    wait_until("the job ran", LONG, || lines(&path) == ["moved"]);
    let listed = setup.li3g(&["scheduled"]);
    assert!(listed.stdout.contains("Pending: 1"), "{} {}", listed.stdout, listed.stderr);
    assert_eq!(setup.li3g(&["cancel", &later]).code, Some(0));
    assert!(setup.li3g(&["status", &later]).stdout.starts_with("cancelled"));
    assert_eq!(log.count("Cannot take"), 0, "{:#?}", log.all());
}

/// Item 8: a job id whose unique key passes 63 bytes, now or on a retry, is refused when it is
/// scheduled; `status` says `cancelled` after `cancel`, for li3g's and li3_gearman's jobs.
#[test]
fn long_ids_are_refused_when_scheduled_and_cancel_sets_the_status() {
    let setup = Setup::new();
    let long = "x".repeat(70);
    let out = setup.li3g(&["run", APPEND, "--in", "1h", "--id", &long]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("unique key of 70 bytes"), "{}", out.stderr);
    let edge = "y".repeat(63);
    let out = setup.li3g(&["run", APPEND, "--in", "1h", "--id", &edge, "--retries", "1"]);
    assert_ne!(out.code, Some(0), "63 bytes plus `:1` on the first retry: {}", out.stdout);
    assert!(out.stderr.contains("on retry 1"), "{}", out.stderr);
    assert!(setup.li3g(&["scheduled"]).stdout.starts_with("Pending: 0"));
    // 63 bytes without retries is fine.
    scheduled_id(&setup.li3g(&["run", APPEND, "--in", "1h", "--id", &edge]));

    assert_eq!(setup.li3g(&["cancel", &edge]).code, Some(0));
    let status = setup.li3g(&["status", &edge]);
    assert!(status.stdout.starts_with("cancelled"), "{}", status.stdout);
    // A li3_gearman member, as its Gearman::schedule writes it.
    let member = json!({"id": "php-job-1", "action": "background", "workload": {"args": []}, "options": {}});
    let _: () = redis::cmd("ZADD")
        .arg("job_scheduled")
        .arg(4_000_000_000u64)
        .arg(member.to_string())
        .query(&mut setup.redis())
        .unwrap();
    assert_eq!(setup.li3g(&["cancel", "php-job-1"]).code, Some(0));
    assert!(setup.li3g(&["status", "php-job-1"]).stdout.starts_with("cancelled"));
    assert_eq!(setup.li3g(&["cancel", "no-such-job"]).code, Some(1));
}

/// Item 8: `start` with `redis = "garbage"` refuses the URL at once, as `scheduler` does,
/// instead of restarting a scheduler that exits forever.
#[test]
fn start_refuses_a_garbage_redis_url() {
    let setup = Setup::new();
    configure(&setup, &[setup.gearmand().addr()], "garbage", "");
    let mut start = ChildGuard::spawn(
        host().args(["start", "--config"]).arg(&setup.config_path).stdout(Stdio::null()).stderr(Stdio::piped()),
    );
    let status = start.wait_timeout(Duration::from_secs(20)).expect("start exits at once");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(start.child().stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("default.redis") && stderr.contains("not a Redis URL"), "{stderr}");
}

/// Items 2, 3 and 8 at the library's level: leases belong to the schedule that took them. A
/// second scheduler cannot acknowledge, renew or bury them; after a take whose answer was
/// lost, the same scheduler takes its own leases back at once (`reclaim`) instead of leaving
/// them leased to nobody until the lease runs out.
#[test]
fn leases_have_owners_and_a_lost_take_is_reclaimed_at_once() {
    let setup = Setup::new();
    let path = setup.file("owners");
    let records: Vec<Record> = (0..3).map(|i| append_record(&path, &format!("job {i}"))).collect();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let mut mine = setup.store();
    let mut other = setup.store();
    mine.schedule_many(&records, &[SystemTime::now(); 3]).unwrap();
    let lease = Duration::from_secs(30);
    let taken = mine.take(lease, 10, &[], false).unwrap();
    assert_eq!(taken.jobs.len(), 3);
    // The other scheduler finds nothing, and cannot renew, ack or bury what it does not hold.
    assert!(other.take(lease, 10, &[], false).unwrap().jobs.is_empty());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(other.renew(&refs, lease).unwrap(), vec![false; 3]);
    other.ack(&ids).unwrap();
    assert!(!other.bury(&ids[0], "{}", "not mine", true).unwrap());
    let leased: u64 = redis::cmd("ZCARD").arg("{li3g}:leased").query(&mut setup.redis()).unwrap();
    assert_eq!(leased, 3, "the other scheduler changed nothing");
    // As if the first take's answer had been lost: the next take reclaims the three at once.
    assert_eq!(mine.renew(&refs, lease).unwrap(), vec![true; 3]);
    let again = mine.take(lease, 10, &[], true).unwrap();
    let mut again: Vec<String> = again.jobs.into_iter().map(|(id, _)| id).collect();
    again.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(again, expected);
    // Acknowledged by their owner, they are gone.
    mine.ack(&ids).unwrap();
    let left: u64 = redis::cmd("HLEN").arg("{li3g}:owners").query(&mut setup.redis()).unwrap();
    assert_eq!(left, 0);
    assert!(setup.li3g(&["scheduled"]).stdout.starts_with("Pending: 0"));
}

/// A leased job whose retry a worker recorded before the lease was acknowledged (its scheduler
/// died or stalled in between) is not taken again through its lease, after it ran out nor by a
/// reclaim: that would submit the retry now, long before its time, and again when it is due.
/// Its lease is released and the schedule keeps it for its due time.
#[test]
fn a_retry_recorded_under_a_lease_waits_for_its_due_time() {
    let setup = Setup::new();
    let path = setup.file("retried");
    let (first, second) = (append_record(&path, "first"), append_record(&path, "second"));
    let (mut lost_take, mut died, mut other) = (setup.store(), setup.store(), setup.store());
    let lease = Duration::from_millis(300);
    other.schedule(&first, SystemTime::now()).unwrap();
    assert_eq!(lost_take.take(lease, 10, &[], false).unwrap().jobs.len(), 1);
    other.schedule(&second, SystemTime::now()).unwrap();
    assert_eq!(died.take(lease, 10, &[], false).unwrap().jobs.len(), 1);
    // A worker ran both, they failed, and it recorded their retries, due in an hour.
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    for record in [&first, &second] {
        let retry = Record { retry: 1, unique: unique_for(&record.id, 1), ..record.clone() };
        other.schedule(&retry, in_an_hour).unwrap();
    }
    let leased = |id: &str| -> Option<f64> {
        redis::cmd("ZSCORE").arg("{li3g}:leased").arg(id).query(&mut setup.redis()).unwrap()
    };
    let scheduled = |id: &str| -> Option<f64> {
        redis::cmd("ZSCORE").arg("{li3g}:scheduled").arg(id).query(&mut setup.redis()).unwrap()
    };
    // A reclaim (after a take whose answer was lost) does not take the first back.
    let taken = lost_take.take(lease, 10, &[], true).unwrap();
    assert!(taken.jobs.is_empty(), "a retry due in an hour was reclaimed now: {:?}", taken.jobs);
    assert_eq!(leased(&first.id), None, "its lease was released");
    // The second's lease runs out (Redis's clock): another scheduler does not take it either.
    wait_until("the lease ran out", LONG, || {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut setup.redis()).unwrap();
        leased(&second.id).is_none_or(|until| ((secs * 1000 + micros / 1000) as f64) > until)
    });
    let taken = other.take(Duration::from_secs(30), 10, &[], false).unwrap();
    assert!(taken.jobs.is_empty(), "a retry due in an hour was taken now: {:?}", taken.jobs);
    assert_eq!(leased(&second.id), None, "its lease was released");
    let half_an_hour = li3g_host::scheduler::schedule::epoch_ms(SystemTime::now() + Duration::from_secs(1800));
    for id in [&first.id, &second.id] {
        assert!(scheduled(id).is_some_and(|due| due > half_an_hour as f64), "{id} waits for its due time");
    }
    let owners: u64 = redis::cmd("HLEN").arg("{li3g}:owners").query(&mut setup.redis()).unwrap();
    assert_eq!(owners, 0);
}

/// Item 4's hold is for outages only: a failed job's retry that Redis refuses every time (here
/// `li3g:jobs` holds a string) is logged as lost, naming the key, and the job is answered; the
/// worker does not hold it forever, and the next job runs.
#[test]
fn a_retry_redis_refuses_for_good_does_not_stop_the_worker() {
    let setup = Setup::new();
    let _: () = redis::cmd("SET").arg("{li3g}:jobs").arg("oops").query(&mut setup.redis()).unwrap();
    let mut command = host();
    command.args(["work", "--config"]).arg(&setup.config_path).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut worker = ChildGuard::spawn(&mut command);
    let log = Lines::collect(worker.child().stderr.take().unwrap());
    wait_for_workers(&[setup.gearmand()], APPEND, 1);
    let flaky = setup.file("flaky").display().to_string();
    let out = setup.li3g(&["run", "Misbehave::flaky", &flaky, "1", "--retries", "1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let path = setup.file("after");
    assert_eq!(setup.li3g(&["run", APPEND, &path.display().to_string(), "after"]).code, Some(0));
    wait_until("the next job ran", LONG, || lines(&path) == ["after"]);
    let line = log.wait_for("its retry is lost", LONG);
    assert!(line.contains("{li3g}:jobs"), "the line names the key: {line}");
}
