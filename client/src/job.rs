//! The typed API: [`Client::submit`] (background), [`Client::call`] (synchronous, the result
//! deserialized), and [`Client::job`], a builder for everything else (priority, unique key,
//! timeout, a time to run at, retries, progress, li3_gearman's envelope).
//!
//! Arguments are any `Serialize` value: a tuple or a sequence is the task's positional
//! arguments (`(42, "welcome")` is `[42, "welcome"]`), `()` is none, anything else is one
//! argument. Everything goes through [`Client::run`], so the typed calls keep its guarantees.

use crate::client::{Client, Outcome, RunError, RunOptions, Unique};
use crate::gearman::{JobEvent, JobHandle};
use crate::retry_policy::Retries;
use li3g_protocol::packet::Priority;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// A background job a job server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The job id (what the task sees as its id, and `li3g-host status ID` looks up).
    pub id: String,
    /// The server that holds it and its handle there.
    pub handle: JobHandle,
}

/// What submitting a background job gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// A job server has it.
    Queued(Queued),
    /// It waits for its time (in Redis, or in the job server when no Redis is configured and
    /// this is the job server's `SUBMIT_JOB_EPOCH`).
    Scheduled {
        /// The job id.
        id: String,
        /// When it is due.
        at: SystemTime,
    },
}

impl Submitted {
    /// The job id.
    pub fn id(&self) -> &str {
        match self {
            Submitted::Queued(queued) => &queued.id,
            Submitted::Scheduled { id, .. } => id,
        }
    }
}

/// The arguments as the task's positional arguments.
pub(crate) fn positional(args: impl Serialize) -> Result<Vec<Value>, RunError> {
    match serde_json::to_value(args).map_err(|err| RunError::Arguments(err.to_string()))? {
        Value::Array(args) => Ok(args),
        Value::Null => Ok(Vec::new()),
        one => Ok(vec![one]),
    }
}

/// A result as type `T`: JSON, or, when it is not JSON of that type, the text itself (a task
/// that returns a string sends its bytes, unquoted).
pub(crate) fn decode_result<T: DeserializeOwned>(task: &str, bytes: &[u8]) -> Result<T, RunError> {
    let json = match serde_json::from_slice::<T>(bytes) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_value::<T>(Value::String(text.to_string())),
        Err(_) => Err(json),
    }
    .map_err(|err| RunError::Result { task: task.to_string(), message: err.to_string() })
}

/// A synchronous job's event handler.
pub(crate) type OnEvent<'c> = Box<dyn FnMut(JobEvent<'_>) + Send + 'c>;

/// What a [`Job`] is run by: the blocking [`Client`] or, with the `tokio` feature, the
/// `AsyncClient`.
pub trait Runner {
    /// The configuration's name, li3_gearman's `configName`.
    fn config_name(&self) -> &str;
}

impl Runner for &mut Client {
    fn config_name(&self) -> &str {
        Client::config_name(self)
    }
}

/// A job to submit or call, with its options: made by [`Client::job`] (and `AsyncClient::job`).
#[must_use = "a job does nothing until submit() or call()"]
pub struct Job<'c, C: Runner> {
    pub(crate) client: C,
    pub(crate) task: String,
    pub(crate) args: Result<Vec<Value>, RunError>,
    pub(crate) options: RunOptions,
    pub(crate) on_event: Option<OnEvent<'c>>,
}

impl Client {
    /// Submits `task` with `args` in the background; returns once a job server has it.
    ///
    /// # Errors
    /// [`RunError`]: no server, a refused or unconfirmed submission
    /// ([`ClientError::MaybeQueued`](crate::gearman::ClientError::MaybeQueued)).
    pub fn submit(&mut self, task: &str, args: impl Serialize) -> Result<Queued, RunError> {
        match self.job(task, args).submit()? {
            Submitted::Queued(queued) => Ok(queued),
            Submitted::Scheduled { .. } => unreachable!("a job without a time is never scheduled"),
        }
    }

    /// Runs `task` with `args` and waits for its result, as a `T` (see [`Job::call`]).
    ///
    /// # Errors
    /// [`RunError`]; the task's failure is [`RunError::Client`] with
    /// [`ClientError::Exception`](crate::gearman::ClientError::Exception) carrying its message
    /// ([`RunError::task_failure`]).
    pub fn call<T: DeserializeOwned>(&mut self, task: &str, args: impl Serialize) -> Result<T, RunError> {
        self.job(task, args).call()
    }

    /// Submits background jobs `(task, args)`, pipelined (see
    /// [`GearmanClient::submit_many_background`](crate::gearman::GearmanClient::submit_many_background)):
    /// returns, per job in order, its id and handle, or why it was not created. Each job keeps
    /// the rules of [`submit`](Client::submit): its key is its id, and one that was sent but not
    /// confirmed is [`MaybeQueued`](crate::gearman::ClientError::MaybeQueued), not resent.
    pub fn submit_many<A: Serialize>(
        &mut self,
        jobs: impl IntoIterator<Item = (String, A)>,
    ) -> Vec<Result<Queued, RunError>> {
        let options = RunOptions { environment: self.environment().map(str::to_string), ..RunOptions::default() };
        let mut results: Vec<Option<Result<Queued, RunError>>> = Vec::new();
        let mut planned = Vec::new();
        for (task, args) in jobs {
            match positional(args).and_then(|args| crate::client::plan(&task, &args, &options, false)) {
                Ok(crate::client::Planned { id, step: crate::client::Step::Submit { job, .. } }) => {
                    planned.push((results.len(), id, job));
                    results.push(None);
                }
                Ok(_) => unreachable!("a job without a time is submitted"),
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let submits: Vec<_> = planned.iter().map(|(_, _, job)| job.clone()).collect();
        let handles = self.gearman().submit_many_background(&submits);
        for ((at, id, _), handle) in planned.into_iter().zip(handles) {
            results[at] = Some(handle.map(|handle| Queued { id, handle }).map_err(RunError::from));
        }
        results.into_iter().map(|r| r.expect("every job has its outcome")).collect()
    }

    /// A job of `task` with `args`, to set options on before [`Job::submit`] or [`Job::call`].
    pub fn job(&mut self, task: &str, args: impl Serialize) -> Job<'_, &mut Client> {
        Job::new(self, task, args)
    }
}

impl<'c, C: Runner> Job<'c, C> {
    pub(crate) fn new(client: C, task: &str, args: impl Serialize) -> Self {
        Job { client, task: task.to_string(), args: positional(args), options: RunOptions::default(), on_event: None }
    }

    /// Its priority (default normal).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.options.priority = priority;
        self
    }

    /// Merged with every queued or running job of the same task and `key` (at most
    /// [`MAX_UNIQUE`](crate::MAX_UNIQUE) bytes). A submission that was sent but not confirmed is
    /// sent again (to the same server) only when it has a key.
    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.options.unique = Unique::Key(key.into());
        self
    }

    /// Merged with every queued or running job of the same task and arguments.
    pub fn unique_by_args(mut self) -> Self {
        self.options.unique = Unique::FromArgs;
        self
    }

    /// The job id the task sees (default: a random one).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.options.id = Some(id.into());
        self
    }

    /// The environment the task sees (default: the configuration's, else the worker's).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.options.environment = Some(environment.into());
        self
    }

    /// For [`call`](Job::call): how long to wait for the result, submitting included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// For [`submit`](Job::submit): run it at `at`, not now (through Redis when the
    /// configuration names it, else the job server's `SUBMIT_JOB_EPOCH`).
    pub fn at(mut self, at: SystemTime) -> Self {
        self.options.schedule = Some(at);
        self
    }

    /// For [`submit`](Job::submit): run it `delay` from now (see [`at`](Job::at)).
    pub fn after(self, delay: Duration) -> Self {
        self.at(SystemTime::now() + delay)
    }

    /// For [`submit`](Job::submit): when the task fails, run it again per `retries`.
    pub fn retries(mut self, retries: Retries) -> Self {
        self.options.retries = Some(retries);
        self
    }

    /// For [`call`](Job::call): progress, partial data and warnings as they arrive.
    pub fn on_event(mut self, on_event: impl FnMut(JobEvent<'_>) + Send + 'c) -> Self {
        self.on_event = Some(Box::new(on_event));
        self
    }

    /// Sends li3_gearman's envelope (to `li3_gearman\extensions\command\Gearmand::run`), so that
    /// a PHP li3_gearman worker runs the task; its `configName` is the client's configuration
    /// name ([`Client::from_config`]'s, else `default`). li3g's workers read it too.
    pub fn li3_gearman(mut self) -> Self {
        self.options.li3_gearman = Some(self.client.config_name().to_string());
        self
    }

    /// As [`li3_gearman`](Job::li3_gearman), with this `configName`.
    pub fn li3_gearman_config(mut self, config_name: impl Into<String>) -> Self {
        self.options.li3_gearman = Some(config_name.into());
        self
    }

    /// The options as [`Client::run`] takes them, the environment filled in with `environment`
    /// when the job names none.
    pub(crate) fn run_options(&self, environment: Option<&str>) -> RunOptions {
        let mut options = self.options.clone();
        if options.environment.is_none() {
            options.environment = environment.map(str::to_string);
        }
        options
    }
}

impl<'c> Job<'c, &mut Client> {
    /// Submits it in the background.
    ///
    /// # Errors
    /// As [`Client::submit`]; scheduling errors when it has a time.
    pub fn submit(mut self) -> Result<Submitted, RunError> {
        self.options.background = true;
        match self.run()? {
            Outcome::Queued { id, handle } => Ok(Submitted::Queued(Queued { id, handle })),
            Outcome::Scheduled { id, at } => Ok(Submitted::Scheduled { id, at }),
            Outcome::Completed { .. } => unreachable!("a background job has no result"),
        }
    }

    /// Runs it and waits for its result as a `T`: the result's JSON, or, when that is not a
    /// `T`, its text (a task returning a string sends it unquoted: `call::<String>` takes it
    /// as it is).
    ///
    /// # Errors
    /// As [`Client::call`]; [`RunError::Result`] when the result is not a `T`.
    pub fn call<T: DeserializeOwned>(self) -> Result<T, RunError> {
        let task = self.task.clone();
        decode_result(&task, &self.call_raw()?)
    }

    /// Runs it and waits for its result, as the bytes the worker sent.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn call_raw(mut self) -> Result<Vec<u8>, RunError> {
        self.options.background = false;
        match self.run()? {
            Outcome::Completed { result, .. } => Ok(result),
            other => unreachable!("a synchronous job completes or fails: {other:?}"),
        }
    }

    fn run(self) -> Result<Outcome, RunError> {
        let options = self.run_options(self.client.environment());
        let Job { client, task, args, on_event, .. } = self;
        let args = args?;
        let mut on_event = on_event.unwrap_or_else(|| Box::new(|_| {}));
        client.run(&task, &args, &options, &mut *on_event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_positional() {
        assert_eq!(positional((42, "welcome")).unwrap(), vec![json!(42), json!("welcome")]);
        assert_eq!(positional(("Mariano",)).unwrap(), vec![json!("Mariano")]);
        assert_eq!(positional(()).unwrap(), Vec::<Value>::new());
        assert_eq!(positional(vec![1, 2]).unwrap(), vec![json!(1), json!(2)]);
        assert_eq!(positional(json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(positional(7).unwrap(), vec![json!(7)]);
    }

    #[test]
    fn results_decode_as_json_or_as_text() {
        assert_eq!(decode_result::<String>("T", b"Hello Mariano").unwrap(), "Hello Mariano");
        assert_eq!(decode_result::<String>("T", b"42").unwrap(), "42");
        assert_eq!(decode_result::<u32>("T", b"42").unwrap(), 42);
        assert_eq!(decode_result::<Vec<u8>>("T", b"[1,2]").unwrap(), vec![1, 2]);
        let err = decode_result::<u32>("T::m", b"not a number").unwrap_err();
        assert!(err.to_string().starts_with("the result of T::m is not of the type asked for"), "{err}");
    }
}
