//! Recycling children by age (`--max-age`, a pool's `max_age`): when each one is due.
//!
//! A child's recycle time is picked when it is spawned: its age limit plus a random part of
//! the splay (GearmanManager's `max_worker_lifetime` and `worker_restart_splay`), and away
//! from every other child's by at least [`RECYCLE_GAP`] when the splay leaves room for that.
//! Picking from the free room (not retrying random draws) makes the spread certain, not
//! likely, whenever the splay exceeds `2 × RECYCLE_GAP × (others)`: each other child blocks at
//! most twice the gap of the window (0.5 s), so with 10 workers a splay of 4.5 s is enough. Workers
//! started together are recycled one by one, and so are their replacements.
//! When its time comes the supervisor sends the child SIGUSR2; a worker then finishes the job
//! in hand and exits with [`EXIT_RECYCLE`](super::EXIT_RECYCLE), and is replaced at once
//! (a recycle, not a crash).
//!
//! Must not: do any I/O; it only computes times.

use std::time::{Duration, Instant};

/// How close two recycles may be when the splay leaves room.
pub const RECYCLE_GAP: Duration = Duration::from_millis(250);

/// The least default splay: room for ten workers started together to be recycled
/// [`RECYCLE_GAP`] apart.
pub const DEFAULT_SPLAY: Duration = Duration::from_secs(5);

/// A maximum age and the splay that spreads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge {
    /// How long a child lives at least.
    pub age: Duration,
    /// Up to how much longer, picked per child.
    pub splay: Duration,
}

impl MaxAge {
    /// `age` with `splay`, or by default a tenth of `age` and at least [`DEFAULT_SPLAY`].
    pub fn new(age: Duration, splay: Option<Duration>) -> MaxAge {
        MaxAge { age, splay: splay.unwrap_or_else(|| (age / 10).max(DEFAULT_SPLAY)) }
    }
}

/// A small random number generator (xorshift64*), seeded from the clock and the PID: the
/// splay needs spread, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the time and this process's PID.
    pub fn new() -> Rng {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Rng((nanos as u64 ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Rng {
    fn default() -> Rng {
        Rng::new()
    }
}

/// When a child spawned at `now` is recycled: in `[now + age, now + age + splay]`, at least
/// [`RECYCLE_GAP`] from each of `others` (the other children's recycle times) when that
/// window has such room, otherwise anywhere in it. `random` is in `[0, 1)`.
pub fn pick(now: Instant, max: MaxAge, others: &[Instant], random: f64) -> Instant {
    let lo = now + max.age;
    let span = max.splay.as_secs_f64();
    let gap = RECYCLE_GAP.as_secs_f64();
    // The blocked stretches, as offsets from `lo`, sorted and merged.
    let mut blocked: Vec<(f64, f64)> = others
        .iter()
        .map(|&at| {
            let offset = if at >= lo { (at - lo).as_secs_f64() } else { -(lo - at).as_secs_f64() };
            (offset - gap, offset + gap)
        })
        .filter(|&(start, end)| end > 0.0 && start < span)
        .collect();
    blocked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut free: Vec<(f64, f64)> = Vec::new();
    let mut cursor = 0.0;
    for (start, end) in blocked {
        if start > cursor {
            free.push((cursor, start.min(span)));
        }
        cursor = cursor.max(end);
    }
    if cursor < span {
        free.push((cursor, span));
    }
    let room: f64 = free.iter().map(|(start, end)| end - start).sum();
    let offset = if room > 0.0 {
        let mut left = random * room;
        let mut chosen = free[free.len() - 1].1;
        for (start, end) in &free {
            if left < end - start {
                chosen = start + left;
                break;
            }
            left -= end - start;
        }
        chosen
    } else {
        random * span
    };
    lo + Duration::from_secs_f64(offset.clamp(0.0, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_are_spread_when_the_splay_allows_it() {
        let now = Instant::now();
        let max = MaxAge { age: Duration::from_secs(2), splay: Duration::from_secs(2) };
        let mut rng = Rng::new();
        // Four children in a 2 s splay: each of three others blocks at most 0.5 s of it.
        for _ in 0..2000 {
            let mut times: Vec<Instant> = Vec::new();
            for _ in 0..4 {
                let at = pick(now, max, &times, rng.unit());
                assert!(at >= now + max.age && at <= now + max.age + max.splay);
                times.push(at);
            }
            times.sort();
            for pair in times.windows(2) {
                assert!(pair[1] - pair[0] >= RECYCLE_GAP, "{:?}", pair[1] - pair[0]);
            }
        }
    }

    #[test]
    fn without_room_it_still_picks_in_the_window() {
        let now = Instant::now();
        let max = MaxAge { age: Duration::from_secs(1), splay: Duration::from_millis(100) };
        let others = [now + Duration::from_millis(1050)];
        let at = pick(now, max, &others, 0.5);
        assert!(at >= now + max.age && at <= now + max.age + max.splay);
        assert_eq!(pick(now, MaxAge { splay: Duration::ZERO, ..max }, &[], 0.7), now + max.age);
    }

    #[test]
    fn the_default_splay_is_a_tenth_and_at_least_five_seconds() {
        assert_eq!(MaxAge::new(Duration::from_secs(3600), None).splay, Duration::from_secs(360));
        assert_eq!(MaxAge::new(Duration::from_secs(2), None).splay, DEFAULT_SPLAY);
        assert_eq!(MaxAge::new(Duration::from_secs(2), Some(Duration::ZERO)).splay, Duration::ZERO);
    }

    #[test]
    fn random_numbers_are_in_the_unit_interval() {
        let mut rng = Rng::new();
        assert!((0..1000).map(|_| rng.unit()).all(|x| (0.0..1.0).contains(&x)));
    }
}
