//! `li3g-host status`: with no job id, what the running pool is doing ([`crate::status`]);
//! with one, that scheduled job's status in Redis (`schedule.rs`).

use super::control::PidArg;
use super::Common;
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// A job id (its status in Redis), or the named configuration of the pool to show
    /// [default: the pool of the `default` configuration]. A word that names a configuration
    /// in the file is the pool's; anything else is a job id.
    #[arg(value_name = "CONFIG|ID")]
    target: Option<String>,
    /// The named configuration, for a job id.
    #[arg(long = "name", value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// Print the pool's report as JSON (the format is in docs/WATCHING.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pid: PidArg,
    #[command(flatten)]
    common: Common,
}

/// Whether `word` names a configuration (then `status WORD` shows that pool).
fn names_configuration(common: &Common, word: &str) -> bool {
    word == crate::config::DEFAULT_NAME || common.settings(word).is_ok()
}

pub(super) fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = match &args.target {
        None => Some(args.name.clone()),
        Some(word) if names_configuration(&args.common, word) => Some(word.clone()),
        Some(_) => None,
    };
    let Some(name) = pool else {
        let id = args.target.clone().unwrap_or_default();
        return super::schedule::job_status(&args.common, &args.name, &id);
    };
    let config = args.common.settings(&name)?;
    let path = crate::scoreboard::path_for(&args.pid.path()?);
    let board = match crate::status::open(&path) {
        Ok(board) => board,
        Err(err @ crate::status::StatusError::NotRunning(_)) => {
            eprintln!("li3g-host: {err}{}", args.pid.hint());
            return Ok(ExitCode::FAILURE);
        }
        Err(err) => {
            eprintln!("li3g-host: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = crate::status::report(&board.snapshot(), &config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}
