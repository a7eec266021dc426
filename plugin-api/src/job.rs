//! The job context a task can ask for by taking `&Job` as its first parameter.

use crate::abi::JobCtx;
use abi_stable::std_types::RSlice;

/// The job a task is running for: its id and environment, and the way to report progress,
/// partial data and warnings back to whoever submitted it.
///
/// Reports go to the client as they happen (Gearman `WORK_STATUS`, `WORK_DATA`,
/// `WORK_WARNING`); `li3g-host exec` prints them on stderr.
pub struct Job<'a> {
    ctx: &'a JobCtx<'a>,
}

impl<'a> Job<'a> {
    /// Wraps the context the host passed in.
    pub fn new<'b: 'a>(ctx: &'a JobCtx<'b>) -> Self {
        // SAFETY: `JobCtx` is invariant in its lifetime only because of the sink's trait
        // object. Shortening 'b to 'a behind a shared reference is sound: nothing reachable
        // from `&JobCtx` can store a value of the shorter lifetime, and `Job<'a>` cannot
        // outlive 'a, so every borrow it hands out ends before 'b does.
        let ctx = unsafe { &*(ctx as *const JobCtx<'b>).cast::<JobCtx<'a>>() };
        Job { ctx }
    }

    /// The task name as dispatched (`Hello::say`).
    pub fn task(&self) -> &str {
        self.ctx.task.as_str()
    }

    /// The job id: the one the submitter gave, or one the host generated.
    pub fn id(&self) -> &str {
        self.ctx.id.as_str()
    }

    /// The environment the host runs in (`--environment`), empty when none was given.
    pub fn environment(&self) -> &str {
        self.ctx.environment.as_str()
    }

    /// Reports progress: `numerator` of `denominator` done.
    pub fn progress(&self, numerator: u64, denominator: u64) {
        self.ctx.sink.status(numerator, denominator);
    }

    /// Sends a chunk of partial result data to the client.
    pub fn send_data(&self, data: impl AsRef<[u8]>) {
        self.ctx.sink.data(RSlice::from_slice(data.as_ref()));
    }

    /// Sends a warning to the client; the job goes on.
    pub fn warn(&self, message: impl AsRef<[u8]>) {
        self.ctx.sink.warning(RSlice::from_slice(message.as_ref()));
    }
}
