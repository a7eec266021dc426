//! li3g-client: trigger li3g jobs from a Rust service, as li3_gearman's `Gearman::run()` did from
//! PHP: background or synchronous, a priority, a unique key, a schedule, retries.
//!
//! A service depends on this crate alone: the Gearman protocol ([`li3g_protocol`]), the
//! named configuration's reader ([`config`]) and serde, none of the worker host's dependencies.
//! li3g-host's own commands (`run`, `ping`, the scheduler's submissions) use it too.
//!
//! ```no_run
//! use li3g_client::{Client, Priority};
//! use std::time::Duration;
//!
//! // The servers of li3g.toml's configuration `default` (LI3G_CONFIG, LI3G_ENVIRONMENT and
//! // LI3G_SERVERS as the host reads them), or give them: Client::new(vec!["127.0.0.1:4730".parse()?]).
//! let mut client = Client::from_config("default")?;
//! // Background: returns once a job server has it, with the job id and the server's handle.
//! let queued = client.submit("Mail::send", (42, "welcome"))?;
//! println!("queued {} as {}", queued.id, queued.handle);
//! // Synchronous: the result as the type asked for; a task's failure is an error with its message.
//! let greeting: String = client.call("Hello::say", ("Mariano",))?;
//! assert_eq!(greeting, "Hello Mariano");
//! // Everything else through the builder.
//! client.job("Report::build", (2026,)).priority(Priority::High).unique("report-2026").after(Duration::from_secs(60)).submit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `tokio` feature, `AsyncClient` has the same calls as `async fn`s, many in flight
//! on one connection per server (TLS for `tls://` servers through tokio-rustls, with the same
//! rustls configuration as the blocking client):
//!
//! ```ignore
//! let client = li3g_client::AsyncClient::new(vec!["127.0.0.1:4730".parse()?]);
//! let greeting: String = client.call("Hello::say", ("Mariano",)).await?;
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], run a task by name: li3g's envelope, unique keys, schedules.
//! - [`job`]: the typed calls ([`Client::submit`], [`Client::call`]) and the [`Job`] builder.
//! - [`gearman`]: the protocol-level client ([`gearman::GearmanClient`]): submit, wait, status,
//!   failover between servers, with a deadline on every request and no silent duplicate.
//! - [`config`]: `li3g.toml`'s named configurations, as the host reads them.
//! - [`workload`]: the job wire format (li3g's envelope, li3_gearman's).
//! - [`retry_policy`]: retry policies (li3_gearman's `retries`).
//! - [`job_id`]: random job ids.
//! - [`scheduler_settings`]: `[NAME.scheduler]`, the Redis schedule's keys and status settings.
//! - `redis` (feature `redis`): li3g's Redis schedule, shared with li3g-host's scheduler:
//!   `at` / `after` jobs wait there and [`Client::status`] reads a job's status. With it,
//!   [`Client::from_config`] schedules in the configuration's Redis; without it, a
//!   configuration naming Redis refuses scheduled jobs (never the job server's epoch).
//! - `tokio_client` (feature `tokio`): `AsyncClient`, the same calls as `async fn`s, many jobs
//!   in flight on one connection per server.

#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod gearman;
pub mod job;
pub mod job_id;
#[cfg(feature = "redis")]
pub mod redis;
pub mod retry_policy;
pub mod scheduler_settings;
#[cfg(feature = "tokio")]
pub mod tokio_client;
pub mod workload;

pub use client::{Client, JobStore, Outcome, RunError, RunOptions, ScheduledJob, Unique, MAX_UNIQUE};
pub use gearman::{ClientError, JobEvent, JobHandle};
pub use job::{Job, Queued, Submitted};
pub use li3g_protocol as protocol;
pub use li3g_protocol::conn::ServerAddr;
pub use li3g_protocol::packet::Priority;
pub use retry_policy::Retries;
#[cfg(feature = "tokio")]
pub use tokio_client::AsyncClient;
