//! li3g's job wire format: what a workload means, and how a result goes back.
//!
//! - The Gearman function name is the task name (`Hello::say`; `Hello` means `Hello::run`).
//! - The workload is JSON: an array is the positional arguments; an object with an `args` or
//!   `task` key is an envelope `{"args": [...], "id": "...", "env": ...}` (li3_gearman's key
//!   names); any other object is the arguments by name (`{"n": 3}` for a task declared
//!   `"Report::build"(n)`), matched to the names the `plugin!` macro records; anything else, a
//!   JSON scalar or bytes that are not JSON, is one argument (bytes that are not UTF-8 are
//!   read lossily). So `gearman -f Hello::say Mariano` runs `say("Mariano")`.
//! - Compatibility: li3_gearman sent every job to one function, [`COMPAT_FUNCTION`], with an
//!   envelope that names the task (`"task": "\\app\\tasks\\Hello::say"`).
//!
//! # The envelope, field by field (as PHP's `json_encode` writes it; unknown keys are ignored)
//! | key | forms accepted |
//! |---|---|
//! | `task` | a string; required for [`COMPAT_FUNCTION`], ignored otherwise (the function names the task) |
//! | `args` | an array; `null`/missing = none; an object whose keys are all integers (a PHP list with holes) = its values in key order; any other object or scalar = one argument |
//! | `id` | a string or a number; `null`/missing = the worker generates one |
//! | `env` | an object (li3_gearman: `HTTP_HOST`, `SCRIPT_FILENAME`, `SCRIPT_NAME`, `PHP_SELF`, `HTTPS`, ... and `environment`); `[]` (PHP's empty array); or a string, the environment name (li3g's own envelope) |
//! | `configName` | a string or `null` |
//! | `background` | a bool, `0`/`1`, or `null` |
//! | `retry` | a non-negative integer (or a string of digits), `null` = 0 |
//! | `retries` | see [`crate::retry_policy`]: `[]`, an integer, or `{"maximum": N, "increment": [...]}` |
//!
//! In an `env` object, `environment` is the environment name; every other entry is a server
//! variable the original merged into `$_SERVER`, and a task reads it with `job.env("HTTP_HOST")`.
//! Values are strings; numbers and booleans are cast as PHP casts them (`true` = `"1"`,
//! `false` = `""`), `null` entries are dropped; arrays and objects are refused.
//! A field of any other form fails the job with a message naming the field and what was expected.
//!
//! No I/O here: the worker decodes with [`decode`], the client encodes with [`encode`].

use crate::retry_policy::Retries;
use serde_json::{Map, Value};

/// The single Gearman function li3_gearman submitted every job to.
pub const COMPAT_FUNCTION: &str = "li3_gearman\\extensions\\command\\Gearmand::run";

/// A decoded job: which task, with what, for which job id and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The task name to dispatch (not yet canonical: `Hello` stays `Hello`).
    pub task: String,
    /// The positional arguments, a JSON array.
    pub args: Value,
    /// The job id, when the envelope gave one.
    pub id: Option<String>,
    /// The environment name, when the envelope gave one (`env` as a string, or its
    /// `environment` entry).
    pub env: Option<String>,
    /// The other `env` entries (`HTTP_HOST`, ...), in the envelope's key order (sorted).
    pub env_vars: Vec<(String, String)>,
    /// li3_gearman's `configName`, when given.
    pub config_name: Option<String>,
    /// li3_gearman's `background`, when given.
    pub background: Option<bool>,
    /// Which retry this run is (0: the first run).
    pub retry: u32,
    /// How a failed run is retried (none unless the envelope says).
    pub retries: Retries,
}

impl Envelope {
    fn plain(task: &str, args: Value) -> Envelope {
        Envelope {
            task: task.to_string(),
            args,
            id: None,
            env: None,
            env_vars: Vec::new(),
            config_name: None,
            background: None,
            retry: 0,
            retries: Retries::none(),
        }
    }
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
pub fn decode(function: &str, workload: &[u8]) -> Result<Envelope, WorkloadError> {
    let parsed: Option<Value> = serde_json::from_slice(workload).ok();
    if function == COMPAT_FUNCTION {
        let Some(Value::Object(envelope)) = parsed else {
            return Err(WorkloadError::Compat("expected a JSON object with a \"task\" key".into()));
        };
        let task = match envelope.get("task") {
            Some(Value::String(task)) if !task.trim_start_matches('\\').is_empty() => task.clone(),
            None => return Err(WorkloadError::Compat("\"task\" is missing; expected a task name".into())),
            Some(other) => {
                return Err(WorkloadError::Compat(format!(
                    "\"task\" must be a task name like \"\\\\app\\\\tasks\\\\Hello::say\", not {other}"
                )))
            }
        };
        return from_envelope(&task, &envelope).map_err(WorkloadError::Compat);
    }
    Ok(match parsed {
        Some(Value::Array(args)) => Envelope::plain(function, Value::Array(args)),
        Some(Value::Object(envelope)) if is_envelope(&envelope) => {
            from_envelope(function, &envelope).map_err(WorkloadError::Envelope)?
        }
        // Not an envelope: the task's arguments by name (`{"n": 3}`), matched to its parameters
        // when it is invoked.
        Some(Value::Object(named)) => Envelope::plain(function, Value::Object(named)),
        Some(scalar) => Envelope::plain(function, Value::Array(vec![scalar])),
        None => {
            Envelope::plain(function, Value::Array(vec![Value::String(String::from_utf8_lossy(workload).into_owned())]))
        }
    })
}

/// Whether an object is an envelope: it has the `args` or `task` key li3_gearman (and li3g's
/// client) write. Any other object is the task's arguments by name.
fn is_envelope(object: &Map<String, Value>) -> bool {
    object.contains_key("args") || object.contains_key("task")
}

/// `"field" must be EXPECTED, not FOUND`.
fn wrong(key: &str, expected: &str, found: &Value) -> String {
    format!("\"{key}\" must be {expected}, not {found}")
}

fn from_envelope(task: &str, envelope: &Map<String, Value>) -> Result<Envelope, String> {
    let get = |key: &str| envelope.get(key).filter(|v| !v.is_null());
    let text = |key: &str| -> Result<Option<String>, String> {
        match get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(wrong(key, "a string", other)),
        }
    };
    let mut job = Envelope::plain(task, args(get("args")));
    job.id = text("id")?;
    job.config_name = text("configName")?;
    match get("env") {
        None => {}
        Some(Value::String(name)) => job.env = Some(name.clone()),
        Some(Value::Array(list)) if list.is_empty() => {}
        Some(Value::Object(vars)) => {
            for (name, value) in vars {
                let Some(value) = php_string(value) else {
                    if value.is_null() {
                        continue;
                    }
                    return Err(wrong(&format!("env.{name}"), "a string", value));
                };
                if name == "environment" {
                    job.env = Some(value);
                } else {
                    job.env_vars.push((name.clone(), value));
                }
            }
        }
        Some(other) => {
            return Err(wrong(
                "env",
                "an object of server variables and \"environment\", or an environment name",
                other,
            ))
        }
    }
    job.background = match get("background") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => Some(n.as_u64() == Some(1)),
        Some(other) => return Err(wrong("background", "true or false", other)),
    };
    job.retry = match get("retry") {
        None => 0,
        Some(value) => match value {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| wrong("retry", "a non-negative integer", value))?,
    };
    if let Some(value) = envelope.get("retries") {
        job.retries = Retries::from_json(value).map_err(|err| err.to_string())?;
    }
    Ok(job)
}

/// The arguments from the envelope's `args` (see the module doc).
fn args(value: Option<&Value>) -> Value {
    match value {
        None => Value::Array(vec![]),
        Some(Value::Array(args)) => Value::Array(args.clone()),
        Some(Value::Object(map)) => {
            // A PHP list with holes (`array_filter` keeps the keys) is encoded as an object
            // with integer keys: call_user_func_array passed its values in order.
            let mut indexed: Vec<(u64, &Value)> = Vec::with_capacity(map.len());
            for (key, value) in map {
                match key.parse() {
                    Ok(index) => indexed.push((index, value)),
                    Err(_) => return Value::Array(vec![Value::Object(map.clone())]),
                }
            }
            indexed.sort_by_key(|(index, _)| *index);
            Value::Array(indexed.into_iter().map(|(_, v)| v.clone()).collect())
        }
        Some(other) => Value::Array(vec![other.clone()]),
    }
}

/// A server variable as PHP would cast it to a string; `None` for null, arrays and objects.
fn php_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
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

/// li3_gearman's envelope for `task` (sent to [`COMPAT_FUNCTION`]), exactly as its PHP client
/// (`Job::run`) `json_encode`s it, key order included: `{id, args, env, configName, task,
/// background, retry, retries}`, `task` with a leading `\` and `::run` when it names a class
/// alone, `env` an object holding `environment` (PHP fills it with `Environment::get()`; the
/// PHP worker sets it back), `retries` `[]` or li3_gearman's `{maximum, increment}`.
pub fn encode_li3_gearman(
    task: &str,
    args: &Value,
    id: &str,
    environment: Option<&str>,
    config_name: &str,
    background: bool,
    retries: Option<&crate::retry_policy::Retries>,
) -> Vec<u8> {
    let mut name = if task.starts_with('\\') { task.to_string() } else { format!("\\{task}") };
    if !name.contains("::") {
        name.push_str("::run");
    }
    let mut env = Map::new();
    env.insert("environment".into(), Value::String(environment.unwrap_or("production").to_string()));
    let retries = retries.map_or(Value::Array(Vec::new()), crate::retry_policy::Retries::to_json);
    // Written key by key: serde_json's maps sort their keys, PHP keeps `compact()`'s order.
    let fields: [(&str, Value); 8] = [
        ("id", Value::String(id.to_string())),
        ("args", args.clone()),
        ("env", Value::Object(env)),
        ("configName", Value::String(config_name.to_string())),
        ("task", Value::String(name)),
        ("background", Value::Bool(background)),
        ("retry", Value::from(0)),
        ("retries", retries),
    ];
    let body: Vec<String> =
        fields.iter().map(|(key, value)| format!("{}:{value}", Value::String((*key).into()))).collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn li3_gearmans_envelope_as_php_writes_it_and_li3g_reads_it_back() {
        let text =
            encode_li3_gearman("app\\tasks\\Report", &json!([3]), "abc", Some("staging"), "default", false, None);
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            r#"{"id":"abc","args":[3],"env":{"environment":"staging"},"configName":"default","task":"\\app\\tasks\\Report::run","background":false,"retry":0,"retries":[]}"#
        );
        let decoded = decode(COMPAT_FUNCTION, &text).unwrap();
        assert_eq!((decoded.task.as_str(), decoded.env.as_deref()), ("\\app\\tasks\\Report::run", Some("staging")));
    }

    fn job(task: &str, args: Value, id: Option<&str>, env: Option<&str>) -> Envelope {
        Envelope { id: id.map(Into::into), env: env.map(Into::into), ..Envelope::plain(task, args) }
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

    /// Exactly what li3_gearman's `Job::run` json_encode()s, `\/` escapes and all.
    const PHP: &[u8] = br#"{"id":"0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33","args":["Mariano"],"env":{"HTTP_HOST":"shop.example.com","SCRIPT_FILENAME":"\/var\/www\/app\/webroot\/index.php","SCRIPT_NAME":"\/index.php","PHP_SELF":"\/index.php","HTTPS":"on","environment":"production"},"configName":"default","task":"\\app\\tasks\\Hello::say","background":true,"retry":0,"retries":[]}"#;

    #[test]
    fn the_original_envelope_with_env_as_an_object() {
        let decoded = decode(COMPAT_FUNCTION, PHP).unwrap();
        assert_eq!(decoded.task, "\\app\\tasks\\Hello::say");
        assert_eq!(decoded.args, json!(["Mariano"]));
        assert_eq!(decoded.id.as_deref(), Some("0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"));
        assert_eq!(decoded.env.as_deref(), Some("production"));
        let vars: Vec<(&str, &str)> = decoded.env_vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            vars,
            [
                ("HTTPS", "on"),
                ("HTTP_HOST", "shop.example.com"),
                ("PHP_SELF", "/index.php"),
                ("SCRIPT_FILENAME", "/var/www/app/webroot/index.php"),
                ("SCRIPT_NAME", "/index.php"),
            ]
        );
        assert_eq!(decoded.config_name.as_deref(), Some("default"));
        assert_eq!(decoded.background, Some(true));
        assert_eq!((decoded.retry, decoded.retries), (0, Retries::none()));
    }

    #[test]
    fn every_retries_form_decodes() {
        let with = |retries: &str| {
            let text = format!(
                r#"{{"task":"\\Hello::say","args":[],"env":{{"environment":"dev"}},"retry":1,"retries":{retries}}}"#
            );
            decode(COMPAT_FUNCTION, text.as_bytes())
        };
        assert_eq!(with("[]").unwrap().retries, Retries::none());
        assert_eq!(with("3").unwrap().retries, Retries::with_maximum(3));
        let two = with(r#"{"maximum":2,"increment":["5 minutes"]}"#).unwrap();
        assert_eq!(two.retries, Retries { maximum: 2, increments: vec![Duration::from_secs(300)] });
        assert_eq!(two.retry, 1);
        let err = with(r#"{"maximum":2,"increment":["5 fortnites"]}"#).unwrap_err().to_string();
        assert!(err.starts_with("malformed li3_gearman workload: retry increment \"5 fortnites\""), "{err}");
    }

    #[test]
    fn other_forms_of_each_field() {
        // env: a string (li3g's own and li3g's earlier compatibility), PHP's empty array, or missing.
        let old = br#"{"id":"5a1f","args":["Mariano"],"env":"production","configName":"default","task":"\\app\\tasks\\Hello::say","background":true,"retry":0,"retries":3}"#;
        assert_eq!(
            decode(COMPAT_FUNCTION, old).unwrap(),
            Envelope {
                config_name: Some("default".into()),
                background: Some(true),
                retries: Retries::with_maximum(3),
                ..job("\\app\\tasks\\Hello::say", json!(["Mariano"]), Some("5a1f"), Some("production"))
            }
        );
        let empty = decode(COMPAT_FUNCTION, br#"{"task":"\\A::b","env":[],"args":null,"id":null}"#).unwrap();
        assert_eq!(empty, job("\\A::b", json!([]), None, None));
        // Numbers where strings are expected, PHP casts, nulls dropped, unknown keys ignored.
        let odd = decode(
            "A::b",
            br#"{"id":42,"args":{"2":"c","0":"a"},"env":{"HTTPS":true,"PORT":8080,"X":null,"OFF":false},"background":0,"retry":"2","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(odd.id.as_deref(), Some("42"));
        assert_eq!(odd.args, json!(["a", "c"]));
        assert_eq!(odd.env, None);
        assert_eq!(
            odd.env_vars,
            [("HTTPS".to_string(), "1".to_string()), ("OFF".into(), "".into()), ("PORT".into(), "8080".into())]
        );
        assert_eq!((odd.background, odd.retry), (Some(false), 2));
        // An associative array is one argument, as before.
        assert_eq!(decode("A::b", br#"{"args":{"name":"x"}}"#).unwrap().args, json!([{"name": "x"}]));
    }

    #[test]
    fn malformed_fields_are_named_with_what_was_expected() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "expected a JSON object with a \"task\" key"),
            (br#"{"args":[]}"#, "\"task\" is missing"),
            (br#"{"task":5}"#, "\"task\" must be a task name"),
            (br#"{"task":"\\A::b","id":[1]}"#, "\"id\" must be a string, not [1]"),
            (br#"{"task":"\\A::b","env":5}"#, "\"env\" must be an object of server variables"),
            (br#"{"task":"\\A::b","env":{"HTTP_HOST":["a"]}}"#, "\"env.HTTP_HOST\" must be a string, not [\"a\"]"),
            (br#"{"task":"\\A::b","background":"yes"}"#, "\"background\" must be true or false, not \"yes\""),
            (br#"{"task":"\\A::b","retry":-1}"#, "\"retry\" must be a non-negative integer, not -1"),
            (br#"{"task":"\\A::b","retries":"often"}"#, "\"retries\" must be [], an integer or"),
        ];
        for (workload, expected) in cases {
            let err = decode(COMPAT_FUNCTION, workload).unwrap_err();
            assert!(matches!(err, WorkloadError::Compat(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err} does not contain {expected}");
        }
        let err = decode("X::y", br#"{"args":[],"id":[1]}"#).unwrap_err();
        assert_eq!(err.to_string(), "malformed job envelope: \"id\" must be a string, not [1]");
    }

    #[test]
    fn an_object_without_args_or_task_is_the_arguments_by_name() {
        let job = decode("Report::build", br#"{"n":3,"id":"x"}"#).unwrap();
        assert_eq!((job.args, job.id), (json!({"n": 3, "id": "x"}), None));
    }
}
