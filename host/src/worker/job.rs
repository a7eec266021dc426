//! Running one job and answering it: decode the workload, run the task (here or, under
//! `--atomic`, in a [`job_child`]), forward its progress as it comes, and
//! queue the answer: `WORK_COMPLETE`, or the failure's message as `WORK_WARNING` then `WORK_FAIL`.
//!
//! What a job took comes back as a [`JobReport`]: its task, how it ended, how long it ran and,
//! under `--atomic`, what its child cost ([`JobCost`]: CPU time and peak memory), which the
//! job's log line shows (`Job #id Task completed in 3.2 s, cpu 2.9 s, max rss 48 MiB`).

use super::job_child::{self, ChildLimits, ForkError, JobCost};
use super::sandbox;
use super::{WorkerConfig, PING_FUNCTION};
use crate::gearman::conn::{Conn, ConnError};
use crate::gearman::packet::Packet;
use crate::plugins::{JobEvents, JobInfo, Registry};
use crate::scoreboard::current as scoreboard;
use crate::workload;
use log::{debug, info, warn};
use std::time::{Duration, Instant};

/// A job a server assigned.
pub(super) struct Assigned {
    pub(super) handle: Vec<u8>,
    pub(super) function: String,
    pub(super) workload: Vec<u8>,
}

/// Sends what a task reports to the job's server as it happens.
struct Reporter<'a> {
    conn: &'a mut Conn,
    handle: &'a [u8],
    failed: Option<ConnError>,
}

impl Reporter<'_> {
    fn send(&mut self, packet: Packet) {
        if self.failed.is_none() {
            if let Err(err) = self.conn.write_packet(&packet) {
                self.failed = Some(err);
            }
        }
    }
}

impl JobEvents for Reporter<'_> {
    fn status(&mut self, numerator: u64, denominator: u64) {
        self.send(Packet::WorkStatus { handle: self.handle.to_vec(), numerator, denominator });
    }
    fn data(&mut self, data: &[u8]) {
        self.send(Packet::WorkData { handle: self.handle.to_vec(), data: data.to_vec() });
    }
    fn warning(&mut self, data: &[u8]) {
        self.send(Packet::WorkWarning { handle: self.handle.to_vec(), data: data.to_vec() });
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The task returned this result.
    Completed(Vec<u8>),
    /// The job failed with this message (the task's error, a bad workload, a dead child).
    Failed(String),
}

impl From<Result<Vec<u8>, String>> for JobOutcome {
    fn from(result: Result<Vec<u8>, String>) -> Self {
        match result {
            Ok(data) => JobOutcome::Completed(data),
            Err(message) => JobOutcome::Failed(message),
        }
    }
}

/// What one job took, once answered: for the worker's counters, its log line and the
/// scoreboard (`SlotWriter::done(&report.task, report.elapsed.as_secs_f64(), failure,
/// report.cost.map(|c| c.as_pair()))`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// The task's resolved name (`Hello::run`), or the function when the job named none.
    pub task: String,
    /// The job's id (`#id` in the log), when its workload was read.
    pub id: Option<String>,
    /// How it ended.
    pub outcome: JobOutcome,
    /// How long it ran, from the workload decoded to the answer queued.
    pub elapsed: Duration,
    /// Under `--atomic`, what its child cost; `None` when it ran in the worker.
    pub cost: Option<JobCost>,
}

/// Runs one job and queues its answer on `conn` (it goes out with the next `GRAB_JOB_UNIQ`,
/// in one write).
///
/// # Errors
/// When the connection fails while the job reports progress or its answer is queued.
pub(super) fn work(
    registry: &Registry,
    config: &WorkerConfig,
    conn: &mut Conn,
    job: &Assigned,
) -> Result<JobReport, ConnError> {
    let started = Instant::now();
    let ran = run(registry, config, conn, job)?;
    let took = Took { elapsed: started.elapsed(), cost: ran.cost };
    let shown = Shown { id: ran.id.as_deref(), handle: &job.handle, task: &ran.task };
    let outcome = answer(conn, &job.handle, &shown, &took, ran.outcome)?;
    Ok(JobReport { task: ran.task, id: ran.id, outcome, elapsed: took.elapsed, cost: took.cost })
}

/// How the log names a job: `#id (handle) Task`. Written only when a line is logged: under
/// `--atomic` every heap page the worker writes after a fork is a page copied.
struct Shown<'a> {
    id: Option<&'a str>,
    handle: &'a [u8],
    task: &'a str,
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handle = String::from_utf8_lossy(self.handle);
        match self.id {
            Some(id) => write!(f, "#{id} ({handle}) {}", self.task),
            None => write!(f, "{handle} {}", self.task),
        }
    }
}

/// How long a job ran and what its child cost, as its log line says it.
struct Took {
    elapsed: Duration,
    cost: Option<JobCost>,
}

impl std::fmt::Display for Took {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "in {:.2} s", self.elapsed.as_secs_f64())?;
        match &self.cost {
            Some(cost) => write!(f, ", {cost}"),
            None => Ok(()),
        }
    }
}

/// A job run and not answered yet.
struct Ran {
    task: String,
    id: Option<String>,
    outcome: JobOutcome,
    cost: Option<JobCost>,
}

/// Runs one job; returns the task's resolved name and how the job ended. The scoreboard hears
/// of it (busy, then done with what the child cost; a failure goes into its ring).
fn run(registry: &Registry, config: &WorkerConfig, conn: &mut Conn, job: &Assigned) -> Result<Ran, ConnError> {
    let handle = String::from_utf8_lossy(&job.handle);
    let plain = |outcome| Ran { task: job.function.clone(), id: None, outcome, cost: None };
    if job.function == PING_FUNCTION {
        debug!("Handling job {handle} {PING_FUNCTION}");
        let pong = format!("pong from {}", config.client_id).into_bytes();
        return Ok(plain(JobOutcome::Completed(pong)));
    }
    let decoded = match workload::decode(&job.function, &job.workload) {
        Ok(decoded) => decoded,
        Err(err) => {
            let message = err.to_string();
            scoreboard::failure(&job.function, "", &handle, conn.server(), &message, None);
            return Ok(plain(JobOutcome::Failed(message)));
        }
    };
    let info = JobInfo {
        id: decoded.id.unwrap_or_else(crate::job_id::generate),
        environment: decoded.env.unwrap_or_else(|| config.environment.clone()),
        env_vars: decoded.env_vars,
    };
    let task = registry.resolve(&decoded.task);
    if let Some(pattern) = config.selection.kept_from(&task) {
        // li3_gearman's envelope reaches the default pool whatever task it names: a task a pool
        // keeps to itself (its `atomic`, limits, workers) must not run here instead.
        let message = format!(
            "task {task} is kept by a worker pool (\"{pattern}\" in its tasks) and li3_gearman's \
             compatibility function reaches only the default pool: submit the job to function {task}"
        );
        scoreboard::failure(&task, &info.id, &handle, conn.server(), &message, None);
        return Ok(Ran { task, id: Some(info.id), outcome: JobOutcome::Failed(message), cost: None });
    }
    debug!("Handling job #{} {task} ({handle})", info.id);
    let started = Instant::now();
    scoreboard::busy(&task, &info.id, &handle, conn.server());
    let hook_log = |line: &str| info!("{line}");
    if let Some(hooks) = &config.hooks {
        hooks.report_start(&info.id, &hook_log);
    }
    let args = decoded.args.to_string();
    let mut reporter = Reporter { conn: &mut *conn, handle: &job.handle, failed: None };
    // Looked up here, before an `--atomic` fork: the child only calls the task.
    let prepared = registry.prepare(&task);
    let run = |events: &mut dyn JobEvents| {
        prepared.run(&args, &info, events).map(|output| output.as_bytes().to_vec()).map_err(|err| err.to_string())
    };
    let (result, cost) = if config.atomic {
        in_child(run, config, &task, &mut reporter)
    } else {
        (capped(&task, run(&mut reporter)), None)
    };
    let lost = reporter.failed;
    let failure = result.as_ref().err().map(String::as_str);
    scoreboard::done(&task, started.elapsed().as_secs_f64(), failure, cost.as_ref().map(JobCost::as_pair));
    if let Some(message) = failure {
        scoreboard::failure(&task, &info.id, &handle, conn.server(), message, None);
    }
    if let Some(err) = lost {
        return Err(err);
    }
    if let Some(hooks) = &config.hooks {
        hooks.report_end(&info.id, &job.function, &job.workload, &result, &hook_log);
    }
    Ok(Ran { task, id: Some(info.id), outcome: result.into(), cost })
}

/// An in-process task's result, failed when one Gearman packet cannot carry it (as the job
/// child's pipe caps it under `--atomic`): sent as it is, the packet would reach the job server
/// and be refused by the client, which drops its connection and loses the result.
fn capped(task: &str, result: Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
    match result {
        Ok(bytes) if bytes.len() > job_child::MAX_FRAME => Err(format!(
            "task {task} returned {} bytes, more than the {} MiB a Gearman packet can carry; the job failed, \
             nothing was truncated",
            bytes.len(),
            crate::gearman::packet::DEFAULT_MAX_BODY >> 20
        )),
        result => result,
    }
}

/// Runs `run` in a [`job_child`] with the task's limits; the child's failure is the job's
/// (its message says what the child cost until then).
fn in_child(
    run: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    config: &WorkerConfig,
    task: &str,
    events: &mut dyn JobEvents,
) -> (Result<Vec<u8>, String>, Option<JobCost>) {
    let limits = ChildLimits {
        timeout: config.timeouts.get(task).copied().or(config.timeout),
        memory: config.memlimit,
        cpu: config.cpu_limits.get(task).copied().or(config.cpu_limit),
    };
    let sandbox = sandbox::for_task(task);
    let ran = job_child::run_in_child(run, limits, sandbox, events);
    let result = ran.outcome.unwrap_or_else(|err| {
        let message = child_failure(task, &err, config.memlimit);
        Err(match ran.cost {
            Some(cost) => format!("{message} ({cost})"),
            None => message,
        })
    });
    let result = match (result, sandbox) {
        (Err(message), Some(sandbox)) if sandbox::looks_refused(&message) => {
            Err(format!("{message} (permission denied by the task's sandbox: it may {})", sandbox.rules))
        }
        (result, _) => result,
    };
    (result, ran.cost)
}

/// The message of a job whose child failed.
fn child_failure(task: &str, err: &ForkError, memlimit: Option<u64>) -> String {
    match (err, memlimit) {
        (ForkError::MultiThreaded(_) | ForkError::Os(_), _) => format!("task {task} cannot run: {err}"),
        (ForkError::Signaled { signal: nix::sys::signal::Signal::SIGABRT, .. }, Some(limit)) => {
            format!("task {task} {err} (an allocation past the memory limit of {} MiB aborts)", limit >> 20)
        }
        _ => format!("task {task} {err}"),
    }
}

/// Queues the answer to a job, `WORK_COMPLETE` with its result or its failure, and gives the
/// outcome back. `job` is how the log names it (`#id (handle) Task`).
fn answer(
    conn: &mut Conn,
    handle: &[u8],
    job: &Shown<'_>,
    took: &Took,
    outcome: JobOutcome,
) -> Result<JobOutcome, ConnError> {
    match outcome {
        JobOutcome::Completed(data) => {
            debug!("Job {job} completed {took}");
            // The result moves into the packet and back out: a large one is never copied.
            let packet = Packet::WorkComplete { handle: handle.to_vec(), data };
            conn.queue_packet(&packet)?;
            let Packet::WorkComplete { data, .. } = packet else { unreachable!("built above") };
            Ok(JobOutcome::Completed(data))
        }
        JobOutcome::Failed(message) => {
            warn!("Job {job} failed {took}: {message}");
            // Not WORK_EXCEPTION: gearmand passes that only to clients that asked for
            // exceptions and relays it to the others as a `WORK_FAIL handle\0` that stock
            // clients cannot match (the gearman CLI waits forever). The message as a warning,
            // then a plain WORK_FAIL, reaches every client; li3g's client reads the warning
            // just before the WORK_FAIL as the failure's message.
            conn.queue_packet(&Packet::WorkWarning { handle: handle.to_vec(), data: message.as_bytes().to_vec() })?;
            conn.queue_packet(&Packet::WorkFail { handle: handle.to_vec() })?;
            Ok(JobOutcome::Failed(message))
        }
    }
}
