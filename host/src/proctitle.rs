//! Process titles: `li3g-host: worker 2 busy Report::build` in `ps`, `li3g-host: scheduler`,
//! `li3g-host: job server`, `li3g-host: monitor`, as PostgreSQL shows its backends.
//!
//! Two places hold what `ps` and `top` show: the kernel's short name (`comm`, 15 bytes, what
//! `top` and `ps -o comm` print), set once per child with `prctl(PR_SET_NAME)` ([`set`]); and the
//! command line (`/proc/PID/cmdline`, what `ps -f` and `ps -o args` print), which is this
//! process's own argv memory: [`set`] finds it once (`arg_start`/`arg_end` in
//! `/proc/self/stat`) and writes the title over it, NUL-padded. The per-job updates
//! ([`busy`], [`idle`]) only store bytes into that memory: no system call, so they can run on
//! every job (`comm` keeps the kind and number; it would cost a `prctl` per job).
//!
//! The title never grows past the original command line's length (it is cut there): the
//! environment that follows it in memory is left alone.
//!
//! Must not: call the kernel in [`busy`] or [`idle`]; write past the argv area.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The argv area: start address and length (0: not found, titles are off).
static START: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// How many bytes of the area the fixed prefix (`li3g-host: worker 2 `) takes.
static PREFIX: AtomicUsize = AtomicUsize::new(0);
/// How many bytes the last title took (what the next one must clear beyond its own end).
static USED: AtomicUsize = AtomicUsize::new(0);

/// The argv area from `/proc/self/stat` (fields 48 and 49, `arg_start` and `arg_end`).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses, fields start at 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (end > start && start != 0).then_some((start, end - start))
}

fn area() -> Option<&'static mut [u8]> {
    let (start, len) = (START.load(Ordering::Relaxed), LEN.load(Ordering::Relaxed));
    if start == 0 || len < 2 {
        return None;
    }
    // SAFETY: [start, start+len) is this process's argv area (from the kernel's own record of
    // it), mapped writable on the stack for the life of the process; only this module writes
    // it after start-up, from one thread (children are single-threaded when they set titles).
    Some(unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) })
}

/// Writes `parts` at `offset`, cut before the area's last byte (kept NUL), and clears what a
/// longer previous title left.
fn write_at(offset: usize, parts: &[&[u8]]) {
    let Some(area) = area() else { return };
    let room = area.len() - 1;
    let mut at = offset.min(room);
    for part in parts {
        let n = part.len().min(room - at);
        area[at..at + n].copy_from_slice(&part[..n]);
        at += n;
    }
    let used = USED.load(Ordering::Relaxed).max(at);
    let end = used.min(area.len());
    area[at..end].fill(0);
    USED.store(at, Ordering::Relaxed);
}

/// In a freshly forked child: names it `li3g-host: KIND[ NUMBER]` (`comm`: `li3g KIND[ N]`),
/// and for a worker the state, `idle`, after it. One `prctl` and one read of `/proc`, once.
pub fn set(kind: &str, number: Option<u32>) {
    if START.load(Ordering::Relaxed) == 0 {
        if let Some((start, len)) = argv_area() {
            START.store(start, Ordering::Relaxed);
            LEN.store(len, Ordering::Relaxed);
            USED.store(len, Ordering::Relaxed);
        }
    }
    let name = match number {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    };
    let comm = format!("li3g {name}");
    let mut short = comm.as_str();
    while short.len() > 15 {
        short = &short[..short.len() - 1];
    }
    if let Ok(c) = std::ffi::CString::new(short) {
        let _ = nix::sys::prctl::set_name(&c);
    }
    let prefix = format!("li3g-host: {name}");
    write_at(0, &[prefix.as_bytes()]);
    PREFIX.store(prefix.len() + 1, Ordering::Relaxed);
    if number.is_some() {
        idle();
    }
}

/// The worker took a job of `task`: `... busy TASK`. Stores into memory only.
pub fn busy(task: &str) {
    if PREFIX.load(Ordering::Relaxed) != 0 {
        write_at(PREFIX.load(Ordering::Relaxed) - 1, &[b" busy ", task.as_bytes()]);
    }
}

/// The worker waits for a job: `... idle`. Stores into memory only.
pub fn idle() {
    if PREFIX.load(Ordering::Relaxed) != 0 {
        write_at(PREFIX.load(Ordering::Relaxed) - 1, &[b" idle"]);
    }
}

/// The title as the kernel shows it (`/proc/self/cmdline` up to its first NUL), for tests.
pub fn current() -> Option<String> {
    let bytes = std::fs::read("/proc/self/cmdline").ok()?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}
