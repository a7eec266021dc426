//! Running one job in a freshly forked child: the isolation behind `--atomic`.
//!
//! The worker that calls [`run_in_child`] has the plugins loaded and holds the job server
//! connections; the child is a copy of it that runs the job and exits with `_exit`. Nothing the
//! job does (a leak, a global, a panic, `abort()`, a segfault, `exit()`) outlives the child.
//!
//! Protocol between them: one pipe, child to parent, of length-prefixed frames (progress,
//! data, warning, then the result or the error). The parent reads it *while* it waits, so a
//! result of any size never blocks the child, forwards progress and data to the job server as
//! they come, and waits on a pidfd for the child's exit, all in one `poll(2)`. A child that
//! ends without a result frame failed: the wait status says how (a signal, an exit code).
//!
//! Forking is only sound from a single-threaded process (another thread may hold the
//! allocator's or a logger's lock, which the child then never gets): [`ensure_single_threaded`]
//! checks `/proc/self/task` before every fork and refuses otherwise.

use crate::plugins::JobEvents;
use nix::fcntl::OFlag;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Why a job could not be run in a child, or how the child failed.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// The process has other threads: forking now could deadlock the child.
    #[error("refusing to fork: this process has {0} threads (a plugin started one?); a forking process must be single-threaded")]
    MultiThreaded(usize),
    /// fork, pipe or pidfd failed.
    #[error("cannot run the job in a child process: {0}")]
    Os(#[from] io::Error),
    /// The child was killed by a signal before it answered.
    #[error("was killed by signal {signal}{}", if *.core { " (core dumped)" } else { "" })]
    Signaled {
        /// The signal's name (`SIGSEGV`).
        signal: String,
        /// Whether it dumped core.
        core: bool,
    },
    /// The child exited before it answered (`exit()` inside the task).
    #[error("exited with code {0} before returning a result")]
    Exited(i32),
    /// The child ran past its timeout and was killed.
    #[error("ran past its timeout of {0:?} and was killed")]
    TimedOut(Duration),
}

impl From<nix::Error> for ForkError {
    fn from(err: nix::Error) -> Self {
        ForkError::Os(io::Error::from(err))
    }
}

/// How many threads this process has (field 20 of `/proc/self/stat`: one read, no listing).
///
/// # Errors
/// When `/proc/self/stat` cannot be read or parsed.
pub fn thread_count() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_name
        .split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read the thread count from /proc/self/stat"))
}

thread_local! {
    /// Children that answered and are exiting: reaped later, off the job's critical path.
    static EXITING: std::cell::RefCell<Vec<Pid>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reaps the job children that have exited since; with `block`, waits for all of them.
pub fn reap_children(block: bool) {
    let flag = if block { None } else { Some(nix::sys::wait::WaitPidFlag::WNOHANG) };
    EXITING.with(|pids| {
        pids.borrow_mut().retain(|pid| matches!(waitpid(*pid, flag), Ok(WaitStatus::StillAlive)));
    });
}

/// Checks that this process has one thread, so that it may fork.
///
/// # Errors
/// [`ForkError::MultiThreaded`] with the count, or the error reading it.
pub fn ensure_single_threaded() -> Result<(), ForkError> {
    match thread_count()? {
        1 => Ok(()),
        n => Err(ForkError::MultiThreaded(n)),
    }
}

const STATUS: u8 = 1;
const DATA: u8 = 2;
const WARNING: u8 = 3;
const RESULT_OK: u8 = 4;
const RESULT_ERR: u8 = 5;

/// The child's side of the pipe: every event becomes a frame.
struct PipeEvents {
    pipe: std::fs::File,
    broken: bool,
}

impl PipeEvents {
    fn frame(&mut self, tag: u8, payload: &[u8]) {
        if self.broken {
            return;
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut header = [0u8; 5];
        header[0] = tag;
        header[1..].copy_from_slice(&len.to_be_bytes());
        let sent = self.pipe.write_all(&header).and_then(|()| self.pipe.write_all(&payload[..len as usize]));
        self.broken = sent.is_err();
    }
}

impl JobEvents for PipeEvents {
    fn status(&mut self, numerator: u64, denominator: u64) {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&numerator.to_be_bytes());
        payload[8..].copy_from_slice(&denominator.to_be_bytes());
        self.frame(STATUS, &payload);
    }
    fn data(&mut self, data: &[u8]) {
        self.frame(DATA, data);
    }
    fn warning(&mut self, data: &[u8]) {
        self.frame(WARNING, data);
    }
}

/// Limits for the child.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildLimits {
    /// Kill the child after this long.
    pub timeout: Option<Duration>,
    /// `RLIMIT_DATA` for the child, in bytes: an allocation past it fails (and Rust aborts).
    pub memory: Option<u64>,
}

/// Runs `job` in a forked child and returns what it returned; the child's progress and data
/// reach `events` while it runs.
///
/// # Errors
/// [`ForkError`] when the process may not fork, or when the child died, exited or timed out
/// before returning.
pub fn run_in_child(
    job: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>,
    limits: ChildLimits,
    events: &mut dyn JobEvents,
) -> Result<Result<Vec<u8>, String>, ForkError> {
    reap_children(false);
    ensure_single_threaded()?;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: this process is single-threaded (checked above); the child only runs the job and
    // leaves with `_exit`, never returning into the caller's frames.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read);
            child(job, write, limits)
        }
        ForkResult::Parent { child } => {
            drop(write);
            parent(child, read, limits.timeout, events)
        }
    }
}

fn child(job: impl FnOnce(&mut dyn JobEvents) -> Result<Vec<u8>, String>, write: OwnedFd, limits: ChildLimits) -> ! {
    // The job finishes even when a Ctrl-C or a graceful stop reaches its process group; the
    // worker decides its fate (it kills it on timeout).
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        let _ = unsafe { signal::signal(sig, SigHandler::SigIgn) };
    }
    if let Some(bytes) = limits.memory {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, bytes, bytes);
    }
    let mut events = PipeEvents { pipe: std::fs::File::from(write), broken: false };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut events)))
        .unwrap_or_else(|_| Err("the job panicked in the host".to_string()));
    match &outcome {
        Ok(result) => events.frame(RESULT_OK, result),
        Err(message) => events.frame(RESULT_ERR, message.as_bytes()),
    }
    let _ = events.pipe.flush();
    // SAFETY: _exit ends the process without running the parent's atexit handlers or
    // destructors, which belong to the worker, not to this copy of it.
    unsafe { libc::_exit(if events.broken { 1 } else { 0 }) }
}

fn parent(
    child: Pid,
    read: OwnedFd,
    timeout: Option<Duration>,
    events: &mut dyn JobEvents,
) -> Result<Result<Vec<u8>, String>, ForkError> {
    // A pidfd becomes readable when the child exits: one poll waits for data and exit alike.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if raw < 0 {
        let err = io::Error::last_os_error();
        let _ = signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(ForkError::Os(err));
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let mut pipe = std::fs::File::from(read);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut frames = Frames::default();
    let mut pipe_open = true;
    loop {
        let millis = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = signal::kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Err(ForkError::TimedOut(timeout.unwrap_or_default()));
                }
                i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
            }
            None => -1,
        };
        let mut fds = [
            libc::pollfd { fd: pipe.as_raw_fd(), events: if pipe_open { libc::POLLIN } else { 0 }, revents: 0 },
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ForkError::Os(err));
        }
        if fds[0].revents != 0 {
            pipe_open = drain(&mut pipe, &mut frames, events)?;
            if let Some(outcome) = frames.outcome.take() {
                // The child answered and only `_exit`s now: answer the job at once and reap
                // the child later, so its teardown is not on the job's critical path.
                EXITING.with(|pids| pids.borrow_mut().push(child));
                return Ok(outcome);
            }
        }
        if fds[1].revents != 0 {
            // The child is gone: take what is left in the pipe, without waiting for an end of
            // file that a grandchild holding the write end could withhold.
            if pipe_open {
                drain(&mut pipe, &mut frames, events)?;
            }
            break;
        }
    }
    let status = waitpid(child, None)?;
    if let Some(outcome) = frames.outcome.take() {
        return Ok(outcome);
    }
    Err(match status {
        WaitStatus::Signaled(_, sig, core) => ForkError::Signaled { signal: sig.as_str().to_string(), core },
        WaitStatus::Exited(_, code) => ForkError::Exited(code),
        other => ForkError::Os(io::Error::other(format!("unexpected wait status {other:?}"))),
    })
}

/// Reads what the pipe has now; returns whether it is still open.
fn drain(pipe: &mut std::fs::File, frames: &mut Frames, events: &mut dyn JobEvents) -> Result<bool, ForkError> {
    // One page: after a fork every page the parent writes is copied (copy-on-write), so a
    // bigger buffer costs a page fault per page per job.
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => frames.feed(&chunk[..n], events),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ForkError::Os(e)),
        }
    }
}

/// Reassembles frames from pipe reads, forwarding events and keeping the outcome.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
    outcome: Option<Result<Vec<u8>, String>>,
}

impl Frames {
    fn feed(&mut self, bytes: &[u8], events: &mut dyn JobEvents) {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.buf.len() < 5 {
                return;
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                return;
            }
            let tag = self.buf[0];
            let payload: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
            match tag {
                STATUS if payload.len() == 16 => {
                    let n = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let d = u64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
                    events.status(n, d);
                }
                DATA => events.data(&payload),
                WARNING => events.warning(&payload),
                RESULT_OK => self.outcome = Some(Ok(payload)),
                RESULT_ERR => self.outcome = Some(Err(String::from_utf8_lossy(&payload).into_owned())),
                _ => {} // the child's own code wrote this; it cannot be a frame we sent
            }
        }
    }
}
