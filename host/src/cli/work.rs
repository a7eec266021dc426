//! `li3g-host work`: one worker in the foreground, for supervisor or systemd; and the worker
//! options it shares with `start`.

use super::{plugins_dir, Common};
use crate::config::Config;
use crate::log::Log;
use crate::signals;
use crate::worker::{self, WorkerConfig};
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

/// How each worker runs (shared by `work` and `start`).
#[derive(Debug, Clone, Args)]
pub(super) struct WorkerOptions {
    /// Once a worker has performed its job, a fresh process takes the next one: every job
    /// runs in a newly forked child, so a leak, crash, abort or global never reaches the next.
    #[arg(long)]
    atomic: bool,
    /// Interact with Gearman in blocking mode. li3g's workers always block (sleeping in
    /// poll(2) until the server wakes them, never busy-polling) and still react to signals at
    /// once; the flag is accepted for compatibility with li3_gearman.
    #[arg(long)]
    blocking: bool,
    /// Seconds a job may run, for every task without a timeout of its own in the
    /// configuration. With --atomic the worker kills the job (its whole process group) and
    /// fails it. Without, the worker cannot stop a running job: it registers the timeout with
    /// the job server (CAN_DO_TIMEOUT, whole seconds, at least 1), which then gives the job to
    /// another worker; the first one still finishes it.
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// CPU seconds a job may use (user and system time, rounded up to whole seconds), for
    /// every task without a `cpu_limit` of its own in the configuration. With --atomic only:
    /// the job child's RLIMIT_CPU, so a job past it gets SIGXCPU, then SIGKILL a second later,
    /// and fails with "used its CPU limit of N s". Unlike --timeout (wall-clock time), a job
    /// that waits does not use it up.
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds, allow_negative_numbers = true)]
    cpu_limit: Option<Duration>,
    /// Memory limit such as 512M or 2G. With --atomic, each job's (an allocation past it
    /// fails the job); without, a worker whose resident memory passes it after a job ends,
    /// to be replaced (with --resuscitate).
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    memlimit: Option<u64>,
    /// A worker ends after this many jobs (to be replaced with --resuscitate; `work` then exits
    /// with code 75 so that systemd or supervisor restart it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_jobs: Option<u64>,
    /// Log lines to the console (stderr); otherwise to syslog. Levels as RUST_LOG (or LI3G_LOG)
    /// says, `info` by default: workers started and ended, failures; `debug` adds every job.
    #[arg(long, short)]
    verbose: bool,
    /// Write log lines to this file (appended; reopened on SIGUSR1, for logrotate) instead of
    /// syslog or stderr [default: the configuration's `log_file`]
    #[arg(long, env = "LI3G_LOG_FILE", value_name = "PATH")]
    log_file: Option<std::path::PathBuf>,
}

/// The port of a Redis URL (`redis://[user@]host[:port][/db]`; 6379 when it names none).
fn redis_port(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    host.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or(6379)
}

impl WorkerOptions {
    pub(super) fn log(&self) -> Log {
        Log { verbose: self.verbose }
    }

    /// The log file: `--log-file`, else the configuration's `log_file`; absolute.
    pub(super) fn log_file(&self, config: &Config) -> anyhow::Result<Option<std::path::PathBuf>> {
        Ok(self.log_file.as_ref().or(config.log_file.as_ref()).map(std::path::absolute).transpose()?)
    }

    /// Sends this process's log lines (and its children's) to `path`.
    pub(super) fn use_log_file(path: &std::path::Path) -> anyhow::Result<()> {
        crate::log::set_file(path).map_err(|err| anyhow::anyhow!("log file {}: {err}", path.display()))
    }

    /// The worker's settings from these options and the configuration, for a worker of pool
    /// `pool` (`None`: the default pool): the pool's own options win over these.
    pub(super) fn worker_config(&self, config: &Config, pool: Option<&str>) -> WorkerConfig {
        let settings = pool.and_then(|name| config.pool(name));
        WorkerConfig {
            servers: config.servers.clone(),
            environment: config.environment.clone().unwrap_or_default(),
            client_id: format!("{}:{}", crate::process::hostname(), std::process::id()),
            timeouts: config.tasks.iter().filter_map(|(task, o)| Some((task.clone(), o.timeout?))).collect(),
            cpu_limits: config.tasks.iter().filter_map(|(task, o)| Some((task.clone(), o.cpu_limit?))).collect(),
            cpu_limit: self.cpu_limit,
            sandbox: crate::worker::sandbox::SandboxConfig {
                default: config.sandbox.clone(),
                tasks: config.tasks.iter().filter_map(|(task, o)| Some((task.clone(), o.sandbox.clone()?))).collect(),
                worker_ports: config
                    .servers
                    .iter()
                    .map(|s| s.port)
                    .chain(config.redis.as_deref().map(redis_port))
                    .collect(),
            },
            atomic: settings.and_then(|p| p.atomic).unwrap_or(self.atomic),
            timeout: settings.and_then(|p| p.timeout).or(self.timeout),
            memlimit: settings.and_then(|p| p.memlimit).or(self.memlimit),
            max_jobs: settings.and_then(|p| p.max_jobs).or(self.max_jobs),
            recycle_at: None,
            selection: config.selection(pool),
            pool: settings.map(|p| (p.name.clone(), p.tasks.clone())),
            configured_tasks: config.tasks.keys().cloned().collect(),
            plugin_settings: config.plugin_settings(),
            log: self.log(),
            hooks: config
                .redis
                .as_deref()
                .map(|url| crate::scheduler::job_hooks::JobHooks::new(url, &config.scheduler)),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct WorkArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// Be a worker of this pool (`[CONFIG.pools.POOL]`): register only its tasks, with its
    /// options. Without it, a worker of the default pool: every task no pool keeps to itself.
    #[arg(long, value_name = "POOL")]
    pool: Option<String>,
    /// End once this many seconds old, after the job in hand, with exit code 75 (systemd's or
    /// supervisor's restart then replaces the worker: GearmanManager's max_worker_lifetime).
    /// The pool's `max_age` wins with --pool.
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds)]
    max_age: Option<Duration>,
    /// Spread of --max-age: the limit is max-age plus a random part of this, so workers
    /// started together are not all replaced at once [default: a tenth of --max-age, at least
    /// 5 s]. The pool's `max_age_splay` wins with --pool.
    #[arg(long, value_name = "SECONDS", value_parser = crate::config::parse_seconds, requires = "max_age")]
    max_age_splay: Option<Duration>,
    #[command(flatten)]
    worker: WorkerOptions,
    #[command(flatten)]
    common: Common,
}

pub(super) fn run(args: &WorkArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    if let Some(pool) = args.pool.as_deref().filter(|pool| config.pool(pool).is_none()) {
        let known: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        anyhow::bail!("configuration {} has no pool {pool:?} (its pools: {known})", config.name);
    }
    if let Some(path) = args.worker.log_file(&config)? {
        WorkerOptions::use_log_file(&path)?;
    }
    // What would make every start fail is an error here, on stderr, not only a log line.
    crate::plugins::registry::check_dir(&plugins_dir(&config)?)?;
    signals::install_worker();
    let settings = args.pool.as_deref().and_then(|pool| config.pool(pool));
    let max_age = settings.and_then(|p| p.max_age).or(args.max_age);
    let splay = settings.and_then(|p| p.max_age_splay).or(args.max_age_splay);
    let recycle_at = max_age.map(|age| {
        let max_age = crate::daemon::recycle::MaxAge::new(age, splay);
        std::time::Instant::now() + max_age.age + max_age.splay.mul_f64(crate::daemon::recycle::Rng::new().unit())
    });
    Ok(ExitCode::from(run_worker(&config, &args.worker, args.worker.log(), args.pool.as_deref(), recycle_at)))
}

/// Runs one worker until it is stopped ([`worker::serve`]); returns its exit code. Used by
/// `work` and by each worker `start` forks; `pool` is the worker's pool (`None`: the default).
pub(super) fn run_worker(
    config: &Config,
    options: &WorkerOptions,
    log: Log,
    pool: Option<&str>,
    recycle_at: Option<std::time::Instant>,
) -> u8 {
    let mut worker = options.worker_config(config, pool);
    worker.log = log;
    worker.recycle_at = recycle_at;
    match plugins_dir(config) {
        Ok(dir) => worker::serve(&dir, &worker),
        Err(err) => {
            crate::log::init(log.verbose);
            log::error!("Cannot load plugins: {err:#}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(crate::config::parse_size("512M"), Ok(512 << 20));
        assert_eq!(crate::config::parse_size("2G"), Ok(2 << 30));
        assert_eq!(crate::config::parse_size("4096"), Ok(4096));
        assert_eq!(super::redis_port("redis://127.0.0.1:6380/0"), 6380);
        assert_eq!(super::redis_port("redis://u:p@redis.internal/2"), 6379);
        assert!(crate::config::parse_size("12X").is_err());
        assert!(crate::config::parse_size("lots").is_err());
        assert_eq!(crate::config::parse_size("0M"), Err("\"0M\": a memory limit must be above zero".into()));
    }
}
