//! Retry policies as li3_gearman wrote them: how often a failed background job runs again, and
//! after how long.
//!
//! The envelope's `retries` comes in three forms (see [`Retries::from_json`]):
//! - `[]` (PHP's empty array) or `null`: no retries;
//! - an int `N` (older versions): `N` retries with the default delays;
//! - `{"maximum": N, "increment": ["5 minutes", "1 hour", ...]}`: either key may be missing
//!   (defaults: maximum 5, increments 5, 10, 20, 30, 50 minutes, as the original).
//!
//! The delays are PHP relative-time strings (what the original fed to `strtotime("+...")`):
//! one or more `N unit` terms, unit one of `sec|second|min|minute|hour|day|week` (plural,
//! abbreviated, any case), an optional leading `+`: `"5 minutes"`, `"1 hour 30 mins"`, `"2days"`.
//! Months and years are refused: they are calendar arithmetic, not a fixed delay. Parsing is
//! hand-written because it is this small grammar, not `strtotime` (no crate reads exactly it).
//!
//! The list is padded with its last delay: retry 7 of a 5-entry list waits the 5th delay.
//!
//! Pure: no I/O, no clock. The scheduler decides when "now + delay" is.

use serde_json::{json, Value};
use std::time::Duration;

/// The original's default maximum number of retries.
pub const DEFAULT_MAXIMUM: u32 = 5;

/// The original's default delays, in minutes.
pub const DEFAULT_INCREMENT_MINUTES: [u64; 5] = [5, 10, 20, 30, 50];

/// A retry policy: at most `maximum` retries, retry `r` (0-based) waiting `increments[r]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// How many times a failed job runs again (0: never).
    pub maximum: u32,
    /// The delay before each retry; never empty when `maximum > 0`. Retries past its end wait
    /// its last delay.
    pub increments: Vec<Duration>,
}

/// Why a `retries` value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetriesError {
    /// A delay string that is not a relative time.
    #[error("retry increment {value:?} is not a relative time: expected `N seconds|minutes|hours|days|weeks`, {why}")]
    Increment {
        /// The string as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `retries` (or one of its keys) has a form the original never sent.
    #[error("\"retries\"{key} must be {expected}, not {value}")]
    Form {
        /// Empty for `retries` itself, else `.maximum` / `.increment`.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
        /// The JSON value found.
        value: String,
    },
}

impl Default for Retries {
    /// The original's defaults: 5 retries after 5, 10, 20, 30 and 50 minutes.
    fn default() -> Self {
        Retries::with_maximum(DEFAULT_MAXIMUM)
    }
}

impl Retries {
    /// No retries at all.
    pub fn none() -> Self {
        Retries { maximum: 0, increments: Vec::new() }
    }

    /// `maximum` retries with the default delays (what an int `retries` means).
    pub fn with_maximum(maximum: u32) -> Self {
        Retries { maximum, increments: default_increments() }
    }

    /// Whether a failed job is never retried.
    pub fn is_none(&self) -> bool {
        self.maximum == 0
    }

    /// The delay before retry number `retry` (0-based: the first retry is 0, which is the
    /// envelope's `retry` of the run that failed), or `None` when `retry` reached `maximum`.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry >= self.maximum {
            return None;
        }
        let index = (retry as usize).min(self.increments.len().checked_sub(1)?);
        Some(self.increments[index])
    }

    /// Reads the envelope's `retries` value in any of its forms (module doc).
    ///
    /// # Errors
    /// [`RetriesError`] naming the value that cannot be read.
    pub fn from_json(value: &Value) -> Result<Retries, RetriesError> {
        match value {
            Value::Null => Ok(Retries::none()),
            Value::Array(items) if items.is_empty() => Ok(Retries::none()),
            Value::Object(map) => {
                let maximum = match map.get("maximum") {
                    None | Some(Value::Null) => DEFAULT_MAXIMUM,
                    Some(v) => maximum(v).ok_or_else(|| form(".maximum", "a non-negative integer", v))?,
                };
                let increments = match map.get("increment") {
                    None | Some(Value::Null) => default_increments(),
                    Some(Value::Array(list)) if list.is_empty() => default_increments(),
                    Some(Value::Array(list)) => list.iter().map(increment).collect::<Result<_, _>>()?,
                    // A single delay, as a PHP array would not wrap it: one-entry list.
                    Some(v @ Value::String(_)) => vec![increment(v)?],
                    Some(v) => return Err(form(".increment", "a list of relative times like \"5 minutes\"", v)),
                };
                Ok(Retries { maximum, increments })
            }
            v => maximum(v)
                .map(Retries::with_maximum)
                .ok_or_else(|| form("", "[], an integer or {\"maximum\": N, \"increment\": [\"5 minutes\", ...]}", v)),
        }
    }

    /// The envelope form the original reads: `[]` when none, else
    /// `{"maximum": N, "increment": ["5 minutes", ...]}`.
    pub fn to_json(&self) -> Value {
        if self.is_none() {
            return json!([]);
        }
        json!({
            "maximum": self.maximum,
            "increment": self.increments.iter().map(|d| format_relative_time(*d)).collect::<Vec<_>>(),
        })
    }
}

impl serde::Serialize for Retries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Retries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Retries::from_json(&value).map_err(serde::de::Error::custom)
    }
}

fn default_increments() -> Vec<Duration> {
    DEFAULT_INCREMENT_MINUTES.iter().map(|m| Duration::from_secs(m * 60)).collect()
}

fn form(key: &'static str, expected: &'static str, value: &Value) -> RetriesError {
    RetriesError::Form { key, expected, value: value.to_string() }
}

/// An int, or a string of digits (PHP configs often hold numbers as strings).
fn maximum(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn increment(value: &Value) -> Result<Duration, RetriesError> {
    match value {
        Value::String(s) => parse_relative_time(s),
        // A bare number: seconds, as `strtotime("+300")` would not read it but a config might.
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| RetriesError::Increment { value: n.to_string(), why: "a number must be whole seconds" }),
        v => Err(form(".increment", "a list of relative times like \"5 minutes\"", v)),
    }
}

/// Reads a PHP relative time such as `"5 minutes"`, `"+1 hour 30 mins"` or `"2days"`.
///
/// # Errors
/// [`RetriesError::Increment`] naming the string.
pub fn parse_relative_time(text: &str) -> Result<Duration, RetriesError> {
    let bad = |why| RetriesError::Increment { value: text.to_string(), why };
    let mut rest = text.trim();
    rest = rest.strip_prefix('+').unwrap_or(rest).trim_start();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        rest = rest.strip_prefix('+').unwrap_or(rest).trim_start();
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad("each term must start with a whole number"));
        }
        let count: u64 = rest[..digits].parse().map_err(|_| bad("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let letters = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()).len();
        let unit = rest[..letters].to_ascii_lowercase();
        rest = rest[letters..].trim_start();
        let seconds: u64 = match unit.as_str() {
            "" => return Err(bad("a number needs a unit")),
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "fortnight" | "fortnights" => 1_209_600,
            "month" | "months" | "year" | "years" => {
                return Err(bad("months and years are calendar dates, not a fixed delay"))
            }
            _ => return Err(bad("the unit is not one of seconds, minutes, hours, days, weeks")),
        };
        let term = count.checked_mul(seconds).ok_or_else(|| bad("the number is too large"))?;
        total = total.checked_add(term).ok_or_else(|| bad("the number is too large"))?;
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(Duration::from_secs(total))
}

/// Writes `delay` as a relative time the original reads: `"5 minutes"`, `"1 hour"`, `"90 seconds"`
/// (the largest unit that divides it; sub-second parts are dropped).
pub fn format_relative_time(delay: Duration) -> String {
    let secs = delay.as_secs();
    let (count, unit) = [(604_800, "week"), (86_400, "day"), (3600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs != 0 && secs % size == 0)
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    format!("{count} {unit}{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn mins(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|m| Duration::from_secs(m * MIN)).collect()
    }

    #[test]
    fn every_form_the_original_sent() {
        assert_eq!(Retries::from_json(&json!([])).unwrap(), Retries::none());
        assert_eq!(Retries::from_json(&Value::Null).unwrap(), Retries::none());
        assert_eq!(
            Retries::from_json(&json!(3)).unwrap(),
            Retries { maximum: 3, increments: mins(&[5, 10, 20, 30, 50]) }
        );
        assert_eq!(Retries::from_json(&json!(0)).unwrap().delay(0), None);
        assert_eq!(
            Retries::from_json(&json!({"maximum": 2, "increment": ["5 minutes"]})).unwrap(),
            Retries { maximum: 2, increments: mins(&[5]) }
        );
        assert_eq!(Retries::from_json(&json!({})).unwrap(), Retries::default());
        assert_eq!(Retries::from_json(&json!({"maximum": "4"})).unwrap(), Retries::with_maximum(4));
        assert_eq!(
            Retries::from_json(&json!({"increment": ["1 hour", "1 day"]})).unwrap(),
            Retries { maximum: 5, increments: vec![Duration::from_secs(3600), Duration::from_secs(86_400)] }
        );
    }

    #[test]
    fn defaults_are_the_originals() {
        let d = Retries::default();
        assert_eq!(d.maximum, 5);
        assert_eq!(d.increments, mins(&[5, 10, 20, 30, 50]));
    }

    #[test]
    fn delay_pads_with_the_last_increment_and_stops_at_maximum() {
        let r = Retries { maximum: 4, increments: mins(&[5, 10]) };
        assert_eq!(r.delay(0), Some(Duration::from_secs(5 * MIN)));
        assert_eq!(r.delay(1), Some(Duration::from_secs(10 * MIN)));
        assert_eq!(r.delay(3), Some(Duration::from_secs(10 * MIN)));
        assert_eq!(r.delay(4), None);
        assert_eq!(Retries::none().delay(0), None);
        // A maximum with no increments (built by hand) never panics.
        assert_eq!(Retries { maximum: 2, increments: vec![] }.delay(0), None);
    }

    #[test]
    fn relative_times() {
        let s = |t: &str| parse_relative_time(t).unwrap().as_secs();
        assert_eq!(s("5 minutes"), 300);
        assert_eq!(s("1 minute"), 60);
        assert_eq!(s("30 seconds"), 30);
        assert_eq!(s("1 second"), 1);
        assert_eq!(s("2 hours"), 7200);
        assert_eq!(s("1 hour"), 3600);
        assert_eq!(s("3 days"), 259_200);
        assert_eq!(s("1 day"), 86_400);
        assert_eq!(s("1 week"), 604_800);
        assert_eq!(s("+5 Minutes"), 300);
        assert_eq!(s("10mins"), 600);
        assert_eq!(s(" 1 hour 30 min "), 5400);
        assert_eq!(s("1 hour, +30 secs"), 3630);
        assert_eq!(s("0 seconds"), 0);
    }

    #[test]
    fn unreadable_times_name_the_value() {
        for bad in
            ["", "minutes", "5", "5 lightyears", "1 month", "-5 minutes", "five minutes", "99999999999999999999 s"]
        {
            let err = parse_relative_time(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let err = Retries::from_json(&json!({"maximum": 2, "increment": ["5 minutes", "soon"]})).unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn wrong_forms_name_the_key() {
        let err = Retries::from_json(&json!("often")).unwrap_err();
        assert!(err.to_string().starts_with("\"retries\" must be"), "{err}");
        assert!(err.to_string().contains("\"often\""), "{err}");
        let err = Retries::from_json(&json!({"maximum": -1})).unwrap_err();
        assert!(err.to_string().contains("\"retries\".maximum must be a non-negative integer, not -1"), "{err}");
        let err = Retries::from_json(&json!({"increment": {"a": 1}})).unwrap_err();
        assert!(err.to_string().contains(".increment"), "{err}");
        assert!(Retries::from_json(&json!([1])).is_err());
        assert!(Retries::from_json(&json!(true)).is_err());
    }

    #[test]
    fn round_trips_through_the_envelope_form() {
        for r in [
            Retries::none(),
            Retries::default(),
            Retries { maximum: 2, increments: vec![Duration::from_secs(90), Duration::from_secs(7200)] },
        ] {
            let back: Retries = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
        assert_eq!(Retries::none().to_json(), json!([]));
        assert_eq!(
            Retries::default().to_json(),
            json!({"maximum": 5, "increment": ["5 minutes", "10 minutes", "20 minutes", "30 minutes", "50 minutes"]})
        );
        assert_eq!(format_relative_time(Duration::from_secs(86_400 * 2)), "2 days");
        assert_eq!(format_relative_time(Duration::from_secs(0)), "0 seconds");
    }
}
