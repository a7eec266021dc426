//! `li3g-host scheduler`, `scheduled`, `cancel`, `retry` and `status`: the scheduler process
//! and the management of scheduled jobs (the library side is [`crate::scheduler`]).

use super::Common;
use crate::config::Config;
use crate::scheduler::run::{self as scheduler_run, SchedulerConfig};
use crate::scheduler::schedule::{epoch_ms, Place};
use crate::scheduler::{Schedule, ScheduleError};
use crate::signals;
use clap::Args;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// Jobs a scheduler takes from Redis at once, unless `--batch` says otherwise.
pub(super) const DEFAULT_BATCH: usize = 1000;

#[derive(Debug, Args)]
pub(super) struct SchedulerArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// Log to the console, with a line per job moved; otherwise to syslog.
    #[arg(long, short)]
    verbose: bool,
    /// Seconds a taken job stays leased before another scheduler takes it over
    /// [default: the configuration's, else 30]
    #[arg(long, value_name = "SECONDS")]
    lease: Option<f64>,
    /// Jobs taken from Redis at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=5000))]
    batch: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub(super) struct ScheduledArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub(super) struct IdArgs {
    /// The job id.
    id: String,
    /// The named configuration in the configuration file.
    #[arg(long = "name", value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
}

/// The configuration's schedule.
fn open(config: &Config) -> Result<Schedule, ScheduleError> {
    Schedule::open(config.redis.as_deref().ok_or(ScheduleError::NotConfigured)?, &config.scheduler)
}

/// A log line of the scheduler, `(Scheduler) ...` wherever it goes (stderr with `--verbose`,
/// the log file, else syslog).
pub(super) fn scheduler_log(verbose: bool) -> impl Fn(&str) {
    move |message: &str| {
        crate::log::init(verbose);
        log::info!(target: crate::log::SCHEDULER, "{message}");
    }
}

pub(super) fn scheduler(args: &SchedulerArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.common.settings(&args.name)?;
    if let Some(lease) = args.lease {
        config.scheduler.lease =
            crate::config::lease_from_secs(lease).map_err(|why| anyhow::anyhow!("--lease: {why}"))?;
    }
    // What would make it fail at once is an error here, on stderr, not only a log line.
    open(&config)?;
    signals::install_worker();
    Ok(ExitCode::from(run_scheduler(&config, args.verbose, args.batch as usize)))
}

/// Runs a scheduler until it is stopped; its exit code (2 when the configuration names no
/// Redis). Used by `scheduler` and by `start`'s scheduler child.
pub(super) fn run_scheduler(config: &Config, verbose: bool, batch: usize) -> u8 {
    let log = scheduler_log(verbose);
    let mut store = match open(config) {
        Ok(store) => store,
        Err(err) => {
            log(&format!("Cannot start: {err}"));
            return 2;
        }
    };
    let mut options = SchedulerConfig::new(config.servers.clone());
    options.lease = config.scheduler.lease;
    options.batch = batch;
    options.verbose = verbose;
    log(&format!(
        "Moving due jobs from {} to {} job servers",
        crate::config::redact_url(config.redis.as_deref().unwrap_or("")),
        config.servers.len()
    ));
    let stats = scheduler_run::run(&mut store, &options, &signals::stop_requested, &log);
    log(&format!("Done: {} jobs moved, {} to the dead set", stats.moved, stats.buried));
    0
}

/// A stored time (ms since the epoch) as RFC 3339; one out of RFC 3339's range (a hand-written
/// score, or stored before times were bounded) as its number, never a panic.
fn time(ms: i64) -> String {
    match u64::try_from(ms).ok().and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))) {
        Some(at) if at < *LAST_PRINTABLE => humantime::format_rfc3339_millis(at).to_string(),
        _ => format!("(at {ms} ms since 1970)"),
    }
}

/// 10000-01-01: humantime prints years up to 9999.
static LAST_PRINTABLE: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(|| UNIX_EPOCH + Duration::from_secs(253_402_300_800));

/// A time as RFC 3339 seconds, as [`time`] never panicking.
pub(super) fn rfc3339(at: std::time::SystemTime) -> String {
    if at < *LAST_PRINTABLE && at >= UNIX_EPOCH {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        format!("{at:?}")
    }
}

pub(super) fn scheduled(args: &ScheduledArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let mut store = open(&config)?;
    let pending = store.pending()?;
    let dead = store.dead()?;
    let now = epoch_ms(std::time::SystemTime::now());
    println!("Pending: {}", pending.len());
    for job in &pending {
        let place = match job.place {
            Place::Scheduled if job.at_ms <= now => "due",
            Place::Scheduled => "scheduled",
            Place::Leased => "moving",
            Place::Compat => "li3_gearman",
        };
        println!("  {}  {}  {}  retry {}  {place}", job.id, job.task, time(job.at_ms), job.retry);
    }
    println!("Dead: {}", dead.len());
    for job in &dead {
        println!("  {}  {}  {}  retry {}  error: {}", job.id, job.task, time(job.at_ms), job.retry, job.error);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cancel(args: &IdArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    if open(&config)?.cancel(&args.id)? {
        println!("cancelled job {}", args.id);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("li3g-host: no pending job {}", args.id);
        Ok(ExitCode::FAILURE)
    }
}

pub(super) fn retry(args: &IdArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    if open(&config)?.requeue(&args.id)? {
        println!("requeued job {}", args.id);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("li3g-host: no dead job {}", args.id);
        Ok(ExitCode::FAILURE)
    }
}

/// `status ID`: a job's status record in Redis.
pub(super) fn job_status(common: &Common, name: &str, id: &str) -> anyhow::Result<ExitCode> {
    let config = common.settings(name)?;
    match open(&config)?.status(id)? {
        Some((status, ttl)) => {
            println!("{status} (expires in {ttl} s)");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("li3g-host: no status for job {id}");
            Ok(ExitCode::FAILURE)
        }
    }
}
