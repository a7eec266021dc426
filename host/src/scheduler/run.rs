//! The scheduler process's loop: take due jobs from Redis under a lease, submit them to a job
//! server pipelined, acknowledge them, and sleep until the next one is due.
//!
//! 1. [`Store::take`] moves up to `batch` due jobs (and jobs whose lease ran out because
//!    their scheduler died) under a lease, in one Lua script.
//! 2. Each is submitted as a background job with its id as the unique key: all
//!    `SUBMIT_JOB_BG` packets of a chunk are written at once, then all `JOB_CREATED` read.
//! 3. [`Store::ack`] removes what the server accepted. A crash anywhere before that leaves
//!    the jobs leased; another scheduler (or this one, restarted) takes them over once the
//!    lease runs out, and a job handed over twice coalesces in gearmand while it is queued.
//! 4. With nothing due it waits (see [`super::wake`]) until the next due time, at most
//!    [`IDLE`], or until a client wakes it by scheduling an earlier job.
//!
//! Redis or a job server unreachable: a log line, backoff (100 ms doubling to 5 s), and again;
//! the taken jobs stay in hand (and leased) until a server takes them. Single-threaded, no
//! runtime. It must not run tasks, nor decide retries (the worker does).

use super::record::Record;
use super::store::Store;
use super::wake::Wake;
use crate::gearman::conn::{Conn, ConnError, ServerAddr};
use crate::gearman::packet::{self, Magic, Packet};
use std::io::Write;
use std::time::Duration;

/// The longest sleep without looking at Redis (and at the stop flag).
pub const IDLE: Duration = Duration::from_millis(500);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Submissions written before their answers are read: keeps both sides' socket buffers from
/// filling while neither reads.
const CHUNK: usize = 256;

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
pub fn run(store: &mut Store, config: &SchedulerConfig, stop: &dyn Fn() -> bool, log: &dyn Fn(&str)) -> SchedulerStats {
    let mut wake = Wake::new(store.client(), store.keys().wake_channel());
    let mut servers = Servers { addrs: config.servers.clone(), conn: None, next: 0 };
    let mut stats = SchedulerStats::default();
    let mut backoff = MIN_BACKOFF;
    let mut redis_down = false;
    while !stop() {
        let taken = match store.take(config.lease, config.batch) {
            Ok(taken) => {
                if redis_down {
                    log("Redis is back");
                    redis_down = false;
                }
                backoff = MIN_BACKOFF;
                taken
            }
            Err(err) => {
                log(&format!("Cannot take due jobs: {err}; retrying in {backoff:?}"));
                redis_down = true;
                wake.wait(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if taken.jobs.is_empty() {
            let wait = match taken.next_ms {
                Some(next) => Duration::from_millis(u64::try_from(next - taken.now_ms).unwrap_or(0)).min(IDLE),
                None => IDLE,
            };
            if !wait.is_zero() {
                wake.wait(wait);
            }
            continue;
        }
        if config.stop_after_take {
            log(&format!("Took {} jobs; stopping before submitting them ({STOP_AFTER_TAKE_ENV})", taken.jobs.len()));
            // SAFETY: raising a signal at ourselves has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
        let mut jobs = Vec::with_capacity(taken.jobs.len());
        let mut done = Vec::new();
        for (id, text) in taken.jobs {
            match text.as_deref().map(Record::decode) {
                Some(Ok(record)) => jobs.push(record),
                Some(Err(err)) => {
                    log(&format!("Job #{id} cannot be read, moved to the dead set: {err}"));
                    if let Err(e) = store.bury(&id, text.as_deref().unwrap_or_default(), &err.to_string()) {
                        log(&format!("Cannot bury job #{id}: {e}; it will be taken again after its lease"));
                    }
                    stats.buried += 1;
                }
                None => done.push(id), // cancelled or finished meanwhile: just release the lease
            }
        }
        let mut start = 0;
        while start < jobs.len() {
            match servers.submit(&jobs[start..(start + CHUNK).min(jobs.len())]) {
                Ok(answers) => {
                    for (record, refused) in jobs[start..].iter().zip(answers) {
                        match refused {
                            None => {
                                if config.verbose {
                                    log(&format!("Job #{} moved for immediate execution", record.id));
                                }
                                stats.moved += 1;
                                done.push(record.id.clone());
                            }
                            Some(why) => {
                                log(&format!(
                                    "Job #{} refused by the job server, moved to the dead set: {why}",
                                    record.id
                                ));
                                let _ = store.bury(&record.id, &record.encode(), &why);
                                stats.buried += 1;
                            }
                        }
                    }
                    start = (start + CHUNK).min(jobs.len());
                    backoff = MIN_BACKOFF;
                }
                Err(err) => {
                    log(&format!("Cannot submit to a job server: {err}; retrying in {backoff:?}"));
                    if stop() {
                        break; // the rest stays leased: another scheduler takes it over
                    }
                    wake.wait(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        while let Err(err) = store.ack(&done) {
            // Unacknowledged jobs would be submitted again after their lease: try hard.
            log(&format!("Cannot acknowledge {} jobs: {err}; retrying in {backoff:?}", done.len()));
            if stop() {
                break;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    stats
}

/// The job servers, one connection at a time, failing over in turn.
struct Servers {
    addrs: Vec<ServerAddr>,
    conn: Option<Conn>,
    next: usize,
}

impl Servers {
    /// Submits `jobs` pipelined on one connection; per job, `None` when accepted or the
    /// server's refusal. A connection error means none of the rest is known to be accepted.
    fn submit(&mut self, jobs: &[Record]) -> Result<Vec<Option<String>>, ConnError> {
        if self.conn.is_none() {
            if self.addrs.is_empty() {
                return Err(ConnError::Closed { server: "(no job servers configured)".into() });
            }
            let addr = &self.addrs[self.next % self.addrs.len()];
            self.next += 1;
            let mut conn = Conn::connect(addr, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let result = submit_on(conn, jobs);
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

fn submit_on(conn: &mut Conn, jobs: &[Record]) -> Result<Vec<Option<String>>, ConnError> {
    let mut out = Vec::with_capacity(jobs.len() * 160);
    let mut answers = vec![None; jobs.len()];
    let mut expected = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let packet = Packet::SubmitJob {
            priority: job.priority.into(),
            background: true,
            function: job.function.as_bytes().to_vec(),
            unique: job.unique.as_bytes().to_vec(),
            workload: job.workload.as_bytes().to_vec(),
        };
        match packet::encode(Magic::Req, &packet, &mut out) {
            Ok(()) => expected.push(i),
            Err(err) => answers[i] = Some(err.to_string()),
        }
    }
    let server = conn.server().to_string();
    conn.stream().write_all(&out).map_err(|source| ConnError::Io { server, source })?;
    for i in expected {
        match conn.read_packet()? {
            Packet::JobCreated { .. } => {}
            Packet::Error { code, message } => {
                answers[i] = Some(format!("{}: {}", String::from_utf8_lossy(&code), String::from_utf8_lossy(&message)));
            }
            other => {
                return Err(ConnError::Closed { server: format!("{} (answered {:?})", conn.server(), other.kind()) })
            }
        }
    }
    Ok(answers)
}
