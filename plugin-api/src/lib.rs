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
//! li3g-plugin-api = "0.2"
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
//! # The ABI contract
//!
//! A plugin is a `cdylib` exporting one abi_stable root module, [`abi::PluginMod`]. When the
//! host loads it, abi_stable checks, before any plugin code runs beyond the dynamic loader:
//!
//! 1. **the abi_stable header**: plugin and host use the same abi_stable (0.11);
//! 2. **the interface version**: the version of this crate the plugin was built against must be
//!    compatible with the host's: the same major version and, while we are at `0.y`, a minor
//!    version `y` no lower than the host's. A plugin built against an older minor is refused;
//! 3. **the layout**: every type reachable from the root module (this crate's [`abi`] types)
//!    has the same layout in the host and in the plugin. Any difference is refused with a
//!    report of which field of which type differs.
//!
//! Any change to a type in [`abi`] other than appending a field to the prefix type
//! [`abi::PluginMod`] bumps this crate's minor version.
//!
//! Versions: 0.2 added the job's environment values and the plugin's state to
//! [`abi::JobCtx`] (plugins built against 0.1 are refused: rebuild them).
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

pub mod abi;
mod export;
mod job;
mod task;

pub use abi::{TaskError, TaskErrorKind};
pub use export::{__private, validate_task_name};
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
