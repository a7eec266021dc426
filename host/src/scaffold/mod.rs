//! `li3g-host new`: writes a plugin crate that builds where li3g is installed, with no checkout.
//!
//! The crate (from the templates next to this file): `Cargo.toml` (`cdylib` + `rlib`), a
//! `src/lib.rs` with one task with arguments, one with `&Job`, one with settings and state, and
//! tests using the test kit (`li3g_plugin_api::testing`), a README (build, list, exec, drop in,
//! roll out) and a `.gitignore`.
//!
//! The plugin API dependency resolves, in this order, to:
//! 1. the directory given (`--plugin-api DIR`, `LI3G_PLUGIN_API`);
//! 2. the source the Debian package installs, [`INSTALLED_API`];
//! 3. the source tree this binary was built from, when it is still there (`cargo install
//!    --path host` from a checkout);
//! 4. else the version on crates.io that this host loads (`li3g-plugin-api = "0.3.0"`).
//!
//! A path dependency also carries the version, so the crate keeps building once published.

use std::path::{Path, PathBuf};

/// Where the Debian package installs the plugin API's source.
pub const INSTALLED_API: &str = "/usr/share/li3g/plugin-api";

/// The plugin API version this host was built with (plugins must match its minor version).
pub const API_VERSION: &str = li3g_plugin_api::VERSION;

const CARGO_TOML: &str = include_str!("Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("lib.rs.tmpl");
const README: &str = include_str!("README.md.tmpl");
const GITIGNORE: &str = "/target\n";

/// Why a crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a usable crate name.
    #[error("{name:?} is not a crate name: use letters, digits, - and _, starting with a letter")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The directory exists and is not empty: nothing is overwritten.
    #[error("{}: already exists and is not empty; nothing was written", .0.display())]
    Exists(PathBuf),
    /// The plugin API directory given has no `Cargo.toml` of li3g-plugin-api.
    #[error("{}: not li3g-plugin-api's source (no Cargo.toml naming li3g-plugin-api)", .0.display())]
    NotTheApi(PathBuf),
    /// Writing failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the plugin API dependency points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// A directory holding its source.
    Path(PathBuf),
    /// The published version [`API_VERSION`] on crates.io.
    CratesIo,
}

impl ApiSource {
    /// Resolves it as the module docs say: `given`, [`INSTALLED_API`], the build's own tree,
    /// else crates.io.
    ///
    /// # Errors
    /// [`ScaffoldError::NotTheApi`] when `given` is not the plugin API's source.
    pub fn find(given: Option<&Path>) -> Result<ApiSource, ScaffoldError> {
        if let Some(dir) = given {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            return if is_api(&dir) { Ok(ApiSource::Path(dir)) } else { Err(ScaffoldError::NotTheApi(dir)) };
        }
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
        for dir in [PathBuf::from(INSTALLED_API), built_from] {
            if is_api(&dir) {
                return Ok(ApiSource::Path(dir.canonicalize().unwrap_or(dir)));
            }
        }
        Ok(ApiSource::CratesIo)
    }

    fn dependency(&self, features: &str) -> String {
        match self {
            ApiSource::Path(dir) => {
                let path = toml_string(&dir.display().to_string());
                format!("{{ path = {path}, version = \"{API_VERSION}\"{features} }}")
            }
            ApiSource::CratesIo => format!("{{ version = \"{API_VERSION}\"{features} }}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            ApiSource::Path(dir) if dir == Path::new(INSTALLED_API) => {
                "as installed by li3g's Debian package; once li3g-plugin-api is on crates.io, `version` alone does"
                    .to_string()
            }
            ApiSource::Path(_) => {
                "from its source; once li3g-plugin-api is on crates.io, `version` alone does".to_string()
            }
            ApiSource::CratesIo => "from crates.io".to_string(),
        }
    }
}

fn is_api(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|text| text.contains("name = \"li3g-plugin-api\""))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `my-tasks` → `MyTasks`: the task class.
fn class_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
}

/// Writes the crate `name` into `dir` (created; it must not exist or be empty). Returns the
/// files written.
///
/// # Errors
/// [`ScaffoldError`]: a bad name, a directory in the way, a write that failed.
pub fn write(name: &str, dir: &Path, api: &ApiSource) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName { name: name.into() });
    }
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let lib = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{crate}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{class}}", &class_name(name))
            .replace("{{api_version}}", API_VERSION)
            .replace("{{api_where}}", &api.describe())
            .replace("{{api_testing}}", &api.dependency(", features = [\"testing\"]"))
            .replace("{{api}}", &api.dependency(""))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        let parent = path.parent().expect("a file in the crate");
        std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write { path: parent.into(), source })?;
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(class_name("my-tasks"), "MyTasks");
        assert_eq!(class_name("reports_v2"), "ReportsV2");
        assert!(valid_name("my-tasks") && !valid_name("2x") && !valid_name("a b") && !valid_name("../x"));
    }

    #[test]
    fn the_manifest_is_toml_with_the_api_where_it_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let api = ApiSource::Path(PathBuf::from("/opt/li3g \"api\""));
        write("my-tasks", dir.path(), &api).unwrap();
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap()).unwrap();
        assert_eq!(manifest["dependencies"]["li3g-plugin-api"]["path"].as_str(), Some("/opt/li3g \"api\""));
        assert_eq!(manifest["dependencies"]["li3g-plugin-api"]["version"].as_str(), Some(API_VERSION));
        assert_eq!(manifest["dev-dependencies"]["li3g-plugin-api"]["features"][0].as_str(), Some("testing"));
        let lib = std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap();
        assert!(lib.contains("\"MyTasks::say\"(name, greeting) => say") && lib.contains("name: \"my_tasks\""));
        // Nothing is overwritten.
        assert!(matches!(write("my-tasks", dir.path(), &api), Err(ScaffoldError::Exists(_))));
        let crates_io = tempfile::tempdir().unwrap();
        write("x", crates_io.path(), &ApiSource::CratesIo).unwrap();
        let text = std::fs::read_to_string(crates_io.path().join("Cargo.toml")).unwrap();
        assert!(text.contains(&format!("li3g-plugin-api = {{ version = \"{API_VERSION}\" }}")), "{text}");
    }
}
