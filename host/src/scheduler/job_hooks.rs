//! The worker's side of scheduling: job status as it runs, and what happens to a failed
//! background job, as li3_gearman did it: with retries left (the envelope's `retries`, see
//! [`crate::retry_policy`]) it is scheduled again after the next delay with `retry` + 1 in its
//! envelope; out of retries it goes to the dead set with its last error.
//!
//! The worker calls [`JobHooks::started`] and [`JobHooks::finished`] around each job, nothing
//! more. A Redis failure here is logged by the caller and never fails the job's answer. Must
//! not run tasks or talk to job servers.

use super::record::{unique_for, Level, Record};
use super::schedule::{Schedule, ScheduleError, Status};
use crate::config::SchedulerSettings as Settings;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime};

/// What became of a failed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// It asked for no retries (or is not a background job): nothing was done.
    NotRetried,
    /// Scheduled again: retry number `retry` after `after`.
    Retrying {
        /// The job id.
        id: String,
        /// Its retry number (1 for the first retry).
        retry: u32,
        /// The delay.
        after: Duration,
    },
    /// Out of retries: in the dead set.
    Dead {
        /// The job id.
        id: String,
    },
}

/// A worker's connection to the schedule, for job status and retries.
pub struct JobHooks {
    url: String,
    settings: Settings,
    store: RefCell<Option<Schedule>>,
    /// After a Redis failure, status writes are skipped until then, so that an unreachable
    /// Redis does not cost every job a connect timeout. Retries are always tried.
    quiet_until: Cell<Option<Instant>>,
}

const QUIET: Duration = Duration::from_secs(5);

impl Clone for JobHooks {
    fn clone(&self) -> JobHooks {
        JobHooks {
            url: self.url.clone(),
            settings: self.settings.clone(),
            store: RefCell::new(None),
            quiet_until: Cell::new(None),
        }
    }
}

impl std::fmt::Debug for JobHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHooks").field("url", &self.url).field("settings", &self.settings).finish()
    }
}

impl JobHooks {
    /// Hooks on the schedule at `url` with `settings` (nothing connects until the first job).
    pub fn new(url: &str, settings: &Settings) -> JobHooks {
        JobHooks {
            url: url.to_string(),
            settings: settings.clone(),
            store: RefCell::new(None),
            quiet_until: Cell::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Schedule) -> Result<T, ScheduleError>) -> Result<T, ScheduleError> {
        let mut slot = self.store.borrow_mut();
        if slot.is_none() {
            *slot = Some(Schedule::open(&self.url, &self.settings)?);
        }
        let result = f(slot.as_mut().expect("opened above"));
        if result.is_err() {
            self.quiet_until.set(Some(Instant::now() + QUIET));
        }
        result
    }

    fn quiet(&self) -> bool {
        self.quiet_until.get().is_some_and(|until| Instant::now() < until)
    }

    /// A job with `id` starts: status `running`.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn started(&self, id: &str) -> Result<(), ScheduleError> {
        if self.quiet() {
            return Ok(());
        }
        self.with(|store| store.set_status(id, Status::Running))
    }

    /// A job ended: status `finished`, or for a failure (`Err(message)`) what
    /// [`after_failure`] decides.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn finished(
        &self,
        id: &str,
        function: &str,
        workload: &[u8],
        result: Result<(), &str>,
    ) -> Result<AfterFailure, ScheduleError> {
        match result {
            Ok(()) if self.quiet() => Ok(AfterFailure::NotRetried),
            Ok(()) => self.with(|store| store.set_status(id, Status::Finished)).map(|()| AfterFailure::NotRetried),
            Err(message) => self.with(|store| {
                let after = after_failure(store, function, workload, message, SystemTime::now())?;
                // The retry (its status `pending`) or the burial (`dead`) is recorded by now;
                // only a job left alone is marked here. A status that cannot be written is
                // no reason to record the retry again.
                if after == AfterFailure::NotRetried {
                    store.set_status(id, Status::Error)?;
                }
                if matches!(after, AfterFailure::NotRetried | AfterFailure::Dead { .. }) {
                    // `status ID` then says `failed: <message>` (or `dead: <message>`).
                    store.keep_failure(id, message)?;
                }
                Ok(after)
            }),
        }
    }
}

/// Schedules the retry of a failed job, or buries it, per its envelope's `retries`.
///
/// Only background jobs are retried (`"background": true` in the envelope, as li3_gearman and
/// li3g's scheduled jobs send it): nobody waits for a retried foreground job's result.
///
/// # Errors
/// [`ScheduleError`] when Redis fails.
pub fn after_failure(
    store: &mut Schedule,
    function: &str,
    workload: &[u8],
    error: &str,
    now: SystemTime,
) -> Result<AfterFailure, ScheduleError> {
    // What the job asked for, read as the worker reads it.
    let Ok(job) = crate::workload::decode(function, workload) else { return Ok(AfterFailure::NotRetried) };
    let (Some(true), false, Some(id)) = (job.background, job.retries.is_none(), job.id) else {
        return Ok(AfterFailure::NotRetried);
    };
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(workload) else {
        return Ok(AfterFailure::NotRetried);
    };
    let (retries, retry) = (job.retries, job.retry);
    match retries.delay(retry) {
        Some(after) => {
            envelope.insert("retry".into(), Value::from(retry + 1));
            let record = Record {
                unique: unique_for(&id, retry + 1),
                id: id.clone(),
                function: function.to_string(),
                workload: Value::Object(envelope).to_string(),
                priority: Level::Normal,
                retry: retry + 1,
            };
            let due = now.checked_add(after).filter(|due| super::schedule::within_bound(*due, now));
            let Some(due) = due else {
                let why = format!("{error} (its retry delay of {after:?} is more than 100 years)");
                return bury_for_good(store, &id, &record, &why);
            };
            match store.schedule(&record, due) {
                Ok(()) => Ok(AfterFailure::Retrying { id, retry: retry + 1, after }),
                // A retry that could never be submitted: the dead set says why, nothing waits.
                Err(err @ ScheduleError::UniqueTooLong { .. }) => {
                    bury_for_good(store, &id, &record, &format!("{error} (cannot be retried: {err})"))
                }
                Err(err) => Err(err),
            }
        }
        None => {
            let record = Record {
                unique: unique_for(&id, retry),
                id: id.clone(),
                function: function.to_string(),
                workload: String::from_utf8_lossy(workload).into_owned(),
                priority: Level::Normal,
                retry,
            };
            bury_for_good(store, &id, &record, error)
        }
    }
}

fn bury_for_good(store: &mut Schedule, id: &str, record: &Record, error: &str) -> Result<AfterFailure, ScheduleError> {
    store.bury(id, &record.encode(), error, false)?;
    Ok(AfterFailure::Dead { id: id.to_string() })
}

/// Between attempts to record a failure while Redis is away.
const HOLD_BACKOFF: crate::process::Backoff =
    crate::process::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

impl JobHooks {
    /// [`JobHooks::started`], logging a failure instead of returning it.
    pub fn report_start(&self, id: &str, log: &dyn Fn(&str)) {
        if let Err(err) = self.started(id) {
            log(&format!("Cannot record job #{id} as running: {err}"));
        }
    }

    /// [`JobHooks::finished`] for a job's outcome, logging what became of a failure.
    pub fn report_end<T>(
        &self,
        id: &str,
        function: &str,
        workload: &[u8],
        outcome: &Result<T, String>,
        log: &dyn Fn(&str),
    ) {
        let result = outcome.as_ref().map(|_| ()).map_err(String::as_str);
        let mut backoff = HOLD_BACKOFF;
        let mut held: Option<Instant> = None;
        let after = loop {
            match self.finished(id, function, workload, result) {
                Ok(after) => break after,
                // A success or a failure without retries only loses a status line.
                Err(err) if result.is_ok() || !wants_retry(function, workload) => {
                    log(&format!("Cannot record the end of job #{id}: {err}"));
                    return;
                }
                // An error that no waiting mends (a key of another type, an ACL without a
                // command): holding would stop this worker for good, one job at a time.
                Err(err) if !is_outage(&err) => {
                    log(&format!(
                        "Cannot record the failure of job #{id}: {err}; its retry is lost (Redis refuses it, which waiting does not mend)"
                    ));
                    return;
                }
                // A failure with retries left: its retry must not be lost to an outage. The
                // job is not answered until Redis has it (if this worker dies meanwhile, the
                // job server hands the job out again, so it is never lost either way).
                Err(err) => {
                    if held.is_none() {
                        log(&format!(
                            "Cannot record the failure of job #{id}: {err}; holding its answer until Redis has its retry"
                        ));
                        held = Some(Instant::now());
                    }
                    if crate::signals::stop_count() >= 2 {
                        log(&format!("Job #{id}: stopped while holding it; its retry was not recorded"));
                        return;
                    }
                    std::thread::sleep(backoff.failed());
                }
            }
        };
        if let Some(since) = held {
            log(&format!("Recorded the failure of job #{id} after holding it {:?}", since.elapsed()));
        }
        match after {
            AfterFailure::NotRetried => {}
            AfterFailure::Retrying { id, retry, after } => {
                log(&format!("Job #{id} failed; retry {retry} scheduled in {}", humantime::format_duration(after)))
            }
            AfterFailure::Dead { id } => {
                log(&format!("Job #{id} failed and has no retries left; moved to the dead set"))
            }
        }
    }
}

/// Whether a failure of this job is recorded in Redis (a background job with an id and a
/// `retries`): its retry, or its move to the dead set.
fn wants_retry(function: &str, workload: &[u8]) -> bool {
    crate::workload::decode(function, workload)
        .is_ok_and(|job| job.background == Some(true) && !job.retries.is_none() && job.id.is_some())
}

/// Whether a Redis failure is an outage that passes by itself (Redis unreachable, stalled,
/// restarting, full, busy or failing over), worth holding a job's answer for; not an error
/// Redis gives the same way every time (a wrong-typed key, a missing permission, a wrong
/// password, a reply of another shape).
fn is_outage(err: &ScheduleError) -> bool {
    const LASTING: [&str; 4] = ["WRONGTYPE", "NOPERM", "WRONGPASS", "NOAUTH"];
    match err {
        ScheduleError::Redis(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => true,
        ScheduleError::Redis(e) => {
            let text = e.to_string();
            !LASTING.iter().any(|code| e.code() == Some(*code) || text.contains(code))
        }
        _ => false,
    }
}
