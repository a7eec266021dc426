//! What a job child cost ([`JobCost`]: CPU time and peak memory), from the child's own
//! `getrusage` or from the `wait4(2)` that reaps it.

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::time::Duration;

/// What a job child cost: its CPU time and its peak resident memory.
///
/// `max_rss_bytes` is the kernel's high-water mark of the child's resident set
/// (`ru_maxrss`). A forked child starts with the worker's pages mapped, so the figure includes
/// what it inherited (the worker's own resident memory, a few MiB), not only what the job
/// allocated; `cpu` counts the child from the fork on (user and system time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobCost {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident memory, in bytes.
    pub max_rss_bytes: u64,
}

impl JobCost {
    pub(super) fn from_rusage(usage: &libc::rusage) -> JobCost {
        let micros =
            |t: libc::timeval| u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0);
        JobCost {
            cpu: Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime)),
            // Linux reports kilobytes.
            max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        }
    }

    /// What this process has cost so far (`getrusage(RUSAGE_SELF)`): the child's own figure,
    /// sent with its answer.
    pub(super) fn of_self() -> JobCost {
        // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct we own, which outlives the call.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return JobCost::default();
        }
        JobCost::from_rusage(&usage)
    }

    /// The (CPU seconds, peak RSS bytes) pair the scoreboard's `SlotWriter::done` takes.
    pub fn as_pair(&self) -> (f64, u64) {
        (self.cpu.as_secs_f64(), self.max_rss_bytes)
    }
}

impl std::fmt::Display for JobCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu {:.2} s, max rss {} MiB", self.cpu.as_secs_f64(), self.max_rss_bytes >> 20)
    }
}

/// `wait4(2)`: waits for `pid` (or, with `WNOHANG`, looks) and returns its status and what it
/// cost; `None` when it is still running.
pub(super) fn wait4(pid: Pid, flags: libc::c_int) -> nix::Result<Option<(WaitStatus, JobCost)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = loop {
        // SAFETY: wait4 writes the status and the usage into values we own, which outlive the
        // call; nix has no wrapper that returns the usage.
        let got = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut usage) };
        if got < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        break got;
    };
    match got {
        n if n < 0 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        _ => Ok(Some((WaitStatus::from_raw(pid, status)?, JobCost::from_rusage(&usage)))),
    }
}
