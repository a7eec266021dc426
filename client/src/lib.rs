//! li3g-client: trigger li3g jobs from a Rust service, as li3_gearman's `Gearman::run()` did from
//! PHP: background or synchronous, a priority, a unique key, a schedule, retries.
//!
//! A service depends on this crate alone: the Gearman protocol ([`li3g_protocol`]), the
//! named configuration's reader ([`config`]) and serde, none of the worker host's dependencies.
//! li3g-host's own commands (`run`, `ping`, the scheduler's submissions) use it too.
//!
//! # Layout
//! - [`client`]: [`Client`], run a task by name: li3g's envelope, unique keys, schedules.
//! - [`gearman`]: the protocol-level client ([`gearman::GearmanClient`]): submit, wait, status,
//!   failover between servers, with a deadline on every request and no silent duplicate.
//! - [`config`]: `li3g.toml`'s named configurations, as the host reads them.
//! - [`workload`]: the job wire format (li3g's envelope, li3_gearman's).
//! - [`retry_policy`]: retry policies (li3_gearman's `retries`).
//! - [`job_id`]: random job ids.

#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod gearman;
pub mod job_id;
pub mod retry_policy;
pub mod workload;

pub use client::{Client, JobStore, Outcome, RunError, RunOptions, ScheduledJob, Unique, MAX_UNIQUE};
pub use li3g_protocol as protocol;
pub use li3g_protocol::conn::ServerAddr;
pub use li3g_protocol::packet::Priority;
