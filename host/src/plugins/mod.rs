//! Plugins: finding them in a directory, loading them, and dispatching task names to them.
//!
//! - [`permissions`]: refuse files and directories that others can write.
//! - [`loader`]: load one library through abi_stable's checks.
//! - [`registry`]: the loaded plugins, the rejected files with their reasons, and the map from
//!   task names to entry points.
//! - [`builtin`]: where plugins are looked for by default, and the linked-in example plugin.
//! - [`invoke`]: run one task with a job context and collect its result.

pub mod builtin;
pub mod invoke;
pub mod loader;
pub mod permissions;
pub mod registry;

pub use invoke::{JobEvents, JobInfo, TaskOutput};
pub use registry::{
    canonical_task_name, DispatchError, Plugin, PluginSettings, PreparedTask, Registry, Rejected, ScanError, StateMode,
    STATE_TIMEOUT,
};
