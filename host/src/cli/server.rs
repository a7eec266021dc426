//! `li3g-host server`: the embedded Gearman job server in the foreground (see [`crate::server`]).

use super::Common;
use crate::server::{self, Options};
use crate::signals;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the server listens unless told otherwise: gearmand's port, loopback only.
pub(crate) const DEFAULT_LISTEN: &str = crate::daemon::EMBEDDED_LISTEN;

#[derive(Debug, Args)]
pub(super) struct ServerArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
    /// SQLite file keeping background and scheduled jobs across restarts [default: in memory only]
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// Runs of a job whose worker vanishes mid-job before it is failed (as gearmand's flag: N runs; 0: no limit).
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_JOB_RETRIES)]
    job_retries: u32,
    #[command(flatten)]
    common: Common,
}

pub(super) fn run(args: &ServerArgs) -> anyhow::Result<ExitCode> {
    // The configuration is read so that a broken file is reported here as everywhere else.
    args.common.settings(&args.name)?;
    let listener = std::net::TcpListener::bind(&args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let options = Options {
        store: args.store.clone(),
        job_retries: args.job_retries,
        host: crate::process::hostname(),
        ..Options::default()
    };
    signals::install_server();
    let store = match &options.store {
        Some(path) => path.display().to_string(),
        None => "none, jobs in memory".into(),
    };
    let addr = listener.local_addr()?;
    // Listening only once the store is open: a store that cannot be opened fails here.
    let server = server::Server::open(listener, options)?;
    eprintln!("li3g-host: job server listening on {addr} (store: {store})");
    server.serve(signals::wake_fd().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)), &signals::stop_requested)?;
    Ok(ExitCode::SUCCESS)
}
