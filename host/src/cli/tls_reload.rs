//! `restart` and the TLS files: what `start` gives the supervisor to run at each `restart`
//! (SIGHUP), before any worker is touched ([`crate::daemon::Options::before_restart`]).
//!
//! The TLS files for `tls://` servers (`tls_ca`, `tls_cert`, `tls_key`, or the flags that name
//! them) are read again, where the configuration names them now, and installed in the
//! supervisor, so every child forked after the restart connects with them: an operator who
//! rotates a CA or a certificate and runs `restart` gets the new one. A file that cannot be
//! used refuses the restart: the running workers keep the files they read, and the reason is
//! logged and reaches `li3g-host restart` through the scoreboard.
//!
//! Paths are read from the directory `start` ran in (a `--daemon` works from `/`), as they
//! were at start. A configuration file that cannot be read now keeps the file names read at
//! start (their contents are read again), as the workers keep the plugin settings read at
//! start then.

use super::{install_tls, Common};
use crate::config::Config;
use crate::log::Log;
use std::path::Path;

/// Reads the TLS files again and installs them (see the module's docs); `Err` says why the
/// restart is refused.
pub(super) fn reload(common: &Common, config: &Config, base: &Path, log: Log) -> Result<(), String> {
    let named = match &config.file {
        Some(file) => match crate::config::load(Some(file), &config.name, config.environment.as_deref()) {
            Ok(fresh) => fresh.tls,
            Err(err) => {
                log.daemon(&format!("Keeping the TLS file names read at start, reading them again: {err}"));
                config.tls.clone()
            }
        },
        None => config.tls.clone(),
    };
    let mut files = common.tls_files(named);
    for path in [&mut files.ca, &mut files.cert, &mut files.key].into_iter().flatten() {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    let fresh = Config { tls: files, ..config.clone() };
    install_tls(&fresh).map_err(|err| format!("TLS settings for tls:// servers: {err}"))
}
