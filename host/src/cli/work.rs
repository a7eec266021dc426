//! `li3g-host work`: one worker in the foreground, for supervisor or systemd.

use super::{load_plugins, Common};
use crate::worker::{self, WorkerConfig};
use clap::Args;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub(super) struct WorkArgs {
    /// The named configuration in the configuration file.
    #[arg(value_name = "CONFIG", default_value = crate::config::DEFAULT_NAME)]
    name: String,
    #[command(flatten)]
    common: Common,
    /// Exit after this many jobs.
    #[arg(long, value_name = "N")]
    max_jobs: Option<u64>,
    /// Print connections and jobs to stderr.
    #[arg(long, short)]
    verbose: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT ask the worker to stop after the job in hand. No SA_RESTART, so a
/// sleeping `poll` returns at once.
fn install_stop_handlers() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub(super) fn run(args: &WorkArgs) -> anyhow::Result<ExitCode> {
    let config = args.common.settings(&args.name)?;
    let registry = load_plugins(&config)?;
    install_stop_handlers();
    let host = hostname();
    let config = WorkerConfig {
        servers: config.servers.clone(),
        environment: config.environment.clone().unwrap_or_default(),
        timeouts: config.tasks.iter().filter_map(|(task, o)| Some((task.clone(), o.timeout?))).collect(),
        client_id: format!("{host}:{}", std::process::id()),
        max_jobs: args.max_jobs,
        verbose: args.verbose,
    };
    let stats = worker::run(&registry, &config, &|| STOP.load(Ordering::SeqCst));
    if args.verbose {
        eprintln!("li3g-host[{}]: (Worker) Done: {} jobs completed, {} failed", std::process::id(), stats.completed, stats.failed);
    }
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
