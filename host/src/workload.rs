//! li3g's job wire format: what a Gearman workload means, and how a result goes back.
//!
//! - The Gearman function name is the task name (`Hello::say`; `Hello` means `Hello::run`).
//! - The workload is JSON: an array is the positional arguments; an object is an envelope
//!   `{"args": [...], "id": "...", "env": "..."}` (li3_gearman's key names); anything else, a
//!   JSON scalar or bytes that are not JSON, is one argument (bytes that are not UTF-8 are
//!   read lossily). So `gearman -f Hello::say Mariano` runs `say("Mariano")`.
//! - Compatibility: li3_gearman sent every job to one function, [`COMPAT_FUNCTION`], with an
//!   envelope that names the task (`"task": "\\app\\tasks\\Hello::say"`) and also carries
//!   `configName`, `background`, `retry`, `retries` (accepted, unused by the worker).
//!
//! No I/O here: the worker decodes with [`decode`], the client encodes with [`encode`].

use serde_json::{Map, Value};

/// The single Gearman function li3_gearman submitted every job to.
pub const COMPAT_FUNCTION: &str = "li3_gearman\\extensions\\command\\Gearmand::run";

/// A decoded job: which task, with what, for which job id and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The task name to dispatch (not yet canonical: `Hello` stays `Hello`).
    pub task: String,
    /// The positional arguments, a JSON array.
    pub args: Value,
    /// The job id, when the envelope gave one.
    pub id: Option<String>,
    /// The environment, when the envelope gave one.
    pub env: Option<String>,
}

/// Why a workload cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The compatibility function got something that is not li3_gearman's envelope.
    #[error("malformed li3_gearman workload: {0}")]
    Compat(String),
    /// An envelope whose fields have the wrong types.
    #[error("malformed job envelope: {0}")]
    Envelope(String),
}

/// Reads `workload` sent to `function`.
///
/// # Errors
/// [`WorkloadError`] for an envelope that cannot be read; the worker fails the job with it.
pub fn decode(function: &str, workload: &[u8]) -> Result<Job, WorkloadError> {
    let parsed: Option<Value> = serde_json::from_slice(workload).ok();
    if function == COMPAT_FUNCTION {
        let Some(Value::Object(envelope)) = parsed else {
            return Err(WorkloadError::Compat("expected a JSON object with a \"task\" key".into()));
        };
        let task = match envelope.get("task") {
            Some(Value::String(task)) if !task.trim_start_matches('\\').is_empty() => task.clone(),
            _ => return Err(WorkloadError::Compat("\"task\" is missing or not a task name".into())),
        };
        return from_envelope(task, &envelope).map_err(|e| WorkloadError::Compat(e.to_string()));
    }
    Ok(match parsed {
        Some(Value::Array(args)) => Job { task: function.to_string(), args: Value::Array(args), id: None, env: None },
        Some(Value::Object(envelope)) => from_envelope(function.to_string(), &envelope)?,
        Some(scalar) => Job { task: function.to_string(), args: Value::Array(vec![scalar]), id: None, env: None },
        None => Job {
            task: function.to_string(),
            args: Value::Array(vec![Value::String(String::from_utf8_lossy(workload).into_owned())]),
            id: None,
            env: None,
        },
    })
}

fn from_envelope(task: String, envelope: &Map<String, Value>) -> Result<Job, WorkloadError> {
    let args = match envelope.get("args") {
        None | Some(Value::Null) => Value::Array(vec![]),
        Some(Value::Array(args)) => Value::Array(args.clone()),
        // li3_gearman passed PHP arrays; an associative one arrives as an object: one argument.
        Some(other) => Value::Array(vec![other.clone()]),
    };
    let text = |key: &str| -> Result<Option<String>, WorkloadError> {
        match envelope.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(WorkloadError::Envelope(format!("\"{key}\" must be a string, not {other}"))),
        }
    };
    Ok(Job { task, args, id: text("id")?, env: text("env")? })
}

/// The workload li3g sends for `args`, with the job id and environment: `{"args":…,"id":…,"env":…}`.
pub fn encode(args: &Value, id: &str, env: Option<&str>) -> Vec<u8> {
    let mut envelope = Map::new();
    envelope.insert("args".into(), args.clone());
    envelope.insert("id".into(), Value::String(id.to_string()));
    if let Some(env) = env {
        envelope.insert("env".into(), Value::String(env.to_string()));
    }
    Value::Object(envelope).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(task: &str, args: Value, id: Option<&str>, env: Option<&str>) -> Job {
        Job { task: task.into(), args, id: id.map(Into::into), env: env.map(Into::into) }
    }

    #[test]
    fn workloads_in_every_form() {
        assert_eq!(decode("Hello::say", b"Mariano").unwrap(), job("Hello::say", json!(["Mariano"]), None, None));
        assert_eq!(decode("Hello::say", b"[\"a\"]").unwrap(), job("Hello::say", json!(["a"]), None, None));
        assert_eq!(decode("M::add", b"5").unwrap(), job("M::add", json!([5]), None, None));
        assert_eq!(decode("Hello", b"").unwrap(), job("Hello", json!([""]), None, None));
        assert_eq!(
            decode("Hello::say", br#"{"args":["x"],"id":"7","env":"prod"}"#).unwrap(),
            job("Hello::say", json!(["x"]), Some("7"), Some("prod"))
        );
        assert_eq!(decode("X::y", b"\xff\xfe").unwrap().args, json!(["\u{fffd}\u{fffd}"]));
        let bytes = encode(&json!([1, "two"]), "id-1", Some("dev"));
        assert_eq!(decode("X::y", &bytes).unwrap(), job("X::y", json!([1, "two"]), Some("id-1"), Some("dev")));
    }

    #[test]
    fn li3_gearman_envelopes() {
        let php = br#"{"id":"5a1f","args":["Mariano"],"env":"production","configName":"default","task":"\\app\\tasks\\Hello::say","background":true,"retry":0,"retries":3}"#;
        assert_eq!(
            decode(COMPAT_FUNCTION, php).unwrap(),
            job("\\app\\tasks\\Hello::say", json!(["Mariano"]), Some("5a1f"), Some("production"))
        );
        assert!(matches!(decode(COMPAT_FUNCTION, b"not json"), Err(WorkloadError::Compat(_))));
        assert!(matches!(decode(COMPAT_FUNCTION, br#"{"args":[]}"#), Err(WorkloadError::Compat(_))));
        assert!(matches!(decode("X::y", br#"{"id":[1]}"#), Err(WorkloadError::Envelope(_))));
    }
}
