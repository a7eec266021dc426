//! `li3g-host plugins`: what loaded, with versions and task signatures, and what did not.

use super::{plugins_dir, Common};
use crate::plugins::Registry;
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
    let registry = Registry::scan(&dir)?;
    print!("{}", render(&dir, &registry, &config));
    for unknown in crate::worker::unknown_tasks(config.tasks.keys(), &registry) {
        eprintln!("li3g-host: warning: configuration {}: {unknown}", config.name);
    }
    for unused in crate::worker::unused_plugin_settings(&config.plugin_settings(), &registry) {
        eprintln!("li3g-host: warning: {unused}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The listing: a header line, each plugin with its tasks (and each task's sandbox, when the
/// configuration gives it one), then the rejected files.
fn render(dir: &std::path::Path, registry: &Registry, config: &crate::config::Config) -> String {
    let mut out = String::new();
    let (loaded, rejected) = (registry.plugins().len(), registry.rejected().len());
    out += &format!(
        "{}: {loaded} plugin{} loaded, {rejected} file{} rejected\n",
        dir.display(),
        if loaded == 1 { "" } else { "s" },
        if rejected == 1 { "" } else { "s" },
    );
    for plugin in registry.plugins() {
        let file = plugin.path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default();
        out += &format!("\n{} {} ({file})\n", plugin.name, plugin.version);
        if !plugin.settings.is_empty() {
            out += &format!("    settings: {} (section plugins.{})\n", plugin.settings, plugin.name);
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
    if rejected > 0 {
        out += "\nrejected:\n";
        for file in registry.rejected() {
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
