//! An example plugin with per-worker state: one Redis connection per worker, opened by the
//! plugin's constructor from its settings and used by every job.
//!
//! ```toml
//! [default.plugins.redis_counter]
//! url = "redis://127.0.0.1:6379/0"      # or redis://user:password@host/db (an ACL user), rediss://... (TLS)
//! tls_ca = "/etc/li3g/redis-ca.pem"     # for rediss://: the only CA trusted (default: the system's)
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
//!
//! Copy these two habits into a plugin of your own:
//! - Timeouts on connect, read and write (5 s): a Redis that accepts but
//!   never answers fails the constructor or the job instead of blocking the worker forever.
//! - Recovery: the host keeps a state for the worker's life, so the state heals itself. After
//!   an I/O error (Redis restarted, connection dropped, timeout) the connection is dropped and
//!   the job fails; the next job opens a new one.

use li3g_plugin_api::{plugin, Job};
use serde::Deserialize;
use std::cell::RefCell;

/// The plugin's settings: its section of the li3g configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The Redis server, `redis[s]://[user:password@]host:port/db`. Without it (no section at all, as in the
    /// quick start) the plugin loads quietly and its Redis tasks fail, saying to set it.
    #[serde(default)]
    pub url: Option<String>,
    /// For `rediss://`: the CA file (PEM) that signed the server's certificate, trusted alone;
    /// without it, the system's roots.
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the connection shows in `CLIENT LIST`.
    #[serde(default = "default_name")]
    pub client_name: String,
    /// When set, the state's destructor counts its clean closes in this key (`INCR`), which
    /// shows when the host drops the state (the tests use it).
    #[serde(default)]
    pub closed_key: Option<String>,
}

/// How long a connect, and each read and write, may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn default_name() -> String {
    "li3g-redis-counter".into()
}

/// The per-worker state: a connection, opened again after one broke.
pub struct Redis {
    conn: RefCell<Option<redis::Connection>>,
    settings: Settings,
}

impl Redis {
    /// Opens a connection with timeouts and names it.
    fn open(settings: &Settings) -> Result<redis::Connection, redis::RedisError> {
        let Some(url) = settings.url.as_deref() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis configured",
                "set url in the plugin's section [default.plugins.redis_counter]".to_string(),
            )));
        };
        let client = if url.starts_with("rediss://") {
            // rustls needs a crypto provider: ring's (no OpenSSL).
            let _ = rustls::crypto::ring::default_provider().install_default();
            match &settings.tls_ca {
                Some(path) => {
                    let root_cert = std::fs::read(path).map_err(|err| {
                        redis::RedisError::from((
                            redis::ErrorKind::InvalidClientConfig,
                            "cannot read tls_ca",
                            format!("{}: {err}", path.display()),
                        ))
                    })?;
                    redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
                    )?
                }
                None => redis::Client::open(url)?,
            }
        } else {
            redis::Client::open(url)?
        };
        let mut conn = client.get_connection_with_timeout(TIMEOUT)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        redis::cmd("CLIENT").arg("SETNAME").arg(&settings.client_name).query::<()>(&mut conn)?;
        Ok(conn)
    }

    /// Runs `command` on the connection, opening one first if the last broke; drops it after
    /// an error that leaves it unusable, so the next job reconnects.
    fn with<T>(&self, command: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        let mut slot = self.conn.borrow_mut();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(Self::open(&self.settings)?),
        };
        let result = command(conn);
        if let Err(err) = &result {
            if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() || err.is_unrecoverable_error() {
                *slot = None;
            }
        }
        result
    }
}

impl Drop for Redis {
    /// The host drops the state when the worker ends gracefully (or, under `--atomic`, when
    /// the job is done); the connection closes with it.
    fn drop(&mut self) {
        if let (Some(key), Some(conn)) = (&self.settings.closed_key, self.conn.get_mut()) {
            let _ = redis::cmd("INCR").arg(key).query::<i64>(conn);
        }
    }
}

/// The constructor: opens the connection and names it. Runs in the worker before its first
/// job. Without a `url` it opens nothing (each Redis task then fails, saying why).
pub fn connect(settings: Settings) -> Result<Redis, redis::RedisError> {
    let conn = match settings.url {
        Some(_) => Some(Redis::open(&settings)?),
        None => None,
    };
    Ok(Redis { conn: RefCell::new(conn), settings })
}

/// `Counter::incr(key)`.
pub fn incr(redis: &Redis, key: String) -> Result<i64, redis::RedisError> {
    redis.with(|conn| redis::cmd("INCR").arg(&key).query(conn))
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
    let id = redis.with(|conn| redis::cmd("CLIENT").arg("ID").query(conn))?;
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
