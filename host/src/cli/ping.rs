//! `li3g-host ping`: checks what the pool serves. Asks each job server which functions have
//! workers (admin `status`), then a worker to answer the built-in ping job, then that every
//! task of the plugins in the plugins directory has a worker on some job server (a plugin
//! listed in `plugins.optional` excepted).

use super::{plugins_dir, Common};
use crate::client::{Client, Outcome, RunOptions};
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

/// The workers each function has, summed over the servers that answered `status`; `None`
/// when none answered.
fn workers_by_function(servers: &[ServerAddr], timeout: Duration) -> Option<BTreeMap<String, u64>> {
    let mut totals: Option<BTreeMap<String, u64>> = None;
    for server in servers {
        let Some(functions) = status(server, timeout) else { continue };
        let totals = totals.get_or_insert_with(BTreeMap::new);
        for f in functions {
            *totals.entry(f.function).or_default() += f.workers;
        }
    }
    totals
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
    let servers: Vec<String> = config.servers.iter().map(ToString::to_string).collect();
    let workers = workers_by_function(&config.servers, args.timeout);
    if let Some(workers) = &workers {
        if workers.get(PING_FUNCTION).copied().unwrap_or(0) == 0 {
            return error(&format!(
                "no worker has registered {PING_FUNCTION} on {} (no li3g worker is running)",
                servers.join(", ")
            ));
        }
    }
    let options = RunOptions {
        background: false,
        priority: Priority::High,
        timeout: Some(args.timeout),
        ..RunOptions::default()
    };
    match Client::from_config(&config).run(PING_FUNCTION, &[], &options, &mut |_| {}) {
        Ok(Outcome::Completed { .. }) => {}
        Ok(Outcome::Queued { .. } | Outcome::Scheduled { .. }) => unreachable!("a synchronous run completes or fails"),
        Err(err) => return error(&err.to_string()),
    }
    // Every task of the plugins here has a worker: a plugin refused in the workers (a typo in
    // its settings after a `restart`, a constructor failing) leaves its tasks unregistered.
    if let (Some(workers), Ok(dir)) = (&workers, plugins_dir(&config)) {
        if let Ok(registry) = crate::plugins::Registry::scan(&dir) {
            let optional = &config.optional_plugins;
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
                    "no worker has registered {} on {}: the workers refused the plugin or do not run it (see their log)",
                    missing.join(", "),
                    servers.join(", ")
                ));
            }
        }
    }
    println!("OK");
    Ok(ExitCode::SUCCESS)
}
