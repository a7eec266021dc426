//! The daemon's PID file: created without following symlinks, locked for the daemon's life,
//! removed when it ends.
//!
//! The lock (`flock`) is what says "a daemon is alive": a second daemon cannot take it, and a
//! file left by a daemon that died is not locked, so it is taken over. The PID inside is for
//! `shutdown`, `restart` and people. Forked children close their copy of the locked
//! descriptor ([`crate::process::keep_from_children`]): `flock` belongs to the open file, so
//! any process holding a copy would hold the lock.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why the PID file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// A live daemon holds it.
    #[error("a daemon is already running with PID {pid} (PID file {})", .path.display())]
    Running {
        /// The file.
        path: PathBuf,
        /// The live daemon's PID.
        pid: i32,
    },
    /// No daemon holds it (or it does not exist).
    #[error("no daemon is running (PID file {}: {reason})", .path.display())]
    NotRunning {
        /// The file.
        path: PathBuf,
        /// Why we think so.
        reason: String,
    },
    /// It cannot be opened, for example because it is a symlink.
    #[error("PID file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// A PID file this process holds; removed when dropped.
pub struct PidFile {
    path: PathBuf,
    /// Held open for the daemon's life: the lock lives as long as this descriptor.
    _lock: Flock<File>,
}

fn open(path: &Path, create: bool) -> Result<File, PidFileError> {
    OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| PidFileError::Io { path: path.into(), source })
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl PidFile {
    /// Creates or takes over `path` for this process and writes its PID.
    ///
    /// # Errors
    /// [`PidFileError::Running`] when a live daemon holds it; [`PidFileError::Io`] when it
    /// cannot be opened (a symlink is refused).
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let mut file = match Flock::lock(open(path, true)?, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, _)) => {
                let pid = read_pid(&mut file).unwrap_or(0);
                return Err(PidFileError::Running { path: path.into(), pid });
            }
        };
        let io = |source| PidFileError::Io { path: path.into(), source };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        // The lock belongs to the daemon alone: a worker or job child that outlived it must
        // not keep a new daemon from starting.
        crate::process::keep_from_children(&*file);
        Ok(PidFile { path: path.into(), _lock: file })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The PID of the live daemon holding `path`.
///
/// # Errors
/// [`PidFileError::NotRunning`] when the file is missing or not locked (a stale file).
pub fn running_pid(path: &Path) -> Result<i32, PidFileError> {
    let not_running = |reason: &str| PidFileError::NotRunning { path: path.into(), reason: reason.into() };
    let file = match open(path, false) {
        Ok(file) => file,
        Err(PidFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(not_running("it does not exist"))
        }
        Err(err) => return Err(err),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => Err(not_running("no process holds it; it is stale")),
        Err((mut file, _)) => read_pid(&mut file).ok_or_else(|| not_running("it holds no PID")),
    }
}
