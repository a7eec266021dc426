//! A test kit for plugin authors: call a plugin's tasks from its own `cargo test`, as the host
//! will, without a job server or a host process.
//!
//! ```toml
//! [dev-dependencies]
//! li3g-plugin-api = { version = "0.3", features = ["testing"] }
//! serde_json = "1"
//! ```
//!
//! ```
//! # use li3g_plugin_api::{plugin, Job};
//! fn say(name: String) -> String {
//!     format!("Hello {name}")
//! }
//! fn count(job: &Job, to: u64) -> Result<u64, String> {
//!     if to == 0 {
//!         return Err("nothing to count".into());
//!     }
//!     (1..=to).for_each(|i| job.progress(i, to));
//!     Ok(to)
//! }
//! plugin! { tasks: { "Greeter::say"(name) => say, "Greeter::count"(to) => count } }
//!
//! // In a plugin's tests: `Harness::new(crate::LI3G_PLUGIN)`, or `my_tasks::LI3G_PLUGIN` from tests/.
//! use li3g_plugin_api::testing::Harness;
//! use serde_json::json;
//!
//! let mut harness = Harness::new(LI3G_PLUGIN);
//! assert_eq!(harness.call("Greeter::say", json!(["Mariano"])).text(), "Hello Mariano");
//! let counted = harness.call("Greeter::count", json!([3]));
//! assert_eq!(counted.json(), json!(3));
//! assert_eq!(counted.progress, [(1, 3), (2, 3), (3, 3)]);
//! assert_eq!(harness.call("Greeter::count", json!([0])).failure(), Some("nothing to count"));
//! ```
//!
//! What is the same as in the host: the dispatch itself ([`crate::dispatch`]: the job name
//! resolved as li3_gearman's were, `Class` is `Class::run`, a leading `\` and a namespace the
//! plugin does not claim are dropped; the arguments decoded by the task's own code; its
//! result turned into the bytes a client gets), the job context ([`Harness::id`],
//! [`Harness::environment`], [`Harness::env`]), and the state: built by the plugin's own
//! constructor from [`Harness::settings`] (the TOML of its configuration section, as in
//! `[default.plugins.<name>]`), once, when the first task that takes it is called, and kept
//! across calls as a worker keeps it, until the settings change or [`Harness::reset_state`].
//! What differs: the plugin is linked into the test, not loaded from a `.so`, so abi_stable's
//! load-time checks and the host's file checks do not run; `li3g-host plugins` and `exec`
//! cover those.

use crate::abi::{PluginMod_Ref, PluginState, TaskDecl, TaskError, TaskErrorKind};
use crate::dispatch::{self, JobEvents, JobInfo, TaskOutput};
use crate::PluginEntry;
use abi_stable::std_types::{RResult, RStr};

/// Calls the tasks of one plugin, with settings, state and a job context of your choosing.
pub struct Harness {
    name: String,
    tasks: Vec<TaskDecl>,
    stateful: Vec<String>,
    connect: Option<crate::abi::ConnectFn>,
    settings: serde_json::Value,
    state: Option<PluginState>,
    info: JobInfo,
}

/// What one call produced: the result or the failure, and what the task reported meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The task's name as dispatched (`Hello::run` for a job named `Hello`).
    pub task: String,
    /// The result (a string result as [`TaskOutput::Text`], anything else as JSON), or the
    /// error: bad arguments, the task's error, a caught panic, its state not built.
    pub result: Result<TaskOutput, TaskError>,
    /// Every `job.progress(n, d)`, in order.
    pub progress: Vec<(u64, u64)>,
    /// Every `job.send_data(..)` chunk, in order.
    pub data: Vec<Vec<u8>>,
    /// Every `job.warn(..)`, in order.
    pub warnings: Vec<Vec<u8>>,
}

impl Call {
    /// The bytes a client would receive, as text.
    ///
    /// # Panics
    /// When the task failed (with its message), or the bytes are not UTF-8.
    pub fn text(&self) -> &str {
        match &self.result {
            Ok(output) => std::str::from_utf8(output.as_bytes()).expect("the result is UTF-8"),
            Err(err) => panic!("{} failed: {}", self.task, err.message),
        }
    }

    /// The result as JSON: a string result as a JSON string, anything else parsed.
    ///
    /// # Panics
    /// When the task failed (with its message).
    pub fn json(&self) -> serde_json::Value {
        match &self.result {
            Ok(TaskOutput::Text(text)) => serde_json::Value::String(text.clone()),
            Ok(TaskOutput::Json(json)) => serde_json::from_str(json).expect("the plugin returns valid JSON"),
            Err(err) => panic!("{} failed: {}", self.task, err.message),
        }
    }

    /// The failure message a client would receive, or `None` when the task succeeded.
    pub fn failure(&self) -> Option<&str> {
        self.result.as_ref().err().map(|err| err.message.as_str())
    }

    /// What kind of failure, or `None` when the task succeeded.
    pub fn failure_kind(&self) -> Option<TaskErrorKind> {
        self.result.as_ref().err().map(|err| err.kind)
    }

    /// The partial data chunks joined, as text (lossy).
    pub fn data_text(&self) -> String {
        String::from_utf8_lossy(&self.data.concat()).into_owned()
    }
}

#[derive(Default)]
struct Recorder {
    progress: Vec<(u64, u64)>,
    data: Vec<Vec<u8>>,
    warnings: Vec<Vec<u8>>,
}

impl JobEvents for Recorder {
    fn status(&mut self, numerator: u64, denominator: u64) {
        self.progress.push((numerator, denominator));
    }
    fn data(&mut self, data: &[u8]) {
        self.data.push(data.to_vec());
    }
    fn warning(&mut self, data: &[u8]) {
        self.warnings.push(data.to_vec());
    }
}

impl Harness {
    /// The plugin as the host would load it: its `init` run and its declarations checked.
    ///
    /// # Panics
    /// When the plugin refuses to load (its `init` failed, a task name is invalid or declared
    /// twice), with the message the host would log. [`Harness::try_new`] returns it instead.
    pub fn new(plugin: PluginEntry) -> Harness {
        Harness::try_new(plugin).unwrap_or_else(|message| panic!("{message}"))
    }

    /// As [`Harness::new`], with the refusal as an error.
    ///
    /// # Errors
    /// The message the host would log for a plugin that refuses to load.
    pub fn try_new(plugin: PluginEntry) -> Result<Harness, String> {
        let module: PluginMod_Ref = (plugin.root_module)().map_err(|err| err.to_string())?;
        let name = module.name().to_string();
        let tasks = (module.tasks())().into_vec();
        let stateful = module.stateful_tasks().map(|f| f().into_iter().map(Into::into).collect()).unwrap_or_default();
        let connect = module.connect().flatten();
        Ok(Harness {
            name,
            tasks,
            stateful,
            connect,
            settings: serde_json::json!({}),
            state: None,
            info: JobInfo { id: "test".into(), ..JobInfo::default() },
        })
    }

    /// The plugin's settings, as the TOML of its configuration section (what follows
    /// `[default.plugins.<name>]`), e.g. `url = "redis://127.0.0.1:6379/0"`. The state is
    /// built afresh with them.
    ///
    /// # Panics
    /// When `toml` is not TOML (a bug in the test).
    pub fn settings(self, toml: &str) -> Harness {
        let table: toml::Table = toml::from_str(toml).unwrap_or_else(|err| panic!("the settings are not TOML: {err}"));
        // As the host turns a configuration section into the JSON the constructor decodes.
        self.settings_json(serde_json::to_value(table).expect("TOML converts to JSON"))
    }

    /// The plugin's settings as JSON (the object the host passes to the constructor).
    pub fn settings_json(mut self, settings: serde_json::Value) -> Harness {
        self.settings = settings;
        self.state = None;
        self
    }

    /// The job id tasks see (`job.id()`; `test` by default).
    pub fn id(mut self, id: &str) -> Harness {
        self.info.id = id.into();
        self
    }

    /// The environment name tasks see (`job.environment()`; empty by default).
    pub fn environment(mut self, name: &str) -> Harness {
        self.info.environment = name.into();
        self
    }

    /// An environment value tasks see (`job.env(name)`): li3_gearman's `env` entries.
    pub fn env(mut self, name: &str, value: &str) -> Harness {
        self.info.env_vars.push((name.into(), value.into()));
        self
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's task names, in declaration order.
    pub fn task_names(&self) -> Vec<&str> {
        self.tasks.iter().map(|decl| decl.name.as_str()).collect()
    }

    /// Builds the plugin's state now (if it has one and it is not built), as a worker does
    /// before its first job.
    ///
    /// # Errors
    /// The constructor's error: kind [`TaskErrorKind::BadArguments`] when the settings do not
    /// fit (the message names the key: `url: invalid type: ...`), else its failure or panic.
    pub fn build_state(&mut self) -> Result<(), TaskError> {
        if self.state.is_some() {
            return Ok(());
        }
        let Some(connect) = self.connect else { return Ok(()) };
        match connect(RStr::from_str(&self.settings.to_string())) {
            RResult::ROk(state) => {
                self.state = Some(state);
                Ok(())
            }
            RResult::RErr(err) => Err(err),
        }
    }

    /// Drops the state (its destructor runs), so that the next call builds it afresh.
    pub fn reset_state(&mut self) {
        self.state = None;
    }

    /// Calls the task a job named `task` dispatches to, with `args` (a JSON array of the
    /// positional arguments; any other value is the one argument, as a client's workload).
    ///
    /// # Panics
    /// When the plugin has no such task (the message lists those it has).
    pub fn call(&mut self, task: &str, args: serde_json::Value) -> Call {
        let name = dispatch::resolve(task, |name| self.tasks.iter().any(|decl| decl.name.as_str() == name));
        let Some(index) = self.tasks.iter().position(|decl| decl.name.as_str() == name) else {
            panic!("plugin {} has no task {name}; it has {}", self.name, self.task_names().join(", "));
        };
        let mut events = Recorder::default();
        let takes_state = self.connect.is_some() && self.stateful.contains(&name);
        let result = match takes_state.then(|| self.build_state()) {
            Some(Err(err)) => Err(TaskError::new(
                err.kind,
                format!("task {name} cannot run: the state of plugin {} was not built: {}", self.name, err.message),
            )),
            _ => dispatch::invoke(&self.tasks[index], &args.to_string(), &self.info, self.state.as_ref(), &mut events),
        };
        Call { task: name, result, progress: events.progress, data: events.data, warnings: events.warnings }
    }
}
