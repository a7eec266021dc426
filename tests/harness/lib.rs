//! The test harness: builds what the integration tests run, and gives each test its own
//! plugins directory.
//!
//! `cargo test` does not rebuild the cdylibs that tests load, and the misbehaving test plugins
//! live outside the workspace on purpose. So the first test that needs an artifact runs
//! `cargo build` itself, once per test process, into `target/harness/{main,testing}`: the host binary and the
//! example plugins from the workspace, the test plugins from `plugins/testing`, and the
//! ABI-mismatch plugin twice more with the features that make it incompatible. Cargo decides
//! what is stale, so a test never loads an old `.so`. Building into a target directory of its
//! own keeps the nested cargo from waiting on the lock the outer `cargo test` holds.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod peers;
pub mod redis_setups;
pub mod tls;
mod under_test;
pub use peers::{missing_peers, require_peers};
pub use under_test::{signal, Daemon, HostBuilder, Signal, Worker};

/// The workspace root (the parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Everything the harness built.
pub struct Artifacts {
    /// The `li3g-host` binary.
    pub host: PathBuf,
    /// Plugin libraries by short name: `hello`, `redis_counter`, `misbehave`, `loader_panic`, `loader_error`,
    /// `not_a_plugin`, `duplicate`, `threaded`, `threaded_state`, `drop_panic`, `state_misbehave` (its constructor hangs, panics, aborts or fails as its `mode` setting says), `abi_mismatch` (compatible build), `abi_layout` and
    /// `abi_version` (incompatible builds), `abi_old_prefix` (its root module laid out as in 0.2).
    pub libs: HashMap<&'static str, PathBuf>,
}

impl Artifacts {
    /// The library called `name`; panics on an unknown name (a bug in the test).
    pub fn lib(&self, name: &str) -> &Path {
        self.libs.get(name).unwrap_or_else(|| panic!("the harness builds no plugin called {name}"))
    }
}

/// Builds everything once per test process and returns where it is.
///
/// # Panics
/// When a build fails, with cargo's output.
pub fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    require_peers();
    BUILT.get_or_init(build)
}

fn build() -> Artifacts {
    let root = workspace_root();
    let harness = root.join("target").join("harness");
    // Two target directories: the host's stays as a user's build tree looks (the host and the
    // example plugins side by side), with no test plugin next to it.
    let (main, testing_target) = (harness.join("main"), harness.join("testing"));
    let saved = harness.join("artifacts");
    fs::create_dir_all(&saved).expect("create target/harness/artifacts");

    cargo(&root, &main, &["build", "-p", "li3g-host", "-p", "li3g-plugin-hello", "-p", "li3g-plugin-redis-counter"]);
    let testing = root.join("plugins/testing/Cargo.toml");
    let testing = testing.to_str().expect("utf-8 path");
    cargo(&root, &testing_target, &["build", "--manifest-path", testing]);

    let mut libs = HashMap::new();
    let mut keep = |name: &'static str, built: PathBuf| {
        let dest = saved.join(format!("{name}.so"));
        fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        libs.insert(name, dest);
    };
    keep("hello", main.join("debug/libhello.so"));
    keep("redis_counter", main.join("debug/libredis_counter.so"));
    for name in [
        "misbehave",
        "loader_panic",
        "loader_error",
        "not_a_plugin",
        "duplicate",
        "abi_mismatch",
        "threaded",
        "threaded_state",
        "drop_panic",
        "state_misbehave",
    ] {
        keep(name, testing_target.join(format!("debug/lib{name}.so")));
    }
    for (name, feature) in [("abi_layout", "layout"), ("abi_version", "version"), ("abi_old_prefix", "old_prefix")] {
        cargo(
            &root,
            &testing_target,
            &["build", "--manifest-path", testing, "-p", "li3g-test-abi-mismatch", "--features", feature],
        );
        keep(name, testing_target.join("debug/libabi_mismatch.so"));
    }
    Artifacts { host: main.join("debug/li3g-host"), libs }
}

fn cargo(root: &Path, target: &Path, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .arg("--target-dir")
        .arg(target)
        .current_dir(root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "cargo {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
}

/// Compiles the C peer `tests/peers/SOURCE` against libgearman into `out` (for the benches).
///
/// # Panics
/// If `cc` fails (is libgearman-dev installed?).
pub fn cc_peer(source: &str, out: &Path) -> PathBuf {
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(out)
        .arg(workspace_root().join("tests/peers").join(source))
        .arg("-lgearman")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc {source} failed (is libgearman-dev installed?)");
    out.to_path_buf()
}

/// The release build of the host and the example plugins, for benchmarks: the `li3g-host`
/// binary and the directory holding `libhello.so` and `libredis_counter.so` next to it.
///
/// # Panics
/// When the build fails.
pub fn release_build() -> PathBuf {
    let root = workspace_root();
    let target = root.join("target").join("harness").join("main");
    cargo(
        &root,
        &target,
        &["build", "--release", "-p", "li3g-host", "-p", "li3g-plugin-hello", "-p", "li3g-plugin-redis-counter"],
    );
    target.join("release")
}

/// A plugins directory of its own for one test, removed when dropped.
///
/// Files are copied in with mode 0755 in a 0700 directory, so they pass the host's permission
/// checks; each copy has its own path, so the dynamic loader loads it afresh (its globals are
/// this test's alone).
pub struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    /// An empty directory.
    pub fn empty() -> PluginDir {
        PluginDir { dir: tempfile::tempdir().expect("create a temporary directory") }
    }

    /// A directory holding the plugins `names` (short names, see [`Artifacts::libs`]).
    pub fn with(names: &[&str]) -> PluginDir {
        let dir = PluginDir::empty();
        for name in names {
            dir.add(name, &format!("lib{name}.so"));
        }
        dir
    }

    /// Copies the plugin `name` in as `file_name`; returns its path.
    pub fn add(&self, name: &str, file_name: &str) -> PathBuf {
        let dest = self.dir.path().join(file_name);
        fs::copy(artifacts().lib(name), &dest).expect("copy a plugin");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).expect("chmod a plugin");
        dest
    }

    /// Writes a file with `contents` (mode 0644); returns its path.
    pub fn write(&self, file_name: &str, contents: &[u8]) -> PathBuf {
        let dest = self.dir.path().join(file_name);
        fs::write(&dest, contents).expect("write a file");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).expect("chmod a file");
        dest
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A `li3g-host` command, built fresh by the harness, with none of the caller's `LI3G_*`
/// settings (a test sets what it needs).
pub fn host() -> Command {
    let mut command = Command::new(&artifacts().host);
    for var in ["LI3G_CONFIG", "LI3G_SERVERS", "LI3G_ENVIRONMENT", "LI3G_PLUGINS"] {
        command.env_remove(var);
    }
    // `start` writes and locks a PID file even in the foreground: each command gets its own
    // default, so that tests running side by side never meet on one (a test that wants the
    // real default removes LI3G_PID; `restart`/`shutdown` tests pass `--pid`).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    command.env("LI3G_PID", std::env::temp_dir().join(format!("li3g-test-{}-{n}.pid", std::process::id())));
    command
}

/// The outcome of running a command: status and both streams as text.
pub struct Run {
    /// Exit code, or `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// How long [`run`] lets a command take before killing it, so a hung peer fails the test
/// instead of hanging the suite.
pub const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `command` to completion (killed after [`RUN_TIMEOUT`]) and captures its output.
///
/// # Panics
/// When the command cannot start or runs past the timeout.
pub fn run(command: &mut Command) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = ChildGuard::spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let mut stdout = child.child().stdout.take().expect("piped stdout");
    let mut stderr = child.child().stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let status = child.wait_timeout(RUN_TIMEOUT);
    child.kill();
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let status = status.unwrap_or_else(|| panic!("{command:?} ran past {RUN_TIMEOUT:?}; stderr: {stderr}"));
    Run { code: status.code(), stdout: String::from_utf8_lossy(&stdout).into_owned(), stderr }
}

/// A child process killed (SIGKILL) and reaped when dropped, so no test leaves one behind.
pub struct ChildGuard {
    child: std::process::Child,
}

impl ChildGuard {
    /// Spawns `command` under the guard.
    pub fn spawn(command: &mut Command) -> ChildGuard {
        ChildGuard { child: command.spawn().expect("spawn a process") }
    }

    /// Its PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit, at most `timeout`; returns its status, or `None` on timeout.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills it now and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process itself, e.g. to take its stdout.
    pub fn child(&mut self) -> &mut std::process::Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port no one listens on right now (the kernel picks it; it is free again once returned).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// A loopback port that never takes a connection: a listener whose accept queue is full, so
/// the kernel drops every SYN to it, as a firewall that black-holes the port does, and a
/// connect to it stays under way until it times out.
pub struct BlackHole {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _listener: std::net::TcpListener,
    _filler: std::net::TcpStream,
}

impl BlackHole {
    /// Opens one.
    pub fn new() -> BlackHole {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        // SAFETY: listen(2) on a socket we own, to shrink its accept queue to one connection.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let filler = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the one connection the queue holds");
        BlackHole { port, _listener: listener, _filler: filler }
    }
}

impl Default for BlackHole {
    fn default() -> Self {
        BlackHole::new()
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, at most `timeout`.
pub fn wait_for_port(port: u16, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// The environment variable that makes [`Gearmand::start`] run li3g's embedded job server
/// (`li3g-host server`) instead of gearmand, so one suite runs against both back ends.
pub const BACKEND_VAR: &str = "LI3G_TEST_SERVER";

/// Whether the tests run against the embedded server (`LI3G_TEST_SERVER=embedded`).
pub fn embedded_backend() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|v| v == "embedded")
}

/// A real job server on a free loopback port, killed by PID when dropped: gearmand, or li3g's
/// embedded server (see [`BACKEND_VAR`], [`Gearmand::embedded`]); the same API for both.
pub struct Gearmand {
    /// Its port on 127.0.0.1.
    pub port: u16,
    process: ChildGuard,
    _log: tempfile::TempDir,
}

impl Gearmand {
    /// Starts gearmand (`--threads=1`, as REFERENCE.md measured fastest on 2 cores) and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// When gearmand is not installed (`.ci/run` installs gearman-job-server) or does not start.
    pub fn start() -> Gearmand {
        on_a_free_port("gearmand", Gearmand::try_start_on)
    }

    /// Starts gearmand on `port` (to restart one on the port it had).
    ///
    /// # Panics
    /// When it does not start there, or another process holds the port.
    pub fn start_on(port: u16) -> Gearmand {
        Gearmand::try_start_on(port).unwrap_or_else(|why| panic!("gearmand on port {port}: {why}"))
    }

    /// Starts gearmand (or the embedded server, see [`BACKEND_VAR`]) on `port`; `Err` says why
    /// it is not the one serving the port.
    pub fn try_start_on(port: u16) -> Result<Gearmand, String> {
        if embedded_backend() {
            return Gearmand::try_embedded_on(port, None, &[]);
        }
        Gearmand::try_gearmand_on(port, &[])
    }

    /// Starts gearmand itself on `port` with `extra` arguments (a queue store, say).
    pub fn try_gearmand_on(port: u16, extra: &[&str]) -> Result<Gearmand, String> {
        require_peers();
        let log = tempfile::tempdir().expect("a log directory");
        let process = ChildGuard::spawn(
            Command::new("gearmand")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg("--threads=1")
                .arg(format!("--log-file={}", log.path().join("gearmand.log").display()))
                .arg("--verbose=ERROR")
                .args(extra)
                .stdin(std::process::Stdio::null()),
        );
        // The port may accept because someone else holds it (a race with another test between
        // picking a free port and binding it): the server that answers must be ours, by PID.
        serving(&process, port, b"getpid\n", |answer| {
            answer.lines().next().and_then(|l| l.strip_prefix("OK ")).and_then(|pid| pid.trim().parse().ok())
        })?;
        Ok(Gearmand { port, process, _log: log })
    }
    /// li3g's embedded job server (`li3g-host server`), with its job store at `store` if given.
    ///
    /// # Panics
    /// When it does not start.
    pub fn embedded(store: Option<&Path>) -> Gearmand {
        on_a_free_port("li3g-host server", |port| Gearmand::try_embedded_on(port, store, &[]))
    }

    /// li3g's embedded job server on `port`, with `store` and `extra` arguments; `Err` says why
    /// it is not the one serving the port.
    pub fn try_embedded_on(port: u16, store: Option<&Path>, extra: &[&str]) -> Result<Gearmand, String> {
        Gearmand::try_binary_on(&artifacts().host, port, store, extra)
    }

    /// The embedded job server of the `li3g-host` at `binary` (a release build, for benchmarks).
    pub fn try_binary_on(binary: &Path, port: u16, store: Option<&Path>, extra: &[&str]) -> Result<Gearmand, String> {
        let log = tempfile::tempdir().expect("a log directory");
        let mut command = Command::new(binary);
        for var in ["LI3G_CONFIG", "LI3G_SERVERS", "LI3G_ENVIRONMENT", "LI3G_PLUGINS"] {
            command.env_remove(var);
        }
        command.args(["server", "--listen", &format!("127.0.0.1:{port}")]).args(extra);
        if let Some(store) = store {
            command.arg("--store").arg(store);
        }
        let stderr = fs::File::create(log.path().join("server.log")).expect("a log file");
        let process = ChildGuard::spawn(command.stdin(std::process::Stdio::null()).stderr(stderr));
        serving(&process, port, b"getpid\n", |answer| {
            answer.lines().next().and_then(|l| l.strip_prefix("OK ")).and_then(|pid| pid.trim().parse().ok())
        })?;
        Ok(Gearmand { port, process, _log: log })
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(mut self) {
        self.process.kill();
    }

    /// The text admin protocol's `status`, asked with gearadmin (a peer) and read with li3g's parser.
    pub fn status(&self) -> Vec<li3g_host::gearman::admin_protocol::FunctionStatus> {
        let out = run(Command::new("gearadmin").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--status"]));
        let lines = out.stdout.lines().take_while(|l| !li3g_host::gearman::admin_protocol::is_end(l));
        li3g_host::gearman::admin_protocol::parse_status(lines).expect("gearadmin --status answers status lines")
    }
}

/// Waits until every gearmand in `servers` lists `function` with `workers` workers.
///
/// # Panics
/// After 60 s without that (a ceiling for a loaded machine, not a wait: it returns as soon as
/// the workers are there).
pub fn wait_for_workers(servers: &[&Gearmand], function: &str, workers: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if servers.iter().all(|g| g.status().iter().any(|s| s.function == function && s.workers == workers)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{function} never had {workers} workers on every server");
}

impl Gearmand {
    /// The text admin protocol's `workers`, asked with gearadmin and read with li3g's parser.
    pub fn workers(&self) -> Vec<li3g_host::gearman::admin_protocol::WorkerStatus> {
        let out = run(Command::new("gearadmin").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--workers"]));
        let lines = out.stdout.lines().take_while(|l| !li3g_host::gearman::admin_protocol::is_end(l));
        li3g_host::gearman::admin_protocol::parse_workers(lines).expect("gearadmin --workers answers worker lines")
    }

    /// The PIDs of the li3g workers connected (from their `host:pid` client ids).
    pub fn worker_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .workers()
            .iter()
            .filter_map(|w| w.client_id.rsplit_once(':').and_then(|(_, pid)| pid.parse().ok()))
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// How often [`wait_until`] asks again.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits until `condition` holds, at most `timeout`; panics with `what` otherwise.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut condition: impl FnMut() -> bool) {
    wait_until_ok(what, timeout, POLL, || if condition() { Ok(()) } else { Err("not yet") });
}

/// Asks `probe` every `every` until it answers `Ok`, at most `timeout`, and returns what it
/// answered; `Err` is how things stand, shown when it never does.
///
/// # Panics
/// After `timeout`, with `what` and the last `Err`.
pub fn wait_until_ok<T, E: std::fmt::Display>(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(now) => assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}: {now}"),
        }
        std::thread::sleep(every);
    }
}

/// Asks `condition` every `every` until it holds, at most `timeout`; whether it held (for a
/// test that expects either).
pub fn poll_until(
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The lines a process writes to a pipe, collected by a thread as they come.
pub struct Lines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Lines {
    /// Starts collecting from `pipe`.
    pub fn collect(pipe: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Lines { lines }
    }

    /// Everything so far.
    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line contains `text`, at most `timeout`; returns it.
    pub fn wait_for(&self, text: &str, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.all().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(std::time::Instant::now() < deadline, "no line contains {text:?}; got {:#?}", self.all());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// How many lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.all().iter().filter(|l| l.contains(text)).count()
    }
}

/// Whether a process with `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Starts a server with `start` on a free port, trying other ports when one was taken between
/// picking it and binding it.
///
/// # Panics
/// After five failed tries, with the reasons.
pub fn on_a_free_port<T>(what: &str, start: impl Fn(u16) -> Result<T, String>) -> T {
    let mut why = Vec::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(server) => return server,
            Err(err) => why.push(err),
        }
    }
    panic!("{what} did not start on a free port: {why:#?}")
}

/// Waits until `process` serves 127.0.0.1:`port`: the port accepts, and asked `question` there,
/// the server names `process`'s PID (`pid_of` reads it from the answer). Fails at once when the
/// process exits (it could not bind), or after 10 s.
fn serving(
    process: &ChildGuard,
    port: u16,
    question: &[u8],
    pid_of: impl Fn(&str) -> Option<u32>,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if !alive(process.id()) {
            return Err(format!("the server exited (port {port} taken?)"));
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut answer = Vec::new();
            let mut chunk = [0u8; 4096];
            if stream.write_all(question).is_ok() {
                while let Ok(n @ 1..) = stream.read(&mut chunk) {
                    answer.extend_from_slice(&chunk[..n]);
                    if let Some(pid) = pid_of(&String::from_utf8_lossy(&answer)) {
                        return if pid == process.id() {
                            Ok(())
                        } else {
                            Err(format!("port {port} is served by PID {pid}, not ours ({})", process.id()))
                        };
                    }
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("nothing served port {port} within 10 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A real redis-server on a free loopback port, with no persistence, killed by PID when dropped.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    process: ChildGuard,
    _dir: Option<tempfile::TempDir>,
}

impl Redis {
    /// Starts redis-server and waits until it serves.
    ///
    /// # Panics
    /// When redis-server is not installed (`.ci/run` installs redis-server) or does not start.
    pub fn start() -> Redis {
        on_a_free_port("redis-server", Redis::try_start_on)
    }

    /// Starts redis-server on `port` (to restart one on the port it had).
    ///
    /// # Panics
    /// When it does not start there.
    pub fn start_on(port: u16) -> Redis {
        Redis::try_start_on(port).unwrap_or_else(|why| panic!("redis-server on port {port}: {why}"))
    }

    /// Starts redis-server on `port`; `Err` says why it is not the one serving the port.
    pub fn try_start_on(port: u16) -> Result<Redis, String> {
        let dir = tempfile::tempdir().expect("a directory for redis");
        let path = dir.path().to_path_buf();
        let mut redis = Redis::try_start_in(port, &path, &["--save", "", "--appendonly", "no"])?;
        redis._dir = Some(dir);
        Ok(redis)
    }

    /// A durable redis-server on `port` keeping its data in `dir`: an append-only file synced
    /// on every write, so a SIGKILLed Redis restarted on the same `dir` has lost nothing.
    pub fn try_durable_on(port: u16, dir: &Path) -> Result<Redis, String> {
        Redis::try_start_in(port, dir, &["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
    }

    fn try_start_in(port: u16, dir: &Path, persistence: &[&str]) -> Result<Redis, String> {
        Redis::try_start_with(port, dir, persistence, None)
    }

    /// Starts redis-server on `port` with data in `dir` and the `args` given (a
    /// `--requirepass`, `--tls-port`, `--cluster-enabled`, `--replicaof`...), and waits until it
    /// serves on `port` in plaintext, authenticating with `password` (the default user's) when
    /// given.
    pub fn try_start_with(port: u16, dir: &Path, args: &[&str], password: Option<&str>) -> Result<Redis, String> {
        require_peers();
        let process = ChildGuard::spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(args)
                .arg("--dir")
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null()),
        );
        let question = match password {
            Some(password) => format!("AUTH {password}\r\nINFO server\r\n"),
            None => "INFO server\r\n".to_string(),
        };
        serving(&process, port, question.as_bytes(), |answer| {
            answer.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
        })?;
        Ok(Redis { port, process, _dir: None })
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(mut self) {
        self.process.kill();
    }
}

/// The children of `pid` (`/proc/PID/task/PID/children`).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
