//! What the scoreboard says, as `status`, the monitor and tests read it: the kinds and states
//! of children, and copies of the whole board.

/// What a child is. Stored as its `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A slot nobody has.
    Free = 0,
    /// A worker (`li3g-host work`'s body).
    Worker = 1,
    /// The scheduler, moving due jobs from Redis.
    Scheduler = 2,
    /// The embedded job server.
    JobServer = 3,
    /// The monitor, serving metrics and the dashboard.
    Monitor = 4,
}

impl Kind {
    pub(crate) fn from_u32(v: u32) -> Kind {
        match v {
            1 => Kind::Worker,
            2 => Kind::Scheduler,
            3 => Kind::JobServer,
            4 => Kind::Monitor,
            _ => Kind::Free,
        }
    }

    /// The kind a supervisor's child spec name stands for (`worker`, `scheduler`, ...).
    pub fn for_name(name: &str) -> Kind {
        match name {
            "worker" => Kind::Worker,
            "scheduler" => Kind::Scheduler,
            "job server" => Kind::JobServer,
            "monitor" => Kind::Monitor,
            _ => Kind::Free,
        }
    }

    /// Its name in `status` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Free => "free",
            Kind::Worker => "worker",
            Kind::Scheduler => "scheduler",
            Kind::JobServer => "job server",
            Kind::Monitor => "monitor",
        }
    }
}

/// What a child is doing (httpd's `SERVER_STARTING`, `READY`, `BUSY_*`, `GRACEFUL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Forked, loading plugins and connecting.
    Starting = 0,
    /// Waiting for a job.
    Idle = 1,
    /// Running a job.
    Busy = 2,
    /// Asked to stop, finishing what it holds.
    Stopping = 3,
    /// Gone (a freed slot).
    Exited = 4,
}

impl State {
    pub(crate) fn from_u32(v: u32) -> State {
        match v {
            1 => State::Idle,
            2 => State::Busy,
            3 => State::Stopping,
            4 => State::Exited,
            _ => State::Starting,
        }
    }

    /// Its name in `status`, metrics and the process title.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Busy => "busy",
            State::Stopping => "stopping",
            State::Exited => "exited",
        }
    }
}

/// Why a child was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// An expected exit (`--max-jobs`, `--memlimit`, `restart`).
    Recycled = 0,
    /// An unexpected exit code.
    Crashed = 1,
    /// Killed by a signal.
    Killed = 2,
}

/// One failed job, as the ring keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The task (`Class::method`).
    pub task: String,
    /// li3g's job id.
    pub id: String,
    /// The job server's handle.
    pub handle: String,
    /// The job server that handed it out.
    pub server: String,
    /// What the task said.
    pub message: String,
    /// The signal that ended the job child, under `--atomic`.
    pub signal: Option<i32>,
}

/// A copy of the whole scoreboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    /// The supervisor's PID.
    pub supervisor_pid: u32,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// Bumped by every `restart`.
    pub generation: u64,
    /// The configuration file it read.
    pub config: String,
    /// li3g's version.
    pub version: String,
    /// Children replaced, per kind and reason.
    pub restarts: Vec<Restarts>,
    /// The children, by slot.
    pub children: Vec<ChildSnapshot>,
    /// Newest first.
    pub failures: Vec<Failure>,
    /// The task counters of children that ended (recycled, crashed, restarted).
    pub retired: Vec<TaskSnapshot>,
}

/// Restarts of one kind for one reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restarts {
    /// The child kind.
    pub kind: Kind,
    /// `recycled`, `crashed` or `killed`.
    pub reason: &'static str,
    /// How many.
    pub count: u64,
}

/// A copy of one child's slot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChildSnapshot {
    /// Its slot.
    pub slot: u32,
    /// The child kind.
    pub kind: Kind,
    /// Its number within its kind, or its pool's workers (1, 2, ...).
    pub number: u32,
    /// Its worker pool (`[NAME.pools.POOL]`); `None` for the default pool and other kinds.
    pub pool: Option<String>,
    /// Its PID.
    pub pid: u32,
    /// What it is doing.
    pub state: State,
    /// Bumped by every `restart`.
    pub generation: u64,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
    /// The job in hand, when busy.
    pub job: Option<JobInHand>,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Resident memory, as last measured.
    pub rss_bytes: u64,
    /// The last failure's message.
    pub last_failure: Option<String>,
    /// Counters per task.
    pub tasks: Vec<TaskSnapshot>,
    /// (name, version)
    pub plugins: Vec<(String, String)>,
}

/// The job a busy child holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInHand {
    /// The task (`Class::method`).
    pub task: String,
    /// li3g's job id.
    pub id: String,
    /// The job server's handle.
    pub handle: String,
    /// The job server that handed it out.
    pub server: String,
    /// When the job started (ms since the epoch).
    pub started_ms: u64,
}

/// One task's counters in one child.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskSnapshot {
    /// The task.
    pub name: String,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
    /// Time spent in its jobs.
    pub duration_seconds: f64,
    /// Per bucket of [`BUCKETS`], plus the last (over the largest bound); not cumulative.
    pub buckets: Vec<u64>,
    /// CPU time of its job children (`--atomic`).
    pub cpu_seconds: f64,
    /// The largest peak RSS of its job children (`--atomic`).
    pub max_rss_bytes: u64,
}
