//! The li3g processes a test runs: a worker (`li3g-host work`) or a daemon (`li3g-host start`)
//! built up from what the test needs ([`Worker::builder`], [`Daemon::builder`]), and signals
//! sent to them ([`signal`]).

use crate::{host, wait_for_workers, ChildGuard, Gearmand};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

pub use nix::sys::signal::Signal;

/// `li3g-host work`, one worker in the foreground.
pub struct Worker;

/// `li3g-host start`, the supervisor and its workers in the foreground.
pub struct Daemon;

impl Worker {
    /// A worker taking jobs from `servers` (`host:port` each).
    pub fn builder<S: AsRef<str>>(servers: &[S]) -> HostBuilder<'static> {
        HostBuilder::new("work").servers(servers)
    }

    /// A worker taking jobs from the server on 127.0.0.1:`port`.
    pub fn on(port: u16) -> HostBuilder<'static> {
        Worker::builder(&[format!("127.0.0.1:{port}")])
    }

    /// A worker of the plugins in `plugins` on `gearmand` alone, started and waited for until
    /// it registered `function` there.
    pub fn serving(gearmand: &Gearmand, plugins: &crate::PluginDir, function: &str) -> ChildGuard {
        Worker::builder(&[gearmand.addr()]).plugins(plugins.path()).registered(&[gearmand], function, 1).spawn()
    }
}

impl Daemon {
    /// A daemon whose workers take jobs from `servers` (`host:port` each).
    pub fn builder<S: AsRef<str>>(servers: &[S]) -> HostBuilder<'static> {
        HostBuilder::new("start").servers(servers)
    }

    /// A daemon whose workers take jobs from the server on 127.0.0.1:`port`.
    pub fn on(port: u16) -> HostBuilder<'static> {
        Daemon::builder(&[format!("127.0.0.1:{port}")])
    }
}

/// A `li3g-host` command under test, with none of the caller's `LI3G_*` settings, its output
/// discarded; [`HostBuilder::spawn`] starts it under a [`ChildGuard`].
pub struct HostBuilder<'a> {
    command: Command,
    registered: Option<(Vec<&'a Gearmand>, String, u64)>,
}

impl<'a> HostBuilder<'a> {
    /// `li3g-host SUBCOMMAND`.
    pub fn new(subcommand: &str) -> HostBuilder<'static> {
        let mut command = host();
        command.arg(subcommand).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        HostBuilder { command, registered: None }
    }

    /// `--servers a,b` (nothing when `servers` is empty, e.g. with `--config`).
    pub fn servers<S: AsRef<str>>(mut self, servers: &[S]) -> Self {
        if !servers.is_empty() {
            let list: Vec<&str> = servers.iter().map(AsRef::as_ref).collect();
            self.command.args(["--servers", &list.join(",")]);
        }
        self
    }

    /// `--plugins DIR`.
    pub fn plugins(mut self, dir: &Path) -> Self {
        self.command.arg("--plugins").arg(dir);
        self
    }

    /// `--config FILE`.
    pub fn config(mut self, file: &Path) -> Self {
        self.command.arg("--config").arg(file);
        self
    }

    /// One more argument, after those given so far.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// More arguments, after those given so far.
    pub fn args<I: IntoIterator<Item = A>, A: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.command.args(args);
        self
    }

    /// An environment variable for it.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Makes [`HostBuilder::spawn`] return only once every server in `servers` lists
    /// `function` with `workers` workers (see [`wait_for_workers`]).
    pub fn registered<'b>(self, servers: &[&'b Gearmand], function: &str, workers: u64) -> HostBuilder<'b> {
        HostBuilder { command: self.command, registered: Some((servers.to_vec(), function.into(), workers)) }
    }

    /// Starts it; with [`HostBuilder::registered`], waits until its workers are there.
    pub fn spawn(mut self) -> ChildGuard {
        let child = ChildGuard::spawn(&mut self.command);
        if let Some((servers, function, workers)) = &self.registered {
            wait_for_workers(servers, function, *workers);
        }
        child
    }
}

/// Sends `signal` to `pid`.
///
/// # Panics
/// When kill(2) fails (no such process, or not ours).
pub fn signal(pid: u32, signal: Signal) {
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a PID fits in an i32"));
    nix::sys::signal::kill(target, signal).unwrap_or_else(|err| panic!("kill({pid}, {signal}): {err}"));
}
