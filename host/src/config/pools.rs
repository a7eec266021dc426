//! Worker pools in the configuration: `[NAME.pools.POOL]` tables, each a set of tasks with
//! workers of their own.
//!
//! ```toml
//! [default.pools.reports]
//! tasks = ["Report::*", "Export::csv"]   # task names or `Class::*`, canonical as job names are
//! workers = 2                            # default 1
//! atomic = true                          # per-pool worker options; unset ones follow the
//! timeout = 300                          #   command line (--atomic, --timeout, --memlimit,
//! memlimit = "512M"                      #   --max-jobs, --max-age, --max-age-splay)
//! max_jobs = 100
//! max_age = 3600                         # seconds a worker lives (it ends after its job in hand)
//! max_age_splay = 600                    # spread: each worker's age limit is max_age + 0..splay
//! exclusive = true                       # default: the default pool does not serve these tasks
//! ```
//!
//! A task belongs to at most one pool: two pools whose patterns can match the same task are an
//! error here, naming both, decided from the patterns alone (no plugin is loaded to check).
//! With `exclusive = false` the default pool (`--workers`) serves a pool's tasks too, as
//! GearmanManager's `count` workers do every job besides the dedicated ones.

use super::{seconds, ConfigError};
use crate::worker::selection::{Selection, TaskPattern};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One pool, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// Its name (the `POOL` of `[NAME.pools.POOL]`), in log lines and `work --pool`.
    pub name: String,
    /// The tasks its workers register.
    pub tasks: Vec<TaskPattern>,
    /// How many workers it runs.
    pub workers: u32,
    /// Whether the default pool leaves these tasks to this one (default true).
    pub exclusive: bool,
    /// `--atomic` for this pool's workers (unset: the command line's).
    pub atomic: Option<bool>,
    /// `--timeout` for this pool's workers.
    pub timeout: Option<Duration>,
    /// `--memlimit` for this pool's workers, in bytes.
    pub memlimit: Option<u64>,
    /// `--max-jobs` for this pool's workers.
    pub max_jobs: Option<u64>,
    /// `--max-age` for this pool's workers.
    pub max_age: Option<Duration>,
    /// `--max-age-splay` for this pool's workers.
    pub max_age_splay: Option<Duration>,
}

/// A memory limit as written: bytes, or a size such as `"512M"`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a size such as \"512M\" or a number of bytes")]
pub(super) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `[NAME.pools.POOL]` as written. Another per-pool worker option (the job child's sandbox) is
/// one field here and in [`PoolSettings`], and one line in the worker's settings
/// (`cli::work::WorkerOptions::worker_config`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    tasks: Vec<String>,
    workers: Option<u32>,
    exclusive: Option<bool>,
    atomic: Option<bool>,
    timeout: Option<f64>,
    memlimit: Option<RawSize>,
    max_jobs: Option<u64>,
    max_age: Option<f64>,
    max_age_splay: Option<f64>,
}

/// Resolves the pools of configuration `name` and checks that no task is claimed twice.
///
/// # Errors
/// [`ConfigError::Invalid`] with the key and what is wrong.
pub(super) fn resolve(
    name: &str,
    raw: BTreeMap<String, RawPool>,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<PoolSettings>, ConfigError> {
    let mut pools: Vec<PoolSettings> = Vec::new();
    for (pool, raw) in raw {
        let key = |field: &str| format!("{name}.pools.{pool}{field}");
        // At most 64 bytes: the scoreboard's slot keeps that much of it.
        if pool == "default"
            || pool.is_empty()
            || pool.len() > 64
            || !pool.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            return Err(invalid(
                key(""),
                "a pool's name is 1 to 64 letters, digits, `_` and `-`, and not `default` (the --workers pool)".into(),
            ));
        }
        if raw.tasks.is_empty() {
            return Err(invalid(key(".tasks"), "no tasks; expected task names or `Class::*` patterns".into()));
        }
        let mut tasks = Vec::new();
        for (i, text) in raw.tasks.iter().enumerate() {
            tasks.push(TaskPattern::parse(text).map_err(|err| invalid(key(&format!(".tasks[{i}]")), err))?);
        }
        let secs =
            |value: Option<f64>, field: &str| value.map(seconds).transpose().map_err(|err| invalid(key(field), err));
        let memlimit = match raw.memlimit {
            None => None,
            Some(RawSize::Bytes(0)) => {
                return Err(invalid(key(".memlimit"), "a memory limit must be above zero".into()))
            }
            Some(RawSize::Bytes(n)) => Some(n),
            Some(RawSize::Text(text)) => Some(super::parse_size(&text).map_err(|err| invalid(key(".memlimit"), err))?),
        };
        if raw.workers == Some(0) {
            return Err(invalid(key(".workers"), "0 workers; a pool runs at least 1 (remove it instead)".into()));
        }
        if raw.max_jobs == Some(0) {
            return Err(invalid(key(".max_jobs"), "0 jobs; expected at least 1".into()));
        }
        let settings = PoolSettings {
            name: pool.clone(),
            tasks,
            workers: raw.workers.unwrap_or(1),
            exclusive: raw.exclusive.unwrap_or(true),
            atomic: raw.atomic,
            timeout: secs(raw.timeout, ".timeout")?,
            memlimit,
            max_jobs: raw.max_jobs,
            max_age: secs(raw.max_age, ".max_age")?,
            max_age_splay: secs(raw.max_age_splay, ".max_age_splay")?,
        };
        for other in &pools {
            for mine in &settings.tasks {
                if let Some(theirs) = other.tasks.iter().find(|theirs| theirs.overlaps(mine)) {
                    return Err(invalid(
                        key(".tasks"),
                        format!(
                            "\"{mine}\" is claimed by pool {} too (\"{theirs}\" in {name}.pools.{}.tasks); \
                             a task belongs to one pool",
                            other.name, other.name
                        ),
                    ));
                }
            }
        }
        pools.push(settings);
    }
    Ok(pools)
}

/// What a worker of `pool` registers (`None`: the default pool), given every pool.
pub fn selection(pools: &[PoolSettings], pool: Option<&str>) -> Selection {
    match pool.and_then(|name| pools.iter().find(|p| p.name == name)) {
        Some(pool) => Selection::Only(pool.tasks.clone()),
        None => {
            let claimed: Vec<TaskPattern> =
                pools.iter().filter(|p| p.exclusive).flat_map(|p| p.tasks.iter().cloned()).collect();
            if claimed.is_empty() {
                Selection::All
            } else {
                Selection::Except(claimed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError};
    use crate::worker::selection::{Selection, TaskPattern};
    use std::path::Path;
    use std::time::Duration;

    fn load(text: &str) -> Result<crate::config::Config, ConfigError> {
        parse(Path::new("li3g.toml"), text, "default", None)
    }

    #[test]
    fn pools_with_their_options_and_the_default_pool() {
        let config = load(
            r#"
[default.pools.reports]
tasks = ["Report::*", "\\Export"]
workers = 2
atomic = true
timeout = 300
memlimit = "512M"
max_jobs = 100
max_age = 3600
max_age_splay = 60

[default.pools.mail]
tasks = ["Mail::send"]
exclusive = false
memlimit = 1048576
"#,
        )
        .unwrap();
        let reports = config.pool("reports").unwrap();
        assert_eq!(reports.tasks, [TaskPattern::Class("Report".into()), TaskPattern::Task("Export::run".into())]);
        assert_eq!((reports.workers, reports.atomic, reports.memlimit), (2, Some(true), Some(512 << 20)));
        assert_eq!(reports.timeout, Some(Duration::from_secs(300)));
        assert_eq!(
            (reports.max_age, reports.max_age_splay),
            (Some(Duration::from_secs(3600)), Some(Duration::from_secs(60)))
        );
        let mail = config.pool("mail").unwrap();
        assert_eq!((mail.workers, mail.exclusive, mail.atomic, mail.memlimit), (1, false, None, Some(1 << 20)));

        assert_eq!(config.selection(Some("mail")), Selection::Only(vec![TaskPattern::Task("Mail::send".into())]));
        // The default pool leaves the exclusive pool's tasks alone, and serves the others'.
        let default = config.selection(None);
        assert!(!default.selects("Report::build") && !default.selects("Export::run"));
        assert!(default.selects("Mail::send") && default.selects("Hello::say"));
        assert_eq!(load("").unwrap().selection(None), Selection::All);
    }

    #[test]
    fn a_task_claimed_by_two_pools_names_both() {
        let err = load(
            r#"
[default.pools.a]
tasks = ["Report::*"]
[default.pools.b]
tasks = ["Mail::send", "Report::build"]
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("default.pools.b.tasks"), "{err}");
        assert!(
            err.contains("\"Report::build\" is claimed by pool a too (\"Report::*\" in default.pools.a.tasks)"),
            "{err}"
        );
    }

    #[test]
    fn bad_pools_are_errors_naming_the_key() {
        for (text, key) in [
            ("[default.pools.a]\ntasks = []", "default.pools.a.tasks: no tasks"),
            ("[default.pools.a]\ntasks = [\"Re*::x\"]", "default.pools.a.tasks[0]"),
            ("[default.pools.a]\ntasks = [\"A::b\"]\nworkers = 0", "default.pools.a.workers"),
            ("[default.pools.a]\ntasks = [\"A::b\"]\nmemlimit = \"12X\"", "default.pools.a.memlimit"),
            ("[default.pools.a]\ntasks = [\"A::b\"]\nmax_age = -1", "default.pools.a.max_age"),
            ("[default.pools.default]\ntasks = [\"A::b\"]", "default.pools.default: a pool's name"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        // Longer than the scoreboard keeps.
        let err = load(&format!("[default.pools.{}]\ntasks = [\"A::b\"]", "p".repeat(65))).unwrap_err().to_string();
        assert!(err.contains("a pool's name is 1 to 64"), "{err}");
        assert!(load(&format!("[default.pools.{}]\ntasks = [\"A::b\"]", "p".repeat(64))).is_ok());
        let err = load("[default.pools.a]\ntasks = [\"A::b\"]\nsandbox = 1").unwrap_err().to_string();
        assert!(err.contains("unknown field `sandbox`"), "{err}");
    }
}
