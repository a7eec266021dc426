//! The durable queue (`--store PATH`): background and scheduled jobs in SQLite.
//!
//! SQLite (through `rusqlite`, built from the bundled source) because gearmand itself offers it
//! as a queue store and it is made for exactly this: atomic, crash-safe commits. One table, one
//! row per job keyed by the job's id (so handles survive a restart). Writes are collected during
//! an event-loop turn and committed in one transaction at its end ([`Store::commit`]): a client
//! pipelining 10,000 submissions pays a few fsyncs, not 10,000 (gearmand commits each job on
//! its own). `JOB_CREATED` waits for that commit, so a job a client was told about is on disk.
//! WAL journal with `synchronous=FULL`: a commit survives SIGKILL and power loss.
//!
//! Deletes (a job ended) are not urgent: a delete lost in a crash means the job runs again
//! after the restart (at least once, never lost). So they wait for the next commit that inserts,
//! or [`DELETE_DELAY`], or [`DELETE_BATCH`] of them, whichever comes first: a server draining
//! its queue pays a few fsyncs a second, not one per job. A job completed and deleted in the
//! same turn it was inserted costs nothing on disk. It must not: decide which jobs are durable
//! (foreground jobs die with their client anyway).

use super::jobs::JobId;
use crate::gearman::packet::Priority;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest a delete waits for a commit.
pub(super) const DELETE_DELAY: Duration = Duration::from_millis(100);
/// Pending deletes that make a commit due at once.
pub(super) const DELETE_BATCH: usize = 1000;

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("job store {}: {source}", .path.display())]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// One stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub id: JobId,
    pub function: Vec<u8>,
    pub unique: Vec<u8>,
    pub priority: Priority,
    pub workload: Vec<u8>,
    /// Unix milliseconds a scheduled job is due at.
    pub when_ms: Option<u64>,
}

enum Op {
    Insert(Row),
    Delete(JobId),
}

/// The store and the writes of the current turn.
pub(super) struct Store {
    db: Connection,
    path: PathBuf,
    /// Pending writes, last one per job wins.
    pending: HashMap<JobId, Op>,
    /// Their order (a job's insert may precede its delete in the same turn).
    order: Vec<JobId>,
    /// Pending inserts (they make a commit due now).
    inserts: usize,
    /// When the oldest pending write was made.
    since: Option<Instant>,
}

fn priority_code(p: Priority) -> i64 {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

fn priority_of(code: i64) -> Priority {
    match code {
        0 => Priority::High,
        2 => Priority::Low,
        _ => Priority::Normal,
    }
}

impl Store {
    /// Opens (creating) the store at `path`.
    ///
    /// The store is held exclusively for the life of the server (SQLite's exclusive locking
    /// mode, taken at once): a second server on the same file would hand out the same jobs
    /// and number new ones alike, so it is refused ("database is locked").
    ///
    /// # Errors
    /// [`StoreError`] when SQLite cannot open or set up the file, or another server holds it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |source| StoreError { path: path.to_path_buf(), source };
        let db = Connection::open(path).map_err(fail)?;
        db.busy_timeout(std::time::Duration::from_millis(500)).map_err(fail)?;
        db.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             BEGIN EXCLUSIVE; COMMIT;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS jobs (
                 id INTEGER PRIMARY KEY,
                 function BLOB NOT NULL,
                 unique_key BLOB NOT NULL,
                 priority INTEGER NOT NULL,
                 workload BLOB NOT NULL,
                 when_ms INTEGER
             );",
        )
        .map_err(fail)?;
        Ok(Store { db, path: path.to_path_buf(), pending: HashMap::new(), order: Vec::new(), inserts: 0, since: None })
    }

    /// Every stored job, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the table cannot be read.
    pub fn load(&self) -> Result<Vec<Row>, StoreError> {
        let fail = |source| StoreError { path: self.path.clone(), source };
        let mut stmt = self
            .db
            .prepare("SELECT id, function, unique_key, priority, workload, when_ms FROM jobs ORDER BY id")
            .map_err(fail)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Row {
                    id: r.get::<_, i64>(0)? as u64,
                    function: r.get(1)?,
                    unique: r.get(2)?,
                    priority: priority_of(r.get(3)?),
                    workload: r.get(4)?,
                    when_ms: r.get::<_, Option<i64>>(5)?.map(|w| w as u64),
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<_, _>>().map_err(fail)
    }

    /// Stores a job at the next commit.
    pub fn insert(&mut self, row: Row) {
        let id = row.id;
        self.order.push(id);
        self.pending.insert(id, Op::Insert(row));
        self.inserts += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Deletes a job at the next commit (or never writes it, when its insert is pending too).
    pub fn delete(&mut self, id: JobId) {
        if matches!(self.pending.get(&id), Some(Op::Insert(_))) {
            self.pending.remove(&id);
            self.inserts -= 1;
            return;
        }
        self.order.push(id);
        self.pending.insert(id, Op::Delete(id));
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether inserts wait for a commit (answers are held for them).
    pub fn has_inserts(&self) -> bool {
        self.inserts > 0
    }

    /// How long until a commit is due (zero: now), or `None` when nothing waits.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        let since = self.since?;
        if self.inserts > 0 || self.pending.len() >= DELETE_BATCH {
            return Some(Duration::ZERO);
        }
        Some((since + DELETE_DELAY).saturating_duration_since(now))
    }

    /// Commits this turn's writes in one transaction.
    ///
    /// # Errors
    /// [`StoreError`] when SQLite fails; nothing of this turn is then on disk.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let fail = |source| StoreError { path: path.clone(), source };
        let order = std::mem::take(&mut self.order);
        let mut pending = std::mem::take(&mut self.pending);
        self.inserts = 0;
        self.since = None;
        let tx = self.db.transaction().map_err(fail)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO jobs (id, function, unique_key, priority, workload, when_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(fail)?;
            let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE id = ?1").map_err(fail)?;
            for id in order {
                match pending.remove(&id) {
                    Some(Op::Insert(row)) => {
                        insert
                            .execute(params![
                                row.id as i64,
                                row.function,
                                row.unique,
                                priority_code(row.priority),
                                row.workload,
                                row.when_ms.map(|w| w as i64)
                            ])
                            .map_err(fail)?;
                    }
                    Some(Op::Delete(id)) => {
                        delete.execute(params![id as i64]).map_err(fail)?;
                    }
                    None => {}
                }
            }
        }
        tx.commit().map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: JobId) -> Row {
        Row {
            id,
            function: b"f".to_vec(),
            unique: b"u\0x".to_vec(),
            priority: Priority::Low,
            workload: vec![0, 1, 2],
            when_ms: Some(5),
        }
    }

    #[test]
    fn rows_survive_reopening_and_deletes_cancel_pending_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let mut store = Store::open(&path).unwrap();
        store.insert(row(1));
        store.insert(row(2));
        store.delete(2);
        store.commit().unwrap();
        assert_eq!(store.due_in(Instant::now()), None, "nothing pending");
        store.insert(row(3));
        assert_eq!(store.due_in(Instant::now()), Some(Duration::ZERO), "an insert is due now");
        store.commit().unwrap();
        store.delete(3);
        assert!(store.due_in(Instant::now()).unwrap() > Duration::ZERO, "a delete may wait");
        assert!(!store.has_inserts());
        store.commit().unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), vec![row(1)]);
    }
}
