//! The sandbox a task's jobs run in: Linux Landlock rules and `no_new_privs`.
//!
//! A task's sandbox ([`SandboxRules`], `[NAME.sandbox]` in the configuration, overridden key by
//! key in `[NAME.tasks."Class::method".sandbox]`) lists the paths it may read, the paths it may
//! write (and read), and the TCP ports it may connect to; everything else Landlock handles is
//! refused: other files, binding TCP ports, connecting to other ports.
//!
//! - Built once, in the worker, before any fork ([`prepare`]): the ruleset exists as one
//!   Landlock descriptor per distinct sandbox, its paths opened and checked at start.
//! - Applied cheaply ([`Prepared::restrict`]): two system calls (`prctl(PR_SET_NO_NEW_PRIVS)`
//!   and `landlock_restrict_self`), in the `--atomic` job child after the fork and before the
//!   task; without `--atomic`, once to the whole worker after its plugins and states are built
//!   (the job servers' and Redis's ports are then allowed too, or the worker could not
//!   reconnect), and per-task overrides cannot apply.
//! - A kernel without the Landlock ABI the rules need ([`NEEDED_ABI`]: filesystem and TCP
//!   rules) refuses a configured sandbox ([`SandboxError::Unsupported`]), unless it says
//!   `best_effort = true`: then the worker warns once and applies what the kernel has.
//!   [`ABI_ENV`] makes the worker believe its kernel has a lower ABI (for tests).

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// What a task may do; everything else Landlock handles is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxRules {
    /// Paths (files or directories, with what is beneath) it may read and execute.
    pub read: Vec<PathBuf>,
    /// Paths it may read, write, create and remove files in.
    pub write: Vec<PathBuf>,
    /// TCP ports it may connect to.
    pub connect: Vec<u16>,
    /// Run with what the kernel has (and warn once) when it lacks part of Landlock.
    pub best_effort: bool,
}

impl std::fmt::Display for SandboxRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths = |list: &[PathBuf]| {
            if list.is_empty() {
                "nothing".to_string()
            } else {
                list.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            }
        };
        let ports = if self.connect.is_empty() {
            "no port".to_string()
        } else {
            self.connect.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        };
        write!(f, "read {}; write {}; connect {ports}", paths(&self.read), paths(&self.write))?;
        if self.best_effort {
            write!(f, " (best effort)")?;
        }
        Ok(())
    }
}

/// The sandboxes of one worker, from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxConfig {
    /// `[NAME.sandbox]`: every task's, unless it has its own.
    pub default: Option<SandboxRules>,
    /// Tasks with a sandbox of their own (the default's keys merged under theirs).
    pub tasks: BTreeMap<String, SandboxRules>,
    /// Ports the worker itself connects to (job servers, Redis): allowed when the sandbox
    /// applies to the whole worker (without `--atomic`).
    pub worker_ports: Vec<u16>,
}

impl SandboxConfig {
    /// The rules for `task` (canonical name), if it has any.
    pub fn for_task(&self, task: &str) -> Option<&SandboxRules> {
        self.tasks.get(task).or(self.default.as_ref())
    }
}

/// The Landlock ABI a sandbox needs: filesystem rules (1) and TCP rules (4).
pub const NEEDED_ABI: i32 = 4;

/// Set to a number in a worker's environment, the worker believes its kernel has that
/// Landlock ABI (when it is lower than the real one): how tests show what a kernel without
/// TCP rules, or without Landlock, does.
pub const ABI_ENV: &str = "LI3G_TEST_LANDLOCK_ABI";

/// Why a sandbox cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel lacks what the rules need and `best_effort` is not set.
    #[error(
        "this kernel's Landlock ABI is {found} (0: no Landlock), the sandbox needs {NEEDED_ABI} (filesystem and TCP rules); refusing to run without it (set best_effort = true in the sandbox to run with what the kernel has)"
    )]
    Unsupported {
        /// The kernel's ABI.
        found: i32,
    },
    /// A path in the rules cannot be opened.
    #[error("sandbox path {}: {message}", .path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Landlock refused the ruleset.
    #[error("cannot build the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// The Landlock ABI of this kernel (0 without Landlock), or the lower one [`ABI_ENV`] says.
pub fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version (or -1); it creates nothing.
    let found =
        unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<libc::c_void>(), 0usize, 1u32) };
    let found = i32::try_from(found).unwrap_or(0).max(0);
    match std::env::var(ABI_ENV).ok().and_then(|v| v.trim().parse::<i32>().ok()) {
        Some(pretend) => pretend.clamp(0, found),
        None => found,
    }
}

/// A sandbox built before any fork: its rules and its Landlock ruleset's descriptor.
#[derive(Debug)]
pub struct Prepared {
    /// What it allows.
    pub rules: SandboxRules,
    /// The ruleset; `None` when the kernel has no Landlock (best effort).
    ruleset: Option<OwnedFd>,
    /// The ABI it was built for.
    pub abi: i32,
}

impl Prepared {
    /// Restricts the calling process (and what it starts) to the rules: `no_new_privs`, then
    /// the ruleset. Two system calls; the process must be single-threaded.
    ///
    /// # Errors
    /// When either call fails: the caller must not run the task then.
    pub fn restrict(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs()?;
        if let Some(fd) = &self.ruleset {
            // SAFETY: landlock_restrict_self takes a ruleset descriptor we own and flags.
            let done = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0u32) };
            if done != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Whether the kernel lacked part of what the rules need (built best effort).
    pub fn partial(&self) -> bool {
        self.abi < NEEDED_ABI
    }
}

/// Builds the ruleset for `rules` (plus `extra_ports` to connect to) on this kernel.
///
/// # Errors
/// [`SandboxError`] when the kernel lacks what the rules need (without `best_effort`), a path
/// cannot be opened, or Landlock refuses the rules.
pub fn prepare(rules: &SandboxRules, extra_ports: &[u16]) -> Result<Prepared, SandboxError> {
    let found = kernel_abi();
    if found < NEEDED_ABI && !rules.best_effort {
        return Err(SandboxError::Unsupported { found });
    }
    let abi = ABI::from(found);
    let ruleset = if abi == ABI::Unsupported {
        None
    } else {
        // Built for exactly the ABI found, so every right asked for is there: a hard requirement.
        let fs = AccessFs::from_all(abi);
        let net = AccessNet::from_all(abi);
        let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement).handle_access(fs)?;
        if !net.is_empty() {
            ruleset = ruleset.handle_access(net)?;
        }
        // From ABI 6: no signal to a process outside the sandbox (the worker, its supervisor,
        // the job server, anything else of the same user) and no connection to an abstract
        // Unix socket created outside it.
        let scope = Scope::from_all(abi);
        if !scope.is_empty() {
            ruleset = ruleset.scope(scope)?;
        }
        let mut created = ruleset.create()?;
        let paths = rules.read.iter().map(|p| (p, AccessFs::from_read(abi))).chain(rules.write.iter().map(|p| (p, fs)));
        for (path, access) in paths {
            let fd =
                PathFd::new(path).map_err(|err| SandboxError::Path { path: path.clone(), message: err.to_string() })?;
            let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
            let access = if is_dir { access } else { access & AccessFs::from_file(abi) };
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
        if !net.is_empty() {
            for port in rules.connect.iter().chain(extra_ports) {
                created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
            }
        }
        Option::<OwnedFd>::from(created)
    };
    Ok(Prepared { rules: rules.clone(), ruleset, abi: found })
}

/// The sandboxes this worker's job children run in, built once at start.
#[derive(Debug, Default)]
pub struct Prepareds {
    default: Option<Arc<Prepared>>,
    tasks: BTreeMap<String, Arc<Prepared>>,
}

static PREPARED: OnceLock<Prepareds> = OnceLock::new();

/// Builds every task's sandbox for `--atomic` job children, and keeps them for
/// [`for_task`]. Tasks with the same rules share one ruleset.
///
/// # Errors
/// The first [`SandboxError`].
pub fn prepare_for_jobs(config: &SandboxConfig) -> Result<(), SandboxError> {
    let mut built: Vec<Arc<Prepared>> = Vec::new();
    let mut get = |rules: &SandboxRules| -> Result<Arc<Prepared>, SandboxError> {
        if let Some(same) = built.iter().find(|p| p.rules == *rules) {
            return Ok(same.clone());
        }
        let prepared = Arc::new(prepare(rules, &[])?);
        built.push(prepared.clone());
        Ok(prepared)
    };
    let mut prepareds = Prepareds::default();
    if let Some(rules) = &config.default {
        prepareds.default = Some(get(rules)?);
    }
    for (task, rules) in &config.tasks {
        prepareds.tasks.insert(task.clone(), get(rules)?);
    }
    if built.iter().any(|p| p.partial()) {
        log::warn!(
            "Sandbox: this kernel's Landlock ABI is {} (the sandbox needs {NEEDED_ABI}); running best effort, with only what the kernel can enforce",
            kernel_abi()
        );
    }
    let _ = PREPARED.set(prepareds);
    Ok(())
}

/// The sandbox a job of `task` runs in, once [`prepare_for_jobs`] built them.
pub fn for_task(task: &str) -> Option<&'static Prepared> {
    let prepareds = PREPARED.get()?;
    prepareds.tasks.get(task).or(prepareds.default.as_ref()).map(Arc::as_ref)
}

/// Restricts the whole worker to the default sandbox (without `--atomic`), with the ports
/// the worker connects to allowed.
///
/// # Errors
/// What [`prepare`] reports, or the restriction failing.
pub fn restrict_worker(config: &SandboxConfig) -> Result<Option<Prepared>, String> {
    let Some(rules) = &config.default else { return Ok(None) };
    let prepared = prepare(rules, &config.worker_ports).map_err(|err| err.to_string())?;
    // Landlock restricts the thread that asks (and what it starts later), not the threads that
    // exist already: a thread a plugin's state started (a pool, a runtime) would run its work
    // unsandboxed.
    match crate::process::thread_count() {
        Ok(1) => {}
        Ok(n) => {
            return Err(format!(
                "cannot apply the sandbox to the worker: it has {n} threads (a plugin's state started them?) and Landlock restricts only the thread that asks, so the others would run unsandboxed; run the worker with --atomic (each job in a sandboxed child) or without the threaded plugin"
            ))
        }
        Err(err) => return Err(format!("cannot apply the sandbox to the worker: {err}")),
    }
    if prepared.partial() {
        log::warn!(
            "Sandbox: this kernel's Landlock ABI is {} (the sandbox needs {NEEDED_ABI}); running best effort, with only what the kernel can enforce",
            prepared.abi
        );
    }
    prepared.restrict().map_err(|err| format!("cannot apply the sandbox to the worker: {err}"))?;
    Ok(Some(prepared))
}

/// Whether a task's failure message reads as the kernel refusing it (`EACCES`, `EPERM`).
pub fn looks_refused(message: &str) -> bool {
    ["Permission denied", "os error 13)", "Operation not permitted", "os error 1)"].iter().any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

    /// Landlock restricts the thread that calls `landlock_restrict_self` (and what it starts),
    /// so a thread of the test process stands for the job child here.
    #[test]
    fn a_sandboxed_job_cannot_signal_outside_it_nor_reach_an_abstract_socket() {
        if kernel_abi() < 6 {
            eprintln!("skipped: this kernel's Landlock ABI is {} (scopes need 6)", kernel_abi());
            return;
        }
        let name = format!("li3g-sandbox-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _listener = UnixListener::bind_addr(&addr).unwrap();
        // Outside the sandbox: the worker, its supervisor, any process of the same user.
        let outside = nix::unistd::getppid();
        assert_eq!(nix::sys::signal::kill(outside, None), Ok(()), "unrestricted, the signal is allowed");
        assert!(UnixStream::connect_addr(&addr).is_ok(), "unrestricted, the socket is reachable");
        let prepared = prepare(&SandboxRules::default(), &[]).unwrap();
        let (signal, connect) = std::thread::spawn(move || {
            prepared.restrict().unwrap();
            (nix::sys::signal::kill(outside, None), UnixStream::connect_addr(&addr).map_err(|e| e.raw_os_error()))
        })
        .join()
        .unwrap();
        assert_eq!(signal, Err(nix::errno::Errno::EPERM), "a sandboxed job may not signal its worker");
        assert_eq!(connect.err(), Some(Some(libc::EPERM)), "nor connect to an abstract socket made outside");
    }

    #[test]
    fn the_whole_worker_is_not_sandboxed_while_other_threads_run() {
        // A thread a plugin's state left running (a pool): Landlock would not restrict it.
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || parked.recv());
        let config = SandboxConfig { default: Some(SandboxRules::default()), ..SandboxConfig::default() };
        // In a thread of its own: were it restricted, no other test would be.
        let refused = std::thread::spawn(move || restrict_worker(&config).map(|_| ())).join().unwrap();
        stop.send(()).unwrap();
        other.join().unwrap().unwrap();
        let err = refused.expect_err("a multi-threaded worker is refused");
        assert!(err.contains("threads") && err.contains("would run unsandboxed"), "{err}");
    }
}
