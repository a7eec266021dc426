//! The configuration file: named configurations, as li3_gearman's `Gearman::config()`.
//!
//! ```toml
//! [default]
//! servers = ["127.0.0.1:4730", "gearman2"]   # host or host:port (default port 4730); or "a,b"
//!                                             # tls://host:port: TLS, verified with:
//! tls_ca = "/etc/li3g/ca.pem"                 # CAs for tls:// servers [default: the system's]
//! tls_cert = "/etc/li3g/client.pem"           # client certificate, for servers that demand one
//! tls_key = "/etc/li3g/client.key"            # its private key
//! plugins.dir = "/usr/lib/li3g/plugins"     # or plugins = "..." when no plugin has settings
//! redis = "redis://127.0.0.1:6379/0"          # for the scheduler: redis[s]://[user:password@]host[:port][/db],
//!                                             # redis+sentinel://h1,h2/master[/db], redis+cluster://h1:7000,h2:7001
//! redis_tls_ca = "/etc/li3g/redis-ca.pem"     # for rediss://: the only CA trusted (default: the system's)
//! environment = "development"                 # what tasks see unless --environment says otherwise
//! log_file = "/var/log/li3g/li3g-host.log"    # log lines here (reopened on SIGUSR1), not syslog
//! tls_listen = "0.0.0.0:4731"                 # `li3g-host server`: a TLS listener, tls_cert/tls_key its certificate
//! tls_client_ca = "/etc/li3g/ca.pem"          # ... demanding client certificates of this CA (mutual TLS)
//!
//! [default.tasks."Image::resize"]
//! timeout = 120                               # seconds; the worker registers it with CAN_DO_TIMEOUT
//! cpu_limit = 60                              # CPU seconds a job may use (--atomic: RLIMIT_CPU)
//!
//! [default.sandbox]                           # Landlock: what every task's jobs may do (docs/SANDBOX.md)
//! read = ["/usr/share/zoneinfo"]              # paths to read; everything else refused
//! write = ["/var/lib/li3g/out"]               # paths to write (and read)
//! connect = [6379]                            # TCP ports to connect to
//! best_effort = false                         # true: run on a kernel without (all of) Landlock
//!
//! [default.tasks."Image::resize".sandbox]     # this task's own: its keys replace the default's
//! write = ["/var/lib/li3g/images"]
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

mod plugin_settings;
pub mod pools;
mod values;

pub use li3g_client::config::redact_url;
use li3g_client::scheduler_settings::RawSchedulerSettings;
pub use li3g_client::scheduler_settings::{lease_from_secs, SchedulerSettings, DEFAULT_PREFIX, LEGACY_PREFIX};
use plugin_settings::{merge, split_plugins, RawPlugins};
pub use pools::PoolSettings;
pub use values::{parse_seconds, parse_size, seconds, MAX_SECONDS};

use crate::plugins::canonical_task_name;
pub use crate::worker::sandbox::SandboxRules;
use li3g_protocol::conn::ServerAddr;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use li3g_client::config::{find, ConfigError, Target, DEFAULT_NAME, SEARCH_PATH};

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
    /// `tls_ca`, `tls_cert`, `tls_key`: the TLS files for every `tls://` server.
    pub tls: crate::tls::ClientFiles,
    /// The plugins directory, when set.
    pub plugins: Option<PathBuf>,
    /// `[NAME.sandbox]`: every task's sandbox unless it has its own.
    pub sandbox: Option<SandboxRules>,
    /// The scheduler's settings (`[NAME.scheduler]`).
    pub scheduler: SchedulerSettings,
    /// The Redis URL for the scheduler, when set.
    pub redis: Option<String>,
    /// Where the monitor serves metrics and the dashboard (`metrics = "127.0.0.1:9464"`);
    /// `None`: no monitor.
    pub metrics: Option<String>,
    /// The bearer token every request to the monitor must carry (`metrics_token`); required
    /// to bind anywhere but loopback.
    pub metrics_token: Option<String>,
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
    /// `tls_listen`: where `li3g-host server` opens its TLS listener (with `tls_cert` and
    /// `tls_key` as its certificate), unless `--tls-listen` says otherwise.
    pub tls_listen: Option<String>,
    /// `tls_client_ca`: the CA `li3g-host server` demands client certificates of (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
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

/// Options for one task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// How long a job of this task may run.
    pub timeout: Option<Duration>,
    /// How much CPU time a job of this task may use (under `--atomic`).
    pub cpu_limit: Option<Duration>,
    /// The task's own sandbox: `[NAME.sandbox]`'s keys with this task's over them.
    pub sandbox: Option<SandboxRules>,
}

/// `servers` as written: read by [`li3g_client::config`], declared here too so that a wrong
/// type or an unknown key next to it is still refused.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    List(#[expect(dead_code, reason = "read by li3g_client::config")] Vec<String>),
    Text(#[expect(dead_code, reason = "read by li3g_client::config")] String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTask {
    timeout: Option<f64>,
    cpu_limit: Option<f64>,
    sandbox: Option<RawSandbox>,
}

/// `[NAME.sandbox]` and `[NAME.tasks."T".sandbox]`: each key given replaces the default's.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    read: Option<Vec<PathBuf>>,
    write: Option<Vec<PathBuf>>,
    connect: Option<Vec<u16>>,
    best_effort: Option<bool>,
}

impl RawSandbox {
    /// `over`'s keys over these.
    fn merge(&self, over: &RawSandbox) -> RawSandbox {
        RawSandbox {
            read: over.read.clone().or_else(|| self.read.clone()),
            write: over.write.clone().or_else(|| self.write.clone()),
            connect: over.connect.clone().or_else(|| self.connect.clone()),
            best_effort: over.best_effort.or(self.best_effort),
        }
    }

    fn resolve(self) -> SandboxRules {
        SandboxRules {
            read: self.read.unwrap_or_default(),
            write: self.write.unwrap_or_default(),
            connect: self.connect.unwrap_or_default(),
            best_effort: self.best_effort.unwrap_or(false),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    #[expect(dead_code, reason = "read by li3g_client::config")]
    servers: Option<Servers>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_ca: Option<PathBuf>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_cert: Option<PathBuf>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_key: Option<PathBuf>,
    plugins: Option<RawPlugins>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    redis: Option<String>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    redis_tls_ca: Option<PathBuf>,
    metrics: Option<String>,
    metrics_token: Option<String>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    scheduler: Option<RawSchedulerSettings>,
    #[serde(default)]
    tasks: BTreeMap<String, RawTask>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[expect(dead_code, reason = "read by li3g_client::config")]
    servers: Option<Servers>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_ca: Option<PathBuf>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_cert: Option<PathBuf>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    tls_key: Option<PathBuf>,
    plugins: Option<RawPlugins>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    redis: Option<String>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    redis_tls_ca: Option<PathBuf>,
    metrics: Option<String>,
    metrics_token: Option<String>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    scheduler: Option<RawSchedulerSettings>,
    #[expect(dead_code, reason = "read by li3g_client::config")]
    environment: Option<String>,
    sandbox: Option<RawSandbox>,
    log_file: Option<PathBuf>,
    tls_listen: Option<String>,
    tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    tasks: BTreeMap<String, RawTask>,
    #[serde(default)]
    pools: BTreeMap<String, pools::RawPool>,
    #[serde(default)]
    environments: BTreeMap<String, RawOverride>,
}

/// Loads configuration `name` from `file` (see [`find`]) with `environment`'s overrides.
///
/// # Errors
/// [`ConfigError`] naming the file, the key and what was expected.
pub fn load(file: Option<&Path>, name: &str, environment: Option<&str>) -> Result<Config, ConfigError> {
    let Some(path) = file else {
        let target = li3g_client::config::load(None, name, environment)?;
        return resolve(target, RawConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(path, &text, name, environment)
}

/// Parses `text` (the contents of `path`) and resolves configuration `name`: the name, the
/// environment, the servers and Redis as a client reads them ([`li3g_client::config::parse`]),
/// then everything else, refusing unknown keys.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str, name: &str, environment: Option<&str>) -> Result<Config, ConfigError> {
    let mut all: BTreeMap<String, RawConfig> =
        toml::from_str(text).map_err(|err| ConfigError::Parse { path: path.into(), message: err.to_string() })?;
    let target = li3g_client::config::parse(path, text, name, environment)?;
    resolve(target, all.remove(name).unwrap_or_default())
}

fn resolve(target: Target, mut raw: RawConfig) -> Result<Config, ConfigError> {
    let Target { name, file, servers, servers_default, tls, redis, redis_key, scheduler, environment } = target;
    let (name, path) = (name.as_str(), file.as_deref());
    let invalid = |key: String, message: String| ConfigError::Invalid { path: path.map(Into::into), key, message };
    let mut plugin_setting_origins: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut plugins, mut state_timeout, mut optional_plugins, mut plugin_settings) =
        split_plugins(raw.plugins.take(), &format!("{name}.plugins"), &invalid)?;
    if let Some(env) = environment.as_deref() {
        if let Some(over) = raw.environments.remove(env) {
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
            raw.metrics = over.metrics.or(raw.metrics);
            raw.metrics_token = over.metrics_token.or(raw.metrics_token);
            raw.tasks.extend(over.tasks);
        }
    }
    let mut tasks = BTreeMap::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for (task, options) in raw.tasks {
        let key = |field: &str| format!("{name}.tasks.\"{task}\"{field}");
        let timeout = options.timeout.map(seconds).transpose().map_err(|err| invalid(key(".timeout"), err))?;
        let cpu_limit = options.cpu_limit.map(seconds).transpose().map_err(|err| invalid(key(".cpu_limit"), err))?;
        // Keys name tasks as jobs do: `Hello` is `Hello::run`, a leading `\` is ignored.
        let canonical = canonical_task_name(&task);
        if let Some(other) = keys.insert(canonical.clone(), task.clone()) {
            return Err(invalid(key(""), format!("names the same task as \"{other}\" ({canonical})")));
        }
        let sandbox = options.sandbox.map(|own| raw.sandbox.clone().unwrap_or_default().merge(&own).resolve());
        tasks.insert(canonical, TaskOptions { timeout, cpu_limit, sandbox });
    }
    // A URL that does not parse would make every scheduler exit at start, over and over:
    // refuse it here, for every command. (The message never shows the password.)
    let redis_kind = match redis.as_deref().map(crate::redis_target::RedisTarget::check_url) {
        Some(Err(err)) => return Err(invalid(redis_key, err.to_string())),
        Some(Ok(kind)) => Some(kind),
        None => None,
    };
    let pools = pools::resolve(name, std::mem::take(&mut raw.pools), &invalid)?;
    // A CA file that cannot be read fails every connection, and a worker then loses the
    // retries of failed jobs (a lasting error, not an outage): refuse it here, for every command.
    if let (Some(url), Some(ca)) = (redis.as_deref(), scheduler.tls_ca.as_deref()) {
        if let Err(err) = crate::redis_target::RedisTarget::from_url(url, Some(ca)) {
            return Err(invalid(format!("{redis_key}_tls_ca"), err.to_string()));
        }
    }
    // On a Cluster every script needs its keys in one slot: refuse what would fail every call.
    if redis_kind == Some(crate::redis_target::Kind::Cluster) {
        let keys = crate::scheduler::entries::Keys {
            prefix: scheduler.prefix.clone(),
            compat_set: scheduler.compat_set.clone(),
        };
        if let Err(err) = keys.check_one_slot(scheduler.compat) {
            return Err(invalid(format!("{name}.scheduler"), err.to_string()));
        }
    }
    Ok(Config {
        name: name.into(),
        scheduler,
        file,
        servers,
        servers_default,
        tls,
        plugins,
        sandbox: raw.sandbox.map(RawSandbox::resolve),
        redis,
        metrics: raw.metrics,
        metrics_token: raw.metrics_token,
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
        tls_listen: raw.tls_listen,
        tls_client_ca: raw.tls_client_ca,
    })
}

#[cfg(test)]
mod tests;
