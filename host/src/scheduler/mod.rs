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
//!   ([`job_hooks`]); out of retries, or unreadable, a job goes to the dead set with why, from
//!   where `li3g-host retry` brings it back.
//! - li3_gearman's scheduled members (its `job_scheduled` set) are moved too, and job
//!   status keys are written where li3_gearman's `getStatus` reads them.
//!
//! Layout: [`schedule`] (the Redis operations: [`Schedule`]), [`entries`] (its keys, statuses,
//! errors and listings), [`lua`] (the scripts), [`record`]
//! (what is stored) are li3g-client's (feature `redis`: a client schedules and reads status
//! with the same keys and scripts), [`run`] (the scheduler loop), `submit` (its
//! job servers and the pipelined submissions), [`wake`] (its sleep), [`job_hooks`] (the
//! worker's status and failure hooks). Its settings come from [`crate::config::SchedulerSettings`];
//! the caller opens the schedule with a URL and those settings, and gives the loop its servers.
//! Nothing here runs tasks.

pub use li3g_client::redis::{entries, lua, record, schedule};
pub mod job_hooks;
pub mod run;
mod submit;
pub mod wake;

pub use record::Record;
pub use run::{SchedulerConfig, SchedulerStats};
pub use schedule::{Schedule, ScheduleError, Status};
