//! The scoreboard: what every process of a running daemon is doing, shared without a message.
//!
//! The shape is Apache httpd's prefork scoreboard (`include/scoreboard.h`): the supervisor
//! creates one file-backed shared mapping before it forks anything, every child inherits it,
//! and each child writes only its own [`Slot`]. `li3g-host status`, the monitor and tests map
//! the same file read-only and take consistent copies ([`Snapshot`]). Updating it is stores
//! into memory: no system call, so a worker can say what it does on every job.
//!
//! Layout (all `#[repr(C)]`, plain atomics, fixed-size text, never a pointer, since each
//! process maps the file at its own address):
//! - [`Header`]: magic, layout version and slot count (a reader refuses a file of another
//!   layout), the supervisor's PID and start time, the generation (bumped by `restart`), the
//!   configuration file, the restarts per child kind and reason, and the `restart`s refused
//!   with the last reason. Written by the supervisor.
//! - the failure ring: the last [`FAILURES`] job failures of any child, each entry under its own
//!   sequence counter; a writer claims an entry with one `fetch_add`.
//! - the slots: one per child, under a sequence counter (a seqlock): the writer makes it odd,
//!   stores, makes it even; a reader retries a copy taken while it was odd or changed. So a
//!   reader never shows a torn job name.
//!
//! Why hand-written: the crates that share memory between processes (`shared_memory`,
//! `memmap2` + `bytemuck`) give a byte region and leave the layout, the seqlock and the
//! version check to the caller, which is all this module is.
//!
//! Must not: allocate or call the kernel on the writer's paths ([`SlotWriter`],
//! [`Scoreboard::record_failure`]); hold a pointer into the mapping in the mapped data.

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod current;
mod snapshot;
#[cfg(test)]
mod tests;
mod writer;

pub use snapshot::*;
pub use writer::SlotWriter;

/// The first bytes of a scoreboard file.
pub const MAGIC: [u8; 8] = *b"li3g-scb";
/// The layout's version: a reader refuses another.
pub const VERSION: u32 = 3;
/// How many failures the ring keeps.
pub const FAILURES: usize = 100;
/// How many tasks a slot keeps counters for (more are counted under the last entry, `*`).
pub const TASKS: usize = 32;
/// How many plugins a slot lists.
pub const PLUGINS: usize = 16;
/// Upper bounds (seconds) of the job duration histogram's buckets; a last bucket counts the rest.
pub const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0];
/// Child kinds the header counts restarts for, indexed by [`Kind`].
pub const KINDS: usize = 5;
/// Restart reasons, indexed by [`RestartReason`].
pub const REASONS: usize = 3;

/// Fixed-size text in the mapping: `N` bytes, NUL-padded, cut at a character boundary.
#[repr(C)]
pub struct Text<const N: usize>(pub(crate) [AtomicU8; N]);

impl<const N: usize> Text<N> {
    pub(crate) fn set(&self, s: &str) {
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &s.as_bytes()[..end];
        for (i, cell) in self.0.iter().enumerate() {
            cell.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().map(|b| b.load(Ordering::Relaxed)).take_while(|&b| b != 0).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The supervisor's part, at the start of the file.
#[repr(C)]
pub struct Header {
    pub(crate) magic: [AtomicU8; 8],
    pub(crate) version: AtomicU32,
    pub(crate) slots: AtomicU32,
    pub(crate) supervisor_pid: AtomicU32,
    pub(crate) _pad: AtomicU32,
    pub(crate) started_ms: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) config: Text<256>,
    pub(crate) version_text: Text<32>,
    pub(crate) restarts: [[AtomicU64; REASONS]; KINDS],
    pub(crate) failures_next: AtomicU64,
    /// The task counters of children that ended, folded in by the supervisor when it frees
    /// their slots ([`Scoreboard::retire`]): so a total over the board never goes down when a
    /// worker is recycled (a Prometheus counter must not).
    pub(crate) retired: [TaskCounters; TASKS],
    /// How many `restart`s the supervisor refused (a TLS file it could not use), and why the
    /// last one was: what `li3g-host restart` waits for besides a new generation.
    pub(crate) restarts_refused: AtomicU64,
    pub(crate) refusal: Text<256>,
}

/// One job's counters for one task.
#[repr(C)]
pub struct TaskCounters {
    pub(crate) name: Text<64>,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) duration_us: AtomicU64,
    pub(crate) buckets: [AtomicU64; BUCKETS.len() + 1],
    pub(crate) cpu_us: AtomicU64,
    pub(crate) max_rss_bytes: AtomicU64,
}

#[repr(C)]
pub(crate) struct PluginEntry {
    pub(crate) name: Text<48>,
    pub(crate) version: Text<16>,
}

/// One child's part, written by that child only.
#[repr(C)]
pub struct Slot {
    pub(crate) seq: AtomicU64,
    pub(crate) kind: AtomicU32,
    pub(crate) number: AtomicU32,
    pub(crate) pid: AtomicU32,
    pub(crate) state: AtomicU32,
    pub(crate) generation: AtomicU64,
    pub(crate) since_ms: AtomicU64,
    /// The worker pool (`[NAME.pools.POOL]`); empty for the default pool and other kinds.
    pub(crate) pool: Text<64>,
    pub(crate) job_task: Text<64>,
    pub(crate) job_id: Text<64>,
    pub(crate) job_handle: Text<64>,
    pub(crate) job_server: Text<64>,
    pub(crate) job_started_ms: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) rss_bytes: AtomicU64,
    pub(crate) last_failure: Text<256>,
    pub(crate) tasks: [TaskCounters; TASKS],
    pub(crate) plugins: [PluginEntry; PLUGINS],
}

#[repr(C)]
pub(crate) struct FailureEntry {
    pub(crate) seq: AtomicU64,
    pub(crate) at_ms: AtomicU64,
    pub(crate) signal: AtomicU32,
    pub(crate) _pad: AtomicU32,
    pub(crate) task: Text<64>,
    pub(crate) id: Text<64>,
    pub(crate) handle: Text<64>,
    pub(crate) server: Text<64>,
    pub(crate) message: Text<256>,
}

/// Why a scoreboard file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScoreboardError {
    /// The file cannot be opened or mapped.
    #[error("cannot open the scoreboard {0}: {1}")]
    Open(PathBuf, #[source] io::Error),
    /// The file is not a scoreboard of this layout.
    #[error("{0} is not a li3g scoreboard (another file, or a daemon of another version)")]
    Layout(PathBuf),
}

/// A mapped scoreboard: the supervisor's (read-write, created) or a reader's (read-only).
pub struct Scoreboard {
    base: NonNull<u8>,
    len: usize,
    slots: u32,
    writable: bool,
}

// SAFETY: the mapping is only reached through atomics, which are Sync; the pointer is owned.
unsafe impl Send for Scoreboard {}
// SAFETY: as above: every access to the mapped memory is an atomic operation.
unsafe impl Sync for Scoreboard {}

const HEADER_SIZE: usize = align(std::mem::size_of::<Header>());
const FAILURE_SIZE: usize = std::mem::size_of::<FailureEntry>();
const SLOT_SIZE: usize = align(std::mem::size_of::<Slot>());

const fn align(n: usize) -> usize {
    (n + 63) & !63
}

fn size_for(slots: u32) -> usize {
    HEADER_SIZE + align(FAILURE_SIZE * FAILURES) + SLOT_SIZE * slots as usize
}

/// Milliseconds since the epoch (a vDSO call, not a system call).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The scoreboard file that goes with a PID file: `li3g-host.pid` -> `li3g-host.scoreboard`.
pub fn path_for(pid_file: &Path) -> PathBuf {
    pid_file.with_extension("scoreboard")
}

impl Scoreboard {
    /// Creates the file at `path` afresh with room for `slots` children, mode 0640 and owned
    /// by this process, and maps it shared: children forked afterwards write into it.
    ///
    /// A file left at `path` (a daemon that was killed) is removed first and a new one made
    /// with `O_CREAT | O_EXCL | O_NOFOLLOW`: reusing it would keep its mode and owner (a 0666
    /// file left there would stay world-writable), and `O_EXCL` fails if anything took the path
    /// between the unlink and the create. A symbolic link at `path` is refused (left as it is).
    ///
    /// # Errors
    /// The path is a symbolic link; the file cannot be removed, created, sized or mapped.
    pub fn create(path: &Path, slots: u32, config: &str) -> io::Result<Scoreboard> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a symbolic link; refusing to use it as the scoreboard", path.display()),
                ))
            }
            Ok(_) => std::fs::remove_file(path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        // The umask may have taken bits off; 0640 whatever it is (never more: group-readable
        // for a monitoring user, written by this daemon's user only).
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
        let len = size_for(slots);
        file.set_len(len as u64)?;
        let board = Self::map(&file, len, slots, true)?;
        let header = board.header();
        for (cell, byte) in header.magic.iter().zip(MAGIC) {
            cell.store(byte, Ordering::Relaxed);
        }
        header.version.store(VERSION, Ordering::Relaxed);
        header.slots.store(slots, Ordering::Relaxed);
        header.supervisor_pid.store(std::process::id(), Ordering::Relaxed);
        header.started_ms.store(now_ms(), Ordering::Relaxed);
        header.config.set(config);
        header.version_text.set(env!("CARGO_PKG_VERSION"));
        fence(Ordering::Release);
        Ok(board)
    }

    /// Maps an existing scoreboard read-only and checks its layout.
    ///
    /// # Errors
    /// [`ScoreboardError::Open`] when the file cannot be read, [`ScoreboardError::Layout`] when it
    /// is not a scoreboard of this layout.
    pub fn open(path: &Path) -> Result<Scoreboard, ScoreboardError> {
        let open = || -> io::Result<(File, usize)> {
            let file = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(path)?;
            let len = file.metadata()?.len() as usize;
            Ok((file, len))
        };
        let (file, len) = open().map_err(|e| ScoreboardError::Open(path.into(), e))?;
        if len < HEADER_SIZE {
            return Err(ScoreboardError::Layout(path.into()));
        }
        let probe = Self::map(&file, HEADER_SIZE, 0, false).map_err(|e| ScoreboardError::Open(path.into(), e))?;
        let header = probe.header();
        let magic: Vec<u8> = header.magic.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let slots = header.slots.load(Ordering::Relaxed);
        if magic != MAGIC || header.version.load(Ordering::Relaxed) != VERSION || size_for(slots) != len {
            return Err(ScoreboardError::Layout(path.into()));
        }
        drop(probe);
        Self::map(&file, len, slots, false).map_err(|e| ScoreboardError::Open(path.into(), e))
    }

    fn map(file: &File, len: usize, slots: u32, writable: bool) -> io::Result<Scoreboard> {
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        let length = NonZeroUsize::new(len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh shared mapping of a file we opened; nothing else aliases it in this
        // process, and it is unmapped only in Drop.
        let base = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, file, 0) }?;
        Ok(Scoreboard { base: base.cast(), len, slots, writable })
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE long, page-aligned, and Header is made of
        // atomics only, for which any bit pattern (zeroes included) is valid.
        unsafe { &*(self.base.as_ptr() as *const Header) }
    }

    fn failure(&self, i: usize) -> &FailureEntry {
        assert!(i < FAILURES);
        // SAFETY: within the ring, which follows the header; FailureEntry is atomics only.
        unsafe { &*(self.base.as_ptr().add(HEADER_SIZE + i * FAILURE_SIZE) as *const FailureEntry) }
    }

    pub(crate) fn slot_ref(&self, i: u32) -> Option<&Slot> {
        if i >= self.slots {
            return None;
        }
        let offset = HEADER_SIZE + align(FAILURE_SIZE * FAILURES) + SLOT_SIZE * i as usize;
        // SAFETY: offset + SLOT_SIZE <= len (size_for); 64-byte aligned; Slot is atomics only.
        Some(unsafe { &*(self.base.as_ptr().add(offset) as *const Slot) })
    }

    /// How many slots it has.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The writer of slot `i`, for the child that has it (or the supervisor, before the fork).
    /// `None` for a read-only mapping or a slot out of range.
    pub fn writer(&self, i: u32) -> Option<SlotWriter<'_>> {
        if !self.writable {
            return None;
        }
        self.slot_ref(i).map(SlotWriter::new)
    }

    /// The current generation (bumped by every `restart`).
    pub fn generation(&self) -> u64 {
        self.header().generation.load(Ordering::Relaxed)
    }

    /// Starts a new generation (`restart`).
    pub fn next_generation(&self) -> u64 {
        self.header().generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records a refused `restart` and why (the supervisor): the count goes up after the
    /// reason is written, so a reader that sees the new count reads its reason.
    pub fn refuse_restart(&self, why: &str) {
        if self.writable {
            let header = self.header();
            header.refusal.set(why);
            header.restarts_refused.fetch_add(1, Ordering::Release);
        }
    }

    /// How many `restart`s were refused, and the last one's reason.
    pub fn restarts_refused(&self) -> (u64, String) {
        let header = self.header();
        let count = header.restarts_refused.load(Ordering::Acquire);
        (count, header.refusal.get())
    }

    /// Counts a replaced child.
    pub fn count_restart(&self, kind: Kind, reason: RestartReason) {
        if self.writable {
            self.header().restarts[kind as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Folds slot `i`'s task counters into the header's retired totals (the supervisor, after
    /// it reaped the slot's child and before the slot is reused; one writer). No system call.
    pub fn retire(&self, i: u32) {
        let Some(slot) = self.slot_ref(i).filter(|_| self.writable) else { return };
        let retired = &self.header().retired;
        // A pool's counters are kept apart (`pool TAB task`), so that each (pool, task) total
        // stays whole; the default pool's under the task's name alone.
        let pool = slot.pool.get();
        for t in slot.tasks.iter().filter(|t| !t.name_is("")) {
            let name = if pool.is_empty() { t.name.get() } else { format!("{pool}\t{}", t.name.get()) };
            let Some(sum) = retired
                .iter()
                .find(|r| r.name_is(&name))
                .or_else(|| retired.iter().find(|r| r.name_is("")))
                .or_else(|| retired.last())
            else {
                continue;
            };
            if sum.name_is("") {
                sum.name.set(&name);
            } else if !sum.name_is(&name) {
                sum.name.set("*");
            }
            for (to, from) in [
                (&sum.completed, &t.completed),
                (&sum.failed, &t.failed),
                (&sum.duration_us, &t.duration_us),
                (&sum.cpu_us, &t.cpu_us),
            ] {
                // Taken with a swap: a second retire of the same slot adds nothing.
                to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            }
            for (to, from) in sum.buckets.iter().zip(&t.buckets) {
                to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            }
            sum.max_rss_bytes.fetch_max(t.max_rss_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Appends a failure to the ring (any child may; no system call).
    pub fn record_failure(&self, failure: &Failure) {
        if !self.writable {
            return;
        }
        let n = self.header().failures_next.fetch_add(1, Ordering::AcqRel);
        let entry = self.failure((n % FAILURES as u64) as usize);
        let seq = entry.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        entry.at_ms.store(failure.at_ms, Ordering::Relaxed);
        entry.signal.store(failure.signal.unwrap_or(0) as u32, Ordering::Relaxed);
        entry.task.set(&failure.task);
        entry.id.set(&failure.id);
        entry.handle.set(&failure.handle);
        entry.server.set(&failure.server);
        entry.message.set(&failure.message);
        fence(Ordering::Release);
        entry.seq.store(seq + 2 - (seq & 1), Ordering::Release);
    }

    /// A consistent copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        let header = self.header();
        let mut restarts = Vec::new();
        for kind in [Kind::Worker, Kind::Scheduler, Kind::JobServer, Kind::Monitor] {
            for (reason, name) in [(0, "recycled"), (1, "crashed"), (2, "killed")] {
                restarts.push(Restarts {
                    kind,
                    reason: name,
                    count: header.restarts[kind as usize][reason].load(Ordering::Relaxed),
                });
            }
        }
        let next = header.failures_next.load(Ordering::Acquire);
        let first = next.saturating_sub(FAILURES as u64);
        let failures = (first..next).rev().filter_map(|n| self.read_failure((n % FAILURES as u64) as usize)).collect();
        Snapshot {
            supervisor_pid: header.supervisor_pid.load(Ordering::Relaxed),
            started_ms: header.started_ms.load(Ordering::Relaxed),
            generation: header.generation.load(Ordering::Relaxed),
            config: header.config.get(),
            version: header.version_text.get(),
            restarts,
            children: (0..self.slots).filter_map(|i| self.read_slot(i)).filter(|c| c.kind != Kind::Free).collect(),
            failures,
            retired: header.retired.iter().map(task_snapshot).filter(|t| !t.name.is_empty()).collect(),
        }
    }

    fn read_failure(&self, i: usize) -> Option<Failure> {
        let entry = self.failure(i);
        seqlock_read(&entry.seq, || Failure {
            at_ms: entry.at_ms.load(Ordering::Relaxed),
            signal: match entry.signal.load(Ordering::Relaxed) {
                0 => None,
                s => Some(s as i32),
            },
            task: entry.task.get(),
            id: entry.id.get(),
            handle: entry.handle.get(),
            server: entry.server.get(),
            message: entry.message.get(),
        })
        .filter(|f| f.at_ms != 0)
    }

    /// A consistent copy of slot `i`.
    pub fn read_slot(&self, i: u32) -> Option<ChildSnapshot> {
        let slot = self.slot_ref(i)?;
        seqlock_read(&slot.seq, || {
            let state = State::from_u32(slot.state.load(Ordering::Relaxed));
            let job = (state == State::Busy).then(|| JobInHand {
                task: slot.job_task.get(),
                id: slot.job_id.get(),
                handle: slot.job_handle.get(),
                server: slot.job_server.get(),
                started_ms: slot.job_started_ms.load(Ordering::Relaxed),
            });
            ChildSnapshot {
                slot: i,
                kind: Kind::from_u32(slot.kind.load(Ordering::Relaxed)),
                number: slot.number.load(Ordering::Relaxed),
                pool: Some(slot.pool.get()).filter(|p| !p.is_empty()),
                pid: slot.pid.load(Ordering::Relaxed),
                state,
                generation: slot.generation.load(Ordering::Relaxed),
                since_ms: slot.since_ms.load(Ordering::Relaxed),
                job,
                completed: slot.completed.load(Ordering::Relaxed),
                failed: slot.failed.load(Ordering::Relaxed),
                rss_bytes: slot.rss_bytes.load(Ordering::Relaxed),
                last_failure: Some(slot.last_failure.get()).filter(|s| !s.is_empty()),
                tasks: slot.tasks.iter().map(task_snapshot).filter(|t| !t.name.is_empty()).collect(),
                plugins: slot
                    .plugins
                    .iter()
                    .map(|p| (p.name.get(), p.version.get()))
                    .filter(|(name, _)| !name.is_empty())
                    .collect(),
            }
        })
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in `map`, unmapped once, here.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// Copies under a sequence counter: retried while a writer is inside (odd) or was during the
/// copy (changed). Gives up after many tries (a writer that died mid-write leaves it odd).
fn task_snapshot(t: &TaskCounters) -> TaskSnapshot {
    TaskSnapshot {
        name: t.name.get(),
        completed: t.completed.load(Ordering::Relaxed),
        failed: t.failed.load(Ordering::Relaxed),
        duration_seconds: t.duration_us.load(Ordering::Relaxed) as f64 / 1e6,
        buckets: t.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        cpu_seconds: t.cpu_us.load(Ordering::Relaxed) as f64 / 1e6,
        max_rss_bytes: t.max_rss_bytes.load(Ordering::Relaxed),
    }
}

fn seqlock_read<T>(seq: &AtomicU64, copy: impl Fn() -> T) -> Option<T> {
    for _ in 0..10_000 {
        let before = seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let value = copy();
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == before {
            return Some(value);
        }
    }
    None
}
