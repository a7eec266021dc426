//! `li3g-host plugins`: what loaded, with versions and task signatures, and what did not.

use super::{plugins_dir, Common};
use crate::plugins::registry::Reason;
use crate::plugins::{Registry, Rejected};
use crate::worker::startup::plural;
use clap::Args;
use li3g_plugin_api::abi::TaskDecl;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct PluginsArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
}

pub(super) fn run(args: &PluginsArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let dir = plugins_dir(&config)?;
    let mut registry = Registry::scan(&dir)?;
    // The states too, as a worker builds them: a plugin refused for its settings or its
    // constructor is refused here as well (`start` would not start).
    let settings = config.plugin_settings();
    // Each constructor has `plugins.state_timeout`, as in a worker: past it, `plugins` says
    // which and exits (3), instead of hanging.
    let timeout = settings.state_timeout;
    crate::signals::while_building_states(|| {
        registry.build_states_watched(
            &settings,
            crate::plugins::StateMode::Eager,
            &mut |plugin| {
                let message = format!(
                    "li3g-host: error: plugin {plugin}'s state constructor did not return within {}s \
                     (plugins.state_timeout)\n",
                    timeout.as_secs_f64()
                );
                crate::signals::state_deadline(Some((timeout, message)));
            },
            &mut || crate::signals::state_deadline(None),
        )
    });
    print!("{}", render(&dir, &registry, &config));
    for unknown in crate::worker::unknown_tasks(config.tasks.keys(), &registry) {
        eprintln!("li3g-host: warning: configuration {}: {unknown}", config.name);
    }
    for unused in crate::worker::unused_plugin_settings(&config.plugin_settings(), &registry) {
        eprintln!("li3g-host: warning: {unused}");
    }
    for pool in &config.pools {
        for unclaimed in crate::worker::unclaimed_patterns(&pool.name, &pool.tasks, &registry) {
            eprintln!("li3g-host: warning: configuration {}: {unclaimed}", config.name);
        }
    }
    let fatal = registry.fatal(&settings.optional);
    for rejected in &fatal {
        eprintln!("li3g-host: error: {}", crate::worker::startup::refusal_line(rejected));
    }
    Ok(if fatal.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The listing: a header line, each plugin with its tasks (and each task's sandbox, when the
/// configuration gives it one), then the rejected files.
fn render(dir: &std::path::Path, registry: &Registry, config: &crate::config::Config) -> String {
    let mut out = String::new();
    let is_refusal = |r: &&Rejected| matches!(r.reason, Reason::State(_));
    let refused: Vec<&Rejected> = registry.rejected().iter().filter(is_refusal).collect();
    let files: Vec<&Rejected> = registry.rejected().iter().filter(|r| !is_refusal(r)).collect();
    let loaded = registry.plugins().len() - refused.len();
    out += &format!(
        "{}: {} loaded, {} refused, {} rejected\n",
        dir.display(),
        plural(loaded, "plugin"),
        plural(refused.len(), "plugin"),
        plural(files.len(), "file"),
    );
    for plugin in registry.plugins() {
        let file = plugin.path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
        out += &format!("\n{} {} ({file})\n", plugin.name, plugin.version);
        if let Some(refusal) = refused.iter().find(|r| r.path == plugin.path) {
            out += &format!("    REFUSED: {}\n", refusal.reason);
        }
        if !plugin.settings.is_empty() {
            out += &format!("    settings: {} (section [{}.plugins.{}])\n", plugin.settings, config.name, plugin.name);
        }
        if plugin.tasks.is_empty() {
            out += "    (no tasks)\n";
        }
        let mut tasks: Vec<&TaskDecl> = plugin.tasks.iter().collect();
        tasks.sort_by(|a, b| a.name.cmp(&b.name));
        for task in tasks {
            let state = if plugin.takes_state(&task.name) { "  (takes the plugin's state)" } else { "" };
            out += &format!("    {}{state}\n", signature(task));
            let own = config.tasks.get(task.name.as_str()).and_then(|o| o.sandbox.as_ref());
            if let Some(sandbox) = own.or(config.sandbox.as_ref()) {
                out += &format!("        sandbox: {sandbox}\n");
            }
        }
    }
    if !files.is_empty() {
        out += "\nrejected:\n";
        for file in files {
            out += &format!("    {file}\n");
        }
    }
    out
}

/// `Hello::say(name: String) -> String`.
fn signature(task: &TaskDecl) -> String {
    let params: Vec<String> = task
        .params
        .iter()
        .map(|p| if p.name.is_empty() { p.ty.to_string() } else { format!("{}: {}", p.name, p.ty) })
        .collect();
    format!("{}({}) -> {}", task.name, params.join(", "), task.output)
}
