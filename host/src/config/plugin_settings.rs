//! The `plugins` key: a directory, or a table of `dir`, `state_timeout`, `optional` and one
//! settings section per plugin; and how an environment's plugin settings merge over the base's.

use super::{seconds, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `plugins = "DIR"`, or a table: `dir = "DIR"` and one table of settings per plugin.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a directory, or a table of `dir` and plugin settings sections")]
pub(super) enum RawPlugins {
    Dir(PathBuf),
    Table(BTreeMap<String, toml::Value>),
}

type Sections = BTreeMap<String, toml::Value>;

/// What a `plugins` table holds: the directory, the state constructors' timeout, the optional
/// plugins and the plugin settings sections.
type SplitPlugins = (Option<PathBuf>, Option<Duration>, Option<Vec<String>>, Sections);

/// The plugins directory, the state constructors' timeout, the optional plugins and the plugin
/// settings sections from `plugins`.
pub(super) fn split_plugins(
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
pub(super) fn merge(base: &mut toml::Value, over: toml::Value) {
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
