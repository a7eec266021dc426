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
    /// Address to listen on in plaintext (port 0: any free port, printed on stderr; `off`: no
    /// plaintext listener). A non-loopback address needs --insecure-listen.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Open a listener that lets in whoever reaches it on a non-loopback address: plaintext
    /// (--listen), or TLS without --tls-client-ca (which only encrypts). Whoever reaches the
    /// port can submit and take every job, so only on a network where that is acceptable.
    #[arg(long)]
    insecure_listen: bool,
    /// Address of the TLS listener, beside the plaintext one (port 0: any free port); its
    /// certificate and key are --tls-cert and --tls-key. A non-loopback address needs
    /// --tls-client-ca (or --insecure-listen) [default: the configuration's `tls_listen`,
    /// `tls_cert`, `tls_key`, else no TLS listener]
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<String>,
    /// CA certificates (PEM) that must sign every TLS client's certificate: mutual TLS, the
    /// way to say who may submit and take jobs [default: the configuration's `tls_client_ca`]
    #[arg(long, value_name = "PATH")]
    tls_client_ca: Option<PathBuf>,
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
    // The configuration gives the TLS listener's settings the flags do not (and a broken file
    // is reported here as everywhere else).
    let config = args.common.settings(&args.name)?;
    let tls_listen = args.tls_listen.clone().or(config.tls_listen.clone());
    let client_ca = args.tls_client_ca.clone().or(config.tls_client_ca.clone());
    let bind =
        |addr: &str| std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"));
    // Every address is looked at before anything is bound: a refused listener is never open,
    // even briefly.
    let plain_addr = Some(args.listen.as_str()).filter(|addr| *addr != "off");
    if let Some(addr) = plain_addr {
        anyhow::ensure!(
            loopback_only(addr)? || args.insecure_listen,
            "refusing to listen on {addr} in plaintext: whoever reaches that port can submit and take every \
             job (run every task). Listen on loopback, use TLS (--tls-listen with --tls-cert, --tls-key and \
             --tls-client-ca), or say --insecure-listen"
        );
    }
    if let Some(addr) = &tls_listen {
        // TLS without client certificates only encrypts: it says nothing about who connects.
        anyhow::ensure!(
            client_ca.is_some() || loopback_only(addr)? || args.insecure_listen,
            "refusing to listen for TLS on {addr} without --tls-client-ca: TLS without client certificates \
             only encrypts, and whoever reaches that port can submit and take every job (run every task). Give \
             --tls-client-ca (or tls_client_ca) so that only clients with a certificate of that CA get in, \
             listen on loopback, or say --insecure-listen"
        );
    }
    let plain = plain_addr.map(bind).transpose()?;
    let tls = match (&tls_listen, &config.tls.cert, &config.tls.key) {
        (Some(addr), Some(cert), Some(key)) => {
            let config = crate::tls::server_config(cert, key, client_ca.as_deref())?;
            Some((bind(addr)?, config))
        }
        (Some(_), _, _) => anyhow::bail!("a TLS listener needs its certificate and key: --tls-cert and --tls-key"),
        (None, _, _) => None,
    };
    anyhow::ensure!(
        tls.is_some() || (args.common.tls_cert.is_none() && client_ca.is_none()),
        "--tls-cert and --tls-client-ca are the TLS listener's: they need --tls-listen (or tls_listen)"
    );
    anyhow::ensure!(plain.is_some() || tls.is_some(), "--listen off needs --tls-listen: nothing to listen on");
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
    let mut addrs = Vec::new();
    if let Some(listener) = &plain {
        addrs.push(listener.local_addr()?.to_string());
    }
    if let Some((listener, _)) = &tls {
        let mutual = if client_ca.is_some() { ", client certificates required" } else { "" };
        addrs.push(format!("tls://{} (TLS{mutual})", listener.local_addr()?));
    }
    // Listening only once the store is open: a store that cannot be opened fails here.
    let server = server::Server::open(server::Listeners { plain, tls }, options)?;
    eprintln!("li3g-host: job server listening on {} (store: {store})", addrs.join(" and "));
    server.serve(signals::wake_fd().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd)), &signals::stop_requested)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether every address `addr` names is a loopback one (`Err`: it names none).
fn loopback_only(addr: &str) -> anyhow::Result<bool> {
    let ips: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?
        .map(|a| a.ip())
        .collect();
    Ok(ips.iter().all(std::net::IpAddr::is_loopback))
}
