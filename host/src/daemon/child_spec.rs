//! What a supervised child is: [`ChildSpec`] (after Erlang/OTP's child spec and supervisord's
//! `[program:x]`), its [`Restart`] policy, and the decision of whether and when one that ended is
//! replaced. The loop that applies the specs is [`super::pool`].

use super::recycle::MaxAge;
use crate::scoreboard::Kind;
use nix::sys::wait::WaitStatus;
use std::time::Duration;

/// The exit code of a child that ends to be replaced (a worker after `--max-jobs`, or over
/// `--memlimit`): an expected exit, respawned without backoff (`EX_TEMPFAIL`).
pub const EXIT_RECYCLE: i32 = 75;

/// A child that lived less than this and exited unexpectedly failed fast: its replacement
/// waits (backoff).
pub const FAST_FAILURE: Duration = Duration::from_secs(1);

/// When a child that ended is replaced (Erlang/OTP's restart values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always (`--resuscitate`).
    Permanent,
    /// Only when it ended unexpectedly: killed by a signal, or an exit code not in
    /// [`ChildSpec::expected_exits`] (supervisord's `autorestart=unexpected`).
    Transient,
    /// Never (workers without `--resuscitate`).
    Temporary,
}

/// One kind of child: what it runs and how it is kept.
pub struct ChildSpec<'a> {
    /// Its name in log lines and a worker's process title (`worker`, `reports worker`).
    pub name: String,
    /// What it is on the scoreboard (and in its restart counts).
    pub kind: Kind,
    /// A worker pool's name (`[NAME.pools.POOL]`): its workers' slots say it, and `status` and
    /// the metrics group by it. `None` for the default pool's workers and other kinds. Kept
    /// here, not read back out of [`ChildSpec::name`].
    pub pool: Option<String>,
    /// How many to run.
    pub count: u32,
    /// When one that ended is replaced.
    pub restart: Restart,
    /// Exit codes that are not failures: no backoff, and no restart under
    /// [`Restart::Transient`].
    pub expected_exits: Vec<i32>,
    /// Exit codes that mean "cannot start now" (a worker whose plugin was refused): replaced
    /// after the kind's backoff whatever the restart policy, so the pool neither spins nor
    /// dies of a transient outage.
    pub retry_exits: Vec<i32>,
    /// How many may be spawned in total; 0 for no limit (`--limit`).
    pub limit: u64,
    /// Whether `restart` (SIGHUP) replaces these children with fresh ones.
    pub reload: bool,
    /// Recycle each child past this age (`--max-age`): SIGUSR2, then a replacement once it
    /// exits with [`EXIT_RECYCLE`]. Only for kinds that end so on SIGUSR2 (workers).
    pub max_age: Option<MaxAge>,
    /// What the forked child runs, given its number (1, 2, ...); returns its exit code.
    pub run: Box<dyn Fn(u32) -> i32 + 'a>,
}

impl<'a> ChildSpec<'a> {
    /// `count` children named `name` running `run`: permanent, exits 0 and [`EXIT_RECYCLE`]
    /// expected, no limit, replaced on restart. Their [`Kind`] is the one of that name
    /// (`scheduler`, `job server`, `monitor`, `worker`; another name is [`Kind::Free`], a child
    /// the scoreboard does not show), in no pool.
    pub fn new(name: impl Into<String>, count: u32, run: impl Fn(u32) -> i32 + 'a) -> ChildSpec<'a> {
        let name = name.into();
        ChildSpec {
            kind: Kind::for_name(&name),
            pool: None,
            name,
            count,
            restart: Restart::Permanent,
            expected_exits: vec![0, EXIT_RECYCLE],
            retry_exits: Vec::new(),
            limit: 0,
            reload: true,
            max_age: None,
            run: Box::new(run),
        }
    }

    /// `count` workers of the default pool (`pool` `None`, named `worker`) or of worker pool
    /// `pool` (named `POOL worker`), running `run`; otherwise as [`ChildSpec::new`].
    pub fn worker(pool: Option<&str>, count: u32, run: impl Fn(u32) -> i32 + 'a) -> ChildSpec<'a> {
        let name = pool.map_or_else(|| "worker".to_string(), |pool| format!("{pool} worker"));
        let mut spec = ChildSpec::new(name, count, run);
        spec.kind = Kind::Worker;
        spec.pool = pool.map(str::to_string);
        spec
    }

    pub(super) fn expected(&self, status: &WaitStatus) -> bool {
        matches!(status, WaitStatus::Exited(_, code) if self.expected_exits.contains(code))
    }

    /// What to do about one of these that ended with `status` after living `lived`.
    pub(super) fn replacement(&self, status: &WaitStatus, lived: Duration) -> Replacement {
        if matches!(status, WaitStatus::Exited(_, code) if self.retry_exits.contains(code)) {
            return Replacement::AfterBackoff;
        }
        let expected = self.expected(status);
        let replace = match self.restart {
            Restart::Permanent => true,
            Restart::Transient => !expected,
            Restart::Temporary => false,
        };
        match replace {
            false => Replacement::None,
            true if !expected && lived < FAST_FAILURE => Replacement::AfterBackoff,
            true => Replacement::Now,
        }
    }

    pub(super) fn capitalised(&self) -> String {
        let mut chars = self.name.chars();
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }
}

impl std::fmt::Debug for ChildSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("pool", &self.pool)
            .field("count", &self.count)
            .field("restart", &self.restart)
            .field("expected_exits", &self.expected_exits)
            .field("retry_exits", &self.retry_exits)
            .field("limit", &self.limit)
            .field("reload", &self.reload)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// Whether and when a child that ended is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replacement {
    /// Not at all.
    None,
    /// At once (and the kind's backoff starts over).
    Now,
    /// After the kind's backoff: it failed fast.
    AfterBackoff,
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn restart_policies_and_expected_exits() {
        let pid = Pid::from_raw(1);
        let (quick, long) = (Duration::from_millis(10), Duration::from_secs(60));
        let recycled = WaitStatus::Exited(pid, EXIT_RECYCLE);
        let crashed = WaitStatus::Exited(pid, 2);
        let killed = WaitStatus::Signaled(pid, Signal::SIGKILL, false);
        let mut spec = ChildSpec::new("worker", 1, |_| 0);

        assert_eq!(spec.replacement(&recycled, quick), Replacement::Now, "a recycle is no crash");
        assert_eq!(spec.replacement(&crashed, quick), Replacement::AfterBackoff);
        assert_eq!(spec.replacement(&killed, quick), Replacement::AfterBackoff);
        assert_eq!(spec.replacement(&crashed, long), Replacement::Now, "it ran a while first");

        spec.restart = Restart::Transient;
        assert_eq!(spec.replacement(&recycled, quick), Replacement::None);
        assert_eq!(spec.replacement(&WaitStatus::Exited(pid, 0), long), Replacement::None);
        assert_eq!(spec.replacement(&killed, long), Replacement::Now);

        spec.restart = Restart::Temporary;
        assert_eq!(spec.replacement(&killed, quick), Replacement::None);
    }

    #[test]
    fn a_pool_is_a_field_not_a_name_to_parse() {
        let default = ChildSpec::worker(None, 2, |_| 0);
        assert_eq!((default.name.as_str(), default.kind, default.pool.as_deref()), ("worker", Kind::Worker, None));
        // A pool whose name ends like a kind's, or holds a space: still that pool's workers.
        for pool in ["reports", "night worker", "job server", "a b"] {
            let spec = ChildSpec::worker(Some(pool), 1, |_| 0);
            assert_eq!((spec.kind, spec.pool.as_deref()), (Kind::Worker, Some(pool)));
            assert_eq!(spec.name, format!("{pool} worker"));
        }
        for (name, kind) in
            [("scheduler", Kind::Scheduler), ("job server", Kind::JobServer), ("monitor", Kind::Monitor)]
        {
            let spec = ChildSpec::new(name, 1, |_| 0);
            assert_eq!((spec.kind, spec.pool.as_deref()), (kind, None));
        }
        // A name is no longer read as a pool: an unknown child is no worker of pool "x".
        let other = ChildSpec::new("x worker", 1, |_| 0);
        assert_eq!((other.kind, other.pool.as_deref()), (Kind::Free, None));
    }
}
