//! The registry of loaded plugins and their tasks.
//!
//! [`Registry::scan`] loads every `*.so` in a directory, in file-name order so that the result
//! does not depend on the file system. A file that cannot be used is skipped and kept in
//! [`Registry::rejected`] with its reason; the others load. A task name defined twice rejects
//! the later file, naming both.
//!
//! Plugin state ([`Registry::build_states`]): a plugin that declares a state constructor gets
//! its settings (its configuration section) and builds its state in the worker, after the
//! fork, before the first job; the state is dropped with the registry, when the worker ends.
//! Under `--atomic` ([`StateMode::PerJob`]) the worker only checks that the state can be
//! built (and drops it at once), and each job child builds its own on first use and drops it
//! after the job: no connection is ever shared between processes.

mod errors;
pub use errors::{DispatchError, Reason, Rejected, ScanError};

use super::invoke::{self, JobEvents, JobInfo, TaskOutput};
use super::loader::{self, LoadError};
use super::permissions;
use abi_stable::std_types::{RResult, RStr};
use li3g_plugin_api::abi::{ConnectFn, PluginState, TaskDecl};
use li3g_plugin_api::{validate_task_name, TaskError, TaskErrorKind};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// A loaded plugin.
pub struct Plugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its name, as it declares it.
    pub name: String,
    /// Its version, as it declares it.
    pub version: String,
    /// Its tasks, as it declares them.
    pub tasks: Vec<TaskDecl>,
    /// The settings it takes (`RedisSettings { url }`), empty when none.
    pub settings: String,
    /// Its state constructor, when it declares one.
    connect: Option<ConnectFn>,
    /// The tasks that take the state (`None`: unknown, so all of them).
    pub stateful: Option<std::collections::HashSet<String>>,
}

impl Plugin {
    /// Whether task `name` of this plugin takes its state.
    pub fn takes_state(&self, name: &str) -> bool {
        self.connect.is_some() && self.stateful.as_ref().is_none_or(|tasks| tasks.contains(name))
    }
}

/// How long a plugin's state constructor may take in a worker by default (see
/// [`PluginSettings::state_timeout`]).
pub const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where plugins' settings come from: the configuration's `[<config>.plugins.<name>]` sections.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The configuration file, for messages ("configuration" when none).
    pub file: Option<PathBuf>,
    /// The key the sections live under, for messages: `default.plugins`.
    pub key: String,
    /// Each plugin's section, by plugin name, as JSON.
    pub values: BTreeMap<String, serde_json::Value>,
    /// How long one plugin's state constructor may take in a worker (`plugins.state_timeout`)
    /// before the worker exits; enforced by the worker, not here.
    pub state_timeout: std::time::Duration,
    /// By plugin, the top-level keys an environment override set, with the section they came
    /// from (in place of `key`, for messages).
    pub origins: BTreeMap<String, BTreeMap<String, String>>,
    /// The plugins that may be refused (`plugins.optional`): skipped with a warning. Any other
    /// refusal stops a worker from starting (see [`Registry::fatal`]).
    pub optional: Vec<String>,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            file: None,
            key: String::new(),
            values: BTreeMap::new(),
            state_timeout: STATE_TIMEOUT,
            origins: BTreeMap::new(),
            optional: Vec::new(),
        }
    }
}

/// How plugin state is built (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    /// Once per worker, kept until the worker ends.
    Eager,
    /// Checked once in the worker, then built afresh for each job, in the job's child.
    PerJob,
}

/// Where a task lives: plugin index and task index within it.
#[derive(Clone, Copy)]
struct Slot {
    plugin: usize,
    task: usize,
}

/// The loaded plugins and the task names they answer to.
#[derive(Default)]
pub struct Registry {
    plugins: Vec<Plugin>,
    rejected: Vec<Rejected>,
    tasks: HashMap<String, Slot>,
    /// Each plugin's state, by plugin index; dropped (closing what it holds) with the registry.
    states: RefCell<Vec<Option<PluginState>>>,
    /// How states are built; `None` until [`Registry::build_states`].
    mode: Option<StateMode>,
    settings: PluginSettings,
}

pub use li3g_plugin_api::dispatch::canonical_task_name;

/// The task li3_gearman's `li3 gearmand ping` runs through its envelope (sent as
/// `\li3_gearman\Gearman::ping`, high priority, synchronous): its workers answer
/// [`LI3_GEARMAN_PONG`], and so do li3g's, unless a plugin defines the task.
pub const LI3_GEARMAN_PING: &str = "li3_gearman\\Gearman::ping";

/// What li3_gearman's `Gearman::ping` returns, and what its `ping` command prints.
pub const LI3_GEARMAN_PONG: &str = "OK";

impl Registry {
    /// Loads every `*.so` file in `dir` (not recursively; hidden files are skipped).
    ///
    /// # Errors
    /// [`ScanError`] when the directory itself cannot be read or is insecure. Files that
    /// cannot be loaded do not fail the scan: they are listed by [`Registry::rejected`].
    pub fn scan(dir: &Path) -> Result<Registry, ScanError> {
        check_dir(dir)?;
        let io = |error| ScanError::Io { path: dir.to_path_buf(), error };
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_plugin_file_name(path))
            .collect();
        files.sort();
        let mut registry = Registry::default();
        for path in files {
            registry.add_file(path);
        }
        // The example plugin linked into the binary, when the directory next to it (the last
        // place the plugins directory is looked for) has no file serving it: `cargo install`
        // installs no `.so`.
        if let Some(example) = super::builtin::example_for(dir) {
            if !registry.tasks.contains_key(super::builtin::EXAMPLE_TASK) {
                match example.load() {
                    Ok(module) => {
                        if let Err(reason) = registry.add_module(Path::new(super::builtin::EXAMPLE_PATH), module) {
                            registry.rejected.push(Rejected {
                                path: super::builtin::EXAMPLE_PATH.into(),
                                plugin: "hello".into(),
                                reason,
                            });
                        }
                    }
                    Err(err) => registry.rejected.push(Rejected {
                        path: super::builtin::EXAMPLE_PATH.into(),
                        plugin: "hello".into(),
                        reason: Reason::Load(LoadError::LoaderFailed(err.to_string())),
                    }),
                }
            }
        }
        Ok(registry)
    }

    /// Loads one file, recording it as loaded or rejected.
    fn add_file(&mut self, path: PathBuf) {
        if let Err(reason) = self.try_add_file(&path) {
            let plugin = file_plugin_name(&path);
            self.rejected.push(Rejected { path, plugin, reason });
        }
    }

    fn try_add_file(&mut self, path: &Path) -> Result<(), Reason> {
        // The descriptor that is checked is the file that loads (see the loader).
        let (file, meta) = loader::open(path)?;
        permissions::check(path, &meta)?;
        let module = loader::load(&file)?;
        self.add_module(path, module)
    }

    /// Registers a loaded root module as the plugin at `path`.
    fn add_module(&mut self, path: &Path, module: li3g_plugin_api::abi::PluginMod_Ref) -> Result<(), Reason> {
        let tasks: Vec<TaskDecl> = (module.tasks())().into_iter().collect();
        for decl in &tasks {
            validate_task_name(&decl.name).map_err(Reason::BadTaskName)?;
            if let Some(slot) = self.tasks.get(decl.name.as_str()) {
                return Err(Reason::DuplicateTask {
                    task: decl.name.to_string(),
                    first: self.plugins[slot.plugin].path.clone(),
                });
            }
        }
        let plugin = self.plugins.len();
        for (task, decl) in tasks.iter().enumerate() {
            self.tasks.insert(decl.name.to_string(), Slot { plugin, task });
        }
        self.plugins.push(Plugin {
            path: path.to_path_buf(),
            name: module.name().to_string(),
            version: module.version().to_string(),
            tasks,
            // Both are absent from plugins built before 0.2's prefix fields.
            settings: module.settings().map(|f| f().into_string()).unwrap_or_default(),
            connect: module.connect().flatten(),
            stateful: module.stateful_tasks().map(|f| f().into_iter().map(|n| n.into_string()).collect()),
        });
        self.states.get_mut().push(None);
        Ok(())
    }

    /// Builds each plugin's state from its settings (see the module doc); a plugin whose
    /// settings do not fit or whose constructor fails or panics is refused: its tasks are
    /// dropped from this registry. Returns the refusals, to be logged.
    pub fn build_states(&mut self, settings: &PluginSettings, mode: StateMode) -> Vec<String> {
        self.build_states_watched(settings, mode, &mut |_| {}, &mut || {})
    }

    /// [`Registry::build_states`], calling `before` with each plugin's name before its
    /// constructor runs and `after` once it returned (a worker logs and arms a deadline).
    ///
    /// Under [`StateMode::PerJob`] the worker must stay single-threaded (it forks each job): a
    /// plugin whose constructor leaves another thread running is refused, naming it.
    pub fn build_states_watched(
        &mut self,
        settings: &PluginSettings,
        mode: StateMode,
        before: &mut dyn FnMut(&str),
        after: &mut dyn FnMut(),
    ) -> Vec<String> {
        self.settings = settings.clone();
        self.mode = Some(mode);
        let mut refused = Vec::new();
        for index in 0..self.plugins.len() {
            if self.plugins[index].connect.is_none() {
                continue;
            }
            before(&self.plugins[index].name);
            // Threads others started (a plugin's `init`) are not this constructor's doing.
            let baseline = crate::process::thread_count().unwrap_or(1);
            let checked = if mode == StateMode::PerJob && baseline == 1 { self.check_in_child(index) } else { None };
            let built = match checked {
                Some(result) => result.map(|()| None),
                None => self.construct(index).map(Some),
            };
            after();
            let built = match built {
                Ok(Some(state)) if mode == StateMode::PerJob => {
                    let with_state = crate::process::thread_count().unwrap_or(1);
                    drop(state);
                    let dropped = crate::process::thread_count().unwrap_or(1);
                    self.thread_check(index, baseline, with_state, dropped)
                }
                other => other,
            };
            match built {
                Ok(Some(state)) => self.states.get_mut()[index] = Some(state),
                Ok(None) => {}
                Err(message) => {
                    self.tasks.retain(|_, slot| slot.plugin != index);
                    let plugin = &self.plugins[index];
                    refused.push(format!("{}: {message}", plugin.path.display()));
                    self.rejected.push(Rejected {
                        path: plugin.path.clone(),
                        plugin: plugin.name.clone(),
                        reason: Reason::State(message),
                    });
                }
            }
        }
        refused
    }

    /// Under `--atomic`: `Err` naming the plugin when its constructor left threads running
    /// (`with_state` and `dropped` threads against `baseline` before it ran).
    fn thread_check(
        &self,
        index: usize,
        baseline: usize,
        with_state: usize,
        dropped: usize,
    ) -> Result<Option<PluginState>, String> {
        match with_state.max(dropped) {
            n if n <= baseline => Ok(None),
            n => Err(format!(
                "plugin {} refused under --atomic: its state constructor started a thread ({n} threads{}); \
                 a worker that forks each job must stay single-threaded, so a constructor must not leave \
                 threads running",
                self.plugins[index].name,
                if dropped > baseline { ", still running after its state was dropped" } else { "" }
            )),
        }
    }

    /// Under `--atomic`, checks plugin `index`'s state in a forked child (built, threads
    /// counted, dropped), so that nothing the constructor or the destructor does (a thread, a
    /// panic that aborts, a connection) stays in the forking worker. `None` when no child could
    /// be forked (the caller checks in this process).
    fn check_in_child(&self, index: usize) -> Option<Result<(), String>> {
        use std::io::{Read, Write};
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let read_fd = std::os::fd::AsRawFd::as_raw_fd(&read);
        let body = move || {
            // The child's copy of the read end; the parent keeps its own.
            let _ = nix::unistd::close(read_fd);
            let answer = match self.construct(index) {
                Ok(state) => {
                    let with_state = crate::process::thread_count().unwrap_or(1);
                    drop(state);
                    let dropped = crate::process::thread_count().unwrap_or(1);
                    match self.thread_check(index, 1, with_state, dropped) {
                        Ok(_) => String::new(),
                        Err(message) => message,
                    }
                }
                Err(message) => message,
            };
            let _ = std::fs::File::from(write).write_all(answer.as_bytes());
            0
        };
        let child = crate::process::fork_child(|| {}, body).ok()?;
        let mut answer = String::new();
        let _ = std::fs::File::from(read).read_to_string(&mut answer);
        let status = nix::sys::wait::waitpid(child, None);
        let name = &self.plugins[index].name;
        Some(match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) if answer.is_empty() => Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Err(answer),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => Err(format!(
                "plugin {name} refused: its state check (constructor, then destructor) was killed by {signal:?}"
            )),
            other => Err(format!("plugin {name} refused: its state check ended with {other:?}")),
        })
    }

    /// Runs plugin `index`'s constructor with its settings; `Err` is the refusal message.
    fn construct(&self, index: usize) -> Result<PluginState, String> {
        let plugin = &self.plugins[index];
        let Some(connect) = plugin.connect else { return Err(format!("plugin {} has no state", plugin.name)) };
        let json = self.settings.values.get(&plugin.name).cloned().unwrap_or_else(|| serde_json::json!({}));
        match connect(RStr::from_str(&json.to_string())) {
            RResult::ROk(state) => Ok(state),
            RResult::RErr(err) if err.kind == TaskErrorKind::BadArguments => {
                let file = self.settings.file.as_ref().map(|f| f.display().to_string());
                // The section the offending top-level key came from: an override's, or the base.
                let field = err.message.split([':', '.', '[']).next().unwrap_or("");
                let section = self
                    .settings
                    .origins
                    .get(&plugin.name)
                    .and_then(|origins| origins.get(field))
                    .unwrap_or(&self.settings.key);
                let key = format!("{section}.{}", plugin.name);
                // The plugin names the key inside its section: `url: invalid type...`, or `.: ...`.
                let key = match err.message.strip_prefix(".: ") {
                    Some(message) => format!("{key}: {message}"),
                    None => format!("{key}.{}", err.message),
                };
                Err(format!("plugin {} refused: {}: {key}", plugin.name, file.as_deref().unwrap_or("configuration")))
            }
            RResult::RErr(err) => Err(format!(
                "plugin {} refused in this worker: its state constructor failed: {}",
                plugin.name, err.message
            )),
        }
    }

    /// The loaded plugins, in file-name order.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// The files that were not loaded, with their reasons.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// The refusals that stop a worker from starting: every rejected file or refused plugin
    /// that `optional` (`plugins.optional`) does not name.
    pub fn fatal<'a>(&'a self, optional: &[String]) -> Vec<&'a Rejected> {
        self.rejected.iter().filter(|r| !optional.contains(&r.plugin)).collect()
    }

    /// Every task name, sorted.
    pub fn task_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().cloned().collect();
        names.sort();
        names
    }

    /// The declaration of the task a job name dispatches to (see [`Registry::resolve`]).
    pub fn task(&self, job_name: &str) -> Option<&TaskDecl> {
        self.lookup(&self.resolve(job_name))
    }

    /// The name of the task a job name dispatches to: its [`canonical_task_name`] when a plugin
    /// has that task; otherwise, when the class carries a namespace (li3_gearman sent
    /// `\app\tasks\Hello::say`), the task of the bare class (`Hello::say`) if a plugin has it.
    /// An exact name always wins, so a plugin can still claim a namespaced name for itself.
    pub fn resolve(&self, job_name: &str) -> String {
        li3g_plugin_api::dispatch::resolve(job_name, |name| self.tasks.contains_key(name))
    }

    /// The declaration of the task named exactly `name` (already canonical).
    fn lookup(&self, name: &str) -> Option<&TaskDecl> {
        let slot = self.tasks.get(name)?;
        Some(&self.plugins[slot.plugin].tasks[slot.task])
    }

    /// Runs the task `job_name` dispatches to with the JSON array `args`.
    ///
    /// # Errors
    /// [`DispatchError::UnknownTask`] when no plugin has the task, [`DispatchError::Task`]
    /// when it fails (bad arguments, an error it returned, a panic).
    pub fn dispatch(
        &self,
        job_name: &str,
        args: &str,
        info: &JobInfo,
        events: &mut dyn JobEvents,
    ) -> Result<TaskOutput, DispatchError> {
        self.prepare(job_name).run(args, info, events)
    }

    /// Finds the task `job_name` dispatches to, for [`PreparedTask::run`] to call: under `--atomic`
    /// the worker looks it up before the fork, so the job child only calls it (every page of
    /// code or data the child touches first is a page fault of its own).
    pub fn prepare(&self, job_name: &str) -> PreparedTask<'_> {
        let resolved = self.resolve(job_name);
        // The registry's own copy of the name, so nothing allocated here is freed after the
        // fork (a free writes the heap, and after a fork that copies the page).
        let target = match self.tasks.get_key_value(&resolved) {
            Some((name, slot)) => Ok((name.as_str(), Some((&self.plugins[slot.plugin].tasks[slot.task], slot.plugin)))),
            None if resolved == LI3_GEARMAN_PING => Ok((LI3_GEARMAN_PING, None)),
            None => Err(DispatchError::UnknownTask { name: resolved, known: self.task_names() }),
        };
        PreparedTask { registry: self, target }
    }
}

/// A task looked up by [`Registry::prepare`], ready to run.
pub struct PreparedTask<'a> {
    registry: &'a Registry,
    /// Its resolved name, and its declaration and plugin (`None` for li3_gearman's ping, which
    /// no plugin has).
    #[allow(clippy::type_complexity)]
    target: Result<(&'a str, Option<(&'a TaskDecl, usize)>), DispatchError>,
}

impl PreparedTask<'_> {
    /// Runs the task with the JSON array `args`.
    ///
    /// # Errors
    /// As [`Registry::dispatch`].
    pub fn run(self, args: &str, info: &JobInfo, events: &mut dyn JobEvents) -> Result<TaskOutput, DispatchError> {
        let (name, Some((decl, plugin))) = self.target? else {
            // li3_gearman's own health check: `li3 gearmand ping` expects exactly this.
            return Ok(TaskOutput::Text(LI3_GEARMAN_PONG.into()));
        };
        let registry = self.registry;
        if registry.mode == Some(StateMode::PerJob) && registry.plugins[plugin].takes_state(name) {
            // This job's own state, built here (in the job's child) and dropped after the job;
            // only for a task that takes it.
            let state = registry.construct(plugin).map_err(|message| {
                TaskError::new(TaskErrorKind::Failed, format!("task {name} cannot run: {message}"))
            })?;
            return Ok(invoke::invoke(decl, args, info, Some(&state), events)?);
        }
        let states = registry.states.borrow();
        Ok(invoke::invoke(decl, args, info, states[plugin].as_ref(), events)?)
    }
}

/// Checks that `dir` is a directory that only its owner (us or root) can write, without
/// loading anything from it.
///
/// # Errors
/// [`ScanError`] when it is missing, not a directory, or insecure.
pub fn check_dir(dir: &Path) -> Result<(), ScanError> {
    let io = |error| ScanError::Io { path: dir.to_path_buf(), error };
    let meta = fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")));
    }
    permissions::check(dir, &meta).map_err(ScanError::Insecure)
}

/// The plugin name a file goes by before it loads: `libaudit.so` is `audit`.
fn file_plugin_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.strip_prefix("lib").map(str::to_string).unwrap_or(stem)
}

fn is_plugin_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && name.ends_with(".so")
}

#[cfg(test)]
mod tests {
    use super::canonical_task_name as c;

    #[test]
    fn job_names_resolve_like_li3_gearman() {
        assert_eq!(c("Hello::say"), "Hello::say");
        assert_eq!(c("Hello"), "Hello::run");
        assert_eq!(c("\\app\\tasks\\Hello"), "app\\tasks\\Hello::run");
        assert_eq!(c("\\app\\tasks\\Hello::say"), "app\\tasks\\Hello::say");
    }
}
