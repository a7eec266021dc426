//! li3g-host: the host that loads task plugins and runs them as Gearman jobs.
//!
//! # Layout
//! - [`plugins`]: loading `.so` plugins through the stable ABI, the registry of task names, and
//!   running a task with its job context.
//! - [`client`]: run a task by name from Rust: li3g-client's [`Client`](li3g_client::Client),
//!   scheduling through this host's Redis schedule.
//! - [`daemon`]: the supervisor of `start`: worker pool, daemon mode.
//! - [`config`]: the TOML configuration file (named configurations, environments).
//! - [`gearman`]: the Gearman protocol (li3g-protocol's codec, admin protocol and connection;
//!   li3g-client's protocol-level client), re-exported.
//! - [`log`]: log lines to stderr (`--verbose`) or syslog.
//! - [`server`]: the embedded Gearman job server (`li3g-host server`): mio event loop, SQLite store.
//! - [`pidfile`]: the daemon's locked PID file.
//! - [`redis_target`]: how Redis is reached (one server, Sentinel, Cluster; auth, TLS):
//!   li3g-client's (feature `redis`), which schedules in the same Redis.
//! - [`process`]: process plumbing: fork with signals blocked, pidfds, poll, backoff, what
//!   children must not inherit.
//! - [`signals`]: signals as flags and a per-process wake-up pipe.
//! - [`job_id`]: random job ids (li3g-client's).
//! - [`scheduler`]: scheduled and retried jobs in Redis, and the scheduler process.
//! - [`scaffold`]: `li3g-host new`: a plugin crate that builds where li3g is installed.
//! - [`retry_policy`]: retry policies (li3_gearman's `retries`, PHP relative times; li3g-client's).
//! - [`workload`]: the job wire format (what a workload means, how results go back; li3g-client's).
//! - [`worker`]: the Gearman worker: start-up, the job servers, running and answering a job,
//!   the `--atomic` job child.
//! - [`tls`]: TLS settings (rustls): certificates, keys, verification, errors in words.
//! - [`cli`]: the `li3g-host` command line; `main.rs` only calls [`cli::run`].

#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod gearman;
pub use li3g_client::job_id;
pub mod log;
pub mod monitor;
pub mod pidfile;
pub mod plugins;
pub mod process;
pub mod proctitle;
pub use li3g_client::redis::target as redis_target;
pub use li3g_client::retry_policy;
pub mod scaffold;
pub mod scheduler;
pub mod scoreboard;
pub mod server;
pub mod signals;
pub mod status;
pub use li3g_protocol::tls;
pub mod worker;
pub use li3g_client::workload;
