//! The li3g client API: run a task by name from Rust, as li3_gearman's `Gearman::run()` did
//! from PHP, with scheduling (`--in`, `--at`) and retries through Redis. The CLI's `run` and
//! `ping` commands use it. It speaks Gearman through [`GearmanClient`](crate::gearman::GearmanClient),
//! the protocol-level client (submit, status, failover between servers).
//!
//! ```no_run
//! use li3g_client::{Client, RunOptions, Outcome};
//! use serde_json::json;
//!
//! let mut client = Client::new(vec!["127.0.0.1:4730".parse().unwrap()]);
//! // Background by default: returns once a job server has the job.
//! let queued = client.run("Hello::say", &[json!("Mariano")], &RunOptions::default(), &mut |_| {})?;
//! // Synchronous: returns the task's result, or its failure message as an error.
//! let sync = RunOptions { background: false, ..RunOptions::default() };
//! if let Outcome::Completed { result, .. } = client.run("Hello::say", &[json!("Mariano")], &sync, &mut |_| {})? {
//!     assert_eq!(result, b"Hello Mariano");
//! }
//! # Ok::<(), li3g_client::RunError>(())
//! ```
//!
//! The job goes out in li3g's wire format ([`crate::workload`]): the function is the task's
//! canonical name, the workload the envelope `{"args", "id", "env"}`.

use crate::config::{ConfigError, Target};
use crate::gearman::{self as client, ClientError, JobEvent, JobHandle, Submit};
use crate::retry_policy::Retries;
use li3g_protocol::conn::ServerAddr;
use li3g_protocol::packet::Priority;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The longest unique key that works. gearmand 1.1.20 refuses keys over 64 bytes and, as seen
/// here, accepts 64-byte keys but never merges jobs on them; 63 bytes merge.
pub const MAX_UNIQUE: usize = 63;

/// The name a job name dispatches to: a leading `\` is dropped (li3_gearman wrote
/// `\app\tasks\Hello`), and a class alone means its `run` method. The same rule as the
/// plugin API's `dispatch::canonical_task_name` (the worker's side; a test in li3g-host checks
/// that the two agree), so that the function a job is sent to is the one a worker registered.
pub fn canonical_task_name(name: &str) -> String {
    let name = name.strip_prefix('\\').unwrap_or(name);
    if name.contains("::") {
        name.to_string()
    } else {
        format!("{name}::run")
    }
}

/// The unique key of job `id` at retry `retry`: the id, with `:<retry>` after a retry, so that
/// a job handed over twice coalesces in gearmand while a retry never merges into the run that
/// failed.
pub fn unique_for(id: &str, retry: u32) -> String {
    if retry == 0 {
        id.to_string()
    } else {
        format!("{id}:{retry}")
    }
}

/// A job to hold until its time: what a [`JobStore`] keeps (li3g-host's scheduler stores it in
/// Redis as its `Record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledJob {
    /// The job id.
    pub id: String,
    /// The Gearman function.
    pub function: String,
    /// The unique key it will be submitted with (never empty).
    pub unique: String,
    /// The workload, as it will be sent.
    pub workload: String,
    /// The priority.
    pub priority: Priority,
}

/// Why a [`JobStore`] could not keep a job.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where scheduled jobs wait until they are due (li3g-host's Redis schedule, which its
/// scheduler process moves to the job servers).
pub trait JobStore: Send {
    /// Keeps `job` until `at`.
    ///
    /// # Errors
    /// Why it was not kept; nothing was scheduled then.
    fn schedule(&mut self, job: &ScheduledJob, at: SystemTime) -> Result<(), StoreError>;

    /// Job `id`'s status as li3g's scheduler and workers record it (`pending`, `running`,
    /// `finished`, `failed: <message>`, `cancelled`, `dead: <message>`), `None` when none is
    /// recorded (unknown, expired, or job status off).
    ///
    /// # Errors
    /// Why it could not be read; by default, that this store keeps no status.
    fn status(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        let _ = id;
        Err("this client's store keeps no job status".into())
    }
}

/// How jobs are made unique, i.e. when the job server merges them into one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Unique {
    /// Never merged: an empty unique key for a synchronous job; for a background job, its job
    /// id. gearmand's persistent queues (libsqlite3 at least, in 1.1.20) store background jobs
    /// keyed by (unique, function), so background jobs with an empty key overwrite one another
    /// there and all but the last are lost when gearmand restarts.
    #[default]
    None,
    /// Merged with every queued or running job of the same task and key.
    Key(String),
    /// Merged with every queued or running job of the same task and arguments: the key is the
    /// first 128 bits of a SHA-256 of the task name and the JSON arguments, in hex.
    FromArgs,
}

/// How to run a job. The defaults are li3_gearman's: background, normal priority.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Queue and return (true), or wait for the result (false).
    pub background: bool,
    /// The job's priority.
    pub priority: Priority,
    /// Whether and how the job may be merged with equal ones.
    pub unique: Unique,
    /// The job id the task sees; a random one when `None`.
    pub id: Option<String>,
    /// The environment the task sees; the worker's when `None`.
    pub environment: Option<String>,
    /// For a synchronous job: how long to wait for the result.
    pub timeout: Option<Duration>,
    /// Run it at this time, not now: the job waits in Redis until a scheduler moves it, or,
    /// with no Redis configured, in the job server (`SUBMIT_JOB_EPOCH`, whole seconds; li3g's
    /// embedded server runs it on time) (background jobs only; a time in the past submits it
    /// at once).
    pub schedule: Option<SystemTime>,
    /// When the task fails, run it again per this policy (background jobs only).
    pub retries: Option<Retries>,
    /// Send li3_gearman's envelope to its function instead of li3g's wire format, with this
    /// `configName`: for a task still served by li3_gearman's PHP workers. See
    /// [`RunOptions::li3_gearman`].
    pub li3_gearman: Option<String>,
}

impl RunOptions {
    /// These options for a task served by li3_gearman's PHP workers: the job goes to
    /// `li3_gearman\extensions\command\Gearmand::run` with the envelope its PHP client sends
    /// (`task` `\app\tasks\Report::build`, `configName` = `config_name`, `env` with the
    /// environment), so the original's worker runs the PHP task class. li3g's workers serve
    /// that function too.
    pub fn li3_gearman(mut self, config_name: &str) -> RunOptions {
        self.li3_gearman = Some(config_name.to_string());
        self
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            background: true,
            priority: Priority::Normal,
            unique: Unique::None,
            id: None,
            environment: None,
            timeout: None,
            schedule: None,
            retries: None,
            li3_gearman: None,
        }
    }
}

/// What running a job gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A background job a job server accepted.
    Queued {
        /// The job id.
        id: String,
        /// The job server that holds it and its handle there, for status queries.
        handle: JobHandle,
    },
    /// A job waiting in Redis for its time.
    Scheduled {
        /// The job id.
        id: String,
        /// When it is due.
        at: SystemTime,
    },
    /// A synchronous job's result: a string result as its bytes, anything else as JSON.
    Completed {
        /// The job id.
        id: String,
        /// The result.
        result: Vec<u8>,
    },
}

/// Why a job could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The unique key is longer than gearmand accepts.
    #[error("unique key of {0} bytes is longer than {MAX_UNIQUE}")]
    UniqueTooLong(usize),
    /// Submitting or waiting failed, or the task failed ([`ClientError::Exception`] carries
    /// the task's message).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Scheduling or retries asked of a synchronous job.
    #[error("only background jobs can be {0}")]
    NotBackground(&'static str),
    /// The configured Redis cannot be used for schedules (a wrong URL, or no store given).
    #[error("the configured redis URL: {0}")]
    RedisUrl(String),
    /// Scheduling failed in the store (nothing was scheduled).
    #[error("cannot schedule the job: {0}")]
    Schedule(StoreError),
    /// The arguments do not serialize as JSON (nothing was sent).
    #[error("the arguments are not JSON: {0}")]
    Arguments(String),
    /// The task succeeded but its result is not of the type asked for.
    #[error("the result of {task} is not of the type asked for: {message}")]
    Result {
        /// The task.
        task: String,
        /// serde's message.
        message: String,
    },
    /// A task name, unique key or job id a Gearman packet cannot carry (a NUL byte): nothing
    /// was sent.
    #[error("{0}")]
    Invalid(String),
}

impl RunError {
    /// The task's own failure message, when the task ran and failed (not when the job could
    /// not be run): `WORK_EXCEPTION`'s data, or the warning before `WORK_FAIL` ("" for a
    /// `WORK_FAIL` without one).
    pub fn task_failure(&self) -> Option<&str> {
        match self {
            RunError::Client(ClientError::Exception(message)) => Some(message),
            RunError::Client(ClientError::Failed) => Some(""),
            _ => None,
        }
    }
}

/// A client of one or more job servers, running li3g tasks.
pub struct Client {
    gearman: client::GearmanClient,
    /// The configuration's name: li3_gearman's `configName`.
    name: String,
    /// The environment tasks see unless a job says otherwise.
    environment: Option<String>,
    /// Where scheduled jobs go (the configured Redis); `Err` says why the configured one
    /// cannot be used; `None`: the job server's epoch (`SUBMIT_JOB_EPOCH`).
    store: Option<Result<Box<dyn JobStore>, String>>,
}

impl Client {
    /// A client of `servers` (see [`client::GearmanClient`] for failover).
    pub fn new(servers: Vec<ServerAddr>) -> Client {
        Client::with(client::GearmanClient::new(servers))
    }

    /// Schedules jobs in `store` (see [`RunOptions::schedule`]).
    pub fn with_store(mut self, store: Box<dyn JobStore>) -> Client {
        self.store = Some(Ok(store));
        self
    }

    /// Refuses scheduled jobs with `why`: the configuration names a store this client cannot
    /// use, and the job server's epoch would bypass it.
    pub fn without_store(mut self, why: String) -> Client {
        self.store = Some(Err(why));
        self
    }

    /// A client over a configured protocol-level client (start server, timeouts).
    pub fn with(gearman: client::GearmanClient) -> Client {
        Client { gearman, name: crate::config::DEFAULT_NAME.into(), environment: None, store: None }
    }

    /// A client of named configuration `name` (`"default"`), read as li3g-host reads it with no
    /// flags ([`config::from_env`](crate::config::from_env): `LI3G_CONFIG`, `LI3G_ENVIRONMENT`,
    /// `LI3G_SERVERS`, else `li3g.toml`, then `/etc/li3g/li3g.toml`).
    ///
    /// Its TLS settings are installed for the process's `tls://` connections
    /// ([`config::install_tls`](crate::config::install_tls)).
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read, the name is not in it, or its TLS files
    /// cannot be used.
    pub fn from_config(name: &str) -> Result<Client, ConfigError> {
        let target = crate::config::from_env(name)?;
        crate::config::install_tls(&target)?;
        Ok(Client::from_target(&target))
    }

    /// A client of a configuration already read. When it names Redis, scheduled jobs wait
    /// there (`redis::RedisStore`, with the configuration's `[NAME.scheduler]` prefix
    /// and status settings) with the `redis` feature; without it they are refused until
    /// [`with_store`](Client::with_store) gives a store.
    pub fn from_target(target: &Target) -> Client {
        let client = Client {
            name: target.name.clone(),
            environment: target.environment.clone(),
            ..Client::new(target.servers.clone())
        };
        match store_for(target) {
            None => client,
            Some(Ok(store)) => client.with_store(store),
            Some(Err(why)) => client.without_store(why),
        }
    }

    /// Job `id`'s status, read from the client's store (see [`JobStore::status`]): with the
    /// `redis` feature and a configuration naming Redis, the status key li3g's scheduler and
    /// workers write (and li3_gearman's `getStatus` reads).
    ///
    /// # Errors
    /// [`RunError::Schedule`] when there is no store or it cannot be read.
    pub fn status(&mut self, id: &str) -> Result<Option<String>, RunError> {
        match &mut self.store {
            Some(Ok(store)) => store.status(id).map_err(RunError::Schedule),
            Some(Err(why)) => Err(RunError::Schedule(why.clone().into())),
            None => Err(RunError::Schedule("no Redis is configured: job status is kept there".into())),
        }
    }

    /// The configuration's name (`default` unless [`from_config`](Client::from_config) named another).
    pub fn config_name(&self) -> &str {
        &self.name
    }

    /// The environment the typed calls give tasks unless a job names one (the configuration's).
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// Sets the environment the typed calls give tasks.
    pub fn with_environment(mut self, environment: Option<String>) -> Client {
        self.environment = environment;
        self
    }

    /// Runs `task` with `args`; progress, data and warnings of a synchronous job go to
    /// `on_event` as they arrive.
    ///
    /// # Errors
    /// [`RunError`]: no server, a refused submission, a timeout, or the task's failure.
    pub fn run(
        &mut self,
        task: &str,
        args: &[Value],
        options: &RunOptions,
        on_event: &mut dyn FnMut(JobEvent<'_>),
    ) -> Result<Outcome, RunError> {
        let has_store = self.store.is_some();
        let Planned { id, step } = plan(task, args, options, has_store)?;
        match step {
            Step::Epoch { job, epoch, at } => {
                self.gearman.submit_at(&job, epoch)?;
                Ok(Outcome::Scheduled { id, at })
            }
            Step::Store { job, at } => {
                match self.store.as_mut().expect("planned for a store") {
                    Ok(store) => store.schedule(&job, at).map_err(RunError::Schedule)?,
                    Err(why) => return Err(RunError::RedisUrl(why.clone())),
                }
                Ok(Outcome::Scheduled { id, at })
            }
            Step::Submit { job, background: true } => {
                let handle = self.gearman.submit_background(&job)?;
                Ok(Outcome::Queued { id, handle })
            }
            Step::Submit { job, background: false } => {
                let (_, result) = self.gearman.submit_sync(&job, options.timeout, on_event)?;
                Ok(Outcome::Completed { id, result })
            }
        }
    }

    /// The protocol-level client, for status queries.
    pub fn gearman(&mut self) -> &mut client::GearmanClient {
        &mut self.gearman
    }
}

/// A job ready to go: its id and where it goes.
pub(crate) struct Planned {
    pub(crate) id: String,
    pub(crate) step: Step,
}

/// Where a planned job goes.
pub(crate) enum Step {
    /// To a job server now, in the background or not.
    Submit { job: Submit, background: bool },
    /// To a job server, to run at `epoch` (`SUBMIT_JOB_EPOCH`).
    Epoch { job: Submit, epoch: u64, at: SystemTime },
    /// To the job store until `at`.
    Store { job: ScheduledJob, at: SystemTime },
}

/// The function, workload and unique key of `task` with `args` per `options`, and where it
/// goes (`has_store`: whether scheduled jobs go to a store, else to the job server's epoch).
/// Everything that is not I/O in running a job, shared by the blocking and async clients.
///
/// # Errors
/// [`RunError`] for options that cannot go together or a key too long.
/// The store a configuration names: `None` without Redis; with Redis, the schedule (feature
/// `redis`), or why it cannot be used.
pub(crate) fn store_for(target: &Target) -> Option<Result<Box<dyn JobStore>, String>> {
    let url = target.redis.as_deref()?;
    #[cfg(feature = "redis")]
    {
        Some(match crate::redis::RedisStore::open(url, &target.scheduler) {
            Ok(store) => Ok(Box::new(store) as Box<dyn JobStore>),
            Err(err) => Err(format!("{}: {err}", target.redis_key)),
        })
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Some(Err(format!(
            "{} names Redis for scheduled jobs: build li3g-client with its `redis` feature, or give a store",
            target.redis_key
        )))
    }
}

pub(crate) fn plan(task: &str, args: &[Value], options: &RunOptions, has_store: bool) -> Result<Planned, RunError> {
    let args = Value::Array(args.to_vec());
    let id = options.id.clone().unwrap_or_else(crate::job_id::generate);
    let (function, mut workload) = match &options.li3_gearman {
        None => (canonical_task_name(task), crate::workload::encode(&args, &id, options.environment.as_deref())),
        Some(config_name) => {
            let envelope = crate::workload::encode_li3_gearman(
                task,
                &args,
                &id,
                options.environment.as_deref(),
                config_name,
                options.background,
                options.retries.as_ref(),
            );
            (crate::workload::COMPAT_FUNCTION.to_string(), envelope)
        }
    };
    // li3_gearman's envelope sends every task to one function: the task is part of the key,
    // or two tasks with the same arguments would be taken for one job.
    let keyed = match options.li3_gearman {
        None => function.clone(),
        Some(_) => format!("{function}\n{}", canonical_task_name(task)),
    };
    let unique = unique_key(&keyed, &args, &options.unique)?;
    // What goes into a packet's NUL-separated fields (the unique key, or the id in its place).
    for (what, value) in [("task name", &function), ("unique key", &unique), ("job id", &id)] {
        if value.contains('\0') {
            return Err(RunError::Invalid(format!(
                "the {what} {value:?} holds a NUL byte, which Gearman cannot carry"
            )));
        }
    }
    if !options.background && options.schedule.is_some() {
        return Err(RunError::NotBackground("scheduled"));
    }
    if !options.background && options.retries.is_some() {
        return Err(RunError::NotBackground("retried"));
    }
    if options.li3_gearman.is_none() && (options.schedule.is_some() || options.retries.is_some()) {
        workload = scheduled_envelope(&workload, options.retries.as_ref());
    }
    if let Some(at) = options.schedule.filter(|at| *at > SystemTime::now()) {
        let record = ScheduledJob {
            unique: if unique.is_empty() { unique_for(&id, 0) } else { unique },
            id: id.clone(),
            function,
            workload: String::from_utf8_lossy(&workload).into_owned(),
            priority: options.priority,
        };
        if !has_store {
            // No Redis: the job server keeps it (SUBMIT_JOB_EPOCH; the embedded server's
            // timer runs it on time). Rounded up: never early.
            let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let epoch = since.as_secs() + u64::from(since.subsec_nanos() > 0);
            let job = Submit {
                workload: record.workload.into_bytes(),
                function: record.function.into_bytes(),
                unique: if options.unique == Unique::None { Vec::new() } else { record.unique.into_bytes() },
                priority: options.priority,
            };
            return Ok(Planned { id, step: Step::Epoch { job, epoch, at } });
        }
        return Ok(Planned { id, step: Step::Store { job: record, at } });
    }
    // A background job's key is never empty: see `Unique::None`.
    let unique = if unique.is_empty() && options.background { unique_for(&id, 0) } else { unique };
    let job =
        Submit { workload, function: function.into_bytes(), unique: unique.into_bytes(), priority: options.priority };
    Ok(Planned { id, step: Step::Submit { job, background: options.background } })
}

/// The envelope of a scheduled or retried job: li3_gearman's `background`, `retry` and
/// `retries` added, which the worker reads when the job fails.
fn scheduled_envelope(workload: &[u8], retries: Option<&Retries>) -> Vec<u8> {
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(workload) else { return workload.to_vec() };
    envelope.insert("background".into(), Value::Bool(true));
    envelope.insert("retry".into(), Value::from(0));
    envelope.insert("retries".into(), retries.map(Retries::to_json).unwrap_or(Value::Array(vec![])));
    Value::Object(envelope).to_string().into_bytes()
}

/// The unique key a job is submitted with.
///
/// # Errors
/// [`RunError::UniqueTooLong`] for a key gearmand would refuse.
pub fn unique_key(function: &str, args: &Value, unique: &Unique) -> Result<String, RunError> {
    match unique {
        Unique::None => Ok(String::new()),
        Unique::Key(key) if key.len() > MAX_UNIQUE => Err(RunError::UniqueTooLong(key.len())),
        Unique::Key(key) => Ok(key.clone()),
        Unique::FromArgs => {
            let mut hash = Sha256::new();
            hash.update(function.as_bytes());
            hash.update([0]);
            hash.update(args.to_string().as_bytes());
            Ok(hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unique_keys() {
        let args = json!(["a", 1]);
        assert_eq!(unique_key("T::m", &args, &Unique::None).unwrap(), "");
        let derived = unique_key("T::m", &args, &Unique::FromArgs).unwrap();
        assert_eq!(derived.len(), 32);
        assert_eq!(derived, unique_key("T::m", &json!(["a", 1]), &Unique::FromArgs).unwrap());
        assert_ne!(derived, unique_key("T::m", &json!(["a", 2]), &Unique::FromArgs).unwrap());
        assert_ne!(derived, unique_key("T::n", &args, &Unique::FromArgs).unwrap());
        assert!(matches!(unique_key("T::m", &args, &Unique::Key("k".repeat(64))), Err(RunError::UniqueTooLong(64))));
    }

    /// Without the `redis` feature a configuration naming Redis refuses scheduled jobs (never
    /// the job server's epoch, which would bypass the schedule) and says how to get it; with
    /// it the store is the schedule (tests/integration/scheduler.rs runs that against Redis).
    #[test]
    fn a_configuration_naming_redis_gets_its_store_or_says_why_not() {
        let target = Target {
            redis: Some("redis://127.0.0.1:1/0".into()),
            ..crate::config::from_vars("default", |_| None).unwrap()
        };
        let store = store_for(&target).expect("a store, or why not");
        #[cfg(not(feature = "redis"))]
        assert!(store.err().unwrap().contains("`redis` feature"));
        #[cfg(feature = "redis")]
        assert!(store.is_ok());
        let mut client = Client::from_target(&target);
        let err = client.status("some-id").unwrap_err().to_string();
        assert!(err.contains("redis") || err.contains("Redis"), "{err}");
    }
}
