//! `li3g-host run TASK [ARG...]`: submit a job to the job servers, in the background (the
//! default, as in li3_gearman) or synchronously with `--sync`.

use super::exec::parse_args;
use super::{print_result, Common, Console};
use crate::client::RunError;
use crate::gearman::client::{ClientError, JobEvent};
use crate::gearman::packet::Priority;
use crate::plugins::JobEvents;
use crate::retry_policy::Retries;
use clap::{Args, ValueEnum};
use li3g_client::{Queued, Submitted};
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
    /// Run at this time (RFC 3339: 2026-12-01T10:00:00Z, or with an offset such as +01:00;
    /// without either, UTC) instead of now; the job waits in the configured Redis until a
    /// scheduler moves it, or without Redis in the job server (SUBMIT_JOB_EPOCH). At most 100
    /// years ahead. Prints the job id.
    #[arg(long, value_name = "TIME", value_parser = parse_at, conflicts_with_all = ["sync", "in_"])]
    at: Option<std::time::SystemTime>,
    /// Run after this delay (90s, 5m, 2h, 1h30m; at most 100 years) instead of now.
    #[arg(long = "in", id = "in_", value_name = "DELAY", value_parser = parse_in, conflicts_with = "sync")]
    in_: Option<Duration>,
    /// When the task fails, run it again up to N times (li3_gearman's `retries`).
    #[arg(long, value_name = "N", conflicts_with = "sync")]
    retries: Option<u32>,
    /// With --retries: the delays before each retry, comma-separated (the last one repeats)
    /// [default: li3_gearman's 5m,10m,20m,30m,50m]
    #[arg(long, value_name = "LIST", requires = "retries", value_delimiter = ',', value_parser = parse_in)]
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

/// The furthest a job may be scheduled ahead.
const LATEST: Duration = crate::scheduler::schedule::LATEST;

/// `--in`: a delay of at most [`LATEST`], so that "now + delay" can neither overflow nor make
/// a time no one can print.
fn parse_in(text: &str) -> Result<Duration, String> {
    let delay = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if delay > LATEST {
        return Err(format!("{text} is more than 100 years"));
    }
    Ok(delay)
}

/// `--at`: RFC 3339 with `Z`, an offset (`+01:00`, `-0530`) or neither (UTC), at most
/// [`LATEST`] from now.
fn parse_at(text: &str) -> Result<std::time::SystemTime, String> {
    let trimmed = text.trim();
    // An offset is a sign after the time part (`T..` or ` ..`), then HH:MM or HHMM.
    let (local, offset) = match trimmed.rfind(['+', '-']) {
        Some(at) if trimmed[..at].contains(['T', 't', ' ']) && trimmed[..at].contains(':') => {
            let (sign, digits) = (&trimmed[at..at + 1], trimmed[at + 1..].replace(':', ""));
            let parsed = (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (digits[..2].parse::<u64>().unwrap_or(99), digits[2..].parse::<u64>().unwrap_or(99)));
            match parsed {
                Some((hours, minutes)) if hours < 24 && minutes < 60 => {
                    (&trimmed[..at], Some((sign == "-", Duration::from_secs(hours * 3600 + minutes * 60))))
                }
                _ => return Err(format!("{text}: the offset must be +HH:MM or -HH:MM")),
            }
        }
        _ => (trimmed, None),
    };
    let utc = humantime::parse_rfc3339_weak(local).map_err(|err| {
        format!("{text}: {err}; expected a date and time such as 2026-12-01T10:00:00Z (UTC) or 2026-12-01T11:00:00+01:00, or use --in 90s")
    })?;
    // Local time = UTC + offset, so UTC = local time - offset.
    let at = match offset {
        None => Some(utc),
        Some((false, offset)) => utc.checked_sub(offset),
        Some((true, offset)) => utc.checked_add(offset),
    }
    .ok_or_else(|| format!("{text} is out of range"))?;
    if !crate::scheduler::schedule::within_bound(at, std::time::SystemTime::now()) {
        return Err(format!("{text} is more than 100 years from now"));
    }
    Ok(at)
}

/// What to do when no job server took the job and none is configured: the default address
/// was tried, and the newcomer has likely not started one yet.
pub(super) fn no_server_hint(config: &crate::config::Config, err: &RunError) -> Option<String> {
    match err {
        RunError::Client(ClientError::NoServer(_)) if config.servers_default => Some(format!(
            "{err}; no job server is configured, so {} was tried: `li3g-host start` runs one there with its \
             workers, or name yours with --servers or servers = [...] in li3g.toml",
            config.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )),
        _ => None,
    }
}

/// `err` as this command's error, with [`no_server_hint`] when it applies.
fn failed(config: &crate::config::Config, err: RunError) -> anyhow::Error {
    match no_server_hint(config, &err) {
        Some(hint) => anyhow::anyhow!(hint),
        None => err.into(),
    }
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let mut client = crate::client::for_config(&config);
    let mut job = client.job(&args.task, parse_args(&args.args)).priority(match args.priority {
        PriorityArg::Low => Priority::Low,
        PriorityArg::Normal => Priority::Normal,
        PriorityArg::High => Priority::High,
    });
    match (&args.unique, args.unique_args) {
        (Some(key), _) => job = job.unique(key.clone()),
        (None, true) => job = job.unique_by_args(),
        (None, false) => {}
    }
    if let Some(id) = &args.id {
        job = job.id(id.clone());
    }
    if let Some(seconds) = args.timeout {
        job = job.timeout(Duration::from_secs_f64(seconds));
    }
    if let Some(at) = args.at.or_else(|| args.in_.map(|delay| std::time::SystemTime::now() + delay)) {
        job = job.at(at); // bounded above
    }
    if args.retries.is_some() && config.redis.is_none() {
        // Retries wait in Redis: the workers schedule them there, with their own configuration.
        eprintln!(
            "li3g-host: warning: --retries: configuration {} names no redis; the job is retried only by \
             workers whose configuration does (set redis = \"redis://HOST:PORT/DB\"; docs/SCHEDULING.md)",
            config.name
        );
    }
    if let Some(maximum) = args.retries {
        let mut retries = Retries::with_maximum(maximum);
        if !args.retry_delays.is_empty() {
            retries.increments = args.retry_delays.clone();
        }
        job = job.retries(retries);
    }
    if args.li3_gearman {
        job = job.li3_gearman_config(args.name.clone());
    }
    if !args.sync {
        match job.submit() {
            Ok(Submitted::Queued(Queued { id, handle })) => println!("queued job {id} as {handle}"),
            Ok(Submitted::Scheduled { id, at }) => {
                println!("scheduled job {id} for {}", crate::cli::schedule::rfc3339(at))
            }
            Err(err) => return Err(failed(&config, err)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let until = match args.timeout {
        Some(seconds) => format!("until the --timeout of {seconds} s"),
        None => "without a limit (see --timeout)".to_string(),
    };
    let on_event = move |event: JobEvent<'_>| match event {
        JobEvent::Status(n, d) => Console.status(n, d),
        JobEvent::Data(data) => Console.data(data),
        JobEvent::Warning(data) => Console.warning(data),
        JobEvent::NoWorker { server, function } => eprintln!(
            "li3g-host: no worker has registered {} on {server}; still waiting, {until}",
            String::from_utf8_lossy(function)
        ),
    };
    match job.on_event(on_event).call_raw() {
        Ok(result) => {
            print_result(&result)?;
            Ok(ExitCode::SUCCESS)
        }
        // The job ran and failed: say why, exit 1. Anything else is an error of this command.
        Err(RunError::Client(err @ (ClientError::Exception(_) | ClientError::Failed | ClientError::Timeout(_)))) => {
            eprintln!("li3g-host: {err}");
            Ok(ExitCode::FAILURE)
        }
        Err(err) => Err(failed(&config, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn times_are_bounded_and_offsets_accepted() {
        let at = |t: &str| parse_at(t).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        let z = at("2126-01-01T07:00:00Z").unwrap();
        assert_eq!(at("2126-01-01T08:00:00+01:00"), Ok(z));
        assert_eq!(at("2126-01-01T08:00:00+0100"), Ok(z));
        assert_eq!(at("2126-01-01T01:30:00-05:30"), Ok(z));
        assert_eq!(at("2126-01-01T07:00:00"), Ok(z));
        assert_eq!(at("2126-01-01 07:00:00"), Ok(z));
        assert!(at("2026-12-01T08:00:00+25:00").unwrap_err().contains("offset"));
        assert!(at("2200-01-01T00:00:00Z").unwrap_err().contains("100 years"));
        assert!(at("9999-12-31T23:59:59+01:00").is_err());
        assert!(at("tomorrow").unwrap_err().contains("expected a date and time such as 2026-12-01T10:00:00Z"));
        assert!(parse_in("18446744073709551615s").is_err());
        assert!(parse_in("300000y").unwrap_err().contains("100 years"));
        assert_eq!(parse_in("90s"), Ok(Duration::from_secs(90)));
        // Every accepted delay can be added to now.
        assert!(SystemTime::now().checked_add(parse_in("99y").unwrap()).is_some());
    }
}
