//! Where li3g's Redis is and how to reach it: one URL names a single server, a master watched
//! by Sentinel, or a Cluster, and [`RedisTarget`] turns it into connections. Every part of li3g
//! that talks to Redis (the schedule, the scheduler's wake-up subscription, the client's
//! scheduling and status) opens its connections here, so authentication, TLS, failover and
//! slot routing are decided in one place.
//!
//! URL forms ([`RedisTarget::from_url`]):
//! - `redis://[user:password@]host[:port][/db]` and `unix:///path[?db=N]`: one server;
//!   `user:password` is an ACL user (a password alone is the `default` user's, `requirepass`).
//! - `rediss://...`: the same over TLS (rustls). The server's certificate is checked against the
//!   system's roots, or only against the CA file given as `tls_ca` (`redis_tls_ca` in the
//!   configuration: a URL cannot carry a file's contents).
//! - `redis+sentinel://[user:password@]host1[:port],host2[:port]/master_name[/db]`: the
//!   sentinels are asked where `master_name` is at every (re)connection; the credentials are
//!   the master's (the sentinels are asked without them). Port 26379 when a host names none.
//!   `rediss+sentinel://`: TLS to the sentinels and to the master, both checked against the
//!   same roots (`tls_ca`), so that nobody on the path can forge the sentinels' answer and send
//!   li3g (and its password) to another "master". `?sentinel_tls=off` after the path reaches
//!   the sentinels in plaintext and only the master over TLS, for sentinels without a
//!   `tls-port` (weaker: the answer can be forged, and only the master's certificate check then
//!   stands between li3g and a forged master).
//! - `redis+cluster://[user:password@]host1[:port],host2[:port]` (`rediss+cluster://`): a Redis
//!   Cluster, seeded by those nodes; commands follow `MOVED`/`ASK`. Port 6379 when none.
//!
//! Blocking connections only (no runtime, no threads: safe in processes that fork). Nothing
//! connects until asked. Errors never show the password.

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Cmd, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisResult, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a Redis URL (or its CA file) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL does not parse.
    #[error("{url:?} is not a Redis URL ({why}); expected redis[s]://[user:password@]host[:port][/db], unix:///path, redis[s]+sentinel://host:port,.../master[/db] or redis[s]+cluster://host:port,...")]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("the Redis TLS CA file {path}: {why}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// What a URL names (no connection made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One server.
    Single,
    /// A master watched by Sentinel.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
}

/// A parsed Redis URL with its TLS roots: makes connections to it.
pub struct RedisTarget {
    url: String,
    ca: Option<Vec<u8>>,
    inner: Inner,
}

enum Inner {
    Single(redis::Client),
    Sentinel(Box<Sentinel>),
    Cluster(ClusterClient),
}

/// A master watched by Sentinel: the sentinels to ask, in order, and how to reach the master
/// they name. (Not the redis crate's `SentinelClient`: its blocking connections to the sentinels
/// and to the master have no timeouts, so one stalled sentinel, or a master stalled before the
/// sentinels notice, blocked every reconnection for good, SIGTERM included.)
struct Sentinel {
    /// Each with TLS when `sentinel_tls`.
    sentinels: Vec<ConnectionInfo>,
    master: String,
    /// The master's credentials and database.
    redis: redis::RedisConnectionInfo,
    /// TLS to the master.
    tls: bool,
    /// TLS to the sentinels (`rediss+sentinel://`, unless `?sentinel_tls=off`).
    sentinel_tls: bool,
}

/// How long one sentinel may take to connect and to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

impl Clone for RedisTarget {
    fn clone(&self) -> RedisTarget {
        // It parsed once with these; building it again cannot fail.
        RedisTarget::build(&self.url, self.ca.clone()).expect("a URL that parsed once parses again")
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget").field("url", &crate::config::redact_url(&self.url)).finish()
    }
}

/// A connection from [`RedisTarget::connect`]: to one server (the master, under Sentinel) or
/// to a Cluster. Scripts and pipelines run on it as on any [`ConnectionLike`]; on a Cluster a
/// pipeline goes to the node of its first command's key (li3g's pipelines touch one slot).
pub enum RedisConn {
    /// One server.
    Single(redis::Connection),
    /// A Cluster.
    Cluster(Box<ClusterConnection>),
}

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one answer may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn bad(url: &str, why: impl std::fmt::Display) -> TargetError {
    TargetError::BadUrl { url: crate::config::redact_url(url), why: why.to_string() }
}

impl RedisTarget {
    /// The target `url` names, with `tls_ca` (a PEM file) as the only trusted root for TLS
    /// when given. Nothing connects yet.
    ///
    /// # Errors
    /// [`TargetError`] for a URL that does not parse, or a CA file that cannot be read.
    pub fn from_url(url: &str, tls_ca: Option<&Path>) -> Result<RedisTarget, TargetError> {
        let ca = match tls_ca {
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|err| TargetError::Ca { path: path.into(), why: err.to_string() })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(TargetError::Ca { path: path.into(), why: "holds no PEM certificate".into() });
                }
                Some(pem)
            }
            None => None,
        };
        RedisTarget::build(url, ca)
    }

    /// What `url` names, if it parses (for checking a configuration without connecting).
    ///
    /// # Errors
    /// [`TargetError::BadUrl`].
    pub fn check_url(url: &str) -> Result<Kind, TargetError> {
        Ok(RedisTarget::build(url, None)?.kind())
    }

    fn build(url: &str, ca: Option<Vec<u8>>) -> Result<RedisTarget, TargetError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(url, "no scheme"))?;
        let certs = || redis::TlsCertificates { client_tls: None, root_cert: ca.clone() };
        let inner = match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                let info = url
                    .into_connection_info()
                    .map_err(|err| bad(url, err))?
                    .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                if scheme == "rediss" {
                    install_crypto();
                }
                let client = match (&ca, scheme) {
                    (Some(_), "rediss") => redis::Client::build_with_tls(info, certs()),
                    _ => redis::Client::open(info),
                };
                Inner::Single(client.map_err(|err| bad(url, err))?)
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (userinfo, hosts, path) = split(url, rest)?;
                let tls = scheme.starts_with("rediss");
                let (path, sentinel_tls) = match path.split_once('?') {
                    None => (path, tls),
                    Some((path, "sentinel_tls=off")) if tls => (path, false),
                    Some((path, "sentinel_tls=on")) if tls => (path, true),
                    Some((_, query)) if !tls => {
                        return Err(bad(
                            url,
                            format!(
                            "{query:?}: redis+sentinel:// takes no options (sentinel_tls is for rediss+sentinel://)"
                        ),
                        ))
                    }
                    Some((_, query)) => {
                        return Err(bad(url, format!("unknown option {query:?} (sentinel_tls=off or sentinel_tls=on)")))
                    }
                };
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let master = parts.next().ok_or_else(|| bad(url, "no master name after the hosts"))?;
                let db: i64 = match parts.next() {
                    Some(db) => db.parse().map_err(|_| bad(url, format!("{db:?} is not a database number")))?,
                    None => 0,
                };
                let mut sentinels = Vec::new();
                let mut auth = None;
                let sentinel_scheme = if sentinel_tls { "rediss" } else { "redis" };
                for host in &hosts {
                    let info = node(url, sentinel_scheme, userinfo, host, 26379)?;
                    auth.get_or_insert_with(|| info.redis_settings().clone());
                    // The sentinels are asked without the master's credentials.
                    sentinels.push(
                        info.addr()
                            .clone()
                            .into_connection_info()
                            .map_err(|err| bad(url, err))?
                            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)),
                    );
                }
                let redis = auth.unwrap_or_default().set_db(db);
                if tls {
                    install_crypto();
                }
                Inner::Sentinel(Box::new(Sentinel { sentinels, master: master.to_string(), redis, tls, sentinel_tls }))
            }
            "redis+cluster" | "rediss+cluster" => {
                let (userinfo, hosts, path) = split(url, rest)?;
                if !path.trim_matches('/').is_empty() && path.trim_matches('/') != "0" {
                    return Err(bad(url, "a Cluster has only database 0"));
                }
                let node_scheme = if scheme.starts_with("rediss") { "rediss" } else { "redis" };
                let nodes = hosts
                    .iter()
                    .map(|host| node(url, node_scheme, userinfo, host, 6379))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(IO_TIMEOUT)
                    .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                if node_scheme == "rediss" {
                    install_crypto();
                    if ca.is_some() {
                        builder = builder.certs(certs());
                    }
                }
                Inner::Cluster(builder.build().map_err(|err| bad(url, err))?)
            }
            other => return Err(bad(url, format!("unknown scheme {other:?}"))),
        };
        Ok(RedisTarget { url: url.to_string(), ca, inner })
    }

    /// What it names.
    pub fn kind(&self) -> Kind {
        match self.inner {
            Inner::Single(_) => Kind::Single,
            Inner::Sentinel(_) => Kind::Sentinel,
            Inner::Cluster(_) => Kind::Cluster,
        }
    }

    /// A new connection, with timeouts set: to the server, to the master the sentinels name
    /// now, or to the Cluster.
    ///
    /// # Errors
    /// What Redis (or the sentinels) answered: a refused password is
    /// [`redis::ErrorKind`]`::AuthenticationFailed`.
    pub fn connect(&mut self) -> RedisResult<RedisConn> {
        self.connect_with(CONNECT_TIMEOUT, || IO_TIMEOUT)
    }

    /// As [`RedisTarget::connect`], connecting and the first answer within `timeout` in all
    /// instead of the defaults (2 s, then 10 s per answer): for a caller that must answer soon,
    /// e.g. the monitor's dashboard actions. Each answer waits at most what was left of
    /// `timeout` once connected (at least a third of it); a Cluster's connections and the
    /// Sentinel lookup keep their defaults.
    ///
    /// # Errors
    /// As [`RedisTarget::connect`].
    pub fn connect_within(&mut self, timeout: Duration) -> RedisResult<RedisConn> {
        // Connecting (with its setup commands, each waited for up to the connect timeout) gets
        // two thirds; the first answer what is left of `timeout`, at least the last third.
        let started = std::time::Instant::now();
        let io = move || timeout.saturating_sub(started.elapsed()).max(timeout / 3);
        self.connect_with(timeout * 2 / 3, io)
    }

    fn connect_with(&mut self, connect: Duration, io: impl Fn() -> Duration) -> RedisResult<RedisConn> {
        let single = |client: &redis::Client| -> RedisResult<RedisConn> {
            let conn = client.get_connection_with_timeout(connect)?;
            let io = io();
            conn.set_read_timeout(Some(io))?;
            conn.set_write_timeout(Some(io))?;
            Ok(RedisConn::Single(conn))
        };
        match &mut self.inner {
            Inner::Single(client) => single(client),
            Inner::Sentinel(sentinel) => {
                // A sentinel whose view lags (just after a failover, or cut off from the
                // others) may name a server that is a replica now: ask the next one.
                let mut from = 0;
                loop {
                    let (i, info) = sentinel.master_info_from(from, self.ca.as_deref())?;
                    let client = client_for(info, sentinel.tls, self.ca.as_deref())?;
                    match Sentinel::check_master(single(&client)?) {
                        Err(err) if err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel => {
                            if i + 1 >= sentinel.sentinels.len() {
                                return Err(err);
                            }
                            from = i + 1;
                        }
                        checked => return checked,
                    }
                }
            }
            Inner::Cluster(cluster) => Ok(RedisConn::Cluster(Box::new(cluster.get_connection()?))),
        }
    }

    /// Where to subscribe to a channel, and the TLS roots for it (`None`: the system's): the
    /// server, the master the sentinels name now, or one of a Cluster's seed nodes (a Cluster
    /// delivers every `PUBLISH` to every node). `attempt` rotates through a Cluster's seeds.
    ///
    /// # Errors
    /// What the sentinels answered.
    pub fn subscriber(&mut self, attempt: usize) -> RedisResult<(ConnectionInfo, Option<&[u8]>)> {
        let info = match &mut self.inner {
            Inner::Single(client) => client.get_connection_info().clone(),
            Inner::Sentinel(sentinel) => sentinel.master_info_from(0, self.ca.as_deref())?.1,
            Inner::Cluster(_) => {
                let (_, rest) = self.url.split_once("://").expect("parsed");
                let (userinfo, hosts, _) = split(&self.url, rest).expect("parsed");
                let scheme = if self.url.starts_with("rediss") { "rediss" } else { "redis" };
                node(&self.url, scheme, userinfo, hosts[attempt % hosts.len()], 6379).expect("parsed")
            }
        };
        Ok((info, self.ca.as_deref()))
    }
}

impl Sentinel {
    /// The master's address as the first sentinel from number `from` on that answers names it
    /// (each sentinel tried in turn, each bounded by [`SENTINEL_TIMEOUT`], over TLS checked
    /// against `ca` with `rediss+sentinel://`), with the master's credentials, database and
    /// TLS, and that sentinel's number. When none answers, the last one's error, naming that
    /// sentinel.
    fn master_info_from(&self, from: usize, ca: Option<&[u8]>) -> RedisResult<(usize, ConnectionInfo)> {
        let mut last = None;
        for (i, sentinel) in self.sentinels.iter().enumerate().skip(from) {
            let asked = (|| -> RedisResult<Option<(String, u16)>> {
                let conn = client_for(sentinel.clone(), self.sentinel_tls, ca)?
                    .get_connection_with_timeout(SENTINEL_TIMEOUT)?;
                conn.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
                conn.set_write_timeout(Some(SENTINEL_TIMEOUT))?;
                let mut conn = conn;
                redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master).query(&mut conn)
            })();
            match asked {
                Ok(Some((host, port))) => {
                    let addr = if self.tls {
                        ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
                    } else {
                        ConnectionAddr::Tcp(host, port)
                    };
                    let info = addr
                        .into_connection_info()?
                        .set_redis_settings(self.redis.clone())
                        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                    return Ok((i, info));
                }
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "the sentinel knows no master of that name",
                        self.master.clone(),
                    )))
                }
                Err(err) => last = Some(self.sentinel_error(sentinel, err)),
            }
        }
        Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no sentinel"))))
    }

    /// `err` from asking `sentinel`, saying which sentinel, and with TLS what a handshake
    /// failure may mean; its kind kept (an I/O error stays one, for the callers' retries).
    fn sentinel_error(&self, sentinel: &ConnectionInfo, err: redis::RedisError) -> redis::RedisError {
        if err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel || err.code().is_some() {
            return err;
        }
        let addr = sentinel.addr();
        let what = if err.is_timeout() { format!("no answer within {SENTINEL_TIMEOUT:?}") } else { err.to_string() };
        let detail = if self.sentinel_tls {
            format!(
                "{addr} over TLS: {what} (rediss+sentinel:// reaches the sentinels over TLS, checked against \
                 redis_tls_ca: a sentinel without a tls-port, or with a certificate of another CA or for another \
                 host, is refused; ?sentinel_tls=off asks them in plaintext)"
            )
        } else {
            format!("{addr}: {what}")
        };
        redis::RedisError::from((err.kind(), "cannot ask a sentinel", detail))
    }

    /// `conn` if its server says it is a master (`ROLE`): a sentinel may still name a demoted
    /// one for a moment. A user whose ACL refuses `ROLE` is taken at its word (a write to a
    /// replica is refused with `READONLY`, which makes a new connection).
    fn check_master(mut conn: RedisConn) -> RedisResult<RedisConn> {
        match redis::cmd("ROLE").query::<Vec<Value>>(&mut conn) {
            Ok(role) if matches!(role.first(), Some(Value::BulkString(r)) if r.as_slice() != b"master") => {
                Err(redis::RedisError::from((
                    redis::ErrorKind::MasterNameNotFoundBySentinel,
                    "the server the sentinels name is not a master (yet)",
                )))
            }
            Err(err) if err.code() != Some("NOPERM") => Err(err),
            _ => Ok(conn),
        }
    }
}

/// A client for `info`: over TLS (when `info` is a TLS address) with `ca` as the only root when
/// given and `tls` is asked for, else the system's roots.
fn client_for(info: ConnectionInfo, tls: bool, ca: Option<&[u8]>) -> RedisResult<redis::Client> {
    match (ca, tls) {
        (Some(ca), true) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) },
        ),
        _ => redis::Client::open(info),
    }
}

/// A URL's authority and path after `scheme://`: its `user:password` (if any), its hosts
/// (comma-separated) and what follows them.
fn split<'a>(url: &str, rest: &'a str) -> Result<(Option<&'a str>, Vec<&'a str>, &'a str), TargetError> {
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(bad(url, "no host"));
    }
    Ok((userinfo, hosts, path))
}

/// One node's connection info: `scheme://[userinfo@]host[:port]` parsed by the redis crate
/// (which decodes percent-escapes in the credentials).
fn node(url: &str, scheme: &str, userinfo: Option<&str>, host: &str, port: u16) -> Result<ConnectionInfo, TargetError> {
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    let node = match userinfo {
        Some(userinfo) => format!("{scheme}://{userinfo}@{host}/"),
        None => format!("{scheme}://{host}/"),
    };
    node.into_connection_info().map_err(|err| bad(url, err))
}

/// rustls needs a process-wide crypto provider; ring's, unless one is installed already.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS client configuration for a hand-made connection (the wake-up subscription): `ca` as
/// the only root, or the system's roots.
///
/// # Errors
/// When `ca` holds no usable certificate, or the system has no roots.
pub fn tls_config(ca: Option<&[u8]>) -> std::io::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|err| std::io::Error::other(format!("the Redis TLS CA: {err}")))?;
                roots.add(cert).map_err(|err| std::io::Error::other(format!("the Redis TLS CA: {err}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(std::io::Error::other("no TLS root certificate to check Redis's against"));
    }
    Ok(std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

/// The host a TLS connection to `addr` checks the certificate for, if `addr` is TLS.
pub fn tls_host(addr: &ConnectionAddr) -> Option<&str> {
    match addr {
        ConnectionAddr::TcpTls { host, .. } => Some(host),
        _ => None,
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            RedisConn::Single(c) => c.req_command(cmd),
            RedisConn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }

    /// Pipelines work on both: the Cluster connection sends a whole pipeline to the node of its
    /// first command's key, which is right for li3g's (every key of one schedule in one slot).
    fn supports_pipelining(&self) -> bool {
        true
    }

    fn check_connection(&mut self) -> bool {
        match self {
            RedisConn::Single(c) => c.check_connection(),
            RedisConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            RedisConn::Single(c) => c.is_open(),
            RedisConn::Cluster(c) => c.is_open(),
        }
    }
}

/// The Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key), as
/// `CLUSTER KEYSLOT` computes it.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_s() {
        // `CLUSTER KEYSLOT` on redis-server 7.0: foo 12182, {li3g}:scheduled 5519 (its tag).
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{li3g}:scheduled"), slot("li3g"));
        assert_eq!(slot("{li3g}:x.status"), slot("{li3g}job_scheduled"));
        assert_eq!(slot("{}x"), slot("{}x"), "an empty tag hashes the whole key");
        assert_ne!(slot("{app}:scheduled"), slot("{li3g}:scheduled"));
    }

    #[test]
    fn urls_parse_by_kind() {
        assert_eq!(RedisTarget::check_url("redis://u:p%40ss@127.0.0.1:6380/2").unwrap(), Kind::Single);
        assert_eq!(RedisTarget::check_url("rediss://127.0.0.1/0").unwrap(), Kind::Single);
        assert_eq!(RedisTarget::check_url("redis+sentinel://h1:26379,h2/mymaster/1").unwrap(), Kind::Sentinel);
        assert_eq!(RedisTarget::check_url("redis+cluster://u:p@h1:7000,h2:7001").unwrap(), Kind::Cluster);
        for bad in
            ["redis+sentinel://h1:26379", "redis+cluster://h1/3", "memcached://h", "redis+cluster:///", "nothing"]
        {
            let err = RedisTarget::check_url(bad).unwrap_err().to_string();
            assert!(err.contains("is not a Redis URL"), "{bad}: {err}");
        }
        assert_eq!(RedisTarget::check_url("rediss+sentinel://h1,h2/m/0?sentinel_tls=off").unwrap(), Kind::Sentinel);
        for bad in ["redis+sentinel://h1/m/0?sentinel_tls=off", "rediss+sentinel://h1/m?tls=no"] {
            let err = RedisTarget::check_url(bad).unwrap_err().to_string();
            assert!(err.contains("sentinel_tls"), "{bad}: {err}");
        }
        let err = RedisTarget::check_url("redis+sentinel://u:secret@h1/").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = RedisTarget::from_url("rediss://127.0.0.1/", Some(&path)).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = RedisTarget::from_url("rediss://127.0.0.1/", Some(&dir.path().join("none"))).unwrap_err().to_string();
        assert!(err.contains("No such file"), "{err}");
    }
}
