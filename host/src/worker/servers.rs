//! The job servers a worker takes jobs from: one connection and one state per server, and the
//! loop that grabs, runs and answers jobs over all of them ([`run`]).

use super::job::{self, Assigned, JobOutcome};
use super::memory::check_memory;
use super::selection::Selection;
use super::{job_child, WorkerConfig, WorkerStats, ANSWER_DEADLINE, PING_FUNCTION, STOP_CHECK};
use crate::gearman::conn::{Conn, ConnError, ServerAddr};
use crate::gearman::connecting::{Connecting, Progress};
use crate::gearman::packet::Packet;
use crate::plugins::{canonical_task_name, Registry};
use crate::process::{self, Backoff};
use crate::workload::COMPAT_FUNCTION;
use log::{info, warn};
use nix::poll::{PollFd, PollFlags};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping worker waits for the answers to the GRAB_JOB_UNIQs it sent, from the
/// stop or its last job since (a server answers one at once; one that does not is left).
const DRAIN_WITHIN: Duration = Duration::from_secs(1);

/// Where one server's conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; reconnect at `retry_at`.
    Down,
    /// The TCP connect or the TLS handshake is under way (in `Server::connecting`).
    Connecting,
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
    /// The connection being opened, while `Connecting`.
    connecting: Option<Connecting>,
    state: State,
    job: Option<Assigned>,
    retry_at: Instant,
    backoff: Backoff,
    /// Since when part of a packet sits in the buffer.
    partial_since: Option<Instant>,
}

impl Server {
    /// Drops the connection; it is opened again after the backoff's next delay. The backoff is
    /// reset only once a server has answered ([`receive`]), not when the connection opens: a
    /// server that takes the connection and closes it unanswered (a TLS proxy whose job server
    /// is down, a mutual-TLS server refusing our certificate after the handshake) was otherwise
    /// reconnected to at once, in a loop, hundreds of times a second.
    fn drop_conn(&mut self, why: &str) {
        let delay = self.backoff.failed();
        warn!("Lost {why}; reconnecting in {delay:?}");
        self.conn = None;
        self.job = None;
        self.partial_since = None;
        self.state = State::Down;
        self.retry_at = Instant::now() + delay;
    }
}

/// Runs the worker until `stop()` returns true or `max_jobs` jobs are done.
pub fn run(registry: &Registry, config: &WorkerConfig, stop: &dyn Fn() -> bool) -> WorkerStats {
    let functions = functions(registry, &config.selection);
    let mut servers: Vec<Server> = config
        .servers
        .iter()
        .map(|addr| Server {
            addr: addr.clone(),
            conn: None,
            connecting: None,
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
    // Since when the worker is stopping (see the loop's first lines).
    let mut stopping_since: Option<Instant> = None;
    loop {
        // Stopping: no new GRAB_JOB_UNIQ, and a server still answering one (it may be assigning
        // us a job now) is waited for, at most DRAIN_WITHIN, and a job it assigns is run, as a
        // job in hand. Gone with an assigned job, the worker would make the server requeue it,
        // one of `--job-retries` spent (the last one: the job dropped). A second stop signal
        // means now.
        let stopping = stop() || stats.over_memory || used_up(config, &stats);
        let now = Instant::now();
        let since = if stopping { *stopping_since.get_or_insert(now) } else { now };
        let holding = servers.iter().any(|s| s.state == State::Holding);
        let asked = now < since + DRAIN_WITHIN && servers.iter().any(|s| matches!(s.state, State::Grabbing(_)));
        if stopping && (!(holding || asked) || crate::signals::stop_count() >= 2) {
            job_child::reap_children(true);
            return stats;
        }
        for server in servers.iter_mut().filter(|s| !stopping && s.state == State::Down && now >= s.retry_at) {
            start_connect(server, &functions, config);
        }

        // 1. One held job, servers in turn.
        let n = servers.len();
        if let Some(i) = (0..n).map(|k| (turn + k) % n).find(|&i| servers[i].state == State::Holding) {
            turn = (i + 1) % n;
            let server = &mut servers[i];
            let job = server.job.take().expect("a holding server has a job");
            let conn = server.conn.as_mut().expect("a holding server is connected");
            match job::work(registry, config, conn, &job) {
                Ok(report) => {
                    // Dropped before the memory check: the answer is queued on the connection,
                    // and a large result kept here too would be counted twice.
                    match report.outcome {
                        JobOutcome::Completed(_) => stats.completed += 1,
                        JobOutcome::Failed(_) => stats.failed += 1,
                    }
                    drop(report);
                    server.state = State::Ready;
                    check_memory(config, &mut stats);
                }
                Err(err) => server.drop_conn(&err.to_string()),
            }
            // A stopping worker's wait for the answers it asked for starts again after a job in
            // hand: an answer that came while the job ran, within the wait, is in the socket
            // unread (the `continue` below skips the read), and counted from before the job the
            // wait was over, so the worker left with that job assigned (dropped with
            // `--job-retries=1`). At most one job per server: no new GRAB_JOB_UNIQ once stopping.
            stopping_since = None;
            // Past its memory limit too: otherwise the next step asked every free server for a
            // job (`stopping` was taken before this job) and the worker ran it, still over.
            if stop() || stats.over_memory || used_up(config, &stats) {
                // Send the answer, grab nothing more.
                if let Some(conn) = servers[i].conn.as_mut() {
                    if let Err(err) = conn.flush() {
                        servers[i].drop_conn(&err.to_string());
                    }
                }
                continue;
            }
        }

        // 2. Ask every free server for a job, no more at a time than `max_jobs` leaves (each
        // job a server hands us is run, even past `max_jobs`: see the loop's first lines);
        // send what each is owed.
        let now = Instant::now();
        let mut room = config.max_jobs.map(|max| {
            let asked = servers.iter().filter(|s| matches!(s.state, State::Holding | State::Grabbing(_))).count();
            max.saturating_sub(stats.completed + stats.failed + asked as u64)
        });
        for server in &mut servers {
            let Some(conn) = server.conn.as_mut() else { continue };
            if server.state == State::Ready && !stopping && room != Some(0) {
                if let Err(err) = conn.queue_packet(&Packet::GrabJobUniq) {
                    server.drop_conn(&err.to_string());
                    continue;
                }
                server.state = State::Grabbing(now);
                room = room.map(|left| left - 1);
            }
            if conn.has_queued() {
                if let Err(err) = conn.flush() {
                    server.drop_conn(&err.to_string());
                }
            }
        }

        // What the last job child left (it answered and exits; whatever it started in its
        // group is killed now, not at the next job), while the servers answer what was sent.
        if job_child::has_exiting() {
            job_child::reap_children(false);
        }

        // 3. Wait for what the servers send (not at all while a job is held), then read.
        let holding = servers.iter().any(|s| s.state == State::Holding);
        let timeout = if holding { Duration::ZERO } else { wait_time(&servers, config.recycle_at) };
        if servers.len() == 1 && !servers[0].addr.tls && servers[0].conn.is_some() && !holding {
            // One server: read at once, blocking up to STOP_CHECK (its deadlines are coarser).
            readable[0] = true;
        } else {
            wait(&servers, timeout, &mut readable);
        }
        let now = Instant::now();
        for (server, &readable) in servers.iter_mut().zip(&readable) {
            if server.state == State::Connecting {
                if readable || server.connecting.as_ref().is_some_and(|c| now >= c.deadline()) {
                    advance_connect(server, &functions, config);
                }
                continue;
            }
            if readable {
                receive(server, now);
            }
            overdue(server, now);
        }
    }
}

/// Waits in one `poll(2)` over every connection (and connection being opened) and the signal
/// wake-up pipe, at most `timeout`; marks in `readable` the servers whose socket is ready.
fn wait(servers: &[Server], timeout: Duration, readable: &mut [bool]) {
    let mut fds = Vec::with_capacity(servers.len() + 1);
    let mut which = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        if let Some(conn) = &server.conn {
            fds.push(PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN));
            which.push(i);
        } else if let Some(connecting) = &server.connecting {
            fds.push(PollFd::new(connecting.socket().as_fd(), connecting.events()));
            which.push(i);
        }
    }
    let wake = crate::signals::wake_fd();
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

/// Whether the worker has done its share: `max_jobs` jobs, or its age past `recycle_at`.
pub(super) fn used_up(config: &WorkerConfig, stats: &WorkerStats) -> bool {
    config.max_jobs.is_some_and(|max| stats.completed + stats.failed >= max)
        || config.recycle_at.is_some_and(|at| Instant::now() >= at)
}

/// How long `poll` may wait: until the next deadline, reconnect, recycle, or stop-flag look.
fn wait_time(servers: &[Server], recycle_at: Option<Instant>) -> Duration {
    let now = Instant::now();
    let mut until = recycle_at.map_or(now + STOP_CHECK, |at| at.max(now).min(now + STOP_CHECK));
    for server in servers {
        let deadline = match server.state {
            State::Down => Some(server.retry_at),
            State::Connecting => server.connecting.as_ref().map(Connecting::deadline),
            State::Grabbing(since) => Some(since + ANSWER_DEADLINE),
            _ => None,
        };
        for at in deadline.into_iter().chain(server.partial_since.map(|since| since + ANSWER_DEADLINE)) {
            until = until.min(at);
        }
    }
    until.saturating_duration_since(now)
}

/// Starts connecting to a server that is down and due, and takes what steps it can at once
/// (a loopback server is often connected before any wait).
fn start_connect(server: &mut Server, functions: &[String], config: &WorkerConfig) {
    match Connecting::start(&server.addr, CONNECT_TIMEOUT) {
        Ok(connecting) => {
            server.connecting = Some(connecting);
            server.state = State::Connecting;
            advance_connect(server, functions, config);
        }
        Err(err) => connect_failed(server, &err),
    }
}

/// Moves a connection being opened on; registers it once it is open.
fn advance_connect(server: &mut Server, functions: &[String], config: &WorkerConfig) {
    let Some(connecting) = server.connecting.take() else { return };
    let connected = connecting.advance().and_then(|progress| match progress {
        Progress::Connected(conn) => register(conn, functions, config).map(Some),
        Progress::Pending(connecting) => {
            // A job child (`--atomic`) must not keep this socket open past its worker (each
            // address tried is a new socket).
            crate::process::keep_from_children(connecting.socket());
            server.connecting = Some(connecting);
            Ok(None)
        }
    });
    match connected {
        Ok(None) => {}
        Ok(Some(conn)) => {
            info!("Connected to {} and registered {} functions", server.addr, functions.len());
            server.conn = Some(conn);
            server.state = State::Ready;
        }
        Err(err) => connect_failed(server, &err),
    }
}

fn connect_failed(server: &mut Server, err: &ConnError) {
    let delay = server.backoff.failed();
    warn!("Cannot reach {err}; retrying in {delay:?}");
    server.connecting = None;
    server.state = State::Down;
    server.retry_at = Instant::now() + delay;
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
        if !matches!(packet, Packet::Error { .. }) {
            // It speaks Gearman to us: the connection worked.
            server.backoff.reset();
        }
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

/// The names to register: the selected tasks, bare class names of `::run` tasks, ping, and
/// (unless the worker serves a pool) compatibility.
fn functions(registry: &Registry, selection: &Selection) -> Vec<String> {
    let mut names: Vec<String> = registry.task_names().into_iter().filter(|name| selection.selects(name)).collect();
    let bare: Vec<String> = names.iter().filter_map(|n| n.strip_suffix("::run").map(str::to_string)).collect();
    names.extend(bare);
    names.push(PING_FUNCTION.to_string());
    if selection.serves_compat() {
        names.push(COMPAT_FUNCTION.to_string());
    }
    names
}

/// Sets an open connection's mode and queues its registration.
fn register(mut conn: Conn, functions: &[String], config: &WorkerConfig) -> Result<Conn, ConnError> {
    // A job child (`--atomic`) must not keep this connection open past its worker.
    crate::process::keep_from_children(conn.stream());
    if config.servers.len() == 1 && !conn.server().tls {
        // One server: a read that blocks (briefly) needs no poll before it. A signal cuts it
        // short; one that lands just before the read waits at most STOP_CHECK. Not over TLS:
        // rustls retries a read a signal interrupted, so every stop would wait STOP_CHECK;
        // the poll, which watches the signal pipe too, sees it at once.
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
