//! The monitor: one more supervised child (kind `monitor`) serving, over HTTP, what the pool
//! is doing: `GET /metrics` (Prometheus text, [`metrics`]), `GET /api/status` (the JSON of
//! `li3g-host status --json`) and the dashboard ([`dashboard`]) with its actions (`POST
//! /dead/ID/retry`, `POST /dead/ID/delete`, `POST /scheduled/ID/cancel`).
//!
//! It never forks, so it may have threads: the HTTP server is `tiny_http` (blocking, small,
//! well kept; it runs its accept and connection threads inside this child only). Requests are
//! answered one at a time from the loop in [`serve`], which also looks at the stop flag.
//!
//! Security: loopback by default; the daemon refuses to bind elsewhere without
//! `metrics_token` ([`check_bind`]), and with a token every request must carry it
//! (`Authorization: Bearer TOKEN`, or `?token=TOKEN` for a browser). A state-changing request is
//! a POST with the monitor's CSRF token (random per monitor process) in its form; a GET never
//! changes anything (a GET on an action is refused, 405).

pub mod dashboard;
pub mod metrics;

use crate::config::Config;
use crate::scheduler::Schedule;
use dashboard::{Page, View};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

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
}

type Answer = Response<std::io::Cursor<Vec<u8>>>;

fn answer(status: u16, content_type: &str, body: String) -> Answer {
    let header = Header::from_bytes("Content-Type", content_type).expect("a valid header");
    Response::from_string(body).with_status_code(status).with_header(header)
}

impl Monitor<'_> {
    fn report(&self) -> crate::status::Report {
        match crate::scoreboard::current::board() {
            Some(board) => crate::status::report(&board.snapshot(), self.config),
            None => crate::status::report(&empty_snapshot(), self.config),
        }
    }

    fn schedule(&self) -> Option<Schedule> {
        Schedule::open(self.config.redis.as_deref()?, &self.config.scheduler).ok()
    }

    fn handle(&self, request: &mut Request) -> Answer {
        let url = request.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let query_token = form(query).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v);
        if let Some(token) = self.config.metrics_token.as_deref().filter(|t| !t.is_empty()) {
            let bearer = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .and_then(|h| h.value.as_str().strip_prefix("Bearer ").map(str::to_string));
            let given = bearer.or_else(|| query_token.clone());
            if !given.is_some_and(|g| same(&g, token)) {
                let mut refused = answer(401, "text/plain; charset=utf-8", "a bearer token is required\n".into());
                refused.add_header(Header::from_bytes("WWW-Authenticate", "Bearer").expect("a valid header"));
                return refused;
            }
        }
        let link_query = query_token.map(|t| format!("?token={}", encode(&t))).unwrap_or_default();
        let method = request.method().clone();
        match (&method, path) {
            (Method::Get, "/metrics") => {
                answer(200, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&self.report()))
            }
            (Method::Get, "/api/status") => {
                let json = serde_json::to_string_pretty(&self.report()).unwrap_or_default();
                answer(200, "application/json", json)
            }
            (Method::Get, path) if Page::at(path).is_some() => {
                let page = Page::at(path).expect("matched");
                self.page(page, &link_query, None)
            }
            (Method::Post, path) => self.action(request, path, &link_query),
            (_, path) if action_of(path).is_some() => {
                let mut refused = answer(405, "text/plain; charset=utf-8", "use POST (with the form's token)\n".into());
                refused.add_header(Header::from_bytes("Allow", "POST").expect("a valid header"));
                refused
            }
            _ => answer(404, "text/plain; charset=utf-8", "not found\n".into()),
        }
    }

    fn page(&self, page: Page, query: &str, notice: Option<&str>) -> Answer {
        let report = self.report();
        let (mut pending, mut dead) = (Vec::new(), Vec::new());
        if matches!(page, Page::Scheduled | Page::Dead) {
            if let Some(mut store) = self.schedule() {
                pending = store.pending().unwrap_or_default();
                dead = store.dead().unwrap_or_default();
            }
        }
        let view = View { report: &report, pending: &pending, dead: &dead, csrf: &self.csrf, query, notice };
        answer(200, "text/html; charset=utf-8", dashboard::render(page, &view))
    }

    fn action(&self, request: &mut Request, path: &str, query: &str) -> Answer {
        let Some((what, id)) = action_of(path) else {
            return answer(404, "text/plain; charset=utf-8", "not found\n".into());
        };
        let mut body = String::new();
        let _ = request.as_reader().take(64 * 1024).read_to_string(&mut body);
        let csrf = form(&body).into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v);
        if !csrf.is_some_and(|c| same(&c, &self.csrf)) {
            return answer(403, "text/plain; charset=utf-8", "missing or wrong CSRF token\n".into());
        }
        let Some(mut store) = self.schedule() else {
            return answer(409, "text/plain; charset=utf-8", "no Redis configured\n".into());
        };
        let (done, page) = match what {
            Action::Retry => (store.requeue(&id), Page::Dead),
            Action::Delete => (store.delete_dead(&id), Page::Dead),
            Action::Cancel => (store.cancel(&id), Page::Scheduled),
        };
        let notice = match &done {
            Ok(true) => format!("{} job {id}", what.done()),
            Ok(false) => format!("no such job {id}"),
            Err(err) => format!("cannot {} job {id}: {err}", what.verb()),
        };
        let mut page = self.page(page, query, Some(&notice));
        if !matches!(done, Ok(true)) {
            page = page.with_status_code(409);
        }
        page
    }
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
    }
}

/// The monitor child's body: serves on `listener` until `stop()`; its exit code.
pub fn serve(listener: TcpListener, config: &Config, stop: &dyn Fn() -> bool) -> i32 {
    let server = match Server::from_listener(listener, None) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("li3g-host: monitor: {err}");
            return 2;
        }
    };
    let monitor = Monitor { config, csrf: random_token() };
    while !stop() {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(mut request)) => {
                let response = monitor.handle(&mut request);
                let _ = request.respond(response);
            }
            Ok(None) => {}
            Err(err) => {
                eprintln!("li3g-host: monitor: {err}");
                return 2;
            }
        }
    }
    0
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
    fn forms_and_paths_decode() {
        assert_eq!(form("csrf=ab%2Fc&x=a+b"), [("csrf".into(), "ab/c".into()), ("x".into(), "a b".into())]);
        assert_eq!(decode(&encode("job/1 ä")), "job/1 ä");
        assert!(matches!(action_of("/dead/j%2F1/retry"), Some((Action::Retry, id)) if id == "j/1"));
        assert!(action_of("/dead/x").is_none());
    }
}
