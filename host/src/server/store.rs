//! The durable queue (`--store PATH`): background and scheduled jobs in SQLite.
//!
//! SQLite (through `rusqlite`, built from the bundled source) because gearmand itself offers it
//! as a queue store and it is made for exactly this: atomic, crash-safe commits. One table, one
//! row per job keyed by the job's id (so handles survive a restart). Writes are collected during
//! an event-loop turn and committed in one transaction at its end ([`Store::commit`]): a client
//! pipelining 10,000 submissions pays a few fsyncs, not 10,000 (gearmand commits each job on
//! its own). `JOB_CREATED` waits for that commit, so a job a client was told about is on disk.
//!
//! WAL journal. A transaction that inserts is committed with `synchronous=FULL` (fsync: it
//! survives SIGKILL and power loss); one that only deletes (jobs that ended) with
//! `synchronous=NORMAL`: committed to the WAL without an fsync, it survives the process being
//! killed, and only a power loss can undo it (the job then runs again: at least once). So
//! deletes are committed with the turn they happen in, a SIGKILL reruns only the jobs in
//! flight, and a server draining its queue pays no fsync per job. A job completed and deleted
//! in the same turn it was inserted costs nothing on disk.
//!
//! Every delete-only commit still appends a WAL frame, so the WAL is checkpointed every
//! 10,000 frames (SQLite's default is 1,000): a checkpoint fsyncs, and at a commit per turn the
//! default costs a checkpoint every few milliseconds under load (the WAL file may reach ~40 MiB).
//!
//! A failed commit writes nothing: its inserts are given back to the caller's judgement (the
//! server takes the jobs back and refuses their submissions), its deletes stay pending and are
//! retried after [`RETRY_DELAY`]. It must not: decide which jobs are durable (foreground jobs
//! die with their client anyway).

use super::jobs::JobId;
use crate::gearman::packet::Priority;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long deletes left by a failed commit wait before they are tried again (a full disk
/// must not turn the event loop into a busy loop).
pub(super) const RETRY_DELAY: Duration = Duration::from_secs(1);

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
    /// Pending inserts.
    inserts: usize,
    /// After a failed commit: deletes are not retried before this.
    retry_at: Option<Instant>,
    /// The `synchronous` setting in force: FULL (`true`) or NORMAL.
    sync_full: bool,
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
             PRAGMA wal_autocheckpoint = 10000;
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
        Ok(Store {
            db,
            path: path.to_path_buf(),
            pending: HashMap::new(),
            order: Vec::new(),
            inserts: 0,
            retry_at: None,
            sync_full: true,
        })
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
    }

    /// How long until a commit is due (zero: now), or `None` when nothing waits. Inserts are
    /// due at once (answers wait for them); deletes too, unless a failed commit left them to
    /// be retried later.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        if self.pending.is_empty() {
            return None;
        }
        match self.retry_at {
            Some(at) if self.inserts == 0 => Some(at.saturating_duration_since(now)),
            _ => Some(Duration::ZERO),
        }
    }

    /// Commits this turn's writes in one transaction: with `synchronous=FULL` when it inserts,
    /// `NORMAL` when it only deletes (see the module doc).
    ///
    /// # Errors
    /// [`StoreError`] when SQLite fails; nothing of this turn is then on disk: its inserts are
    /// dropped (the caller takes their jobs back), its deletes kept for a later commit.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let order = std::mem::take(&mut self.order);
        let mut pending = std::mem::take(&mut self.pending);
        let inserts = std::mem::take(&mut self.inserts);
        let result = self.write(&order, &mut pending, inserts > 0);
        match &result {
            Ok(()) => self.retry_at = None,
            Err(_) => {
                // Deletes are kept, to be tried again; the inserts are the caller's to take back.
                for id in order {
                    if let Some(Op::Delete(_)) = pending.remove(&id) {
                        self.order.push(id);
                        self.pending.insert(id, Op::Delete(id));
                    }
                }
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
            }
        }
        result
    }

    fn write(&mut self, order: &[JobId], pending: &mut HashMap<JobId, Op>, full: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let fail = |source| StoreError { path: path.clone(), source };
        if full != self.sync_full {
            // Outside a transaction, as SQLite requires; per connection, so per transaction here.
            self.db.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" }).map_err(fail)?;
            self.sync_full = full;
        }
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
                match pending.get(id) {
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
                        delete.execute(params![*id as i64]).map_err(fail)?;
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
        assert_eq!(store.due_in(Instant::now()), Some(Duration::ZERO), "a delete is committed with its turn");
        store.commit().unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), vec![row(1)]);
    }
}
