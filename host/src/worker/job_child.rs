//! Running one job in a freshly forked child: the isolation behind `--atomic`.
//!
//! The worker that calls [`run_in_child`] has the plugins loaded and holds the job server
//! connections; the child is a copy of it that runs the job and exits with `_exit`. Nothing the
//! job does (a leak, a global, a panic, `abort()`, a segfault, `exit()`) outlives the child.
//!
//! Protocol between them: one pipe, child to parent, of length-prefixed frames (progress,
//! data, warning, then the result or the error). The parent reads it *while* it waits, so a
//! large result never blocks the child, forwards progress and data to the job server as
//! they come, and waits on a pidfd for the child's exit, all in one `poll(2)`. A child that
//! ends without a result frame failed: the wait status says how (a signal, an exit code).
//!
//! The child leads a process group of its own: a timeout or a second stop signal kills the
//! group as a whole (whatever the job started goes too), and a Ctrl-C at the terminal does not
//! reach it. When its worker dies, even by SIGKILL, the group dies with it (the child's
//! parent-death signal kills the whole group: see [`take_the_group_when_the_worker_dies`];
//! checked against a worker that died before the request took effect), and it closes what it
//! must not hold: the worker's job server
//! sockets and the PID file's lock ([`process::close_inherited`]), the worker's wake pipe.
//! The parent caps what a frame may announce at the largest Gearman packet, so a runaway result
//! fails the job with a clear message instead of filling the worker's memory or being cut.
//!
//! A task with a sandbox ([`super::sandbox`]) runs restricted: the child applies the ruleset the
//! worker built before the fork, then runs the task.
//!
//! What the child cost ([`JobCost`], CPU time and peak memory) comes with its answer (a frame
//! of its own `getrusage`, since an answered child is reaped later, off the critical path), or
//! from `wait4` when the parent reaps a child that ended without one.
//!
//! Forking goes through [`process::fork_child_witnessed`] (signals blocked across it; the
//! single-thread check at the first fork and every [`process::ThreadWitness::RECHECK_EVERY`]
//! forks after, see [`process::ThreadWitness`] for why that is enough).

use super::job_cost::wait4;
pub use super::job_cost::JobCost;
pub use super::job_frames::MAX_FRAME;
use super::job_frames::{drain, Frames, PipeEvents, COST, RESULT_ERR, RESULT_OK};
use super::sandbox::Prepared;
use crate::plugins::JobEvents;
use crate::process::{self, ForkFailed, MultiThreaded};
use crate::signals;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Why a job could not be run in a child, or how the child failed.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The process has other threads: forking now could deadlock the child.
    #[error(transparent)]
    MultiThreaded(MultiThreaded),
    /// fork, pipe or pidfd failed.
    #[error("cannot run the job in a child process: {0}")]
    Os(#[from] io::Error),
    /// The child was killed by a signal before it answered.
    #[error("was killed by signal {}{}", .signal.as_str(), if *.core { " (core dumped)" } else { "" })]
    Signaled {
        /// The signal (`SIGSEGV`).
        signal: Signal,
        /// Whether it dumped core.
        core: bool,
    },
    /// The child exited before it answered (`exit()` inside the task).
    #[error("exited with code {0} before returning a result")]
    Exited(i32),
    /// The child ran past its timeout and was killed.
    #[error("ran past its timeout of {0:?} and was killed")]
    TimedOut(Duration),
    /// The child used its CPU time limit (`RLIMIT_CPU`): SIGXCPU at the soft limit, SIGKILL
    /// one second later at the hard one.
    #[error("used its CPU limit of {} s", .0.as_secs())]
    CpuLimit(Duration),
    /// The worker was told to stop now (a second stop signal) and killed the job.
    #[error("was killed: the worker was told to stop at once (a second stop signal)")]
    Stopped,
    /// The child sent more in one piece than a Gearman packet can carry.
    #[error("sent {size} bytes in one piece, more than the {} MiB a Gearman packet can carry; the job was stopped and failed, nothing was truncated", crate::gearman::packet::DEFAULT_MAX_BODY >> 20)]
    TooBig {
        /// What the child announced.
        size: u64,
    },
}

impl From<nix::Error> for ForkError {
    fn from(err: nix::Error) -> Self {
        ForkError::Os(io::Error::from(err))
    }
}

impl From<ForkFailed> for ForkError {
    fn from(err: ForkFailed) -> Self {
        match err {
            ForkFailed::MultiThreaded(err) => ForkError::MultiThreaded(err),
            ForkFailed::Os(err) => ForkError::Os(err),
        }
    }
}

thread_local! {
    /// Children that answered and are exiting: reaped later, off the job's critical path.
    static EXITING: std::cell::RefCell<Vec<Pid>> = const { std::cell::RefCell::new(Vec::new()) };
    /// What this worker knows about its threads, across its job children's forks.
    static WITNESS: std::cell::RefCell<process::ThreadWitness> =
        const { std::cell::RefCell::new(process::ThreadWitness::new()) };
}

/// Whether job children that answered are still to be reaped ([`reap_children`]).
pub fn has_exiting() -> bool {
    EXITING.with(|pids| !pids.borrow().is_empty())
}

/// Reaps the job children that answered since; with `block`, waits for all of them. Whatever
/// a job left running in its process group is killed first: nothing a job started in its group
/// outlives it (a process that left the group, with `setsid` or `setpgid`, is not reached).
pub fn reap_children(block: bool) {
    EXITING.with(|pids| {
        pids.borrow_mut().retain(|pid| {
            // The group keeps the child's PID as its id until the child is reaped, so this
            // cannot reach another process's group.
            let _ = signal::killpg(*pid, Signal::SIGKILL);
            let flags = if block { 0 } else { libc::WNOHANG };
            matches!(wait4(*pid, flags), Ok(None))
        });
    });
}

/// Limits for the child.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildLimits {
    /// Kill the child after this long.
    pub timeout: Option<Duration>,
    /// `RLIMIT_DATA` for the child, in bytes: an allocation past it fails (and Rust aborts).
    pub memory: Option<u64>,
    /// `RLIMIT_CPU` for the child, in whole seconds (rounded up): SIGXCPU at it, SIGKILL one
    /// second later.
    pub cpu: Option<Duration>,
}

/// How a job child ended: what it returned (or how it failed) and what it cost, when known.
#[derive(Debug)]
pub struct ChildRun {
    /// The task's result or error, or how the child failed.
    pub outcome: Result<Result<Vec<u8>, String>, ForkError>,
    /// The child's CPU time and peak memory: sent by the child with its answer, or from
    /// `wait4` when it ended without one. `None` when there was no child.
    pub cost: Option<JobCost>,
}

impl ChildLimits {
    /// The CPU limit in the whole seconds `RLIMIT_CPU` takes (at least 1).
    pub fn cpu_seconds(&self) -> Option<u64> {
        self.cpu.map(|t| (t.as_secs() + u64::from(t.subsec_nanos() > 0)).max(1))
    }
}

/// Runs `job` in a forked child and returns what it returned; the child's progress and data
/// reach `events` while it runs.
///
/// Its `outcome` is a [`ForkError`] when the process may not fork, or when the child died,
/// exited, timed out, used its CPU limit, was stopped or sent too much before returning.
///
/// With a `sandbox`, the child restricts itself to it before it runs the job (and fails the job,
/// without running it, when it cannot).
pub fn run_in_child(
    job: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    limits: ChildLimits,
    sandbox: Option<&Prepared>,
    events: &mut dyn JobEvents,
) -> ChildRun {
    match start_child(job, limits, sandbox) {
        Ok(mut child) => {
            let outcome = child.wait(limits, events);
            if outcome.is_err() && child.state == ChildState::Running {
                // Timed out, stopped, or an error while waiting: kill it now, so that what it
                // cost until then is known too.
                child.kill_and_reap();
            }
            ChildRun { outcome, cost: child.cost }
        }
        Err(err) => ChildRun { outcome: Err(err), cost: None },
    }
}

/// Forks the child that runs `job`; returns its owner.
fn start_child(
    job: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    limits: ChildLimits,
    sandbox: Option<&Prepared>,
) -> Result<JobChild, ForkError> {
    reap_children(false);
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let read_fd = read.as_raw_fd();
    let setup = || {
        signals::reset_for_job();
        let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    };
    // The thread count is read at the first fork and now and then after, not before every
    // fork: what [`process::ThreadWitness`] says and why.
    let child = WITNESS.with(|witness| {
        process::fork_child_witnessed(&mut witness.borrow_mut(), setup, move || {
            // The child's copy of the read end; the parent keeps its own.
            let _ = nix::unistd::close(read_fd);
            child(job, write, limits, sandbox)
        })
    })?;
    // Only the child sets its group (first, with every signal blocked): whatever the job starts
    // is in it, and until it exists the child has started nothing, so the `kill` beside each
    // `killpg` reaches all there is.
    Ok(JobChild { pid: child, state: ChildState::Running, pipe: Some(read.into()), cost: None })
}

/// The child's body: runs the job and sends what it returned; returns the exit code.
fn child(
    job: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    write: OwnedFd,
    limits: ChildLimits,
    sandbox: Option<&Prepared>,
) -> i32 {
    take_the_group_when_the_worker_dies();
    if let Some(bytes) = limits.memory {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, bytes, bytes);
    }
    if let Some(seconds) = limits.cpu_seconds() {
        // The soft limit sends SIGXCPU (whose default ends the process); the hard one, a
        // second later, SIGKILL for a job that catches or ignores SIGXCPU.
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CPU, seconds, seconds + 1);
    }
    let mut events = PipeEvents { pipe: std::fs::File::from(write), broken: false };
    let restricted = sandbox.map_or(Ok(()), Prepared::restrict);
    let outcome = match restricted {
        Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut events)))
            .unwrap_or_else(|_| Err("the job panicked in the host".to_string())),
        Err(err) => Err(format!("cannot enter the task's sandbox: {err}; the job did not run")),
    };
    let cost = JobCost::of_self();
    let mut payload = [0u8; 16];
    payload[..8].copy_from_slice(&u64::try_from(cost.cpu.as_micros()).unwrap_or(u64::MAX).to_be_bytes());
    payload[8..].copy_from_slice(&cost.max_rss_bytes.to_be_bytes());
    // The cost and the result in one write: one wake-up of the parent, one read.
    match &outcome {
        Ok(result) => events.frames(&[(COST, &payload), (RESULT_OK, result)]),
        Err(message) => events.frames(&[(COST, &payload), (RESULT_ERR, message.as_bytes())]),
    }
    let _ = events.pipe.flush();
    let broken = events.broken;
    // Not closed here: `_exit` closes it with the process, one system call fewer.
    let _ = std::os::fd::IntoRawFd::into_raw_fd(events.pipe);
    i32::from(broken)
}

/// The job child's parent-death signal: its handler kills the child's whole process group.
fn worker_died_signal() -> libc::c_int {
    libc::SIGRTMAX()
}

extern "C" fn kill_own_group(_: libc::c_int) {
    // SAFETY: getpid and kill are async-signal-safe. The job child leads the group whose id is
    // its PID (set in its setup); were it not its leader, no group has that id (a PID in use as
    // a group's id is not reused), the first kill fails and the second still ends the child.
    unsafe {
        let me = libc::getpid();
        libc::kill(-me, libc::SIGKILL);
        libc::kill(me, libc::SIGKILL);
    }
}

/// A worker killed outright (SIGKILL, the OOM killer) cannot kill its job child's group, and a
/// parent-death SIGKILL ends the child alone: what the job started (a program it runs, in the
/// child's group) would run on, reparented to init. So the child's parent-death signal is one
/// whose handler kills the child's whole group, itself with it (two system calls per job:
/// `rt_sigaction`, `prctl`). Kept at SIGKILL (set at the fork) when the handler cannot be
/// installed; until the switch the child has started nothing, so SIGKILL alone is enough.
fn take_the_group_when_the_worker_dies() {
    let signal = worker_died_signal();
    // SAFETY: sigaction is plain data (a handler address, a mask, flags), for which all zeroes
    // is a valid value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = kill_own_group as extern "C" fn(libc::c_int) as usize;
    // SAFETY: the handler only calls getpid and kill (async-signal-safe); `action` is ours and
    // outlives the calls, and a null old action is allowed.
    let installed = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
    };
    if installed {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and nothing else.
        let _ = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::c_ulong::try_from(signal).unwrap_or(0)) };
    }
}

/// The forked job child, owned by the worker from the fork on. However the wait for it ends
/// (an answer, an exit, an error, a timeout, a stop), dropping it leaves no process behind:
/// a child still running is killed with its process group and reaped; one that answered is
/// handed to [`reap_children`], off the job's critical path; one that exited was reaped.
struct JobChild {
    pid: Pid,
    state: ChildState,
    /// The read end of the result pipe; `None` once the child's end is closed.
    pipe: Option<std::fs::File>,
    /// What it cost, once known: from its answer, or from `wait4` when it was reaped.
    cost: Option<JobCost>,
}

/// Where a [`JobChild`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    /// Running, or exited and not reaped yet: dropping it kills its group and reaps it.
    Running,
    /// It sent its result and only `_exit`s now: dropping it queues it for [`reap_children`].
    Answered,
    /// Reaped: nothing is left to do.
    Exited,
}

impl Drop for JobChild {
    fn drop(&mut self) {
        match self.state {
            ChildState::Running => self.kill_and_reap(),
            ChildState::Answered => EXITING.with(|pids| pids.borrow_mut().push(self.pid)),
            ChildState::Exited => {}
        }
    }
}

impl JobChild {
    /// Kills the child with its process group and reaps it, keeping what it cost.
    fn kill_and_reap(&mut self) {
        // The group keeps the child's PID as its id until the child is reaped, so this
        // cannot reach another process's group.
        let _ = signal::killpg(self.pid, Signal::SIGKILL);
        let _ = signal::kill(self.pid, Signal::SIGKILL);
        if let Ok(Some((_, cost))) = wait4(self.pid, 0) {
            self.cost = Some(cost);
        }
        self.state = ChildState::Exited;
    }

    /// Waits for the child's answer or its exit, forwarding its progress and data to `events`
    /// as they come; kills it past `timeout` or at a second stop signal.
    fn wait(&mut self, limits: ChildLimits, events: &mut dyn JobEvents) -> Result<Result<Vec<u8>, String>, ForkError> {
        let timeout = limits.timeout;
        // A pidfd becomes readable when the child exits: one poll waits for data and exit alike.
        let pidfd = process::pidfd(self.pid)?;
        if let Some(pipe) = &self.pipe {
            nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut frames = Frames::default();
        loop {
            if signals::stop_count() >= 2 {
                return Err(ForkError::Stopped);
            }
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(ForkError::TimedOut(timeout.unwrap_or_default()));
            }
            let wake = signals::wake_fd();
            // On the stack, not in a `Vec`: after the fork every heap page the parent writes is
            // copied (copy-on-write), and an allocation here wrote two or three per job.
            let mut fds: [PollFd; 3] = std::array::from_fn(|_| PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            let mut used = 1;
            for fd in [self.pipe.as_ref().map(AsFd::as_fd), wake].into_iter().flatten() {
                fds[used] = PollFd::new(fd, PollFlags::POLLIN);
                used += 1;
            }
            if poll_fails_for_tests() {
                return Err(ForkError::Os(io::Error::other("poll failed (injected by LI3G_TEST_JOB_POLL_FAILS)")));
            }
            if !process::poll(&mut fds[..used], left)? {
                continue;
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let exited = ready(&fds[0]);
            let pipe_ready = self.pipe.is_some() && ready(&fds[1]);
            // Only when it woke us: an empty read of it would be a system call per job.
            if wake.is_some() && ready(&fds[used - 1]) {
                signals::drain_wake();
            }
            if pipe_ready {
                self.drain(&mut frames, events)?;
                self.cost = frames.cost.or(self.cost);
                if let Some(outcome) = frames.outcome.take() {
                    // The child answered and only `_exit`s now: answer the job at once and reap
                    // the child later, so its teardown is not on the job's critical path.
                    self.state = ChildState::Answered;
                    return Ok(outcome);
                }
            }
            if exited {
                // The child is gone: take what is left in the pipe, without waiting for an end
                // of file that a grandchild holding the write end could withhold.
                self.drain(&mut frames, events)?;
                break;
            }
        }
        let (status, cost) = wait4(self.pid, 0)?.unwrap_or((WaitStatus::StillAlive, JobCost::default()));
        self.state = ChildState::Exited;
        // wait4's figure covers the whole child, its exit included.
        self.cost = Some(cost);
        if let Some(outcome) = frames.outcome.take() {
            return Ok(outcome);
        }
        let cpu_limit = limits.cpu_seconds().map(Duration::from_secs);
        Err(match status {
            WaitStatus::Signaled(_, Signal::SIGXCPU, _) if cpu_limit.is_some() => {
                ForkError::CpuLimit(cpu_limit.unwrap_or_default())
            }
            // SIGKILL at the hard limit, for a job that outlived SIGXCPU.
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if cpu_limit.is_some_and(|limit| cost.cpu >= limit) => {
                ForkError::CpuLimit(cpu_limit.unwrap_or_default())
            }
            WaitStatus::Signaled(_, signal, core) => ForkError::Signaled { signal, core },
            WaitStatus::Exited(_, code) => ForkError::Exited(code),
            other => ForkError::Os(io::Error::other(format!("unexpected wait status {other:?}"))),
        })
    }

    /// Reads what the pipe has now; closes it at its end.
    fn drain(&mut self, frames: &mut Frames, events: &mut dyn JobEvents) -> Result<(), ForkError> {
        if let Some(pipe) = &mut self.pipe {
            if !drain(pipe, frames, events)? {
                self.pipe = None;
            }
        }
        Ok(())
    }
}

/// Set (to anything) in a worker's environment, the parent's `poll(2)` while a job child runs
/// fails: the error path the tests take to show that no job child outlives an error.
pub const JOB_POLL_FAILS_ENV: &str = "LI3G_TEST_JOB_POLL_FAILS";

fn poll_fails_for_tests() -> bool {
    static FAILS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAILS.get_or_init(|| std::env::var_os(JOB_POLL_FAILS_ENV).is_some())
}
