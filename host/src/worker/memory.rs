//! The worker's own memory, from `/proc`: what `--memlimit` compares without `--atomic`.

use super::{WorkerConfig, WorkerStats};
use log::info;

/// This process's resident memory in bytes, from `/proc/self/statm`.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * u64::try_from(page).ok()?)
}

/// Without `--atomic`, a worker whose memory passed the limit ends after its job.
pub(super) fn check_memory(config: &WorkerConfig, stats: &mut WorkerStats) {
    if config.atomic {
        return;
    }
    if let (Some(limit), Some(rss)) = (config.memlimit, config.memlimit.and_then(|_| resident_memory())) {
        if let Some(slot) = crate::scoreboard::current::own() {
            slot.rss(rss);
        }
        if rss > limit {
            info!("Resident memory {rss} bytes exceeds the limit of {limit}; exiting to be replaced");
            stats.over_memory = true;
        }
    }
}
