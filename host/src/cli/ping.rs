//! `li3g-host ping`: checks what the pool serves. Asks each job server which functions have
//! workers (admin `status`), then a worker to answer the built-in ping job, then that every
//! task of the plugins in the plugins directory has a worker on each job server that answered
//! (a client may queue its job on any of them; a plugin listed in `plugins.optional` excepted).

use super::{plugins_dir, Common};
use crate::config::parse_seconds;
use crate::gearman::admin_protocol::{self, FunctionStatus};
use crate::gearman::conn::{Conn, ServerAddr};
use crate::gearman::packet::Priority;
use crate::worker::PING_FUNCTION;
use clap::Args;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct PingArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// How long to wait for a worker's answer.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds, allow_negative_numbers = true)]
    timeout: Duration,
    #[command(flatten)]
    common: Common,
}

/// The workers each function has on each server that answered `status` (a client may queue a
/// job on any of them, so each must have a worker for every task); empty when none answered.
fn workers_by_server(servers: &[ServerAddr], timeout: Duration) -> Vec<(String, BTreeMap<String, u64>)> {
    let mut answered = Vec::new();
    for server in servers {
        let Some(functions) = status(server, timeout) else { continue };
        let mut workers = BTreeMap::new();
        for f in functions {
            *workers.entry(f.function).or_default() += f.workers;
        }
        answered.push((server.to_string(), workers));
    }
    answered
}

/// A server's admin `status`, or `None` when it cannot be asked.
fn status(server: &ServerAddr, timeout: Duration) -> Option<Vec<FunctionStatus>> {
    let mut conn = Conn::connect(server, timeout).ok()?;
    conn.set_read_timeout(Some(timeout)).ok()?;
    let _ = conn.stream().set_write_timeout(Some(timeout));
    let lines = conn.admin("status").ok()?;
    admin_protocol::parse_status(lines.iter().map(String::as_str)).ok()
}

/// Prints `ERROR` and `why`; exit 1.
fn error(why: &str) -> anyhow::Result<ExitCode> {
    println!("ERROR");
    eprintln!("li3g-host: {why}");
    Ok(ExitCode::FAILURE)
}

pub(super) fn ping(args: &PingArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    print!("Pinging... ");
    let servers = workers_by_server(&config.servers, args.timeout);
    let unserved: Vec<&str> = servers
        .iter()
        .filter(|(_, workers)| workers.get(PING_FUNCTION).copied().unwrap_or(0) == 0)
        .map(|(server, _)| server.as_str())
        .collect();
    if !unserved.is_empty() {
        return error(&format!(
            "no worker has registered {PING_FUNCTION} on {} (no li3g worker is running there)",
            unserved.join(", ")
        ));
    }
    let mut client = crate::client::for_config(&config);
    if let Err(err) = client.job(PING_FUNCTION, ()).priority(Priority::High).timeout(args.timeout).call_raw() {
        return error(&super::run::no_server_hint(&config, &err).unwrap_or_else(|| err.to_string()));
    }
    // Every task of the plugins here has a worker: a plugin refused in the workers (a typo in
    // its settings after a `restart`, a constructor failing) leaves its tasks unregistered.
    // On every server that answered: a job queued there for a task without a worker waits.
    if let Ok(dir) = plugins_dir(&config) {
        if let Ok(registry) = crate::plugins::Registry::scan(&dir) {
            let optional = &config.optional_plugins;
            for (server, workers) in &servers {
                let mut missing = Vec::new();
                for plugin in registry.plugins().iter().filter(|p| !optional.contains(&p.name)) {
                    for task in &plugin.tasks {
                        if workers.get(task.name.as_str()).copied().unwrap_or(0) == 0 {
                            missing.push(format!("{} (plugin {})", task.name, plugin.name));
                        }
                    }
                }
                if !missing.is_empty() {
                    return error(&format!(
                        "no worker has registered {} on {server}: the workers refused the plugin or do not run it \
                         (see their log)",
                        missing.join(", "),
                    ));
                }
            }
        }
    }
    println!("OK");
    Ok(ExitCode::SUCCESS)
}
