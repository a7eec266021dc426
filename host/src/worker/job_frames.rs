//! The frame protocol on a job child's pipe: the child's side ([`PipeEvents`]: every job event
//! becomes a length-prefixed frame) and the parent's ([`Frames`]: reassembles them, forwards the
//! events and keeps the outcome and the cost). Free of the fork and the wait, which
//! [`super::job_child`] owns.

use super::job_child::ForkError;
use super::job_cost::JobCost;
use crate::gearman::packet::DEFAULT_MAX_BODY;
use crate::plugins::JobEvents;
use std::io::{self, Read, Write};
use std::time::Duration;

/// The largest frame the child may send: what one Gearman packet can carry beside the job
/// handle and its NUL (`WORK_COMPLETE` is `handle \0 result`, and li3g's client, like the
/// codec, refuses a body past [`DEFAULT_MAX_BODY`]: a result of exactly the cap reached the job
/// server and was lost at the client, which dropped the connection).
pub const MAX_FRAME: usize = DEFAULT_MAX_BODY - MAX_HANDLE - 1;

/// The longest job handle room is kept for: gearmand's `GEARMAN_JOB_HANDLE_SIZE`.
const MAX_HANDLE: usize = 64;

const STATUS: u8 = 1;
const DATA: u8 = 2;
const WARNING: u8 = 3;
pub(super) const RESULT_OK: u8 = 4;
pub(super) const RESULT_ERR: u8 = 5;
/// What the child cost up to its answer ([`JobCost`]: CPU microseconds, peak RSS bytes),
/// sent just before the result.
pub(super) const COST: u8 = 6;

/// The child's side of the pipe: every event becomes a frame.
pub(super) struct PipeEvents {
    pub(super) pipe: std::fs::File,
    pub(super) broken: bool,
}

impl PipeEvents {
    pub(super) fn frame(&mut self, tag: u8, payload: &[u8]) {
        self.frames(&[(tag, payload)]);
    }

    /// Sends `frames` in one `writev(2)` when the pipe takes them whole (up to 64 KiB, the
    /// pipe's buffer): every write wakes the parent, so the answer (cost and result) goes as one
    /// write, not four, and the parent reads it in one.
    pub(super) fn frames(&mut self, frames: &[(u8, &[u8])]) {
        if self.broken {
            return;
        }
        let mut headers = [[0u8; 5]; 2];
        assert!(frames.len() <= headers.len(), "at most two frames at once");
        let mut too_big = None;
        for ((tag, payload), header) in frames.iter().zip(headers.iter_mut()) {
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            header[0] = *tag;
            header[1..].copy_from_slice(&len.to_be_bytes());
            if payload.len() > MAX_FRAME && too_big.is_none() {
                too_big = Some(header as &[u8]);
            }
        }
        if too_big.is_some() {
            // The frames before it, then its header alone: the header tells the parent, which
            // fails the job; never a cut payload.
            for ((_, payload), header) in frames.iter().zip(headers.iter()) {
                let sent = if payload.len() > MAX_FRAME {
                    let _ = self.pipe.write_all(header);
                    Err(io::Error::other("too big"))
                } else {
                    self.pipe.write_all(header).and_then(|()| self.pipe.write_all(payload))
                };
                if sent.is_err() {
                    self.broken = true;
                    return;
                }
            }
            return;
        }
        // On the stack: a heap allocation here would write (and so copy) a page of the heap.
        let mut slices = [io::IoSlice::new(&[]); 4];
        for (((_, payload), header), pair) in frames.iter().zip(headers.iter()).zip(slices.chunks_mut(2)) {
            pair[0] = io::IoSlice::new(header);
            pair[1] = io::IoSlice::new(payload);
        }
        self.broken = write_all_vectored(&mut self.pipe, &mut slices[..2 * frames.len()]).is_err();
    }
}

/// `Write::write_all_vectored` (not stable yet): writes every slice whole, resuming after a
/// short write.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl JobEvents for PipeEvents {
    fn status(&mut self, numerator: u64, denominator: u64) {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&numerator.to_be_bytes());
        payload[8..].copy_from_slice(&denominator.to_be_bytes());
        self.frame(STATUS, &payload);
    }
    fn data(&mut self, data: &[u8]) {
        self.frame(DATA, data);
    }
    fn warning(&mut self, data: &[u8]) {
        self.frame(WARNING, data);
    }
}

/// Reads what the pipe has now; returns whether it is still open.
pub(super) fn drain(
    pipe: &mut std::fs::File,
    frames: &mut Frames,
    events: &mut dyn JobEvents,
) -> Result<bool, ForkError> {
    // One page: after a fork every page the parent writes is copied (copy-on-write), so a
    // bigger buffer costs a page fault per page per job.
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                frames.feed(&chunk[..n], events)?;
                if frames.outcome.is_some() {
                    // The answer is the last frame: no read to learn that nothing follows.
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ForkError::Os(e)),
        }
    }
}

/// Reassembles frames from pipe reads, forwarding events and keeping the outcome.
#[derive(Default)]
pub(super) struct Frames {
    buf: Vec<u8>,
    pub(super) outcome: Option<Result<Vec<u8>, String>>,
    pub(super) cost: Option<JobCost>,
}

impl Frames {
    /// Takes `bytes` from the pipe.
    ///
    /// Whole frames are read where they lie; only a frame cut by the end of `bytes` is kept
    /// (in the common case, a small answer in one read, nothing is allocated but the result).
    ///
    /// # Errors
    /// [`ForkError::TooBig`] as soon as a header announces more than [`MAX_FRAME`].
    pub(super) fn feed(&mut self, bytes: &[u8], events: &mut dyn JobEvents) -> Result<(), ForkError> {
        if self.buf.is_empty() {
            let used = self.take_frames(bytes, events)?;
            self.buf.extend_from_slice(&bytes[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.buf);
        let used = self.take_frames(&buf, events);
        self.buf = buf;
        self.buf.drain(..used?);
        Ok(())
    }

    /// Handles the whole frames at the start of `bytes`; returns how many bytes they took.
    fn take_frames(&mut self, bytes: &[u8], events: &mut dyn JobEvents) -> Result<usize, ForkError> {
        let mut used = 0;
        loop {
            let rest = &bytes[used..];
            if rest.len() < 5 {
                return Ok(used);
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if len > MAX_FRAME {
                return Err(ForkError::TooBig { size: len as u64 });
            }
            if rest.len() < 5 + len {
                return Ok(used);
            }
            let tag = rest[0];
            let payload = &rest[5..5 + len];
            used += 5 + len;
            match tag {
                STATUS if payload.len() == 16 => {
                    let n = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let d = u64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
                    events.status(n, d);
                }
                DATA => events.data(payload),
                WARNING => events.warning(payload),
                COST if payload.len() == 16 => {
                    let micros = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let rss = u64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
                    self.cost = Some(JobCost { cpu: Duration::from_micros(micros), max_rss_bytes: rss });
                }
                RESULT_OK => self.outcome = Some(Ok(payload.to_vec())),
                RESULT_ERR => self.outcome = Some(Err(String::from_utf8_lossy(payload).into_owned())),
                _ => {} // the child's own code wrote this; it cannot be a frame we sent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ignore;
    impl JobEvents for Ignore {
        fn status(&mut self, _: u64, _: u64) {}
        fn data(&mut self, _: &[u8]) {}
        fn warning(&mut self, _: &[u8]) {}
    }

    #[test]
    fn a_frame_over_the_packet_cap_fails_at_its_header() {
        let mut frames = Frames::default();
        let mut header = vec![RESULT_OK];
        header.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let err = frames.feed(&header, &mut Ignore).unwrap_err();
        assert!(matches!(err, ForkError::TooBig { size } if size == MAX_FRAME as u64 + 1), "{err}");
        assert!(err.to_string().contains("more than the 64 MiB a Gearman packet can carry"), "{err}");
        assert!(frames.buf.capacity() < 1 << 20, "nothing was buffered for it");
    }

    #[test]
    fn a_frame_at_the_cap_is_accepted() {
        let mut frames = Frames::default();
        let mut bytes = vec![RESULT_OK];
        bytes.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
        bytes.resize(5 + MAX_FRAME, b'x');
        frames.feed(&bytes, &mut Ignore).unwrap();
        assert_eq!(frames.outcome.map(|o| o.unwrap().len()), Some(MAX_FRAME));
    }

    #[test]
    fn a_result_at_the_cap_fits_one_packet_with_the_longest_handle() {
        use crate::gearman::packet::{decode, encode, Decoded, Magic, Packet};
        let packet = Packet::WorkComplete { handle: vec![b'H'; MAX_HANDLE], data: vec![b'x'; MAX_FRAME] };
        let mut wire = Vec::new();
        encode(Magic::Res, &packet, &mut wire).unwrap();
        // What li3g's client does with the server's WORK_COMPLETE: decode it under the cap.
        assert!(matches!(decode(&wire, DEFAULT_MAX_BODY), Ok(Decoded::Packet { .. })), "refused: {} bytes", wire.len());
    }

    #[derive(Default)]
    struct Seen(Vec<String>);
    impl JobEvents for Seen {
        fn status(&mut self, n: u64, d: u64) {
            self.0.push(format!("status {n}/{d}"));
        }
        fn data(&mut self, data: &[u8]) {
            self.0.push(format!("data {}", String::from_utf8_lossy(data)));
        }
        fn warning(&mut self, data: &[u8]) {
            self.0.push(format!("warning {}", String::from_utf8_lossy(data)));
        }
    }

    /// What the child's side writes for a few events and an answer, through a real pipe.
    fn written() -> Vec<u8> {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut events = PipeEvents { pipe: std::fs::File::from(write), broken: false };
        events.data(b"one");
        events.status(1, 2);
        events.warning(b"careful");
        events.frames(&[(COST, &[0u8; 16]), (RESULT_OK, b"done")]);
        assert!(!events.broken);
        drop(events);
        let mut bytes = Vec::new();
        std::fs::File::from(read).read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn frames_read_whole_or_cut_anywhere_give_the_same_events() {
        let bytes = written();
        for piece in [bytes.len(), 1, 3, 7] {
            let mut frames = Frames::default();
            let mut seen = Seen::default();
            for chunk in bytes.chunks(piece) {
                frames.feed(chunk, &mut seen).unwrap();
            }
            assert_eq!(seen.0, ["data one", "status 1/2", "warning careful"], "pieces of {piece}");
            assert_eq!(frames.outcome, Some(Ok(b"done".to_vec())), "pieces of {piece}");
            assert!(frames.cost.is_some(), "pieces of {piece}");
            assert!(frames.buf.is_empty(), "nothing left over (pieces of {piece})");
        }
    }
}
