//! What `li3g-host start` runs, assembled: the workers (the default pool and one kind of child
//! per configured pool, `[NAME.pools.POOL]`), the scheduler when the configuration
//! names Redis, the embedded job server when it names no job servers; then the supervision loop
//! over them ([`run`]). The command line only parses, detaches and holds the PID file.

use super::{supervise, ChildSpec, MaxAge, PoolOptions, Restart};
use crate::config::Config;
use crate::log::Log;
use crate::signals;
use std::net::TcpListener;
use std::path::PathBuf;

/// Where the embedded job server listens: gearmand's port, loopback only.
pub const EMBEDDED_LISTEN: &str = "127.0.0.1:4730";

/// A process body: runs in the forked child with the configuration and returns its exit code.
pub type Body<'a> = &'a dyn Fn(&Config) -> u8;

/// A worker's body: runs in the forked child with the configuration and the worker's pool
/// (`None`: the default pool), and returns its exit code.
pub type WorkerBody<'a> = &'a dyn Fn(&Config, Option<&str>) -> u8;

/// What the daemon runs, besides the configuration.
pub struct Options<'a> {
    /// How many workers in the default pool (besides the configured pools' own).
    pub workers: u32,
    /// How many workers may be spawned in total before the daemon ends; 0: no limit.
    pub limit: u64,
    /// Respawn every worker that ends (up to `limit`).
    pub resuscitate: bool,
    /// A worker's body, given the configuration with its plugin settings read afresh, and its
    /// pool.
    pub worker: WorkerBody<'a>,
    /// Recycle workers older than this (`--max-age`; a pool's `max_age` wins for its own).
    pub max_age: Option<std::time::Duration>,
    /// The splay of `max_age` (`--max-age-splay`; default: a tenth of it, at least 5 s).
    pub max_age_splay: Option<std::time::Duration>,
    /// The scheduler's body; it runs when the configuration names Redis.
    pub scheduler: Option<Body<'a>>,
    /// Run the embedded job server when the configuration names no job servers.
    pub server: bool,
    /// The embedded job server's store (default: [`default_store`]).
    pub store: Option<PathBuf>,
    /// Where log lines go.
    pub log: Log,
    /// The scoreboard file to create (beside the PID file: [`crate::scoreboard::path_for`]);
    /// `None`: none (nothing to `status`).
    pub scoreboard: Option<PathBuf>,
    /// Where the monitor listens (`start --metrics`, else the configuration's `metrics`);
    /// `None`: no monitor.
    pub metrics: Option<String>,
    /// Where the embedded job server listens (`start --listen`; default [`EMBEDDED_LISTEN`]).
    pub listen: Option<crate::gearman::conn::ServerAddr>,
    /// Run in the supervisor at each `restart`, before a child is touched (see
    /// [`PoolOptions::before_restart`]): `start` reads the TLS files for `tls://` servers again
    /// and installs them for the children forked next; `Err` refuses the restart.
    pub before_restart: Option<&'a dyn Fn() -> Result<(), String>>,
}

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded job server's port is taken by something that does not speak Gearman.
    #[error(
        "{addr} is taken by something that is not a Gearman server ({reason}); configure `servers` or use --listen"
    )]
    Taken {
        /// The address.
        addr: String,
        /// What the echo got.
        reason: String,
    },
    /// The embedded job server cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The monitor cannot listen where it is asked to.
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    /// The embedded job server's store cannot be opened (another server holds it, ...).
    #[error("{source}; not starting the embedded job server")]
    StoreOpen {
        /// Why.
        source: crate::server::StoreError,
    },
    /// There is no HOME to put the default store in.
    #[error("no HOME for the job store; use --store")]
    NoHome,
    /// The store's directory cannot be made, or its path made absolute.
    #[error("cannot create {}: {source}", .path.display())]
    Store {
        /// The directory or path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the daemon in this (single-threaded) process until it is stopped: binds the embedded
/// job server's port when there is one (an error here is reported at once, in the foreground),
/// installs the stop and restart handlers, and supervises the children. Returns the exit code.
///
/// # Errors
/// [`Error`] when the embedded job server cannot start.
pub fn run(config: &Config, options: &Options<'_>) -> Result<i32, Error> {
    let server = embedded_server(config, options)?;
    let monitor = match options.metrics.as_deref().or(config.metrics.as_deref()) {
        Some(addr) => {
            let listener = crate::monitor::bind(addr, config.metrics_token.as_deref())?;
            let message = format!("Monitor listening on http://{addr}/ (metrics at /metrics)");
            options.log.daemon(&message);
            Some(listener)
        }
        None => None,
    };
    if server.is_none() {
        warn_if_unreachable(config, options.log);
    }
    signals::install_daemon();
    let mut children = children(config, options);
    if let Some(listener) = &monitor {
        children.push(monitor_child(listener, config));
    }
    if let Some((listener, server_options)) = &server {
        // First in start order, so it is stopped last (after the workers).
        children.insert(0, server_child(listener, server_options));
    }
    let board = options.scoreboard.as_deref().and_then(|path| create_scoreboard(path, config, &children, options.log));
    let code = supervise(&PoolOptions { children, log: options.log, before_restart: options.before_restart });
    if let Some(path) = board {
        let _ = std::fs::remove_file(path);
    }
    Ok(code)
}

/// Creates the scoreboard at `path` with room for every child twice over (a `restart` runs the
/// new children beside the old ones finishing their jobs) and installs it, before any fork. A
/// board that cannot be made is a log line: the pool runs without (`status` then says so).
fn create_scoreboard<'p>(
    path: &'p std::path::Path,
    config: &Config,
    children: &[ChildSpec<'_>],
    log: Log,
) -> Option<&'p std::path::Path> {
    let slots = children.iter().map(|c| c.count).sum::<u32>().saturating_mul(2).saturating_add(2);
    let file = config.file.as_deref().map(|f| f.display().to_string()).unwrap_or_default();
    match crate::scoreboard::Scoreboard::create(path, slots, &file) {
        Ok(board) => {
            crate::scoreboard::current::install(board);
            Some(path)
        }
        Err(err) => {
            log.daemon(&format!(
                "Cannot create the scoreboard {}: {err}; `status` will not see this pool",
                path.display()
            ));
            None
        }
    }
}

/// A new worker's configuration: the plugin settings read from the file afresh, so that a
/// `restart` (SIGHUP) applies an edited plugin section; when the file cannot be read now, the
/// settings the daemon started with, with a log line saying so.
fn with_fresh_plugin_settings(config: &Config, log: Log) -> Config {
    let mut fresh = config.clone();
    if let Some(file) = &config.file {
        match crate::config::load(Some(file), &config.name, config.environment.as_deref()) {
            Ok(new) => {
                fresh.plugin_settings = new.plugin_settings;
                fresh.state_timeout = new.state_timeout;
            }
            Err(err) => {
                crate::log::init(log.verbose);
                log::warn!("Keeping the plugin settings read at start: {err}");
            }
        }
    }
    fresh
}

/// With no `servers` configured: the embedded job server's listener (bound here, in the
/// foreground, so a failure is reported at once, and kept across the server child's restarts)
/// and options; `None` when a Gearman server already holds [`EMBEDDED_LISTEN`] (it is used) or
/// the server is not wanted.
fn embedded_server(
    config: &Config,
    options: &Options<'_>,
) -> Result<Option<(TcpListener, crate::server::Options)>, Error> {
    if (!config.servers_default && options.listen.is_none()) || !options.server {
        return Ok(None);
    }
    let default = crate::gearman::conn::ServerAddr {
        host: "127.0.0.1".into(),
        port: crate::gearman::conn::DEFAULT_PORT,
        tls: false,
    };
    let server = options.listen.clone().unwrap_or(default);
    let addr = server.to_string();
    match TcpListener::bind((server.host.as_str(), server.port)) {
        Ok(listener) => {
            let store = match &options.store {
                Some(path) => {
                    std::path::absolute(path).map_err(|source| Error::Store { path: path.clone(), source })?
                }
                None => default_store()?,
            };
            // Open the store here, in the foreground, before saying the server listens: a store
            // that cannot be opened (locked by another server, unreadable) stops `start` with
            // the reason, instead of a bound port whose server child fails and backs off while
            // clients connect and wait.
            crate::server::check_store(&store).map_err(|source| Error::StoreOpen { source })?;
            let message = format!("Job server listening on {addr} (store: {})", store.display());
            options.log.announce("", &message);
            let server_options = crate::server::Options {
                store: Some(store),
                host: crate::process::hostname(),
                ..crate::server::Options::default()
            };
            Ok(Some((listener, server_options)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            let mut client = crate::gearman::client::GearmanClient::new(vec![server]);
            client.echo(b"li3g").map_err(|e| Error::Taken { addr: addr.clone(), reason: e.to_string() })?;
            let message = format!("Using the Gearman server already listening on {addr}");
            options.log.announce("", &message);
            Ok(None)
        }
        Err(source) => Err(Error::Listen { addr, source }),
    }
}

/// Says once, on stderr and in the log, when no configured job server accepts a connection at
/// start: the workers then retry with a growing delay, each logging its own attempts. The
/// servers are tried all at once, each for at most a second (and a second more for a TLS
/// handshake), so unreachable ones delay the start by that much at most, not a second each.
fn warn_if_unreachable(config: &Config, log: Log) {
    use crate::gearman::connecting::{Connecting, Progress};
    use nix::poll::PollFd;
    use std::os::fd::AsFd;
    let timeout = std::time::Duration::from_secs(1);
    let mut reasons = Vec::new();
    let mut pending: Vec<Connecting> = Vec::new();
    for server in &config.servers {
        match Connecting::start(server, timeout) {
            Ok(connecting) => pending.push(connecting),
            Err(err) => reasons.push(err.to_string()),
        }
    }
    while !pending.is_empty() {
        let now = std::time::Instant::now();
        let until = pending.iter().map(Connecting::deadline).min().unwrap_or(now);
        let mut fds: Vec<PollFd> = pending.iter().map(|c| PollFd::new(c.socket().as_fd(), c.events())).collect();
        // An error (EINVAL, ENOMEM) or a signal: every connection below looks again.
        let _ = crate::process::poll(&mut fds, Some(until.saturating_duration_since(now)));
        drop(fds);
        let mut still = Vec::new();
        for connecting in pending {
            match connecting.advance() {
                Ok(Progress::Connected(_)) => return,
                Ok(Progress::Pending(connecting)) => still.push(connecting),
                Err(err) => reasons.push(err.to_string()),
            }
        }
        pending = still;
    }
    let message = format!(
        "No job server is reachable ({}); the workers keep trying, with a growing delay (check `servers`, \
         or leave it unset for the embedded job server, or use --listen)",
        reasons.join("; ")
    );
    log.announce("warning: ", &message);
}

/// The embedded server's default store: `/var/lib/li3g/queue.sqlite` as root, else in the
/// user's data directory; the directory is created (mode 0700).
///
/// # Errors
/// When there is no HOME, or the directory cannot be created.
pub fn default_store() -> Result<PathBuf, Error> {
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/li3g")
    } else if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(data).join("li3g")
    } else {
        let home = std::env::var_os("HOME").ok_or(Error::NoHome)?;
        PathBuf::from(home).join(".local/share/li3g")
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| Error::Store { path: dir.clone(), source })?;
    Ok(dir.join("queue.sqlite"))
}

/// The monitor as a child kind: one, always replaced, not reloaded by `restart` (it loads no
/// plugin) unless it asks `tls://` servers or Redis with `redis_tls_ca`: then it is replaced
/// too, so that it asks them with the TLS files the restart read again. Last in start order: it stops first.
fn monitor_child<'a>(listener: &'a TcpListener, config: &'a Config) -> ChildSpec<'a> {
    let mut spec = ChildSpec::new("monitor", 1, move |_number| match listener.try_clone() {
        Ok(listener) => crate::monitor::serve(listener, config, &signals::stop_requested),
        Err(err) => {
            eprintln!("li3g-host: monitor: {err}");
            2
        }
    });
    spec.reload = config.servers.iter().any(|server| server.tls) || config.scheduler.tls_ca.is_some();
    spec
}

/// The embedded job server as a child kind: one, always replaced, not reloaded by `restart`
/// (it loads no plugin, and its jobs would be lost without a store).
fn server_child<'a>(listener: &'a TcpListener, options: &'a crate::server::Options) -> ChildSpec<'a> {
    let mut spec = ChildSpec::new("job server", 1, move |_number| {
        signals::install_server();
        let result = listener.try_clone().map_err(crate::server::Error::from).and_then(|l| {
            crate::server::run(
                l,
                options.clone(),
                signals::wake_fd().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)),
                &signals::stop_requested,
            )
        });
        match result {
            Ok(()) => 0,
            Err(err) => {
                eprintln!("li3g-host: job server: {err}");
                2
            }
        }
    });
    spec.reload = false;
    spec
}

/// The workers (the default pool's, then each configured pool's) and, when the configuration
/// names Redis, the scheduler, in start order (the embedded job server, when there is one, goes
/// before them). Another kind of child is one more [`ChildSpec`] here.
fn children<'a>(config: &'a Config, options: &'a Options<'_>) -> Vec<ChildSpec<'a>> {
    let mut children = vec![worker_child(config, options, None)];
    for pool in &config.pools {
        children.push(worker_child(config, options, Some(pool)));
    }
    if let Some(scheduler) = options.scheduler.filter(|_| config.redis.is_some()) {
        // One scheduler, always replaced when it ends; it loads no plugin, so a restart
        // (SIGHUP) has nothing to reload in it, unless it reaches `tls://` servers or Redis
        // with `redis_tls_ca`: then it is replaced too, so that it uses the TLS files the
        // restart read again (the old one finishes its batch; the leases keep two from moving
        // the same job).
        let mut spec = ChildSpec::new("scheduler", 1, move |_number| i32::from(scheduler(config)));
        spec.reload = config.servers.iter().any(|server| server.tls) || config.scheduler.tls_ca.is_some();
        children.push(spec);
    }
    children
}

/// The workers of one pool (`None`: the default pool, `--workers`) as a kind of child: named
/// `worker` or `POOL worker` in log lines, kept as `--resuscitate` and `--limit` say (the limit
/// counts per pool), recycled by age when the pool or the command line sets a maximum age.
fn worker_child<'a>(
    config: &'a Config,
    options: &'a Options<'_>,
    pool: Option<&'a crate::config::PoolSettings>,
) -> ChildSpec<'a> {
    let log = options.log;
    let worker = options.worker;
    let name = pool.map(|p| p.name.as_str());
    let count = pool.map_or(options.workers, |p| p.workers);
    let mut spec = ChildSpec::worker(name, count, move |_number| {
        i32::from(worker(&with_fresh_plugin_settings(config, log), name))
    });
    spec.restart = if options.resuscitate { Restart::Permanent } else { Restart::Temporary };
    spec.limit = options.limit;
    // A worker whose plugin is refused after start (a `restart` with a bad file or setting, a
    // Redis down) exits with EXIT_REFUSED and is tried again after the backoff.
    spec.retry_exits = vec![i32::from(crate::worker::startup::EXIT_REFUSED)];
    let age = pool.and_then(|p| p.max_age).or(options.max_age);
    let splay = pool.and_then(|p| p.max_age_splay).or(options.max_age_splay);
    spec.max_age = age.map(|age| MaxAge::new(age, splay));
    spec
}
