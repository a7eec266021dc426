//! The monitor's HTTP/1.x server: small, bounded, and hard to stall.
//!
//! Why not a crate: `tiny_http` (used before) gives every connection a thread of its own with no
//! limit, reads a request head with no deadline and no size limit, so a few hundred slow
//! half-open connections (slowloris) or one endless header line took threads and memory without
//! bound. The async servers (hyper, axum) bring a runtime for what is a handful of scrapes a
//! second. So this module is the little an operator's endpoint needs:
//! - One reader (the calling thread) waits on every connection at once with `mio`
//!   (edge-triggered epoll) and reads requests into buffers: a slow client costs a buffer, never
//!   a thread. At most [`Limits::connections`] are read at once; past that the one read longest
//!   is dropped, so a flood of idle connections cannot keep a quick scrape out. Each request
//!   must arrive whole within [`Limits::deadline`] (else 408), its head within
//!   [`Limits::head_bytes`] (else 431) and its body within [`Limits::body_bytes`] (else 413).
//! - A fixed number of handler threads ([`Limits::handlers`]) answer complete requests from a
//!   bounded queue; when it is full the request gets 503 at once.
//! - One request per connection (`Connection: close`): no keep-alive state to hold.
//!
//! Must not: block the reader on one client; grow a thread, a buffer or a queue without bound.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the server takes at most.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections being read at once.
    pub connections: usize,
    /// Bytes of a request line and headers.
    pub head_bytes: usize,
    /// Bytes of a request body.
    pub body_bytes: usize,
    /// How long a request may take to arrive, from the connection's accept.
    pub deadline: Duration,
    /// Threads answering requests.
    pub handlers: usize,
    /// Complete requests waiting for a handler.
    pub queue: usize,
    /// How long writing an answer may block.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 256,
            head_bytes: 16 * 1024,
            body_bytes: 64 * 1024,
            deadline: Duration::from_secs(5),
            handlers: 4,
            queue: 32,
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// A request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query (`/metrics?x=1`).
    pub target: String,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with a body of `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    /// Plain text.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// With one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            // A value is ours, but never let one split the head.
            let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// What the bytes read so far make.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not whole yet; `continue_wanted`: the head is read and asks for `100 Continue`.
    More { continue_wanted: bool },
    /// A whole request.
    Done(Request),
    /// A request to refuse with this status.
    Refuse(u16),
}

/// Parses `buf` (everything read from a connection so far) against `limits`.
fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > limits.head_bytes {
            Parsed::Refuse(431)
        } else {
            Parsed::More { continue_wanted: false }
        };
    };
    if head_end > limits.head_bytes {
        return Parsed::Refuse(431);
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_end - 4]) else { return Parsed::Refuse(400) };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Refuse(400);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !target.starts_with('/') {
        return Parsed::Refuse(400);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Parsed::Refuse(if version.starts_with("HTTP/") { 505 } else { 400 });
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Parsed::Refuse(400) };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Parsed::Refuse(400);
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let request = Request { method: method.into(), target: target.into(), headers, body: Vec::new() };
    if request.header("Transfer-Encoding").is_some() {
        // Chunked bodies: nothing here sends one (a form is short, with a length).
        return Parsed::Refuse(501);
    }
    let lengths: Vec<&str> = request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let length = match lengths.as_slice() {
        [] => 0,
        [one] => match one.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Parsed::Refuse(400),
        },
        _ => return Parsed::Refuse(400),
    };
    if length > limits.body_bytes {
        return Parsed::Refuse(413);
    }
    if buf.len() < head_end + length {
        let continue_wanted = request.header("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        return Parsed::More { continue_wanted };
    }
    Parsed::Done(Request { body: buf[head_end..head_end + length].to_vec(), ..request })
}

/// A connection being read.
struct Reading {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
    continued: bool,
}

const LISTENER: Token = Token(usize::MAX);

/// Writes `status` at once, without waiting (a refusal), and closes.
fn refuse(mut stream: TcpStream, status: u16) {
    let _ = stream.write(&Response::text(status, &format!("{}\n", reason(status))).bytes(false));
    let _ = stream.shutdown(Shutdown::Both);
}

/// Serves `listener` until `stop()` (looked at every 200 ms): each whole request is answered
/// by `handle` on one of the handler threads.
///
/// # Errors
/// The poller cannot be made or the listener registered.
pub fn serve(
    listener: &TcpListener,
    limits: &Limits,
    handle: &(dyn Fn(&Request) -> Response + Sync),
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let fd = listener.as_raw_fd();
    poll.registry().register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
    let (queue, requests) = sync_channel::<(TcpStream, Request)>(limits.queue);
    let requests = Mutex::new(requests);
    std::thread::scope(|scope| {
        // Owned here: however this returns, the queue closes and the handlers end.
        let queue = queue;
        for _ in 0..limits.handlers.max(1) {
            scope.spawn(|| answer_from(&requests, limits, handle));
        }
        let mut events = Events::with_capacity(256);
        let mut reading: HashMap<Token, Reading> = HashMap::new();
        let mut next = 0usize;
        while !stop() {
            if let Err(err) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for event in &events {
                if event.token() == LISTENER {
                    accept_all(listener, &poll, &mut reading, &mut next, limits);
                    continue;
                }
                let token = event.token();
                let Some(conn) = reading.get_mut(&token) else { continue };
                match read_more(conn, limits) {
                    Parsed::More { continue_wanted } => {
                        if continue_wanted && !conn.continued {
                            conn.continued = true;
                            let _ = conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        continue;
                    }
                    done => {
                        let conn = reading.remove(&token).expect("present");
                        let _ = poll.registry().deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
                        match done {
                            Parsed::Done(request) => match queue.try_send((conn.stream, request)) {
                                Ok(()) => {}
                                Err(TrySendError::Full((stream, _)) | TrySendError::Disconnected((stream, _))) => {
                                    refuse(stream, 503)
                                }
                            },
                            Parsed::Refuse(0) => {}
                            Parsed::Refuse(status) => refuse(conn.stream, status),
                            Parsed::More { .. } => unreachable!(),
                        }
                    }
                }
            }
            // Requests that did not arrive in time.
            let late: Vec<Token> =
                reading.iter().filter(|(_, c)| c.since.elapsed() > limits.deadline).map(|(t, _)| *t).collect();
            for token in late {
                let conn = reading.remove(&token).expect("present");
                let _ = poll.registry().deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
                refuse(conn.stream, 408);
            }
        }
        Ok(())
    })
}

/// Accepts every waiting connection; past the limit, drops the one read longest.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    reading: &mut HashMap<Token, Reading>,
    next: &mut usize,
    limits: &Limits,
) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // Out of descriptors, a connection reset before accept: the next readiness retries.
            Err(_) => return,
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if reading.len() >= limits.connections.max(1) {
            if let Some(oldest) = reading.iter().min_by_key(|(_, c)| c.since).map(|(t, _)| *t) {
                let conn = reading.remove(&oldest).expect("present");
                let _ = poll.registry().deregister(&mut SourceFd(&conn.stream.as_raw_fd()));
                refuse(conn.stream, 503);
            }
        }
        *next = (*next + 1) % (usize::MAX - 1);
        let token = Token(*next);
        let fd = stream.as_raw_fd();
        if poll.registry().register(&mut SourceFd(&fd), token, Interest::READABLE).is_ok() {
            reading.insert(token, Reading { stream, buf: Vec::new(), since: Instant::now(), continued: false });
        }
    }
}

/// Reads what `conn` has (edge-triggered: until it would block) and parses it.
/// `Refuse(0)`: the client closed or failed; nothing to answer.
fn read_more(conn: &mut Reading, limits: &Limits) -> Parsed {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => {
                return match parse(&conn.buf, limits) {
                    Parsed::More { .. } => Parsed::Refuse(0),
                    other => other,
                }
            }
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                // Never more than a whole request may need.
                if conn.buf.len() > limits.head_bytes + limits.body_bytes + 4 {
                    return match parse(&conn.buf, limits) {
                        Parsed::More { .. } => Parsed::Refuse(431),
                        other => other,
                    };
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return parse(&conn.buf, limits),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Parsed::Refuse(0),
        }
    }
}

/// A handler thread: answers requests until the queue closes.
fn answer_from(
    requests: &Mutex<Receiver<(TcpStream, Request)>>,
    limits: &Limits,
    handle: &(dyn Fn(&Request) -> Response + Sync),
) {
    loop {
        let next = requests.lock().map(|r| r.recv());
        let Ok(Ok((mut stream, request))) = next else { return };
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&request)))
            .unwrap_or_else(|_| Response::text(500, "internal error\n"));
        if stream.set_nonblocking(false).is_ok() && stream.set_write_timeout(Some(limits.write_timeout)).is_ok() {
            let _ = stream.write_all(&response.bytes(request.method == "HEAD"));
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        parse(text.as_bytes(), &Limits { head_bytes: 200, body_bytes: 10, ..Limits::default() })
    }

    #[test]
    fn requests_are_parsed_and_bad_ones_refused() {
        let Parsed::Done(r) =
            parsed("POST /dead/1/retry?token=x HTTP/1.1\r\nContent-Length: 6\r\nX-A:  b \r\n\r\ncsrf=1")
        else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.body.as_slice()),
            ("POST", "/dead/1/retry?token=x", &b"csrf=1"[..])
        );
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(parsed("GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::More { continue_wanted: false });
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
            Parsed::More { continue_wanted: true }
        );
        assert_eq!(parsed("GET /x HTTP/2.0\r\n\r\n"), Parsed::Refuse(505));
        assert_eq!(parsed("GET x HTTP/1.1\r\n\r\n"), Parsed::Refuse(400));
        assert_eq!(parsed("GET / HTTP/1.1\r\nno colon\r\n\r\n"), Parsed::Refuse(400));
        assert_eq!(parsed("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"), Parsed::Refuse(413));
        assert_eq!(parsed("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Parsed::Refuse(400));
        assert_eq!(parsed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Parsed::Refuse(501));
        assert_eq!(parsed(&format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300))), Parsed::Refuse(431));
    }

    #[test]
    fn an_answer_cannot_split_its_head() {
        let r = Response::text(200, "ok").with_header("X", "a\r\nSet-Cookie: b");
        let text = String::from_utf8(r.bytes(false)).unwrap();
        assert!(text.contains("X: aSet-Cookie: b\r\n") && text.ends_with("\r\n\r\nok"), "{text}");
    }
}
