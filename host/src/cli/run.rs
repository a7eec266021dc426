//! `li3g-host run TASK [ARG...]`: submit a job to the job servers, in the background (the
//! default, as in li3_gearman) or synchronously with `--sync`.

use super::exec::parse_args;
use super::{print_result, Common, Console};
use crate::client::{Client, Outcome, RunError, RunOptions, Unique};
use crate::gearman::client::{ClientError, JobEvent};
use crate::gearman::packet::Priority;
use crate::plugins::JobEvents;
use crate::retry_policy::Retries;
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
    /// Run at this UTC time (RFC 3339, e.g. 2026-12-01T10:00:00Z) instead of now; the job
    /// waits in the configured Redis until a scheduler moves it, or without Redis in the job
    /// server (SUBMIT_JOB_EPOCH). Prints the job id.
    #[arg(long, value_name = "TIME", value_parser = humantime::parse_rfc3339_weak, conflicts_with_all = ["sync", "in_"])]
    at: Option<std::time::SystemTime>,
    /// Run after this delay (90s, 5m, 2h, 1h30m) instead of now.
    #[arg(long = "in", id = "in_", value_name = "DELAY", value_parser = humantime::parse_duration, conflicts_with = "sync")]
    in_: Option<Duration>,
    /// When the task fails, run it again up to N times (li3_gearman's `retries`).
    #[arg(long, value_name = "N", conflicts_with = "sync")]
    retries: Option<u32>,
    /// With --retries: the delays before each retry, comma-separated (the last one repeats)
    /// [default: li3_gearman's 5m,10m,20m,30m,50m]
    #[arg(long, value_name = "LIST", requires = "retries", value_delimiter = ',', value_parser = humantime::parse_duration)]
    retry_delays: Vec<Duration>,
    /// Send li3_gearman's envelope to its function (`li3_gearman\extensions\command\Gearmand::run`),
    /// for a task its PHP workers still serve: TASK is the PHP class and method
    /// (`app\tasks\Report::build`), `configName` is --name.
    #[arg(long)]
    li3_gearman: bool,
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
        schedule: args.at.or_else(|| args.in_.map(|delay| std::time::SystemTime::now() + delay)),
        retries: args.retries.map(|maximum| {
            let mut retries = Retries::with_maximum(maximum);
            if !args.retry_delays.is_empty() {
                retries.increments = args.retry_delays.clone();
            }
            retries
        }),
        li3_gearman: args.li3_gearman.then(|| args.name.clone()),
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
        Ok(Outcome::Scheduled { id, at }) => {
            println!("scheduled job {id} for {}", humantime::format_rfc3339_seconds(at));
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
