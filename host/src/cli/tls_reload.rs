//! `restart` and the TLS files: what `start` gives the supervisor to run at each `restart`
//! (SIGHUP), before any worker is touched ([`crate::daemon::Options::before_restart`]).
//!
//! The TLS files for `tls://` servers (`tls_ca`, `tls_cert`, `tls_key`, or the flags that name
//! them) are read again, where the configuration names them now, and installed in the
//! supervisor, so every child forked after the restart connects with them: an operator who
//! rotates a CA or a certificate and runs `restart` gets the new one. A file that cannot be
//! used refuses the restart: the running workers keep the files they read, and the reason is
//! logged and reaches `li3g-host restart` through the scoreboard. So do files that parse but
//! that a `tls://` server, which takes the files in use, refuses (a CA that did not sign its
//! certificate, a client certificate it does not accept): each such server is asked once
//! ([`super::tls_probe`]) before the workers are replaced by ones that could not reach it.
//!
//! `redis_tls_ca` (for `rediss://`) is checked too: the scheduler and the workers forked after
//! the restart read it, so one that cannot be used refuses the restart as well.
//!
//! Paths are read from the directory `start` ran in (a `--daemon` works from `/`), as they
//! were at start. A configuration file that cannot be read now keeps the file names read at
//! start (their contents are read again), as the workers keep the plugin settings read at
//! start then.

use super::Common;
use crate::config::Config;
use crate::log::Log;
use std::path::Path;

/// Reads the TLS files again and installs them (see the module's docs); `Err` says why the
/// restart is refused.
pub(super) fn reload(common: &Common, config: &Config, base: &Path, log: Log) -> Result<(), String> {
    // Redis' CA: read by every scheduler and worker forked after the restart, from the path
    // read at start (absolute).
    if let Some(ca) = &config.scheduler.tls_ca {
        crate::tls::read_certs(ca).map_err(|err| format!("redis_tls_ca: {err}"))?;
    }
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
    if config.servers.iter().any(|s| s.tls) || files != crate::tls::ClientFiles::default() {
        let tls = crate::tls::client_config(&files).map_err(|err| format!("TLS settings for tls:// servers: {err}"))?;
        lost_server(config, &tls)?;
        li3g_protocol::transport::install_client_config(tls);
    }
    Ok(())
}

/// `Err` when a `tls://` server that takes the files installed now refuses the new ones
/// (checked by [`super::tls_probe`]): restarting would trade workers that reach it for ones
/// that cannot. A server that refuses both, or cannot be asked, is no reason to refuse.
fn lost_server(config: &Config, fresh: &std::sync::Arc<rustls::ClientConfig>) -> Result<(), String> {
    for server in config.servers.iter().filter(|s| s.tls) {
        let Some(why) = super::tls_probe::refusal(server, fresh) else { continue };
        let now = li3g_protocol::transport::client_config().ok();
        if now.is_some_and(|now| super::tls_probe::refusal(server, &now).is_none()) {
            return Err(format!("{server} refuses the new TLS files ({why}), and takes the ones the workers use now"));
        }
    }
    Ok(())
}
