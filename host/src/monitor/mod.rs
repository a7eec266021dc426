//! The monitor: one more supervised child (kind `monitor`) serving, over HTTP, what the pool
//! is doing: `GET /metrics` (Prometheus text, [`metrics`]), `GET /api/status` (the JSON of
//! `li3g-host status --json`) and the dashboard ([`dashboard`]) with its actions (`POST
//! /dead/ID/retry`, `POST /dead/ID/delete`, `POST /scheduled/ID/cancel`).
//!
//! It never forks, so it may have threads: the HTTP server ([`http`]) reads every connection
//! from one thread with `mio` and answers from a fixed few, with limits on connections, sizes
//! and time (a slow or hostile client cannot take a thread or stall a scrape). What it asks
//! the job servers and Redis is cached and asked off the request's path ([`sources`]): many
//! scrapes cost one admin question a second, and a dead or stopped source makes an answer say
//! so (`li3g_server_up 0`, an error line) instead of waiting for it.
//!
//! Security: loopback by default; the daemon refuses to bind elsewhere without
//! `metrics_token` ([`check_bind`]), and with a token every request must carry it
//! (`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a browser). A state-changing request is
//! a POST with the monitor's CSRF token (random per monitor process) in its form; a GET never
//! changes anything (a GET on an action is refused, 405).

pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod sources;

use crate::config::Config;
use crate::scheduler::{Schedule, ScheduleError};
use dashboard::{Page, View};
use http::{Request, Response};
use sources::Sources;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the monitor listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Why the monitor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Not an address.
    #[error("metrics: {0:?} is not an address like 127.0.0.1:9464")]
    Address(String),
    /// Not loopback and no token.
    #[error("metrics: {0} is not a loopback address; set metrics_token to serve it there")]
    NoToken(SocketAddr),
    /// Cannot listen.
    #[error("metrics: cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
}

/// Parses `addr` and checks that it may be bound: loopback, or a token is set.
///
/// # Errors
/// [`MonitorError::Address`], [`MonitorError::NoToken`].
pub fn check_bind(addr: &str, token: Option<&str>) -> Result<SocketAddr, MonitorError> {
    let parsed: SocketAddr = addr.parse().map_err(|_| MonitorError::Address(addr.to_string()))?;
    if !parsed.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(MonitorError::NoToken(parsed));
    }
    Ok(parsed)
}

/// Binds the monitor's address (in the supervisor, before anything forks, so an error is
/// reported at once and the port is kept across the monitor's restarts).
///
/// # Errors
/// [`MonitorError`].
pub fn bind(addr: &str, token: Option<&str>) -> Result<TcpListener, MonitorError> {
    let parsed = check_bind(addr, token)?;
    TcpListener::bind(parsed).map_err(|e| MonitorError::Listen(parsed, e))
}

/// 32 hex digits from the kernel's random source: the CSRF token of this monitor process.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 16, "getrandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without an early exit on the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `%XX` and `+` decoded.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every byte but `A-Za-z0-9-_.` as `%XX`.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `key=value&...` pairs, decoded.
fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Monitor<'a> {
    config: &'a Config,
    csrf: String,
    sources: Sources,
    /// An action (retry, delete, cancel) is talking to Redis: at most one at a time, so a
    /// Redis that does not answer takes one handler thread, not all of them.
    acting: AtomicBool,
}

/// How long a dashboard action waits for Redis (to connect, and for each answer): a handler
/// thread is not Redis's for its default 10 s.
const ACTION_TIMEOUT: Duration = Duration::from_millis(1500);

/// Clears [`Monitor::acting`] however the action ends.
struct Acting<'a>(&'a AtomicBool);

impl Drop for Acting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn answer(status: u16, content_type: &str, body: String) -> Response {
    Response::new(status, content_type, body)
}

impl Monitor<'_> {
    fn report(&self) -> crate::status::Report {
        let snapshot = match crate::scoreboard::current::board() {
            Some(board) => board.snapshot(),
            None => empty_snapshot(),
        };
        crate::status::report_with(&snapshot, self.sources.queues(), self.sources.scheduler())
    }

    fn schedule(&self) -> Option<Schedule> {
        Schedule::open(self.config.redis.as_deref()?, &self.config.scheduler).ok()
    }

    fn handle(&self, request: &Request) -> Response {
        let tokenless = self.config.metrics_token.as_deref().is_none_or(str::is_empty);
        if tokenless && !request.header("Host").is_none_or(host_is_an_address) {
            // DNS rebinding: a web page whose name now points at 127.0.0.1 would be
            // same-origin with the dashboard and could read its CSRF token. Without a bearer
            // token only an address (or `localhost`) may be named.
            return Response::text(403, "name this monitor by its address (or set metrics_token)\n");
        }
        let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
        let query_token = form(query).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v);
        if let Some(token) = self.config.metrics_token.as_deref().filter(|t| !t.is_empty()) {
            let bearer = request.header("Authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::to_string);
            let given = bearer.or_else(|| query_token.clone());
            if !given.is_some_and(|g| same(&g, token)) {
                return Response::text(401, "a bearer token is required\n").with_header("WWW-Authenticate", "Bearer");
            }
        }
        let link_query = query_token.map(|t| format!("?token={}", encode(&t))).unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET" | "HEAD", "/metrics") => {
                answer(200, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&self.report()))
            }
            ("GET" | "HEAD", "/api/status") => {
                let json = serde_json::to_string_pretty(&self.report()).unwrap_or_default();
                answer(200, "application/json", json)
            }
            ("GET" | "HEAD", path) if Page::at(path).is_some() => {
                let page = Page::at(path).expect("matched");
                self.page(page, &link_query, None)
            }
            ("POST", path) if action_of(path).is_some() => self.action(request, path, &link_query),
            (_, path) if action_of(path).is_some() => {
                Response::text(405, "use POST (with the form's token)\n").with_header("Allow", "POST")
            }
            ("GET" | "HEAD", _) => Response::text(404, "not found\n"),
            // Every other address only reads: POST and the rest are not for it.
            (_, path) if path == "/metrics" || path == "/api/status" || Page::at(path).is_some() => {
                Response::text(405, "read only\n").with_header("Allow", "GET, HEAD")
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    fn page(&self, page: Page, query: &str, notice: Option<&str>) -> Response {
        let report = self.report();
        let (mut pending, mut dead) = (Vec::new(), Vec::new());
        if matches!(page, Page::Scheduled | Page::Dead) {
            if let Some(Ok((p, d))) = self.sources.listing() {
                (pending, dead) = (p, d);
            }
        }
        let view = View { report: &report, pending: &pending, dead: &dead, csrf: &self.csrf, query, notice };
        answer(200, "text/html; charset=utf-8", dashboard::render(page, &view))
            // No other site may show it in a frame and have a click land on an action.
            .with_header("X-Frame-Options", "DENY")
            .with_header("Content-Security-Policy", "frame-ancestors 'none'")
    }

    fn action(&self, request: &Request, path: &str, query: &str) -> Response {
        let Some((what, id)) = action_of(path) else {
            return Response::text(404, "not found\n");
        };
        let body = String::from_utf8_lossy(&request.body);
        let csrf = form(&body).into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v);
        if !csrf.is_some_and(|c| same(&c, &self.csrf)) {
            return Response::text(403, "missing or wrong CSRF token\n");
        }
        let Some(store) = self.schedule() else {
            return Response::text(409, "no Redis configured\n");
        };
        if self.acting.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Response::text(503, "an action is in progress; try again\n").with_header("Retry-After", "2");
        }
        let _acting = Acting(&self.acting);
        let mut store = store.with_timeout(ACTION_TIMEOUT);
        let (done, page) = match what {
            Action::Retry => (store.requeue(&id), Page::Dead),
            Action::Delete => (store.delete_dead(&id), Page::Dead),
            Action::Cancel => (store.cancel(&id), Page::Scheduled),
        };
        self.sources.schedule_changed();
        let notice = match &done {
            Ok(true) => format!("{} job {id}", what.done()),
            Ok(false) => format!("no such job {id}"),
            Err(ScheduleError::Redis(err)) if err.is_timeout() || err.is_io_error() => format!(
                "cannot {} job {id}: Redis did not answer within {:.1}s ({err})",
                what.verb(),
                ACTION_TIMEOUT.as_secs_f64()
            ),
            Err(err) => format!("cannot {} job {id}: {err}", what.verb()),
        };
        if matches!(&done, Err(ScheduleError::Redis(e)) if e.is_timeout() || e.is_io_error()) {
            // Not the page: rendering it would wait for the same Redis once more.
            return Response::text(503, &format!("{notice}\n"));
        }
        let mut page = self.page(page, query, Some(&notice));
        if !matches!(done, Ok(true)) {
            page.status = 409;
        }
        page
    }
}

/// Whether a `Host` header names an IP address or `localhost` (with or without a port).
fn host_is_an_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:9464`; nothing but a port after the `]`.
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => name,
            Some((name, port)) if port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) => name,
            _ => "",
        },
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Delete,
    Cancel,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Delete => "delete",
            Action::Cancel => "cancel",
        }
    }
    fn done(self) -> &'static str {
        match self {
            Action::Retry => "Requeued",
            Action::Delete => "Deleted",
            Action::Cancel => "Cancelled",
        }
    }
}

/// `/dead/ID/retry`, `/dead/ID/delete`, `/scheduled/ID/cancel`.
fn action_of(path: &str) -> Option<(Action, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts[..] {
        ["dead", id, "retry"] => Some((Action::Retry, decode(id))),
        ["dead", id, "delete"] => Some((Action::Delete, decode(id))),
        ["scheduled", id, "cancel"] => Some((Action::Cancel, decode(id))),
        _ => None,
    }
}

fn empty_snapshot() -> crate::scoreboard::Snapshot {
    crate::scoreboard::Snapshot {
        supervisor_pid: std::os::unix::process::parent_id(),
        started_ms: 0,
        generation: 0,
        config: String::new(),
        version: env!("CARGO_PKG_VERSION").into(),
        restarts: Vec::new(),
        children: Vec::new(),
        failures: Vec::new(),
        retired: Vec::new(),
    }
}

/// The monitor child's body: serves on `listener` until `stop()`; its exit code.
pub fn serve(listener: TcpListener, config: &Config, stop: &dyn Fn() -> bool) -> i32 {
    serve_with(listener, config, &http::Limits::default(), stop)
}

/// [`serve`] with other limits (tests).
pub fn serve_with(listener: TcpListener, config: &Config, limits: &http::Limits, stop: &dyn Fn() -> bool) -> i32 {
    let monitor =
        Monitor { config, csrf: random_token(), sources: Sources::new(config), acting: AtomicBool::new(false) };
    match http::serve(&listener, limits, &|request| monitor.handle(request), stop) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("li3g-host: monitor: {err}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_off_loopback_needs_a_token() {
        assert!(check_bind("127.0.0.1:9464", None).is_ok());
        assert!(matches!(check_bind("0.0.0.0:9464", None), Err(MonitorError::NoToken(_))));
        assert!(check_bind("0.0.0.0:9464", Some("s3cret")).is_ok());
        assert!(matches!(check_bind("nowhere", None), Err(MonitorError::Address(_))));
    }

    #[test]
    fn only_addresses_are_hosts_without_a_token() {
        for host in ["127.0.0.1:9464", "127.0.0.1", "[::1]:9464", "localhost:9464", "LOCALHOST", "10.0.0.5:80"] {
            assert!(host_is_an_address(host), "{host}");
        }
        for host in ["evil.example", "evil.example:9464", "127.0.0.1.evil.example", "", "[::1", "[::1]evil.example"] {
            assert!(!host_is_an_address(host), "{host}");
        }
    }

    /// Clickjacking: another site's page could show the dashboard in a frame (named by its
    /// address, which the Host check lets in) and have a click land on Retry or Delete.
    #[test]
    fn the_dashboard_may_not_be_framed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("li3g.toml");
        std::fs::write(&file, "[default]\nservers = [\"127.0.0.1:1\"]\n").unwrap();
        let config = crate::config::load(Some(&file), "default", None).unwrap();
        let monitor = Monitor {
            config: &config,
            csrf: random_token(),
            sources: Sources::new(&config),
            acting: AtomicBool::new(false),
        };
        let ask = |method: &str, target: &str| {
            monitor.handle(&Request {
                method: method.into(),
                target: target.into(),
                headers: vec![("Host".into(), "127.0.0.1:9464".into())],
                body: format!("csrf={}", monitor.csrf).into_bytes(),
            })
        };
        for (method, target) in [("GET", "/"), ("GET", "/queues"), ("GET", "/dead"), ("HEAD", "/scheduled")] {
            let page = ask(method, target);
            assert_eq!(page.status, 200, "{target}");
            let header =
                |name: &str| page.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            assert_eq!(header("X-Frame-Options").as_deref(), Some("DENY"), "{target}: {:?}", page.headers);
            assert!(
                header("Content-Security-Policy").is_some_and(|v| v.contains("frame-ancestors 'none'")),
                "{target}: {:?}",
                page.headers
            );
        }
    }

    #[test]
    fn forms_and_paths_decode() {
        assert_eq!(form("csrf=ab%2Fc&x=a+b"), [("csrf".into(), "ab/c".into()), ("x".into(), "a b".into())]);
        assert_eq!(decode(&encode("job/1 ä")), "job/1 ä");
        assert!(matches!(action_of("/dead/j%2F1/retry"), Some((Action::Retry, id)) if id == "j/1"));
        assert!(action_of("/dead/x").is_none());
    }
}
