//! The supervisor behind `li3g-host start`: a pool of child processes of several kinds
//! (workers, and whatever else a [`ChildSpec`] describes).
//!
//! - [`child_spec`]: what a child is ([`ChildSpec`], [`Restart`]) and when one that ended is
//!   replaced.
//! - [`pool`]: the supervision loop: spawn, reap, restart policies with backoff, limits,
//!   graceful stop (SIGTERM/SIGINT; a second one kills), graceful restart (SIGHUP).
//! - [`run`]: what `start` runs: the child specs (workers, scheduler, embedded job server)
//!   and the supervision of them.
//! - [`recycle`]: when a child past its maximum age is recycled (`--max-age` with a splay).
//! - [`spawn`]: forking one child from the (single-threaded) supervisor.
//! - [`detach`]: `--daemon`: a new session, stdio away from the terminal, readiness reported
//!   back to the command that started it.
//!
//! Adding a kind of child is one [`ChildSpec`] in the list given to [`supervise`]:
//!
//! ```
//! use li3g_host::daemon::{ChildSpec, PoolOptions, Restart};
//! // One scheduler, replaced only when it crashes, left alone by `restart`.
//! let mut scheduler = ChildSpec::new("scheduler", 1, |_number| {
//!     // ... runs in the forked child; returns its exit code
//!     0
//! });
//! scheduler.restart = Restart::Transient;
//! scheduler.reload = false;
//! let options =
//!     PoolOptions { children: vec![scheduler], log: li3g_host::log::Log { verbose: true }, before_restart: None };
//! assert_eq!(options.children[0].name, "scheduler");
//! ```
//!
//! The supervisor never loads plugins: each worker loads them after it is forked, so a worker
//! started after `restart` sees the plugin files as they are now, and the supervisor stays
//! small and single-threaded, safe to fork from.

pub mod child_spec;
pub mod detach;
pub mod pool;
pub mod recycle;
pub mod run;
pub mod spawn;

pub use pool::{supervise, ChildSpec, PoolOptions, Restart, EXIT_RECYCLE};
pub use recycle::MaxAge;
pub use run::{run, Options, EMBEDDED_LISTEN};
