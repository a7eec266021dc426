//! `li3g-host run TASK [ARG...]`: submit a job to the job servers, in the background (the
//! default, as in li3_gearman) or synchronously with `--sync`.

use super::exec::parse_args;
use super::{print_result, Common, Console};
use crate::client::{Client, Outcome, RunError, RunOptions, Unique};
use crate::gearman::client::{ClientError, JobEvent};
use crate::gearman::packet::Priority;
use crate::plugins::JobEvents;
use clap::{Args, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PriorityArg {
    Low,
    Normal,
    High,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The task: `Class::method`, or `Class` for `Class::run`.
    task: String,
    /// The task's arguments: JSON values, or bare words taken as strings.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Wait for the result and print it (default: queue the job and print its id and handle).
    #[arg(long)]
    sync: bool,
    /// The job's priority.
    #[arg(long, value_enum, default_value = "normal")]
    priority: PriorityArg,
    /// A unique key (at most 63 bytes): jobs with the same task and key run once for all
    /// their clients.
    #[arg(long, value_name = "KEY")]
    unique: Option<String>,
    /// Derive the unique key from the task and its arguments.
    #[arg(long, conflicts_with = "unique")]
    unique_args: bool,
    /// The job id tasks see [default: a new random id]
    #[arg(long)]
    id: Option<String>,
    /// With --sync: give up after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// The named configuration in the configuration file.
    #[arg(long = "name", value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let options = RunOptions {
        background: !args.sync,
        priority: match args.priority {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
        },
        unique: match (&args.unique, args.unique_args) {
            (Some(key), _) => Unique::Key(key.clone()),
            (None, true) => Unique::FromArgs,
            (None, false) => Unique::None,
        },
        id: args.id.clone(),
        environment: config.environment.clone(),
        timeout: args.timeout.map(Duration::from_secs_f64),
    };
    let task_args = parse_args(&args.args);
    let until = match args.timeout {
        Some(seconds) => format!("until the --timeout of {seconds} s"),
        None => "without a limit (see --timeout)".to_string(),
    };
    let mut on_event = |event: JobEvent<'_>| match event {
        JobEvent::Status(n, d) => Console.status(n, d),
        JobEvent::Data(data) => Console.data(data),
        JobEvent::Warning(data) => Console.warning(data),
        JobEvent::NoWorker { server, function } => eprintln!(
            "li3g-host: no worker has registered {} on {server}; still waiting, {until}",
            String::from_utf8_lossy(function)
        ),
    };
    match Client::from_config(&config).run(&args.task, &task_args, &options, &mut on_event) {
        Ok(Outcome::Queued { id, handle }) => {
            println!("queued job {id} as {handle}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Completed { result, .. }) => {
            print_result(&result)?;
            Ok(ExitCode::SUCCESS)
        }
        // The job ran and failed: say why, exit 1. Anything else is an error of this command.
        Err(RunError::Client(err @ (ClientError::Exception(_) | ClientError::Failed | ClientError::Timeout(_)))) => {
            eprintln!("li3g-host: {err}");
            Ok(ExitCode::FAILURE)
        }
        Err(err) => Err(err.into()),
    }
}
