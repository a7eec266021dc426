//! `li3g-host run TASK [ARG...]`: submit a job to the job servers, in the background (the
//! default, as in li3_gearman) or synchronously with `--sync`.

use super::exec::parse_args;
use super::{print_result, Common, Console};
use crate::gearman::client::{Client, JobEvent, Submit};
use crate::gearman::packet::Priority;
use crate::plugins::{canonical_task_name, JobEvents};
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
    /// Wait for the result and print it (default: queue the job and print its handle).
    #[arg(long)]
    sync: bool,
    /// The job's priority.
    #[arg(long, value_enum, default_value = "normal")]
    priority: PriorityArg,
    /// A unique key: jobs with the same task and key coalesce into one.
    #[arg(long, value_name = "KEY")]
    unique: Option<String>,
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
    let id = args.id.clone().unwrap_or_else(crate::job_id::generate);
    let workload = crate::workload::encode(&parse_args(&args.args), &id, config.environment.as_deref());
    let job = Submit {
        function: canonical_task_name(&args.task).into_bytes(),
        unique: args.unique.clone().unwrap_or_default().into_bytes(),
        workload,
        priority: match args.priority {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
        },
    };
    let mut client = Client::new(config.servers.clone());
    if !args.sync {
        let handle = client.submit_background(&job)?;
        println!("queued job {id} as {}", String::from_utf8_lossy(&handle));
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = args.timeout.map(Duration::from_secs_f64);
    let mut on_event = |event: JobEvent<'_>| match event {
        JobEvent::Status(n, d) => Console.status(n, d),
        JobEvent::Data(data) => Console.data(data),
        JobEvent::Warning(data) => Console.warning(data),
    };
    match client.submit_sync(&job, timeout, &mut on_event) {
        Ok((_, result)) => {
            print_result(&result)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("li3g-host: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}
