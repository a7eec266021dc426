//! A worker process's start-up: load the plugins, build their states, say what the
//! configuration names that nothing loaded, then run until stopped ([`serve`]).

use super::WorkerConfig;
use crate::gearman::conn::ServerAddr;
use crate::plugins::{Registry, StateMode};
use log::{error, info, warn};

/// A worker process's body: loads the plugins from `plugins`, runs the worker until it is
/// stopped, logs how it went. Returns the process's exit code: 0 when stopped,
/// [`EXIT_RECYCLE`](crate::daemon::EXIT_RECYCLE) when it ended to be replaced (`--max-jobs`,
/// `--memlimit`), 2 when the plugins cannot be loaded. Used by `work` and by each worker
/// `start` forks.
pub fn serve(plugins: &std::path::Path, worker: &WorkerConfig) -> u8 {
    crate::log::init(worker.log.verbose);
    let mut registry = match Registry::scan(plugins) {
        Ok(registry) => registry,
        Err(err) => {
            log::error!("Cannot load plugins: {err}");
            return 2;
        }
    };
    for rejected in registry.rejected() {
        warn!("Skipped {rejected}");
    }
    // Plugin state, here in the worker (after the fork), before the first job; per job under
    // --atomic, so that no connection is shared between processes.
    let mode = if worker.atomic { StateMode::PerJob } else { StateMode::Eager };
    // A constructor may block (a Redis that accepts but never answers): each is logged before
    // it runs, has `state_timeout` to return, and a stop signal meanwhile ends the worker.
    let timeout = worker.plugin_settings.state_timeout;
    let refusals = crate::signals::while_building_states(|| {
        registry.build_states_watched(
            &worker.plugin_settings,
            mode,
            &mut |plugin| {
                info!("Building the state of plugin {plugin} (state_timeout {}s)", timeout.as_secs_f64());
                let message = format!(
                    "li3g-host: worker {}: plugin {plugin}'s state constructor did not return within {}s \
                     (plugins.state_timeout); the worker exits\n",
                    std::process::id(),
                    timeout.as_secs_f64()
                );
                crate::signals::state_deadline(Some((timeout, message)));
            },
            &mut || crate::signals::state_deadline(None),
        )
    });
    for refused in refusals {
        warn!("Skipped {refused}");
    }
    for unknown in unknown_tasks(&worker.configured_tasks, &registry) {
        warn!("Configuration: {unknown}");
    }
    for unused in unused_plugin_settings(&worker.plugin_settings, &registry) {
        warn!("Configuration: {unused}");
    }
    if let Err(message) = apply_sandbox(worker) {
        error!("Sandbox: {message}; the worker exits");
        return 2;
    }
    if !worker.atomic && (worker.cpu_limit.is_some() || !worker.cpu_limits.is_empty()) {
        warn!("Configuration: CPU limits (--cpu-limit, cpu_limit) apply to --atomic job children only; ignored");
    }
    info!("Worker started: {} tasks, servers {}", registry.task_names().len(), list(&worker.servers));
    let stats = super::run(&registry, worker, &crate::signals::stop_requested);
    info!("Worker ended: {} jobs completed, {} failed", stats.completed, stats.failed);
    let used_up = worker.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max);
    if stats.over_memory || (used_up && !crate::signals::stop_requested()) {
        crate::daemon::EXIT_RECYCLE as u8
    } else {
        0
    }
}

/// Under `--atomic`, builds every task's sandbox for its job children; otherwise restricts
/// this worker to the default sandbox, now that its plugins and states are built.
fn apply_sandbox(worker: &WorkerConfig) -> Result<(), String> {
    use super::sandbox;
    if worker.atomic {
        return sandbox::prepare_for_jobs(&worker.sandbox).map_err(|err| err.to_string());
    }
    if !worker.sandbox.tasks.is_empty() {
        warn!(
            "Sandbox: per-task sandboxes ({}) apply under --atomic only; this worker runs in the default sandbox, if any",
            worker.sandbox.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(applied) = sandbox::restrict_worker(&worker.sandbox)? {
        info!("Sandbox: the worker runs in {} (and its job servers' ports)", applied.rules);
    }
    Ok(())
}

/// A line for every plugin settings section that no loaded plugin reads: one naming no loaded
/// plugin (a typo), or one given to a plugin that takes no settings.
pub fn unused_plugin_settings(settings: &crate::plugins::PluginSettings, registry: &Registry) -> Vec<String> {
    let mut lines = Vec::new();
    for name in settings.values.keys() {
        let found = registry.plugins().iter().find(|p| &p.name == name);
        match found {
            None => lines.push(format!("{}.{name} names no loaded plugin; its settings are unused", settings.key)),
            Some(plugin) if plugin.settings.is_empty() => {
                lines.push(format!("{}.{name}: plugin {name} takes no settings; the section is unused", settings.key))
            }
            Some(_) => {}
        }
    }
    lines
}

/// A line for every task in `configured` (the configuration sets options for it) that no
/// loaded plugin has.
pub fn unknown_tasks<'a>(configured: impl IntoIterator<Item = &'a String>, registry: &Registry) -> Vec<String> {
    let known = registry.task_names();
    configured
        .into_iter()
        .filter(|task| !known.contains(task))
        .map(|task| format!("tasks.\"{task}\" names no loaded task; its settings are unused"))
        .collect()
}

fn list(servers: &[ServerAddr]) -> String {
    servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
