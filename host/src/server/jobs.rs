//! The job table: every job the server knows, by id, by handle and by unique key.
//!
//! A job is queued, scheduled (a `SUBMIT_JOB_EPOCH` not yet due) or running on a worker. Its
//! handle is `H:<host>:<id>`, so a handle is parsed back to its id rather than kept in a second
//! map. Coalescing follows gearmand: jobs merge on (function, unique); an empty unique never
//! merges; the unique `-` merges on identical workloads. It must not: do I/O or know about
//! connections beyond the tokens of clients and workers.

use super::store::Row;
use crate::gearman::packet::Priority;
use mio::Token;
use std::collections::HashMap;
use std::time::Instant;

/// A job's number; its handle is built from it, and the store keys rows by it.
pub(super) type JobId = u64;

/// Hashes the server's own numbers (job ids, connection tokens) with one multiplication:
/// peers do not choose them, so SipHash's flooding protection buys nothing there.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A map keyed by the server's own numbers.
pub(super) type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobState {
    /// In its function's queue.
    Queued,
    /// Waiting for its Unix time (milliseconds).
    Scheduled(u64),
    /// On a worker; `assignment` tells this run from a later one (for timeouts).
    Running { worker: Token, assignment: u64, since: Instant },
}

/// Whether a job is in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// In memory only.
    No,
    /// Its insert waits for the turn's commit: not yet durable, so not yet handed out, and
    /// whoever is told about it waits for the commit too.
    Pending,
    /// Committed.
    Yes,
}

/// One job.
#[derive(Debug)]
pub(super) struct Job {
    pub id: JobId,
    pub function: Vec<u8>,
    /// As the client sent it (given to workers with `GRAB_JOB_UNIQ`).
    pub unique: Vec<u8>,
    pub workload: Vec<u8>,
    pub priority: Priority,
    pub background: bool,
    /// Whether the store holds it (background and scheduled jobs under `--store`).
    pub stored: Stored,
    /// Foreground clients waiting for it.
    pub clients: Vec<Token>,
    pub state: JobState,
    pub numerator: u64,
    pub denominator: u64,
    /// How many times a worker vanished (or timed out) while running it.
    pub retries: u32,
}

/// What a new job is made of, from a submission or a stored row.
#[derive(Debug)]
pub(super) struct Submission {
    pub priority: Priority,
    pub background: bool,
    pub function: Vec<u8>,
    pub unique: Vec<u8>,
    pub workload: Vec<u8>,
    /// Unix milliseconds it is due at (`SUBMIT_JOB_EPOCH`).
    pub when_ms: Option<u64>,
}

impl Job {
    /// A new job, not yet stored and with no client: scheduled when `when_ms` is after
    /// `now_ms`, else queued.
    pub fn new(id: JobId, submission: Submission, now_ms: u64) -> Job {
        let Submission { priority, background, function, unique, workload, when_ms } = submission;
        let state = match when_ms {
            Some(at) if at > now_ms => JobState::Scheduled(at),
            _ => JobState::Queued,
        };
        Job {
            id,
            function,
            unique,
            workload,
            priority,
            background,
            stored: Stored::No,
            clients: Vec::new(),
            state,
            numerator: 0,
            denominator: 0,
            retries: 0,
        }
    }

    /// A stored job as it is read back: background, stored.
    pub fn restored(row: Row, now_ms: u64) -> Job {
        let Row { id, function, unique, priority, workload, when_ms } = row;
        let submission = Submission { priority, background: true, function, unique, workload, when_ms };
        Job { stored: Stored::Yes, ..Job::new(id, submission, now_ms) }
    }

    /// Its row in the store.
    pub fn row(&self) -> Row {
        Row {
            id: self.id,
            function: self.function.clone(),
            unique: self.unique.clone(),
            priority: self.priority,
            workload: self.workload.clone(),
            when_ms: match self.state {
                JobState::Scheduled(at) => Some(at),
                _ => None,
            },
        }
    }
}

/// What jobs of one function coalesce on: a unique key, or (for the unique `-`) the workload.
/// Two kinds, so a literal key never meets a workload (`-1` is not `-` with workload `1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Coalesce {
    Unique(Vec<u8>),
    Workload(Vec<u8>),
}

/// The key jobs coalesce on, if they do: an empty unique never coalesces, nor a `-` with an
/// empty workload (as gearmand).
pub(super) fn coalesce_key(function: &[u8], unique: &[u8], workload: &[u8]) -> Option<(Vec<u8>, Coalesce)> {
    match unique {
        b"" => None,
        b"-" if workload.is_empty() => None,
        b"-" => Some((function.to_vec(), Coalesce::Workload(workload.to_vec()))),
        _ => Some((function.to_vec(), Coalesce::Unique(unique.to_vec()))),
    }
}

/// Every job.
pub(super) struct Jobs {
    jobs: IdMap<JobId, Job>,
    by_unique: HashMap<(Vec<u8>, Coalesce), JobId>,
    /// Jobs by unique key alone, whatever their function (`GET_STATUS_UNIQUE`).
    by_unique_only: HashMap<Vec<u8>, Vec<JobId>>,
    prefix: Vec<u8>,
    next_id: JobId,
}

impl Jobs {
    /// An empty table whose handles are `H:<host>:<id>`.
    pub fn new(host: &str) -> Jobs {
        // Handles must stay within gearmand's 64 bytes: 20 digits of id, the rest for the host.
        let host: String = host.chars().filter(|c| c.is_ascii_graphic() && *c != ':').take(32).collect();
        Jobs {
            jobs: IdMap::default(),
            by_unique: HashMap::new(),
            by_unique_only: HashMap::new(),
            prefix: format!("H:{host}:").into_bytes(),
            next_id: 1,
        }
    }

    /// A fresh id.
    pub fn next_id(&mut self) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The handle of job `id`.
    pub fn handle(&self, id: JobId) -> Vec<u8> {
        let mut handle = self.prefix.clone();
        handle.extend_from_slice(id.to_string().as_bytes());
        handle
    }

    /// The id a handle names, if it is one of ours.
    pub fn id_of(&self, handle: &[u8]) -> Option<JobId> {
        let digits = handle.strip_prefix(self.prefix.as_slice())?;
        std::str::from_utf8(digits).ok()?.parse().ok().filter(|id| self.jobs.contains_key(id))
    }

    /// The job coalescing with (function, unique, workload), if any.
    pub fn find_unique(&self, function: &[u8], unique: &[u8], workload: &[u8]) -> Option<JobId> {
        self.by_unique.get(&coalesce_key(function, unique, workload)?).copied()
    }

    /// A job by unique key alone (`GET_STATUS_UNIQUE` names no function).
    pub fn find_unique_any(&self, unique: &[u8]) -> Option<&Job> {
        self.by_unique_only.get(unique)?.first().and_then(|id| self.jobs.get(id))
    }

    /// Every job, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Job> {
        let mut jobs: Vec<&Job> = self.jobs.values().collect();
        jobs.sort_by_key(|job| job.id);
        jobs.into_iter()
    }

    /// Adds a job (its id from [`Jobs::next_id`], or restored from the store).
    pub fn insert(&mut self, job: Job) {
        self.next_id = self.next_id.max(job.id + 1);
        if let Some(key) = coalesce_key(&job.function, &job.unique, &job.workload) {
            self.by_unique.insert(key, job.id);
        }
        // A `-` job is keyed by its workload, not by `-`: GET_STATUS_UNIQUE `-` does not find it,
        // as in gearmand.
        if !job.unique.is_empty() && job.unique != b"-" {
            self.by_unique_only.entry(job.unique.clone()).or_default().push(job.id);
        }
        self.jobs.insert(job.id, job);
    }

    /// Removes a job.
    pub fn remove(&mut self, id: JobId) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        if let Some(key) = coalesce_key(&job.function, &job.unique, &job.workload) {
            if self.by_unique.get(&key) == Some(&id) {
                self.by_unique.remove(&key);
            }
        }
        if let Some(ids) = self.by_unique_only.get_mut(&job.unique) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_unique_only.remove(&job.unique);
            }
        }
        Some(job)
    }

    pub fn get(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn get_mut(&mut self, id: JobId) -> Option<&mut Job> {
        self.jobs.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(jobs: &mut Jobs, unique: &[u8], workload: &[u8]) -> JobId {
        let id = jobs.next_id();
        let submission = Submission {
            priority: Priority::Normal,
            background: true,
            function: b"f".to_vec(),
            unique: unique.to_vec(),
            workload: workload.to_vec(),
            when_ms: None,
        };
        jobs.insert(Job::new(id, submission, 0));
        id
    }

    #[test]
    fn handles_and_coalescing_keys() {
        let mut jobs = Jobs::new("a very long host name that goes on and on and on and on.example");
        let id = job(&mut jobs, b"u", b"x");
        let handle = jobs.handle(id);
        assert!(handle.len() <= 64);
        assert_eq!(jobs.id_of(&handle), Some(id));
        assert_eq!(jobs.id_of(b"H:other:1"), None);
        assert_eq!(jobs.find_unique(b"f", b"u", b"other"), Some(id));
        assert_eq!(jobs.find_unique(b"g", b"u", b"x"), None);
        let empty = job(&mut jobs, b"", b"x");
        assert_eq!(jobs.find_unique(b"f", b"", b"x"), None, "an empty unique never coalesces");
        let dash = job(&mut jobs, b"-", b"payload");
        assert_eq!(jobs.find_unique(b"f", b"-", b"payload"), Some(dash));
        assert_eq!(jobs.find_unique(b"f", b"-", b"other"), None);
        // `-` never meets a literal key, and never coalesces an empty workload.
        job(&mut jobs, b"-1", b"1");
        assert_eq!(jobs.find_unique(b"f", b"-", b"1"), None);
        job(&mut jobs, b"-", b"");
        assert_eq!(jobs.find_unique(b"f", b"-", b""), None);
        assert_eq!(jobs.find_unique_any(b"-1").map(|j| j.workload.clone()), Some(b"1".to_vec()));
        jobs.remove(id);
        assert_eq!(jobs.find_unique(b"f", b"u", b"x"), None);
        assert_eq!(jobs.id_of(&handle), None);
        assert!(jobs.get(empty).is_some());
    }
}
