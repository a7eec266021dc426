//! Running one task as the host does: resolving a job name to a task, building the job
//! context a plugin sees, calling across the ABI, and turning the JSON it returns into the
//! bytes a client gets.
//!
//! The host (`li3g-host`'s workers and `exec`) and the test kit ([`crate::testing`], for a
//! plugin's own tests) both dispatch through this module, so a task behaves in a plugin's
//! `cargo test` exactly as it will in a worker.

use crate::abi::{EnvVar, JobCtx, JobSink, JobSink_TO, PluginState, TaskDecl, TaskError, TaskErrorKind};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr};
use std::cell::RefCell;

/// The name a job name dispatches to: a leading `\` is dropped (li3_gearman wrote
/// `\app\tasks\Hello`), and a class alone means its `run` method.
pub fn canonical_task_name(name: &str) -> String {
    let name = name.strip_prefix('\\').unwrap_or(name);
    if name.contains("::") {
        name.to_string()
    } else {
        format!("{name}::run")
    }
}

/// The name of the task a job name dispatches to, given which task names exist (`has`): its
/// [`canonical_task_name`] when a plugin has that task; otherwise, when the class carries a
/// namespace (li3_gearman sent `\app\tasks\Hello::say`), the task of the bare class
/// (`Hello::say`) if a plugin has it. An exact name always wins, so a plugin can still claim a
/// namespaced name for itself.
pub fn resolve(job_name: &str, has: impl Fn(&str) -> bool) -> String {
    let name = canonical_task_name(job_name);
    if !has(&name) {
        if let Some((_, bare)) = name.rsplit_once('\\') {
            if has(bare) {
                return bare.to_string();
            }
        }
    }
    name
}

/// What the host tells a task about its job.
#[derive(Debug, Clone, Default)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The environment name, empty for none.
    pub environment: String,
    /// The job's other environment values (li3_gearman's `env` entries), any order.
    pub env_vars: Vec<(String, String)>,
}

/// Receives what a task reports while it runs. Implementations must not panic: they are
/// called from inside the plugin, and a panic cannot cross back.
pub trait JobEvents {
    /// Progress: `numerator` of `denominator`.
    fn status(&mut self, numerator: u64, denominator: u64);
    /// Partial data.
    fn data(&mut self, data: &[u8]);
    /// A warning.
    fn warning(&mut self, data: &[u8]);
}

/// A task's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutput {
    /// The task returned a string: sent as its bytes.
    Text(String),
    /// Anything else, as JSON text.
    Json(String),
}

impl TaskOutput {
    /// The bytes a client receives: a string as is, anything else as JSON.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TaskOutput::Text(s) | TaskOutput::Json(s) => s.as_bytes(),
        }
    }

    fn from_json(json: String) -> Result<TaskOutput, TaskError> {
        if json.starts_with('"') {
            serde_json::from_str(&json).map(TaskOutput::Text).map_err(|err| {
                TaskError::new(TaskErrorKind::BadOutput, format!("the plugin returned malformed JSON: {err}"))
            })
        } else {
            Ok(TaskOutput::Json(json))
        }
    }
}

/// Adapts [`JobEvents`] to the ABI's [`JobSink`]. The RefCell is never contended: a `Job` is
/// not `Sync`, so a task reports from one thread at a time.
struct Sink<'a>(RefCell<&'a mut dyn JobEvents>);

impl JobSink for Sink<'_> {
    fn status(&self, numerator: u64, denominator: u64) {
        if let Ok(mut events) = self.0.try_borrow_mut() {
            events.status(numerator, denominator);
        }
    }
    fn data(&self, data: RSlice<'_, u8>) {
        if let Ok(mut events) = self.0.try_borrow_mut() {
            events.data(data.as_slice());
        }
    }
    fn warning(&self, data: RSlice<'_, u8>) {
        if let Ok(mut events) = self.0.try_borrow_mut() {
            events.warning(data.as_slice());
        }
    }
}

/// Calls the task `decl` with the JSON array `args`, and its plugin's `state` when built.
///
/// # Errors
/// The task's [`TaskError`]: bad arguments, an error it returned, a caught panic.
pub fn invoke(
    decl: &TaskDecl,
    args: &str,
    info: &JobInfo,
    state: Option<&PluginState>,
    events: &mut dyn JobEvents,
) -> Result<TaskOutput, TaskError> {
    // An object is the arguments by name (`{"n": 3}`; the host reads an envelope before).
    let named;
    let args = if args.trim_start().starts_with('{') {
        named = by_name(decl, args)?;
        named.as_str()
    } else {
        args
    };
    let sink = Sink(RefCell::new(events));
    // Sorted and unique by name, as the ABI promises (the last value of a repeated name wins).
    let mut env_vars: Vec<EnvVar<'_>> = Vec::with_capacity(info.env_vars.len());
    for (name, value) in &info.env_vars {
        let var = EnvVar { name: RStr::from_str(name), value: RStr::from_str(value) };
        match env_vars.binary_search_by(|v| v.name.as_str().cmp(name)) {
            Ok(i) => env_vars[i] = var,
            Err(i) => env_vars.insert(i, var),
        }
    }
    let ctx = JobCtx {
        task: RStr::from_str(&decl.name),
        id: RStr::from_str(&info.id),
        environment: RStr::from_str(&info.environment),
        env_vars: RSlice::from_slice(&env_vars),
        state,
        sink: JobSink_TO::from_ptr(&sink, TD_Opaque),
    };
    match (decl.call)(RStr::from_str(args), &ctx) {
        RResult::ROk(json) => TaskOutput::from_json(json.into_string()),
        RResult::RErr(err) => Err(err),
    }
}

/// A JSON object of arguments by name (`{"n": 3}`) as the positional array the task takes,
/// using the parameter names its declaration records. A name the task does not have, or a
/// parameter without a value (other than an `Option`), is a [`TaskErrorKind::BadArguments`]
/// error naming it.
fn by_name(decl: &TaskDecl, args: &str) -> Result<String, TaskError> {
    let bad = |message: String| TaskError::new(TaskErrorKind::BadArguments, message);
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(args).map_err(|err| bad(format!("{}: arguments by name: {err}", decl.name)))?;
    let names: Vec<&str> = decl.params.iter().map(|p| p.name.as_str()).collect();
    let list = || {
        let described: Vec<String> = decl.params.iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
        format!("({})", described.join(", "))
    };
    if let Some(unknown) = object.keys().find(|key| !names.contains(&key.as_str())) {
        return Err(bad(format!("{}: no argument named {unknown:?}; it takes {}", decl.name, list())));
    }
    let mut positional = Vec::with_capacity(names.len());
    for param in decl.params.iter() {
        match object.get(param.name.as_str()) {
            Some(value) => positional.push(value.clone()),
            None if param.ty.as_str().starts_with("Option<") => positional.push(serde_json::Value::Null),
            None => {
                return Err(bad(format!(
                    "{}: missing argument {:?} ({}: {}); it takes {}",
                    decl.name,
                    param.name.as_str(),
                    param.name,
                    param.ty,
                    list()
                )))
            }
        }
    }
    Ok(serde_json::Value::Array(positional).to_string())
}
