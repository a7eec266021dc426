//! The scheduler process's loop: take due jobs from Redis under a lease, submit them to a job
//! server pipelined, acknowledge them, and sleep until the next one is due.
//!
//! 1. [`Schedule::take`] moves up to `batch` due jobs (and jobs whose lease ran out because
//!    their scheduler died) under a lease, in one Lua script.
//! 2. Each is submitted as a background job with its id as the unique key: all
//!    `SUBMIT_JOB_BG` packets of a chunk are written at once, then all `JOB_CREATED` read.
//! 3. [`Schedule::ack`] removes what the server accepted. A crash anywhere before that leaves
//!    the jobs leased; another scheduler (or this one, restarted) takes them over once the
//!    lease runs out, and a job handed over twice coalesces in gearmand while it is queued.
//! 4. With nothing due it waits (see [`super::wake`]) until the next due time, at most
//!    [`IDLE`], or until a client wakes it by scheduling an earlier job.
//!
//! Redis or a job server unreachable: a log line, backoff (100 ms doubling to 5 s, a
//! [`Backoff`]), and again on the next server (the Gearman [`Client`]'s failover);
//! the taken jobs stay in hand (and leased) until a server takes them. Single-threaded, no
//! runtime. It must not run tasks, nor decide retries (the worker does).

use super::record::Record;
use super::schedule::{Schedule, ScheduleError};
use super::submit::{submittable, Servers, READ_TIMEOUT};
use super::wake::Wake;
use crate::gearman::client::GearmanClient;
use crate::gearman::conn::ServerAddr;
use crate::process::Backoff;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The longest sleep without looking at Redis (and at the stop flag).
pub const IDLE: Duration = Duration::from_millis(500);
/// Between failed attempts: 100 ms doubling to 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// Submissions written before their answers are read: keeps both sides' socket buffers from
/// filling while neither reads.
const CHUNK: usize = 256;
/// How often the jobs under the old default prefix are looked for again (one small script).
const MIGRATE_AGAIN: Duration = Duration::from_secs(10);

/// The environment variable of the test-only hook: when set, the scheduler stops itself
/// (`SIGSTOP`) right after taking its first non-empty batch, before submitting it.
pub const STOP_AFTER_TAKE_ENV: &str = "LI3G_TEST_STOP_AFTER_TAKE";

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The job servers, tried in turn.
    pub servers: Vec<ServerAddr>,
    /// How long a taken job stays leased before another scheduler may take it over.
    pub lease: Duration,
    /// Jobs taken at once.
    pub batch: usize,
    /// Log `Job #<id> moved for immediate execution` per job (li3_gearman's `--verbose`).
    pub verbose: bool,
    /// The test-only hook ([`STOP_AFTER_TAKE_ENV`]).
    pub stop_after_take: bool,
}

impl SchedulerConfig {
    /// Defaults for `servers`: a lease of 30 s, batches of 1000.
    pub fn new(servers: Vec<ServerAddr>) -> SchedulerConfig {
        SchedulerConfig {
            servers,
            lease: Duration::from_secs(30),
            batch: 1000,
            verbose: false,
            stop_after_take: std::env::var_os(STOP_AFTER_TAKE_ENV).is_some(),
        }
    }
}

/// What a scheduler did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Jobs a job server accepted.
    pub moved: u64,
    /// Jobs sent to the dead set.
    pub buried: u64,
}

/// Runs the scheduler until `stop()` returns true; `log` gets its log lines.
///
/// Batches overlap: batch N's submissions are written, batch N+1 is taken from Redis while
/// the job server works on them, then N's answers are read. Acknowledgements ride on the
/// next take. So Redis and gearmand work at the same time instead of in turn.
///
/// Fencing: a batch is submitted only while its lease is known to be this scheduler's. Taken
/// less than a third of the lease ago, it is; older (the job servers were down, or the
/// process was stopped), its leases are renewed first and the jobs another scheduler took
/// over meanwhile are dropped. A take that waited on Redis past the lease of the batch in
/// flight hands that batch back to this scheduler (its own token): it keeps it, under the
/// fresh lease, and does not submit it again (see `handed_back`).
pub fn run(
    store: &mut Schedule,
    config: &SchedulerConfig,
    stop: &dyn Fn() -> bool,
    log: &dyn Fn(&str),
) -> SchedulerStats {
    let mut state = State {
        wake: Wake::new(store.target(), store.keys().wake_channel()),
        servers: Servers {
            client: GearmanClient::new(config.servers.clone())
                .connect_timeout(Duration::from_secs(2))
                .request_timeout(READ_TIMEOUT),
            conn: None,
            count: config.servers.len(),
        },
        stats: SchedulerStats::default(),
        backoff: BACKOFF,
        refused: REFUSED,
        accepted: Vec::new(),
        config,
        stop,
        log,
    };
    let mut redis_down = false;
    // After a take whose answer was lost, the next one takes back what this token holds.
    let mut reclaim = false;
    let mut stopped_once = false;
    // A batch written to the job server whose answers are not read yet.
    let mut in_flight: Option<Batch> = None;
    // The upgrade from the old default prefix (see `migrate_legacy`): once Redis answers, and
    // again every MIGRATE_AGAIN, for what li3g 0.1 clients and workers still write under it
    // during a rolling upgrade (else stranded there until a scheduler restarts). `None`: refused.
    let mut migrate_at = Some(Instant::now());
    while !stop() {
        if migrate_at.is_some_and(|at| Instant::now() >= at) {
            match store.migrate_legacy() {
                Ok(n) => {
                    if n > 0 {
                        log(&format!(
                            "Moved {n} scheduled jobs from the old key prefix li3g: to {}",
                            store.keys().prefix
                        ));
                    }
                    migrate_at = Some(Instant::now() + MIGRATE_AGAIN);
                }
                // Unreachable (the take says so, and backs off): try again next time. Refused
                // (an ACL without the old keys, a wrong type): say so once and go on.
                Err(ScheduleError::Redis(err))
                    if err.is_io_error()
                        || err.is_timeout()
                        || err.is_connection_dropped()
                        || err.is_connection_refusal()
                        || err.kind() == redis::ErrorKind::AuthenticationFailed
                        || err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel => {}
                Err(err) => {
                    log(&format!("Not moving jobs from the old key prefix li3g: ({err})"));
                    migrate_at = None;
                }
            }
        }
        let leased_at = Instant::now();
        let mut taken = store.take(config.lease, config.batch, &state.accepted, reclaim);
        if let Ok(taken) = &mut taken {
            state.accepted.clear();
            reclaim = false;
            if let Some(batch) = &in_flight {
                let again = handed_back(&mut taken.jobs, batch);
                if again > 0 {
                    log(&format!(
                        "Took back {again} jobs already submitted, their answers not read yet (their lease ran out while Redis was slow to answer); not submitting them again"
                    ));
                }
            }
        }
        if let Some(batch) = in_flight.take() {
            state.finish(store, batch);
        }
        let taken = match taken {
            Ok(taken) => {
                if redis_down {
                    log("Redis is back");
                    redis_down = false;
                }
                taken
            }
            Err(err) => {
                log(&format!("Cannot take due jobs: {err}; retrying in {:?}", state.backoff.peek()));
                redis_down = true;
                reclaim = true;
                state.pause();
                continue;
            }
        };
        if let Some(why) = state.wake.take_error() {
            log(&format!(
                "Cannot subscribe to the wake-up channel ({why}); looking for due jobs every {IDLE:?} instead"
            ));
        }
        if taken.jobs.is_empty() {
            if !state.accepted.is_empty() {
                continue; // acknowledge them now
            }
            let wait = match taken.next_ms {
                Some(next) => {
                    Duration::from_millis(u64::try_from(next.saturating_sub(taken.now_ms)).unwrap_or(0)).min(IDLE)
                }
                None => IDLE,
            };
            if !wait.is_zero() {
                state.wake.wait(wait);
            }
            continue;
        }
        if config.stop_after_take && !stopped_once {
            stopped_once = true;
            log(&format!("Took {} jobs; stopping before submitting them ({STOP_AFTER_TAKE_ENV})", taken.jobs.len()));
            // Stop ourselves (the test's SIGCONT resumes us); no memory-safety preconditions.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        }
        let mut jobs = Vec::with_capacity(taken.jobs.len());
        for (id, text) in taken.jobs {
            match text.as_deref().map(|text| Record::decode(text).and_then(submittable)) {
                Some(Ok(record)) => jobs.push(record),
                Some(Err(err)) => state.bury(store, &id, text.as_deref().unwrap_or_default(), &err.to_string()),
                None => state.accepted.push(id), // cancelled or finished meanwhile: release the lease
            }
        }
        let Some(batch) = state.hold(store, Batch { jobs, leased_at }) else { continue };
        match state.servers.send(&batch.jobs) {
            Ok(()) => in_flight = Some(batch),
            Err(err) => {
                log(&format!("Cannot submit to a job server: {err}; retrying in {:?}", state.backoff.peek()));
                state.pause_within_lease();
                state.submit(store, batch);
            }
        }
    }
    if let Some(batch) = in_flight.take() {
        state.finish(store, batch);
    }
    // What was accepted since the last take; if this fails, the leases run out and the jobs
    // are submitted again, to coalesce while queued.
    if let Err(err) = store.ack(&state.accepted) {
        log(&format!("Cannot acknowledge {} jobs: {err}", state.accepted.len()));
    }
    state.stats
}

/// Jobs taken under one lease, and when it was granted (or last renewed).
struct Batch {
    jobs: Vec<Record>,
    leased_at: Instant,
}

/// Removes from `taken` the jobs of `in_flight`, and says how many there were.
///
/// A take handed them back because their lease ran out while it waited on Redis (a stall
/// longer than the lease: writes paused, a failover), under this scheduler's own token, with a
/// fresh lease: they are this scheduler's still. They were submitted already, and the batch's
/// answers, read next, acknowledge them (or, lost, submit them again, as for any batch).
/// Submitted again here, they ran twice when the workers had finished them meanwhile.
fn handed_back(taken: &mut Vec<(String, Option<String>)>, in_flight: &Batch) -> usize {
    if taken.is_empty() || in_flight.jobs.is_empty() {
        return 0;
    }
    let submitted: HashSet<&str> = in_flight.jobs.iter().map(|r| r.id.as_str()).collect();
    let before = taken.len();
    taken.retain(|(id, _)| !submitted.contains(id.as_str()));
    before - taken.len()
}

/// After a refusal that may pass (a full queue) on every server: due again after 1 s,
/// doubling to 60 s while refusals go on.
const REFUSED: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What the loop carries from batch to batch.
struct State<'a> {
    wake: Wake,
    servers: Servers,
    stats: SchedulerStats,
    backoff: Backoff,
    refused: Backoff,
    /// Jobs a job server accepted, acknowledged with the next take.
    accepted: Vec<String>,
    config: &'a SchedulerConfig,
    stop: &'a dyn Fn() -> bool,
    log: &'a dyn Fn(&str),
}

impl State<'_> {
    /// Waits out the backoff (or a wake-up) and doubles it.
    fn pause(&mut self) {
        let delay = self.backoff.failed();
        self.wake.wait(delay);
    }

    /// As [`State::pause`], but never longer than a third of the lease, so that the batch in
    /// hand is renewed before its lease runs out.
    fn pause_within_lease(&mut self) {
        let delay = self.backoff.failed().min(self.config.lease / 3);
        self.wake.wait(delay);
    }

    /// The part of `batch` whose leases are still this scheduler's (renewed when the lease
    /// was granted more than a third of it ago); `None` when nothing is left, or when Redis
    /// cannot say (then nothing is submitted: the leases run out and the jobs are taken again).
    fn hold(&mut self, store: &mut Schedule, mut batch: Batch) -> Option<Batch> {
        if batch.jobs.is_empty() {
            return None;
        }
        if batch.leased_at.elapsed() < self.config.lease / 3 {
            return Some(batch);
        }
        let renewed_at = Instant::now();
        let ids: Vec<&str> = batch.jobs.iter().map(|r| r.id.as_str()).collect();
        let held = match store.renew(&ids, self.config.lease) {
            Ok(held) => held,
            Err(err) => {
                (self.log)(&format!(
                    "Cannot renew the lease of {} jobs: {err}; leaving them to whichever scheduler takes them next",
                    batch.jobs.len()
                ));
                return None;
            }
        };
        let before = batch.jobs.len();
        let mut held = held.into_iter();
        batch.jobs.retain(|_| held.next().unwrap_or(false));
        if batch.jobs.len() < before {
            (self.log)(&format!(
                "Dropped {} of {before} jobs: their lease ran out and another scheduler took them",
                before - batch.jobs.len()
            ));
        }
        batch.leased_at = renewed_at;
        (!batch.jobs.is_empty()).then_some(batch)
    }

    /// Reads the answers of a batch already written; on a connection error, submits it again
    /// (on this or the next server) until a server has it.
    fn finish(&mut self, store: &mut Schedule, batch: Batch) {
        match self.servers.receive(&batch.jobs) {
            Ok(answers) => self.record(store, &batch.jobs, answers),
            Err(err) => {
                // Unknown which were accepted: submit them all again (the accepted ones
                // coalesce on their unique key while queued).
                (self.log)(&format!("Lost the job server's answers: {err}; submitting the batch again"));
                self.submit(store, batch);
            }
        }
    }

    /// Submits `batch` in chunks, waiting for each chunk's answers, retrying with backoff until
    /// they are in, we are asked to stop, or another scheduler took the jobs over (what is left
    /// stays leased, for another scheduler). Before each attempt the leases are checked.
    fn submit(&mut self, store: &mut Schedule, batch: Batch) {
        let mut rest = Some(batch);
        while let Some(batch) = rest.take() {
            let Some(mut batch) = self.hold(store, batch) else { return };
            let chunk: Vec<Record> = batch.jobs.drain(..CHUNK.min(batch.jobs.len())).collect();
            match self.servers.send(&chunk).and_then(|()| self.servers.receive(&chunk)) {
                Ok(answers) => {
                    self.record(store, &chunk, answers);
                    if !batch.jobs.is_empty() {
                        rest = Some(batch);
                    }
                }
                Err(err) => {
                    (self.log)(&format!("Cannot submit to a job server: {err}; retrying in {:?}", self.backoff.peek()));
                    if (self.stop)() {
                        return;
                    }
                    self.pause_within_lease();
                    batch.jobs.splice(0..0, chunk);
                    rest = Some(batch);
                }
            }
        }
    }

    /// Notes what the server said about each job: accepted, refused for now (tried on the
    /// other servers, then scheduled again a little later), or refused for good (dead set).
    fn record(&mut self, store: &mut Schedule, jobs: &[Record], answers: Vec<Option<String>>) {
        self.backoff.reset();
        let mut later = Vec::new();
        for (record, refused) in jobs.iter().zip(answers) {
            match refused {
                None => self.accepted_one(record),
                Some(why) if can_pass(&why) => later.push((record.clone(), why)),
                Some(why) => {
                    self.bury(store, &record.id, &record.encode(), &format!("refused by the job server: {why}"))
                }
            }
        }
        if later.is_empty() {
            self.refused.reset();
            return;
        }
        // Another server may have room: each of the others once, in turn.
        for _ in 1..self.servers.count {
            self.servers.next();
            let records: Vec<Record> = later.iter().map(|(r, _)| r.clone()).collect();
            let Ok(answers) = self.servers.send(&records).and_then(|()| self.servers.receive(&records)) else { break };
            let mut still = Vec::new();
            for ((record, _), refused) in later.into_iter().zip(answers) {
                match refused {
                    None => self.accepted_one(&record),
                    Some(why) if can_pass(&why) => still.push((record, why)),
                    Some(why) => {
                        self.bury(store, &record.id, &record.encode(), &format!("refused by the job server: {why}"))
                    }
                }
            }
            later = still;
            if later.is_empty() {
                return;
            }
        }
        let delay = self.refused.failed();
        let ids: Vec<String> = later.iter().map(|(r, _)| r.id.clone()).collect();
        (self.log)(&format!(
            "{} jobs refused by every job server for now ({}); due again in {delay:?}",
            ids.len(),
            later[0].1
        ));
        if let Err(err) = store.defer(&ids, delay) {
            (self.log)(&format!(
                "Cannot give back {} refused jobs: {err}; they are taken again after their lease",
                ids.len()
            ));
        }
    }

    fn accepted_one(&mut self, record: &Record) {
        if self.config.verbose {
            (self.log)(&format!("Job #{} moved for immediate execution", record.id));
        }
        self.stats.moved += 1;
        self.accepted.push(record.id.clone());
    }

    /// Moves a job this scheduler holds to the dead set, with why.
    fn bury(&mut self, store: &mut Schedule, id: &str, job: &str, why: &str) {
        match store.bury(id, job, why, true) {
            Ok(true) => {
                (self.log)(&format!("Job #{id} moved to the dead set: {why}"));
                self.stats.buried += 1;
            }
            Ok(false) => (self.log)(&format!("Job #{id} not buried: another scheduler took it over")),
            Err(e) => (self.log)(&format!("Cannot bury job #{id}: {e}; it will be taken again after its lease")),
        }
    }
}

/// Whether a job server's refusal (`CODE: message`) may pass later or on another server: all
/// but those about the job itself (too large, a command the server does not know).
fn can_pass(refusal: &str) -> bool {
    let code = refusal.split(':').next().unwrap_or_default();
    !(code == "ARGUMENT_TOO_LARGE" || code.starts_with("INVALID") || code.starts_with("UNKNOWN"))
}
