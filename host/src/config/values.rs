//! The values settings and flags share: a number of seconds ([`seconds`], [`parse_seconds`]),
//! and a memory size ([`parse_size`]). (A URL made fit for a log line, `redact_url`, is
//! li3g-client's, which its Redis errors need.)

use std::time::Duration;

/// The longest duration any setting may have: 30 days. Longer is a typo (and would not fit
/// `CAN_DO_TIMEOUT`'s milliseconds or a poll timeout).
pub const MAX_SECONDS: f64 = 30.0 * 86_400.0;

/// A number of seconds as a [`Duration`]: positive, finite and at most [`MAX_SECONDS`].
///
/// # Errors
/// What is wrong with it, for a message that names the flag or key.
pub fn seconds(value: f64) -> Result<Duration, String> {
    if value.is_nan() {
        Err("NaN is not a number of seconds".into())
    } else if value <= 0.0 {
        Err(format!("{value} is not a positive number of seconds"))
    } else if value > MAX_SECONDS {
        Err(format!("{value} seconds is too long (at most {MAX_SECONDS}, 30 days)"))
    } else {
        Ok(Duration::from_secs_f64(value))
    }
}

/// Parses a command-line number of seconds (`1.5`) with [`seconds`]; clap's `value_parser`.
///
/// # Errors
/// When it is not a number, or not a valid duration.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    seconds(value)
}

/// `512M`, `2G`, `64K` or plain bytes: a memory limit (`--memlimit`, a pool's `memlimit`).
///
/// # Errors
/// What is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 512M"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    if n == 0 {
        return Err(format!("{text:?}: a memory limit must be above zero"));
    }
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}
