//! One peer connection of the job server: its socket, bounded input and output buffers, and
//! what the peer is (a client waiting for jobs, a worker with abilities, or both).
//!
//! Input: bytes are read in chunks into a buffer and cut into requests with the shared codec
//! ([`crate::gearman::packet::decode`]) or, when a message does not start with NUL, into admin
//! command lines. The codec refuses a body over the limit from the header alone and an admin
//! line is capped, so a connection never buffers more than one request (plus a read chunk),
//! whatever the peer declares.
//!
//! Output: answers are encoded into one buffer and written when the socket takes them. Part of
//! the buffer may be *held*: a `JOB_CREATED` for a durable job, and everything after it, waits
//! for the store's commit ([`Peer::hold`], [`Peer::release`]). It must not: do protocol
//! logic (that is `handlers/`), or block.

use super::jobs::JobId;
use super::stream::Stream;
use crate::gearman::admin_protocol::MAX_COMMAND_LINE;
use crate::gearman::packet::{self, Decoded, Magic, Packet};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The input buffer's starting size; it grows only for a packet that does not fit (to that
/// packet's size), and is given back once empty.
const INPUT_START: usize = 16 << 10;
/// Output already written is dropped from the buffer once it is this large.
const COMPACT: usize = 64 << 10;
/// A drained output buffer larger than this is given back (one large answer must not keep
/// its memory for the life of the connection).
const OUTPUT_KEEP: usize = 1 << 20;
/// How much of an oversized packet's body is looked at for the job handle it starts with.
const HANDLE_PEEK: usize = 65;

/// Whether packet type `kind` is a worker's report on a job (its body starts with the handle).
fn is_report(kind: u32) -> bool {
    use packet::PacketType as T;
    [T::WorkComplete, T::WorkData, T::WorkWarning, T::WorkException, T::WorkStatus, T::WorkFail]
        .iter()
        .any(|&t| t as u32 == kind)
}

/// What the peer sent next.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A request packet.
    Packet(Packet),
    /// A `WORK_STATUS` packet, with its body as sent (relayed byte for byte, as gearmand).
    WorkStatus(Packet, Vec<u8>),
    /// A packet whose declared body is over the limit: its body is skipped (the stream stays
    /// in step), the peer is answered `ERROR`, and a job it names is failed.
    TooBig {
        /// The packet type number.
        kind: u32,
        /// The declared body size.
        size: u64,
        /// The job handle its body starts with (for `WORK_*` packets).
        handle: Vec<u8>,
    },
    /// A text admin command line, without its line end.
    Admin(String),
    /// A well-framed packet of a type the server refuses (`SUBMIT_JOB_SCHED`, reduce jobs).
    Refused(packet::PacketType),
    /// Bytes that are not the protocol: answered with ERROR, then the connection is closed.
    Garbage(String),
}

/// A worker's registered function.
#[derive(Debug, Clone)]
pub(super) struct Ability {
    /// The function name.
    pub function: Vec<u8>,
    /// From `CAN_DO_TIMEOUT`: how long a job may run before it is requeued.
    pub timeout: Option<Duration>,
}

/// One connection.
pub(super) struct Peer {
    pub stream: Stream,
    pub addr: SocketAddr,
    /// Input bytes are `input[start..end]` (consumed bytes are dropped in bulk, not per packet).
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Input bytes still to be skipped (the rest of an oversized packet).
    skip: u64,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    /// Where the held part of `out` starts, if some of it waits for a commit.
    held_from: Option<usize>,
    /// Answered garbage or asked to leave: closed once the output is written.
    pub closing: bool,
    /// The poll said the peer closed its side (or the socket failed): a short read is then
    /// no sign that all was read, since no new event comes for the end of stream.
    pub read_closed: bool,
    /// Whether it is in the server's list of connections to flush at the end of the turn.
    pub dirty: bool,
    /// Whether it is registered for writability (only while output is stuck).
    pub want_write: bool,
    /// The id from `SET_CLIENT_ID` (`-` in `workers` when unset).
    pub client_id: Option<String>,
    /// `OPTION_REQ exceptions`: forward `WORK_EXCEPTION` instead of turning it into `WORK_FAIL`.
    pub exceptions: bool,
    /// Foreground jobs this client waits for.
    pub attached: HashSet<JobId>,
    /// Functions this worker can do, in registration order.
    pub abilities: Vec<Ability>,
    /// After `PRE_SLEEP`, until it grabs again.
    pub sleeping: bool,
    /// A NOOP was sent since it went to sleep (one is enough).
    pub noop_sent: bool,
    /// Jobs this worker holds.
    pub in_hand: HashSet<JobId>,
    /// Where the next grab starts in `abilities`, so no function starves another.
    pub rotate: usize,
}

impl Peer {
    pub fn new(stream: Stream, addr: SocketAddr) -> Peer {
        Peer {
            stream,
            addr,
            input: Vec::new(),
            start: 0,
            end: 0,
            skip: 0,
            out: Vec::new(),
            written: 0,
            held_from: None,
            closing: false,
            read_closed: false,
            dirty: false,
            want_write: false,
            client_id: None,
            exceptions: false,
            attached: HashSet::new(),
            abilities: Vec::new(),
            sleeping: false,
            noop_sent: false,
            in_hand: HashSet::new(),
            rotate: 0,
        }
    }

    /// Reads what fits in the input buffer (growing it only when one request does not fit).
    ///
    /// # Returns
    /// Bytes read (`0`: the peer's end of stream), and whether the socket was drained (a short
    /// read: with edge-triggered readiness, more data will come with a new event).
    ///
    /// # Errors
    /// The socket's, `WouldBlock` included (nothing more to read for now).
    pub fn read_chunk(&mut self) -> io::Result<(usize, bool)> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.input.len() > 4 * INPUT_START {
                self.input = Vec::new();
            }
        }
        if self.input.is_empty() {
            self.input = vec![0; INPUT_START];
        }
        if self.end == self.input.len() {
            if self.start > 0 {
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // One request larger than the buffer (the codec has checked its declared size
                // against the limit already): double, as data comes, but never past its size.
                let double = self.input.len() * 2;
                let len = match packet::frame_len(&self.input[..self.end]) {
                    Some(len) if len > self.input.len() && self.input[0] == 0 => len.min(double),
                    _ => double,
                };
                self.input.resize(len, 0);
            }
        }
        let (n, short) = self.stream.read(&mut self.input[self.end..])?;
        self.end += n;
        Ok((n, short))
    }

    /// The next whole request in the input, if there is one.
    pub fn next_request(&mut self, max_body: usize) -> Option<Incoming> {
        if self.skip > 0 {
            let n = (self.end - self.start).min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.start += n;
            self.skip -= n as u64;
            if self.skip > 0 {
                return None;
            }
        }
        let buf = &self.input[self.start..self.end];
        let first = *buf.first()?;
        if first != 0 {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                if buf.len() > MAX_COMMAND_LINE {
                    return Some(Incoming::Garbage(format!("admin line longer than {MAX_COMMAND_LINE} bytes")));
                }
                return None;
            };
            if end > MAX_COMMAND_LINE {
                return Some(Incoming::Garbage(format!("admin line longer than {MAX_COMMAND_LINE} bytes")));
            }
            let line = String::from_utf8_lossy(&buf[..end]).trim_end_matches('\r').to_string();
            self.start += end + 1;
            return Some(Incoming::Admin(line));
        }
        match packet::decode(buf, max_body) {
            Ok(Decoded::Incomplete) => None,
            Ok(Decoded::Packet { magic: Magic::Req, packet, len }) => {
                let body = &buf[packet::HEADER_LEN..len];
                let incoming = match packet {
                    Packet::WorkStatus { .. } => Incoming::WorkStatus(packet, body.to_vec()),
                    packet => Incoming::Packet(packet),
                };
                self.start += len;
                Some(incoming)
            }
            Err(packet::Error::TooBig { size, .. }) => {
                // A worker's report starts with the job's handle: wait for it (up to its NUL,
                // or HANDLE_PEEK bytes), then skip the rest.
                let kind = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let body = &buf[packet::HEADER_LEN..buf.len().min(packet::HEADER_LEN + HANDLE_PEEK)];
                let handle = match body.iter().position(|&b| b == 0) {
                    Some(end) => body[..end].to_vec(),
                    None if is_report(kind) && body.len() < HANDLE_PEEK.min(size as usize) => return None,
                    None => body.to_vec(),
                };
                self.start += packet::HEADER_LEN;
                self.skip = size;
                let handle = if is_report(kind) { handle } else { Vec::new() };
                Some(Incoming::TooBig { kind, size, handle })
            }
            Ok(Decoded::Packet { magic: Magic::Res, .. }) => {
                Some(Incoming::Garbage("a \\0RES packet sent to the server".into()))
            }
            Err(packet::Error::Unsupported(kind)) => {
                // `decode` reports an unsupported type only once the whole packet is buffered.
                self.start += packet::frame_len(buf).expect("a whole packet was decoded");
                Some(Incoming::Refused(kind))
            }
            Err(err) => Some(Incoming::Garbage(err.to_string())),
        }
    }

    /// Appends a response packet to the output.
    pub fn send(&mut self, packet: &Packet) {
        if let Err(err) = packet::encode(Magic::Res, packet, &mut self.out) {
            // Only a field with a NUL can fail, and the server only echoes what it decoded.
            log::warn!("cannot encode {:?} for {}: {err}", packet.kind(), self.addr);
        }
    }

    /// Appends a response of type `kind` with `body` as it came (see [`Incoming::WorkStatus`]).
    pub fn send_raw(&mut self, kind: packet::PacketType, body: &[u8]) {
        if let Err(err) = packet::encode_raw(Magic::Res, kind, body, &mut self.out) {
            log::warn!("cannot encode {kind:?} for {}: {err}", self.addr);
        }
    }

    /// Appends admin answer text to the output.
    pub fn send_text(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    /// Holds what is sent from now on until [`Peer::release`].
    pub fn hold(&mut self) {
        if self.held_from.is_none() {
            self.held_from = Some(self.out.len());
        }
    }

    /// Whether some output waits for a commit.
    pub fn is_held(&self) -> bool {
        self.held_from.is_some()
    }

    /// Releases held output (the commit succeeded).
    pub fn release(&mut self) {
        self.held_from = None;
    }

    /// Drops held output and everything after it (the commit failed; the connection is then closed).
    pub fn discard_held(&mut self) {
        if let Some(from) = self.held_from.take() {
            self.out.truncate(from);
        }
    }

    /// Bytes waiting to be written (held ones included).
    pub fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes what may be written.
    ///
    /// # Returns
    /// Whether everything writable went out.
    ///
    /// # Errors
    /// The socket's, other than `WouldBlock`.
    pub fn flush(&mut self) -> io::Result<bool> {
        let limit = self.held_from.unwrap_or(self.out.len());
        while self.written < limit {
            match self.stream.write(&self.out[self.written..limit]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // TLS records rustls still holds (handshake messages, encrypted answers) go out too.
        let done = self.stream.flush_tls()? && self.written >= limit;
        if self.written == self.out.len() {
            if self.out.capacity() > OUTPUT_KEEP {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
            self.written = 0;
        } else if self.written > COMPACT && self.written * 2 > self.out.len() {
            self.out.drain(..self.written);
            if let Some(from) = &mut self.held_from {
                *from -= self.written;
            }
            self.written = 0;
        }
        Ok(done)
    }

    /// The `workers` line's client id.
    pub fn shown_id(&self) -> String {
        match &self.client_id {
            Some(id) if !id.is_empty() => id.split_whitespace().collect::<Vec<_>>().join("_"),
            _ => "-".into(),
        }
    }
}
