//! The li3g plugin API: write Gearman tasks as plain Rust functions, ship them as a `.so`.
//!
//! This crate is the only dependency a plugin needs. It has two faces:
//!
//! - **For task authors**: the [`plugin!`] macro, the [`Job`] context, [`Json`] and [`Output`].
//! - **For the host**: the stable ABI in [`abi`] that the host loads plugins through.
//!
//! # Writing a plugin
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! li3g-plugin-api = "0.3"
//! ```
//!
//! ```
//! use li3g_plugin_api::{plugin, Job};
//!
//! fn run() -> &'static str {
//!     "I am Hello::run"
//! }
//!
//! fn say(name: String) -> String {
//!     format!("Hello {name}")
//! }
//!
//! fn count(job: &Job, to: u64) -> Result<u64, String> {
//!     for i in 1..=to {
//!         job.progress(i, to);
//!     }
//!     Ok(to)
//! }
//!
//! plugin! {
//!     tasks: {
//!         "Hello::run" => run,
//!         "Hello::say"(name) => say,
//!         "Hello::count"(to) => count,
//!     }
//! }
//! ```
//!
//! Arguments arrive as a JSON array and are decoded with serde into the function's parameter
//! types, one by one; a wrong count or type gives the caller an error naming the task, the
//! argument and what was expected. A missing trailing argument is `null`, so `Option<T>`
//! parameters are optional. The result is encoded as JSON (the host sends a string result as
//! its bytes). A `Result`'s error becomes the job's exception message; a panic is caught in
//! the plugin and becomes an error naming the task, the panic message and its location.
//!
//! # Settings and per-worker state
//!
//! A task that needs a database, a Redis connection or an HTTP client declares it as the
//! plugin's **state**, built by a constructor from the plugin's **settings**:
//!
//! ```ignore
//! #[derive(serde::Deserialize)]
//! struct Settings { url: String }
//!
//! fn connect(settings: Settings) -> Result<Db, DbError> { Db::open(&settings.url) }
//! fn save(db: &Db, job: &Job, row: Row) -> Result<u64, DbError> { db.insert(row) }
//!
//! plugin! { state: connect, tasks: { "Rows::save"(row) => save } }
//! ```
//!
//! - The settings are the plugin's section of the li3g configuration,
//!   `[<config>.plugins.<plugin name>]` (with `[<config>.environments.<env>.plugins.<name>]`
//!   merged over it), decoded with serde; `{}` when there is none. When they do not fit, the
//!   plugin is refused with a message naming the file, the key and what was expected.
//! - The constructor runs in each worker, after the fork and before its first job, never in
//!   the supervisor. A constructor that fails or panics refuses the plugin in that worker (its
//!   tasks are not registered, a log line says why); the worker serves the other plugins.
//! - A constructor must not block: set connect and read/write timeouts. The worker logs
//!   `Building the state of plugin <name>` before each constructor and gives it
//!   `plugins.state_timeout` seconds (30 by default); past that the worker exits (code 3, a
//!   line naming the plugin) and its supervisor backs off before replacing it. A stop signal
//!   while states are being built ends the worker at once.
//! - The state lives until the worker ends gracefully, then it is dropped (so connections
//!   close cleanly). Tasks get `&State`: keep mutable parts in a `RefCell` (a worker runs one
//!   job at a time, on one thread).
//! - The host never rebuilds a state: it must heal itself. After an I/O error (the server
//!   restarted, the connection dropped), drop the connection, fail the job, and open a new one
//!   on the next job, as `plugins/redis-counter` does.
//! - **Under `--atomic`, a constructor must not leave threads running** (no pool or runtime
//!   threads, even ones stopped when the state is dropped, are allowed while it is checked):
//!   the worker forks each job and must stay single-threaded. A plugin whose constructor starts
//!   a thread is refused in a forking worker, with a log line naming it; build such pools
//!   inside the task instead, or run without `--atomic`.
//! - **Under `--atomic`** a job child must never share a live connection with its parent or
//!   its siblings (two processes writing one socket corrupt the stream). So the worker only
//!   checks that the state can be built (and drops it at once); each job child whose task
//!   takes the state builds its own before the task runs and drops it after (tasks that do not
//!   take it build nothing). The price is one constructor per job: for the Redis example
//!   (TCP connect + `CLIENT SETNAME`) about 0.12 ms, against about 0.63 ms for `--atomic`'s
//!   fork itself (`cargo bench -p li3g-tests --bench state`, loopback, 2 cores: 694.7 µs per
//!   stateless job, 892.2 µs per job with state and an `INCR`, whose round trip is 75.4 µs).
//!   Never keep a connection in a global or a lazy static: under `--atomic` it would be
//!   inherited by every child.
//! - `plugins/redis-counter` in the li3g repository is a complete example.
//!
//! # The ABI contract
//!
//! A plugin is a `cdylib` exporting one abi_stable root module, [`abi::PluginMod`]. When the
//! host loads it, abi_stable checks, before any plugin code runs beyond the dynamic loader:
//!
//! 1. **the abi_stable header**: plugin and host use the same abi_stable (0.11);
//! 2. **the interface version**: the version of this crate the plugin was built against must be
//!    compatible with the host's: while we are at `0.y`, the *same* minor version `y` and a
//!    patch version no lower than the host's (abi_stable checks the root module's version, then
//!    the package version recorded in each type's layout, with this rule for 0.x). A plugin
//!    built against an older or a newer minor is refused with one line naming both versions;
//!    a host at 0.3.1 would refuse plugins built against 0.3.0;
//! 3. **the layout**: every type reachable from the root module (this crate's [`abi`] types)
//!    has the same layout in the host and in the plugin. Any difference is refused with a
//!    report of which field of which type differs.
//!
//! Any change to a type in [`abi`], appending a field to the prefix type [`abi::PluginMod`]
//! included, bumps this crate's minor version, so plugins must be rebuilt against the host's
//! minor version (neither an older nor a newer one loads).
//!
//! Versions: 0.2 added the job's environment values and the plugin's state to
//! [`abi::JobCtx`] (plugins built against 0.1 are refused: rebuild them). 0.3 appended the
//! settings, the state constructor and the list of state-taking tasks to [`abi::PluginMod`]
//! (plugins built against 0.2 are refused: rebuild them).
//!
//! What a plugin may do:
//! - run any code inside its tasks, including blocking I/O and its own threads *inside* a task
//!   (joined before the task returns);
//! - keep globals; they live as long as the worker process (under `--atomic`, one job).
//!
//! What a plugin must not do:
//! - start threads, or do I/O, when it is loaded (in `init` or in static constructors): the host
//!   loads plugins before it forks workers, and forking a multi-threaded process is unsafe;
//! - leave threads running after a task returns, for the same reason;
//! - build with `panic = "abort"`: panics must unwind to be caught and reported;
//! - expect to be unloaded: libraries stay loaded for the life of the process, and a changed
//!   `.so` takes effect in a new process (`li3g-host restart`);
//! - rely on the host's allocator or std: each plugin has its own copy of std (its own panic
//!   hook, its own thread-locals). Only the types in [`abi`] cross the boundary.
//!
//! The host refuses plugin files and directories that users other than their owner can write,
//! since loading a library runs its code.

#![deny(missing_docs)]
// `#[sabi_trait]` expands to impls that trip this lint on current rustc.
#![allow(non_local_definitions)]
// `DynTrait` (the plugin state) crosses `extern "C"` by value: its layout is checked by
// abi_stable at load time; rustc's lint misreads its zero-sized phantom field.
#![allow(improper_ctypes_definitions)]

pub mod abi;
pub mod dispatch;
mod export;
mod job;
mod task;
#[cfg(feature = "testing")]
pub mod testing;

/// This crate's version: a plugin must be built against the host's minor version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use abi::{TaskError, TaskErrorKind};
pub use export::{__private, validate_task_name, PluginEntry};
pub use job::Job;
pub use task::{readable_type_name, Json, Output, Plain, Signature, Task, WithJob};

#[cfg(test)]
mod tests {
    #[test]
    fn exported_symbol_is_the_one_abi_stable_looks_for() {
        // The `plugin!` macro spells the symbol out, since a macro_rules macro cannot compute it.
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }

    #[test]
    fn task_names() {
        use super::validate_task_name as v;
        assert!(v("Hello::say").is_ok());
        assert!(v("app\\tasks\\Hello::say").is_ok());
        assert!(v("Hello").is_err());
        assert!(v("Hello::").is_err());
        assert!(v("::say").is_err());
        assert!(v("Hel lo::say").is_err());
        assert!(v("a::b::c").is_err());
        assert!(v(&format!("A::{}", "x".repeat(600))).is_err());
    }
}
