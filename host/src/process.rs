//! Process plumbing shared by the supervisor, its workers and `--atomic`'s job children: the one
//! place that forks, waits and backs off.
//!
//! - [`fork`]: refuses from a multi-threaded process ([`ensure_single_threaded`]), and blocks
//!   every signal across `fork(2)` until the child has run its setup (new handlers, its own wake
//!   pipe), so a signal sent to the new PID right away is held, not lost or handled by the
//!   parent's handlers in the child.
//! - [`fork_child`]: the one way to start a child: [`fork`], then [`parent_death_signal`],
//!   [`close_inherited`], the child's body under `catch_unwind`, and `_exit`.
//! - [`keep_from_children`] / [`close_inherited`]: descriptors a forked child must not hold
//!   (the PID file's lock, job server sockets): registered by whoever opens them, closed by the
//!   child after the fork. A `fork` without `exec` keeps every descriptor, `O_CLOEXEC` or not.
//! - [`parent_death_signal`]: `PR_SET_PDEATHSIG`, checked against the parent having died
//!   before it took effect.
//! - [`pidfd`]: a descriptor that becomes readable when a process exits, for any process.
//! - [`poll`]: `poll(2)` with a [`Duration`] timeout; `EINTR` is a wake-up, not an error.
//! - [`Backoff`]: the doubling delay used for respawns and reconnects.
//!
//! What it must not do: start threads, allocate in a child before its setup ran, or hold locks
//! across a fork. Written over `nix` where nix has a safe call; pidfd_open and the
//! `/proc/self/stat` thread count have none.

use nix::poll::{PollFd, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{ForkResult, Pid};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

/// The process has other threads: forking now could deadlock the child.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to fork: this process has {0} threads (a plugin started one?); a forking process must be single-threaded"
)]
pub struct MultiThreaded(pub usize);

/// Why this process could not fork.
#[derive(Debug, thiserror::Error)]
pub enum ForkFailed {
    /// The process has other threads.
    #[error(transparent)]
    MultiThreaded(#[from] MultiThreaded),
    /// fork(2) or reading the thread count failed.
    #[error("{0}")]
    Os(#[from] io::Error),
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

/// Checks that this process has one thread, so that it may fork.
///
/// # Errors
/// [`ForkFailed::MultiThreaded`] with the count, or the error reading it.
pub fn ensure_single_threaded() -> Result<(), ForkFailed> {
    match thread_count()? {
        1 => Ok(()),
        n => Err(MultiThreaded(n).into()),
    }
}

/// Forks this single-threaded process. Every signal is blocked across the fork: the child runs
/// `setup` (install its handlers, make its own wake pipe) before any signal reaches it, then
/// gets what arrived meanwhile; the parent's mask is restored at once.
///
/// The child must leave through `_exit` (or become a process that never returns into its
/// parent's callers, such as the daemon after [`crate::daemon::detach`]).
///
/// # Errors
/// [`ForkFailed`] when the process has other threads or fork fails.
pub fn fork(setup: impl FnOnce()) -> Result<ForkResult, ForkFailed> {
    ensure_single_threaded()?;
    fork_checked(setup)
}

/// [`fork`] once the caller has checked that the process is single-threaded.
fn fork_checked(setup: impl FnOnce()) -> Result<ForkResult, ForkFailed> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old))
        .map_err(io::Error::from)?;
    // SAFETY: the process is single-threaded (checked by the callers), so the child's copy holds no
    // lock another thread took; callers end the child with `_exit`.
    let forked = unsafe { nix::unistd::fork() };
    if let Ok(ForkResult::Child) = forked {
        setup();
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    Ok(forked.map_err(io::Error::from)?)
}

/// The exit code of a forked child whose `body` panicked.
pub const PANICKED: i32 = 101;

/// Forks a child that runs `body` and leaves with `_exit` and the code it returns: the one way
/// li3g starts a child process (a worker, the scheduler, the job server, a job child, a plugin's
/// state check). Returns the child's PID in the parent, where `body` is dropped unrun (with
/// whatever it owns: a pipe's write end the child keeps, for example).
///
/// The child runs `setup` with every signal blocked ([`fork`]), then gets SIGKILL when this
/// process dies, checked against it having died already ([`parent_death_signal`]; the child
/// leaves with 1 then), closes what it must not hold ([`close_inherited`]), and runs `body`; a
/// panic in it ends the child with [`PANICKED`], never unwinds into this process's callers.
///
/// # Errors
/// [`ForkFailed`] when this process is not single-threaded or fork fails.
pub fn fork_child(setup: impl FnOnce(), body: impl FnOnce() -> i32) -> Result<Pid, ForkFailed> {
    ensure_single_threaded()?;
    fork_child_checked(setup, body)
}

/// What a process that forks in a loop (`--atomic`'s worker, a child per job) knows about its
/// threads, so that it need not read `/proc` before every fork.
///
/// Why a check now and then is enough: only a running thread can start another. A worker that
/// forks job children runs no plugin code itself once it took its first job (tasks run in the
/// children; plugins were loaded and their states built before), and li3g's own code starts no
/// thread; so a process found single-threaded stays so, and any thread a plugin started while
/// it loaded or built its state is found by the first check, before the first fork. The check
/// is still made every [`ThreadWitness::RECHECK_EVERY`] forks, as a safety net.
#[derive(Debug)]
pub struct ThreadWitness {
    since_check: u32,
}

impl ThreadWitness {
    /// Forks between two reads of the thread count.
    pub const RECHECK_EVERY: u32 = 1024;

    /// A witness that has seen nothing yet: the first fork checks.
    pub const fn new() -> ThreadWitness {
        ThreadWitness { since_check: ThreadWitness::RECHECK_EVERY }
    }

    fn check(&mut self) -> Result<(), ForkFailed> {
        if self.since_check >= ThreadWitness::RECHECK_EVERY {
            ensure_single_threaded()?;
            self.since_check = 0;
        }
        self.since_check += 1;
        Ok(())
    }
}

impl Default for ThreadWitness {
    fn default() -> Self {
        ThreadWitness::new()
    }
}

/// [`fork_child`] for a caller that forks in a loop: the thread count is read as
/// [`ThreadWitness`] says, not before every fork.
///
/// # Errors
/// [`ForkFailed`] when a check finds other threads or fork fails.
pub fn fork_child_witnessed(
    witness: &mut ThreadWitness,
    setup: impl FnOnce(),
    body: impl FnOnce() -> i32,
) -> Result<Pid, ForkFailed> {
    witness.check()?;
    fork_child_checked(setup, body)
}

fn fork_child_checked(setup: impl FnOnce(), body: impl FnOnce() -> i32) -> Result<Pid, ForkFailed> {
    let parent = nix::unistd::getpid();
    match fork_checked(setup)? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = if parent_death_signal(Signal::SIGKILL, parent) {
                close_inherited();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(PANICKED)
            } else {
                1 // the parent died between fork and prctl
            };
            // SAFETY: _exit ends the process without running the parent's atexit handlers or
            // destructors, which belong to the parent, not to this copy of it.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Asks the kernel to send `signal` to this process when its parent dies, and checks that the
/// parent (`parent`, taken before the fork) has not died already, before the request took
/// effect. Returns `false` when it has: the caller should leave.
pub fn parent_death_signal(signal: Signal, parent: Pid) -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(signal);
    nix::unistd::getppid() == parent
}

/// A descriptor registered by [`keep_from_children`]: its number and the file it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Private {
    fd: RawFd,
    dev: u64,
    ino: u64,
}

static PRIVATE: Mutex<Vec<Private>> = Mutex::new(Vec::new());

fn identify(fd: RawFd) -> Option<Private> {
    // SAFETY: `libc::stat` is plain data (integers), for which all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes into `stat`, which we own and which lives across the call; a
    // descriptor that is not open just fails (EBADF).
    (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some(Private { fd, dev: stat.st_dev, ino: stat.st_ino })
}

/// Marks `fd` as this process's own: children forked later close it ([`close_inherited`]).
///
/// The file's identity (device, inode) is kept with the number, so a number that was closed
/// and reused for another file is left alone; such stale entries are dropped here.
pub fn keep_from_children(fd: &impl AsRawFd) {
    let Some(entry) = identify(fd.as_raw_fd()) else { return };
    let mut list = PRIVATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    list.retain(|old| old.fd != entry.fd && identify(old.fd) == Some(*old));
    list.push(entry);
}

/// In a freshly forked child: closes every descriptor its parent marked with
/// [`keep_from_children`] that is still the file it was.
pub fn close_inherited() {
    // try_lock: a single-threaded parent never forks while holding the lock.
    let Ok(mut list) = PRIVATE.try_lock() else { return };
    for entry in list.drain(..) {
        if identify(entry.fd) == Some(entry) {
            // SAFETY: closing the child's copy of a descriptor its parent owns; nothing in the
            // child uses it (the parent said so by registering it).
            unsafe { libc::close(entry.fd) };
        }
    }
}

/// A descriptor that becomes readable when process `pid` exits (pidfd_open(2)); it works for
/// processes that are not our children too.
///
/// # Errors
/// When the process does not exist or the kernel has no pidfds.
pub fn pidfd(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; nix has no
    // wrapper for it.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout). Returns whether
/// any is ready; a signal (`EINTR`) returns `false` too, so the caller looks at its flags.
///
/// # Errors
/// What poll(2) reports other than `EINTR`.
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<bool> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up, so a wait for 0.4 ms does not become a busy loop of zero-length polls.
        Some(t) => PollTimeout::try_from(t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0))
            .unwrap_or(PollTimeout::MAX),
    };
    match nix::poll::poll(fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it is readable.
///
/// # Errors
/// As [`poll`].
pub fn wait_readable(fd: impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let mut fds = [PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        if poll(&mut fds, left)? {
            return Ok(true);
        }
        if left.is_some_and(|left| left.is_zero()) {
            return Ok(false);
        }
    }
}

/// This host's name (`localhost` when it cannot be read): the `host` of `host:pid` client ids.
pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// A delay that doubles with every failure, between a minimum and a maximum, and falls back to
/// the minimum after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The policy for respawns and reconnects: 100 ms, doubling, at most 30 s.
    pub const DEFAULT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

    /// A backoff from `min` to `max`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// A failure: returns the delay to wait now, and doubles the next one.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay the next failure will return.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// A success: the next failure waits the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }

    #[test]
    fn poll_times_out_and_sees_a_readable_pipe() {
        let (read, write) = nix::unistd::pipe().unwrap();
        assert!(!wait_readable(&read, Some(Duration::from_millis(10))).unwrap());
        nix::unistd::write(&write, b"x").unwrap();
        assert!(wait_readable(&read, Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn a_registered_descriptor_is_recognised_only_while_it_is_the_same_file() {
        let file = tempfile::tempfile().unwrap();
        let entry = identify(file.as_raw_fd()).unwrap();
        let other = tempfile::tempfile().unwrap();
        assert_ne!(identify(other.as_raw_fd()).map(|p| p.ino), Some(entry.ino));
    }

    #[test]
    fn a_thread_witness_reads_the_count_at_once_after_a_failure_and_every_so_many_forks() {
        // A second thread for as long as the test runs, whatever the test harness does.
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || wait.recv());
        let mut witness = ThreadWitness::new();
        assert!(matches!(witness.check(), Err(ForkFailed::MultiThreaded(_))), "the first fork checks");
        assert!(matches!(witness.check(), Err(ForkFailed::MultiThreaded(_))), "a failed check is made again");
        let mut checked = ThreadWitness { since_check: 0 };
        for _ in 0..ThreadWitness::RECHECK_EVERY {
            assert!(checked.check().is_ok(), "between checks the count is not read");
        }
        assert!(checked.check().is_err(), "the count is read again after RECHECK_EVERY forks");
        stop.send(()).unwrap();
        other.join().unwrap().unwrap();
    }

    #[test]
    fn a_pidfd_for_ourselves_is_not_readable() {
        let fd = pidfd(nix::unistd::getpid()).unwrap();
        assert!(!wait_readable(&fd, Some(Duration::ZERO)).unwrap());
    }
}
