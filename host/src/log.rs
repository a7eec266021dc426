//! The log lines of the daemon and its workers, in li3_gearman's style:
//! `li3g-host[6333]: (Daemon) Created worker number 2 with PID 6334`.
//!
//! With `--verbose` they go to stderr; otherwise to syslog (facility daemon, ident
//! `li3g-host`, with the PID). Written by hand over libc's `syslog(3)`: the lines are plain
//! text and the process forks, so a logging framework's global state and background threads
//! are what we must not have.

use std::ffi::CString;
use std::sync::Once;

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The supervisor.
    Daemon,
    /// A worker.
    Worker,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    /// stderr (true) or syslog (false).
    pub verbose: bool,
}

impl Log {
    /// Writes one line.
    pub fn line(&self, role: Role, message: &str) {
        let role = match role {
            Role::Daemon => "Daemon",
            Role::Worker => "Worker",
        };
        if self.verbose {
            eprintln!("li3g-host[{}]: ({role}) {message}", std::process::id());
            return;
        }
        static OPEN: Once = Once::new();
        // SAFETY: the ident is a static NUL-terminated string, as openlog requires.
        OPEN.call_once(|| unsafe { libc::openlog(c"li3g-host".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) });
        let Ok(text) = CString::new(format!("({role}) {message}").replace('\0', " ")) else { return };
        // SAFETY: a constant "%s" format with one NUL-terminated string argument.
        unsafe { libc::syslog(libc::LOG_INFO, c"%s".as_ptr(), text.as_ptr()) };
    }

    /// A worker line.
    pub fn worker(&self, message: &str) {
        self.line(Role::Worker, message);
    }

    /// A daemon line.
    pub fn daemon(&self, message: &str) {
        self.line(Role::Daemon, message);
    }
}
