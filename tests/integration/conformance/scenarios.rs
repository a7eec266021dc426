//! The scripted scenarios of the differential suite: every packet type a client or worker
//! sends, in the sequences real clients use, the admin text protocol, and malformed input.
//! Connection 1 is a client, 2 (and 3) workers, 9 an admin or raw peer, unless a scenario says
//! otherwise. `$f`/`$g` are the scenario's own function names, `$h1`.. the handles it saw.

use super::driver::{t, Scenario};

/// A foreground or background submission type for every priority.
const SUBMITS: [(&str, u32); 6] = [
    ("submit_job", t::SUBMIT_JOB),
    ("submit_job_bg", t::SUBMIT_JOB_BG),
    ("submit_job_high", t::SUBMIT_JOB_HIGH),
    ("submit_job_high_bg", t::SUBMIT_JOB_HIGH_BG),
    ("submit_job_low", t::SUBMIT_JOB_LOW),
    ("submit_job_low_bg", t::SUBMIT_JOB_LOW_BG),
];

/// A worker on connection 2 grabs with `grab` and completes the job it got with `result`;
/// the client on connection 1 is synced after.
fn run_one(s: Scenario, grab: u32, result: &str) -> Scenario {
    run_with(s.can_do(2, "$f"), grab, result)
}

/// As [`run_one`], with the worker's abilities already set by `s`.
fn run_with(s: Scenario, grab: u32, result: &str) -> Scenario {
    s.call(2, grab, &[]).call(2, t::WORK_COMPLETE, &["$h1", result]).sync(1).call(2, t::GRAB_JOB, &[])
}

/// A job submitted by client 1 (`exceptions`: after `OPTION_REQ exceptions`), grabbed by worker 2.
fn running(name: &'static str, exceptions: bool) -> Scenario {
    let mut s = Scenario::new(name);
    if exceptions {
        s = s.call(1, t::OPTION_REQ, &["exceptions"]);
    }
    s.call(1, t::SUBMIT_JOB, &["$f", "", "w"]).can_do(2, "$f").call(2, t::GRAB_JOB, &[])
}

/// Every scenario, in the order the report shows them.
pub fn all() -> Vec<Scenario> {
    let mut all = Vec::new();

    // --- Submissions: every variant and priority, run by a worker.
    for (name, kind) in SUBMITS {
        all.push(run_one(Scenario::new(name).call(1, kind, &["$f", "u", "payload"]), t::GRAB_JOB, "done"));
    }
    all.push(Scenario::new("submit_job_sched").call(1, t::SUBMIT_JOB_SCHED, &["$f", "", "1", "1", "1", "1", "1", "w"]));
    all.push(Scenario::new("submit_reduce_job").call(1, t::SUBMIT_REDUCE_JOB, &["$f", "", "r", "w"]));
    all.push(run_one(
        Scenario::new("epoch_in_the_past").call(1, t::SUBMIT_JOB_EPOCH, &["$f", "", "1", "w"]),
        t::GRAB_JOB,
        "done",
    ));
    all.push(
        Scenario::new("epoch_in_the_future")
            .call(1, t::SUBMIT_JOB_EPOCH, &["$f", "", "$now+3600", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "status"),
    );
    // li3g runs an epoch job when it is due, waking a sleeping worker; gearmand has no timer.
    all.push(
        Scenario::new("epoch_due_wakes_a_sleeping_worker")
            .call(1, t::SUBMIT_JOB_EPOCH, &["$f", "", "$now+2", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::PRE_SLEEP, &[])
            .collect(2, 3000)
            .call(2, t::GRAB_JOB, &[]),
    );
    for (name, epoch) in [("epoch_not_a_number", "soon"), ("epoch_negative", "-5"), ("epoch_empty", "")] {
        all.push(run_one(Scenario::new(name).call(1, t::SUBMIT_JOB_EPOCH, &["$f", "", epoch, "w"]), t::GRAB_JOB, "r"));
    }
    all.push(
        Scenario::new("priorities_high_normal_low")
            .call(1, t::SUBMIT_JOB_LOW_BG, &["$f", "", "low"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "normal"])
            .call(1, t::SUBMIT_JOB_HIGH_BG, &["$f", "", "high"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("functions_are_separate_queues")
            .call(1, t::SUBMIT_JOB_BG, &["$g", "", "for g"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "for f"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("payload_with_nuls_and_empty")
            .send_bytes(1, t::SUBMIT_JOB_BG, &[b"$f", b"", b"a\0b\0"])
            .sync(1)
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", ""])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::GRAB_JOB, &[]),
    );

    // --- Unique keys.
    all.push(
        Scenario::new("unique_empty_never_coalesces")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "same"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "same"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("unique_dash_same_payload_coalesces")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "same"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "same"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "other"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("unique_dash_vs_literal_key")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-1", "x"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "1"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("unique_dash_empty_payloads")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", ""])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", ""])
            .admin(9, "status"),
    );
    for (name, len) in [("unique_63_bytes", 63), ("unique_64_bytes", 64), ("unique_65_bytes", 65)] {
        let unique = "u".repeat(len);
        all.push(
            Scenario::new(name)
                .call(1, t::SUBMIT_JOB_BG, &["$f", &unique, "w"])
                .call(1, t::SUBMIT_JOB_BG, &["$f", &unique, "w"])
                .can_do(2, "$f")
                .call(2, t::GRAB_JOB_UNIQ, &[])
                .call(2, t::GRAB_JOB_UNIQ, &[]),
        );
    }
    all.push(
        Scenario::new("unique_same_key_other_function")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "k", "w"])
            .call(1, t::SUBMIT_JOB_BG, &["$g", "k", "w"])
            .admin(9, "status"),
    );

    // --- Coalescing: every pair of foreground and background, from two clients.
    for (name, first, second) in [
        ("coalesce_fg_fg", t::SUBMIT_JOB, t::SUBMIT_JOB),
        ("coalesce_fg_bg", t::SUBMIT_JOB, t::SUBMIT_JOB_BG),
        ("coalesce_bg_fg", t::SUBMIT_JOB_BG, t::SUBMIT_JOB),
        ("coalesce_bg_bg", t::SUBMIT_JOB_BG, t::SUBMIT_JOB_BG),
        ("coalesce_high_then_low", t::SUBMIT_JOB_HIGH, t::SUBMIT_JOB_LOW),
    ] {
        all.push(
            Scenario::new(name)
                .call(1, first, &["$f", "k", "one"])
                .call(3, second, &["$f", "k", "two"])
                .can_do(2, "$f")
                .call(2, t::GRAB_JOB_UNIQ, &[])
                .call(2, t::WORK_DATA, &["$h1", "d"])
                .call(2, t::WORK_COMPLETE, &["$h1", "r"])
                .sync(1)
                .sync(3)
                .call(2, t::GRAB_JOB, &[]),
        );
    }
    // Issue 19 item 1: one connection, two submissions with one unique.
    all.push(
        Scenario::new("coalesce_fg_fg_same_connection")
            .call(1, t::SUBMIT_JOB, &["$f", "U1", "same"])
            .call(1, t::SUBMIT_JOB, &["$f", "U1", "same"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_STATUS, &["$h1", "1", "2"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        Scenario::new("coalesce_fg_then_bg_fg_client_leaves")
            .call(1, t::SUBMIT_JOB, &["$f", "k", "one"])
            .call(3, t::SUBMIT_JOB_BG, &["$f", "k", "two"])
            .close(1)
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("coalesce_while_running")
            .call(1, t::SUBMIT_JOB, &["$f", "k", "one"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(3, t::SUBMIT_JOB, &["$f", "k", "two"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1)
            .sync(3),
    );

    // --- Grab variants.
    for (name, grab) in
        [("grab_job", t::GRAB_JOB), ("grab_job_uniq", t::GRAB_JOB_UNIQ), ("grab_job_all", t::GRAB_JOB_ALL)]
    {
        all.push(run_one(Scenario::new(name).call(1, t::SUBMIT_JOB, &["$f", "uk", "payload"]), grab, "done"));
    }
    all.push(Scenario::new("grab_without_abilities").call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"]).call(
        2,
        t::GRAB_JOB,
        &[],
    ));
    all.push(Scenario::new("grab_uniq_nothing_queued").can_do(2, "$f").call(2, t::GRAB_JOB_UNIQ, &[]));
    all.push(Scenario::new("grab_all_nothing_queued").can_do(2, "$f").call(2, t::GRAB_JOB_ALL, &[]));

    // --- Sleep and wake.
    all.push(
        Scenario::new("pre_sleep_then_noop_on_submit")
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .sync(2)
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("pre_sleep_with_a_job_queued")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("pre_sleep_two_workers_both_woken")
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .can_do(3, "$f")
            .call(3, t::PRE_SLEEP, &[])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .sync(2)
            .sync(3),
    );
    all.push(
        Scenario::new("pre_sleep_other_function_not_woken")
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .call(1, t::SUBMIT_JOB_BG, &["$g", "", "w"])
            .sync(2),
    );
    all.push(
        Scenario::new("pre_sleep_woken_once_for_two_jobs")
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "a"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "b"])
            .sync(2),
    );
    all.push(Scenario::new("noop_from_a_worker").call(2, t::NOOP, &[]).quiet(2, 200).sync(2));

    // --- Abilities and timeouts.
    all.push(
        Scenario::new("cant_do")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::CANT_DO, &["$f"])
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("reset_abilities")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .can_do(2, "$f")
            .can_do(2, "$g")
            .call(2, t::RESET_ABILITIES, &[])
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "workers"),
    );
    all.push(Scenario::new("can_do_twice").can_do(2, "$f").can_do(2, "$f").admin(9, "status").admin(9, "workers"));
    all.push(Scenario::new("cant_do_never_done").call(2, t::CANT_DO, &["$f"]).admin(9, "workers"));
    for (name, timeout) in [("can_do_timeout_0", "0"), ("can_do_timeout_1ms", "1"), ("can_do_timeout_5000", "5000")] {
        // The job takes 100 ms: past 0 or 1 ms, well within the 1000 ms gearmand makes of both.
        all.push(
            Scenario::new(name)
                .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
                .call(2, t::CAN_DO_TIMEOUT, &["$f", timeout])
                .call(2, t::GRAB_JOB, &[])
                .pause(100)
                .call(2, t::WORK_COMPLETE, &["$h1", "done"])
                .sync(1)
                .call(2, t::GRAB_JOB, &[]),
        );
    }
    all.push(
        Scenario::new("can_do_timeout_not_a_number").call(2, t::CAN_DO_TIMEOUT, &["$f", "soon"]).admin(9, "workers"),
    );
    all.push(Scenario::new("can_do_empty_function").call(2, t::CAN_DO, &[""]).call(2, t::GRAB_JOB, &[]));
    let long = "l".repeat(513);
    all.push(
        Scenario::new("function_name_513_bytes").call(1, t::SUBMIT_JOB_BG, &[&long, "", "w"]).can_do(2, &long).call(
            2,
            t::GRAB_JOB,
            &[],
        ),
    );
    all.push(Scenario::new("submit_empty_function").call(1, t::SUBMIT_JOB_BG, &["", "", "w"]).can_do(2, "").call(
        2,
        t::GRAB_JOB,
        &[],
    ));

    // --- Every WORK_* packet, with and without OPTION_REQ exceptions.
    for exceptions in [false, true] {
        let tag = |plain: &'static str, with: &'static str| if exceptions { with } else { plain };
        all.push(
            running(tag("work_status", "work_status_exceptions"), exceptions)
                .call(2, t::WORK_STATUS, &["$h1", "5", "10"])
                .call(1, t::GET_STATUS, &["$h1"])
                .call(2, t::WORK_COMPLETE, &["$h1", "r"])
                .sync(1),
        );
        all.push(
            running(tag("work_data", "work_data_exceptions"), exceptions)
                .call(2, t::WORK_DATA, &["$h1", "part"])
                .call(2, t::WORK_DATA, &["$h1", ""])
                .call(2, t::WORK_COMPLETE, &["$h1", "r"])
                .sync(1),
        );
        all.push(
            running(tag("work_warning", "work_warning_exceptions"), exceptions)
                .call(2, t::WORK_WARNING, &["$h1", "careful"])
                .call(2, t::WORK_COMPLETE, &["$h1", "r"])
                .sync(1),
        );
        all.push(
            running(tag("work_exception", "work_exception_exceptions"), exceptions)
                .call(2, t::WORK_EXCEPTION, &["$h1", "boom"])
                .sync(1)
                .call(2, t::GRAB_JOB, &[]),
        );
        all.push(
            running(tag("work_fail", "work_fail_exceptions"), exceptions).call(2, t::WORK_FAIL, &["$h1"]).sync(1).call(
                2,
                t::GRAB_JOB,
                &[],
            ),
        );
        all.push(
            running(tag("work_complete_empty", "work_complete_empty_exceptions"), exceptions)
                .send(2, t::WORK_COMPLETE, &["$h1"])
                .sync(2)
                .sync(1),
        );
    }
    all.push(
        running("work_status_fractional", false)
            .call(2, t::WORK_STATUS, &["$h1", "0.5", "1"])
            .sync(1)
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        running("work_status_percent", false)
            .call(2, t::WORK_STATUS, &["$h1", "50%", "100%"])
            .sync(1)
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        running("work_for_a_job_not_held", false)
            .can_do(3, "$f")
            .call(3, t::WORK_STATUS, &["$h1", "1", "2"])
            .call(3, t::WORK_COMPLETE, &["$h1", "not mine"])
            .call(3, t::WORK_COMPLETE, &["H:nowhere:1", "unknown"])
            .sync(1)
            .call(2, t::WORK_COMPLETE, &["$h1", "mine"])
            .sync(1),
    );
    all.push(
        running("work_complete_twice", false)
            .call(2, t::WORK_COMPLETE, &["$h1", "first"])
            .call(2, t::WORK_COMPLETE, &["$h1", "second"])
            .sync(1),
    );
    all.push(Scenario::new("option_req_exceptions_capitals").call(1, t::OPTION_REQ, &["EXCEPTIONS"]));
    all.push(Scenario::new("option_req_unknown").call(1, t::OPTION_REQ, &["bogus"]).sync(1));

    // --- Status lookups.
    all.push(
        Scenario::new("get_status_queued_running_done")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .call(1, t::GET_STATUS, &["$h1"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(1, t::GET_STATUS, &["$h1"])
            .call(2, t::WORK_STATUS, &["$h1", "3", "4"])
            .call(1, t::GET_STATUS, &["$h1"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .call(1, t::GET_STATUS, &["$h1"]),
    );
    all.push(Scenario::new("get_status_unknown_handle").call(1, t::GET_STATUS, &["H:nowhere:42"]));
    all.push(
        Scenario::new("get_status_unique")
            .call(1, t::SUBMIT_JOB, &["$f", "uq", "w"])
            .call(3, t::SUBMIT_JOB, &["$f", "uq", "w"])
            .call(4, t::GET_STATUS_UNIQUE, &["uq"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_STATUS, &["$h1", "1", "3"])
            .call(4, t::GET_STATUS_UNIQUE, &["uq"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1)
            .sync(3)
            .call(4, t::GET_STATUS_UNIQUE, &["uq"]),
    );
    all.push(Scenario::new("get_status_unique_unknown").call(1, t::GET_STATUS_UNIQUE, &["nothing-here"]));
    all.push(
        Scenario::new("progress_after_requeue")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_STATUS, &["$h1", "5", "10"])
            .close(2)
            .call(1, t::GET_STATUS, &["$h1"]),
    );

    // --- A worker or a client leaving at each step.
    all.push(
        Scenario::new("worker_leaves_after_grab_job_requeued")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .close(2)
            .can_do(3, "$f")
            .call(3, t::GRAB_JOB, &[])
            .call(3, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    let mut lost = Scenario::new("worker_lost_five_times").call(1, t::SUBMIT_JOB, &["$f", "", "w"]);
    for worker in 10..15 {
        lost = lost.can_do(worker, "$f").call(worker, t::GRAB_JOB, &[]).close(worker);
    }
    all.push(lost.sync(1).can_do(2, "$f").call(2, t::GRAB_JOB, &[]).admin(9, "status"));
    let big = "x".repeat(64 << 20);
    all.push(
        Scenario::new("workload_64_mib")
            .call(1, t::SUBMIT_JOB, &["$f", "", &big])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", &big])
            .sync(1),
    );
    all.push(
        Scenario::new("worker_leaves_while_sleeping")
            .can_do(2, "$f")
            .call(2, t::PRE_SLEEP, &[])
            .close(2)
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("worker_leaves_after_status")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_STATUS, &["$h1", "1", "2"])
            .sync(1)
            .close(2)
            .call(1, t::GET_STATUS, &["$h1"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("client_leaves_before_grab")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .close(1)
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("client_leaves_while_running")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .close(1)
            .call(2, t::WORK_STATUS, &["$h1", "1", "2"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("background_client_leaves")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .close(1)
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("one_of_two_coalesced_clients_leaves")
            .call(1, t::SUBMIT_JOB, &["$f", "k", "w"])
            .call(3, t::SUBMIT_JOB, &["$f", "k", "w"])
            .close(1)
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(3),
    );

    // --- More sequences.
    all.push(
        Scenario::new("coalesce_fg_bg_same_connection")
            .call(1, t::SUBMIT_JOB, &["$f", "k", "w"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "k", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        Scenario::new("grab_job_uniq_empty_and_dash_unique")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "a"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "b"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB_UNIQ, &[])
            .call(2, t::GRAB_JOB_UNIQ, &[]),
    );
    all.push(
        Scenario::new("get_status_unique_dash")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "payload"])
            .call(1, t::GET_STATUS_UNIQUE, &["-"])
            .call(1, t::GET_STATUS_UNIQUE, &["-payload"]),
    );
    all.push(
        Scenario::new("unique_reused_after_completion")
            .call(1, t::SUBMIT_JOB, &["$f", "k", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1)
            .call(1, t::SUBMIT_JOB, &["$f", "k", "w"])
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("worker_leaves_after_data")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_DATA, &["$h1", "d"])
            .sync(1)
            .close(2)
            .can_do(3, "$f")
            .call(3, t::GRAB_JOB, &[])
            .call(3, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        Scenario::new("worker_leaves_before_grab")
            .can_do(2, "$f")
            .close(2)
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .admin(9, "status"),
    );
    all.push(
        running("reset_abilities_while_running", false)
            .call(2, t::RESET_ABILITIES, &[])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        running("cant_do_while_running", false)
            .call(2, t::CANT_DO, &["$f"])
            .call(2, t::WORK_COMPLETE, &["$h1", "r"])
            .sync(1),
    );
    all.push(
        Scenario::new("can_do_timeout_expires")
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .call(2, t::CAN_DO_TIMEOUT, &["$f", "1000"])
            .call(2, t::GRAB_JOB, &[])
            .pause(1600)
            .sync(1)
            .call(2, t::WORK_COMPLETE, &["$h1", "late"])
            .sync(1)
            .can_do(3, "$f")
            .call(3, t::GRAB_JOB, &[]),
    );
    all.push(
        Scenario::new("background_status_seen_by_another_client")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(2, t::WORK_STATUS, &["$h1", "2", "7"])
            .call(3, t::GET_STATUS, &["$h1"])
            .sync(1),
    );
    all.push(
        Scenario::new("pipelined_packets_in_one_write")
            .send_many(
                1,
                &[
                    (t::SUBMIT_JOB_BG, &["$f", "", "a"]),
                    (t::SUBMIT_JOB_BG, &["$f", "", "b"]),
                    (t::ECHO_REQ, &["between"]),
                    (t::SUBMIT_JOB_HIGH_BG, &["$f", "", "c"]),
                ],
            )
            .sync(1),
    );
    all.push(Scenario::new("echo_one_mib").call(1, t::ECHO_REQ, &[&"e".repeat(1 << 20)]));
    all.push(
        Scenario::new("admin_maxqueue_per_priority")
            .admin(9, "maxqueue $f 5 1 5")
            .call(1, t::SUBMIT_JOB_HIGH_BG, &["$f", "", "a"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "b"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "c"])
            .call(1, t::SUBMIT_JOB_LOW_BG, &["$f", "", "d"]),
    );
    all.push(Scenario::new("admin_workers_crlf").can_do(2, "$f").admin(9, "workers\r\n"));
    all.push(Scenario::new("admin_workers_sleeping").can_do(2, "$f").call(2, t::PRE_SLEEP, &[]).admin(9, "workers"));
    all.push(Scenario::new("set_client_id_with_a_space").call(5, t::SET_CLIENT_ID, &["$f a b"]).admin(9, "workers"));

    // --- Other client packets.
    all.push(
        Scenario::new("echo_req")
            .call(1, t::ECHO_REQ, &["hello"])
            .send_bytes(1, t::ECHO_REQ, &[b"with\0nul"])
            .sync(1)
            .call(1, t::ECHO_REQ, &[]),
    );
    all.push(
        Scenario::new("set_client_id_shown_by_workers").call(2, t::SET_CLIENT_ID, &["$f-named"]).admin(9, "workers"),
    );
    all.push(Scenario::new("all_yours").can_do(2, "$f").send(2, t::ALL_YOURS, &[]).quiet(2, 200).sync(2));

    // --- The admin text protocol.
    all.push(
        Scenario::new("admin_status")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .call(1, t::SUBMIT_JOB, &["$f", "", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .can_do(3, "$g")
            .admin(9, "status"),
    );
    all.push(Scenario::new("admin_workers").can_do(2, "$f").can_do(2, "$g").sync(1).admin(9, "workers"));
    all.push(Scenario::new("admin_version").admin(9, "version"));
    all.push(Scenario::new("admin_getpid").admin(9, "getpid"));
    all.push(Scenario::new("admin_status_crlf").admin(9, "status\r\n"));
    all.push(Scenario::new("admin_version_crlf").admin(9, "version\r\n"));
    all.push(Scenario::new("admin_case_status").can_do(2, "$f").admin(9, "STATUS"));
    all.push(Scenario::new("admin_case_version").admin(9, "Version"));
    all.push(Scenario::new("admin_unknown_command").admin(9, "bogus"));
    all.push(Scenario::new("admin_two_commands_one_write").admin(9, "getpid\ngetpid\n").quiet(9, 200));
    all.push(
        Scenario::new("admin_maxqueue")
            .admin(9, "maxqueue $f 1")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "a"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "b"])
            .admin(9, "status"),
    );
    all.push(
        Scenario::new("admin_maxqueue_counts_running")
            .admin(9, "maxqueue $f 1")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "a"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "b"]),
    );
    all.push(Scenario::new("admin_maxqueue_no_size").admin(9, "maxqueue $f"));
    all.push(Scenario::new("admin_maxqueue_not_a_number").admin(9, "maxqueue $f lots"));
    all.push(
        Scenario::new("admin_show_jobs")
            .own_servers()
            .call(1, t::SUBMIT_JOB_BG, &["$f", "a", "w"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "b", "w"])
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[])
            .admin(9, "show jobs"),
    );
    all.push(
        Scenario::new("admin_show_unique_jobs")
            .own_servers()
            .call(1, t::SUBMIT_JOB_BG, &["$f", "a", "w"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .call(1, t::SUBMIT_JOB_BG, &["$f", "-", "w"])
            .admin(9, "show unique jobs"),
    );
    all.push(
        Scenario::new("admin_cancel_job")
            .call(1, t::SUBMIT_JOB_BG, &["$f", "", "w"])
            .admin(9, "cancel job $h1")
            .admin(9, "status")
            .can_do(2, "$f")
            .call(2, t::GRAB_JOB, &[]),
    );
    all.push(Scenario::new("admin_cancel_unknown_job").admin(9, "cancel job H:nowhere:1"));
    all.push(
        Scenario::new("admin_create_and_drop_function").admin(9, "create function $f").admin(9, "drop function $f"),
    );
    all.push(Scenario::new("admin_drop_unknown_function").admin(9, "drop function $f"));
    all.push(
        Scenario::new("admin_priority_status")
            .own_servers()
            .call(1, t::SUBMIT_JOB_HIGH_BG, &["$f", "", "w"])
            .admin(9, "prioritystatus"),
    );
    all.push(Scenario::new("admin_verbose").admin(9, "verbose"));
    // Issue 19 item 9: `shutdown` over TCP must leave the server, and its jobs, where they are.
    for (name, line) in [("admin_shutdown", "shutdown"), ("admin_shutdown_graceful", "shutdown graceful")] {
        all.push(
            Scenario::new(name)
                .own_servers()
                .call(1, t::SUBMIT_JOB_BG, &["$f", "", "kept"])
                .admin(9, line)
                .quiet(9, 200)
                .admin(8, "status")
                .can_do(2, "$f")
                .call(2, t::GRAB_JOB, &[]),
        );
    }
    all.push(Scenario::new("admin_then_binary_on_one_connection").admin(9, "getpid").call(9, t::ECHO_REQ, &["x"]));

    // --- Malformed input.
    all.push(Scenario::new("bad_magic").bytes(9, b"\0REX\0\0\0\x10\0\0\0\0").quiet(9, 300).admin(8, "getpid"));
    all.push(
        Scenario::new("res_magic_from_a_client").bytes(9, b"\0RES\0\0\0\x10\0\0\0\0").quiet(9, 300).admin(8, "getpid"),
    );
    all.push(Scenario::new("unknown_type").bytes(9, b"\0REQ\0\0\0\x63\0\0\0\0").quiet(9, 300).admin(8, "getpid"));
    all.push(
        Scenario::new("oversize_declared_length")
            .bytes(9, b"\0REQ\0\0\0\x07\xff\xff\xff\xf0")
            .quiet(9, 300)
            .admin(8, "getpid"),
    );
    all.push(
        Scenario::new("response_type_noop_from_a_client")
            .bytes(9, &super::driver::packet(t::NOOP, &[]))
            .quiet(9, 300)
            .call(9, t::ECHO_REQ, &["still"]),
    );
    all.push(
        Scenario::new("response_type_job_created_from_a_client")
            .bytes(9, &super::driver::packet(t::JOB_CREATED, &[b"H:x:1"]))
            .quiet(9, 300)
            .call(9, t::ECHO_REQ, &["still"]),
    );
    all.push(
        Scenario::new("submit_missing_arguments")
            .bytes(9, &super::driver::packet(t::SUBMIT_JOB, &[b"only-a-function"]))
            .quiet(9, 300)
            .admin(8, "getpid"),
    );
    all.push(Scenario::new("truncated_header_then_close").bytes(9, b"\0REQ\0\0").close(9).admin(8, "getpid"));
    all.push(Scenario::new("text_garbage_line").admin(9, "\x01\x02garbage").quiet(9, 200));
    all.push(Scenario::new("empty_admin_line").admin(9, "\n").quiet(9, 200));

    // Every admin line is sent with a line end.
    for s in &mut all {
        for step in &mut s.steps {
            if let super::driver::Step::Admin { line, .. } = step {
                if !line.ends_with('\n') {
                    line.push('\n');
                }
            }
        }
    }
    all
}
