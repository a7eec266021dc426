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
/// allocated; `cpu` counts the child from the fork on (user and system time), with the
/// processes it started and waited for (a program the task ran).
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

    /// What this job child has cost so far: its own usage and that of the processes it started
    /// and waited for (`getrusage` of `RUSAGE_SELF` and `RUSAGE_CHILDREN`, as `wait4` adds them
    /// up), sent with its answer. A job that does its work in a program it runs (`convert`,
    /// `ffmpeg`) costs what that program used.
    pub(super) fn of_self() -> JobCost {
        let usage = |who| {
            // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage writes into the struct we own, which outlives the call.
            if unsafe { libc::getrusage(who, &mut usage) } == 0 {
                JobCost::from_rusage(&usage)
            } else {
                JobCost::default()
            }
        };
        let (own, children) = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
        JobCost { cpu: own.cpu + children.cpu, max_rss_bytes: own.max_rss_bytes.max(children.max_rss_bytes) }
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

#[cfg(test)]
mod tests {
    use super::JobCost;

    /// The CPU seconds a shell's `times` reports for itself (its first line: `0m0.31s 0m0.02s`).
    fn shell_cpu(times: &str) -> f64 {
        let line = times.lines().next().unwrap_or_default();
        line.split_whitespace()
            .map(|t| {
                let (m, s) = t.trim_end_matches('s').split_once('m').expect("NmS.SSs");
                m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
            })
            .sum()
    }

    #[test]
    fn a_jobs_cost_counts_the_programs_it_ran() {
        let before = JobCost::of_self();
        // A shell that burns CPU, then prints its own user and system time (`times`: its first
        // line is the shell's own).
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done; times >&2")
            .output()
            .unwrap();
        let used = shell_cpu(&String::from_utf8_lossy(&out.stderr));
        assert!(used > 0.05, "the shell burned CPU: {:?}", String::from_utf8_lossy(&out.stderr));
        let after = JobCost::of_self();
        let counted = (after.cpu - before.cpu).as_secs_f64();
        assert!(counted >= used * 0.9, "the job's cost counts its program's {used} s: {counted} s");
    }
}
