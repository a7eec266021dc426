//! Why a plugin file was not loaded ([`Rejected`], [`Reason`]), why a plugins directory could
//! not be scanned ([`ScanError`]) and why a task could not be dispatched ([`DispatchError`]).

use crate::plugins::loader::LoadError;
use crate::plugins::permissions::Insecure;
use li3g_plugin_api::TaskError;
use std::fmt;
use std::path::PathBuf;

/// A file that was not loaded, and why.
#[derive(Debug)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// The plugin's name: as it declares it when it loaded (refused for its settings or its
    /// state), else the file's (`libaudit.so` is `audit`), which is what `plugins.optional`
    /// names.
    pub plugin: String,
    /// Why it was not loaded.
    pub reason: Reason,
}

/// Why a file was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// Someone else could have written it.
    #[error("refused: {0}")]
    Insecure(#[from] Insecure),
    /// abi_stable refused it, or its loader failed.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// It declares a task name that is not `Class::method`.
    #[error("{0}")]
    BadTaskName(String),
    /// It declares a task that an earlier file already declared.
    #[error("task {task} is already defined by {}; not loading this file (rename or remove one of them)", .first.display())]
    DuplicateTask {
        /// The task name.
        task: String,
        /// The file that defined it first, and keeps it.
        first: PathBuf,
    },
    /// The file's metadata could not be read.
    #[error("cannot be read: {0}")]
    Io(String),
    /// Its settings do not fit, or its state constructor failed: refused in this worker.
    #[error("{0}")]
    State(String),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Why a plugins directory could not be scanned at all.
///
/// The messages say their cause, so the cause is not also a `source()`: a chain printer
/// (`{:#}`) would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The directory cannot be read.
    #[error("plugins directory {}: {error}", .path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Someone else could write into the directory.
    #[error("plugins directory {} refused: {}", .0.path(), .0)]
    Insecure(Insecure),
}

/// Why a task could not be dispatched or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No loaded plugin has a task of that name.
    #[error("unknown task {name}{}", known_list(.known))]
    UnknownTask {
        /// The name as resolved (`Class::method`).
        name: String,
        /// The task names that exist.
        known: Vec<String>,
    },
    /// The task ran (or tried to) and failed; the message names the task.
    #[error("{0}")]
    Task(#[from] TaskError),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (no tasks are loaded)".to_string()
    } else {
        format!(" (known tasks: {})", known.join(", "))
    }
}
