//! The log lines of the daemon and its workers, in li3_gearman's style:
//! `li3g-host[6333]: (Daemon) Created worker number 2 with PID 6334`.
//!
//! Every line goes through the [`log`] facade, so a library's or a plugin's lines join ours.
//! [`init`] installs one `env_logger` logger per process, which filters by `RUST_LOG`-style
//! levels (`LI3G_LOG`, else `RUST_LOG`, else `info`) and formats the line:
//! - with `--verbose`, to stderr;
//! - otherwise to syslog (facility daemon), through [`Syslog`]: a datagram socket to
//!   `/dev/log` connected once and kept. Hand-written rather than over `syslog(3)` or the
//!   `syslog` crate: glibc's `syslog(3)` reads the time-zone file and, with no `/dev/log`,
//!   opens and closes a socket for every line; the crate formats a local time stamp per line.
//!   We send no time stamp (the syslog daemon stamps what it receives, RFC 3164 4.3.2).
//!
//! Targets name the speaker: anything under `li3g_host::daemon` (and [`DAEMON`]) is
//! `(Daemon)`, the rest of li3g `(Worker)`, any other crate its own target.
//!
//! Each line is one `write(2)` (one datagram for syslog), so lines from several processes
//! sharing a pipe never interleave. Neither sink starts a thread: forking stays safe. The PID
//! is read once per process and forgotten in a forked child (`pthread_atfork`).
//!
//! Must not: do per-line work a process can do once (PID, time zone, connecting).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The target of the supervisor's lines.
pub const DAEMON: &str = "li3g_host::daemon";
/// The target of the scheduler's lines.
pub const SCHEDULER: &str = "li3g_host::scheduler";
/// The target of a worker's lines.
pub const WORKER: &str = "li3g_host::worker";

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The supervisor.
    Daemon,
    /// A worker.
    Worker,
}

/// Where log lines go: a handle kept for the callers that write plain lines by role.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    /// stderr (true) or syslog (false).
    pub verbose: bool,
}

impl Log {
    /// Writes one line at info level (installs the logger on first use).
    pub fn line(&self, role: Role, message: &str) {
        init(self.verbose);
        let target = match role {
            Role::Daemon => DAEMON,
            Role::Worker => WORKER,
        };
        log::info!(target: target, "{message}");
    }

    /// A worker line.
    pub fn worker(&self, message: &str) {
        self.line(Role::Worker, message);
    }

    /// A daemon line.
    pub fn daemon(&self, message: &str) {
        self.line(Role::Daemon, message);
    }

    /// A daemon line the person who started it must see too: on stderr (`prefix` before it,
    /// such as `warning: `) and in the log; once, with its prefix, when the log is stderr
    /// itself (`--verbose`, or no syslog daemon to take it).
    pub fn announce(&self, prefix: &str, message: &str) {
        let log_is_stderr = FILE.get().is_none() && (self.verbose || !syslog_available());
        if !log_is_stderr {
            eprintln!("li3g-host: {prefix}{message}");
            self.daemon(message);
        } else {
            self.daemon(&format!("{prefix}{message}"));
        }
    }
}

static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's PID, read once (and again in a forked child).
pub fn pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// The level spec: `LI3G_LOG`, else `RUST_LOG`, else `info`.
fn spec() -> String {
    std::env::var("LI3G_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".into())
}

/// The part in parentheses.
fn role(target: &str) -> &str {
    if target.starts_with(DAEMON) {
        "Daemon"
    } else if target.starts_with(SCHEDULER) {
        "Scheduler"
    } else if target.starts_with("li3g_host") {
        "Worker"
    } else {
        target
    }
}

/// syslog's severity for a level.
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The log file (`--log-file`, `log_file`), when one is set: it wins over stderr and syslog.
static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Set by SIGUSR1 (see [`crate::signals`]): the next line reopens the log file (logrotate
/// renamed it).
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Sends every later line of this process (and of the processes it forks) to `path`, appended;
/// call before the first line. Fails when the file cannot be opened.
///
/// # Errors
/// The open's error.
pub fn set_file(path: &std::path::Path) -> io::Result<()> {
    LogFile::open(path)?;
    let _ = FILE.set(path.to_path_buf());
    Ok(())
}

/// Asks for the log file to be reopened before the next line: async-signal-safe (one store).
pub fn request_reopen() {
    REOPEN.store(true, Ordering::SeqCst);
}

/// An appended log file: each line one `write(2)` (`O_APPEND`, so the processes sharing it
/// never interleave), reopened by path after SIGUSR1.
struct LogFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl LogFile {
    fn open(path: &std::path::Path) -> io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path)
    }
}

impl LogFile {
    /// Whether the path no longer names the open file (renamed or removed by logrotate).
    fn moved(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(open) = self.file.as_ref().and_then(|f| f.metadata().ok()) else { return true };
        std::fs::metadata(&self.path).map_or(true, |now| (now.dev(), now.ino()) != (open.dev(), open.ino()))
    }
}

impl Write for LogFile {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // SIGUSR1 asks for a reopen; a process that got no signal (a worker: the supervisor
        // passes none on, it would interrupt a job's calls) sees the rename itself.
        if REOPEN.swap(false, Ordering::SeqCst) || self.moved() {
            // When the new file cannot be made (its directory gone or unwritable), the lines
            // keep going to the old one, and the next line tries again.
            if let Ok(file) = LogFile::open(&self.path) {
                self.file = Some(file);
            }
        }
        match &mut self.file {
            Some(file) => file.write_all(line)?,
            None => io::stderr().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a syslog daemon listens on `/dev/log`.
pub fn syslog_available() -> bool {
    UnixDatagram::unbound().and_then(|s| s.connect("/dev/log")).is_ok()
}

/// Installs the process's logger: the log file when one is set ([`set_file`]), else stderr
/// with `verbose`, syslog otherwise. Only the first call in a process counts.
pub fn init(verbose: bool) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic; no other preconditions.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid)) };
        let mut builder = env_logger::Builder::new();
        builder.parse_filters(&spec()).write_style(env_logger::WriteStyle::Never);
        if let Some(path) = FILE.get() {
            let file = LogFile { path: path.clone(), file: None };
            builder.target(env_logger::Target::Pipe(Box::new(file))).format(|buf, record| {
                writeln!(buf, "li3g-host[{}]: ({}) {}", pid(), role(record.target()), record.args())
            });
        } else if verbose {
            builder.target(env_logger::Target::Stderr).format(|buf, record| {
                writeln!(buf, "li3g-host[{}]: ({}) {}", pid(), role(record.target()), record.args())
            });
        } else {
            builder.target(env_logger::Target::Pipe(Box::new(Syslog::default()))).format(|buf, record| {
                // <facility daemon (3) * 8 + severity>
                let priority = 24 + severity(record.level());
                writeln!(buf, "<{priority}>li3g-host[{}]: ({}) {}", pid(), role(record.target()), record.args())
            });
        }
        let logger = builder.build();
        log::set_max_level(logger.filter());
        let _ = log::set_boxed_logger(Box::new(logger));
    });
}

/// A syslog sink: one datagram per line to `/dev/log`, over a socket connected once. When no
/// syslog daemon listens, lines go to stderr instead (one write each) and a reconnect is tried
/// at most every few seconds, not per line.
#[derive(Default)]
pub struct Syslog {
    socket: Option<UnixDatagram>,
    retry_at: Option<Instant>,
}

const SYSLOG_RETRY: Duration = Duration::from_secs(5);

impl Syslog {
    fn connect(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let socket = UnixDatagram::unbound().and_then(|s| s.connect("/dev/log").map(|()| s));
        match socket {
            Ok(socket) => {
                self.socket = Some(socket);
                self.retry_at = None;
            }
            Err(_) => self.retry_at = Some(Instant::now() + SYSLOG_RETRY),
        }
    }
}

impl Write for Syslog {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.socket.is_none() {
            self.connect();
        }
        let datagram = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(socket) = &self.socket {
            if socket.send(datagram).is_ok() {
                return Ok(line.len());
            }
            // The syslog daemon restarted: reconnect once, now.
            self.socket = None;
            self.retry_at = None;
            self.connect();
            if let Some(socket) = &self.socket {
                if socket.send(datagram).is_ok() {
                    return Ok(line.len());
                }
            }
        }
        // No syslog: stderr, without the priority prefix.
        let text = match line.iter().position(|&b| b == b'>') {
            Some(end) if line.first() == Some(&b'<') => &line[end + 1..],
            _ => line,
        };
        let _ = io::stderr().write_all(text);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn roles_from_targets() {
        assert_eq!(super::role("li3g_host::daemon::pool"), "Daemon");
        assert_eq!(super::role("li3g_host::worker"), "Worker");
        assert_eq!(super::role("li3g_host::worker::job_child"), "Worker");
        assert_eq!(super::role("hello"), "hello");
        assert_eq!(super::role(super::SCHEDULER), "Scheduler");
    }

    #[test]
    fn the_pid_is_cached() {
        assert_eq!(super::pid(), std::process::id());
        assert_eq!(super::pid(), std::process::id());
    }
}
