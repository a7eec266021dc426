//! What a scheduled job is, as stored in Redis, and how li3_gearman's scheduled members read.
//!
//! li3g stores a [`Record`] as JSON: the Gearman function, unique key, workload and priority,
//! everything the scheduler needs to submit it without knowing tasks. li3_gearman's members
//! (`{"id", "action", "workload", "options"}` in `job_scheduled`, see the original's
//! `Gearman::schedule`) read as the same record: function
//! [`COMPAT_FUNCTION`], the workload object re-encoded,
//! priority from the action. No I/O here.

use crate::workload::COMPAT_FUNCTION;
use li3g_protocol::packet::Priority;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job waiting in Redis to be submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The job id (li3g's, or li3_gearman's `sha1(uniqid())`).
    pub id: String,
    /// The Gearman function.
    pub function: String,
    /// The unique key it is submitted with: the id, with `:<retry>` after a retry, so that a
    /// job handed over twice coalesces in gearmand while a retry never merges into the run
    /// that failed.
    #[serde(default)]
    pub unique: String,
    /// The workload, as sent.
    pub workload: String,
    /// The priority: `low`, `normal` or `high`.
    #[serde(default)]
    pub priority: Level,
    /// How many times it was retried before.
    #[serde(default)]
    pub retry: u32,
}

/// A priority as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `SUBMIT_JOB_LOW_BG`.
    Low,
    /// `SUBMIT_JOB_BG`.
    #[default]
    Normal,
    /// `SUBMIT_JOB_HIGH_BG`.
    High,
}

impl From<Priority> for Level {
    fn from(p: Priority) -> Level {
        match p {
            Priority::Low => Level::Low,
            Priority::Normal => Level::Normal,
            Priority::High => Level::High,
        }
    }
}

impl From<Level> for Priority {
    fn from(l: Level) -> Priority {
        match l {
            Level::Low => Priority::Low,
            Level::Normal => Priority::Normal,
            Level::High => Priority::High,
        }
    }
}

/// Why a stored job cannot be submitted (it goes to the dead set with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not JSON, or JSON of neither shape.
    #[error("stored job is not a li3g job nor a li3_gearman member: {0}")]
    Shape(String),
    /// A li3_gearman member with an action that is not a background submission.
    #[error("li3_gearman member with unknown action {0:?}")]
    Action(String),
}

pub use crate::client::unique_for;

impl Record {
    /// Reads a stored job: li3g's [`Record`] or a li3_gearman member.
    ///
    /// # Errors
    /// [`RecordError`] naming what is wrong.
    pub fn decode(text: &str) -> Result<Record, RecordError> {
        let value: Value = serde_json::from_str(text).map_err(|e| RecordError::Shape(e.to_string()))?;
        let Value::Object(map) = &value else { return Err(RecordError::Shape("not a JSON object".into())) };
        if map.contains_key("function") {
            return serde_json::from_value(value).map_err(|e| RecordError::Shape(e.to_string()));
        }
        if !(map.contains_key("action") && map.contains_key("workload")) {
            return Err(RecordError::Shape("no \"function\", nor \"action\" and \"workload\"".into()));
        }
        let id = match map.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(RecordError::Shape("li3_gearman member without an \"id\"".into())),
        };
        let action = map["action"].as_str().unwrap_or_default();
        let priority = match action.trim_end_matches("Background") {
            "doLow" => Level::Low,
            "do" | "doNormal" => Level::Normal,
            "doHigh" => Level::High,
            _ => return Err(RecordError::Action(action.to_string())),
        };
        let workload = match &map["workload"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let retry = map["workload"].get("retry").and_then(Value::as_u64).unwrap_or(0) as u32;
        Ok(Record {
            unique: unique_for(&id, retry),
            id,
            function: COMPAT_FUNCTION.to_string(),
            workload,
            priority,
            retry,
        })
    }

    /// The JSON stored in Redis.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    /// The task it runs, for listings: the function, or a li3_gearman envelope's `task`.
    pub fn task(&self) -> String {
        if self.function == COMPAT_FUNCTION {
            if let Ok(Value::Object(envelope)) = serde_json::from_str::<Value>(&self.workload) {
                if let Some(Value::String(task)) = envelope.get("task") {
                    return task.clone();
                }
            }
        }
        self.function.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn li3g_records_round_trip() {
        let record = Record {
            id: "a1".into(),
            function: "Hello::say".into(),
            unique: unique_for("a1", 2),
            workload: r#"{"args":["x"],"id":"a1"}"#.into(),
            priority: Level::High,
            retry: 2,
        };
        assert_eq!(record.unique, "a1:2");
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn li3_gearman_members_as_the_original_writes_them() {
        let member = r#"{"id":"0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33","action":"doLowBackground","workload":{"id":"0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33","args":["Mariano"],"env":{"environment":"production"},"configName":"default","task":"\\app\\tasks\\Hello::say","background":true,"retry":1,"retries":[]},"options":{"schedule":1700000000}}"#;
        let record = Record::decode(member).unwrap();
        assert_eq!(record.function, COMPAT_FUNCTION);
        assert_eq!(record.priority, Level::Low);
        assert_eq!(record.retry, 1);
        assert_eq!(record.unique, "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33:1");
        assert_eq!(record.task(), "\\app\\tasks\\Hello::say");
        let workload: Value = serde_json::from_str(&record.workload).unwrap();
        assert_eq!(workload["args"][0], "Mariano");
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        assert!(matches!(Record::decode("nope"), Err(RecordError::Shape(_))));
        assert!(matches!(Record::decode("[1]"), Err(RecordError::Shape(_))));
        assert!(matches!(
            Record::decode(r#"{"id":"x","action":"doSomething","workload":{}}"#),
            Err(RecordError::Action(_))
        ));
        assert!(matches!(Record::decode(r#"{"action":"doBackground","workload":{}}"#), Err(RecordError::Shape(_))));
    }
}
