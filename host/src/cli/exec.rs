//! `li3g-host exec TASK [ARG...]`: run one task in this process, without a job server.

use super::{load_plugins, print_result, Common, Console};
use crate::plugins::{JobInfo, StateMode};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct ExecArgs {
    /// The task: `Class::method`, or `Class` for `Class::run`.
    task: String,
    /// The task's arguments: JSON values, or bare words taken as strings.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// The job id the task sees [default: a new random id]
    #[arg(long)]
    id: Option<String>,
    /// The named configuration in the configuration file.
    #[arg(long = "name", value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
}

/// Reads each argument as JSON, or as a string when it is not JSON.
pub fn parse_args(args: &[String]) -> Vec<Value> {
    args.iter().map(|arg| serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.clone()))).collect()
}

pub(super) fn run(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let mut registry = load_plugins(&config)?;
    // Plugin state, as a worker builds it; dropped (closed) when the task is done.
    for refused in registry.build_states(&config.plugin_settings(), StateMode::Eager) {
        eprintln!("li3g-host: warning: skipped {refused}");
    }
    let info = JobInfo {
        id: args.id.clone().unwrap_or_else(crate::job_id::generate),
        environment: config.environment.clone().unwrap_or_default(),
        ..JobInfo::default()
    };
    let json = Value::Array(parse_args(&args.args)).to_string();
    match registry.dispatch(&args.task, &json, &info, &mut Console) {
        Ok(output) => {
            print_result(output.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("li3g-host: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_json_or_bare_strings() {
        let args: Vec<String> = ["Mariano", "5", "true", "[1,2]", "\"7\"", "-3", "a b"].map(String::from).into();
        assert_eq!(Value::Array(parse_args(&args)), serde_json::json!(["Mariano", 5, true, [1, 2], "7", -3, "a b"]));
    }
}
