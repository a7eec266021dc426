//! Where plugins are looked for when no directory is configured, and the example plugin
//! linked into the binary.
//!
//! The plugins directory is, in this order: the configuration's (`--plugins`, `LI3G_PLUGINS`,
//! `plugins`/`plugins.dir` in the file); [`SYSTEM_DIR`] when it exists (the Debian package puts
//! the example plugin there); the directory of the `li3g-host` executable (where `cargo build`
//! puts the example plugins). `cargo install` installs the binary alone, no `.so`: so in the
//! executable's directory, when no file there serves the example's tasks, the example plugin
//! linked into the binary (`plugins/hello`, the default `example-plugin` feature) serves them,
//! listed as [`EXAMPLE_PATH`].

use std::path::{Path, PathBuf};

/// The system plugins directory, the second place looked at.
pub const SYSTEM_DIR: &str = "/usr/lib/li3g/plugins";

/// How the linked-in example plugin is listed in place of a file.
pub const EXAMPLE_PATH: &str = "built into li3g-host";

/// A task of the example plugin: when a file serves it, the linked-in copy is not used.
pub const EXAMPLE_TASK: &str = "Hello::say";

/// The plugins directory when none is configured: [`SYSTEM_DIR`] if it is a directory, else
/// the executable's own directory.
///
/// # Errors
/// When the executable's path cannot be found.
pub fn default_dir() -> std::io::Result<PathBuf> {
    let system = Path::new(SYSTEM_DIR);
    if system.is_dir() {
        return Ok(system.to_path_buf());
    }
    executable_dir()
}

/// The directory of the running executable.
///
/// # Errors
/// When the executable's path cannot be found.
pub fn executable_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other(format!("{} has no parent directory", exe.display())))
}

/// The linked-in example plugin, when `dir` is the executable's directory (and the binary was
/// built with it).
pub fn example_for(dir: &Path) -> Option<li3g_plugin_api::PluginEntry> {
    let exe_dir = executable_dir().ok()?.canonicalize().ok()?;
    if dir.canonicalize().ok()? != exe_dir {
        return None;
    }
    example()
}

#[cfg(feature = "example-plugin")]
fn example() -> Option<li3g_plugin_api::PluginEntry> {
    Some(hello::LI3G_PLUGIN)
}

#[cfg(not(feature = "example-plugin"))]
fn example() -> Option<li3g_plugin_api::PluginEntry> {
    None
}
