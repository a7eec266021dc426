//! The Gearman worker: takes jobs from every configured job server and runs them in plugins.
//!
//! One worker is one single-threaded process holding one connection per server. It registers
//! every task (`CAN_DO`; a class whose `run` exists is also registered by its bare name, since
//! `Hello` means `Hello::run`), the built-in [`PING_FUNCTION`] and li3_gearman's
//! [`COMPAT_FUNCTION`](crate::workload::COMPAT_FUNCTION), then loops:
//!
//! 1. ask each awake server for a job (`GRAB_JOB_UNIQ`) and run what it gives;
//! 2. when no server has work, tell each one `PRE_SLEEP` and wait in `poll(2)` until one
//!    wakes us with `NOOP` — never a busy poll;
//! 3. a server that goes away is reconnected with exponential backoff (100 ms to 30 s) and
//!    registered again, so a job server restart never needs a worker restart.
//!
//! A job's progress and partial data go out as `WORK_STATUS`/`WORK_DATA`/`WORK_WARNING` while it
//! runs; its result as `WORK_COMPLETE`, its failure as `WORK_EXCEPTION` with the message
//! (gearmand turns that into `WORK_FAIL` for clients that did not ask for exceptions).

use crate::fork::{self, ChildLimits};
use crate::gearman::conn::{Conn, ConnError, ServerAddr};
use crate::gearman::packet::Packet;
use crate::plugins::{canonical_task_name, JobEvents, JobInfo, Registry};
use crate::workload::{self, COMPAT_FUNCTION};
use std::os::fd::AsRawFd;
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
    /// Where log lines go.
    pub log: crate::log::Log,
    /// Job status and retries in Redis, when the configuration names Redis.
    pub hooks: Option<crate::scheduler::retry::JobHooks>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a sleeping worker looks at its stop flag when nothing wakes it.
const STOP_CHECK: Duration = Duration::from_millis(500);

struct Server {
    addr: ServerAddr,
    conn: Option<Conn>,
    asleep: bool,
    retry_at: Instant,
    backoff: Duration,
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

/// Runs the worker until `stop()` returns true or `max_jobs` jobs are done.
pub fn run(registry: &Registry, config: &WorkerConfig, stop: &dyn Fn() -> bool) -> WorkerStats {
    let functions = functions(registry);
    let mut servers: Vec<Server> = config
        .servers
        .iter()
        .map(|addr| Server {
            addr: addr.clone(),
            conn: None,
            asleep: false,
            retry_at: Instant::now(),
            backoff: MIN_BACKOFF,
        })
        .collect();
    let mut stats = WorkerStats::default();
    let log = |message: String| config.log.worker(&message);
    loop {
        let mut worked = false;
        for server in &mut servers {
            if stop() || stats.over_memory || config.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max) {
                fork::reap_children(true);
                return stats;
            }
            if server.conn.is_none() && Instant::now() >= server.retry_at {
                match register(&server.addr, &functions, config) {
                    Ok(conn) => {
                        log(format!("Connected to {} and registered {} functions", server.addr, functions.len()));
                        server.conn = Some(conn);
                        server.asleep = false;
                        server.backoff = MIN_BACKOFF;
                    }
                    Err(err) => {
                        log(format!("Cannot reach {err}; retrying in {:?}", server.backoff));
                        server.retry_at = Instant::now() + server.backoff;
                        server.backoff = (server.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let Some(conn) = server.conn.as_mut() else { continue };
            if server.asleep {
                continue;
            }
            let outcome = grab(conn).and_then(|job| match job {
                Some(job) => {
                    worked = true;
                    let ok = work(registry, config, conn, &job)?;
                    if ok {
                        stats.completed += 1
                    } else {
                        stats.failed += 1
                    }
                    if !config.atomic {
                        if let (Some(limit), Some(rss)) = (config.memlimit, resident_memory()) {
                            if rss > limit {
                                log(format!(
                                    "Resident memory {rss} bytes exceeds the limit of {limit}; exiting to be replaced"
                                ));
                                stats.over_memory = true;
                            }
                        }
                    }
                    Ok(())
                }
                None => {
                    conn.write_packet(&Packet::PreSleep)?;
                    server.asleep = true;
                    Ok(())
                }
            });
            if let Err(err) = outcome {
                log(format!("Lost {err}; reconnecting"));
                server.conn = None;
                server.retry_at = Instant::now();
            }
        }
        if !worked {
            sleep(&mut servers, &log);
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
    let mut conn = Conn::connect(addr, Duration::from_secs(5))?;
    // A job child (`--atomic`) must not keep this connection open past its worker.
    crate::process::keep_from_children(conn.stream());
    conn.write_packet(&Packet::SetClientId { id: config.client_id.as_bytes().to_vec() })?;
    for name in functions {
        let function = name.as_bytes().to_vec();
        // Under `atomic` the worker enforces timeouts itself (it kills and fails the job); a
        // server-side timeout too would requeue the job it is failing.
        let timeout = config.timeouts.get(&canonical_task_name(name)).copied().or(config.timeout);
        let packet = match timeout.filter(|_| !config.atomic) {
            Some(timeout) => Packet::CanDoTimeout { function, timeout: timeout_millis(timeout) },
            None => Packet::CanDo { function },
        };
        conn.write_packet(&packet)?;
    }
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

fn grab(conn: &mut Conn) -> Result<Option<Assigned>, ConnError> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_packet(&Packet::GrabJobUniq)?;
    loop {
        match conn.read_packet()? {
            Packet::JobAssignUniq { handle, function, workload, .. }
            | Packet::JobAssign { handle, function, workload }
            | Packet::JobAssignAll { handle, function, workload, .. } => {
                let function = String::from_utf8_lossy(&function).into_owned();
                return Ok(Some(Assigned { handle, function, workload }));
            }
            Packet::NoJob => return Ok(None),
            _ => {} // a NOOP from an earlier sleep, or an answer we do not need
        }
    }
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

/// Runs one job and answers it; `Ok(true)` when it completed, `Ok(false)` when it failed.
fn work(registry: &Registry, config: &WorkerConfig, conn: &mut Conn, job: &Assigned) -> Result<bool, ConnError> {
    let handle = job.handle.clone();
    let result: Result<Vec<u8>, String> = if job.function == PING_FUNCTION {
        config.log.worker(&format!("Handling job #{} {PING_FUNCTION}", String::from_utf8_lossy(&handle)));
        Ok(format!("pong from {}", config.client_id).into_bytes())
    } else {
        match workload::decode(&job.function, &job.workload) {
            Err(err) => {
                config.log.worker(&format!("Refusing job #{}: {err}", String::from_utf8_lossy(&handle)));
                Err(err.to_string())
            }
            Ok(decoded) => {
                let info = JobInfo {
                    id: decoded.id.unwrap_or_else(crate::job_id::generate),
                    environment: decoded.env.unwrap_or_else(|| config.environment.clone()),
                    env_vars: decoded.env_vars,
                };
                let task = canonical_task_name(&decoded.task);
                config.log.worker(&format!("Handling job #{} {task}", info.id));
                let hook_log = |line: &str| config.log.worker(line);
                if let Some(hooks) = &config.hooks {
                    hooks.report_start(&info.id, &hook_log);
                }
                let args = decoded.args.to_string();
                let mut reporter = Reporter { conn, handle: &handle, failed: None };
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
    match result {
        Ok(data) => {
            conn.write_packet(&Packet::WorkComplete { handle, data })?;
            Ok(true)
        }
        Err(message) => {
            conn.write_packet(&Packet::WorkException { handle, data: message.into_bytes() })?;
            Ok(false)
        }
    }
}

/// Waits until a sleeping server sends `NOOP`, a reconnect is due, or it is time to look at
/// the stop flag.
fn sleep(servers: &mut [Server], log: &dyn Fn(String)) {
    let now = Instant::now();
    let mut timeout = STOP_CHECK;
    for server in servers.iter().filter(|s| s.conn.is_none()) {
        timeout = timeout.min(server.retry_at.saturating_duration_since(now));
    }
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut which: Vec<usize> = Vec::new();
    let mut buffered = false;
    for (i, server) in servers.iter().enumerate() {
        if let (Some(conn), true) = (&server.conn, server.asleep) {
            // A packet read along with an earlier one sits in our buffer, where poll cannot
            // see it: such a connection is ready now.
            let ready = conn.has_buffered_packet();
            buffered |= ready;
            let revents = if ready { libc::POLLIN } else { 0 };
            fds.push(libc::pollfd { fd: conn.stream().as_raw_fd(), events: libc::POLLIN, revents });
            which.push(i);
        }
    }
    if !buffered {
        // The signal wake-up pipe too: a stop signal that lands just before the wait still
        // ends it at once.
        let wake = crate::signals::wake_fd();
        if wake >= 0 {
            fds.push(libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 });
        }
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if wake >= 0 {
            fds.pop();
            crate::signals::drain_wake();
        }
        if ready <= 0 {
            return; // timeout, or EINTR from a signal: the caller looks at its stop flag
        }
    }
    for (fd, &i) in fds.iter().zip(&which) {
        if fd.revents == 0 {
            continue;
        }
        let server = &mut servers[i];
        let Some(conn) = server.conn.as_mut() else { continue };
        match conn.read_packet() {
            Ok(Packet::Noop) => server.asleep = false,
            Ok(_) => {}
            Err(err) => {
                log(format!("Lost {err}; reconnecting"));
                server.conn = None;
                server.retry_at = Instant::now();
            }
        }
    }
}
