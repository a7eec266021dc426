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
//! - A handler never waits for a client to read: it writes what the socket takes at once and
//!   hands the rest of the answer back to the reader, which writes it as the client reads, for at
//!   most [`Limits::write_timeout`] in all (a client that never reads, or reads a byte now and
//!   then, costs a buffer for that long, never a handler, and cannot hold up a stop).
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
    /// How long writing an answer may take in all (the client reading it).
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
    if request.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("Host")).count() > 1 {
        // Which one names the monitor? The Host check reads the first; refuse the doubt (RFC
        // 9112 3.2: 400).
        return Parsed::Refuse(400);
    }
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

/// An answer the client has not read whole yet: written by the reader as the socket takes it.
struct Writing {
    stream: TcpStream,
    bytes: Vec<u8>,
    written: usize,
    until: Instant,
}

impl Writing {
    /// Writes what the socket takes now; `true` when the answer is written whole or the
    /// connection failed (nothing more to do but close it).
    fn write_more(&mut self) -> bool {
        while self.written < self.bytes.len() {
            match self.stream.write(&self.bytes[self.written..]) {
                Ok(0) => return true,
                Ok(n) => self.written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }

    fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

const LISTENER: Token = Token(usize::MAX);
/// The handlers' signal that an unfinished answer waits to be taken over.
const WAKE: Token = Token(usize::MAX - 1);

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
    let waker = mio::Waker::new(poll.registry(), WAKE)?;
    let (queue, requests) = sync_channel::<(TcpStream, Request)>(limits.queue);
    let requests = Mutex::new(requests);
    // Bounded by the handlers: each hands over at most the answer it just wrote.
    let (unfinished, handed_over) = std::sync::mpsc::channel::<Writing>();
    std::thread::scope(|scope| {
        // Owned here: however this returns, the queue closes and the handlers end.
        let queue = queue;
        for _ in 0..limits.handlers.max(1) {
            let (unfinished, waker, requests) = (unfinished.clone(), &waker, &requests);
            scope.spawn(move || answer_from(requests, limits, handle, &unfinished, waker));
        }
        let mut events = Events::with_capacity(256);
        let mut reading: HashMap<Token, Reading> = HashMap::new();
        let mut writing: HashMap<Token, Writing> = HashMap::new();
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
                if event.token() == WAKE {
                    take_over(&handed_over, &poll, &mut writing, &mut next, limits);
                    continue;
                }
                let token = event.token();
                if let Some(answer) = writing.get_mut(&token) {
                    if answer.write_more() {
                        let answer = writing.remove(&token).expect("present");
                        let _ = poll.registry().deregister(&mut SourceFd(&answer.stream.as_raw_fd()));
                        answer.close();
                    }
                    continue;
                }
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
            // Answers not read in time.
            let now = Instant::now();
            let late: Vec<Token> = writing.iter().filter(|(_, w)| w.until <= now).map(|(t, _)| *t).collect();
            for token in late {
                let answer = writing.remove(&token).expect("present");
                let _ = poll.registry().deregister(&mut SourceFd(&answer.stream.as_raw_fd()));
                answer.close();
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

/// Takes over the answers the handlers could not write whole; past the limit, drops the one
/// that has least time left.
fn take_over(
    handed_over: &Receiver<Writing>,
    poll: &Poll,
    writing: &mut HashMap<Token, Writing>,
    next: &mut usize,
    limits: &Limits,
) {
    while let Ok(answer) = handed_over.try_recv() {
        if writing.len() >= limits.connections.max(1) {
            if let Some(oldest) = writing.iter().min_by_key(|(_, w)| w.until).map(|(t, _)| *t) {
                let dropped = writing.remove(&oldest).expect("present");
                let _ = poll.registry().deregister(&mut SourceFd(&dropped.stream.as_raw_fd()));
                dropped.close();
            }
        }
        *next = (*next + 1) % (usize::MAX - 1);
        let token = Token(*next);
        let fd = answer.stream.as_raw_fd();
        // Edge-triggered: a socket with room already is reported at once.
        if poll.registry().register(&mut SourceFd(&fd), token, Interest::WRITABLE).is_ok() {
            writing.insert(token, answer);
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

/// A handler thread: answers requests until the queue closes. What the socket does not take
/// at once goes to the reader (`unfinished`, then `waker`): a handler never waits for a client.
fn answer_from(
    requests: &Mutex<Receiver<(TcpStream, Request)>>,
    limits: &Limits,
    handle: &(dyn Fn(&Request) -> Response + Sync),
    unfinished: &std::sync::mpsc::Sender<Writing>,
    waker: &mio::Waker,
) {
    loop {
        let next = requests.lock().map(|r| r.recv());
        let Ok(Ok((stream, request))) = next else { return };
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&request)))
            .unwrap_or_else(|_| Response::text(500, "internal error\n"));
        let bytes = response.bytes(request.method == "HEAD");
        let mut answer = Writing { stream, bytes, written: 0, until: Instant::now() + limits.write_timeout };
        if answer.write_more() {
            answer.close();
        } else if unfinished.send(answer).is_ok() {
            // The reader is gone (stopping) when this fails: the answer is dropped with it.
            let _ = waker.wake();
        }
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
        assert_eq!(parsed("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nhost: evil.example\r\n\r\n"), Parsed::Refuse(400));
        assert_eq!(parsed(&format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300))), Parsed::Refuse(431));
    }

    /// A client that asks for a big answer and never reads it must not hold a handler: with one
    /// handler, a second client is answered at once, the first still gets its answer whole when
    /// it reads, and a stop is not held up by a client that never reads.
    #[test]
    fn a_client_that_does_not_read_holds_no_handler_nor_the_stop() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const BIG: usize = 16 << 20;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits { handlers: 1, write_timeout: Duration::from_secs(60), ..Limits::default() };
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let server = std::thread::spawn(move || {
            let handle = |r: &Request| {
                if r.target == "/big" {
                    Response::new(200, "text/plain", vec![b'x'; BIG])
                } else {
                    Response::text(200, "small\n")
                }
            };
            serve(&listener, &limits, &handle, &|| flag.load(Ordering::Relaxed))
        });
        let get = |path: &str| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).unwrap();
            s
        };
        let read_all = |mut s: TcpStream| {
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            answer
        };
        let slow = get("/big");
        // The big answer's start is sent (the socket took what it could): the handler is done.
        let mut first = [0u8; 12];
        (&slow).read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let started = Instant::now();
        let small = read_all(get("/small"));
        assert!(small.ends_with(b"small\n"), "{}", String::from_utf8_lossy(&small));
        assert!(started.elapsed() < Duration::from_secs(10), "the second client waited {:?}", started.elapsed());
        // Partial writes go on as the slow client reads: its answer arrives whole.
        let rest = read_all(slow);
        assert!(rest.len() > BIG && rest.ends_with(b"xxxx"), "{} bytes", rest.len());

        // A stop with a client that never reads: the server returns at once, not after the
        // write timeout.
        let _never_reads = get("/big");
        assert!(read_all(get("/small")).ends_with(b"small\n"));
        stop.store(true, Ordering::Relaxed);
        let stopping = Instant::now();
        server.join().unwrap().unwrap();
        assert!(stopping.elapsed() < Duration::from_secs(10), "the stop took {:?}", stopping.elapsed());
    }

    #[test]
    fn an_answer_cannot_split_its_head() {
        let r = Response::text(200, "ok").with_header("X", "a\r\nSet-Cookie: b");
        let text = String::from_utf8(r.bytes(false)).unwrap();
        assert!(text.contains("X: aSet-Cookie: b\r\n") && text.ends_with("\r\n\r\nok"), "{text}");
    }
}
