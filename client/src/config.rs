//! The named configuration's reader, the part of `li3g.toml` a client needs: where the file is,
//! which configuration a name selects, the environment's overrides, the job servers and the
//! Redis URL. li3g-host's full reader (`li3g_host::config`) is built on this one, so that a
//! service's [`Client::from_config`](crate::Client::from_config) reads the same file, the same
//! names and the same overrides as the daemon.
//!
//! ```toml
//! [default]
//! servers = ["127.0.0.1:4730", "gearman2"]   # host or host:port (default port 4730); or "a,b"
//!                                             # tls://host:port: TLS, verified with:
//! tls_ca = "/etc/li3g/ca.pem"                 # CAs for tls:// servers [default: the system's]
//! tls_cert = "/etc/li3g/client.pem"           # client certificate, for servers that demand one
//! tls_key = "/etc/li3g/client.key"            # its private key
//! redis = "redis://127.0.0.1:6379/0"          # where scheduled jobs wait
//! environment = "development"
//!
//! [default.environments.production]           # applied on top when the environment is production
//! servers = ["gearman1.internal", "gearman2.internal"]
//! ```
//!
//! Where it is read from: the file given (`--config PATH` or `LI3G_CONFIG`); otherwise
//! `li3g.toml` in the current directory, then `/etc/li3g/li3g.toml`; with neither, built-in
//! defaults (and only the configuration `default` exists). Keys this reader does not know are
//! left to the host's reader, which refuses unknown keys.

use crate::scheduler_settings::{RawSchedulerSettings, SchedulerSettings};
use li3g_protocol::conn::{AddrError, ServerAddr};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default configuration's name.
pub const DEFAULT_NAME: &str = "default";

/// Where the configuration file is looked for when none is given.
pub const SEARCH_PATH: [&str; 2] = ["li3g.toml", "/etc/li3g/li3g.toml"];

/// The environment variable naming the configuration file (as `--config`).
pub const CONFIG_VAR: &str = "LI3G_CONFIG";
/// The environment variable naming the environment (as `--environment`).
pub const ENVIRONMENT_VAR: &str = "LI3G_ENVIRONMENT";
/// The environment variable listing job servers over the configuration's (as `--servers`).
pub const SERVERS_VAR: &str = "LI3G_SERVERS";

/// The servers used when nothing configures them.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4730";

/// What a client needs of one named configuration, with the environment's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The configuration's name.
    pub name: String,
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
    /// Job servers (default `127.0.0.1:4730`).
    pub servers: Vec<ServerAddr>,
    /// Whether `servers` is the built-in default (nothing configured them).
    pub servers_default: bool,
    /// `tls_ca`, `tls_cert`, `tls_key`: the TLS files for every `tls://` server.
    pub tls: li3g_protocol::tls::ClientFiles,
    /// The Redis URL where scheduled jobs wait, when set.
    pub redis: Option<String>,
    /// The key `redis` came from (`default.redis`, `default.environments.production.redis`),
    /// for messages.
    pub redis_key: String,
    /// `[NAME.scheduler]`: the schedule's key prefix, li3_gearman's set, job status and its
    /// expiry, with `redis_tls_ca` (relative to the file) as its `tls_ca`: what a client that
    /// schedules in Redis shares with the scheduler.
    pub scheduler: SchedulerSettings,
    /// The environment, when set (given, else the configuration's `environment`).
    pub environment: Option<String>,
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

/// `servers`: a list, or one string of comma-separated addresses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    List(Vec<String>),
    Text(String),
}

/// The keys of one named configuration this reader uses; the others are the host's.
#[derive(Debug, Deserialize, Default)]
struct RawTarget {
    #[serde(flatten)]
    keys: RawKeys,
    environment: Option<String>,
    #[serde(default)]
    environments: BTreeMap<String, RawKeys>,
}

/// The keys this reader uses that a configuration and each of its environments
/// (`[NAME.environments.ENV]`) may give.
#[derive(Debug, Deserialize, Default)]
struct RawKeys {
    servers: Option<Servers>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    redis: Option<String>,
    redis_tls_ca: Option<PathBuf>,
    scheduler: Option<RawSchedulerSettings>,
}

impl RawKeys {
    /// These keys with an environment's over them: each it gives wins, and its scheduler
    /// settings are merged key by key.
    fn overlay(self, over: RawKeys) -> RawKeys {
        RawKeys {
            servers: over.servers.or(self.servers),
            tls_ca: over.tls_ca.or(self.tls_ca),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            redis: over.redis.or(self.redis),
            redis_tls_ca: over.redis_tls_ca.or(self.redis_tls_ca),
            scheduler: match over.scheduler {
                Some(over) => Some(self.scheduler.unwrap_or_default().merge(over)),
                None => self.scheduler,
            },
        }
    }
}

/// The file to read: the one given, or the first of [`SEARCH_PATH`] that exists.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    given.map(Path::to_path_buf).or_else(|| SEARCH_PATH.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// Configuration `name` as li3g-host reads it with no command-line flags: the file from
/// `LI3G_CONFIG` (else [`find`]'s search), the environment from `LI3G_ENVIRONMENT`, and the
/// servers of `LI3G_SERVERS` over the configured ones.
///
/// # Errors
/// [`ConfigError`] naming the file (or variable), the key and what was expected.
pub fn from_env(name: &str) -> Result<Target, ConfigError> {
    from_vars(name, |var| std::env::var(var).ok())
}

/// As [`from_env`], with the variables from `var` (for tests, and services that keep their
/// settings elsewhere).
///
/// # Errors
/// As [`from_env`].
pub fn from_vars(name: &str, var: impl Fn(&str) -> Option<String>) -> Result<Target, ConfigError> {
    let given = var(CONFIG_VAR).filter(|v| !v.is_empty()).map(PathBuf::from);
    let environment = var(ENVIRONMENT_VAR).filter(|v| !v.is_empty());
    let mut target = load(find(given.as_deref()).as_deref(), name, environment.as_deref())?;
    if let Some(list) = var(SERVERS_VAR) {
        target.servers = parse_server_list(&list).map_err(|message| ConfigError::Invalid {
            path: None,
            key: SERVERS_VAR.into(),
            message,
        })?;
        target.servers_default = false;
    }
    Ok(target)
}

/// Installs `target`'s TLS settings (`tls_ca`, `tls_cert`, `tls_key`) for every `tls://`
/// connection of this process, when it names a `tls://` server or TLS files; reads the files now.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the file that cannot be used.
pub fn install_tls(target: &Target) -> Result<(), ConfigError> {
    if target.servers.iter().any(|s| s.tls) || target.tls != li3g_protocol::tls::ClientFiles::default() {
        let config = li3g_protocol::tls::client_config(&target.tls).map_err(|err| ConfigError::Invalid {
            path: target.file.clone(),
            key: format!("{}.tls_ca/tls_cert/tls_key", target.name),
            message: err.to_string(),
        })?;
        li3g_protocol::transport::install_client_config(config);
    }
    Ok(())
}

/// A comma-separated list of servers, as `--servers` and `LI3G_SERVERS` take it (empty entries
/// are skipped).
///
/// # Errors
/// What is wrong with the first bad entry, or that the list is empty.
pub fn parse_server_list(list: &str) -> Result<Vec<ServerAddr>, String> {
    let servers = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e: AddrError| e.to_string()))
        .collect::<Result<Vec<ServerAddr>, String>>()?;
    if servers.is_empty() {
        return Err("no servers given".into());
    }
    Ok(servers)
}

/// Loads configuration `name` from `file` (see [`find`]) with `environment`'s overrides.
///
/// # Errors
/// [`ConfigError`] naming the file, the key and what was expected.
pub fn load(file: Option<&Path>, name: &str, environment: Option<&str>) -> Result<Target, ConfigError> {
    let Some(path) = file else {
        if name != DEFAULT_NAME {
            return Err(ConfigError::UnknownName {
                name: name.into(),
                file: format!("the built-in defaults (no {} found)", SEARCH_PATH.join(" or ")),
                known: vec![DEFAULT_NAME.into()],
            });
        }
        return resolve(None, name, RawTarget::default(), environment);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse(path, &text, name, environment)
}

/// Parses `text` (the contents of `path`) and resolves configuration `name`.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str, name: &str, environment: Option<&str>) -> Result<Target, ConfigError> {
    let mut all: BTreeMap<String, RawTarget> =
        toml::from_str(text).map_err(|err| ConfigError::Parse { path: path.into(), message: err.to_string() })?;
    let known: Vec<String> = all.keys().cloned().collect();
    let raw = match all.remove(name) {
        Some(raw) => raw,
        // A file that does not define `default` still has the built-in one.
        None if name == DEFAULT_NAME => RawTarget::default(),
        None => return Err(ConfigError::UnknownName { name: name.into(), file: path.display().to_string(), known }),
    };
    resolve(Some(path), name, raw, environment)
}

fn resolve(
    path: Option<&Path>,
    name: &str,
    mut raw: RawTarget,
    environment: Option<&str>,
) -> Result<Target, ConfigError> {
    let invalid = |key: String, message: String| ConfigError::Invalid { path: path.map(Into::into), key, message };
    let environment = environment.map(str::to_string).or(raw.environment.take());
    let mut servers_key = format!("{name}.servers");
    let mut redis_key = format!("{name}.redis");
    let mut keys = raw.keys;
    if let Some(env) = environment.as_deref() {
        if let Some(over) = raw.environments.remove(env) {
            if over.servers.is_some() {
                servers_key = format!("{name}.environments.{env}.servers");
            }
            if over.redis.is_some() {
                redis_key = format!("{name}.environments.{env}.redis");
            }
            keys = keys.overlay(over);
        }
    }
    let raw = keys;
    let mut scheduler = raw
        .scheduler
        .unwrap_or_default()
        .resolve()
        .map_err(|(key, message)| invalid(format!("{name}.{key}"), message))?;
    // Relative to the configuration file, as the plugins directory is.
    scheduler.tls_ca = raw.redis_tls_ca.map(|ca| match path.and_then(Path::parent) {
        Some(dir) if ca.is_relative() => dir.join(ca),
        _ => ca,
    });
    let servers_default = raw.servers.is_none();
    let entries: Vec<String> = match raw.servers {
        None => vec![DEFAULT_SERVER.into()],
        Some(Servers::List(list)) => list,
        Some(Servers::Text(text)) => text.split(',').map(str::to_string).collect(),
    };
    let mut servers = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let addr = entry.parse().map_err(|err| {
            invalid(format!("{servers_key}[{i}]"), format!("{err}; expected host, host:port or tls://host:port"))
        })?;
        servers.push(addr);
    }
    if servers.is_empty() {
        return Err(invalid(servers_key, "no servers; expected at least one host or host:port".into()));
    }
    Ok(Target {
        name: name.into(),
        file: path.map(Into::into),
        servers,
        servers_default,
        tls: li3g_protocol::tls::ClientFiles { ca: raw.tls_ca, cert: raw.tls_cert, key: raw.tls_key },
        redis: raw.redis,
        redis_key,
        scheduler,
        environment,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_overrides_servers_and_redis_and_other_keys_are_left_alone() {
        let text = r#"
            [default]
            servers = "a:1,b"
            redis = "redis://r/0"
            plugins.dir = "/x"
            [default.environments.production]
            servers = ["p:2"]
            [other]
            servers = ["o"]
        "#;
        let path = Path::new("li3g.toml");
        let base = parse(path, text, "default", None).unwrap();
        assert_eq!(base.servers, vec!["a:1".parse().unwrap(), "b".parse().unwrap()]);
        assert_eq!(base.redis.as_deref(), Some("redis://r/0"));
        let prod = parse(path, text, "default", Some("production")).unwrap();
        assert_eq!(prod.servers, vec!["p:2".parse().unwrap()]);
        assert_eq!(prod.redis_key, "default.redis");
        let err = parse(path, text, "nope", None).unwrap_err();
        assert_eq!(err.to_string(), "no configuration named \"nope\" in li3g.toml (it has: default, other)");
        let none = load(None, "default", None).unwrap();
        assert!(none.servers_default);
        assert_eq!(none.servers, vec![DEFAULT_SERVER.parse().unwrap()]);
    }

    #[test]
    fn server_lists() {
        assert_eq!(parse_server_list("a, b:5,").unwrap().len(), 2);
        assert_eq!(parse_server_list(" , ").unwrap_err(), "no servers given");
        assert!(parse_server_list("a:x").is_err());
    }
}
