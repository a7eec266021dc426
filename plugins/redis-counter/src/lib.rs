//! An example plugin with per-worker state: one Redis connection per worker, opened by the
//! plugin's constructor from its settings and used by every job.
//!
//! ```toml
//! [default.plugins.redis_counter]
//! url = "redis://127.0.0.1:6379/0"
//! ```
//!
//! - `Counter::incr(key)`: `INCR key` on the worker's connection; returns the new value.
//! - `Counter::whoami`: `{"id": CLIENT ID, "pid": ...}`: which connection and which process ran
//!   the job (the tests use it to prove that no connection is shared between processes).
//! - `Counter::pid`: the process that ran the job; it takes no state, so under `--atomic` its
//!   jobs open no connection.
//!
//! The connection is a `RefCell` because tasks get `&State`; a worker runs one job at a time,
//! so it is never borrowed twice. Under `--atomic`, each job child builds its own.

use li3g_plugin_api::{plugin, Job};
use serde::Deserialize;
use std::cell::RefCell;

/// The plugin's settings: its section of the li3g configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Redis server, `redis://host:port/db`.
    pub url: String,
    /// The name the connection shows in `CLIENT LIST`.
    #[serde(default = "default_name")]
    pub client_name: String,
    /// When set, the state's destructor counts its clean closes in this key (`INCR`), which
    /// shows when the host drops the state (the tests use it).
    #[serde(default)]
    pub closed_key: Option<String>,
}

fn default_name() -> String {
    "li3g-redis-counter".into()
}

/// The per-worker state: an open connection.
pub struct Redis {
    conn: RefCell<redis::Connection>,
    closed_key: Option<String>,
}

impl Drop for Redis {
    /// The host drops the state when the worker ends gracefully (or, under `--atomic`, when
    /// the job is done); the connection closes with it.
    fn drop(&mut self) {
        if let Some(key) = &self.closed_key {
            let _ = redis::cmd("INCR").arg(key).query::<i64>(self.conn.get_mut());
        }
    }
}

/// The constructor: opens the connection and names it. Runs in the worker before its first job.
pub fn connect(settings: Settings) -> Result<Redis, redis::RedisError> {
    let mut conn = redis::Client::open(settings.url.as_str())?.get_connection()?;
    redis::cmd("CLIENT").arg("SETNAME").arg(&settings.client_name).query::<()>(&mut conn)?;
    Ok(Redis { conn: RefCell::new(conn), closed_key: settings.closed_key })
}

/// `Counter::incr(key)`.
pub fn incr(redis: &Redis, key: String) -> Result<i64, redis::RedisError> {
    redis::cmd("INCR").arg(key).query(&mut *redis.conn.borrow_mut())
}

/// Which connection and process ran a job.
#[derive(serde::Serialize)]
pub struct Whoami {
    /// The connection's `CLIENT ID`.
    pub id: i64,
    /// The process that ran the job.
    pub pid: u32,
    /// The job id.
    pub job: String,
}

/// `Counter::whoami`: this job's connection id and process.
pub fn whoami(redis: &Redis, job: &Job) -> Result<Whoami, redis::RedisError> {
    let id = redis::cmd("CLIENT").arg("ID").query(&mut *redis.conn.borrow_mut())?;
    Ok(Whoami { id, pid: std::process::id(), job: job.id().to_string() })
}

/// `Counter::pid`: the process that ran the job (no state needed).
pub fn pid() -> u32 {
    std::process::id()
}

plugin! {
    name: "redis_counter",
    state: connect,
    tasks: {
        "Counter::incr"(key) => incr,
        "Counter::whoami" => whoami,
        "Counter::pid" => pid,
    }
}
