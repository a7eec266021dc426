//! The Gearman binary protocol as bytes in, packets out, and back: no I/O here.
//!
//! A packet is a 12-byte header (`\0REQ` or `\0RES`, a big-endian `u32` type and a big-endian
//! `u32` body size) and a body of NUL-separated arguments, the last of which runs to the end
//! and may itself contain NULs. [`decode`] looks at a buffer and says either "not complete
//! yet, read more" or "here is a packet, and it took this many bytes"; [`encode`] appends a
//! packet to a buffer. The connection (`conn.rs`), a worker, a client and the embedded job
//! server (`li3g_host::server`: it decodes `\0REQ` and encodes `\0RES`) all share this one codec.
//!
//! Hostile or broken peers: a wrong magic, an unknown type, a body larger than the limit, or
//! arguments missing from a body are errors, never panics, and the size is checked from the
//! header alone, before anything is buffered, so a declared 4 GiB body costs nothing.
//!
//! Liberal in what it accepts: gearmand 1.1.20 sends `WORK_FAIL` as `handle\0`, so handles
//! end at the first NUL wherever a handle is the last argument.

use std::fmt;

/// The size of a packet header.
pub const HEADER_LEN: usize = 12;

/// The default largest body [`decode`] accepts: 64 MiB. Jobs larger than this belong in
/// shared storage, with a reference in the workload.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;

/// Which way a packet goes: `\0REQ` to a server, `\0RES` from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// `\0REQ`: from a client or worker to the server.
    Req,
    /// `\0RES`: from the server.
    Res,
}

impl Magic {
    fn bytes(self) -> &'static [u8; 4] {
        match self {
            Magic::Req => b"\0REQ",
            Magic::Res => b"\0RES",
        }
    }
}

/// How urgent a submitted job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Priority {
    /// `SUBMIT_JOB_LOW*`.
    Low,
    /// `SUBMIT_JOB*`.
    #[default]
    Normal,
    /// `SUBMIT_JOB_HIGH*`.
    High,
}

/// Packet type numbers, spelled as in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum PacketType {
    CanDo = 1,
    CantDo = 2,
    ResetAbilities = 3,
    PreSleep = 4,
    Noop = 6,
    SubmitJob = 7,
    JobCreated = 8,
    GrabJob = 9,
    NoJob = 10,
    JobAssign = 11,
    WorkStatus = 12,
    WorkComplete = 13,
    WorkFail = 14,
    GetStatus = 15,
    EchoReq = 16,
    EchoRes = 17,
    SubmitJobBg = 18,
    Error = 19,
    StatusRes = 20,
    SubmitJobHigh = 21,
    SetClientId = 22,
    CanDoTimeout = 23,
    AllYours = 24,
    WorkException = 25,
    OptionReq = 26,
    OptionRes = 27,
    WorkData = 28,
    WorkWarning = 29,
    GrabJobUniq = 30,
    JobAssignUniq = 31,
    SubmitJobHighBg = 32,
    SubmitJobLow = 33,
    SubmitJobLowBg = 34,
    SubmitJobSched = 35,
    SubmitJobEpoch = 36,
    SubmitReduceJob = 37,
    SubmitReduceJobBackground = 38,
    GrabJobAll = 39,
    JobAssignAll = 40,
    GetStatusUnique = 41,
    StatusResUnique = 42,
}

impl PacketType {
    /// The type for a protocol number, if there is one.
    pub fn from_u32(n: u32) -> Option<PacketType> {
        use PacketType::*;
        Some(match n {
            1 => CanDo,
            2 => CantDo,
            3 => ResetAbilities,
            4 => PreSleep,
            6 => Noop,
            7 => SubmitJob,
            8 => JobCreated,
            9 => GrabJob,
            10 => NoJob,
            11 => JobAssign,
            12 => WorkStatus,
            13 => WorkComplete,
            14 => WorkFail,
            15 => GetStatus,
            16 => EchoReq,
            17 => EchoRes,
            18 => SubmitJobBg,
            19 => Error,
            20 => StatusRes,
            21 => SubmitJobHigh,
            22 => SetClientId,
            23 => CanDoTimeout,
            24 => AllYours,
            25 => WorkException,
            26 => OptionReq,
            27 => OptionRes,
            28 => WorkData,
            29 => WorkWarning,
            30 => GrabJobUniq,
            31 => JobAssignUniq,
            32 => SubmitJobHighBg,
            33 => SubmitJobLow,
            34 => SubmitJobLowBg,
            35 => SubmitJobSched,
            36 => SubmitJobEpoch,
            37 => SubmitReduceJob,
            38 => SubmitReduceJobBackground,
            39 => GrabJobAll,
            40 => JobAssignAll,
            41 => GetStatusUnique,
            42 => StatusResUnique,
            _ => return None,
        })
    }
}

/// A Gearman packet, typed. Byte strings stay bytes: function names, handles and unique keys
/// are not required to be UTF-8 by the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    // Worker to server.
    CanDo {
        function: Vec<u8>,
    },
    /// `timeout` as sent on the wire; gearmand reads it as milliseconds.
    CanDoTimeout {
        function: Vec<u8>,
        timeout: u32,
    },
    CantDo {
        function: Vec<u8>,
    },
    ResetAbilities,
    PreSleep,
    GrabJob,
    GrabJobUniq,
    GrabJobAll,
    SetClientId {
        id: Vec<u8>,
    },
    // Server to worker.
    Noop,
    NoJob,
    JobAssign {
        handle: Vec<u8>,
        function: Vec<u8>,
        workload: Vec<u8>,
    },
    JobAssignUniq {
        handle: Vec<u8>,
        function: Vec<u8>,
        unique: Vec<u8>,
        workload: Vec<u8>,
    },
    JobAssignAll {
        handle: Vec<u8>,
        function: Vec<u8>,
        unique: Vec<u8>,
        reducer: Vec<u8>,
        workload: Vec<u8>,
    },
    // Worker to server, and server to client.
    WorkStatus {
        handle: Vec<u8>,
        numerator: u64,
        denominator: u64,
    },
    WorkComplete {
        handle: Vec<u8>,
        data: Vec<u8>,
    },
    WorkFail {
        handle: Vec<u8>,
    },
    WorkException {
        handle: Vec<u8>,
        data: Vec<u8>,
    },
    WorkData {
        handle: Vec<u8>,
        data: Vec<u8>,
    },
    WorkWarning {
        handle: Vec<u8>,
        data: Vec<u8>,
    },
    // Client to server.
    SubmitJob {
        priority: Priority,
        background: bool,
        function: Vec<u8>,
        unique: Vec<u8>,
        workload: Vec<u8>,
    },
    /// A background job to run at a Unix time (seconds).
    SubmitJobEpoch {
        function: Vec<u8>,
        unique: Vec<u8>,
        epoch: u64,
        workload: Vec<u8>,
    },
    GetStatus {
        handle: Vec<u8>,
    },
    GetStatusUnique {
        unique: Vec<u8>,
    },
    OptionReq {
        option: Vec<u8>,
    },
    // Server to client.
    JobCreated {
        handle: Vec<u8>,
    },
    StatusRes {
        handle: Vec<u8>,
        known: bool,
        running: bool,
        numerator: u64,
        denominator: u64,
    },
    StatusResUnique {
        unique: Vec<u8>,
        known: bool,
        running: bool,
        numerator: u64,
        denominator: u64,
        clients: u64,
    },
    OptionRes {
        option: Vec<u8>,
    },
    Error {
        code: Vec<u8>,
        message: Vec<u8>,
    },
    // Either way.
    EchoReq {
        data: Vec<u8>,
    },
    EchoRes {
        data: Vec<u8>,
    },
}

/// Why bytes are not a packet, or a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first four bytes are neither `\0REQ` nor `\0RES`.
    #[error("bad packet magic {0:02x?} (expected \\0REQ or \\0RES)")]
    BadMagic([u8; 4]),
    /// A type number the protocol does not define.
    #[error("unknown packet type {0}")]
    UnknownType(u32),
    /// A type the protocol defines that this codec does not handle.
    #[error("unsupported packet type {0:?}")]
    Unsupported(PacketType),
    /// The header declares a body larger than the limit.
    #[error("packet body of {size} bytes exceeds the limit of {max} bytes")]
    TooBig {
        /// Declared size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// The body has fewer arguments than the type requires.
    #[error("{kind:?} needs {expected} arguments, the body has {found}")]
    MissingArguments {
        /// The packet type.
        kind: PacketType,
        /// How many it needs.
        expected: usize,
        /// How many there were.
        found: usize,
    },
    /// A field that must be a decimal number is not.
    #[error("{kind:?}: {field} is not a number: {value:?}")]
    BadNumber {
        /// The packet type.
        kind: PacketType,
        /// Which field.
        field: &'static str,
        /// What it held (lossy).
        value: String,
    },
    /// A field other than the last contains a NUL, which would split it in two on the wire.
    #[error("{kind:?}: {field} contains a NUL byte")]
    NulInArgument {
        /// The packet type.
        kind: PacketType,
        /// Which field.
        field: &'static str,
    },
}

/// What [`decode`] found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Not a whole packet yet: read more and try again. No bytes are consumed.
    Incomplete,
    /// A whole packet, and how many bytes of the buffer it took.
    Packet {
        /// Which way it goes.
        magic: Magic,
        /// The packet.
        packet: Packet,
        /// Bytes consumed from the front of the buffer.
        len: usize,
    },
}

/// Decodes the packet at the front of `buf`, accepting bodies up to `max_body` bytes.
///
/// # Errors
/// [`Error`] when the bytes cannot be a packet; the connection should then be dropped, since
/// the stream cannot be resynchronised.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Decoded, Error> {
    if buf.len() < 4 {
        // Check what magic we have so far, so garbage fails fast.
        if !b"\0REQ".starts_with(buf) && !b"\0RES".starts_with(buf) {
            return Err(Error::BadMagic(pad4(buf)));
        }
        return Ok(Decoded::Incomplete);
    }
    let magic = match &buf[..4] {
        b"\0REQ" => Magic::Req,
        b"\0RES" => Magic::Res,
        other => return Err(Error::BadMagic(pad4(other))),
    };
    if buf.len() < HEADER_LEN {
        return Ok(Decoded::Incomplete);
    }
    let number = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let size = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let kind = PacketType::from_u32(number).ok_or(Error::UnknownType(number))?;
    if size as usize > max_body {
        return Err(Error::TooBig { size: u64::from(size), max: max_body });
    }
    let end = HEADER_LEN + size as usize;
    if buf.len() < end {
        return Ok(Decoded::Incomplete);
    }
    let packet = parse_body(kind, &buf[HEADER_LEN..end])?;
    Ok(Decoded::Packet { magic, packet, len: end })
}

/// The length of the packet whose header starts `buf` (header included), once the header is
/// whole: lets a server skip a well-framed packet it refuses ([`Error::Unsupported`]) and keep
/// the connection.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let size = buf.get(8..HEADER_LEN)?;
    Some(HEADER_LEN + u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize)
}

fn pad4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    let n = bytes.len().min(4);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Splits a body into exactly `n` arguments; the last one takes the rest.
fn split(kind: PacketType, body: &[u8], n: usize) -> Result<Vec<Vec<u8>>, Error> {
    let parts: Vec<Vec<u8>> = body.splitn(n, |&b| b == 0).map(<[u8]>::to_vec).collect();
    if parts.len() < n {
        return Err(Error::MissingArguments { kind, expected: n, found: parts.len() });
    }
    Ok(parts)
}

/// A lone identifier argument (a handle, a unique key): up to the first NUL, if any.
fn ident(body: &[u8]) -> Vec<u8> {
    body.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

fn number(kind: PacketType, field: &'static str, bytes: &[u8]) -> Result<u64, Error> {
    let bad = || Error::BadNumber { kind, field, value: String::from_utf8_lossy(bytes).into_owned() };
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    text.trim().parse().map_err(|_| bad())
}

/// A number read as gearmand reads `WORK_STATUS` and `CAN_DO_TIMEOUT` fields (C's `atoi`):
/// leading blanks, a sign, the digits that follow; anything else ends it (`0.5` is 0, `50%`
/// is 50, `x` is 0). Never an error: gearmand takes such packets, so the server must too.
pub fn atoi(bytes: &[u8]) -> i64 {
    let mut rest = bytes.iter().skip_while(|b| b.is_ascii_whitespace()).peekable();
    let negative = match rest.peek() {
        Some(b'-') => {
            rest.next();
            true
        }
        Some(b'+') => {
            rest.next();
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    for b in rest.take_while(|b| b.is_ascii_digit()) {
        value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if negative {
        -value
    } else {
        value
    }
}

/// A progress field as gearmand stores it: `(uint32_t)atoi(...)`.
fn progress(bytes: &[u8]) -> u64 {
    u64::from(atoi(bytes) as i32 as u32)
}

fn flag(kind: PacketType, field: &'static str, bytes: &[u8]) -> Result<bool, Error> {
    Ok(number(kind, field, bytes)? != 0)
}

fn parse_body(kind: PacketType, body: &[u8]) -> Result<Packet, Error> {
    use PacketType as T;
    let take = |n| split(kind, body, n);
    Ok(match kind {
        T::CanDo => Packet::CanDo { function: ident(body) },
        T::CantDo => Packet::CantDo { function: ident(body) },
        T::CanDoTimeout => {
            let [function, timeout] = take(2)?.try_into().expect("split gives n parts");
            // As gearmand (`strtol`): a negative or unreadable timeout is no timeout (0).
            let timeout = u32::try_from(atoi(&ident(&timeout)).max(0)).unwrap_or(u32::MAX);
            Packet::CanDoTimeout { function, timeout }
        }
        T::ResetAbilities => Packet::ResetAbilities,
        T::PreSleep => Packet::PreSleep,
        T::Noop => Packet::Noop,
        T::GrabJob => Packet::GrabJob,
        T::GrabJobUniq => Packet::GrabJobUniq,
        T::GrabJobAll => Packet::GrabJobAll,
        T::NoJob => Packet::NoJob,
        T::SetClientId => Packet::SetClientId { id: body.to_vec() },
        T::JobAssign => {
            let [handle, function, workload] = take(3)?.try_into().expect("split gives n parts");
            Packet::JobAssign { handle, function, workload }
        }
        T::JobAssignUniq => {
            let [handle, function, unique, workload] = take(4)?.try_into().expect("split gives n parts");
            Packet::JobAssignUniq { handle, function, unique, workload }
        }
        T::JobAssignAll => {
            let [handle, function, unique, reducer, workload] = take(5)?.try_into().expect("split gives n parts");
            Packet::JobAssignAll { handle, function, unique, reducer, workload }
        }
        T::WorkStatus => {
            let [handle, num, den] = take(3)?.try_into().expect("split gives n parts");
            // As gearmand reads them: `0.5` or `50%` are taken (as 0 and 50), never refused; a
            // server relays the fields as they were sent (see [`encode_raw`]).
            let den = ident(&den);
            Packet::WorkStatus { handle, numerator: progress(&num), denominator: progress(&den[..den.len().min(10)]) }
        }
        T::WorkFail => Packet::WorkFail { handle: ident(body) },
        T::WorkComplete | T::WorkException | T::WorkData | T::WorkWarning => {
            // Liberal: a body with no NUL is a handle with empty data.
            let (handle, data) = match body.iter().position(|&b| b == 0) {
                Some(i) => (body[..i].to_vec(), body[i + 1..].to_vec()),
                None => (body.to_vec(), Vec::new()),
            };
            match kind {
                T::WorkComplete => Packet::WorkComplete { handle, data },
                T::WorkException => Packet::WorkException { handle, data },
                T::WorkData => Packet::WorkData { handle, data },
                _ => Packet::WorkWarning { handle, data },
            }
        }
        T::SubmitJob | T::SubmitJobBg | T::SubmitJobHigh | T::SubmitJobHighBg | T::SubmitJobLow | T::SubmitJobLowBg => {
            let [function, unique, workload] = take(3)?.try_into().expect("split gives n parts");
            let (priority, background) = submit_flavour(kind).expect("a submit type");
            Packet::SubmitJob { priority, background, function, unique, workload }
        }
        T::SubmitJobEpoch => {
            let [function, unique, epoch, workload] = take(4)?.try_into().expect("split gives n parts");
            // As gearmand (`strtoll`): an unreadable, negative or empty time is 0 (run at once).
            let epoch = number(kind, "epoch", &epoch).unwrap_or_else(|_| atoi(&epoch).max(0) as u64);
            Packet::SubmitJobEpoch { function, unique, epoch, workload }
        }
        T::JobCreated => Packet::JobCreated { handle: ident(body) },
        T::GetStatus => Packet::GetStatus { handle: ident(body) },
        T::GetStatusUnique => Packet::GetStatusUnique { unique: ident(body) },
        T::StatusRes => {
            let [handle, known, running, num, den] = take(5)?.try_into().expect("split gives n parts");
            Packet::StatusRes {
                handle,
                known: flag(kind, "known", &known)?,
                running: flag(kind, "running", &running)?,
                numerator: number(kind, "numerator", &num)?,
                denominator: number(kind, "denominator", &ident(&den))?,
            }
        }
        T::StatusResUnique => {
            let [unique, known, running, num, den, clients] = take(6)?.try_into().expect("split gives n parts");
            Packet::StatusResUnique {
                unique,
                known: flag(kind, "known", &known)?,
                running: flag(kind, "running", &running)?,
                numerator: number(kind, "numerator", &num)?,
                denominator: number(kind, "denominator", &den)?,
                clients: number(kind, "client count", &ident(&clients))?,
            }
        }
        T::OptionReq => Packet::OptionReq { option: ident(body) },
        T::OptionRes => Packet::OptionRes { option: ident(body) },
        T::Error => {
            let (code, message) = match body.iter().position(|&b| b == 0) {
                Some(i) => (body[..i].to_vec(), body[i + 1..].to_vec()),
                None => (body.to_vec(), Vec::new()),
            };
            Packet::Error { code, message }
        }
        T::EchoReq => Packet::EchoReq { data: body.to_vec() },
        T::EchoRes => Packet::EchoRes { data: body.to_vec() },
        T::AllYours | T::SubmitJobSched | T::SubmitReduceJob | T::SubmitReduceJobBackground => {
            return Err(Error::Unsupported(kind))
        }
    })
}

fn submit_flavour(kind: PacketType) -> Option<(Priority, bool)> {
    use PacketType as T;
    Some(match kind {
        T::SubmitJob => (Priority::Normal, false),
        T::SubmitJobBg => (Priority::Normal, true),
        T::SubmitJobHigh => (Priority::High, false),
        T::SubmitJobHighBg => (Priority::High, true),
        T::SubmitJobLow => (Priority::Low, false),
        T::SubmitJobLowBg => (Priority::Low, true),
        _ => return None,
    })
}

fn submit_type(priority: Priority, background: bool) -> PacketType {
    use PacketType as T;
    match (priority, background) {
        (Priority::Normal, false) => T::SubmitJob,
        (Priority::Normal, true) => T::SubmitJobBg,
        (Priority::High, false) => T::SubmitJobHigh,
        (Priority::High, true) => T::SubmitJobHighBg,
        (Priority::Low, false) => T::SubmitJobLow,
        (Priority::Low, true) => T::SubmitJobLowBg,
    }
}

impl Packet {
    /// The packet's type.
    pub fn kind(&self) -> PacketType {
        use PacketType as T;
        match self {
            Packet::CanDo { .. } => T::CanDo,
            Packet::CanDoTimeout { .. } => T::CanDoTimeout,
            Packet::CantDo { .. } => T::CantDo,
            Packet::ResetAbilities => T::ResetAbilities,
            Packet::PreSleep => T::PreSleep,
            Packet::GrabJob => T::GrabJob,
            Packet::GrabJobUniq => T::GrabJobUniq,
            Packet::GrabJobAll => T::GrabJobAll,
            Packet::SetClientId { .. } => T::SetClientId,
            Packet::Noop => T::Noop,
            Packet::NoJob => T::NoJob,
            Packet::JobAssign { .. } => T::JobAssign,
            Packet::JobAssignUniq { .. } => T::JobAssignUniq,
            Packet::JobAssignAll { .. } => T::JobAssignAll,
            Packet::WorkStatus { .. } => T::WorkStatus,
            Packet::WorkComplete { .. } => T::WorkComplete,
            Packet::WorkFail { .. } => T::WorkFail,
            Packet::WorkException { .. } => T::WorkException,
            Packet::WorkData { .. } => T::WorkData,
            Packet::WorkWarning { .. } => T::WorkWarning,
            Packet::SubmitJob { priority, background, .. } => submit_type(*priority, *background),
            Packet::SubmitJobEpoch { .. } => T::SubmitJobEpoch,
            Packet::GetStatus { .. } => T::GetStatus,
            Packet::GetStatusUnique { .. } => T::GetStatusUnique,
            Packet::OptionReq { .. } => T::OptionReq,
            Packet::JobCreated { .. } => T::JobCreated,
            Packet::StatusRes { .. } => T::StatusRes,
            Packet::StatusResUnique { .. } => T::StatusResUnique,
            Packet::OptionRes { .. } => T::OptionRes,
            Packet::Error { .. } => T::Error,
            Packet::EchoReq { .. } => T::EchoReq,
            Packet::EchoRes { .. } => T::EchoRes,
        }
    }
}

/// The fields of a packet in wire order, numbers as decimal text.
fn fields(packet: &Packet) -> Vec<(&'static str, std::borrow::Cow<'_, [u8]>)> {
    use std::borrow::Cow::{Borrowed as B, Owned as O};
    let num = |n: &u64| O(n.to_string().into_bytes());
    let bit = |b: &bool| B(if *b { &b"1"[..] } else { &b"0"[..] });
    match packet {
        Packet::CanDo { function } | Packet::CantDo { function } => vec![("function", B(function))],
        Packet::CanDoTimeout { function, timeout } => {
            vec![("function", B(function)), ("timeout", O(timeout.to_string().into_bytes()))]
        }
        Packet::ResetAbilities
        | Packet::PreSleep
        | Packet::GrabJob
        | Packet::GrabJobUniq
        | Packet::GrabJobAll
        | Packet::Noop
        | Packet::NoJob => vec![],
        Packet::SetClientId { id } => vec![("id", B(id))],
        Packet::JobAssign { handle, function, workload } => {
            vec![("handle", B(handle)), ("function", B(function)), ("workload", B(workload))]
        }
        Packet::JobAssignUniq { handle, function, unique, workload } => {
            vec![("handle", B(handle)), ("function", B(function)), ("unique", B(unique)), ("workload", B(workload))]
        }
        Packet::JobAssignAll { handle, function, unique, reducer, workload } => vec![
            ("handle", B(handle)),
            ("function", B(function)),
            ("unique", B(unique)),
            ("reducer", B(reducer)),
            ("workload", B(workload)),
        ],
        Packet::WorkStatus { handle, numerator, denominator } => {
            vec![("handle", B(handle)), ("numerator", num(numerator)), ("denominator", num(denominator))]
        }
        Packet::WorkFail { handle } => vec![("handle", B(handle))],
        Packet::WorkComplete { handle, data }
        | Packet::WorkException { handle, data }
        | Packet::WorkData { handle, data }
        | Packet::WorkWarning { handle, data } => vec![("handle", B(handle)), ("data", B(data))],
        Packet::SubmitJob { function, unique, workload, .. } => {
            vec![("function", B(function)), ("unique", B(unique)), ("workload", B(workload))]
        }
        Packet::SubmitJobEpoch { function, unique, epoch, workload } => {
            vec![("function", B(function)), ("unique", B(unique)), ("epoch", num(epoch)), ("workload", B(workload))]
        }
        Packet::GetStatus { handle } | Packet::JobCreated { handle } => vec![("handle", B(handle))],
        Packet::GetStatusUnique { unique } => vec![("unique", B(unique))],
        Packet::OptionReq { option } | Packet::OptionRes { option } => vec![("option", B(option))],
        Packet::StatusRes { handle, known, running, numerator, denominator } => vec![
            ("handle", B(handle)),
            ("known", bit(known)),
            ("running", bit(running)),
            ("numerator", num(numerator)),
            ("denominator", num(denominator)),
        ],
        Packet::StatusResUnique { unique, known, running, numerator, denominator, clients } => vec![
            ("unique", B(unique)),
            ("known", bit(known)),
            ("running", bit(running)),
            ("numerator", num(numerator)),
            ("denominator", num(denominator)),
            ("client count", num(clients)),
        ],
        Packet::Error { code, message } => vec![("code", B(code)), ("message", B(message))],
        Packet::EchoReq { data } | Packet::EchoRes { data } => vec![("data", B(data))],
    }
}

/// Whether the last field may hold NULs: it is the free-form data that runs to the end.
fn last_is_free(kind: PacketType) -> bool {
    use PacketType as T;
    !matches!(
        kind,
        T::CanDo
            | T::CantDo
            | T::CanDoTimeout
            | T::WorkFail
            | T::WorkStatus
            | T::JobCreated
            | T::GetStatus
            | T::GetStatusUnique
            | T::OptionReq
            | T::OptionRes
            | T::StatusRes
            | T::StatusResUnique
    )
}

/// Appends `packet` with `magic` to `out`.
///
/// # Errors
/// [`Error::NulInArgument`] when a field that cannot hold a NUL does; [`Error::TooBig`] when
/// the body does not fit the protocol's 32-bit size. Nothing is appended then.
pub fn encode(magic: Magic, packet: &Packet, out: &mut Vec<u8>) -> Result<(), Error> {
    let kind = packet.kind();
    let fields = fields(packet);
    let free_last = last_is_free(kind);
    for (i, (name, value)) in fields.iter().enumerate() {
        let may_hold_nul = free_last && i + 1 == fields.len();
        if !may_hold_nul && value.contains(&0) {
            return Err(Error::NulInArgument { kind, field: name });
        }
    }
    let size: usize = fields.iter().map(|(_, v)| v.len()).sum::<usize>() + fields.len().saturating_sub(1);
    let size32 = u32::try_from(size).map_err(|_| Error::TooBig { size: size as u64, max: u32::MAX as usize })?;
    out.reserve(HEADER_LEN + size);
    out.extend_from_slice(magic.bytes());
    out.extend_from_slice(&(kind as u32).to_be_bytes());
    out.extend_from_slice(&size32.to_be_bytes());
    for (i, (_, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(value);
    }
    Ok(())
}

/// Appends a packet of type `kind` whose body is `body` as it came (a server relaying a
/// worker's `WORK_STATUS` byte for byte, as gearmand does).
///
/// # Errors
/// [`Error::TooBig`] for a body over `u32::MAX` bytes.
pub fn encode_raw(magic: Magic, kind: PacketType, body: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let size =
        u32::try_from(body.len()).map_err(|_| Error::TooBig { size: body.len() as u64, max: u32::MAX as usize })?;
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(magic.bytes());
    out.extend_from_slice(&(kind as u32).to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

impl fmt::Display for Magic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Magic::Req => "REQ",
            Magic::Res => "RES",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(magic: Magic, packet: Packet) {
        let mut buf = Vec::new();
        encode(magic, &packet, &mut buf).unwrap();
        assert_eq!(decode(&buf, DEFAULT_MAX_BODY).unwrap(), Decoded::Packet { magic, packet, len: buf.len() });
    }

    #[test]
    fn wire_bytes_match_the_protocol() {
        let mut buf = Vec::new();
        encode(Magic::Req, &Packet::CanDo { function: b"Hello::say".to_vec() }, &mut buf).unwrap();
        assert_eq!(buf, b"\0REQ\0\0\0\x01\0\0\0\x0aHello::say");
        buf.clear();
        let submit = Packet::SubmitJob {
            priority: Priority::High,
            background: true,
            function: b"f".to_vec(),
            unique: b"u".to_vec(),
            workload: b"a\0b".to_vec(),
        };
        encode(Magic::Req, &submit, &mut buf).unwrap();
        assert_eq!(buf, b"\0REQ\0\0\0\x20\0\0\0\x07f\0u\0a\0b");
        roundtrip(Magic::Req, submit);
    }

    #[test]
    fn gearmand_quirks_are_accepted() {
        // WORK_FAIL with a trailing NUL, as gearmand 1.1.20 converts WORK_EXCEPTION.
        let raw = b"\0RES\0\0\0\x0e\0\0\0\x04H:1\0";
        let Decoded::Packet { packet, .. } = decode(raw, 1024).unwrap() else { panic!() };
        assert_eq!(packet, Packet::WorkFail { handle: b"H:1".to_vec() });
        // STATUS_RES_UNIQUE starts with the unique key.
        let raw = b"\0RES\0\0\0\x2a\0\0\0\x0cuk\x001\x001\x001\x002\x003";
        let Decoded::Packet { packet, .. } = decode(raw, 1024).unwrap() else { panic!() };
        assert_eq!(
            packet,
            Packet::StatusResUnique {
                unique: b"uk".to_vec(),
                known: true,
                running: true,
                numerator: 1,
                denominator: 2,
                clients: 3
            }
        );
    }

    #[test]
    fn hostile_headers_fail_fast() {
        assert_eq!(decode(b"\0REX", 1024), Err(Error::BadMagic(*b"\0REX")));
        assert_eq!(decode(b"GET ", 1024), Err(Error::BadMagic(*b"GET ")));
        assert_eq!(decode(b"x", 1024), Err(Error::BadMagic(*b"x\0\0\0")));
        assert_eq!(decode(b"\0RE", 1024), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"\0REQ\0\0\0\x05\0\0", 1024), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"\0REQ\0\0\0\x05\0\0\0\0", 1024), Err(Error::UnknownType(5)));
        assert_eq!(
            decode(b"\0REQ\0\0\0\x01\xff\xff\xff\xff", DEFAULT_MAX_BODY),
            Err(Error::TooBig { size: u64::from(u32::MAX), max: DEFAULT_MAX_BODY })
        );
        assert_eq!(decode(b"\0REQ\0\0\0\x01\0\0\0\x03ab", 1024), Ok(Decoded::Incomplete));
        assert_eq!(
            decode(b"\0RES\0\0\0\x0b\0\0\0\x03a\0b", 1024),
            Err(Error::MissingArguments { kind: PacketType::JobAssign, expected: 3, found: 2 })
        );
        // WORK_STATUS numbers are read as gearmand reads them (atoi), never refused.
        assert_eq!(
            decode(b"\0RES\0\0\0\x0c\0\0\0\x05h\0x\x001", 1024),
            Ok(Decoded::Packet {
                magic: Magic::Res,
                packet: Packet::WorkStatus { handle: b"h".to_vec(), numerator: 0, denominator: 1 },
                len: 17
            })
        );
        assert_eq!((atoi(b"0.5"), atoi(b"50%"), atoi(b" -7"), atoi(b""), atoi(b"x1")), (0, 50, -7, 0, 0));
        let mut wire = Vec::new();
        encode_raw(Magic::Res, PacketType::WorkStatus, b"h\x000.5\x001", &mut wire).unwrap();
        assert_eq!(wire, b"\0RES\0\0\0\x0c\0\0\0\x07h\x000.5\x001");
    }

    #[test]
    fn nul_in_a_fixed_field_is_refused_on_encode() {
        let mut buf = Vec::new();
        let bad = Packet::SubmitJob {
            priority: Priority::Normal,
            background: false,
            function: b"a\0b".to_vec(),
            unique: vec![],
            workload: vec![],
        };
        assert_eq!(
            encode(Magic::Req, &bad, &mut buf),
            Err(Error::NulInArgument { kind: PacketType::SubmitJob, field: "function" })
        );
        assert!(buf.is_empty());
    }
}

/// Property tests of the decoder: bounded runs (a fixed number of cases) that CI executes on
/// every build. They assert that any packet survives a round trip, whatever way it is split
/// across reads, and that arbitrary bytes never panic the decoder nor make it buffer more than
/// the limit.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..24)
    }

    fn data() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn priority() -> impl Strategy<Value = Priority> {
        prop_oneof![Just(Priority::Low), Just(Priority::Normal), Just(Priority::High)]
    }

    fn packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            field().prop_map(|function| Packet::CanDo { function }),
            (field(), any::<u32>()).prop_map(|(function, timeout)| Packet::CanDoTimeout { function, timeout }),
            field().prop_map(|function| Packet::CantDo { function }),
            Just(Packet::ResetAbilities),
            Just(Packet::PreSleep),
            Just(Packet::GrabJob),
            Just(Packet::GrabJobUniq),
            Just(Packet::GrabJobAll),
            data().prop_map(|id| Packet::SetClientId { id }),
            Just(Packet::Noop),
            Just(Packet::NoJob),
            (field(), field(), data()).prop_map(|(handle, function, workload)| Packet::JobAssign {
                handle,
                function,
                workload
            }),
            (field(), field(), field(), data()).prop_map(|(handle, function, unique, workload)| {
                Packet::JobAssignUniq { handle, function, unique, workload }
            }),
            (field(), field(), field(), field(), data()).prop_map(|(handle, function, unique, reducer, workload)| {
                Packet::JobAssignAll { handle, function, unique, reducer, workload }
            }),
            // Progress is a u32 on the wire, as gearmand stores it.
            (field(), any::<u32>(), any::<u32>()).prop_map(|(handle, numerator, denominator)| Packet::WorkStatus {
                handle,
                numerator: u64::from(numerator),
                denominator: u64::from(denominator)
            }),
            (field(), data()).prop_map(|(handle, data)| Packet::WorkComplete { handle, data }),
            field().prop_map(|handle| Packet::WorkFail { handle }),
            (field(), data()).prop_map(|(handle, data)| Packet::WorkException { handle, data }),
            (field(), data()).prop_map(|(handle, data)| Packet::WorkData { handle, data }),
            (field(), data()).prop_map(|(handle, data)| Packet::WorkWarning { handle, data }),
            (priority(), any::<bool>(), field(), field(), data()).prop_map(
                |(priority, background, function, unique, workload)| Packet::SubmitJob {
                    priority,
                    background,
                    function,
                    unique,
                    workload
                }
            ),
            (field(), field(), any::<u64>(), data()).prop_map(|(function, unique, epoch, workload)| {
                Packet::SubmitJobEpoch { function, unique, epoch, workload }
            }),
            field().prop_map(|handle| Packet::GetStatus { handle }),
            field().prop_map(|unique| Packet::GetStatusUnique { unique }),
            field().prop_map(|option| Packet::OptionReq { option }),
            field().prop_map(|handle| Packet::JobCreated { handle }),
            (field(), any::<bool>(), any::<bool>(), any::<u64>(), any::<u64>()).prop_map(
                |(handle, known, running, numerator, denominator)| Packet::StatusRes {
                    handle,
                    known,
                    running,
                    numerator,
                    denominator
                }
            ),
            (field(), any::<bool>(), any::<bool>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(unique, known, running, numerator, denominator, clients)| Packet::StatusResUnique {
                    unique,
                    known,
                    running,
                    numerator,
                    denominator,
                    clients
                }
            ),
            field().prop_map(|option| Packet::OptionRes { option }),
            (field(), data()).prop_map(|(code, message)| Packet::Error { code, message }),
            data().prop_map(|data| Packet::EchoReq { data }),
            data().prop_map(|data| Packet::EchoRes { data }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn any_packet_round_trips_however_it_is_split(
            magic in prop_oneof![Just(Magic::Req), Just(Magic::Res)],
            packets in proptest::collection::vec(packet(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut wire = Vec::new();
            for packet in &packets {
                encode(magic, packet, &mut wire).unwrap();
            }
            // Feed the bytes in two reads, cut anywhere: every prefix is Incomplete or whole packets.
            let cut = cut.index(wire.len() + 1);
            let mut buf = wire[..cut].to_vec();
            let mut got = Vec::new();
            let mut fed_rest = false;
            loop {
                match decode(&buf, DEFAULT_MAX_BODY).unwrap() {
                    Decoded::Packet { magic: m, packet, len } => {
                        prop_assert_eq!(m, magic);
                        got.push(packet);
                        buf.drain(..len);
                    }
                    Decoded::Incomplete if !fed_rest => {
                        buf.extend_from_slice(&wire[cut..]);
                        fed_rest = true;
                    }
                    Decoded::Incomplete => break,
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, packets);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, 128);
        }

        #[test]
        fn a_valid_header_with_arbitrary_body_never_panics(
            kind in 0u32..48,
            body in proptest::collection::vec(any::<u8>(), 0..128),
            magic in prop_oneof![Just(*b"\0REQ"), Just(*b"\0RES")],
        ) {
            let mut wire = magic.to_vec();
            wire.extend_from_slice(&kind.to_be_bytes());
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
            match decode(&wire, DEFAULT_MAX_BODY) {
                Ok(Decoded::Packet { len, .. }) => prop_assert_eq!(len, wire.len()),
                Ok(Decoded::Incomplete) => prop_assert!(false, "a whole packet cannot be incomplete"),
                Err(_) => {}
            }
        }

        #[test]
        fn a_declared_size_over_the_limit_is_refused_from_the_header_alone(
            size in 1025u32..=u32::MAX,
        ) {
            let mut wire = b"\0REQ".to_vec();
            wire.extend_from_slice(&16u32.to_be_bytes());
            wire.extend_from_slice(&size.to_be_bytes());
            prop_assert_eq!(decode(&wire, 1024), Err(Error::TooBig { size: u64::from(size), max: 1024 }));
        }
    }
}
