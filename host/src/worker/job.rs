//! Running one job and answering it: decode the workload, run the task (here or, under
//! `--atomic`, in a [`job_child`]), forward its progress as it comes, and
//! queue the answer: `WORK_COMPLETE`, or the failure's message as `WORK_WARNING` then `WORK_FAIL`.

use super::job_child::{self, ChildLimits, ForkError};
use super::{WorkerConfig, PING_FUNCTION};
use crate::gearman::conn::{Conn, ConnError};
use crate::gearman::packet::Packet;
use crate::plugins::{JobEvents, JobInfo, Registry};
use crate::workload;
use log::{debug, info, warn};

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
) -> Result<JobOutcome, ConnError> {
    let (task, outcome) = run(registry, config, conn, job)?;
    answer(conn, &job.handle, &task, outcome)
}

/// Runs one job; returns the task's resolved name and how the job ended.
fn run(
    registry: &Registry,
    config: &WorkerConfig,
    conn: &mut Conn,
    job: &Assigned,
) -> Result<(String, JobOutcome), ConnError> {
    let handle = String::from_utf8_lossy(&job.handle);
    if job.function == PING_FUNCTION {
        debug!("Handling job {handle} {PING_FUNCTION}");
        let pong = format!("pong from {}", config.client_id).into_bytes();
        return Ok((job.function.clone(), JobOutcome::Completed(pong)));
    }
    let decoded = match workload::decode(&job.function, &job.workload) {
        Ok(decoded) => decoded,
        Err(err) => return Ok((job.function.clone(), JobOutcome::Failed(err.to_string()))),
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
        warn!("Job {handle}: {message}");
        return Ok((task, JobOutcome::Failed(message)));
    }
    debug!("Handling job #{} {task} ({handle})", info.id);
    let hook_log = |line: &str| info!("{line}");
    if let Some(hooks) = &config.hooks {
        hooks.report_start(&info.id, &hook_log);
    }
    let args = decoded.args.to_string();
    let mut reporter = Reporter { conn: &mut *conn, handle: &job.handle, failed: None };
    let run = |events: &mut dyn JobEvents| {
        registry
            .dispatch(&task, &args, &info, events)
            .map(|output| output.as_bytes().to_vec())
            .map_err(|err| err.to_string())
    };
    let result = if config.atomic { in_child(run, config, &task, &mut reporter) } else { run(&mut reporter) };
    if let Some(err) = reporter.failed {
        return Err(err);
    }
    if let Some(hooks) = &config.hooks {
        hooks.report_end(&info.id, &job.function, &job.workload, &result, &hook_log);
    }
    Ok((task, result.into()))
}

/// Runs `run` in a [`job_child`] with the task's limits; the child's failure is the job's.
fn in_child(
    run: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    config: &WorkerConfig,
    task: &str,
    events: &mut dyn JobEvents,
) -> Result<Vec<u8>, String> {
    let limits =
        ChildLimits { timeout: config.timeouts.get(task).copied().or(config.timeout), memory: config.memlimit };
    job_child::run_in_child(run, limits, events).unwrap_or_else(|err| Err(child_failure(task, &err, config.memlimit)))
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
/// outcome back.
fn answer(conn: &mut Conn, handle: &[u8], task: &str, outcome: JobOutcome) -> Result<JobOutcome, ConnError> {
    let shown = String::from_utf8_lossy(handle);
    match outcome {
        JobOutcome::Completed(data) => {
            debug!("Job {shown} {task} completed");
            // The result moves into the packet and back out: a large one is never copied.
            let packet = Packet::WorkComplete { handle: handle.to_vec(), data };
            conn.queue_packet(&packet)?;
            let Packet::WorkComplete { data, .. } = packet else { unreachable!("built above") };
            Ok(JobOutcome::Completed(data))
        }
        JobOutcome::Failed(message) => {
            warn!("Job {shown} {task} failed: {message}");
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
