//! Tasks that misbehave on purpose, and tasks that exercise the typed argument decoding.
//! The host's tests use them to prove that bad tasks cannot take the host down.

use li3g_plugin_api::{plugin, Job, Json};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

fn panic(message: String) -> String {
    panic!("{message}")
}

fn fail(message: String) -> Result<String, String> {
    Err(message)
}

fn abort() {
    std::process::abort()
}

fn segfault() {
    // SAFETY: none; this writes through a null pointer on purpose.
    unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) }
}

fn exit(code: i32) {
    std::process::exit(code)
}

fn sleep(seconds: f64) -> f64 {
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    seconds
}

/// Allocates and touches `mib` MiB, and never frees it.
fn leak(mib: usize) -> usize {
    let mut block = vec![0u8; mib << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::mem::forget(block);
    mib
}

fn spin() {
    #[allow(clippy::empty_loop)]
    loop {
        std::hint::spin_loop();
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-global counter: 1 on the first call in a fresh process.
fn counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::SeqCst) + 1
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn greet(name: String, greeting: Option<String>) -> String {
    format!("{} {name}", greeting.as_deref().unwrap_or("Hello"))
}

fn echo(value: Value) -> Value {
    value
}

#[derive(serde::Serialize)]
struct Summary {
    count: usize,
    total: i64,
}

fn summary(values: Vec<i64>) -> Json<Summary> {
    Json(Summary { count: values.len(), total: values.iter().sum() })
}

fn context(job: &Job) -> Value {
    json!({"task": job.task(), "id": job.id(), "environment": job.environment()})
}

/// Reports `steps` progress steps, sends each as data, and warns once.
fn progress(job: &Job, steps: u64) -> u64 {
    job.warn("starting");
    for i in 1..=steps {
        job.progress(i, steps);
        job.send_data(format!("step {i}"));
    }
    steps
}

/// What li3_gearman gave a task through `$_SERVER` and the environment.
fn server(job: &Job) -> Value {
    let vars: serde_json::Map<String, Value> = job.env_vars().map(|(k, v)| (k.into(), v.into())).collect();
    json!({"environment": job.environment(), "HTTP_HOST": job.env("HTTP_HOST"), "vars": vars})
}

/// Appends `{tag} {environment} {HTTP_HOST}` to the file `path`, so a test sees background jobs run.
fn record(job: &Job, path: String, tag: String) -> Result<String, String> {
    use std::io::Write;
    let line = format!("{tag} {} {}\n", job.environment(), job.env("HTTP_HOST").unwrap_or("-"));
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{path}: {e}"))?;
    file.write_all(line.as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    Ok(line.trim_end().to_string())
}

/// Appends `line` and a newline to the file at `path` (one `write` with `O_APPEND`, so lines
/// from many workers never interleave): a counter that proves how often a job ran.
fn append(path: String, line: String) -> Result<String, String> {
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().append(true).create(true).open(&path).map_err(|e| format!("{path}: {e}"))?;
    file.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    Ok(line)
}

/// Fails its first `failures` runs (counted as lines in the file at `path`), then succeeds.
fn flaky(path: String, failures: usize) -> Result<String, String> {
    append(path.clone(), "run".into())?;
    let runs = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?.lines().count();
    if runs <= failures {
        Err(format!("failure {runs} of {failures}"))
    } else {
        Ok(format!("succeeded on run {runs}"))
    }
}

/// A result of `mib` MiB (to test result caps).
fn big(mib: usize) -> String {
    "x".repeat(mib << 20)
}

/// Runs `sh -c command` and waits for it: a job with a process of its own.
fn shell(command: String) -> Result<String, String> {
    let out = std::process::Command::new("sh").arg("-c").arg(&command).output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// This process's CPU time (user and system) so far.
fn process_cpu() -> std::time::Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Allocates and touches `mib` MiB, then uses `seconds` of CPU time (not wall-clock time)
/// while holding it: a job whose cost is known.
fn burn(seconds: f64, mib: usize) -> f64 {
    let mut block = vec![0u8; mib << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    let until = process_cpu() + std::time::Duration::from_secs_f64(seconds);
    let mut x = 0u64;
    while process_cpu() < until {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::hint::black_box(&block);
    seconds
}

/// Reads a file: what a sandbox may refuse.
fn read(path: String) -> Result<String, String> {
    std::fs::read_to_string(&path).map(|text| text.len().to_string()).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Connects to a TCP port on 127.0.0.1: what a sandbox may refuse.
fn connect(port: u16) -> Result<String, String> {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .map(|_| format!("connected to port {port}"))
        .map_err(|e| format!("cannot connect to port {port}: {e}"))
}

fn run() -> &'static str {
    "Misbehave::run"
}

plugin! {
    name: "misbehave",
    tasks: {
        "Misbehave::run" => run,
        "Misbehave::panic"(message) => panic,
        "Misbehave::fail"(message) => fail,
        "Misbehave::abort" => abort,
        "Misbehave::segfault" => segfault,
        "Misbehave::exit"(code) => exit,
        "Misbehave::sleep"(seconds) => sleep,
        "Misbehave::leak"(mib) => leak,
        "Misbehave::spin" => spin,
        "Misbehave::counter" => counter,
        "Misbehave::add"(a, b) => add,
        "Misbehave::greet"(name, greeting) => greet,
        "Misbehave::echo"(value) => echo,
        "Misbehave::summary"(values) => summary,
        "Misbehave::context" => context,
        "Misbehave::progress"(steps) => progress,
        "Misbehave::server" => server,
        "Misbehave::record"(path, tag) => record,
        "Misbehave::append"(path, line) => append,
        "Misbehave::flaky"(path, failures) => flaky,
        "Misbehave::big"(mib) => big,
        "Misbehave::shell"(command) => shell,
        "Misbehave::burn"(seconds, mib) => burn,
        "Misbehave::read"(path) => read,
        "Misbehave::connect"(port) => connect,
    }
}
