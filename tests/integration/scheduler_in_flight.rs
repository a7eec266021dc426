//! A batch in flight (its submissions written to gearmand, their answers not read yet) while
//! Redis stalls for longer than the lease: the scheduler's next take waits on Redis, the
//! batch's lease runs out meanwhile, and that take hands the batch back to the same scheduler
//! (an expired lease). It must not submit it again: it did, and the jobs, run by then, ran
//! twice (issue 25: `j31` ran twice when a Sentinel master's writes were paused for 3.9 s under
//! a 2 s lease).

use super::*;

/// Whether process `pid` is stopped (`T` in `/proc/PID/stat`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('T'))
        .unwrap_or(false)
}

/// Redis's clock in ms (the scripts' `now`).
fn redis_now_ms(redis: &mut redis::Connection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(redis).unwrap();
    secs * 1000 + micros / 1000
}

/// The window forced: the scheduler takes 5 due jobs and stops (the test hook); Redis's writes
/// are paused (`CLIENT PAUSE WRITE`: reads go on, every script waits); the scheduler resumes,
/// submits the batch (the worker runs it: job status is off, so the worker does not wait on
/// Redis) and sends its next take, which waits behind the pause. Once Redis's clock is past
/// the batch's lease, the writes resume: the waiting take runs and finds the batch's leases
/// expired, under this scheduler's own token. Each job runs once, the scheduler says it did not
/// submit them again, and the schedule ends empty (the batch acknowledged, not left leased).
/// Without the fix each of the 5 ran twice.
#[test]
fn a_batch_whose_lease_runs_out_while_a_take_waits_on_redis_is_not_submitted_again() {
    let setup = Setup::new();
    std::fs::write(
        &setup.config_path,
        format!(
            "[default]\nservers = [\"{}\"]\nredis = \"{}\"\nplugins = \"{}\"\n\n[default.scheduler]\nlease = 3\njob_status = false\n",
            setup.gearmand().addr(),
            setup.redis.as_ref().unwrap().url(),
            setup._plugins.path().display()
        ),
    )
    .unwrap();
    let path = setup.file("in-flight");
    let records: Vec<Record> = (0..5).map(|i| append_record(&path, &format!("job {i}"))).collect();
    setup.store().schedule_many(&records, &[SystemTime::now(); 5]).unwrap();
    let _worker = setup.worker();
    let (scheduler, log) = setup.scheduler(&[(li3g_host::scheduler::run::STOP_AFTER_TAKE_ENV, "1")]);
    log.wait_for("Took 5 jobs; stopping before submitting them", LONG);
    let pid = scheduler.id();
    wait_until("the scheduler is stopped", LONG, || stopped(pid));

    let mut redis = setup.redis();
    let leases: Vec<Option<u64>> = records
        .iter()
        .map(|r| redis::cmd("ZSCORE").arg("{li3g}:leased").arg(&r.id).query(&mut redis).unwrap())
        .collect();
    let lease_ends = leases.iter().map(|l| l.expect("each job is leased")).max().unwrap();
    let paused: String = redis::cmd("CLIENT").arg("PAUSE").arg(30_000).arg("WRITE").query(&mut redis).unwrap();
    assert_eq!(paused, "OK");
    signal(pid, Signal::SIGCONT);
    // Submitted without renewing the lease first (taken less than a third of it ago), so
    // gearmand has the batch and the worker runs it while every write waits.
    wait_until("the batch ran while Redis's writes are paused", Duration::from_secs(20), || lines(&path).len() == 5);
    wait_until("Redis's clock is past the batch's lease", LONG, || redis_now_ms(&mut redis) > lease_ends);
    let unpaused: String = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut redis).unwrap();
    assert_eq!(unpaused, "OK");

    // A last job, run after whatever the scheduler submitted before it (one worker, gearmand's
    // queue in order): once it ran, every submission of the batch has run too.
    let last = append_record(&path, "last");
    setup.store().schedule(&last, SystemTime::now()).unwrap();
    wait_until("the last job ran", LONG, || lines(&path).contains(&"last".to_string()));
    let ran = lines(&path);
    for i in 0..5 {
        let line = format!("job {i}");
        assert_eq!(ran.iter().filter(|l| **l == line).count(), 1, "{line} ran once: {ran:?}\n{:#?}", log.all());
    }
    log.wait_for("not submitting them again", LONG);
    setup.wait_schedule_empty();
    assert_eq!(log.count("moved for immediate execution"), 6, "each moved once: {:#?}", log.all());
    assert!(li3g_tests::alive(scheduler.id()), "the scheduler stayed up");
}
