//! The scheduler, the client and the CLI on Redis as teams run it (issue 25), each against
//! real redis-server processes: a password and an ACL user limited to li3g's keys, TLS with a
//! CA the test makes, the upgrade from the old key prefix, a 3-master Cluster (with a slot
//! moved under it), and Sentinel failover.

use super::*;
use li3g_tests::redis_setups::{redis_cli, RedisCluster, SentinelSetup, TestCerts};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A thread that schedules `APPEND` jobs `j0`, `j1`, ... (each due in 200 ms, 5 ms apart,
/// 20 ms more after a refusal) through `config`'s client until `stop`, telling `outcome` each
/// job's line and what the client answered.
pub(super) fn scheduling_client(
    config: li3g_host::config::Config,
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    mut outcome: impl FnMut(String, Result<Outcome, li3g_host::client::RunError>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = li3g_host::client::for_config(&config);
        for n in 0..5000 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let line = format!("j{n}");
            let due = SystemTime::now() + Duration::from_millis(200);
            let options = RunOptions { schedule: Some(due), ..RunOptions::default() };
            let args = [json!(path.display().to_string()), json!(line)];
            let answer = client.run(APPEND, &args, &options, &mut |_| {});
            let refused = answer.is_err();
            outcome(line, answer);
            std::thread::sleep(Duration::from_millis(if refused { 25 } else { 5 }));
        }
    })
}

/// A gearmand, the misbehave plugin and a configuration naming `redis` (with `top` lines under
/// `[default]` and `scheduler` lines under `[default.scheduler]`); no Redis of its own.
fn setup_on(redis: &str, top: &str, scheduler: &str) -> Setup {
    let gearmand = Gearmand::start();
    let plugins = PluginDir::with(&["misbehave"]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("li3g.toml");
    let setup = Setup {
        gearmand: Some(gearmand),
        redis: None,
        _plugins: plugins,
        dir,
        config_path,
        workers: std::cell::Cell::new(0),
    };
    configure(&setup, &setup.config_path, redis, top, scheduler);
    setup
}

/// Writes a configuration for `setup`'s gearmand and plugins to `path`.
fn configure(setup: &Setup, path: &Path, redis: &str, top: &str, scheduler: &str) {
    std::fs::write(
        path,
        format!(
            "[default]\nservers = [\"{}\"]\nredis = \"{redis}\"\nplugins = \"{}\"\n{top}\n[default.scheduler]\nlease = 2\n{scheduler}",
            setup.gearmand().addr(),
            setup._plugins.path().display()
        ),
    )
    .unwrap();
}

fn scheduled_id(out: &li3g_tests::Run) -> String {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.strip_prefix("scheduled job ").and_then(|r| r.split(' ').next()).unwrap().to_string()
}

/// The commands li3g sends (outside scripts and inside them): what an ACL user for li3g needs,
/// as docs/OPERATIONS.md lists it.
const LI3G_COMMANDS: &str = "+evalsha +eval +script|load +subscribe +ping +select \
     +zrange +zscan +hgetall +hdel +get +set +ttl \
     +time +type +exists +del +rename +zadd +zrem +zscore +zrangebyscore +hget +hmget +hset +hsetnx +hlen +publish";

/// Creates ACL user `li3g` with password `password`, limited to li3g's keys and channel and to
/// [`LI3G_COMMANDS`].
fn li3g_acl_user(admin: &mut redis::Connection, password: &str) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg("li3g").arg("reset").arg("on").arg(format!(">{password}"));
    cmd.arg("~{li3g}:*").arg("&{li3g}:*").arg("-@all");
    for command in LI3G_COMMANDS.split_whitespace() {
        cmd.arg(command);
    }
    let _: () = cmd.query(admin).unwrap();
}

/// A redis-server with `requirepass`, and ACL user `li3g` limited to li3g's keys, its wake-up
/// channel and the commands li3g uses: scheduling (the CLI's client), moving, status, listing
/// and cancelling all work through it, and the scheduler logs no failure (the wake-up
/// subscription included). Outside its keys it is refused (the ACL really limits it).
#[test]
fn an_acl_user_limited_to_li3g_keys_schedules_moves_and_reads_status() {
    let dir = tempfile::tempdir().unwrap();
    let redis = on_a_free_port_redis(dir.path(), &["--requirepass", "adminpw"], Some("adminpw"));
    let mut admin =
        redis::Client::open(format!("redis://:adminpw@127.0.0.1:{}/", redis.port)).unwrap().get_connection().unwrap();
    li3g_acl_user(&mut admin, "pw");
    let url = format!("redis://li3g:pw@127.0.0.1:{}/0", redis.port);
    let setup = setup_on(&url, "", "compat = false\n");
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("acl");
    let id = scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), "moved", "--in", "1s"]));
    let later = scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), "never", "--in", "1h"]));
    wait_until("the job ran", LONG, || lines(&path) == ["moved"]);
    wait_until("its status is finished", LONG, || setup.li3g(&["status", &id]).stdout.starts_with("finished"));
    let listed = setup.li3g(&["scheduled"]);
    assert!(
        listed.stdout.contains("Pending: 1") && listed.stdout.contains(&later),
        "{} {}",
        listed.stdout,
        listed.stderr
    );
    assert_eq!(setup.li3g(&["cancel", &later]).code, Some(0));
    assert!(setup.li3g(&["status", &later]).stdout.starts_with("cancelled"));
    assert_eq!(log.count("Cannot"), 0, "no failure, the wake-up subscription included: {:#?}", log.all());
    // The user is really limited: another key is refused.
    let mut li3g = redis::Client::open(url).unwrap().get_connection().unwrap();
    let refused = redis::cmd("SET").arg("job_scheduled").arg("x").query::<()>(&mut li3g).unwrap_err();
    assert!(refused.to_string().to_lowercase().contains("noperm"), "{refused}");
}

/// A wrong password is a clear error for the client (nothing scheduled, exit 1), and the
/// scheduler keeps running and retrying; once the password is right (the ACL user gets it),
/// the job a correctly configured client scheduled meanwhile runs, once.
#[test]
fn a_wrong_password_is_a_clear_error_and_the_scheduler_retries() {
    let dir = tempfile::tempdir().unwrap();
    let redis = on_a_free_port_redis(dir.path(), &["--requirepass", "adminpw"], Some("adminpw"));
    let mut admin =
        redis::Client::open(format!("redis://:adminpw@127.0.0.1:{}/", redis.port)).unwrap().get_connection().unwrap();
    li3g_acl_user(&mut admin, "right");
    let setup = setup_on(&format!("redis://li3g:later@127.0.0.1:{}/0", redis.port), "", "compat = false\n");
    let path = setup.file("wrongpass");
    let out = setup.li3g(&["run", APPEND, &path.display().to_string(), "x", "--in", "1s"]);
    assert_eq!(out.code, Some(1), "{} {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("authentication failed"), "{}", out.stderr);
    assert!(!out.stderr.contains("later"), "the password is not shown: {}", out.stderr);

    let _worker = setup.worker();
    let mut command = host();
    command.args(["scheduler", "--verbose", "--config"]).arg(&setup.config_path).stdout(Stdio::null());
    command.stderr(Stdio::piped());
    let mut scheduler = ChildGuard::spawn(&mut command);
    let log = Lines::collect(scheduler.child().stderr.take().unwrap());
    let line = log.wait_for("Cannot take due jobs", LONG);
    assert!(line.contains("authentication failed"), "{line}");
    // A client with the right password schedules while the scheduler cannot read Redis.
    let right = setup.file("right.toml");
    configure(&setup, &right, &format!("redis://li3g:right@127.0.0.1:{}/0", redis.port), "", "compat = false\n");
    let out =
        run(host().args(["run", APPEND, &path.display().to_string(), "once", "--in", "1s", "--config"]).arg(&right));
    scheduled_id(&out);
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler keeps running");
    // The scheduler's password becomes valid: its next retry goes through.
    let _: () = redis::cmd("ACL").arg(&["SETUSER", "li3g", ">later"]).query(&mut admin).unwrap();
    wait_until("the job ran after the retry", LONG, || lines(&path) == ["once"]);
    log.wait_for("Redis is back", LONG);
    assert_eq!(lines(&path), ["once"], "once");
}

/// `rediss://` with the CA the test made (`redis_tls_ca`): scheduling, moving, status and the
/// wake-up subscription all go over TLS (the plaintext port is not named); a CA that did not
/// sign the server's certificate is refused with a message saying so.
#[test]
fn rediss_with_a_ca_file_schedules_and_moves_and_a_wrong_ca_is_refused() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let tls_port = li3g_tests::free_port();
    let args = certs.redis_args(tls_port);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--requirepass", "pw"]);
    let redis = on_a_free_port_redis(dir.path(), &args, Some("pw"));
    let url = format!("rediss://:pw@127.0.0.1:{tls_port}/0");
    let setup = setup_on(&url, &format!("redis_tls_ca = \"{}\"\n", certs.ca().display()), "");
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("tls");
    let id = scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), "over tls", "--in", "1s"]));
    wait_until("the job ran", LONG, || lines(&path) == ["over tls"]);
    wait_until("its status is finished", LONG, || setup.li3g(&["status", &id]).stdout.starts_with("finished"));
    assert_eq!(log.count("Cannot"), 0, "{:#?}", log.all());
    // The wake-up subscription is over TLS too: it is a client of the TLS port.
    let clients = redis_cli_auth(redis.port, "pw", &["CLIENT", "LIST"]);
    assert!(clients.lines().any(|l| l.contains("sub=1")), "a subscriber: {clients}");

    let wrong = setup.file("wrong.toml");
    configure(&setup, &wrong, &url, &format!("redis_tls_ca = \"{}\"\n", certs.wrong_ca().display()), "");
    let out =
        run(host().args(["run", APPEND, &path.display().to_string(), "no", "--in", "1s", "--config"]).arg(&wrong));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("certificate"), "names the certificate: {}", out.stderr);
}

/// The upgrade from li3g 0.1's default prefix `li3g:` to `{li3g}:`: jobs scheduled (and a dead
/// one) under the old prefix are moved when a scheduler starts, then run once; nothing is left
/// under the old prefix. (Without the move they would wait under `li3g:` forever.)
#[test]
fn jobs_under_the_old_default_prefix_are_moved_at_start_and_run_once() {
    let setup = Setup::new();
    let config = setup.config();
    let old = li3g_host::config::SchedulerSettings { prefix: "li3g:".into(), ..config.scheduler.clone() };
    let mut store = Schedule::open(config.redis.as_deref().unwrap(), &old).unwrap();
    let path = setup.file("old-prefix");
    let records: Vec<Record> = (0..5).map(|i| append_record(&path, &format!("old {i}"))).collect();
    store.schedule_many(&records, &[SystemTime::now(); 5]).unwrap();
    assert!(store.bury("dead-one", &records[0].encode(), "it failed before the upgrade", false).unwrap());
    let mut redis = setup.redis();
    let old_keys: Vec<String> = redis::cmd("KEYS").arg("li3g:*").query(&mut redis).unwrap();
    assert!(old_keys.len() >= 3, "{old_keys:?}");

    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    wait_until("every old job ran", LONG, || lines(&path).len() >= 5);
    assert_eq!(lines(&path).iter().collect::<HashSet<_>>().len(), 5, "each once: {:?}", lines(&path));
    assert_eq!(log.count("Moved 5 scheduled jobs from the old key prefix"), 1, "{:#?}", log.all());
    let left: Vec<String> = redis::cmd("KEYS").arg("li3g:*").query(&mut redis).unwrap();
    assert!(left.iter().all(|k| k.ends_with(".status")), "only status keys stay: {left:?}");
    let listed = setup.li3g(&["scheduled"]).stdout;
    assert!(listed.contains("Dead: 1") && listed.contains("dead-one"), "{listed}");
}

/// A 3-master Redis Cluster: every key of the schedule is in one slot (`{li3g}`), so schedule,
/// move, retry, the dead set, cancel and status work; after the slot is moved to another node
/// (SETSLOT/MIGRATE, as `--cluster reshard` does) the scheduler and the client follow the
/// `MOVED`; a second configuration with another prefix lands in another slot, on another node.
/// With li3_gearman's set in another slot, the client refuses to start, saying what to set.
#[test]
fn a_cluster_schedules_moves_retries_and_follows_a_moved_slot() {
    let cluster = RedisCluster::start();
    let setup = setup_on(&cluster.url(), "", "compat = false\n");
    let _worker = setup.worker();
    let (_scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("cluster");
    let ids: Vec<String> = (0..10).map(|i| schedule(&setup, &path, &format!("c{i}"), SystemTime::now())).collect();
    let later = schedule(&setup, &path, "never", SystemTime::now() + Duration::from_secs(3600));
    wait_until("the ten jobs ran", LONG, || lines(&path).len() >= 10);
    wait_until("their status is finished", LONG, || {
        ids.iter().all(|id| setup.li3g(&["status", id]).stdout.starts_with("finished"))
    });
    // Every key li3g wrote is on the node of {li3g}'s slot.
    let slot = li3g_host::redis_target::slot("{li3g}:scheduled");
    let owner = cluster.owner_of(slot);
    let count = redis_cli(owner, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert!(count.trim().parse::<u64>().unwrap() >= 3, "li3g's keys are in slot {slot}: {count}");
    for node in &cluster.nodes {
        if node.port != owner {
            assert_eq!(redis_cli(node.port, &["DBSIZE"]).trim(), "0", "node {} holds none of them", node.port);
        }
    }

    // Retry, then the dead set, then back (retry).
    let doomed = setup.file("doomed");
    let out = setup.li3g(&[
        "run",
        "Misbehave::flaky",
        &doomed.display().to_string(),
        "5",
        "--retries",
        "1",
        "--retry-delays",
        "100ms",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = out.stdout.strip_prefix("queued job ").and_then(|r| r.split(' ').next()).unwrap().to_string();
    wait_until("the job is dead", LONG, || setup.li3g(&["status", &id]).stdout.starts_with("dead: failure 2 of 5"));
    assert_eq!(lines(&doomed).len(), 2, "it ran, then its retry ran");

    // The slot moves to another node while a job waits in it; both follow the MOVED.
    let waiting = schedule(&setup, &path, "after the move", SystemTime::now() + Duration::from_secs(2));
    let to = cluster.nodes.iter().map(|n| n.port).find(|p| *p != owner).unwrap();
    cluster.move_slot(slot, to);
    wait_until("the job that waited through the move ran", LONG, || {
        lines(&path).contains(&"after the move".to_string())
    });
    let moved = schedule(&setup, &path, "scheduled after the move", SystemTime::now());
    wait_until("a job scheduled after the move ran", LONG, || {
        lines(&path).contains(&"scheduled after the move".to_string())
    });
    assert!(setup.li3g(&["status", &waiting]).stdout.starts_with("finished"));
    assert!(setup.li3g(&["status", &moved]).stdout.starts_with("finished"));
    assert_eq!(setup.li3g(&["retry", &id]).code, Some(0), "retry after the move");
    wait_until("the requeued job ran", LONG, || lines(&doomed).len() == 3);
    assert_eq!(setup.li3g(&["cancel", &later]).code, Some(0));
    assert!(setup.li3g(&["status", &later]).stdout.starts_with("cancelled"));
    let all = lines(&path);
    assert_eq!(all.len(), all.iter().collect::<HashSet<_>>().len(), "no job ran twice: {all:?}");
    assert_eq!(all.len(), 12);
    assert!(!log.all().iter().any(|l| l.contains("Cannot take") || l.contains("Cannot subscribe")), "{:#?}", log.all());

    // Another configuration's prefix: another slot, on another node than {li3g}'s now.
    let app = (0..100)
        .map(|i| format!("{{app{i}}}:"))
        .find(|p| cluster.owner_of(li3g_host::redis_target::slot(p)) != to)
        .unwrap();
    let other = setup.file("other.toml");
    configure(&setup, &other, &cluster.url(), "", &format!("compat = false\nprefix = \"{app}\"\n"));
    let out = run(host().args(["run", APPEND, "/dev/null", "x", "--in", "1h", "--config"]).arg(&other));
    scheduled_id(&out);
    let app_slot = li3g_host::redis_target::slot(&app);
    assert_ne!(app_slot, slot);
    let count = redis_cli(cluster.owner_of(app_slot), &["CLUSTER", "COUNTKEYSINSLOT", &app_slot.to_string()]);
    assert!(count.trim().parse::<u64>().unwrap() >= 2, "{app}'s keys are in slot {app_slot}: {count}");

    // li3_gearman's set outside the slot: the configuration is refused, saying what to set.
    let compat = setup.file("compat.toml");
    configure(&setup, &compat, &cluster.url(), "", "");
    let out = run(host().args(["run", APPEND, "/dev/null", "x", "--in", "1h", "--config"]).arg(&compat));
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("schedule_set") && out.stderr.contains("compat = false"), "{}", out.stderr);
    // In the slot (the same hash tag), it works.
    configure(&setup, &compat, &cluster.url(), "", "schedule_set = \"{li3g}job_scheduled\"\n");
    scheduled_id(&run(host().args(["run", APPEND, "/dev/null", "x", "--in", "1h", "--config"]).arg(&compat)));
}

/// redis-server with `args` on a free port, waited for with `password`.
fn on_a_free_port_redis(dir: &Path, args: &[&str], password: Option<&str>) -> Redis {
    li3g_tests::on_a_free_port("redis-server", |port| Redis::try_start_with(port, dir, args, password))
}

/// `redis-cli -a PASSWORD ...` on the plaintext port.
fn redis_cli_auth(port: u16, password: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--no-auth-warning", "-a", password])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sentinel: a master, a replica and three sentinels; a client schedules jobs (due in 200 ms)
/// without pause while the scheduler moves them, and the master is SIGKILLed mid-stream; the
/// sentinels promote the replica, and the scheduler, the workers' status hooks and the client
/// follow it (`redis+sentinel://`, asked again at every reconnection). Counted: jobs
/// acknowledged to the client, moved, run, run twice, and lost (acknowledged, never run).
/// Redis replicates asynchronously, so a job acknowledged just before the kill may not have
/// reached the replica: lost by Redis itself, bounded here by the jobs acknowledged in the
/// last second before the kill. Every job acknowledged after the failover runs exactly once.
#[test]
fn sentinel_failover_loses_only_unreplicated_jobs_and_everyone_follows_the_new_master() {
    let mut sentinel = SentinelSetup::start();
    let setup = setup_on(&sentinel.url(), "", "");
    let (_worker, wlog) = setup.verbose_worker();
    let (scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("failover");
    let config = setup.config();
    // (line, id, when acknowledged) per job the client was told is scheduled.
    type Acked = Vec<(String, String, std::time::Instant)>;
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let refused = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (acked, refused) = (acked.clone(), refused.clone());
        scheduling_client(config, path.clone(), stop.clone(), move |line, outcome| match outcome {
            Ok(Outcome::Scheduled { id, .. } | Outcome::Queued { id, .. }) => {
                acked.lock().unwrap().push((line, id, std::time::Instant::now()))
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => *refused.lock().unwrap() += 1,
        })
    };
    wait_until("jobs are being scheduled and moved", LONG, || lines(&path).len() >= 50);
    let old_master = sentinel.master.as_ref().unwrap().port;
    sentinel.master.take().unwrap().kill();
    let killed_at = std::time::Instant::now();
    wait_until("the sentinels promote the replica", LONG, || sentinel.master_port() == Some(sentinel.replica.port));
    let promoted_after = killed_at.elapsed();
    let acked_at_failover = acked.lock().unwrap().len();
    wait_until("jobs are scheduled on the new master", LONG, || acked.lock().unwrap().len() >= acked_at_failover + 50);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    // Settled: nothing scheduled or leased on the new master, and nothing left in gearmand.
    let mut new_master = li3g_tests::redis_setups::connect(sentinel.replica.port);
    wait_until("the schedule is empty", LONG, || {
        let (s, l): (u64, u64) =
            redis::pipe().zcard("{li3g}:scheduled").zcard("{li3g}:leased").query(&mut new_master).unwrap();
        s + l == 0
    });
    // Every moved job has been handed to gearmand: once it holds none, each has run.
    wait_until("gearmand holds no job", LONG, || {
        setup.gearmand().status().iter().filter(|s| s.function == APPEND).all(|s| s.total == 0)
    });
    let ran = lines(&path);
    let distinct: HashSet<&String> = ran.iter().collect();
    let duplicated = ran.len() - distinct.len();
    let moved = log.count("moved for immediate execution");
    let lost: Vec<&(String, String, std::time::Instant)> =
        acked.iter().filter(|(line, _, _)| !distinct.contains(line)).collect();
    let unacked_ran = distinct.len() - (acked.len() - lost.len());
    eprintln!(
        "sentinel failover: scheduled (acknowledged) {}, refused {}, moved {moved}, ran {} ({} distinct, {unacked_ran} of them not acknowledged to the client), duplicated {duplicated}, lost {}; the replica was promoted {promoted_after:?} after the kill of port {old_master}",
        acked.len(),
        refused.lock().unwrap(),
        ran.len(),
        distinct.len(),
        lost.len()
    );
    for (line, _, at) in &lost {
        assert!(
            *at >= killed_at - Duration::from_secs(1) && *at <= killed_at,
            "{line} was acknowledged outside the replication window ({:?} before the kill) and lost",
            killed_at.saturating_duration_since(*at)
        );
    }
    // A job runs twice only if its move's lease ack was not replicated: the same window.
    for (line, _, at) in acked.iter().filter(|(line, _, _)| ran.iter().filter(|l| *l == line).count() > 1) {
        assert!(
            *at >= killed_at - Duration::from_secs(1) && *at <= killed_at,
            "{line} ran twice, acknowledged outside the replication window ({:?} before the kill)",
            killed_at.saturating_duration_since(*at)
        );
    }
    let after: Vec<&(String, String, std::time::Instant)> = acked.iter().filter(|(_, _, at)| *at > killed_at).collect();
    assert!(after.len() >= 50);
    for (line, _, _) in &after {
        assert_eq!(ran.iter().filter(|l| *l == line).count(), 1, "{line}, scheduled after the failover, ran once");
    }
    // The workers' status hooks follow too. (After a failed write they skip status writes for
    // 5 s, so a job that ran meanwhile keeps `pending`: probe with fresh jobs until one of them
    // is `finished`.)
    let mut probes = 0;
    wait_until("a job run after the failover is recorded as finished", LONG, || {
        probes += 1;
        let line = format!("probe {probes}");
        let id = scheduled_id(&setup.li3g(&["run", APPEND, &path.display().to_string(), &line, "--in", "1s"]));
        wait_until("the probe ran", LONG, || lines(&path).contains(&line));
        let status = setup.li3g(&["status", &id]).stdout;
        status.starts_with("finished") || status.starts_with("running")
    });
    assert!(
        wlog.all().iter().filter(|l| l.contains("Cannot record")).count() <= 2,
        "the worker's hooks failed only around the kill: {:#?}",
        wlog.all()
    );
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up");
}

/// One sentinel stalled (SIGSTOP: a sentinel whose machine stops answering), then the master
/// SIGKILLed: the two other sentinels promote the replica, and the client and the scheduler,
/// asking the sentinels in turn with each answer bounded, follow the new master; SIGTERM still
/// stops the scheduler. (With the redis crate's Sentinel client, whose connections to the
/// sentinels have no timeout, the client hung and the scheduler stopped moving jobs, deaf to
/// SIGTERM, for as long as the one sentinel stayed stalled.)
#[test]
fn a_stalled_sentinel_does_not_stop_the_client_or_the_scheduler_following_a_failover() {
    let mut sentinel = SentinelSetup::start();
    let setup = setup_on(&sentinel.url(), "", "");
    let _worker = setup.worker();
    let (mut scheduler, log) = setup.scheduler(&[]);
    let path = setup.file("stalled");
    let file = path.display().to_string();
    scheduled_id(&setup.li3g(&["run", APPEND, &file, "before", "--in", "1s"]));
    wait_until("the job scheduled before the stall ran", LONG, || lines(&path) == ["before"]);

    let stalled = sentinel.sentinel_pids()[0];
    signal(stalled, Signal::SIGSTOP);
    sentinel.master.take().unwrap().kill();
    let replica = sentinel.replica.port;
    wait_until("the two other sentinels promote the replica", LONG, || sentinel.master_port_by(1) == Some(replica));
    // Scheduling fails (a clear error, nothing acknowledged) until the new master answers,
    // and each attempt returns (`run` fails the test past 60 s).
    wait_until("the client schedules on the new master", LONG, || {
        setup.li3g(&["run", APPEND, &file, "after", "--in", "1s"]).code == Some(0)
    });
    wait_until("the scheduler moved the job scheduled after the failover", LONG, || {
        lines(&path).contains(&"after".to_string())
    });
    signal(scheduler.id(), Signal::SIGTERM);
    let stopped = scheduler.wait_timeout(Duration::from_secs(20));
    signal(stalled, Signal::SIGCONT);
    assert!(stopped.is_some(), "SIGTERM stops the scheduler while a sentinel is stalled: {:#?}", log.all());
    assert_eq!(lines(&path), ["before", "after"], "each once");
}

/// A `rediss://` Redis that accepts connections and never answers (SIGSTOP, as a stalled
/// server) while the scheduler starts: its take times out and says so, and SIGTERM stops it
/// within seconds. (The wake-up subscription's TLS handshake read with no timeout: the
/// scheduler hung there, deaf to SIGTERM, until Redis went on.)
#[test]
fn a_stalled_rediss_server_does_not_hold_the_scheduler_past_sigterm() {
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let tls_port = li3g_tests::free_port();
    let args = certs.redis_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let redis = on_a_free_port_redis(dir.path(), &args, None);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let setup = setup_on(&url, &format!("redis_tls_ca = \"{}\"\n", certs.ca().display()), "");
    signal(redis.pid(), Signal::SIGSTOP);
    let (mut scheduler, log) = setup.scheduler(&[]);
    log.wait_for("Cannot take due jobs", LONG);
    signal(scheduler.id(), Signal::SIGTERM);
    let stopped = scheduler.wait_timeout(Duration::from_secs(30));
    signal(redis.pid(), Signal::SIGCONT);
    assert!(stopped.is_some(), "SIGTERM stops the scheduler while Redis is stalled: {:#?}", log.all());
}

/// `redis_tls_ca` naming a file that cannot be read (a typo, a CA rotated away): the worker
/// refuses the configuration at start, naming the key and the file. (It used to start, and then
/// lost the retry of every failed job, whose failure it could not record.)
#[test]
fn an_unreadable_redis_tls_ca_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let redis = on_a_free_port_redis(dir.path(), &[], None);
    let missing = dir.path().join("missing-ca.pem");
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let setup = setup_on(&url, &format!("redis_tls_ca = \"{}\"\n", missing.display()), "");
    let out = setup.li3g(&["work"]);
    assert!(out.code.is_some_and(|code| code != 0), "refused: {} {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("redis_tls_ca") && out.stderr.contains("missing-ca.pem"), "{}", out.stderr);
}

/// A li3g 0.1 client or worker that still writes under `li3g:` after the scheduler started (a
/// rolling upgrade, one machine at a time): that job is moved too, within seconds, and runs
/// once. (The move ran only at start: such a job waited under `li3g:` until a scheduler restart.)
#[test]
fn a_job_written_under_the_old_prefix_after_the_start_is_moved_too() {
    let setup = Setup::new();
    let config = setup.config();
    let _worker = setup.worker();
    let (_scheduler, _log) = setup.scheduler(&[]);
    let path = setup.file("late-old-prefix");
    // Once a job under the new prefix ran, the scheduler's loop is past its first move.
    schedule(&setup, &path, "new", SystemTime::now());
    wait_until("the job under the new prefix ran", LONG, || lines(&path) == ["new"]);
    let old = li3g_host::config::SchedulerSettings { prefix: "li3g:".into(), ..config.scheduler.clone() };
    let mut store = Schedule::open(config.redis.as_deref().unwrap(), &old).unwrap();
    store.schedule(&append_record(&path, "old"), SystemTime::now()).unwrap();
    wait_until("the job an old client wrote after the start ran", LONG, || lines(&path).len() >= 2);
    assert_eq!(lines(&path), ["new", "old"], "once");
}

/// A job waiting under the old prefix keeps its status when it is moved: `status ID` says
/// `pending` before and after. (Its status key stayed under `li3g:`: `status` said "no status
/// for job" until it ran.)
#[test]
fn a_job_moved_from_the_old_prefix_keeps_its_status() {
    let setup = Setup::new();
    let config = setup.config();
    let old = li3g_host::config::SchedulerSettings { prefix: "li3g:".into(), ..config.scheduler.clone() };
    let mut store = Schedule::open(config.redis.as_deref().unwrap(), &old).unwrap();
    let record = append_record(&setup.file("later"), "later");
    store.schedule(&record, SystemTime::now() + Duration::from_secs(3600)).unwrap();
    let (_scheduler, log) = setup.scheduler(&[]);
    log.wait_for("Moved 1 scheduled jobs from the old key prefix", LONG);
    let status = setup.li3g(&["status", &record.id]);
    assert!(status.stdout.starts_with("pending"), "{} {}", status.stdout, status.stderr);
}

#[path = "scheduler_redis_sentinel.rs"]
mod sentinel;
