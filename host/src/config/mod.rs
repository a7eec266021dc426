//! The configuration file: named configurations, as li3_gearman's `Gearman::config()`.
//!
//! ```toml
//! [default]
//! servers = ["127.0.0.1:4730", "gearman2"]   # host or host:port (default port 4730); or "a,b"
//! plugins.dir = "/usr/lib/li3g/plugins"     # or plugins = "..." when no plugin has settings
//! redis = "redis://127.0.0.1:6379/0"          # for the scheduler
//! environment = "development"                 # what tasks see unless --environment says otherwise
//! log_file = "/var/log/li3g/li3g-host.log"    # log lines here (reopened on SIGUSR1), not syslog
//!
//! [default.tasks."Image::resize"]
//! timeout = 120                               # seconds; the worker registers it with CAN_DO_TIMEOUT
//!
//! [default.environments.production]           # applied on top when --environment production
//! servers = ["gearman1.internal", "gearman2.internal"]
//!
//! [default.plugins]
//! state_timeout = 30                          # seconds a plugin's state constructor may take
//! optional = ["redis_counter"]                # plugins that may be refused (skipped, not fatal)
//!
//! [default.plugins.redis_counter]             # a plugin's settings, by plugin name
//! url = "redis://127.0.0.1:6379/0"
//!
//! [default.environments.production.plugins.redis_counter]
//! url = "redis://redis.internal/0"            # merged key by key over the section above
//!
//! [default.pools.reports]                    # workers of their own for some tasks (pools.rs)
//! tasks = ["Report::*"]
//! workers = 2
//!
//! [reports]                                   # another configuration: `li3g-host work reports`
//! servers = ["127.0.0.1:4731"]
//! ```
//!
//! Where it is read from: `--config PATH` or `LI3G_CONFIG`; otherwise `li3g.toml` in the
//! current directory, then `/etc/li3g/li3g.toml`; with neither, built-in defaults (and only
//! the configuration `default` exists). Unknown keys are errors, so a typo never goes unseen;
//! every error names the file, the key and what was expected.

pub mod pools;

pub use pools::PoolSettings;

use crate::gearman::conn::ServerAddr;
use crate::plugins::canonical_task_name;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configuration's name.
pub const DEFAULT_NAME: &str = "default";

/// Where the configuration file is looked for when none is given.
pub const SEARCH_PATH: [&str; 2] = ["li3g.toml", "/etc/li3g/li3g.toml"];

/// One named configuration, with the environment's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Its name.
    pub name: String,
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
    /// Job servers (default `127.0.0.1:4730`).
    pub servers: Vec<ServerAddr>,
    /// Whether `servers` is the built-in default (nothing configured them): `start` then runs
    /// the embedded job server there.
    pub servers_default: bool,
    /// The plugins directory, when set.
    pub plugins: Option<PathBuf>,
    /// The scheduler's settings (`[NAME.scheduler]`).
    pub scheduler: SchedulerSettings,
    /// The Redis URL for the scheduler, when set.
    pub redis: Option<String>,
    /// The environment name tasks see, when set.
    pub environment: Option<String>,
    /// Per-task options, by canonical task name (`Hello` and `\\Hello` become `Hello::run`).
    pub tasks: BTreeMap<String, TaskOptions>,
    /// Each plugin's settings section (`[<name>.plugins.<plugin>]`), by plugin name, as JSON;
    /// the plugin decodes it into its own type.
    pub plugin_settings: BTreeMap<String, serde_json::Value>,
    /// Where the settings an environment overrides come from, for messages: by plugin, each
    /// overridden top-level key's section (`default.environments.production.plugins`).
    pub plugin_setting_origins: BTreeMap<String, BTreeMap<String, String>>,
    /// `plugins.state_timeout`: how long a plugin's state constructor may take in a worker
    /// before the worker gives up and exits (`None`: [`crate::plugins::STATE_TIMEOUT`]).
    pub state_timeout: Option<Duration>,
    /// The worker pools (`[<name>.pools.<pool>]`), by name.
    pub pools: Vec<PoolSettings>,
    /// `plugins.optional`: the plugins that may be refused (skipped with a warning); any other
    /// refused plugin stops `start` and `work` from starting.
    pub optional_plugins: Vec<String>,
    /// `log_file`: where the daemon and its workers write their log lines (reopened on
    /// SIGUSR1), instead of syslog or stderr.
    pub log_file: Option<PathBuf>,
}

impl Config {
    /// The pool named `name`, if configured.
    pub fn pool(&self, name: &str) -> Option<&PoolSettings> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// What a worker of pool `pool` registers (`None`: the default pool).
    pub fn selection(&self, pool: Option<&str>) -> crate::worker::selection::Selection {
        pools::selection(&self.pools, pool)
    }

    /// The plugin settings, with where they come from, for the registry's messages.
    pub fn plugin_settings(&self) -> crate::plugins::PluginSettings {
        crate::plugins::PluginSettings {
            file: self.file.clone(),
            key: format!("{}.plugins", self.name),
            values: self.plugin_settings.clone(),
            origins: self.plugin_setting_origins.clone(),
            state_timeout: self.state_timeout.unwrap_or(crate::plugins::STATE_TIMEOUT),
            optional: self.optional_plugins.clone(),
        }
    }
}

/// The longest duration any setting may have: 30 days. Longer is a typo (and would not fit
/// `CAN_DO_TIMEOUT`'s milliseconds or a poll timeout).
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

/// A number of seconds as a [`Duration`]: positive, finite and at most [`MAX_SECONDS`].
///
/// # Errors
/// What is wrong with it, for a message that names the flag or key.
pub fn seconds(value: f64) -> Result<Duration, String> {
    if value.is_nan() {
        Err("NaN is not a number of seconds".into())
    } else if value <= 0.0 {
        Err(format!("{value} is not a positive number of seconds"))
    } else if value > MAX_SECONDS {
        Err(format!("{value} seconds is too long (at most {MAX_SECONDS}, 30 days)"))
    } else {
        Ok(Duration::from_secs_f64(value))
    }
}

/// Parses a command-line number of seconds (`1.5`) with [`seconds`]; clap's `value_parser`.
///
/// # Errors
/// When it is not a number, or not a valid duration.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    seconds(value)
}

/// Options for one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// How long a job of this task may run.
    pub timeout: Option<Duration>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message: line, column, key and what was expected.
        message: String,
    },
    /// A value has the right type but is not valid.
    #[error("{}: {key}: {message}", .path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into()))]
    Invalid {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The key, as a dotted path.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The named configuration is not in the file.
    #[error("no configuration named {name:?} in {}{}", .file, known_names(.known))]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The file, or "the built-in defaults".
        file: String,
        /// The names that exist.
        known: Vec<String>,
    },
}

fn known_names(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it has: {})", names.join(", "))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    List(Vec<String>),
    Text(String),
}

/// `plugins = "DIR"`, or a table: `dir = "DIR"` and one table of settings per plugin.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a directory, or a table of `dir` and plugin settings sections")]
enum RawPlugins {
    Dir(PathBuf),
    Table(BTreeMap<String, toml::Value>),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTask {
    timeout: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    servers: Option<Servers>,
    plugins: Option<RawPlugins>,
    redis: Option<String>,
    scheduler: Option<RawSchedulerSettings>,
    #[serde(default)]
    tasks: BTreeMap<String, RawTask>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    servers: Option<Servers>,
    plugins: Option<RawPlugins>,
    redis: Option<String>,
    scheduler: Option<RawSchedulerSettings>,
    environment: Option<String>,
    log_file: Option<PathBuf>,
    #[serde(default)]
    tasks: BTreeMap<String, RawTask>,
    #[serde(default)]
    pools: BTreeMap<String, pools::RawPool>,
    #[serde(default)]
    environments: BTreeMap<String, RawOverride>,
}

/// The scheduler's settings: the configuration's `[NAME.scheduler]` table. The scheduler is
/// given these (and the Redis URL, and the servers); it never reads the whole [`Config`].
///
/// ```toml
/// [default.scheduler]
/// prefix = "li3g:"                # of every key, and of status keys (li3_gearman's `prefix`)
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
}

/// The longest lease: a day (a batch leased longer is a batch lost to a stalled scheduler for that long).
const MAX_LEASE: Duration = Duration::from_secs(86_400);
/// The shortest lease: below it a scheduler's own batch could expire between its take and its
/// submission, and fencing would drop every batch.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// A lease of `secs` seconds, if within [`MIN_LEASE`]..=[`MAX_LEASE`] (`lease`, `--lease`).
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
            prefix: "li3g:".into(),
            compat_set: "job_scheduled".into(),
            compat: true,
            job_status: true,
            expires: Duration::from_secs(86400),
            lease: Duration::from_secs(30),
        }
    }
}

/// The `[NAME.scheduler]` table as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedulerSettings {
    prefix: Option<String>,
    schedule_set: Option<String>,
    compat: Option<bool>,
    job_status: Option<bool>,
    expires: Option<u64>,
    lease: Option<f64>,
}

impl RawSchedulerSettings {
    /// `over`'s keys on top of `self`'s.
    fn merge(self, over: RawSchedulerSettings) -> RawSchedulerSettings {
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
    fn resolve(self) -> Result<SchedulerSettings, (String, String)> {
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
        })
    }
}

/// `url` with its password (and user) replaced by `***`, for log lines and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // The credentials end at the last `@` before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The file to read: the one given, or the first of [`SEARCH_PATH`] that exists.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    given.map(Path::to_path_buf).or_else(|| SEARCH_PATH.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// Loads configuration `name` from `file` (see [`find`]) with `environment`'s overrides.
///
/// # Errors
/// [`ConfigError`] naming the file, the key and what was expected.
pub fn load(file: Option<&Path>, name: &str, environment: Option<&str>) -> Result<Config, ConfigError> {
    let Some(path) = file else {
        if name != DEFAULT_NAME {
            return Err(ConfigError::UnknownName {
                name: name.into(),
                file: format!("the built-in defaults (no {} found)", SEARCH_PATH.join(" or ")),
                known: vec![DEFAULT_NAME.into()],
            });
        }
        return resolve(None, name, RawConfig::default(), environment);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(path, &text, name, environment)
}

/// Parses `text` (the contents of `path`) and resolves configuration `name`.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str, name: &str, environment: Option<&str>) -> Result<Config, ConfigError> {
    let mut all: BTreeMap<String, RawConfig> =
        toml::from_str(text).map_err(|err| ConfigError::Parse { path: path.into(), message: err.to_string() })?;
    let known: Vec<String> = all.keys().cloned().collect();
    let raw = match all.remove(name) {
        Some(raw) => raw,
        // A file that does not define `default` still has the built-in one.
        None if name == DEFAULT_NAME => RawConfig::default(),
        None => return Err(ConfigError::UnknownName { name: name.into(), file: path.display().to_string(), known }),
    };
    resolve(Some(path), name, raw, environment)
}

fn resolve(
    path: Option<&Path>,
    name: &str,
    mut raw: RawConfig,
    environment: Option<&str>,
) -> Result<Config, ConfigError> {
    let invalid = |key: String, message: String| ConfigError::Invalid { path: path.map(Into::into), key, message };
    let environment = environment.map(str::to_string).or(raw.environment.take());
    let mut plugin_setting_origins: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut servers_key = format!("{name}.servers");
    let mut redis_key = format!("{name}.redis");
    let (mut plugins, mut state_timeout, mut optional_plugins, mut plugin_settings) =
        split_plugins(raw.plugins.take(), &format!("{name}.plugins"), &invalid)?;
    if let Some(env) = environment.as_deref() {
        if let Some(over) = raw.environments.remove(env) {
            if over.servers.is_some() {
                raw.servers = over.servers;
                servers_key = format!("{name}.environments.{env}.servers");
            }
            let (dir, timeout, optional, settings) =
                split_plugins(over.plugins, &format!("{name}.environments.{env}.plugins"), &invalid)?;
            plugins = dir.or(plugins);
            optional_plugins = optional.or(optional_plugins);
            state_timeout = timeout.or(state_timeout);
            for (plugin, section) in settings {
                let keys = section.as_table().map(|t| t.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
                let origin = format!("{name}.environments.{env}.plugins");
                let origins = plugin_setting_origins.entry(plugin.clone()).or_default();
                origins.extend(keys.into_iter().map(|key| (key, origin.clone())));
                match plugin_settings.get_mut(&plugin) {
                    Some(base) => merge(base, section),
                    None => {
                        plugin_settings.insert(plugin, section);
                    }
                }
            }
            if over.redis.is_some() {
                raw.redis = over.redis;
                redis_key = format!("{name}.environments.{env}.redis");
            }
            if let Some(over) = over.scheduler {
                raw.scheduler = Some(raw.scheduler.unwrap_or_default().merge(over));
            }
            raw.tasks.extend(over.tasks);
        }
    }
    let servers_default = raw.servers.is_none();
    let entries: Vec<String> = match raw.servers {
        None => vec!["127.0.0.1:4730".into()],
        Some(Servers::List(list)) => list,
        Some(Servers::Text(text)) => text.split(',').map(str::to_string).collect(),
    };
    let mut servers = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let addr = entry
            .parse()
            .map_err(|err| invalid(format!("{servers_key}[{i}]"), format!("{err}; expected host or host:port")))?;
        servers.push(addr);
    }
    if servers.is_empty() {
        return Err(invalid(servers_key, "no servers; expected at least one host or host:port".into()));
    }
    let mut tasks = BTreeMap::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for (task, options) in raw.tasks {
        let key = |field: &str| format!("{name}.tasks.\"{task}\"{field}");
        let timeout = options.timeout.map(seconds).transpose().map_err(|err| invalid(key(".timeout"), err))?;
        // Keys name tasks as jobs do: `Hello` is `Hello::run`, a leading `\` is ignored.
        let canonical = canonical_task_name(&task);
        if let Some(other) = keys.insert(canonical.clone(), task.clone()) {
            return Err(invalid(key(""), format!("names the same task as \"{other}\" ({canonical})")));
        }
        tasks.insert(canonical, TaskOptions { timeout });
    }
    if let Some(url) = raw.redis.as_deref() {
        // A URL that does not parse would make every scheduler exit at start, over and over:
        // refuse it here, for every command. (The message never shows the password.)
        if let Err(err) = redis::IntoConnectionInfo::into_connection_info(url) {
            return Err(invalid(redis_key, format!("{:?} is not a Redis URL ({err}); expected redis://[user:password@]host[:port][/db] or unix:///path", redact_url(url))));
        }
    }
    let pools = pools::resolve(name, std::mem::take(&mut raw.pools), &invalid)?;
    let scheduler = raw
        .scheduler
        .unwrap_or_default()
        .resolve()
        .map_err(|(key, message)| invalid(format!("{name}.{key}"), message))?;
    Ok(Config {
        name: name.into(),
        scheduler,
        file: path.map(Into::into),
        servers,
        servers_default,
        plugins,
        redis: raw.redis,
        environment,
        tasks,
        plugin_settings: plugin_settings
            .into_iter()
            .map(|(plugin, section)| (plugin, serde_json::to_value(section).unwrap_or_default()))
            .collect(),
        state_timeout,
        plugin_setting_origins,
        pools,
        optional_plugins: optional_plugins.unwrap_or_default(),
        log_file: raw.log_file,
    })
}

/// `512M`, `2G`, `64K` or plain bytes: a memory limit (`--memlimit`, a pool's `memlimit`).
///
/// # Errors
/// What is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 512M"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    if n == 0 {
        return Err(format!("{text:?}: a memory limit must be above zero"));
    }
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

type Sections = BTreeMap<String, toml::Value>;

/// What a `plugins` table holds: the directory, the state constructors' timeout, the optional
/// plugins and the plugin settings sections.
type SplitPlugins = (Option<PathBuf>, Option<Duration>, Option<Vec<String>>, Sections);

/// The plugins directory, the state constructors' timeout, the optional plugins and the plugin
/// settings sections from `plugins`.
fn split_plugins(
    raw: Option<RawPlugins>,
    key: &str,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<SplitPlugins, ConfigError> {
    match raw {
        None => Ok((None, None, None, Sections::new())),
        Some(RawPlugins::Dir(dir)) => Ok((Some(dir), None, None, Sections::new())),
        Some(RawPlugins::Table(mut table)) => {
            let dir = match table.remove("dir") {
                None => None,
                Some(toml::Value::String(dir)) => Some(PathBuf::from(dir)),
                Some(other) => {
                    return Err(invalid(
                        format!("{key}.dir"),
                        format!("expected a directory, found {}", other.type_str()),
                    ))
                }
            };
            let timeout = match table.remove("state_timeout") {
                None => None,
                Some(toml::Value::Integer(n)) => {
                    Some(seconds(n as f64).map_err(|err| invalid(format!("{key}.state_timeout"), err))?)
                }
                Some(toml::Value::Float(n)) => {
                    Some(seconds(n).map_err(|err| invalid(format!("{key}.state_timeout"), err))?)
                }
                Some(other) => {
                    return Err(invalid(
                        format!("{key}.state_timeout"),
                        format!("expected a number of seconds, found {}", other.type_str()),
                    ))
                }
            };
            let optional = match table.remove("optional") {
                None => None,
                Some(toml::Value::Array(names)) => Some(
                    names
                        .into_iter()
                        .map(|name| match name {
                            toml::Value::String(name) => Ok(name),
                            other => Err(invalid(
                                format!("{key}.optional"),
                                format!("expected plugin names, found {}", other.type_str()),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(other) => {
                    return Err(invalid(
                        format!("{key}.optional"),
                        format!("expected a list of plugin names, found {}", other.type_str()),
                    ))
                }
            };
            for (plugin, section) in &table {
                if !section.is_table() {
                    return Err(invalid(
                        format!("{key}.{plugin}"),
                        format!("expected a table of the plugin's settings, found {}", section.type_str()),
                    ));
                }
            }
            Ok((dir, timeout, optional, table))
        }
    }
}

/// Merges `over` into `base` key by key (tables recursively; anything else replaces).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests;
