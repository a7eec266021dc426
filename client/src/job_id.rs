//! Job ids: 32 hex digits, so that ids from many hosts and processes do not collide without
//! any coordination.
//!
//! Each process seeds 128 bits once from the kernel's random source (`getrandom`) and then
//! draws ids from a counter through SplitMix64, with no system call per id. A forked child
//! forgets the seed (`pthread_atfork`) and takes a fresh one, so parent and child never share
//! a sequence. Ids are unique, not secret: nothing may use them as a credential.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn after_fork() {
    FORKED.store(true, Ordering::Relaxed);
}

thread_local! {
    /// (seed, counter); `None` until the first id.
    static STATE: Cell<Option<([u64; 2], u64)>> = const { Cell::new(None) };
}

fn seed() -> [u64; 2] {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // getrandom cannot fail for 16 bytes once the pool is initialised; fall back to time and
        // pid rather than failing a job over an id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    let (a, b) = bytes.split_at(8);
    [u64::from_le_bytes(a.try_into().expect("8 bytes")), u64::from_le_bytes(b.try_into().expect("8 bytes"))]
}

/// SplitMix64's output function: a bijection, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new job id.
pub fn generate() -> String {
    static ATFORK: Once = Once::new();
    // SAFETY: registers a handler that only stores to an atomic.
    ATFORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(after_fork));
    });
    let ([a, b], n) = STATE.with(|state| {
        let current = match state.get() {
            Some(current) if !FORKED.swap(false, Ordering::Relaxed) => current,
            _ => (seed(), 0),
        };
        state.set(Some((current.0, current.1.wrapping_add(1))));
        current
    });
    let step = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:016x}{:016x}", mix(a.wrapping_add(step)), mix(b.wrapping_add(step)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| super::generate()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }
}
