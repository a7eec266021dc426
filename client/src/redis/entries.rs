//! The schedule's keys and what its operations take and answer (statuses, errors, listings),
//! with the checks and the reply parsing that need no connection. No I/O here; the
//! operations are [`super::schedule`].

use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Redis keys of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Prefix of every li3g key (and of status keys, as li3_gearman's `prefix`).
    pub prefix: String,
    /// li3_gearman's sorted set of scheduled members (its `schedulePrefix`).
    pub compat_set: String,
}

impl Keys {
    /// Sorted set: job id by due time (ms).
    pub fn scheduled(&self) -> String {
        format!("{}scheduled", self.prefix)
    }
    /// Sorted set: job id by lease expiry (ms), while a scheduler moves it.
    pub fn leased(&self) -> String {
        format!("{}leased", self.prefix)
    }
    /// Hash: leased job id to the token of the scheduler that holds the lease.
    pub fn owners(&self) -> String {
        format!("{}owners", self.prefix)
    }
    /// Hash: job id to its stored [`super::Record`] (or li3_gearman member).
    pub fn jobs(&self) -> String {
        format!("{}jobs", self.prefix)
    }
    /// Hash: job id to `{"job", "error", "at"}`.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }
    /// The pub/sub channel that wakes schedulers when an earlier job arrives.
    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
    /// A job's status key, where li3_gearman's `getStatus` reads it: `<prefix><id>.status`.
    pub fn status(&self, id: &str) -> String {
        format!("{}{id}.status", self.prefix)
    }
    /// Whether every key of this schedule hashes to one Redis Cluster slot: the prefix has a
    /// hash tag (`{li3g}:`), and with `compat` li3_gearman's set shares it.
    ///
    /// # Errors
    /// [`ScheduleError::CrossSlot`], saying what to change.
    pub fn check_one_slot(&self, compat: bool) -> Result<(), ScheduleError> {
        use crate::redis::target::slot;
        let tagged = self.prefix.find('{').is_some_and(|open| self.prefix[open + 1..].find('}').is_some_and(|n| n > 0));
        if !tagged {
            return Err(ScheduleError::CrossSlot(format!(
                "the key prefix {:?} needs a hash tag, such as \"{{li3g}}:\", so that every key of the schedule is in one slot",
                self.prefix
            )));
        }
        if compat && slot(&self.compat_set) != slot(&self.scheduled()) {
            return Err(ScheduleError::CrossSlot(format!(
                "li3_gearman's set {:?} is in slot {}, the schedule's keys ({:?}) in slot {}: set `schedule_set` to a key with the same hash tag (and li3_gearman's schedulePrefix to it), or `compat = false`",
                self.compat_set,
                slot(&self.compat_set),
                self.prefix,
                slot(&self.scheduled())
            )));
        }
        Ok(())
    }
    /// A failed job's message, beside its status (which keeps li3_gearman's values):
    /// `<prefix><id>.error`, expiring with it.
    pub fn error(&self, id: &str) -> String {
        format!("{}{id}.error", self.prefix)
    }
}

/// A job's status, as li3_gearman's `saveJobStatus` wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Scheduled or queued, not started.
    Pending,
    /// A worker runs it.
    Running,
    /// It completed.
    Finished,
    /// It failed.
    Error,
    /// It was cancelled before it ran.
    Cancelled,
    /// It is in the dead set.
    Dead,
}

impl Status {
    /// The value stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
            Status::Dead => "dead",
        }
    }
}

/// Redis failed, or the URL is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The configuration names no Redis.
    #[error("no redis URL is configured (set `redis = \"redis://host:port/db\"` in the configuration)")]
    NotConfigured,
    /// A Redis error (unreachable, refused, script error).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The URL or the TLS CA file is unusable.
    #[error(transparent)]
    Target(#[from] crate::redis::target::TargetError),
    /// On a Redis Cluster, the schedule's keys would not share one slot (every script touches
    /// several of them).
    #[error("on a Redis Cluster {0}")]
    CrossSlot(String),
    /// A job whose unique key (its id, `:N` added on retry N) is longer than Gearman's limit:
    /// it could never be submitted.
    #[error(
        "the job id {id:?} makes a unique key of {len} bytes{}, longer than the {} gearmand accepts; use a shorter --id",
        if *retry > 0 { format!(" on retry {retry}") } else { String::new() },
        crate::client::MAX_UNIQUE
    )]
    UniqueTooLong {
        /// The job id.
        id: String,
        /// The longest key's length.
        len: usize,
        /// The retry that makes it.
        retry: u32,
    },
    /// A key holds another type than li3g keeps there.
    #[error("key {key} is not {what}")]
    WrongType {
        /// The key.
        key: String,
        /// What li3g keeps there.
        what: &'static str,
    },
    /// A due time past [`LATEST`] (a typo, or a number of seconds read as milliseconds).
    #[error("the due time is more than 100 years away")]
    TooLate,
    /// Redis answered a script with a reply of another shape than the script returns (another
    /// script under the same name, or a proxy in between).
    #[error("redis answered {what} with an unexpected reply: {reply}")]
    Reply {
        /// The request.
        what: &'static str,
        /// The reply, abridged.
        reply: String,
    },
}

/// What [`super::Schedule::take`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Redis's clock, ms since the epoch.
    pub now_ms: i64,
    /// When nothing was due: the earliest due time or lease expiry, if any.
    pub next_ms: Option<i64>,
    /// The jobs taken, each with its stored JSON (`None`: gone meanwhile).
    pub jobs: Vec<(String, Option<String>)>,
}

/// Where a pending job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Waiting for its time in li3g's schedule.
    Scheduled,
    /// Taken by a scheduler that is submitting it (until the lease runs out).
    Leased,
    /// In li3_gearman's set, not yet taken.
    Compat,
}

/// A pending job, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Job id.
    pub id: String,
    /// Task, or why the stored job cannot be read.
    pub task: String,
    /// Due time (or lease expiry), ms since the epoch.
    pub at_ms: i64,
    /// Retries so far.
    pub retry: u32,
    /// Where it is.
    pub place: Place,
}

/// A dead job, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    /// Job id.
    pub id: String,
    /// Task, or why the stored job cannot be read.
    pub task: String,
    /// Retries so far.
    pub retry: u32,
    /// Why it died.
    pub error: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// How far ahead a job may be scheduled: 100 years (what is further is a mistake, and past
/// year 9999 no RFC 3339 time can show it).
pub const LATEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Whether `due` is within [`LATEST`] from `now`.
pub fn within_bound(due: SystemTime, now: SystemTime) -> bool {
    now.checked_add(LATEST).is_some_and(|latest| due <= latest)
}

/// Members of a sorted set with their scores.
pub(super) type Scored = Vec<(String, f64)>;

/// Refuses a job whose unique key would pass Gearman's limit of
/// [`MAX_UNIQUE`](crate::client::MAX_UNIQUE) bytes now (`unique`, at `retry`) or on any retry up
/// to `max_retries` (the id with `:N`), so it is refused when scheduled, not buried when due.
///
/// # Errors
/// [`ScheduleError::UniqueTooLong`].
pub fn check_unique(id: &str, unique: &str, retry: u32, max_retries: u32) -> Result<(), ScheduleError> {
    let limit = crate::client::MAX_UNIQUE;
    if unique.len() > limit {
        return Err(ScheduleError::UniqueTooLong { id: id.into(), len: unique.len(), retry });
    }
    let last = max_retries.max(retry);
    let len = super::record::unique_for(id, last).len();
    if last > retry && len > limit {
        return Err(ScheduleError::UniqueTooLong { id: id.into(), len, retry: last });
    }
    Ok(())
}

/// The `maximum` of an envelope's `retries`, 0 when it has none or cannot be read.
pub fn max_retries(workload: &str) -> u32 {
    serde_json::from_str::<Value>(workload)
        .ok()
        .and_then(|v| v.get("retries").map(|r| crate::retry_policy::Retries::from_json(r).map(|r| r.maximum)))
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// A `ZSCAN MATCH` pattern for members whose text contains `id` (glob characters escaped).
pub(super) fn contains_pattern(id: &str) -> String {
    let mut pattern = String::from("*");
    for c in id.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// Reads the take script's reply, `{now, next, id1, job1, ...}`, checking its shape.
pub(super) fn parse_taken(reply: Vec<Option<String>>) -> Result<Taken, ScheduleError> {
    let bad = |reply: &[Option<String>]| ScheduleError::Reply {
        what: "the take script",
        reply: format!("{:.200}", format!("{reply:?}")),
    };
    let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<f64>().ok()).map(|n| n as i64);
    let (Some(now), Some(next), jobs) = (reply.first(), reply.get(1), reply.get(2..).unwrap_or_default()) else {
        return Err(bad(&reply));
    };
    let (Some(now_ms), Some(next)) = (number(now), number(next)) else { return Err(bad(&reply)) };
    if jobs.len() % 2 != 0 || jobs.chunks(2).any(|pair| pair[0].is_none()) {
        return Err(bad(&reply));
    }
    let jobs = jobs.chunks(2).map(|pair| (pair[0].clone().unwrap_or_default(), pair[1].clone())).collect();
    Ok(Taken { now_ms, next_ms: (next >= 0).then_some(next), jobs })
}

/// Milliseconds since the epoch (negative before it).
pub fn epoch_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn on_a_cluster_the_keys_must_share_one_slot() {
        let keys = |prefix: &str, set: &str| Keys { prefix: prefix.into(), compat_set: set.into() };
        assert!(keys("{li3g}:", "job_scheduled").check_one_slot(false).is_ok());
        assert!(keys("{li3g}:", "{li3g}job_scheduled").check_one_slot(true).is_ok());
        let untagged = keys("li3g:", "job_scheduled").check_one_slot(false).unwrap_err();
        assert!(matches!(&untagged, ScheduleError::CrossSlot(m) if m.contains("needs a hash tag")), "{untagged}");
        let empty_tag = keys("{}li3g:", "x").check_one_slot(false).unwrap_err();
        assert!(matches!(empty_tag, ScheduleError::CrossSlot(_)));
        let compat = keys("{li3g}:", "job_scheduled").check_one_slot(true).unwrap_err().to_string();
        assert!(compat.contains("schedule_set") && compat.contains("compat = false"), "{compat}");
    }

    use super::*;

    fn reply(items: &[Option<&str>]) -> Vec<Option<String>> {
        items.iter().map(|i| i.map(str::to_string)).collect()
    }

    #[test]
    fn a_take_reply_of_another_shape_is_an_error_not_a_panic() {
        let taken = parse_taken(reply(&[Some("1000"), Some("-1"), Some("a"), Some("{}"), Some("b"), None])).unwrap();
        assert_eq!(taken.now_ms, 1000);
        assert_eq!(taken.next_ms, None);
        assert_eq!(taken.jobs, vec![("a".into(), Some("{}".into())), ("b".into(), None)]);
        assert_eq!(parse_taken(reply(&[Some("5"), Some("7")])).unwrap().next_ms, Some(7));
        for bad in [
            reply(&[]),
            reply(&[Some("1000")]),
            reply(&[None, Some("-1")]),
            reply(&[Some("soon"), Some("-1")]),
            reply(&[Some("1000"), Some("-1"), Some("a")]),
            reply(&[Some("1000"), Some("-1"), None, Some("{}")]),
        ] {
            let err = parse_taken(bad.clone()).unwrap_err();
            assert!(err.to_string().contains("the take script"), "{bad:?}: {err}");
        }
    }
}
