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

    /// An environment value of the job, by name: li3_gearman's `env` entries (`HTTP_HOST`,
    /// `SCRIPT_NAME`, `PHP_SELF`, `HTTPS`, ...), which the original merged into `$_SERVER`.
    /// `None` when the submitter did not send it. The environment name is [`Job::environment`].
    pub fn env(&self, name: &str) -> Option<&str> {
        self.ctx.env_vars.iter().find(|var| var.name.as_str() == name).map(|var| var.value.as_str())
    }

    /// Every environment value of the job, sorted by name.
    pub fn env_vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ctx.env_vars.iter().map(|var| (var.name.as_str(), var.value.as_str()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{EnvVar, JobSink, JobSink_TO};
    use abi_stable::sabi_trait::TD_Opaque;
    use abi_stable::std_types::RStr;

    struct Quiet;
    impl JobSink for Quiet {
        fn status(&self, _: u64, _: u64) {}
        fn data(&self, _: RSlice<'_, u8>) {}
        fn warning(&self, _: RSlice<'_, u8>) {}
    }

    #[test]
    fn env_values_by_name() {
        let vars = [
            EnvVar { name: RStr::from_str("HTTPS"), value: RStr::from_str("on") },
            EnvVar { name: RStr::from_str("HTTP_HOST"), value: RStr::from_str("shop.example.com") },
        ];
        let sink = Quiet;
        let ctx = JobCtx {
            task: RStr::from_str("A::b"),
            id: RStr::from_str("1"),
            environment: RStr::from_str("production"),
            env_vars: RSlice::from_slice(&vars),
            state: None,
            sink: JobSink_TO::from_ptr(&sink, TD_Opaque),
        };
        let job = Job::new(&ctx);
        assert_eq!(job.environment(), "production");
        assert_eq!(job.env("HTTP_HOST"), Some("shop.example.com"));
        assert_eq!(job.env("SCRIPT_NAME"), None);
        assert_eq!(job.env_vars().collect::<Vec<_>>(), [("HTTPS", "on"), ("HTTP_HOST", "shop.example.com")]);
    }
}
