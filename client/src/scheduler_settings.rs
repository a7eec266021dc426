//! The `[NAME.scheduler]` section: the scheduler's settings ([`SchedulerSettings`]) as written
//! and resolved, and the bounds of a lease ([`lease_from_secs`]). Here, not in li3g-host, because
//! a client that schedules in Redis needs the same prefix, keys and status expiry as the
//! scheduler; li3g-host's configuration reader re-exports it.

use serde::Deserialize;
use std::time::Duration;

/// The scheduler's settings: the configuration's `[NAME.scheduler]` table. The scheduler is
/// given these (and the Redis URL, and the servers); it never reads the whole
/// configuration (li3g-host's `Config`).
///
/// ```toml
/// [default.scheduler]
/// prefix = "{li3g}:"              # of every key, and of status keys (li3_gearman's `prefix`);
///                                 # its `{tag}` keeps every key in one Redis Cluster slot
/// schedule_set = "job_scheduled"  # li3_gearman's scheduled set (its `schedulePrefix`)
/// compat = true                   # move li3_gearman's members too
/// job_status = true               # write pending/running/finished/error per job
/// expires = 86400                 # seconds a status key lives
/// lease = 30                      # seconds a taken job stays leased
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// Prefix of every key.
    pub prefix: String,
    /// li3_gearman's scheduled set.
    pub compat_set: String,
    /// Whether schedulers move li3_gearman's members.
    pub compat: bool,
    /// Whether job status is written.
    pub job_status: bool,
    /// How long a status key lives.
    pub expires: Duration,
    /// How long a taken job stays leased.
    pub lease: Duration,
    /// The only CA trusted for `rediss://` (the configuration's top-level `redis_tls_ca`,
    /// which belongs with the Redis URL; carried here because every user of the URL has these
    /// settings too); `None`: the system's roots.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// The default prefix: `{li3g}:`, whose hash tag puts every key of a schedule in one Redis
/// Cluster slot.
pub const DEFAULT_PREFIX: &str = "{li3g}:";

/// The default prefix before the hash tag (li3g 0.1): its keys are migrated to
/// [`DEFAULT_PREFIX`] when a scheduler starts with the default prefix.
pub const LEGACY_PREFIX: &str = "li3g:";

/// The longest lease: a day (a batch leased longer is a batch lost to a stalled scheduler for that long).
const MAX_LEASE: Duration = Duration::from_secs(86_400);
/// The shortest lease: below it a scheduler's own batch could expire between its take and its
/// submission, and fencing would drop every batch.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// A lease of `secs` seconds, if within `MIN_LEASE`..=`MAX_LEASE` (100 ms to a day) (`lease`, `--lease`).
///
/// # Errors
/// What is wrong with it.
pub fn lease_from_secs(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{secs} is not a positive number of seconds"));
    }
    if secs < MIN_LEASE.as_secs_f64() || secs > MAX_LEASE.as_secs_f64() {
        return Err(format!("{secs} is outside {}..={} seconds", MIN_LEASE.as_secs_f64(), MAX_LEASE.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Default for SchedulerSettings {
    fn default() -> SchedulerSettings {
        SchedulerSettings {
            prefix: DEFAULT_PREFIX.into(),
            compat_set: "job_scheduled".into(),
            compat: true,
            job_status: true,
            expires: Duration::from_secs(86400),
            lease: Duration::from_secs(30),
            tls_ca: None,
        }
    }
}

/// The `[NAME.scheduler]` table as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedulerSettings {
    prefix: Option<String>,
    schedule_set: Option<String>,
    compat: Option<bool>,
    job_status: Option<bool>,
    expires: Option<u64>,
    lease: Option<f64>,
}

impl RawSchedulerSettings {
    /// `over`'s keys on top of `self`'s.
    pub fn merge(self, over: RawSchedulerSettings) -> RawSchedulerSettings {
        RawSchedulerSettings {
            prefix: over.prefix.or(self.prefix),
            schedule_set: over.schedule_set.or(self.schedule_set),
            compat: over.compat.or(self.compat),
            job_status: over.job_status.or(self.job_status),
            expires: over.expires.or(self.expires),
            lease: over.lease.or(self.lease),
        }
    }

    /// The settings, defaults filled in.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn resolve(self) -> Result<SchedulerSettings, (String, String)> {
        let default = SchedulerSettings::default();
        let lease = match self.lease {
            None => default.lease,
            Some(secs) => lease_from_secs(secs).map_err(|why| ("scheduler.lease".to_string(), why))?,
        };
        if self.expires == Some(0) {
            return Err(("scheduler.expires".into(), "0 is not a positive number of seconds".into()));
        }
        Ok(SchedulerSettings {
            prefix: self.prefix.unwrap_or(default.prefix),
            compat_set: self.schedule_set.unwrap_or(default.compat_set),
            compat: self.compat.unwrap_or(default.compat),
            job_status: self.job_status.unwrap_or(default.job_status),
            expires: self.expires.map(Duration::from_secs).unwrap_or(default.expires),
            lease,
            tls_ca: None,
        })
    }
}
