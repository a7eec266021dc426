//! The schedule in Redis: scheduling, taking due jobs under a lease, acknowledging, the dead
//! set, listings and job status. One [`Schedule`] is one synchronous Redis connection (the
//! `redis` crate's blocking API: no runtime, no threads, safe in processes that fork).
//!
//! Every multi-key change is one of [`super::lua`]'s scripts. A connection that fails is
//! dropped and made again on the next call; retrying with backoff is the caller's choice.

use super::lua;
use super::record::Record;
use crate::config::SchedulerSettings as Settings;
use redis::{Connection, Script};
use serde_json::{json, Value};
use std::sync::LazyLock;
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
    /// Hash: job id to its stored [`Record`] (or li3_gearman member).
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
}

impl Status {
    /// The value stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Error => "error",
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

/// What [`Schedule::take`] took.
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

static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::take()));
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(lua::SCHEDULE));
static ACK: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::ack()));

/// Members of a sorted set with their scores.
type Scored = Vec<(String, f64)>;

/// Reads the take script's reply, `{now, next, id1, job1, ...}`, checking its shape.
fn parse_taken(reply: Vec<Option<String>>) -> Result<Taken, ScheduleError> {
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

/// A connection to one schedule in Redis.
pub struct Schedule {
    client: redis::Client,
    conn: Option<Connection>,
    keys: Keys,
    settings: Settings,
}

impl Schedule {
    /// A store at `url` (nothing connects until the first call).
    ///
    /// # Errors
    /// [`ScheduleError::Redis`] for a URL that does not parse.
    pub fn open(url: &str, settings: &Settings) -> Result<Schedule, ScheduleError> {
        use redis::IntoConnectionInfo;
        // No Nagle delay: requests are small and answers awaited one at a time.
        let info =
            url.into_connection_info()?.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let keys = Keys { prefix: settings.prefix.clone(), compat_set: settings.compat_set.clone() };
        Ok(Schedule { client, conn: None, keys, settings: settings.clone() })
    }

    /// Its keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The client, for a second connection (the scheduler's wake-up subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs `f` on the connection, connecting first when there is none; a failed connection
    /// is dropped so that the next call makes a fresh one.
    fn with<T>(&mut self, f: impl FnOnce(&mut Connection, &Keys) -> redis::RedisResult<T>) -> Result<T, ScheduleError> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            conn.set_write_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let result = f(conn, &self.keys);
        if let Err(err) = &result {
            if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() || err.is_unrecoverable_error() {
                self.conn = None;
            }
        }
        Ok(result?)
    }

    fn status_ttl(&self) -> u64 {
        if self.settings.job_status {
            self.settings.expires.as_secs().max(1)
        } else {
            0
        }
    }

    /// Schedules `record` for `due` (a time in the past: as soon as a scheduler sees it).
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails; then nothing was scheduled.
    pub fn schedule(&mut self, record: &Record, due: SystemTime) -> Result<(), ScheduleError> {
        self.schedule_many(std::slice::from_ref(record), &[due])
    }

    /// Schedules many jobs in one round trip (pipelined; each atomic on its own).
    ///
    /// # Errors
    /// As [`Schedule::schedule`]; jobs before a failure may be scheduled.
    pub fn schedule_many(&mut self, records: &[Record], due: &[SystemTime]) -> Result<(), ScheduleError> {
        let ttl = self.status_ttl();
        self.with(|conn, keys| {
            // Load (a no-op when loaded: Redis may have restarted), then EVALSHA, all in one
            // round trip.
            let mut pipe = redis::pipe();
            pipe.cmd("SCRIPT").arg("LOAD").arg(lua::SCHEDULE).ignore();
            for (record, due) in records.iter().zip(due) {
                pipe.cmd("EVALSHA")
                    .arg(SCHEDULE.get_hash())
                    .arg(3)
                    .arg(keys.scheduled())
                    .arg(keys.jobs())
                    .arg(keys.status(&record.id))
                    .arg(&record.id)
                    .arg(epoch_ms(*due))
                    .arg(record.encode())
                    .arg(keys.wake_channel())
                    .arg(ttl)
                    .ignore();
            }
            pipe.exec(conn)
        })
    }

    /// Removes a pending job (li3g's or li3_gearman's); `false` when no such job is pending.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn cancel(&mut self, id: &str) -> Result<bool, ScheduleError> {
        let n: i64 = self.with(|conn, keys| {
            Script::new(lua::CANCEL).key(keys.scheduled()).key(keys.jobs()).key(&keys.compat_set).arg(id).invoke(conn)
        })?;
        Ok(n == 1)
    }

    /// Brings a dead job back, due now; `false` when no such job is dead.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn requeue(&mut self, id: &str) -> Result<bool, ScheduleError> {
        let n: i64 = self.with(|conn, keys| {
            Script::new(&lua::requeue())
                .key(keys.dead())
                .key(keys.jobs())
                .key(keys.scheduled())
                .arg(id)
                .arg(keys.wake_channel())
                .invoke(conn)
        })?;
        Ok(n == 1)
    }

    /// Puts job `id` (stored as `job`) in the dead set with `error`.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn bury(&mut self, id: &str, job: &str, error: &str) -> Result<(), ScheduleError> {
        let entry = json!({"job": job, "error": error, "at": epoch_ms(SystemTime::now())}).to_string();
        self.with(|conn, keys| {
            Script::new(lua::BURY)
                .key(keys.dead())
                .key(keys.leased())
                .key(keys.jobs())
                .key(keys.scheduled())
                .arg(id)
                .arg(entry)
                .invoke::<i64>(conn)
        })?;
        Ok(())
    }

    /// Acknowledges `accepted` (as [`Schedule::ack`]) and takes up to `batch` due (or abandoned)
    /// jobs under a lease of `lease`, in one script.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails; then nothing was acknowledged nor taken.
    pub fn take(&mut self, lease: Duration, batch: usize, accepted: &[String]) -> Result<Taken, ScheduleError> {
        let compat = if self.settings.compat { "1" } else { "0" };
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let reply: Vec<Option<String>> = self.with(|conn, keys| {
            let mut invocation = TAKE.prepare_invoke();
            invocation.key(keys.scheduled()).key(keys.leased()).key(keys.jobs()).key(&keys.compat_set);
            invocation.arg(lease_ms).arg(batch).arg(compat);
            for id in accepted {
                invocation.arg(id);
            }
            invocation.invoke(conn)
        })?;
        parse_taken(reply)
    }

    /// Acknowledges jobs a job server accepted.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails (the jobs stay leased and will be submitted again
    /// after the lease: they coalesce on their unique key while queued).
    pub fn ack(&mut self, ids: &[String]) -> Result<(), ScheduleError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with(|conn, keys| {
            let mut invocation = ACK.prepare_invoke();
            invocation.key(keys.leased()).key(keys.jobs()).key(keys.scheduled());
            for id in ids {
                invocation.arg(id);
            }
            invocation.invoke::<i64>(conn)
        })?;
        Ok(())
    }

    /// Every pending job: scheduled, being moved, and li3_gearman's, by due time.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn pending(&mut self) -> Result<Vec<Pending>, ScheduleError> {
        let compat = self.settings.compat;
        let (scheduled, leased, jobs, php): (Scored, Scored, Vec<(String, String)>, Scored) =
            self.with(|conn, keys| {
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGE").arg(keys.scheduled()).arg(0).arg(-1).arg("WITHSCORES");
                pipe.cmd("ZRANGE").arg(keys.leased()).arg(0).arg(-1).arg("WITHSCORES");
                pipe.cmd("HGETALL").arg(keys.jobs());
                if compat {
                    pipe.cmd("ZRANGE").arg(&keys.compat_set).arg(0).arg(-1).arg("WITHSCORES");
                } else {
                    pipe.cmd("ZRANGE").arg(&keys.compat_set).arg(1).arg(0).arg("WITHSCORES");
                }
                pipe.query(conn)
            })?;
        let jobs: std::collections::HashMap<String, String> = jobs.into_iter().collect();
        let describe = |text: Option<&String>| match text.map(|t| Record::decode(t)) {
            Some(Ok(record)) => (record.task(), record.retry),
            Some(Err(err)) => (format!("(unreadable: {err})"), 0),
            None => ("(gone)".to_string(), 0),
        };
        let mut out = Vec::new();
        for (list, place) in [(scheduled, Place::Scheduled), (leased, Place::Leased)] {
            for (id, score) in list {
                let (task, retry) = describe(jobs.get(&id));
                out.push(Pending { id, task, at_ms: score as i64, retry, place });
            }
        }
        for (member, score) in php {
            let (task, retry) = describe(Some(&member));
            let id = serde_json::from_str::<Value>(&member)
                .ok()
                .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            out.push(Pending { id, task, at_ms: (score * 1000.0) as i64, retry, place: Place::Compat });
        }
        out.sort_by_key(|p| p.at_ms);
        Ok(out)
    }

    /// The dead set.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn dead(&mut self) -> Result<Vec<Dead>, ScheduleError> {
        let entries: Vec<(String, String)> =
            self.with(|conn, keys| redis::cmd("HGETALL").arg(keys.dead()).query(conn))?;
        let mut out: Vec<Dead> = entries
            .into_iter()
            .map(|(id, entry)| {
                let entry: Value = serde_json::from_str(&entry).unwrap_or(Value::Null);
                let job = entry["job"].as_str().unwrap_or_default();
                let (task, retry) = match Record::decode(job) {
                    Ok(record) => (record.task(), record.retry),
                    Err(err) => (format!("(unreadable: {err})"), 0),
                };
                let error = entry["error"].as_str().unwrap_or_default().to_string();
                Dead { id, task, retry, error, at_ms: entry["at"].as_i64().unwrap_or(0) }
            })
            .collect();
        out.sort_by_key(|d| d.at_ms);
        Ok(out)
    }

    /// Records a job's status (when job status is on), with the configured expiry.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn set_status(&mut self, id: &str, status: Status) -> Result<(), ScheduleError> {
        let ttl = self.status_ttl();
        if ttl == 0 {
            return Ok(());
        }
        self.with(|conn, keys| {
            redis::cmd("SET").arg(keys.status(id)).arg(status.as_str()).arg("EX").arg(ttl).exec(conn)
        })
    }

    /// A job's status and the seconds it has left, if any is recorded.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn status(&mut self, id: &str) -> Result<Option<(String, i64)>, ScheduleError> {
        let (value, ttl): (Option<String>, i64) = self.with(|conn, keys| {
            redis::pipe().cmd("GET").arg(keys.status(id)).cmd("TTL").arg(keys.status(id)).query(conn)
        })?;
        Ok(value.map(|v| (v, ttl)))
    }
}

#[cfg(test)]
mod tests {
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
