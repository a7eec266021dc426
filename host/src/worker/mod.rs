//! The Gearman worker: takes jobs from every configured job server and runs them in plugins.
//!
//! One worker is one single-threaded process holding one non-blocking connection per server,
//! all watched by one `poll(2)` together with the signal wake-up pipe. It registers every task
//! its [`selection::Selection`] selects (every loaded task unless worker pools are configured)
//! (`CAN_DO`; a class whose `run` exists is also registered by its bare name, since `Hello`
//! means `Hello::run`), the built-in [`PING_FUNCTION`] and li3_gearman's
//! [`COMPAT_FUNCTION`](crate::workload::COMPAT_FUNCTION), then loops:
//!
//! 1. run at most one job that a server assigned, taking servers in turn (round robin), and
//!    queue its answer (`WORK_COMPLETE`) with the next `GRAB_JOB_UNIQ` for that server;
//! 2. ask every server that is free for a job (`GRAB_JOB_UNIQ`), at most one request
//!    outstanding per server; one `write(2)` per server for all it is owed;
//! 3. `poll(2)` every connection (without waiting while a job is already assigned) and read
//!    each readable one once; decode every whole packet: `NO_JOB` means `PRE_SLEEP` and wait for
//!    `NOOP`, `NOOP` wakes a sleeping server, `JOB_ASSIGN*` is a job held for step 1.
//!
//! So a job on an idle server waits for at most one job per other server, whatever those
//! hold; nothing ever blocks on one server (a partial packet, a silent or flooding server only
//! costs its own connection); a server owes each answer and each started packet within
//! [`ANSWER_DEADLINE`], or it is dropped and reconnected; and a stop signal ends the wait at
//! once (between jobs: the job in hand always finishes). A server that goes away is reconnected
//! with exponential backoff (100 ms to 30 s) and registered again.
//!
//! In the steady state a job costs three system calls: one `write` (the answer and the next
//! grab), one `poll`, one `read`; with a single server two, as its socket's reads block (for at
//! most [`STOP_CHECK`], so a signal that lands just before a read is seen within that) and
//! need no `poll`.
//!
//! A job's progress and partial data go out as `WORK_STATUS`/`WORK_DATA`/`WORK_WARNING` while it
//! runs; its result as `WORK_COMPLETE`, its failure as `WORK_WARNING` with the message followed by
//! a plain `WORK_FAIL`, a form every Gearman client reads.
//!
//! [`serve`] is a worker process's whole body: load the plugins, run, say how it went.
//!
//! - [`startup`]: [`serve`], the plugins loaded and their warnings.
//! - [`servers`]: the job servers, each one's state, the loop over them ([`run`]).
//! - [`job`]: running one job and answering it (where a failure goes back to the client).
//! - [`job_child`]: running one job in a forked child (`--atomic`).
//! - [`job_cost`]: what a job child cost (CPU time, peak memory: `getrusage`, `wait4`).
//! - `job_frames`: the frame protocol on a job child's pipe.
//! - [`memory`]: the `/proc` memory probe behind `--memlimit`.
//! - [`sandbox`]: the Landlock sandbox a task's jobs run in.
//! - [`selection`]: which tasks a worker registers (worker pools).

pub mod job;
pub mod job_child;
pub mod job_cost;
mod job_frames;
pub mod memory;
pub mod sandbox;
pub mod selection;
pub mod servers;
pub mod startup;

pub use job::{JobOutcome, JobReport};
pub use job_child::JobCost;
pub use memory::resident_memory;
pub use servers::run;
pub use startup::{serve, unclaimed_patterns, unknown_tasks, unused_plugin_settings};

use crate::gearman::conn::ServerAddr;
use std::time::Duration;

/// The built-in task every worker answers: `li3g-host ping` submits it.
pub const PING_FUNCTION: &str = "li3g::ping";

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The job servers.
    pub servers: Vec<ServerAddr>,
    /// The environment name tasks see.
    pub environment: String,
    /// `SET_CLIENT_ID`, shown by `gearadmin --workers` (`host:pid` by default).
    pub client_id: String,
    /// Per-task timeouts, registered with `CAN_DO_TIMEOUT` (the server then gives the job to
    /// another worker when one runs past it; killing the runaway is `--atomic`'s job).
    pub timeouts: std::collections::BTreeMap<String, Duration>,
    /// Run every job in a freshly forked child (`--atomic`).
    pub atomic: bool,
    /// The timeout of tasks without one of their own. Under `atomic`, a job past its timeout
    /// is killed and failed.
    pub timeout: Option<Duration>,
    /// Per-task CPU limits (`cpu_limit` in the configuration): under `atomic`, the job
    /// child's `RLIMIT_CPU`.
    pub cpu_limits: std::collections::BTreeMap<String, Duration>,
    /// The CPU limit of tasks without one of their own (`--cpu-limit`); under `atomic` only.
    pub cpu_limit: Option<Duration>,
    /// Memory limit in bytes: under `atomic`, the job child's `RLIMIT_DATA`; otherwise the
    /// worker ends after a job that leaves its resident memory above it (to be replaced).
    pub memlimit: Option<u64>,
    /// The tasks' sandboxes: under `atomic` each job child's, else the default for the whole
    /// worker once its plugins and states are built.
    pub sandbox: sandbox::SandboxConfig,
    /// Stop after this many jobs (`None`: never).
    pub max_jobs: Option<u64>,
    /// `work --max-age` (or its pool's `max_age`): once this passes the worker ends after the
    /// job in hand, to be replaced (exit code 75). Under `start` the supervisor recycles
    /// workers itself (SIGUSR2), so this is `None` there.
    pub recycle_at: Option<std::time::Instant>,
    /// The task names the configuration sets options for: those no loaded plugin has are
    /// reported, since a typo there would otherwise go unseen.
    pub configured_tasks: Vec<String>,
    /// Each plugin's settings, for the plugins' state constructors.
    pub plugin_settings: crate::plugins::PluginSettings,
    /// Where log lines go.
    pub log: crate::log::Log,
    /// Job status and retries in Redis, when the configuration names Redis.
    pub hooks: Option<crate::scheduler::job_hooks::JobHooks>,
    /// The tasks it registers.
    pub selection: selection::Selection,
    /// Its pool's name and task patterns, when it belongs to a configured pool: a pattern that
    /// claims no loaded task is reported, as unknown task keys are.
    pub pool: Option<(String, Vec<selection::TaskPattern>)>,
}

/// How often a sleeping worker looks at its stop flag when nothing wakes it.
///
/// (Public for the docs: the longest a stop signal can wait.)
pub const STOP_CHECK: Duration = Duration::from_millis(500);
/// How long a server may take to answer a `GRAB_JOB_UNIQ`, or to finish a packet it started.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// What the worker did, for the caller's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Whether the worker stopped because its memory passed the limit.
    pub over_memory: bool,
}
