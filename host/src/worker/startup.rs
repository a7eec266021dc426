//! A worker process's start-up: load the plugins, build their states, say what the
//! configuration names that nothing loaded, then run until stopped ([`serve`]).

use super::WorkerConfig;
use crate::gearman::conn::ServerAddr;
use crate::plugins::{Registry, StateMode};
use log::{error, info, warn};

/// A worker process's body: loads the plugins from `plugins`, runs the worker until it is
/// stopped, logs how it went. Returns the process's exit code: 0 when stopped,
/// [`EXIT_RECYCLE`](crate::daemon::EXIT_RECYCLE) when it ended to be replaced (`--max-jobs`,
/// `--memlimit`, `work --max-age`, or SIGUSR2: the supervisor's `--max-age`), 2 when the plugins cannot be loaded. Used by `work` and by each worker
/// `start` forks.
pub fn serve(plugins: &std::path::Path, worker: &WorkerConfig) -> u8 {
    crate::log::init(worker.log.verbose);
    let registry = match prepare(plugins, worker) {
        Ok(registry) => registry,
        Err(Refused::Dir(err)) => {
            log::error!("Cannot load plugins: {err}");
            if !worker.log.verbose {
                eprintln!("li3g-host: error: cannot load plugins: {err}");
            }
            return 2;
        }
        Err(Refused::Plugins(lines)) => {
            for line in &lines {
                log::error!("Not starting: {line}");
                if !worker.log.verbose {
                    eprintln!("li3g-host: error: not starting: {line}");
                }
            }
            return EXIT_REFUSED;
        }
    };
    if let Err(message) = apply_sandbox(worker) {
        error!("Sandbox: {message}; the worker exits");
        if !worker.log.verbose {
            eprintln!("li3g-host: error: sandbox: {message}");
        }
        return 2;
    }
    if !worker.atomic && (worker.cpu_limit.is_some() || !worker.cpu_limits.is_empty()) {
        warn!("Configuration: CPU limits (--cpu-limit, cpu_limit) apply to --atomic job children only; ignored");
    }
    let selected = registry.task_names().iter().filter(|task| worker.selection.selects(task)).count();
    let pool = worker.pool.as_ref().map_or_else(String::new, |(pool, _)| format!(" of pool {pool}"));
    info!("Worker{pool} started: {}, servers {}", plural(selected, "task"), list(&worker.servers));
    if let Some(slot) = crate::scoreboard::current::own() {
        let tasks = registry.task_names();
        // The tasks it registers: a pool's worker counts its pool's only.
        let tasks: Vec<&str> = tasks.iter().map(String::as_str).filter(|t| worker.selection.selects(t)).collect();
        slot.loaded(registry.plugins().iter().map(|p| (p.name.as_str(), p.version.as_str())), &tasks);
        slot.state(crate::scoreboard::State::Idle);
        // Measured once here, then after each job where --memlimit measures it anyway.
        if let Some(rss) = super::resident_memory() {
            slot.rss(rss);
        }
    }
    let stats = super::run(&registry, worker, &crate::signals::stop_requested);
    crate::scoreboard::current::state(crate::scoreboard::State::Stopping);
    info!("Worker ended: {} completed, {} failed", plural(stats.completed as usize, "job"), stats.failed);
    let used_up = super::servers::used_up(worker, &stats);
    if stats.over_memory || crate::signals::recycle_requested() || (used_up && !crate::signals::stop_requested()) {
        crate::daemon::EXIT_RECYCLE as u8
    } else {
        0
    }
}

/// The exit code of a worker that does not start because a plugin that is not optional was
/// refused (`EX_CONFIG`). The daemon replaces such a worker only after its backoff (0.1 s
/// doubling to 30 s), so a transient outage heals without the pool spinning.
pub const EXIT_REFUSED: u8 = 78;

/// Why a worker does not start.
#[derive(Debug)]
pub enum Refused {
    /// The plugins directory cannot be read or is insecure.
    Dir(crate::plugins::ScanError),
    /// Plugins that are not optional were refused: one line each, naming the plugin, its file
    /// and the reason.
    Plugins(Vec<String>),
}

/// A refusal as one line: the plugin, its file and the reason.
pub fn refusal_line(rejected: &crate::plugins::Rejected) -> String {
    match &rejected.reason {
        // The reason names the plugin already.
        crate::plugins::registry::Reason::State(reason) => format!("{} ({})", reason, rejected.path.display()),
        reason => format!("plugin {} ({}): {reason}", rejected.plugin, rejected.path.display()),
    }
}

/// A worker's start-up up to its first job: loads the plugins from `plugins`, builds their
/// states, logs what was skipped and what the configuration names that nothing loaded.
/// `start` runs it once in a forked child before the pool starts, so that a refused plugin
/// stops it in the foreground.
///
/// # Errors
/// [`Refused`] when the directory cannot be read or a plugin that is not optional was refused.
pub fn prepare(plugins: &std::path::Path, worker: &WorkerConfig) -> Result<Registry, Refused> {
    prepare_announcing(plugins, worker, &mut |_| {})
}

/// [`prepare`], calling `announce` with each plugin's name before its state constructor runs
/// and with `None` once it returned (`start`'s check names the plugin whose constructor killed
/// the process).
///
/// # Errors
/// As [`prepare`].
pub fn prepare_announcing(
    plugins: &std::path::Path,
    worker: &WorkerConfig,
    announce: &mut dyn FnMut(Option<&str>),
) -> Result<Registry, Refused> {
    let mut registry = Registry::scan(plugins).map_err(Refused::Dir)?;
    // Plugin state, here in the worker (after the fork), before the first job; per job under
    // --atomic, so that no connection is shared between processes.
    let mode = if worker.atomic { StateMode::PerJob } else { StateMode::Eager };
    // A constructor may block (a Redis that accepts but never answers): each is logged before
    // it runs, has `state_timeout` to return, and a stop signal meanwhile ends the worker.
    let timeout = worker.plugin_settings.state_timeout;
    let announce = std::cell::RefCell::new(announce);
    crate::signals::while_building_states(|| {
        registry.build_states_watched(
            &worker.plugin_settings,
            mode,
            &mut |plugin| {
                (announce.borrow_mut())(Some(plugin));
                info!("Building the state of plugin {plugin} (state_timeout {}s)", timeout.as_secs_f64());
                let message = format!(
                    "li3g-host: worker {}: plugin {plugin}'s state constructor did not return within {}s \
                     (plugins.state_timeout); the worker exits\n",
                    std::process::id(),
                    timeout.as_secs_f64()
                );
                crate::signals::state_deadline(Some((timeout, message)));
            },
            &mut || {
                crate::signals::state_deadline(None);
                (announce.borrow_mut())(None);
            },
        )
    });
    let optional = &worker.plugin_settings.optional;
    let fatal: Vec<String> = registry.fatal(optional).into_iter().map(refusal_line).collect();
    if !fatal.is_empty() {
        return Err(Refused::Plugins(
            fatal
                .into_iter()
                .map(|line| format!("{line}; fix it, or list the plugin in plugins.optional to skip it"))
                .collect(),
        ));
    }
    for rejected in registry.rejected() {
        warn!("Skipped optional {}", refusal_line(rejected));
    }
    for unknown in unknown_tasks(&worker.configured_tasks, &registry) {
        warn!("Configuration: {unknown}");
    }
    for unused in unused_plugin_settings(&worker.plugin_settings, &registry) {
        warn!("Configuration: {unused}");
    }
    if let Some((pool, patterns)) = &worker.pool {
        for unclaimed in unclaimed_patterns(pool, patterns, &registry) {
            warn!("Configuration: {unclaimed}");
        }
    }
    Ok(registry)
}

/// `1 task`, `4 tasks`.
pub fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
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

/// A line for every pattern of pool `pool` that claims no loaded task (a typo, or a plugin
/// that is not there).
pub fn unclaimed_patterns(pool: &str, patterns: &[super::selection::TaskPattern], registry: &Registry) -> Vec<String> {
    let known = registry.task_names();
    patterns
        .iter()
        .filter(|pattern| !known.iter().any(|task| pattern.matches(task)))
        .map(|pattern| {
            format!(
                "pools.{pool}.tasks: \"{pattern}\" claims no loaded task; the pool's workers register nothing for it"
            )
        })
        .collect()
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
