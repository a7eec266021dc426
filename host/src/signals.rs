//! Signals as flags and a wake-up pipe (the self-pipe trick).
//!
//! Handlers only store to atomics and write one byte to a non-blocking pipe, which is all a
//! signal handler may safely do. A loop that waits in `poll(2)` includes [`wake_fd`] and so
//! wakes up for a signal even when it arrives just before the wait.
//!
//! Every process has its own pipe: a forked child calls [`reset_for_child`] or
//! [`reset_for_job`] (from [`crate::process::fork`]'s setup, while signals are blocked), which
//! closes the copy of its parent's pipe and makes a new one. A shared pipe would let a worker
//! eat the byte meant to wake its supervisor.
//!
//! Must not: do anything in a handler but store flags and write the byte.

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::os::fd::{BorrowedFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static STOP_COUNT: AtomicI32 = AtomicI32::new(0);
static RELOAD: AtomicBool = AtomicBool::new(false);
static RECYCLE: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicBool = AtomicBool::new(false);
static REOPEN_LOG: AtomicBool = AtomicBool::new(false);
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    match signal {
        libc::SIGTERM | libc::SIGINT => {
            STOP.store(true, Ordering::SeqCst);
            STOP_COUNT.fetch_add(1, Ordering::SeqCst);
        }
        libc::SIGHUP => RELOAD.store(true, Ordering::SeqCst),
        // A recycle (a worker past its maximum age): stop after the job in hand, as a first
        // SIGTERM does, but not counted as a stop signal, so a SIGTERM after it is still a
        // first one (it does not kill the job).
        libc::SIGUSR2 => {
            RECYCLE.store(true, Ordering::SeqCst);
            STOP.store(true, Ordering::SeqCst);
        }
        libc::SIGCHLD => CHILD.store(true, Ordering::SeqCst),
        libc::SIGUSR1 => {
            crate::log::request_reopen();
            REOPEN_LOG.store(true, Ordering::SeqCst);
        }
        _ => {}
    }
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking, so a full pipe
        // (already enough to wake the loop) drops the byte instead of blocking.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

fn install(signals: &[Signal]) {
    set_handler(signals, SigHandler::Handler(on_signal));
}

fn set_handler(signals: &[Signal], handler: SigHandler) {
    // No SA_RESTART, so a blocking poll returns EINTR at once.
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    for &signal in signals {
        // SAFETY: the handler only stores to atomics and writes to a pipe (async-signal-safe);
        // default and ignore install no code.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

fn ensure_pipe() {
    if WAKE_READ.load(Ordering::SeqCst) >= 0 {
        return;
    }
    new_pipe();
}

/// Closes this process's copy of the wake pipe, if any.
fn close_pipe() {
    for fd in [WAKE_READ.swap(-1, Ordering::SeqCst), WAKE_WRITE.swap(-1, Ordering::SeqCst)] {
        if fd >= 0 {
            // SAFETY: closing a descriptor this module created and no one else uses.
            unsafe { libc::close(fd) };
        }
    }
}

fn new_pipe() {
    if let Ok((read, write)) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
        // Owned by this module from now on, as raw numbers the handler can read.
        WAKE_READ.store(read.into_raw_fd(), Ordering::SeqCst);
        WAKE_WRITE.store(write.into_raw_fd(), Ordering::SeqCst);
    }
}

/// For a worker: SIGTERM and SIGINT ask it to stop after the job in hand; SIGUSR2 too, to be
/// replaced ([`recycle_requested`]); SIGUSR1 reopens the log file.
pub fn install_worker() {
    ensure_pipe();
    install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1, Signal::SIGUSR2]);
}

/// For the embedded job server (`li3g-host server`, and the `start` child): as a worker, and
/// SIGHUP only wakes it. Left at its default, a hangup (a closed terminal, an operator's
/// `kill -HUP` as for gearmand, which survives it) killed the server and every job it held in
/// memory.
pub fn install_server() {
    install_worker();
    install(&[Signal::SIGHUP]);
}

/// For the supervisor: stop (TERM, INT), reload (HUP), child exits (CHLD), reopen the log
/// file (USR1: its own; the children see the rename at their next line).
pub fn install_daemon() {
    ensure_pipe();
    install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD, Signal::SIGUSR1]);
    // SIGUSR2 recycles a worker. Sent to the supervisor by mistake, its default action would end
    // the daemon, and every worker's job with it (their parent-death signal); children install
    // their own handler for it.
    set_handler(&[Signal::SIGUSR2], SigHandler::SigIgn);
}

/// Takes the reopen-the-log flag (SIGUSR1), for the supervisor to say so.
pub fn take_reopen_log() -> bool {
    REOPEN_LOG.swap(false, Ordering::SeqCst)
}

fn clear_flags() {
    STOP.store(false, Ordering::SeqCst);
    STOP_COUNT.store(0, Ordering::SeqCst);
    RELOAD.store(false, Ordering::SeqCst);
    RECYCLE.store(false, Ordering::SeqCst);
    CHILD.store(false, Ordering::SeqCst);
    REOPEN_LOG.store(false, Ordering::SeqCst);
}

/// In a freshly forked child of the supervisor (a worker or another kind), with signals
/// blocked: forget the parent's flags, handlers and wake pipe; take a pipe of its own and the
/// worker's handlers (SIGTERM/SIGINT stop it, SIGUSR2 recycles it).
pub fn reset_for_child() {
    clear_flags();
    set_handler(&[Signal::SIGHUP, Signal::SIGCHLD], SigHandler::SigDfl);
    close_pipe();
    new_pipe();
    install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGUSR1, Signal::SIGUSR2]);
}

extern "C" fn ignore(_: libc::c_int) {}

/// In a freshly forked job child (`--atomic`), with signals blocked: no wake pipe, and stop
/// signals without effect: the job finishes unless its worker kills it (timeout, second stop).
///
/// They are caught by a handler that does nothing (restarting interrupted calls), not set to
/// `SIG_IGN`: an ignored signal stays ignored across `exec`, so every program a job runs would
/// ignore SIGTERM (and `timeout(1)` or a job's own `kill` would not work); a caught one is
/// reset to the default by `exec`.
pub fn reset_for_job() {
    clear_flags();
    let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2] {
        // SAFETY: the handler does nothing at all.
        let _ = unsafe { sigaction(signal, &action) };
    }
    set_handler(&[Signal::SIGCHLD], SigHandler::SigDfl);
    close_pipe();
}

/// Whether a recycle was asked for (SIGUSR2: the supervisor replaces a worker past its
/// maximum age); [`stop_requested`] is then true too.
pub fn recycle_requested() -> bool {
    RECYCLE.load(Ordering::SeqCst)
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// How many stop signals arrived (a second one means: now).
pub fn stop_count() -> i32 {
    STOP_COUNT.load(Ordering::SeqCst)
}

/// Takes the reload flag.
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

/// Takes the child-exited flag.
pub fn take_child() -> bool {
    CHILD.swap(false, Ordering::SeqCst)
}

/// The descriptor that becomes readable when a signal arrived, to include in a `poll(2)`;
/// `None` before this process installed its handlers. See [`drain_wake`].
///
/// Borrow it for one wait, not across a fork: a forked child replaces its wake pipe.
pub fn wake_fd() -> Option<BorrowedFd<'static>> {
    let fd = WAKE_READ.load(Ordering::SeqCst);
    // SAFETY: the wake pipe is opened once per process and never closed while the process
    // runs (only a forked child replaces its copy, in its setup, before it borrows it).
    (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Empties the wake-up pipe.
pub fn drain_wake() {
    let fd = WAKE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 64];
    // SAFETY: reading into our buffer from a non-blocking pipe.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// The exit code of a worker whose plugin state constructor ran past its deadline: not one
/// the pool expects, so it backs off before replacing the worker.
pub const EXIT_STATE_TIMEOUT: i32 = 3;

static DEADLINE_MESSAGE: std::sync::atomic::AtomicPtr<u8> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
static DEADLINE_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn exit_now(signal: libc::c_int) {
    if signal == libc::SIGALRM {
        let message = DEADLINE_MESSAGE.load(Ordering::SeqCst);
        if !message.is_null() {
            // SAFETY: write(2) is async-signal-safe; the message is leaked, so it lives forever.
            unsafe { libc::write(2, message.cast(), DEADLINE_LEN.load(Ordering::SeqCst)) };
        }
        // SAFETY: _exit is async-signal-safe; nothing is in hand while states are built.
        unsafe { libc::_exit(EXIT_STATE_TIMEOUT) };
    }
    // SAFETY: as above; a stop signal while states are built ends the worker at once.
    unsafe { libc::_exit(0) };
}

/// Runs `build` (a worker building its plugins' states) where a stop signal (SIGTERM,
/// SIGINT) ends the process at once with 0 (one that came before: with 0, or
/// [`EXIT_RECYCLE`](crate::daemon::EXIT_RECYCLE) for a recycle), since no job is in hand and a constructor may
/// block; and SIGALRM (see [`state_deadline`]) ends it with [`EXIT_STATE_TIMEOUT`] and the
/// deadline's message. The worker's handlers are back afterwards.
pub fn while_building_states<T>(build: impl FnOnce() -> T) -> T {
    set_handler(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGALRM], SigHandler::Handler(exit_now));
    if stop_requested() {
        // A recycle (SIGUSR2) that came while the plugins loaded still ends as one, so the
        // supervisor replaces the worker whatever its restart policy.
        let code = if recycle_requested() { crate::daemon::EXIT_RECYCLE } else { 0 };
        // SAFETY: nothing to flush or finish yet.
        unsafe { libc::_exit(code) };
    }
    let out = build();
    state_deadline(None);
    set_handler(&[Signal::SIGALRM], SigHandler::SigDfl);
    install(&[Signal::SIGTERM, Signal::SIGINT]);
    out
}

/// Arms (`Some((seconds, message))`) or disarms (`None`) the deadline of the constructor about
/// to run, inside [`while_building_states`]: past it the worker writes `message` to stderr and
/// exits.
pub fn state_deadline(deadline: Option<(std::time::Duration, String)>) {
    nix::unistd::alarm::cancel();
    if let Some((after, message)) = deadline {
        let message: &'static mut [u8] = Box::leak(message.into_bytes().into_boxed_slice());
        DEADLINE_LEN.store(message.len(), Ordering::SeqCst);
        DEADLINE_MESSAGE.store(message.as_mut_ptr(), Ordering::SeqCst);
        let seconds = u32::try_from(after.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX).max(1);
        nix::unistd::alarm::set(seconds);
    }
}
