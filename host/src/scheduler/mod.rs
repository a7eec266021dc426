//! Scheduled and retried jobs: a Redis schedule, and the scheduler process that moves due
//! jobs into Gearman without loss and without polling.
//!
//! # Theory of operation
//! - A client schedules a job ([`crate::client::RunOptions::schedule`]): its [`Record`] goes
//!   into a hash and its id into a sorted set by due time, in one script, which also wakes
//!   the schedulers when the job is now the earliest.
//! - A scheduler ([`run::run`], `li3g-host scheduler`) takes due jobs in batches under a
//!   lease, submits them pipelined with the job id as unique key, and acknowledges them once
//!   the job server answered `JOB_CREATED`. A scheduler that dies leaves its jobs leased; any
//!   scheduler takes them over when the lease runs out. Several schedulers on one Redis never
//!   submit a job twice on their own (taking is atomic); a handed-over job that was submitted
//!   twice coalesces in gearmand while queued.
//! - A failed background job with retries left is scheduled again by the worker
//!   ([`retry`]); out of retries, or unreadable, a job goes to the dead set with why, from
//!   where `li3g-host retry` brings it back.
//! - li3_gearman's scheduled members (its `job_scheduled` set) are moved too, and job
//!   status keys are written where li3_gearman's `getStatus` reads them.
//!
//! Layout: [`store`] (Redis operations), [`lua`] (the scripts), [`record`] (what is stored),
//! [`run`] (the scheduler loop), [`wake`] (its sleep), [`retry`] (the worker's failure hook).
//! Nothing here runs tasks.

pub mod lua;
pub mod record;
pub mod retry;
pub mod run;
pub mod store;
pub mod wake;

pub use record::Record;
pub use run::{SchedulerConfig, SchedulerStats};
pub use store::{Status, Store, StoreError};

use serde::Deserialize;
use std::time::Duration;

/// The scheduler's settings: the configuration's `[NAME.scheduler]` table.
///
/// ```toml
/// [default.scheduler]
/// prefix = "li3g:"                # of every key, and of status keys (li3_gearman's `prefix`)
/// schedule_set = "job_scheduled"  # li3_gearman's scheduled set (its `schedulePrefix`)
/// compat = true                   # move li3_gearman's members too
/// job_status = true               # write pending/running/finished/error per job
/// expires = 86400                 # seconds a status key lives
/// lease = 30                      # seconds a taken job stays leased
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Prefix of every key.
    pub prefix: String,
    /// li3_gearman's scheduled set.
    pub compat_set: String,
    /// Whether schedulers move li3_gearman's members.
    pub compat: bool,
    /// Whether job status is written.
    pub job_status: bool,
    /// How long a status key lives.
    pub expires: Duration,
    /// How long a taken job stays leased.
    pub lease: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            prefix: "li3g:".into(),
            compat_set: "job_scheduled".into(),
            compat: true,
            job_status: true,
            expires: Duration::from_secs(86400),
            lease: Duration::from_secs(30),
        }
    }
}

/// The `[NAME.scheduler]` table as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    prefix: Option<String>,
    schedule_set: Option<String>,
    compat: Option<bool>,
    job_status: Option<bool>,
    expires: Option<u64>,
    lease: Option<f64>,
}

impl RawSettings {
    /// `over`'s keys on top of `self`'s.
    pub fn merge(self, over: RawSettings) -> RawSettings {
        RawSettings {
            prefix: over.prefix.or(self.prefix),
            schedule_set: over.schedule_set.or(self.schedule_set),
            compat: over.compat.or(self.compat),
            job_status: over.job_status.or(self.job_status),
            expires: over.expires.or(self.expires),
            lease: over.lease.or(self.lease),
        }
    }

    /// The settings, defaults filled in.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn resolve(self) -> Result<Settings, (String, String)> {
        let default = Settings::default();
        let lease = match self.lease {
            None => default.lease,
            Some(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
            Some(secs) => {
                return Err(("scheduler.lease".into(), format!("{secs} is not a positive number of seconds")))
            }
        };
        if self.expires == Some(0) {
            return Err(("scheduler.expires".into(), "0 is not a positive number of seconds".into()));
        }
        Ok(Settings {
            prefix: self.prefix.unwrap_or(default.prefix),
            compat_set: self.schedule_set.unwrap_or(default.compat_set),
            compat: self.compat.unwrap_or(default.compat),
            job_status: self.job_status.unwrap_or(default.job_status),
            expires: self.expires.map(Duration::from_secs).unwrap_or(default.expires),
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_the_configuration() {
        let path = std::path::Path::new("li3g.toml");
        let text = "[default]\nredis = \"redis://r/0\"\n[default.scheduler]\nprefix = \"app:\"\nlease = 2.5\n\
                    [default.environments.production.scheduler]\ncompat = false\n";
        let config = crate::config::parse(path, text, "default", Some("production")).unwrap();
        let expected = Settings {
            prefix: "app:".into(),
            compat: false,
            lease: Duration::from_millis(2500),
            ..Settings::default()
        };
        assert_eq!(config.scheduler, expected);
        let err = crate::config::parse(path, "[default.scheduler]\nlease = -1\n", "default", None).unwrap_err();
        assert!(err.to_string().contains("default.scheduler.lease: -1 is not a positive number"), "{err}");
        let err = crate::config::parse(path, "[default.scheduler]\nprefx = \"a\"\n", "default", None).unwrap_err();
        assert!(err.to_string().contains("unknown field `prefx`"), "{err}");
    }
}
