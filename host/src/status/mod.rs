//! What a running daemon is doing, in one report: its scoreboard (the daemon, each child and
//! its job in hand, restarts, the last failures), every job server's queues (the admin
//! `status`), and the scheduler's counts when Redis is configured. `li3g-host status` prints
//! it ([`Report::text`]) or its JSON (`--json`, the [`Report`] serialised; its fields are the
//! documented, stable format of docs/WATCHING.md), and the monitor serves the same JSON.
//!
//! Reading is all it does: the scoreboard is mapped read-only, the job servers are asked one
//! admin command each, Redis one listing. [`report`] asks them all at once, each on a thread of
//! its own, and waits for them until one shared deadline ([`SOURCES_WITHIN`]): a job server or a
//! Redis that accepts connections and never answers (stopped, or its machine stalled) is
//! reported as down, naming it, instead of holding the report for its own timeouts in turn.
//! (The monitor, which never forks either, caches the same questions: `monitor/sources.rs`.)

use crate::config::Config;
use crate::gearman::admin_protocol;
use crate::gearman::conn::{Conn, ServerAddr};
use crate::scheduler::schedule::{Dead, Pending, Place};
use crate::scheduler::Schedule;
use crate::scoreboard::{self, Scoreboard, ScoreboardError, Snapshot};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many failures the report lists (the scoreboard keeps more).
pub const FAILURES_SHOWN: usize = 10;
/// How long a job server may take to connect and answer `status`.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No scoreboard: no daemon was started with this PID file.
    #[error("no li3g daemon is running (no scoreboard at {})", .0.display())]
    NotRunning(PathBuf),
    /// A scoreboard is there but its supervisor is gone.
    #[error("no li3g daemon is running (the scoreboard {} is left from PID {pid}, which is gone)", .path.display())]
    Gone {
        /// The scoreboard.
        path: PathBuf,
        /// The supervisor it names.
        pid: u32,
    },
    /// The scoreboard cannot be read.
    #[error(transparent)]
    Board(#[from] ScoreboardError),
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The supervisor.
    pub daemon: Daemon,
    /// Each child.
    pub children: Vec<Child>,
    /// Children replaced, per kind and reason (only those that happened).
    pub restarts: Vec<scoreboard::Restarts>,
    /// Each job server's queues.
    pub servers: Vec<ServerQueues>,
    /// The scheduler's counts, when the configuration names Redis.
    pub scheduler: Option<SchedulerCounts>,
    /// The last failures, newest first.
    pub failures: Vec<scoreboard::Failure>,
    /// Per task counters of the children that ended (recycled, crashed, restarted), so that
    /// `children[].tasks` plus these are the daemon's totals.
    pub retired: Vec<scoreboard::TaskSnapshot>,
}

/// The supervisor.
#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    /// Its PID.
    pub pid: u32,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Seconds since.
    pub uptime_seconds: f64,
    /// li3g's version.
    pub version: String,
    /// The configuration file it read (empty: built-in defaults).
    pub config: String,
    /// How many `restart`s it has done.
    pub generation: u64,
}

/// One child.
#[derive(Debug, Clone, Serialize)]
pub struct Child {
    /// `worker`, `scheduler`, `job_server`, `monitor`.
    pub kind: scoreboard::Kind,
    /// Its number within its kind (a pool's workers are numbered apart).
    pub number: u32,
    /// A worker's pool (`[NAME.pools.POOL]`); `None` for the default pool and other kinds.
    pub pool: Option<String>,
    /// Its PID.
    pub pid: u32,
    /// `starting`, `idle`, `busy`, `stopping`.
    pub state: scoreboard::State,
    /// Seconds in this state.
    pub state_seconds: f64,
    /// The job in hand.
    pub job: Option<Job>,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Resident memory, as last measured (0: not measured).
    pub rss_bytes: u64,
    /// The plugins it loaded: `[name, version]`.
    pub plugins: Vec<(String, String)>,
    /// Per task: completed, failed, time, histogram.
    pub tasks: Vec<scoreboard::TaskSnapshot>,
}

/// The job a busy child holds.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// The task.
    pub task: String,
    /// li3g's job id.
    pub id: String,
    /// The job server's handle.
    pub handle: String,
    /// The job server.
    pub server: String,
    /// Seconds it has run.
    pub seconds: f64,
}

/// One job server's queues.
#[derive(Debug, Clone, Serialize)]
pub struct ServerQueues {
    /// `host:port`.
    pub server: String,
    /// Why it could not be asked (then `functions` is empty).
    pub error: Option<String>,
    /// Its functions, as its admin `status` lists them.
    pub functions: Vec<FunctionQueue>,
}

/// One function on one job server.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionQueue {
    /// The function.
    pub function: String,
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Jobs a worker runs.
    pub running: u64,
    /// Workers that registered it.
    pub workers: u64,
}

/// The scheduler's counts in Redis.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerCounts {
    /// Why Redis could not be read (then the counts are 0).
    pub error: Option<String>,
    /// Jobs waiting for their time (li3_gearman's included).
    pub pending: u64,
    /// Jobs a scheduler has taken and is moving.
    pub leased: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// The next due time (ms since the epoch), when one is pending.
    pub next_due_ms: Option<i64>,
}

/// Maps the scoreboard at `path` and checks that its supervisor runs.
///
/// # Errors
/// [`StatusError`] when no daemon runs with it.
pub fn open(path: &Path) -> Result<Scoreboard, StatusError> {
    let board = match Scoreboard::open(path) {
        Err(ScoreboardError::Open(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StatusError::NotRunning(path.into()))
        }
        other => other.map_err(StatusError::Board)?,
    };
    let pid = board.snapshot().supervisor_pid;
    let alive =
        i32::try_from(pid).ok().is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
    if !alive {
        return Err(StatusError::Gone { path: path.into(), pid });
    }
    Ok(board)
}

/// How long [`report`] waits for the job servers and Redis, all asked at once.
pub const SOURCES_WITHIN: Duration = Duration::from_secs(2);

/// The report: the scoreboard's snapshot, and the queues and counts the configuration's job
/// servers and Redis give within [`SOURCES_WITHIN`] (all asked at once); a source that did not
/// answer by then is in the report as down (`no answer within 2.0s`).
///
/// Each source is asked on a thread of its own; one that is late is left to end by its own
/// timeouts (a job server's [`ADMIN_TIMEOUT`], Redis' connection within [`SOURCES_WITHIN`]),
/// its answer dropped. So call it from a process that does not fork (the `status` command).
pub fn report(snapshot: &Snapshot, config: &Config) -> Report {
    let deadline = std::time::Instant::now() + SOURCES_WITHIN;
    let (tx, rx) = std::sync::mpsc::channel::<Source>();
    let mut asked = 0;
    for (i, server) in config.servers.iter().enumerate() {
        let (tx, server) = (tx.clone(), server.clone());
        let spawned = std::thread::Builder::new()
            .name("status-source".into())
            .spawn(move || drop(tx.send(Source::Server(i, queues(&server)))));
        asked += usize::from(spawned.is_ok());
    }
    if let Some(url) = config.redis.clone() {
        let (tx, settings) = (tx.clone(), config.scheduler.clone());
        let spawned = std::thread::Builder::new()
            .name("status-source".into())
            .spawn(move || drop(tx.send(Source::Redis(scheduler_counts(&url, &settings)))));
        asked += usize::from(spawned.is_ok());
    }
    drop(tx);
    let mut servers: Vec<Option<ServerQueues>> = vec![None; config.servers.len()];
    let mut scheduler = None;
    for _ in 0..asked {
        let Ok(answer) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) else {
            break;
        };
        match answer {
            Source::Server(i, queues) => servers[i] = Some(queues),
            Source::Redis(counts) => scheduler = Some(counts),
        }
    }
    let late = format!("no answer within {:.1}s", SOURCES_WITHIN.as_secs_f64());
    let servers = servers
        .into_iter()
        .zip(&config.servers)
        .map(|(queues, server)| {
            queues.unwrap_or_else(|| ServerQueues {
                server: server.to_string(),
                error: Some(late.clone()),
                functions: Vec::new(),
            })
        })
        .collect();
    let scheduler = config.redis.as_deref().map(|url| {
        scheduler.unwrap_or_else(|| SchedulerCounts {
            error: Some(format!("{} gave {late}", crate::config::redact_url(url))),
            pending: 0,
            leased: 0,
            dead: 0,
            next_due_ms: None,
        })
    });
    report_with(snapshot, servers, scheduler)
}

/// One source's answer to [`report`].
enum Source {
    /// Job server number `.0`'s.
    Server(usize, ServerQueues),
    Redis(SchedulerCounts),
}

/// The report of `snapshot` with the queues and scheduler counts given (the monitor's, from its
/// cache).
pub fn report_with(snapshot: &Snapshot, servers: Vec<ServerQueues>, scheduler: Option<SchedulerCounts>) -> Report {
    let now = scoreboard::now_ms();
    let seconds = |since: u64| now.saturating_sub(since) as f64 / 1000.0;
    Report {
        daemon: Daemon {
            pid: snapshot.supervisor_pid,
            started_ms: snapshot.started_ms,
            uptime_seconds: seconds(snapshot.started_ms),
            version: snapshot.version.clone(),
            config: snapshot.config.clone(),
            generation: snapshot.generation,
        },
        children: snapshot
            .children
            .iter()
            .map(|c| Child {
                kind: c.kind,
                number: c.number,
                pool: c.pool.clone(),
                pid: c.pid,
                state: c.state,
                state_seconds: seconds(c.since_ms),
                job: c.job.as_ref().map(|j| Job {
                    task: j.task.clone(),
                    id: j.id.clone(),
                    handle: j.handle.clone(),
                    server: j.server.clone(),
                    seconds: seconds(j.started_ms),
                }),
                completed: c.completed,
                failed: c.failed,
                rss_bytes: c.rss_bytes,
                plugins: c.plugins.clone(),
                tasks: c.tasks.clone(),
            })
            .collect(),
        restarts: snapshot.restarts.iter().filter(|r| r.count > 0).cloned().collect(),
        servers,
        scheduler,
        failures: snapshot.failures.iter().take(FAILURES_SHOWN).cloned().collect(),
        retired: snapshot.retired.clone(),
    }
}

/// A job server's admin `status`.
pub fn queues(server: &ServerAddr) -> ServerQueues {
    let asked = Conn::connect(server, ADMIN_TIMEOUT).and_then(|mut conn| {
        conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
        conn.admin("status")
    });
    match asked {
        Ok(lines) => match parse_status(&lines) {
            Ok(functions) => ServerQueues { server: server.to_string(), error: None, functions },
            Err(err) => {
                ServerQueues { server: server.to_string(), error: Some(err.to_string()), functions: Vec::new() }
            }
        },
        // Connected, and then nothing (a stopped job server: the kernel accepts for it).
        Err(crate::gearman::conn::ConnError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            let late = format!("no answer within {:.1}s", ADMIN_TIMEOUT.as_secs_f64());
            ServerQueues { server: server.to_string(), error: Some(late), functions: Vec::new() }
        }
        Err(err) => ServerQueues { server: server.to_string(), error: Some(err.to_string()), functions: Vec::new() },
    }
}

/// gearmand's `status` lines (`function\ttotal\trunning\tworkers`; the total counts the
/// running) as queues; a malformed answer is an error.
///
/// # Errors
/// The line that is not a `status` line.
pub fn parse_status(lines: &[String]) -> Result<Vec<FunctionQueue>, admin_protocol::Malformed> {
    Ok(admin_protocol::parse_status(lines.iter().map(String::as_str))?
        .into_iter()
        .map(|f| FunctionQueue {
            function: f.function,
            queued: f.total.saturating_sub(f.running),
            running: f.running,
            workers: f.workers,
        })
        .collect())
}

/// The counts of the schedule at `url`, connecting and waiting for each answer at most
/// [`SOURCES_WITHIN`].
fn scheduler_counts(url: &str, settings: &crate::config::SchedulerSettings) -> SchedulerCounts {
    let counted = Schedule::open(url, settings)
        .map(|store| store.with_timeout(SOURCES_WITHIN))
        .and_then(|mut store| Ok((store.pending()?, store.dead()?)));
    let error = match counted {
        Ok((pending, dead)) => return scheduler_counts_of(&pending, &dead),
        Err(crate::scheduler::schedule::ScheduleError::Redis(err)) if err.is_timeout() => {
            format!("{} gave no answer within {:.1}s", crate::config::redact_url(url), SOURCES_WITHIN.as_secs_f64())
        }
        Err(err) => err.to_string(),
    };
    SchedulerCounts { error: Some(error), pending: 0, leased: 0, dead: 0, next_due_ms: None }
}

/// The counts of a listing of the schedule.
pub fn scheduler_counts_of(pending: &[Pending], dead: &[Dead]) -> SchedulerCounts {
    let waiting = || pending.iter().filter(|p| p.place != Place::Leased);
    SchedulerCounts {
        error: None,
        pending: waiting().count() as u64,
        leased: pending.iter().filter(|p| p.place == Place::Leased).count() as u64,
        dead: dead.len() as u64,
        next_due_ms: waiting().map(|p| p.at_ms).min(),
    }
}

fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

impl Report {
    /// The report as `li3g-host status` prints it.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let d = &self.daemon;
        let config = if d.config.is_empty() { "built-in defaults" } else { &d.config };
        let _ = writeln!(
            out,
            "li3g-host {} daemon PID {}, up {}, configuration {config}",
            d.version,
            d.pid,
            humantime::format_duration(Duration::from_secs(d.uptime_seconds as u64))
        );
        let _ = writeln!(out, "\nChildren:");
        for c in &self.children {
            let job = match &c.job {
                Some(j) => format!("  {} #{} ({}) {:.1}s", j.task, j.id, j.handle, j.seconds),
                None => String::new(),
            };
            // `worker 2`, or a pool's `reports worker 2` (as in the process title).
            let pool = c.pool.as_ref().map(|p| format!("{p} ")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {pool}{} {} PID {} {} {:.0}s  done {} failed {}  RSS {}{job}",
                c.kind.name(),
                c.number,
                c.pid,
                c.state.name(),
                c.state_seconds,
                c.completed,
                c.failed,
                mib(c.rss_bytes)
            );
        }
        if !self.restarts.is_empty() {
            let list: Vec<String> =
                self.restarts.iter().map(|r| format!("{} {} {}", r.kind.name(), r.reason, r.count)).collect();
            let _ = writeln!(out, "Restarts: {}", list.join(", "));
        }
        let _ = writeln!(out, "\nQueues:");
        for s in &self.servers {
            match &s.error {
                Some(err) => {
                    let _ = writeln!(out, "  {}: cannot ask: {err}", s.server);
                }
                None => {
                    let _ = writeln!(out, "  {}:", s.server);
                    for f in s.functions.iter().filter(|f| f.queued + f.running + f.workers > 0) {
                        let _ = writeln!(
                            out,
                            "    {}  queued {}  running {}  workers {}",
                            f.function, f.queued, f.running, f.workers
                        );
                    }
                }
            }
        }
        if let Some(s) = &self.scheduler {
            let _ = writeln!(out, "\nScheduler:");
            match &s.error {
                Some(err) => {
                    let _ = writeln!(out, "  cannot read Redis: {err}");
                }
                None => {
                    let next = s.next_due_ms.map(time).unwrap_or_else(|| "-".into());
                    let _ =
                        writeln!(out, "  pending {}  leased {}  dead {}  next due {next}", s.pending, s.leased, s.dead);
                }
            }
        }
        let _ = writeln!(out, "\nLast failures:");
        if self.failures.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for f in &self.failures {
            let signal = f.signal.map(|s| format!(" (signal {s})")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}  {} #{} ({}) on {}: {}{signal}",
                time(f.at_ms as i64),
                f.task,
                f.id,
                f.handle,
                f.server,
                f.message
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines_give_waiting_jobs() {
        let lines = vec!["Report::build\t5\t1\t2".to_string()];
        let q = super::parse_status(&lines).unwrap();
        assert!(super::parse_status(&["junk".to_string()]).is_err());
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].queued, q[0].running, q[0].workers), (4, 1, 2));
    }
}
