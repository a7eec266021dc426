//! The Gearman worker: takes jobs from every configured job server and runs them in plugins.
//!
//! One worker is one single-threaded process holding one non-blocking connection per server,
//! all watched by one `poll(2)` together with the signal wake-up pipe. It registers every task
//! (`CAN_DO`; a class whose `run` exists is also registered by its bare name, since `Hello`
//! means `Hello::run`), the built-in [`PING_FUNCTION`] and li3_gearman's
//! [`COMPAT_FUNCTION`](crate::workload::COMPAT_FUNCTION), then loops:
//!
//! 1. run at most one job that a server assigned, taking servers in turn (round robin), and
//!    queue its answer (`WORK_COMPLETE`) with the next `GRAB_JOB_UNIQ` for that server;
//! 2. ask every server that is free for a job (`GRAB_JOB_UNIQ`), at most one request
//!    outstanding per server; one `write(2)` per server for all it is owed;
//! 3. `poll(2)` every connection (without waiting while a job is already assigned) and read
//!    each readable one once; decode every whole packet: `NO_JOB` means `PRE_SLEEP` and wait for
//!    `NOOP`, `NOOP` wakes a sleeping server, `JOB_ASSIGN*` is a job held for step 1.
//!
//! So a job on an idle server waits for at most one job per other server, whatever those
//! hold; nothing ever blocks on one server (a partial packet, a silent or flooding server only
//! costs its own connection); a server owes each answer and each started packet within
//! [`ANSWER_DEADLINE`], or it is dropped and reconnected; and a stop signal ends the wait at
//! once (between jobs: the job in hand always finishes). A server that goes away is reconnected
//! with exponential backoff (100 ms to 30 s) and registered again.
//!
//! In the steady state a job costs three system calls: one `write` (the answer and the next
//! grab), one `poll`, one `read`; with a single server two, as its socket's reads block (for at
//! most [`STOP_CHECK`], so a signal that lands just before a read is seen within that) and
//! need no `poll`.
//!
//! A job's progress and partial data go out as `WORK_STATUS`/`WORK_DATA`/`WORK_WARNING` while it
//! runs; its result as `WORK_COMPLETE`, its failure as `WORK_WARNING` with the message followed by
//! a plain `WORK_FAIL`, a form every Gearman client reads.
//!
//! [`serve`] is a worker process's whole body: load the plugins, run, say how it went.

use crate::fork::{self, ChildLimits};
use crate::gearman::conn::{Conn, ConnError, ServerAddr};
use crate::gearman::packet::Packet;
use crate::plugins::{canonical_task_name, JobEvents, JobInfo, Registry, StateMode};
use crate::process::{self, Backoff};
use crate::workload::{self, COMPAT_FUNCTION};
use log::{debug, info, warn};
use nix::poll::{PollFd, PollFlags};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// The built-in task every worker answers: `li3g-host ping` submits it.
pub const PING_FUNCTION: &str = "li3g::ping";

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The job servers.
    pub servers: Vec<ServerAddr>,
    /// The environment name tasks see.
    pub environment: String,
    /// `SET_CLIENT_ID`, shown by `gearadmin --workers` (`host:pid` by default).
    pub client_id: String,
    /// Per-task timeouts, registered with `CAN_DO_TIMEOUT` (the server then gives the job to
    /// another worker when one runs past it; killing the runaway is `--atomic`'s job).
    pub timeouts: std::collections::BTreeMap<String, Duration>,
    /// Run every job in a freshly forked child (`--atomic`).
    pub atomic: bool,
    /// The timeout of tasks without one of their own. Under `atomic`, a job past its timeout
    /// is killed and failed.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes: under `atomic`, the job child's `RLIMIT_DATA`; otherwise the
    /// worker ends after a job that leaves its resident memory above it (to be replaced).
    pub memlimit: Option<u64>,
    /// Stop after this many jobs (`None`: never).
    pub max_jobs: Option<u64>,
    /// The task names the configuration sets options for: those no loaded plugin has are
    /// reported, since a typo there would otherwise go unseen.
    pub configured_tasks: Vec<String>,
    /// Each plugin's settings, for the plugins' state constructors.
    pub plugin_settings: crate::plugins::PluginSettings,
    /// Where log lines go.
    pub log: crate::log::Log,
    /// Job status and retries in Redis, when the configuration names Redis.
    pub hooks: Option<crate::scheduler::job_hooks::JobHooks>,
}

/// How often a sleeping worker looks at its stop flag when nothing wakes it.
///
/// (Public for the docs: the longest a stop signal can wait.)
pub const STOP_CHECK: Duration = Duration::from_millis(500);
/// How long a server may take to answer a `GRAB_JOB_UNIQ`, or to finish a packet it started.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one server's conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; reconnect at `retry_at`.
    Down,
    /// Free: the next loop asks it for a job.
    Ready,
    /// `GRAB_JOB_UNIQ` sent at this instant; waiting for the answer.
    Grabbing(Instant),
    /// `PRE_SLEEP` sent; waiting for `NOOP`.
    Asleep,
    /// It assigned us a job (in `Server::job`) that we have not run yet.
    Holding,
}

struct Server {
    addr: ServerAddr,
    conn: Option<Conn>,
    state: State,
    job: Option<Assigned>,
    retry_at: Instant,
    backoff: Backoff,
    /// Since when part of a packet sits in the buffer.
    partial_since: Option<Instant>,
}

impl Server {
    fn drop_conn(&mut self, why: &str) {
        warn!("Lost {why}; reconnecting");
        self.conn = None;
        self.job = None;
        self.partial_since = None;
        self.state = State::Down;
        self.retry_at = Instant::now();
    }
}

/// What the worker did, for the caller's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Whether the worker stopped because its memory passed the limit.
    pub over_memory: bool,
}

/// This process's resident memory in bytes, from `/proc/self/statm`.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// A worker process's body: loads the plugins from `plugins`, runs the worker until it is
/// stopped, logs how it went. Returns the process's exit code: 0 when stopped,
/// [`EXIT_RECYCLE`](crate::daemon::EXIT_RECYCLE) when it ended to be replaced (`--max-jobs`,
/// `--memlimit`), 2 when the plugins cannot be loaded. Used by `work` and by each worker
/// `start` forks.
pub fn serve(plugins: Result<&std::path::Path, String>, worker: &WorkerConfig) -> u8 {
    crate::log::init(worker.log.verbose);
    let mut registry = match plugins.and_then(|dir| Registry::scan(dir).map_err(|e| e.to_string())) {
        Ok(registry) => registry,
        Err(err) => {
            log::error!("Cannot load plugins: {err}");
            return 2;
        }
    };
    for rejected in registry.rejected() {
        warn!("Skipped {rejected}");
    }
    // Plugin state, here in the worker (after the fork), before the first job; per job under
    // --atomic, so that no connection is shared between processes.
    let mode = if worker.atomic { StateMode::PerJob } else { StateMode::Eager };
    // A constructor may block (a Redis that accepts but never answers): each is logged before
    // it runs, has `state_timeout` to return, and a stop signal meanwhile ends the worker.
    let timeout = worker.plugin_settings.state_timeout;
    let refusals = crate::signals::while_building_states(|| {
        registry.build_states_watched(
            &worker.plugin_settings,
            mode,
            &mut |plugin| {
                info!("Building the state of plugin {plugin} (state_timeout {}s)", timeout.as_secs_f64());
                let message = format!(
                    "li3g-host: worker {}: plugin {plugin}'s state constructor did not return within {}s \
                     (plugins.state_timeout); the worker exits\n",
                    std::process::id(),
                    timeout.as_secs_f64()
                );
                crate::signals::state_deadline(Some((timeout, message)));
            },
            &mut || crate::signals::state_deadline(None),
        )
    });
    for refused in refusals {
        warn!("Skipped {refused}");
    }
    for unknown in unknown_tasks(&worker.configured_tasks, &registry) {
        warn!("Configuration: {unknown}");
    }
    for unused in unused_plugin_settings(&worker.plugin_settings, &registry) {
        warn!("Configuration: {unused}");
    }
    info!("Worker started: {} tasks, servers {}", registry.task_names().len(), list(&worker.servers));
    let stats = run(&registry, worker, &crate::signals::stop_requested);
    info!("Worker ended: {} jobs completed, {} failed", stats.completed, stats.failed);
    let used_up = worker.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max);
    if stats.over_memory || (used_up && !crate::signals::stop_requested()) {
        crate::daemon::EXIT_RECYCLE as u8
    } else {
        0
    }
}

/// A line for every plugin settings section that no loaded plugin reads: one naming no loaded
/// plugin (a typo), or one given to a plugin that takes no settings.
pub fn unused_plugin_settings(settings: &crate::plugins::PluginSettings, registry: &Registry) -> Vec<String> {
    let mut lines = Vec::new();
    for name in settings.values.keys() {
        let found = registry.plugins().iter().find(|p| &p.name == name);
        match found {
            None => lines.push(format!("{}.{name} names no loaded plugin; its settings are unused", settings.key)),
            Some(plugin) if plugin.settings.is_empty() => {
                lines.push(format!("{}.{name}: plugin {name} takes no settings; the section is unused", settings.key))
            }
            Some(_) => {}
        }
    }
    lines
}

/// A line for every task in `configured` (the configuration sets options for it) that no
/// loaded plugin has.
pub fn unknown_tasks<'a>(configured: impl IntoIterator<Item = &'a String>, registry: &Registry) -> Vec<String> {
    let known = registry.task_names();
    configured
        .into_iter()
        .filter(|task| !known.contains(task))
        .map(|task| format!("tasks.\"{task}\" names no loaded task; its settings are unused"))
        .collect()
}

fn list(servers: &[ServerAddr]) -> String {
    servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Runs the worker until `stop()` returns true or `max_jobs` jobs are done.
pub fn run(registry: &Registry, config: &WorkerConfig, stop: &dyn Fn() -> bool) -> WorkerStats {
    let functions = functions(registry);
    let mut servers: Vec<Server> = config
        .servers
        .iter()
        .map(|addr| Server {
            addr: addr.clone(),
            conn: None,
            state: State::Down,
            job: None,
            retry_at: Instant::now(),
            backoff: Backoff::DEFAULT,
            partial_since: None,
        })
        .collect();
    let mut stats = WorkerStats::default();
    // The server whose held job runs next when several hold one.
    let mut turn = 0;
    let mut readable: Vec<bool> = vec![false; servers.len()];
    loop {
        if stop() || stats.over_memory || config.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max) {
            fork::reap_children(true);
            return stats;
        }
        let now = Instant::now();
        for server in servers.iter_mut().filter(|s| s.state == State::Down && now >= s.retry_at) {
            connect(server, &functions, config);
        }

        // 1. One held job, servers in turn.
        let n = servers.len();
        if let Some(i) = (0..n).map(|k| (turn + k) % n).find(|&i| servers[i].state == State::Holding) {
            turn = (i + 1) % n;
            let server = &mut servers[i];
            let job = server.job.take().expect("a holding server has a job");
            let conn = server.conn.as_mut().expect("a holding server is connected");
            match work(registry, config, conn, &job) {
                Ok(ok) => {
                    if ok {
                        stats.completed += 1;
                    } else {
                        stats.failed += 1;
                    }
                    server.state = State::Ready;
                    check_memory(config, &mut stats);
                }
                Err(err) => server.drop_conn(&err.to_string()),
            }
            if stop() || config.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max) {
                // Send the answer, grab nothing more.
                if let Some(conn) = servers[i].conn.as_mut() {
                    if let Err(err) = conn.flush() {
                        servers[i].drop_conn(&err.to_string());
                    }
                }
                continue;
            }
        }

        // 2. Ask every free server for a job; send what each is owed.
        let now = Instant::now();
        for server in &mut servers {
            let Some(conn) = server.conn.as_mut() else { continue };
            if server.state == State::Ready {
                if let Err(err) = conn.queue_packet(&Packet::GrabJobUniq) {
                    server.drop_conn(&err.to_string());
                    continue;
                }
                server.state = State::Grabbing(now);
            }
            if conn.has_queued() {
                if let Err(err) = conn.flush() {
                    server.drop_conn(&err.to_string());
                }
            }
        }

        // 3. Wait for what the servers send (not at all while a job is held), then read.
        let holding = servers.iter().any(|s| s.state == State::Holding);
        let timeout = if holding { Duration::ZERO } else { wait_time(&servers) };
        if servers.len() == 1 && servers[0].conn.is_some() && !holding {
            // One server: read at once, blocking up to STOP_CHECK (its deadlines are coarser).
            readable[0] = true;
        } else {
            wait(&servers, timeout, &mut readable);
        }
        let now = Instant::now();
        for (server, &readable) in servers.iter_mut().zip(&readable) {
            if readable {
                receive(server, now);
            }
            overdue(server, now);
        }
    }
}

/// Waits in one `poll(2)` over every connection and the signal wake-up pipe, at most `timeout`;
/// marks in `readable` the servers that have something to read.
fn wait(servers: &[Server], timeout: Duration, readable: &mut [bool]) {
    let mut fds = Vec::with_capacity(servers.len() + 1);
    let mut which = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        if let Some(conn) = &server.conn {
            fds.push(PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN));
            which.push(i);
        }
    }
    let wake_fd = crate::signals::wake_fd();
    // SAFETY: the wake pipe lives as long as this process; signals only replace it in a child.
    let wake = (wake_fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(wake_fd) });
    fds.extend(wake.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
    readable.fill(false);
    // An error here (EINVAL, ENOMEM) leaves nothing readable; the loop looks again.
    if !process::poll(&mut fds, Some(timeout)).unwrap_or(false) {
        return;
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    for (fd, &i) in fds.iter().zip(&which) {
        readable[i] = ready(fd);
    }
    if wake.is_some() && fds.last().is_some_and(ready) {
        crate::signals::drain_wake();
    }
}

/// How long `poll` may wait: until the next deadline, reconnect, or stop-flag look.
fn wait_time(servers: &[Server]) -> Duration {
    let now = Instant::now();
    let mut until = now + STOP_CHECK;
    for server in servers {
        let deadline = match server.state {
            State::Down => Some(server.retry_at),
            State::Grabbing(since) => Some(since + ANSWER_DEADLINE),
            _ => None,
        };
        for at in deadline.into_iter().chain(server.partial_since.map(|since| since + ANSWER_DEADLINE)) {
            until = until.min(at);
        }
    }
    until.saturating_duration_since(now)
}

/// Connects and registers a server that is down and due.
fn connect(server: &mut Server, functions: &[String], config: &WorkerConfig) {
    match register(&server.addr, functions, config) {
        Ok(conn) => {
            info!("Connected to {} and registered {} functions", server.addr, functions.len());
            server.conn = Some(conn);
            server.state = State::Ready;
            server.backoff.reset();
        }
        Err(err) => {
            let delay = server.backoff.failed();
            warn!("Cannot reach {err}; retrying in {delay:?}");
            server.retry_at = Instant::now() + delay;
        }
    }
}

/// Reads once from a readable server and acts on every whole packet.
fn receive(server: &mut Server, now: Instant) {
    let Some(conn) = server.conn.as_mut() else { return };
    if let Err(err) = conn.read_some() {
        return server.drop_conn(&err.to_string());
    }
    loop {
        let packet = match conn.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(err) => return server.drop_conn(&err.to_string()),
        };
        match (packet, server.state) {
            (
                Packet::JobAssignUniq { handle, function, workload, .. }
                | Packet::JobAssign { handle, function, workload }
                | Packet::JobAssignAll { handle, function, workload, .. },
                State::Grabbing(_),
            ) => {
                let function = String::from_utf8_lossy(&function).into_owned();
                server.job = Some(Assigned { handle, function, workload });
                server.state = State::Holding;
            }
            (Packet::NoJob, State::Grabbing(_)) => {
                if let Err(err) = conn.queue_packet(&Packet::PreSleep) {
                    return server.drop_conn(&err.to_string());
                }
                server.state = State::Asleep;
            }
            (Packet::Noop, State::Asleep) => server.state = State::Ready,
            (Packet::Error { code, message }, _) => {
                let (code, text) = (String::from_utf8_lossy(&code), String::from_utf8_lossy(&message));
                return server.drop_conn(&format!("{}: the server answered ERROR {code} {text}", server.addr));
            }
            (Packet::JobAssignUniq { .. } | Packet::JobAssign { .. } | Packet::JobAssignAll { .. }, _) => {
                return server.drop_conn(&format!("{}: a job assigned that we did not ask for", server.addr));
            }
            // A NOOP while awake, or an answer we do not need.
            _ => {}
        }
    }
    server.partial_since = if conn.has_partial_packet() { server.partial_since.or(Some(now)) } else { None };
}

/// Drops a server that owes an answer or the rest of a packet past its deadline.
fn overdue(server: &mut Server, now: Instant) {
    if server.conn.is_none() {
        return;
    }
    if server.partial_since.is_some_and(|since| now >= since + ANSWER_DEADLINE) {
        let why = format!("{}: a packet left unfinished for {ANSWER_DEADLINE:?}", server.addr);
        server.drop_conn(&why);
    } else if matches!(server.state, State::Grabbing(since) if now >= since + ANSWER_DEADLINE) {
        let why = format!("{}: no answer to GRAB_JOB_UNIQ within {ANSWER_DEADLINE:?}", server.addr);
        server.drop_conn(&why);
    }
}

/// Without `--atomic`, a worker whose memory passed the limit ends after its job.
fn check_memory(config: &WorkerConfig, stats: &mut WorkerStats) {
    if config.atomic {
        return;
    }
    if let (Some(limit), Some(rss)) = (config.memlimit, config.memlimit.and_then(|_| resident_memory())) {
        if rss > limit {
            info!("Resident memory {rss} bytes exceeds the limit of {limit}; exiting to be replaced");
            stats.over_memory = true;
        }
    }
}

/// The names to register: tasks, bare class names of `::run` tasks, ping, compatibility.
fn functions(registry: &Registry) -> Vec<String> {
    let mut names = registry.task_names();
    let bare: Vec<String> = names.iter().filter_map(|n| n.strip_suffix("::run").map(str::to_string)).collect();
    names.extend(bare);
    names.push(PING_FUNCTION.to_string());
    names.push(COMPAT_FUNCTION.to_string());
    names
}

fn register(addr: &ServerAddr, functions: &[String], config: &WorkerConfig) -> Result<Conn, ConnError> {
    let mut conn = Conn::connect(addr, CONNECT_TIMEOUT)?;
    // A job child (`--atomic`) must not keep this connection open past its worker.
    crate::process::keep_from_children(conn.stream());
    if config.servers.len() == 1 {
        // One server: a read that blocks (briefly) needs no poll before it. A signal cuts it
        // short; one that lands just before the read waits at most STOP_CHECK.
        conn.set_blocking_reads(STOP_CHECK)?;
    } else {
        conn.set_nonblocking(true)?;
    }
    conn.queue_packet(&Packet::SetClientId { id: config.client_id.as_bytes().to_vec() })?;
    for name in functions {
        let function = name.as_bytes().to_vec();
        // Under `atomic` the worker enforces timeouts itself (it kills and fails the job); a
        // server-side timeout too would requeue the job it is failing.
        let timeout = config.timeouts.get(&canonical_task_name(name)).copied().or(config.timeout);
        let packet = match timeout.filter(|_| !config.atomic) {
            Some(timeout) => Packet::CanDoTimeout { function, timeout: timeout_millis(timeout) },
            None => Packet::CanDo { function },
        };
        conn.queue_packet(&packet)?;
    }
    // Sent with the first GRAB_JOB_UNIQ.
    Ok(conn)
}

/// A timeout as `CAN_DO_TIMEOUT` wants it: milliseconds, at least gearmand's minimum of 1000.
fn timeout_millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1000)
}

struct Assigned {
    handle: Vec<u8>,
    function: String,
    workload: Vec<u8>,
}

/// Sends what a task reports to the job's server as it happens.
struct Reporter<'a> {
    conn: &'a mut Conn,
    handle: &'a [u8],
    failed: Option<ConnError>,
}

impl Reporter<'_> {
    fn send(&mut self, packet: Packet) {
        if self.failed.is_none() {
            if let Err(err) = self.conn.write_packet(&packet) {
                self.failed = Some(err);
            }
        }
    }
}

impl JobEvents for Reporter<'_> {
    fn status(&mut self, numerator: u64, denominator: u64) {
        self.send(Packet::WorkStatus { handle: self.handle.to_vec(), numerator, denominator });
    }
    fn data(&mut self, data: &[u8]) {
        self.send(Packet::WorkData { handle: self.handle.to_vec(), data: data.to_vec() });
    }
    fn warning(&mut self, data: &[u8]) {
        self.send(Packet::WorkWarning { handle: self.handle.to_vec(), data: data.to_vec() });
    }
}

/// Runs one job and queues its answer on `conn`; `Ok(true)` when it completed, `Ok(false)`
/// when it failed.
fn work(registry: &Registry, config: &WorkerConfig, conn: &mut Conn, job: &Assigned) -> Result<bool, ConnError> {
    let handle = job.handle.clone();
    let mut task = job.function.clone();
    let result: Result<Vec<u8>, String> = if job.function == PING_FUNCTION {
        debug!("Handling job {} {PING_FUNCTION}", String::from_utf8_lossy(&handle));
        Ok(format!("pong from {}", config.client_id).into_bytes())
    } else {
        match workload::decode(&job.function, &job.workload) {
            Err(err) => Err(err.to_string()),
            Ok(decoded) => {
                let info = JobInfo {
                    id: decoded.id.unwrap_or_else(crate::job_id::generate),
                    environment: decoded.env.unwrap_or_else(|| config.environment.clone()),
                    env_vars: decoded.env_vars,
                };
                task = registry.resolve(&decoded.task);
                debug!("Handling job #{} {task} ({})", info.id, String::from_utf8_lossy(&handle));
                let hook_log = |line: &str| info!("{line}");
                if let Some(hooks) = &config.hooks {
                    hooks.report_start(&info.id, &hook_log);
                }
                let args = decoded.args.to_string();
                let mut reporter = Reporter { conn: &mut *conn, handle: &handle, failed: None };
                let run = |events: &mut dyn JobEvents| {
                    registry
                        .dispatch(&task, &args, &info, events)
                        .map(|output| output.as_bytes().to_vec())
                        .map_err(|err| err.to_string())
                };
                let outcome = if config.atomic {
                    let limits = ChildLimits {
                        timeout: config.timeouts.get(&task).copied().or(config.timeout),
                        memory: config.memlimit,
                    };
                    fork::run_in_child(run, limits, &mut reporter).unwrap_or_else(|err| {
                        let hint = match (&err, config.memlimit) {
                            (
                                fork::ForkError::Signaled { signal: nix::sys::signal::Signal::SIGABRT, .. },
                                Some(limit),
                            ) => {
                                format!(" (an allocation past the memory limit of {} MiB aborts)", limit >> 20)
                            }
                            _ => String::new(),
                        };
                        match err {
                            fork::ForkError::MultiThreaded(_) | fork::ForkError::Os(_) => {
                                Err(format!("task {task} cannot run: {err}"))
                            }
                            _ => Err(format!("task {task} {err}{hint}")),
                        }
                    })
                } else {
                    run(&mut reporter)
                };
                if let Some(err) = reporter.failed {
                    return Err(err);
                }
                if let Some(hooks) = &config.hooks {
                    hooks.report_end(&info.id, &job.function, &job.workload, &outcome, &hook_log);
                }
                outcome
            }
        }
    };
    // The answer goes out with the next GRAB_JOB_UNIQ, in one write.
    match result {
        Ok(data) => {
            debug!("Job {} {task} completed", String::from_utf8_lossy(&handle));
            conn.queue_packet(&Packet::WorkComplete { handle, data })?;
            Ok(true)
        }
        Err(message) => {
            warn!("Job {} {task} failed: {message}", String::from_utf8_lossy(&handle));
            // Not WORK_EXCEPTION: gearmand passes that only to clients that asked for
            // exceptions and relays it to the others as a `WORK_FAIL handle\0` that stock
            // clients cannot match (the gearman CLI waits forever). The message as a warning,
            // then a plain WORK_FAIL, reaches every client; li3g's client reads the warning
            // just before the WORK_FAIL as the failure's message.
            conn.queue_packet(&Packet::WorkWarning { handle: handle.clone(), data: message.into_bytes() })?;
            conn.queue_packet(&Packet::WorkFail { handle })?;
            Ok(false)
        }
    }
}
