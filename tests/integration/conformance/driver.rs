//! The raw-protocol driver of the differential suite: a scenario is a script of steps (open a
//! connection by using it, send a packet or raw bytes, collect what arrives up to a sync point,
//! ask an admin command, close a connection), played against one server into a transcript of
//! what each connection received, normalised so that two servers can be compared line by line.
//!
//! Sync points, not sleeps: `sync(c)` sends `ECHO_REQ` with a fresh token on connection `c` and
//! collects everything that arrives before its `ECHO_RES`. A server answers one connection's
//! packets in order, so every direct answer to what `c` sent before is in; a packet caused on
//! `c` by another connection (a NOOP, a relayed WORK_COMPLETE) is in too when that other
//! connection was synced first. `close(c)` shuts `c` down and waits until the server's `workers`
//! list no longer shows `c`'s client id (each connection sets one, `<prefix>-c<N>`, when first
//! used), so the next step sees the server after the disconnect. An admin command reads up to
//! its `.` line, or one `OK`/`ERR` line. A connection the server closed, or one that stays
//! silent for [`WAIT`], is recorded as such.
//!
//! Normalised (legitimately server-specific): job handles become `H1`, `H2`... in the order
//! each side first saw them (and `$h1` in a script is the side's own first handle); ERROR
//! packets keep their code, not their text; `getpid` and `version` keep `OK` and not the value;
//! `workers` lines lose the descriptor number; the lines of a multi-line admin answer are
//! sorted (their order is a hash table's in gearmand), and `status`/`workers` keep only the
//! scenario's own functions and connections (the servers are shared by every scenario). The
//! order of packets on one connection is compared as is: the protocol defines it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long a sync point or an admin answer may take before the connection is recorded as
/// silent.
pub const WAIT: Duration = Duration::from_secs(2);

/// Request packet types, numbered as in the protocol.
#[allow(missing_docs)]
pub mod t {
    pub const CAN_DO: u32 = 1;
    pub const CANT_DO: u32 = 2;
    pub const RESET_ABILITIES: u32 = 3;
    pub const PRE_SLEEP: u32 = 4;
    pub const NOOP: u32 = 6;
    pub const SUBMIT_JOB: u32 = 7;
    pub const JOB_CREATED: u32 = 8;
    pub const GRAB_JOB: u32 = 9;
    pub const WORK_STATUS: u32 = 12;
    pub const WORK_COMPLETE: u32 = 13;
    pub const WORK_FAIL: u32 = 14;
    pub const GET_STATUS: u32 = 15;
    pub const ECHO_REQ: u32 = 16;
    pub const SUBMIT_JOB_BG: u32 = 18;
    pub const SUBMIT_JOB_HIGH: u32 = 21;
    pub const SET_CLIENT_ID: u32 = 22;
    pub const CAN_DO_TIMEOUT: u32 = 23;
    pub const ALL_YOURS: u32 = 24;
    pub const WORK_EXCEPTION: u32 = 25;
    pub const OPTION_REQ: u32 = 26;
    pub const WORK_DATA: u32 = 28;
    pub const WORK_WARNING: u32 = 29;
    pub const GRAB_JOB_UNIQ: u32 = 30;
    pub const SUBMIT_JOB_HIGH_BG: u32 = 32;
    pub const SUBMIT_JOB_LOW: u32 = 33;
    pub const SUBMIT_JOB_LOW_BG: u32 = 34;
    pub const SUBMIT_JOB_SCHED: u32 = 35;
    pub const SUBMIT_JOB_EPOCH: u32 = 36;
    pub const SUBMIT_REDUCE_JOB: u32 = 37;
    pub const GRAB_JOB_ALL: u32 = 39;
    pub const GET_STATUS_UNIQUE: u32 = 41;
}

/// The protocol's name for a packet type number.
pub fn type_name(kind: u32) -> String {
    const NAMES: [&str; 43] = [
        "0",
        "CAN_DO",
        "CANT_DO",
        "RESET_ABILITIES",
        "PRE_SLEEP",
        "5",
        "NOOP",
        "SUBMIT_JOB",
        "JOB_CREATED",
        "GRAB_JOB",
        "NO_JOB",
        "JOB_ASSIGN",
        "WORK_STATUS",
        "WORK_COMPLETE",
        "WORK_FAIL",
        "GET_STATUS",
        "ECHO_REQ",
        "ECHO_RES",
        "SUBMIT_JOB_BG",
        "ERROR",
        "STATUS_RES",
        "SUBMIT_JOB_HIGH",
        "SET_CLIENT_ID",
        "CAN_DO_TIMEOUT",
        "ALL_YOURS",
        "WORK_EXCEPTION",
        "OPTION_REQ",
        "OPTION_RES",
        "WORK_DATA",
        "WORK_WARNING",
        "GRAB_JOB_UNIQ",
        "JOB_ASSIGN_UNIQ",
        "SUBMIT_JOB_HIGH_BG",
        "SUBMIT_JOB_LOW",
        "SUBMIT_JOB_LOW_BG",
        "SUBMIT_JOB_SCHED",
        "SUBMIT_JOB_EPOCH",
        "SUBMIT_REDUCE_JOB",
        "SUBMIT_REDUCE_JOB_BACKGROUND",
        "GRAB_JOB_ALL",
        "JOB_ASSIGN_ALL",
        "GET_STATUS_UNIQUE",
        "STATUS_RES_UNIQUE",
    ];
    NAMES.get(kind as usize).map_or_else(|| format!("TYPE_{kind}"), |n| n.to_string())
}

/// Response types whose first argument is a job handle.
const HANDLE_FIRST: [u32; 11] = [8, 11, 12, 13, 14, 20, 25, 28, 29, 31, 40];

/// One packet on the wire: `\0REQ`, type, size, NUL-joined arguments.
pub fn packet(kind: u32, args: &[&[u8]]) -> Vec<u8> {
    let body = args.join(&b"\0"[..]);
    let mut wire = b"\0REQ".to_vec();
    wire.extend_from_slice(&kind.to_be_bytes());
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(&body);
    wire
}

/// One step of a scenario. Connection numbers are the script's own; a connection opens when
/// first used.
#[derive(Clone, Debug)]
pub enum Step {
    /// A packet of type `kind`; `$f`, `$g` and `$h1`..`$h9` in an argument are replaced by the
    /// scenario's function names and the side's handles, an argument `$now+N` by the Unix time
    /// N seconds after it is sent.
    Send { conn: usize, kind: u32, args: Vec<Vec<u8>> },
    /// Packets as in [`Step::Send`], all in one write (pipelined).
    Many { conn: usize, packets: Vec<(u32, Vec<Vec<u8>>)> },
    /// Bytes as they are (malformed input, a text line without reading the answer).
    Bytes { conn: usize, bytes: Vec<u8> },
    /// Collect what arrives on `conn` up to an ECHO sentinel.
    Sync { conn: usize },
    /// An admin text command; its answer is collected and normalised.
    Admin { conn: usize, line: String },
    /// Collect what arrives on `conn` until it has been quiet for `ms` (for answers that may
    /// never come, and nothing else to sync on: text protocol garbage).
    Quiet { conn: usize, ms: u64 },
    /// Collect what arrives on `conn` for `ms` (for an event that comes by the clock: a job
    /// whose epoch is due).
    Collect { conn: usize, ms: u64 },
    /// The worker takes `ms` over its job (part of the script, not a synchronisation: a
    /// timeout under test must be able to expire).
    Pause { ms: u64 },
    /// Close `conn` and wait until the server has seen it go.
    Close { conn: usize },
}

/// A scripted scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name, as listed in the tables of differences.
    pub name: &'static str,
    /// The script.
    pub steps: Vec<Step>,
    /// Needs servers of its own (it looks at or changes server-wide state: `show jobs`,
    /// `shutdown`).
    pub own_servers: bool,
}

impl Scenario {
    /// An empty script.
    pub fn new(name: &'static str) -> Scenario {
        Scenario { name, steps: Vec::new(), own_servers: false }
    }

    /// Runs on servers of its own.
    pub fn own_servers(mut self) -> Scenario {
        self.own_servers = true;
        self
    }

    /// Sends a packet.
    pub fn send(mut self, conn: usize, kind: u32, args: &[&str]) -> Scenario {
        let args = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.steps.push(Step::Send { conn, kind, args });
        self
    }

    /// Sends a packet with arguments as bytes.
    pub fn send_bytes(mut self, conn: usize, kind: u32, args: &[&[u8]]) -> Scenario {
        let args = args.iter().map(|a| a.to_vec()).collect();
        self.steps.push(Step::Send { conn, kind, args });
        self
    }

    /// Sends packets in one write.
    pub fn send_many(mut self, conn: usize, packets: &[(u32, &[&str])]) -> Scenario {
        let packets =
            packets.iter().map(|(kind, args)| (*kind, args.iter().map(|a| a.as_bytes().to_vec()).collect())).collect();
        self.steps.push(Step::Many { conn, packets });
        self
    }

    /// Sends raw bytes.
    pub fn bytes(mut self, conn: usize, bytes: &[u8]) -> Scenario {
        self.steps.push(Step::Bytes { conn, bytes: bytes.to_vec() });
        self
    }

    /// A sync point on `conn`.
    pub fn sync(mut self, conn: usize) -> Scenario {
        self.steps.push(Step::Sync { conn });
        self
    }

    /// An admin command on `conn`.
    pub fn admin(mut self, conn: usize, line: &str) -> Scenario {
        self.steps.push(Step::Admin { conn, line: line.to_string() });
        self
    }

    /// Collects until `conn` is quiet for `ms`.
    pub fn quiet(mut self, conn: usize, ms: u64) -> Scenario {
        self.steps.push(Step::Quiet { conn, ms });
        self
    }

    /// Collects from `conn` for `ms`.
    pub fn collect(mut self, conn: usize, ms: u64) -> Scenario {
        self.steps.push(Step::Collect { conn, ms });
        self
    }

    /// Takes `ms` of the script's time.
    pub fn pause(mut self, ms: u64) -> Scenario {
        self.steps.push(Step::Pause { ms });
        self
    }

    /// Closes `conn`.
    pub fn close(mut self, conn: usize) -> Scenario {
        self.steps.push(Step::Close { conn });
        self
    }

    /// `CAN_DO function` on `conn`, then a sync point.
    pub fn can_do(self, conn: usize, function: &str) -> Scenario {
        self.send(conn, t::CAN_DO, &[function]).sync(conn)
    }

    /// A packet and a sync point on the same connection.
    pub fn call(self, conn: usize, kind: u32, args: &[&str]) -> Scenario {
        self.send(conn, kind, args).sync(conn)
    }
}

/// What one side received, one line per event.
pub type Transcript = Vec<String>;

/// Plays `scenario` against the server on 127.0.0.1:`port`; `prefix` makes its function names
/// and client ids its own.
pub fn play(scenario: &Scenario, port: u16, prefix: &str) -> Transcript {
    let mut side = Side {
        port,
        prefix: prefix.to_string(),
        conns: HashMap::new(),
        handles: Vec::new(),
        log: Vec::new(),
        echo: 0,
        written: 0,
    };
    for step in &scenario.steps {
        side.step(step);
    }
    for conn in side.conns.values_mut() {
        if let Some(stream) = conn.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    side.log
}

struct Conn {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The client id the server shows for it (`None`: a raw connection that set none).
    id: Option<String>,
    /// Whether its end was recorded.
    closed_seen: bool,
}

enum Item {
    Packet { kind: u32, args: Vec<Vec<u8>> },
    Line(String),
    Garbage(Vec<u8>),
    Closed,
    Silent,
}

struct Side {
    port: u16,
    prefix: String,
    conns: HashMap<usize, Conn>,
    handles: Vec<Vec<u8>>,
    log: Transcript,
    echo: usize,
    /// Bytes written so far: a sync point after a large packet waits longer (reading 64 MiB
    /// back is not silence, even on a loaded machine).
    written: usize,
}

impl Side {
    fn step(&mut self, step: &Step) {
        match step {
            Step::Send { conn, kind, args } => {
                let shown: Vec<String> = args.iter().map(|a| escape(a)).collect();
                self.log.push(format!("c{conn} -> {} {}", type_name(*kind), shown.join("|")));
                let args: Vec<Vec<u8>> = args.iter().map(|a| self.substitute(a)).collect();
                if *kind == t::SET_CLIENT_ID {
                    let id = String::from_utf8_lossy(args.first().map_or(&[][..], |a| a)).into_owned();
                    self.conn(*conn, true).id = Some(id);
                }
                let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                self.write(*conn, true, &packet(*kind, &refs));
            }
            Step::Many { conn, packets } => {
                let mut wire = Vec::new();
                for (kind, args) in packets {
                    let shown: Vec<String> = args.iter().map(|a| escape(a)).collect();
                    self.log.push(format!("c{conn} -> {} {} (one write)", type_name(*kind), shown.join("|")));
                    let args: Vec<Vec<u8>> = args.iter().map(|a| self.substitute(a)).collect();
                    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                    wire.extend_from_slice(&packet(*kind, &refs));
                }
                self.write(*conn, true, &wire);
            }
            Step::Bytes { conn, bytes } => {
                self.log.push(format!("c{conn} -> bytes {}", escape(bytes)));
                self.write(*conn, false, bytes);
            }
            Step::Sync { conn } => {
                self.echo += 1;
                let token = format!("sync{}", self.echo).into_bytes();
                if !self.write(*conn, true, &packet(t::ECHO_REQ, &[&token])) {
                    return;
                }
                let wait = if self.written > (1 << 20) { WAIT * 10 } else { WAIT };
                let deadline = Instant::now() + wait;
                loop {
                    match self.read(*conn, deadline) {
                        Item::Packet { kind: 17, args } if args.concat() == token => break,
                        Item::Closed => {
                            self.record(*conn, "closed by the server".into());
                            break;
                        }
                        Item::Silent => {
                            self.record(*conn, "silent (no answer to ECHO)".into());
                            break;
                        }
                        item => self.record_item(*conn, item),
                    }
                }
            }
            Step::Quiet { conn, ms } => {
                let quiet = Duration::from_millis(*ms);
                loop {
                    match self.read(*conn, Instant::now() + quiet) {
                        Item::Silent => break,
                        Item::Closed => {
                            self.record(*conn, "closed by the server".into());
                            break;
                        }
                        item => self.record_item(*conn, item),
                    }
                }
            }
            Step::Collect { conn, ms } => {
                let deadline = Instant::now() + Duration::from_millis(*ms);
                loop {
                    match self.read(*conn, deadline) {
                        Item::Silent => break,
                        Item::Closed => {
                            self.record(*conn, "closed by the server".into());
                            break;
                        }
                        item => self.record_item(*conn, item),
                    }
                }
            }
            Step::Pause { ms } => {
                self.log.push(format!("(the worker takes {ms} ms)"));
                std::thread::sleep(Duration::from_millis(*ms));
            }
            Step::Admin { conn, line } => self.admin(*conn, line),
            Step::Close { conn } => {
                self.log.push(format!("c{conn} -> close"));
                let Some(c) = self.conns.get_mut(conn) else { return };
                if let Some(stream) = c.stream.take() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                if let Some(id) = c.id.clone() {
                    self.wait_gone(&id);
                }
            }
        }
    }

    /// `$f`/`$g` to the scenario's functions, `$hN` to this side's N-th handle.
    fn substitute(&self, arg: &[u8]) -> Vec<u8> {
        if arg.len() > 1024 || !arg.contains(&b'$') {
            // Placeholders are in short arguments only; a 64 MiB workload is taken as it is.
            return arg.to_vec();
        }
        if let Some(seconds) = std::str::from_utf8(arg).ok().and_then(|a| a.strip_prefix("$now+")) {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            return (now + seconds.parse::<u64>().expect("$now+N")).to_string().into_bytes();
        }
        let mut text = arg.to_vec();
        for n in (1..=9).rev() {
            let token = format!("$h{n}").into_bytes();
            let handle = self.handles.get(n - 1).cloned().unwrap_or_else(|| b"H:unseen:0".to_vec());
            text = replace(&text, &token, &handle);
        }
        text = replace(&text, b"$f", format!("{}_f", self.prefix).as_bytes());
        replace(&text, b"$g", format!("{}_g", self.prefix).as_bytes())
    }

    fn conn(&mut self, n: usize, with_id: bool) -> &mut Conn {
        let (port, prefix) = (self.port, self.prefix.clone());
        if !self.conns.contains_key(&n) {
            let id = with_id.then(|| format!("{prefix}-c{n}"));
            let stream = match TcpStream::connect(("127.0.0.1", port)) {
                Ok(mut stream) => {
                    stream.set_nodelay(true).unwrap();
                    let sent = id
                        .as_ref()
                        .is_none_or(|id| stream.write_all(&packet(t::SET_CLIENT_ID, &[id.as_bytes()])).is_ok());
                    sent.then_some(stream)
                }
                Err(_) => None,
            };
            if stream.is_none() {
                self.log.push(format!("c{n} <- cannot connect (no server)"));
            }
            self.conns.insert(n, Conn { stream, buf: Vec::new(), id, closed_seen: false });
        }
        self.conns.get_mut(&n).expect("inserted above")
    }

    /// Writes to `conn` (opening it); `false` (and a line) when it is closed.
    fn write(&mut self, n: usize, with_id: bool, bytes: &[u8]) -> bool {
        self.written += bytes.len();
        let conn = self.conn(n, with_id);
        let ok = match &mut conn.stream {
            Some(stream) => stream.write_all(bytes).is_ok(),
            None => false,
        };
        if !ok {
            conn.stream = None;
            self.record(n, "closed by the server".into());
        }
        ok
    }

    fn read(&mut self, n: usize, deadline: Instant) -> Item {
        let conn = self.conn(n, true);
        loop {
            if let Some(item) = parse(&mut conn.buf) {
                return item;
            }
            let Some(stream) = &mut conn.stream else { return Item::Closed };
            let now = Instant::now();
            if now >= deadline {
                return Item::Silent;
            }
            stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk) {
                Ok(0) => {
                    conn.stream = None;
                    if !conn.buf.is_empty() {
                        return Item::Garbage(std::mem::take(&mut conn.buf));
                    }
                    return Item::Closed;
                }
                Ok(k) => conn.buf.extend_from_slice(&chunk[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if !conn.buf.is_empty() {
                        return Item::Garbage(std::mem::take(&mut conn.buf));
                    }
                    return Item::Silent;
                }
                Err(_) => {
                    conn.stream = None;
                    return Item::Closed;
                }
            }
        }
    }

    fn record(&mut self, conn: usize, what: String) {
        if what.starts_with("closed") {
            // Once per connection: later steps on it add nothing.
            let Some(c) = self.conns.get_mut(&conn) else { return };
            if c.closed_seen {
                return;
            }
            c.closed_seen = true;
        }
        self.log.push(format!("c{conn} <- {what}"));
    }

    fn record_item(&mut self, conn: usize, item: Item) {
        let line = match item {
            Item::Packet { kind, args } => self.describe(kind, args),
            Item::Line(line) => format!("text {:?}", pid_free(&line)),
            Item::Garbage(bytes) => format!("garbage {}", escape(&bytes)),
            Item::Closed => "closed by the server".into(),
            Item::Silent => "silent".into(),
        };
        self.record(conn, line);
    }

    fn describe(&mut self, kind: u32, mut args: Vec<Vec<u8>>) -> String {
        if HANDLE_FIRST.contains(&kind) {
            if let Some(first) = args.first_mut() {
                *first = self.handle_token(first).into_bytes();
            }
        }
        if kind == 19 {
            // ERROR: the code is the protocol's, the text the server's own.
            args.truncate(1);
        }
        let shown: Vec<String> = args.iter().map(|a| escape(a)).collect();
        format!("{} {}", type_name(kind), shown.join("|"))
    }

    fn handle_token(&mut self, handle: &[u8]) -> String {
        let index = match self.handles.iter().position(|h| h == handle) {
            Some(i) => i,
            None => {
                self.handles.push(handle.to_vec());
                self.handles.len() - 1
            }
        };
        format!("H{}", index + 1)
    }

    fn admin(&mut self, n: usize, line: &str) {
        let sent = replace(line.as_bytes(), b"$f", format!("{}_f", self.prefix).as_bytes());
        let sent = replace(&sent, b"$g", format!("{}_g", self.prefix).as_bytes());
        let mut text = sent.clone();
        for (i, handle) in self.handles.clone().iter().enumerate().rev() {
            text = replace(&text, format!("$h{}", i + 1).as_bytes(), handle);
        }
        self.log.push(format!("c{n} -> admin {line:?}"));
        if !self.write(n, false, &text) {
            return;
        }
        let verb = String::from_utf8_lossy(&sent).trim().to_ascii_lowercase();
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        let mut end = None;
        loop {
            match self.read(n, deadline) {
                Item::Line(l) => {
                    let done =
                        l.trim_end() == "." || (lines.is_empty() && (l.starts_with("OK") || l.starts_with("ERR")));
                    lines.push(l);
                    if done {
                        break;
                    }
                }
                Item::Closed => {
                    end = Some("closed by the server".to_string());
                    break;
                }
                Item::Silent => {
                    end = Some("silent (no end of answer)".to_string());
                    break;
                }
                item => {
                    let before = self.log.len();
                    self.record_item(n, item);
                    if self.log.len() > before {
                        break;
                    }
                }
            }
        }
        let lines = self.normalise_admin(&verb, lines);
        for l in lines {
            self.record(n, format!("text {l:?}"));
        }
        if let Some(end) = end {
            self.record(n, end);
        }
    }

    fn normalise_admin(&mut self, verb: &str, lines: Vec<String>) -> Vec<String> {
        let prefix = self.prefix.clone();
        let single = lines.len() == 1 && !lines[0].starts_with('.');
        let mut out: Vec<String> = lines
            .into_iter()
            .filter_map(|l| {
                if single && verb == "version" && l.starts_with("OK ") {
                    return Some(format!("OK <version>{}", line_end(&l)));
                }
                if single && verb == "getpid" && l.starts_with("OK ") {
                    return Some(format!("OK <pid>{}", line_end(&l)));
                }
                if l.trim_end() == "." || single {
                    return Some(pid_free(&l));
                }
                if verb == "status" {
                    return l.starts_with(&prefix).then_some(l);
                }
                if verb == "workers" {
                    // FD IP CLIENT-ID : FUNCTION...
                    if !l.contains(&prefix) {
                        return None;
                    }
                    let (head, functions) = l.split_once(':').unwrap_or((&l, ""));
                    let mut head: Vec<&str> = head.split_whitespace().collect();
                    if let Some(fd) = head.first_mut() {
                        *fd = "<fd>";
                    }
                    let mut functions: Vec<&str> = functions.split_whitespace().collect();
                    functions.sort_unstable();
                    return Some(format!("{} : {}{}", head.join(" "), functions.join(" "), line_end(&l)));
                }
                // show jobs: handles first on each line.
                let fields: Vec<String> = l
                    .trim_end_matches(['\r', '\n'])
                    .split('\t')
                    .map(|f| match self.handles.iter().position(|h| h == f.as_bytes()) {
                        Some(i) => format!("H{}", i + 1),
                        None => f.to_string(),
                    })
                    .collect();
                Some(format!("{}{}", fields.join("\t"), line_end(&l)))
            })
            .collect();
        if out.len() > 1 {
            let last = out.len() - 1;
            out[..last].sort();
        }
        out
    }

    /// Waits until the server no longer lists a connection with client id `id`.
    fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let listed = admin_lines(self.port, "workers\n")
                .iter()
                .any(|l| l.split_whitespace().nth(2).is_some_and(|shown| shown == id));
            if !listed {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The lines of one admin answer from a fresh connection to 127.0.0.1:`port`, up to its `.`
/// line (or its only `OK`/`ERR` line).
pub fn admin_lines(port: u16, command: &str) -> Vec<String> {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return Vec::new() };
    if stream.write_all(command.as_bytes()).is_err() {
        return Vec::new();
    }
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let complete = text.ends_with('\n')
            && lines
                .last()
                .is_some_and(|l| l == "." || (lines.len() == 1 && (l.starts_with("OK") || l.starts_with("ERR"))));
        if complete {
            return lines;
        }
        match stream.read(&mut chunk) {
            Ok(k @ 1..) => buf.extend_from_slice(&chunk[..k]),
            _ => return lines,
        }
    }
}

/// The next item at the start of `buf`, if complete: a `\0RES` packet, or a text line.
fn parse(buf: &mut Vec<u8>) -> Option<Item> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0 {
        if buf.len() < 12 {
            return None;
        }
        if &buf[..4] != b"\0RES" {
            return Some(Item::Garbage(std::mem::take(buf)));
        }
        let kind = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let size = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        if buf.len() < 12 + size {
            return None;
        }
        let rest = buf.split_off(12 + size);
        let body = std::mem::replace(buf, rest).split_off(12);
        let args = if body.is_empty() { Vec::new() } else { split_nul(body) };
        return Some(Item::Packet { kind, args });
    }
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line: Vec<u8> = buf.drain(..=end).collect();
    Some(Item::Line(String::from_utf8_lossy(&line).into_owned()))
}

/// `OK <digits>` (a `getpid` answer) as `OK <pid>`.
fn pid_free(line: &str) -> String {
    match line.strip_prefix("OK ") {
        Some(rest) if rest.trim_end().bytes().all(|b| b.is_ascii_digit()) && !rest.trim_end().is_empty() => {
            format!("OK <pid>{}", line_end(line))
        }
        _ => line.to_string(),
    }
}

/// A body split at its NULs (with `memchr`-like speed: a 64 MiB workload is one argument).
fn split_nul(mut body: Vec<u8>) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    while let Some(i) = body.iter().position(|&b| b == 0) {
        let rest = body.split_off(i + 1);
        body.pop();
        args.push(std::mem::replace(&mut body, rest));
    }
    args.push(body);
    args
}

fn line_end(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Bytes as printable text: ASCII as is, anything else `\xNN`; long runs shortened.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    let shown = if bytes.len() > 80 { &bytes[..80] } else { bytes };
    for &b in shown {
        match b {
            b'|' | b'\\' => out.push_str(&format!("\\x{b:02x}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 80 {
        out.push_str(&format!("...({} bytes)", bytes.len()));
    }
    out
}
