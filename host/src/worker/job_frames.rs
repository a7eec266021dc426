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

/// The largest frame the child may send: what one Gearman packet can carry.
pub const MAX_FRAME: usize = DEFAULT_MAX_BODY;

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
        if self.broken {
            return;
        }
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut header = [0u8; 5];
        header[0] = tag;
        header[1..].copy_from_slice(&len.to_be_bytes());
        if payload.len() > MAX_FRAME {
            // The header alone tells the parent, which fails the job; never a cut payload.
            let _ = self.pipe.write_all(&header);
            self.broken = true;
            return;
        }
        let sent = self.pipe.write_all(&header).and_then(|()| self.pipe.write_all(payload));
        self.broken = sent.is_err();
    }
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
            Ok(n) => frames.feed(&chunk[..n], events)?,
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
    /// # Errors
    /// [`ForkError::TooBig`] as soon as a header announces more than [`MAX_FRAME`].
    pub(super) fn feed(&mut self, bytes: &[u8], events: &mut dyn JobEvents) -> Result<(), ForkError> {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.buf.len() < 5 {
                return Ok(());
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_FRAME {
                return Err(ForkError::TooBig { size: len as u64 });
            }
            if self.buf.len() < 5 + len {
                return Ok(());
            }
            let tag = self.buf[0];
            let payload: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
            match tag {
                STATUS if payload.len() == 16 => {
                    let n = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let d = u64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
                    events.status(n, d);
                }
                DATA => events.data(&payload),
                WARNING => events.warning(&payload),
                COST if payload.len() == 16 => {
                    let micros = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    let rss = u64::from_be_bytes(payload[8..].try_into().expect("8 bytes"));
                    self.cost = Some(JobCost { cpu: Duration::from_micros(micros), max_rss_bytes: rss });
                }
                RESULT_OK => self.outcome = Some(Ok(payload)),
                RESULT_ERR => self.outcome = Some(Err(String::from_utf8_lossy(&payload).into_owned())),
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
}
