//! The schedule in Redis: scheduling, taking due jobs under a lease, acknowledging, the dead
//! set, listings and job status. One [`Schedule`] is one synchronous Redis connection (the
//! `redis` crate's blocking API: no runtime, no threads, safe in processes that fork), opened
//! by [`super::target`] (one server, Sentinel or Cluster, with auth and TLS).
//!
//! Every multi-key change is one of [`super::lua`]'s scripts. A connection that fails is
//! dropped and made again on the next call; retrying with backoff is the caller's choice.

use super::lua;
use super::record::Record;
use crate::redis::target::{Kind, RedisConn, RedisTarget};
use crate::scheduler_settings::SchedulerSettings as Settings;
use redis::Script;
use serde_json::{json, Value};

pub use super::entries::{
    check_unique, epoch_ms, max_retries, within_bound, Dead, Keys, Pending, Place, ScheduleError, Status, Taken, LATEST,
};
use super::entries::{contains_pattern, parse_taken, Scored};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::take()));
static SCHEDULE_SRC: LazyLock<String> = LazyLock::new(lua::schedule);
static SCHEDULE: LazyLock<Script> = LazyLock::new(|| Script::new(&SCHEDULE_SRC));
static ACK: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::ack()));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::renew()));
static DEFER: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::defer()));
static CANCEL: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::cancel()));
static BURY: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::bury()));
static MIGRATE: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::migrate()));
static REQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(&lua::requeue()));

/// A connection to one schedule in Redis.
pub struct Schedule {
    target: RedisTarget,
    conn: Option<RedisConn>,
    keys: Keys,
    settings: Settings,
    /// This connection's lease owner token: `host:pid:random`, unique per [`Schedule`].
    token: String,
    /// Connect and answer timeout instead of [`RedisTarget::connect`]'s defaults.
    timeout: Option<Duration>,
}

impl Schedule {
    /// A store at `url` (nothing connects until the first call), with the settings' TLS CA.
    ///
    /// # Errors
    /// [`ScheduleError::Target`] for a URL that does not parse or an unreadable CA file;
    /// [`ScheduleError::CrossSlot`] for a Cluster when the keys would not share one slot.
    pub fn open(url: &str, settings: &Settings) -> Result<Schedule, ScheduleError> {
        let target = RedisTarget::from_url(url, settings.tls_ca.as_deref())?;
        let keys = Keys { prefix: settings.prefix.clone(), compat_set: settings.compat_set.clone() };
        if target.kind() == Kind::Cluster {
            keys.check_one_slot(settings.compat)?;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        let token = format!("{host}:{}:{}", std::process::id(), crate::job_id::generate());
        Ok(Schedule { target, conn: None, keys, settings: settings.clone(), token, timeout: None })
    }

    /// The same store, connecting and waiting for each answer at most `timeout` (see
    /// [`RedisTarget::connect_within`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Schedule {
        self.timeout = Some(timeout);
        self
    }

    /// Its keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The token its leases are taken under.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The key to pass for li3_gearman's set: the set with compat on, else one of li3g's own
    /// (never touched then), so an ACL limited to li3g's keys is enough.
    fn compat_key(&self) -> String {
        if self.settings.compat {
            self.keys.compat_set.clone()
        } else {
            self.keys.scheduled()
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Where its Redis is, for a second connection (the scheduler's wake-up subscription).
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Runs `f` on the connection, connecting first when there is none; a failed connection
    /// is dropped so that the next call makes a fresh one.
    ///
    /// `READONLY` (the connection is to a master that a failover demoted to a replica, still
    /// open, or named a moment too long by a sentinel) is answered by a fresh connection, to
    /// the master the sentinels name now, and `f` once more on it: a read-only replica ran
    /// none of `f`'s writes (each is refused before it runs, in a script too), so the second
    /// attempt is the first that writes. The caller sees the demotion only when the new
    /// master cannot be reached either.
    fn with<T>(
        &mut self,
        mut f: impl FnMut(&mut RedisConn, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, ScheduleError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if self.conn.is_none() {
                self.conn = Some(match self.timeout {
                    Some(timeout) => self.target.connect_within(timeout)?,
                    None => self.target.connect()?,
                });
            }
            let conn = self.conn.as_mut().expect("connected above");
            let result = f(conn, &self.keys);
            let Err(err) = &result else { return Ok(result?) };
            let demoted = err.code() == Some("READONLY");
            if demoted
                || err.is_io_error()
                || err.is_connection_dropped()
                || err.is_timeout()
                || err.is_unrecoverable_error()
            {
                self.conn = None;
            }
            if !(demoted && attempts == 1) {
                return Ok(result?);
            }
        }
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
        let now = SystemTime::now();
        for (record, due) in records.iter().zip(due) {
            check_unique(&record.id, &record.unique, record.retry, max_retries(&record.workload))?;
            if !within_bound(*due, now) {
                return Err(ScheduleError::TooLate);
            }
        }
        let ttl = self.status_ttl();
        let schedule = |conn: &mut RedisConn, keys: &Keys| {
            // EVALSHA for every job, in one round trip; the first command is keyed, so a
            // Cluster sends the pipeline to the node of the schedule's slot.
            let mut pipe = redis::pipe();
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
        };
        match self.with(schedule) {
            // Not loaded (Redis restarted, a failover, a new Cluster node): nothing ran (every
            // EVALSHA failed alike). Load it (on every node of a Cluster) and send them again.
            Err(ScheduleError::Redis(err))
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.with(|conn, _| redis::cmd("SCRIPT").arg("LOAD").arg(SCHEDULE_SRC.as_str()).exec(conn))?;
                self.with(schedule)
            }
            other => other,
        }
    }

    /// The upgrade from li3g 0.1's default prefix: with the default prefix (`{li3g}:`) on one
    /// server or under Sentinel, moves the jobs, leases and dead entries kept under the old
    /// default (`li3g:`) to it, in one script (atomic: a client or scheduler sees them under
    /// one prefix or the other, never both or neither). The number of jobs moved; 0 when there
    /// was nothing to move, with another prefix, or on a Cluster (where the old keys, in
    /// several slots, never worked).
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails (nothing moved).
    pub fn migrate_legacy(&mut self) -> Result<u64, ScheduleError> {
        use crate::scheduler_settings::{DEFAULT_PREFIX, LEGACY_PREFIX};
        if self.keys.prefix != DEFAULT_PREFIX || self.target.kind() == Kind::Cluster {
            return Ok(0);
        }
        let old = Keys { prefix: LEGACY_PREFIX.into(), compat_set: self.keys.compat_set.clone() };
        self.with(|conn, keys| {
            MIGRATE
                .key(old.scheduled())
                .key(old.leased())
                .key(old.owners())
                .key(old.jobs())
                .key(old.dead())
                .key(keys.scheduled())
                .key(keys.leased())
                .key(keys.owners())
                .key(keys.jobs())
                .key(keys.dead())
                .arg(&old.prefix)
                .arg(&keys.prefix)
                .invoke(conn)
        })
    }

    /// Removes a pending job (li3g's or li3_gearman's); `false` when no such job is pending.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn cancel(&mut self, id: &str) -> Result<bool, ScheduleError> {
        if self.cancel_one(id, "")? {
            return Ok(true);
        }
        if !self.settings.compat {
            return Ok(false);
        }
        // li3_gearman's members are JSON that li3_gearman writes, so nothing can index them by
        // id: scan for members containing the id, a page per request (Redis filters them in C
        // and serves other clients between pages), and decode only those.
        let pattern = contains_pattern(id);
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = self.with(|conn, keys| {
                redis::cmd("ZSCAN")
                    .arg(&keys.compat_set)
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(conn)
            })?;
            // ZSCAN pages alternate member and score.
            for member in page.iter().step_by(2) {
                let matches = serde_json::from_str::<Value>(member)
                    .ok()
                    .is_some_and(|v| v.get("id").and_then(Value::as_str) == Some(id));
                if matches && self.cancel_one(id, member)? {
                    return Ok(true);
                }
            }
            if next == 0 {
                return Ok(false);
            }
            cursor = next;
        }
    }

    /// The cancel script for li3g's job `id` (`member` empty) or a li3_gearman member.
    fn cancel_one(&mut self, id: &str, member: &str) -> Result<bool, ScheduleError> {
        let (compat_key, ttl) = (self.compat_key(), self.status_ttl());
        let n: i64 = self.with(|conn, keys| {
            CANCEL
                .key(keys.scheduled())
                .key(keys.jobs())
                .key(&compat_key)
                .key(keys.status(id))
                .arg(id)
                .arg(member)
                .arg(ttl)
                .invoke(conn)
        })?;
        Ok(n == 1)
    }

    /// Brings a dead job back, due now; `false` when no such job is dead.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn requeue(&mut self, id: &str) -> Result<bool, ScheduleError> {
        let ttl = self.status_ttl();
        let n: i64 = self.with(|conn, keys| {
            REQUEUE
                .key(keys.dead())
                .key(keys.jobs())
                .key(keys.scheduled())
                .key(keys.status(id))
                .arg(id)
                .arg(keys.wake_channel())
                .arg(ttl)
                .invoke(conn)
        })?;
        Ok(n == 1)
    }

    /// Puts job `id` (stored as `job`) in the dead set with `error`; its status becomes
    /// `dead`. With `leased` (a scheduler burying a job it took), only while the lease is still
    /// this schedule's token's; `false` when it was not (another scheduler has it now).
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn bury(&mut self, id: &str, job: &str, error: &str, leased: bool) -> Result<bool, ScheduleError> {
        let entry = json!({"job": job, "error": error, "at": epoch_ms(SystemTime::now())}).to_string();
        let token = if leased { self.token.clone() } else { String::new() };
        let ttl = self.status_ttl();
        let n: i64 = self.with(|conn, keys| {
            BURY.key(keys.dead())
                .key(keys.leased())
                .key(keys.jobs())
                .key(keys.scheduled())
                .key(keys.owners())
                .key(keys.status(id))
                .arg(id)
                .arg(&entry)
                .arg(&token)
                .arg(ttl)
                .invoke(conn)
        })?;
        Ok(n == 1)
    }

    /// Acknowledges `accepted` (as [`Schedule::ack`]) and takes up to `batch` due (or abandoned)
    /// jobs under a lease of `lease` owned by this schedule's token, in one script. With
    /// `reclaim` (after a take whose answer was lost), the jobs leased to this token come back
    /// first, instead of waiting out their lease: the caller holds none of them then.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails; then nothing was acknowledged nor taken.
    pub fn take(
        &mut self,
        lease: Duration,
        batch: usize,
        accepted: &[String],
        reclaim: bool,
    ) -> Result<Taken, ScheduleError> {
        let compat = if self.settings.compat { "1" } else { "0" };
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let (compat_key, token) = (self.compat_key(), self.token.clone());
        let reply: Vec<Option<String>> = self.with(|conn, keys| {
            let mut invocation = TAKE.prepare_invoke();
            invocation.key(keys.scheduled()).key(keys.leased()).key(keys.jobs()).key(&compat_key).key(keys.owners());
            invocation.arg(lease_ms).arg(batch).arg(compat).arg(&token).arg(if reclaim { "1" } else { "0" });
            for id in accepted {
                invocation.arg(id);
            }
            invocation.invoke(conn)
        })?;
        parse_taken(reply)
    }

    /// Acknowledges jobs a job server accepted (those still leased to this token; the others
    /// belong to the scheduler that took them over).
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails (the jobs stay leased and will be submitted again
    /// after the lease: they coalesce on their unique key while queued).
    pub fn ack(&mut self, ids: &[String]) -> Result<(), ScheduleError> {
        if ids.is_empty() {
            return Ok(());
        }
        let token = self.token.clone();
        self.with(|conn, keys| {
            let mut invocation = ACK.prepare_invoke();
            invocation.key(keys.leased()).key(keys.jobs()).key(keys.scheduled()).key(keys.owners());
            invocation.arg(&token);
            for id in ids {
                invocation.arg(id);
            }
            invocation.invoke::<i64>(conn)
        })?;
        Ok(())
    }

    /// Renews the leases of `ids` for `lease` from now; per id, whether it is still this
    /// token's (`false`: another scheduler took it after the lease ran out; drop it).
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails (then nothing is known: do not submit).
    pub fn renew(&mut self, ids: &[&str], lease: Duration) -> Result<Vec<bool>, ScheduleError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let token = self.token.clone();
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let held: Vec<i64> = self.with(|conn, keys| {
            let mut invocation = RENEW.prepare_invoke();
            invocation.key(keys.leased()).key(keys.owners()).arg(&token).arg(lease_ms);
            for id in ids {
                invocation.arg(*id);
            }
            invocation.invoke(conn)
        })?;
        if held.len() != ids.len() {
            return Err(ScheduleError::Reply { what: "the renew script", reply: format!("{held:?}") });
        }
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    /// Gives back leased jobs a job server refused for now, due again after `delay`.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails (they stay leased and are taken again after it).
    pub fn defer(&mut self, ids: &[String], delay: Duration) -> Result<(), ScheduleError> {
        if ids.is_empty() {
            return Ok(());
        }
        let token = self.token.clone();
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.with(|conn, keys| {
            let mut invocation = DEFER.prepare_invoke();
            invocation.key(keys.leased()).key(keys.owners()).key(keys.scheduled()).arg(&token).arg(delay_ms);
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
        let (scheduled, leased, jobs): (Scored, Scored, Vec<(String, String)>) = self.with(|conn, keys| {
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE").arg(keys.scheduled()).arg(0).arg(-1).arg("WITHSCORES");
            pipe.cmd("ZRANGE").arg(keys.leased()).arg(0).arg(-1).arg("WITHSCORES");
            pipe.cmd("HGETALL").arg(keys.jobs());
            pipe.query(conn)
        })?;
        // li3_gearman's set only with compat on: with it off, li3g touches no key but its own.
        let php: Scored = if compat {
            let set = self.keys.compat_set.clone();
            self.with(|conn, keys| {
                redis::cmd("ZRANGE").arg(&keys.compat_set).arg(0).arg(-1).arg("WITHSCORES").query(conn)
            })
            .map_err(|err| match err {
                ScheduleError::Redis(e) if e.code() == Some("WRONGTYPE") => {
                    ScheduleError::WrongType { key: set, what: "li3_gearman's scheduled set (a sorted set)" }
                }
                other => other,
            })?
        } else {
            Vec::new()
        };
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

    /// Keeps a failed job's message beside its status (`<prefix><id>.error`), with the same
    /// expiry; the status itself keeps li3_gearman's values (`error`), which its readers know.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn keep_failure(&mut self, id: &str, message: &str) -> Result<(), ScheduleError> {
        let ttl = self.status_ttl();
        if ttl == 0 {
            return Ok(());
        }
        self.with(|conn, keys| redis::cmd("SET").arg(keys.error(id)).arg(message).arg("EX").arg(ttl).exec(conn))
    }

    /// A job's status and the seconds it has left, if any is recorded: a failed job's is
    /// `failed: <its message>`, a dead one's `dead: <its message>`, when the message was kept.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn status(&mut self, id: &str) -> Result<Option<(String, i64)>, ScheduleError> {
        let (value, ttl, message): (Option<String>, i64, Option<String>) = self.with(|conn, keys| {
            redis::pipe()
                .cmd("GET")
                .arg(keys.status(id))
                .cmd("TTL")
                .arg(keys.status(id))
                .cmd("GET")
                .arg(keys.error(id))
                .query(conn)
        })?;
        Ok(value.map(|v| match (v.as_str(), message) {
            ("error", Some(message)) => (format!("failed: {message}"), ttl),
            ("dead", Some(message)) => (format!("dead: {message}"), ttl),
            _ => (v, ttl),
        }))
    }

    /// Removes a dead job for good; `false` when no such job is dead.
    ///
    /// # Errors
    /// [`ScheduleError`] when Redis fails.
    pub fn delete_dead(&mut self, id: &str) -> Result<bool, ScheduleError> {
        let n: i64 = self.with(|conn, keys| redis::cmd("HDEL").arg(keys.dead()).arg(id).query(conn))?;
        Ok(n == 1)
    }
}
