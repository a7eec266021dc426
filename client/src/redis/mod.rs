//! li3g's Redis schedule (feature `redis`): where `at` / `after` jobs wait until li3g-host's
//! scheduler moves them to the job servers, and where job status is kept. The key layout, the
//! scripts and the connection code are li3g-host's scheduler's own (it uses these modules), so a
//! service that depends on li3g-client alone schedules exactly as `li3g-host run --in` does.
//!
//! [`Client::from_config`](crate::Client::from_config) installs a [`RedisStore`] when the
//! configuration names Redis; [`Client::status`](crate::Client::status) reads a job's status.
//!
//! - [`target`]: how Redis is reached (one server, Sentinel, Cluster; auth, TLS).
//! - [`schedule`]: the schedule's operations ([`Schedule`]): scheduling, taking, status, listings.
//! - [`entries`]: its keys, statuses, errors and listings (no I/O).
//! - [`lua`]: its scripts (no I/O).
//! - [`record`]: what is stored for a job (no I/O).

pub mod entries;
pub mod lua;
pub mod record;
pub mod schedule;
pub mod target;

pub use record::Record;
pub use schedule::{Schedule, ScheduleError};

use crate::client::{JobStore, ScheduledJob, StoreError};
use crate::scheduler_settings::SchedulerSettings;
use std::time::SystemTime;

/// A [`Schedule`] as a client's [`JobStore`]: scheduled jobs go in as the scheduler's
/// [`Record`]s, status is read from the job's status key.
pub struct RedisStore(pub Schedule);

impl RedisStore {
    /// The schedule at `url` with `settings` (nothing connects until the first call).
    ///
    /// # Errors
    /// [`ScheduleError`] for a URL that does not parse, an unreadable CA file, or Cluster keys
    /// that would not share one slot.
    pub fn open(url: &str, settings: &SchedulerSettings) -> Result<RedisStore, ScheduleError> {
        Ok(RedisStore(Schedule::open(url, settings)?))
    }
}

impl JobStore for RedisStore {
    fn schedule(&mut self, job: &ScheduledJob, at: SystemTime) -> Result<(), StoreError> {
        let record = Record {
            id: job.id.clone(),
            function: job.function.clone(),
            unique: job.unique.clone(),
            workload: job.workload.clone(),
            priority: job.priority.into(),
            retry: 0,
        };
        Ok(self.0.schedule(&record, at)?)
    }

    fn status(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.0.status(id)?.map(|(status, _ttl)| status))
    }
}
