//! This process's scoreboard and slot: the supervisor installs the board before it forks
//! ([`install`]), each child learns its slot right after the fork ([`enter`]), and the code
//! that runs jobs reports through [`busy`] / [`done`] / [`failure`] without knowing whether
//! there is a board at all (`li3g-host work` alone has none: every call is then a no-op).
//!
//! Must not: allocate or call the kernel on [`busy`] or [`done`] (they run per job; [`failure`]
//! copies its texts once, on a failure only).

use super::{now_ms, Failure, Kind, Scoreboard, SlotWriter, State};
use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static BOARD: OnceLock<Scoreboard> = OnceLock::new();
/// This process's slot; `u32::MAX` when it has none (the supervisor, or no board).
static SLOT: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes `board` this process's (and, through the fork, its children's). A second call is
/// ignored (the first board stays).
pub fn install(board: Scoreboard) {
    let _ = BOARD.set(board);
}

/// The board, when one is installed.
pub fn board() -> Option<&'static Scoreboard> {
    BOARD.get()
}

/// In a freshly forked child: takes slot `slot` as child `number` of `kind`, in worker pool
/// `pool` (`None`: the default pool, or not a worker).
pub fn enter(slot: u32, kind: Kind, number: u32, pool: Option<&str>) {
    let Some(board) = board() else { return };
    SLOT.store(slot, Ordering::Relaxed);
    if let Some(w) = board.writer(slot) {
        w.claim(kind, number, pool, std::process::id(), board.generation());
    }
}

/// This process's slot writer, when it has one.
pub fn own() -> Option<SlotWriter<'static>> {
    let slot = SLOT.load(Ordering::Relaxed);
    if slot == u32::MAX {
        return None;
    }
    board()?.writer(slot)
}

/// `server` as text in a buffer on the stack (no allocation).
fn server_text(server: &dyn Display, buf: &mut [u8; 64]) -> usize {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{server}");
    let mut n = cursor.position() as usize;
    while std::str::from_utf8(&buf[..n]).is_err() {
        n -= 1;
    }
    n
}

/// The job in hand: `task`, li3g's `id`, the server's `handle`, from `server`.
pub fn busy(task: &str, id: &str, handle: &str, server: &dyn Display) {
    if let Some(w) = own() {
        let mut buf = [0u8; 64];
        let n = server_text(server, &mut buf);
        w.busy(task, id, handle, std::str::from_utf8(&buf[..n]).unwrap_or(""));
    }
    crate::proctitle::busy(task);
}

/// The job in hand ended after `seconds`, failed with `failure` or not; `cost` is the job
/// child's (CPU seconds, peak RSS bytes) under `--atomic`, when known.
pub fn done(task: &str, seconds: f64, failure: Option<&str>, cost: Option<(f64, u64)>) {
    if let Some(w) = own() {
        w.done(task, seconds, failure, cost);
    }
    crate::proctitle::idle();
}

/// A failed job, into the ring (time is now).
pub fn failure(task: &str, id: &str, handle: &str, server: &dyn Display, message: &str, signal: Option<i32>) {
    if let Some(board) = board() {
        board.record_failure(&Failure {
            at_ms: now_ms(),
            task: task.into(),
            id: id.into(),
            handle: handle.into(),
            server: server.to_string(),
            message: message.into(),
            signal,
        });
    }
}

/// Sets this process's state (idle, stopping, ...).
pub fn state(state: State) {
    if let Some(w) = own() {
        w.state(state);
    }
}
