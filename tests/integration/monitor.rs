//! The monitor against real parts: `/metrics` checked by `promtool` and scraped by a real
//! Prometheus server, `/api/status`, and the dashboard in headless Chromium (each page, a retry
//! through the page that runs the dead job, refused GETs and missing tokens).

use crate::daemon::{call, client, WAIT};
use crate::devtools::Browser;
use crate::watching::Pool;
use li3g_tests::{free_port, host, run, wait_for_port, wait_until, wait_until_ok, ChildGuard, Gearmand, Redis, POLL};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One HTTP/1.0 request; (status, body).
pub(crate) fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Chromium's flags for a headless run in a test: no sandbox (root), no GPU, nothing fetched.
pub(crate) const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args(HEADLESS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs (apt install chromium)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM Chromium builds from `url`.
fn dom(url: &str) -> String {
    chromium(&["--dump-dom", url])
}

/// The value of `name="csrf"` and the first form action containing `action` in `html`.
fn form_of(html: &str, action: &str) -> (String, String) {
    let at = html.find(action).unwrap_or_else(|| panic!("no {action} in {html}"));
    let start = html[..at].rfind("action=\"").unwrap() + "action=\"".len();
    let end = start + html[start..].find('"').unwrap();
    let path = html[start..end].replace("&amp;", "&");
    let csrf_at = html[end..].find("name=\"csrf\" value=\"").unwrap() + end + "name=\"csrf\" value=\"".len();
    let csrf = html[csrf_at..csrf_at + html[csrf_at..].find('"').unwrap()].to_string();
    (path, csrf)
}

/// Asserts that `promtool check metrics` accepts `text`.
pub(crate) fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt install prometheus)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_prometheus_counts_the_jobs() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let pool = Pool::start_with(1, &["--metrics", &addr]);
    assert!(wait_for_port(port, WAIT), "the monitor listens");
    let mut c = client(&pool.gearmands[0]);
    for _ in 0..3 {
        call(&mut c, "Misbehave::sleep", &[json!(0)]).unwrap();
    }
    for _ in 0..2 {
        call(&mut c, "Misbehave::fail", &[json!("no luck")]).unwrap_err();
    }
    let (status, text) = http(port, "GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("li3g_jobs_total{pool=\"default\",task=\"Misbehave::sleep\",outcome=\"completed\"} 3"),
        "{text}"
    );
    assert!(text.contains("li3g_jobs_total{pool=\"default\",task=\"Misbehave::fail\",outcome=\"failed\"} 2"), "{text}");
    assert!(text.contains("li3g_workers{pool=\"default\",state=\"idle\"} 1") && text.contains("li3g_up 1"), "{text}");
    assert!(text.contains("li3g_scheduled_jobs 0") && text.contains("li3g_queue_workers{server="), "{text}");

    promtool_check(&text);

    // /api/status is status --json.
    let (status, body) = http(port, "GET", "/api/status", &[], "");
    assert_eq!(status, 200);
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["daemon"]["pid"], pool.json()["daemon"]["pid"]);

    // A real Prometheus scrapes it; its HTTP API answers per outcome.
    let prometheus_port = free_port();
    let config = pool.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: li3g\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .unwrap();
    let _prometheus = ChildGuard::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", pool.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_for_port(prometheus_port, WAIT), "prometheus listens");
    let query = |q: &str| -> Vec<(String, String)> {
        let path = format!("/api/v1/query?query={}", li3g_host::monitor::encode(q));
        let (_, body) = http(prometheus_port, "GET", &path, &[], "");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| (format!("{}/{}", r["metric"]["task"], r["metric"]["outcome"]), r["value"][1].to_string()))
            .collect()
    };
    wait_until("prometheus has scraped the jobs", Duration::from_secs(30), || {
        query("sum by (task, outcome) (li3g_jobs_total)").len() >= 4
    });
    let results = query("sum by (task, outcome) (li3g_jobs_total)");
    let value = |key: &str| results.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(value("\"Misbehave::sleep\"/\"completed\"").as_deref(), Some("\"3\""), "{results:?}");
    assert_eq!(value("\"Misbehave::fail\"/\"failed\"").as_deref(), Some("\"2\""), "{results:?}");
    assert_eq!(value("\"Misbehave::fail\"/\"completed\"").as_deref(), Some("\"0\""), "{results:?}");
}

#[test]
fn the_dashboard_shows_the_pool_and_a_retry_through_it_runs_the_dead_job() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Two workers: one stays busy with a sleep while the pages are read (a loaded machine can take
    // seconds to start Chromium), the other runs the retried job.
    let pool = Pool::start_with(2, &["--metrics", &format!("127.0.0.1:{port}")]);
    assert!(wait_for_port(port, WAIT), "the monitor listens");
    let li3g = |args: &[&str]| run(host().args(args).arg("--config").arg(&pool.config));

    // A job that fails twice, with one retry: dead. Retried once more, it succeeds.
    let flaky = pool.dir.path().join("flaky");
    let path = flaky.display().to_string();
    let out = li3g(&["run", "Misbehave::flaky", &path, "2", "--retries", "1", "--retry-delays", "100ms"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let id = out.stdout.strip_prefix("queued job ").and_then(|r| r.split(' ').next()).unwrap().to_string();
    wait_until("the job is dead", WAIT, || li3g(&["scheduled"]).stdout.contains("Dead: 1"));
    // One scheduled an hour ahead, and one queued for nobody.
    let ahead = li3g(&["run", "Misbehave::sleep", "0", "--in", "1h"]);
    assert_eq!(ahead.code, Some(0), "{}", ahead.stderr);
    let ahead_id = ahead.stdout.split_whitespace().nth(2).unwrap().to_string();
    let queued = li3g(&["run", "Nobody::serves"]);
    assert_eq!(queued.code, Some(0), "{}", queued.stderr);

    let slow = crate::daemon::sleep_in_flight(&pool.gearmands[0], 20.0);
    if let Ok(path) = std::env::var("LI3G_SCREENSHOT") {
        // The picture in the README and docs/WATCHING.md.
        chromium(&["--window-size=1250,260", &format!("--screenshot={path}"), &format!("{base}/")]);
    }
    let busy = dom(&format!("{base}/"));
    assert!(busy.contains("id=\"page-busy\"") && busy.contains("Misbehave::sleep"), "{busy}");
    assert!(busy.contains("class=\"busy\"") && busy.contains("scheduler"), "{busy}");
    let queues = dom(&format!("{base}/queues"));
    assert!(queues.contains("Nobody::serves") && queues.contains(&pool.gearmands[0].addr()), "{queues}");
    let scheduled = dom(&format!("{base}/scheduled"));
    assert!(scheduled.contains(&ahead_id) && scheduled.contains("Cancel"), "{scheduled}");
    let failed = dom(&format!("{base}/failed"));
    assert!(failed.contains("Misbehave::flaky") && failed.contains(&id), "{failed}");
    let dead = dom(&format!("{base}/dead"));
    assert!(dead.contains(&id) && dead.contains("Retry") && dead.contains("Delete"), "{dead}");

    // A GET on the action is refused; a POST without the token too; nothing changed.
    let (action, _) = form_of(&dead, &format!("/dead/{id}/retry"));
    assert_eq!(http(port, "GET", &action, &[], "").0, 405);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(http(port, "POST", &action, &form, "csrf=wrong").0, 403);
    assert!(li3g(&["scheduled"]).stdout.contains("Dead: 1"));
    // Chromium clicks Retry on the Dead page: its form's POST runs the job again.
    let mut browser = Browser::open(&format!("{base}/dead"), WAIT);
    let button =
        format!("form[action=\"/dead/{id}/retry\"] button, form[action=\"/dead/{id}/retry\"] input[type=submit]");
    let click = format!(
        "(() => {{ const b = document.querySelector('{button}'); if (!b) return false; b.click(); return true; }})()"
    );
    wait_until_ok("Chromium clicks Retry on the Dead page", WAIT, POLL, || match browser.eval(&click) {
        Ok(Value::Bool(true)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // The page Chromium shows after the POST; its refresh reloads /dead, not the action.
    let requeued = format!("Requeued job {id}");
    let shown = wait_until_ok("Chromium shows the retry's answer", WAIT, POLL, || {
        let text = browser.eval("[location.pathname, document.body ? document.body.innerText : ''].join('\\n')")?;
        let text = text.as_str().unwrap_or_default().to_string();
        if text.contains(&requeued) {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(shown.starts_with(&format!("{action}\n")), "{shown}");
    let refresh = browser.eval("document.querySelector('meta[http-equiv=refresh]').content").unwrap();
    assert_eq!(refresh, json!("5; url=/dead"));
    drop(browser);
    wait_until("the retried job finishes", WAIT, || li3g(&["status", &id]).stdout.starts_with("finished"));
    assert_eq!(std::fs::read_to_string(&flaky).unwrap().lines().count(), 3);

    // Cancel the scheduled one through its form.
    let scheduled = dom(&format!("{base}/scheduled"));
    let (action, csrf) = form_of(&scheduled, &format!("/scheduled/{ahead_id}/cancel"));
    assert_eq!(http(port, "POST", &action, &form, &format!("csrf={csrf}")).0, 200);
    assert!(li3g(&["scheduled"]).stdout.contains("Pending: 0"));
    slow.join().unwrap().unwrap();
}

#[test]
fn with_a_token_every_request_must_carry_it_and_off_loopback_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("li3g.toml");
    std::fs::write(&file, "[default]\nmetrics_token = \"s3cret\"\n").unwrap();
    let config = li3g_host::config::load(Some(&file), "default", None).unwrap();
    let listener = li3g_host::monitor::bind("127.0.0.1:0", config.metrics_token.as_deref()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let server = std::thread::spawn(move || {
        li3g_host::monitor::serve(listener, &config, &|| flag.load(std::sync::atomic::Ordering::Relaxed))
    });
    assert_eq!(http(port, "GET", "/metrics", &[], "").0, 401);
    assert_eq!(http(port, "GET", "/metrics", &[("Authorization", "Bearer nope")], "").0, 401);
    assert_eq!(http(port, "GET", "/metrics", &[("Authorization", "Bearer s3cret")], "").0, 200);
    let page = dom(&format!("http://127.0.0.1:{port}/"));
    assert!(!page.contains("page-busy"), "{page}");
    let page = dom(&format!("http://127.0.0.1:{port}/?token=s3cret"));
    assert!(page.contains("page-busy") && page.contains("/queues?token=s3cret"), "{page}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), 0);

    // Off loopback without a token: start refuses, in the foreground.
    let out =
        run(host().args(["start", "--no-server", "--metrics", "0.0.0.0:9"]).arg("--pid").arg(dir.path().join("p.pid")));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("not a loopback address; set metrics_token"), "{}", out.stderr);
}

/// A monitor served in this process (no daemon: no scoreboard) for `toml`'s `[default]`.
struct InProcess {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: Option<std::thread::JoinHandle<i32>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start(toml: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("li3g.toml");
        std::fs::write(&file, toml).unwrap();
        let config = li3g_host::config::load(Some(&file), "default", None).unwrap();
        let listener = li3g_host::monitor::bind("127.0.0.1:0", None).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let server = std::thread::spawn(move || {
            li3g_host::monitor::serve(listener, &config, &|| flag.load(std::sync::atomic::Ordering::Relaxed))
        });
        InProcess { port, stop, server: Some(server), _dir: dir }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(server) = self.server.take() {
            let code = server.join().unwrap();
            if !std::thread::panicking() {
                assert_eq!(code, 0);
            }
        }
    }
}

/// A TCP relay to `to` that counts the connections made through it.
fn counting_relay(to: u16) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", to)) else { continue };
            let (mut a, mut b) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
            let (mut a, mut b) = (outbound, inbound);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, count)
}

/// Stops a process (SIGSTOP) until dropped (SIGCONT).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
fn a_stopped_job_server_or_redis_does_not_stall_metrics_which_says_it_is_down() {
    let (stopped, alive, redis) = (Gearmand::start(), Gearmand::start(), Redis::start());
    let monitor = InProcess::start(&format!(
        "[default]\nservers = [\"{}\", \"{}\"]\nredis = \"{}\"\n",
        stopped.addr(),
        alive.addr(),
        redis.url()
    ));
    let (status, text) = http(monitor.port, "GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("li3g_server_up{{server=\"{}\"}} 1", stopped.addr())), "{text}");
    assert!(text.contains("li3g_redis_up 1"), "{text}");

    // Both stopped: the kernel still accepts their connections, nothing answers. Each scrape
    // answers within its deadline (the sources' waits are 1.5 s; gearmand's admin timeout is
    // 2 s, Redis' read timeout 10 s: before the cache a scrape took them all, in turn).
    let _stopped = (Stopped::new(stopped.pid()), Stopped::new(redis.pid()));
    let scrape = || {
        let started = std::time::Instant::now();
        let (status, text) = http(monitor.port, "GET", "/metrics", &[], "");
        let took = started.elapsed();
        assert_eq!(status, 200, "{text}");
        assert!(took < Duration::from_secs(5), "a scrape took {took:?}");
        text
    };
    let down = |text: &str| {
        text.contains(&format!("li3g_server_up{{server=\"{}\"}} 0", stopped.addr())) && text.contains("li3g_redis_up 0")
    };
    // What was asked less than a second ago is still served; then the next question finds both
    // down. Every scrape meanwhile answers in time.
    wait_until("a scrape says both are down", WAIT, || down(&scrape()));
    for _ in 0..3 {
        let text = scrape();
        assert!(down(&text), "{text}");
        assert!(text.contains(&format!("li3g_server_up{{server=\"{}\"}} 1", alive.addr())), "{text}");
        promtool_check(&text);
    }
    // The dashboard says which source is down, in time too.
    let started = std::time::Instant::now();
    let (status, page) = http(monitor.port, "GET", "/queues", &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("no answer within"), "{page}");
    let (_, page) = http(monitor.port, "GET", "/dead", &[], "");
    assert!(page.contains("id=\"redis-error\""), "{page}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn many_scrapes_at_once_ask_each_job_server_about_once_a_second() {
    let gearmand = Gearmand::start();
    let (relay, connections) = counting_relay(gearmand.port);
    let monitor = InProcess::start(&format!("[default]\nservers = [\"127.0.0.1:{relay}\"]\n"));
    let port = monitor.port;
    let started = std::time::Instant::now();
    let scrapers: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5).map(|_| http(port, "GET", "/metrics", &[], "")).filter(|(status, _)| *status == 200).count()
            })
        })
        .collect();
    let answered: usize = scrapers.into_iter().map(|s| s.join().unwrap()).sum();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(answered, 80);
    let asked = connections.load(std::sync::atomic::Ordering::SeqCst);
    // One question a second at most (and the first at once): before the cache, 80.
    assert!(asked >= 1 && asked as f64 <= seconds.ceil() + 1.0, "{asked} admin connections in {seconds:.1}s");
}

/// The monitor child's PID, from `status --json`.
fn monitor_pid(pool: &Pool) -> u32 {
    let report = pool.json();
    let children = report["children"].as_array().unwrap();
    let monitor = children.iter().find(|c| c["kind"] == "monitor").unwrap_or_else(|| panic!("{report}"));
    monitor["pid"].as_u64().unwrap() as u32
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `bytes` on a new connection and reads the status line of the answer.
fn raw_status(port: u16, bytes: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The server may answer (and close) before all is sent: a refused write is fine.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn hostile_clients_neither_change_state_nor_keep_a_scrape_out() {
    let port = free_port();
    let pool = Pool::start_with(1, &["--metrics", &format!("127.0.0.1:{port}")]);
    assert!(wait_for_port(port, WAIT), "the monitor listens");
    let li3g = |args: &[&str]| run(host().args(args).arg("--config").arg(&pool.config));
    let ahead = li3g(&["run", "Misbehave::sleep", "0", "--in", "1h"]);
    assert_eq!(ahead.code, Some(0), "{}", ahead.stderr);
    let id = ahead.stdout.split_whitespace().nth(2).unwrap().to_string();
    let (_, page) = http(port, "GET", "/scheduled", &[], "");
    let (_, csrf) = form_of(&page, &format!("/scheduled/{id}/cancel"));

    // Every action: a GET (even with the right token in its query) is refused, a POST with no
    // token or a forged one too; nothing changes.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for action in [format!("/scheduled/{id}/cancel"), format!("/dead/{id}/retry"), format!("/dead/{id}/delete")] {
        assert_eq!(http(port, "GET", &format!("{action}?csrf={csrf}"), &[], "").0, 405, "{action}");
        assert_eq!(http(port, "POST", &action, &form, "").0, 403, "{action}");
        assert_eq!(http(port, "POST", &action, &form, "csrf=0123456789abcdef0123456789abcdef").0, 403, "{action}");
        assert_eq!(http(port, "POST", &action, &form, &format!("csrf={}", &csrf[..csrf.len() - 1])).0, 403);
        assert_eq!(http(port, "PUT", &action, &form, &format!("csrf={csrf}")).0, 405, "{action}");
    }
    assert_eq!(http(port, "POST", "/metrics", &form, &format!("csrf={csrf}")).0, 405);
    assert!(li3g(&["scheduled"]).stdout.contains("Pending: 1"));

    // Huge heads and bodies are refused at their limit, not read into memory.
    let huge_header = format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20));
    assert_eq!(raw_status(port, huge_header.as_bytes()), 431);
    let many_headers: String = (0..5000).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(raw_status(port, format!("GET / HTTP/1.1\r\n{many_headers}\r\n").as_bytes()), 431);
    assert_eq!(raw_status(port, b"POST /dead/x/retry HTTP/1.1\r\nContent-Length: 100000000\r\n\r\ncsrf="), 413);
    assert_eq!(raw_status(port, b"GARBAGE\r\n\r\n"), 400);
    // DNS rebinding: a page served under another name that now points here is refused.
    assert_eq!(raw_status(port, b"GET /scheduled HTTP/1.1\r\nHost: evil.example:9464\r\n\r\n"), 403);
    assert_eq!(raw_status(port, format!("GET /scheduled HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes()), 200);

    // Slowloris: many half-open requests that never end; a scrape still gets in, the monitor
    // has a bounded number of threads, and the slow ones are dropped at their deadline.
    let monitor = monitor_pid(&pool);
    let slow: Vec<TcpStream> = (0..300)
        .filter_map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert!(slow.len() >= 250, "{} slow connections", slow.len());
    let started = std::time::Instant::now();
    let (status, text) = http(port, "GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "a scrape took {:?}", started.elapsed());
    let threads = threads_of(monitor);
    // A reader, 4 handlers, at most one question in flight per source (2 job servers, Redis).
    assert!(threads <= 8, "the monitor has {threads} threads with {} slow connections", slow.len());
    drop(slow);
    // Many connections that open and close at once.
    for _ in 0..500 {
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    assert_eq!(http(port, "GET", "/metrics", &[], "").0, 200);
    assert_eq!(monitor_pid(&pool), monitor, "the same monitor answered throughout");
}

#[test]
fn status_and_the_dashboard_answer_while_the_pool_restarts_and_workers_are_killed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let port = free_port();
    let pool = Pool::start_with(2, &["--metrics", &format!("127.0.0.1:{port}"), "--resuscitate"]);
    assert!(wait_for_port(port, WAIT), "the monitor listens");
    let check = |when: &str| {
        let out = pool.status(&[]);
        assert_eq!(out.code, Some(0), "{when}: {}", out.stderr);
        let (status, text) = http(port, "GET", "/metrics", &[], "");
        assert_eq!(status, 200, "{when}: {text}");
        promtool_check(&text);
        for page in ["/", "/queues", "/failed", "/api/status"] {
            let (status, body) = http(port, "GET", page, &[], "");
            assert_eq!(status, 200, "{when} {page}: {body}");
        }
        let json = pool.json();
        assert!(json["children"].as_array().unwrap().iter().all(|c| c["pid"].as_u64().unwrap_or(0) > 0), "{json}");
    };
    for round in 0..3 {
        kill(Pid::from_raw(pool.daemon.id() as i32), Signal::SIGHUP).unwrap();
        check(&format!("restart {round}"));
        let json = pool.json();
        let worker = json["children"].as_array().unwrap().iter().find(|c| c["kind"] == "worker").cloned();
        if let Some(worker) = worker {
            let _ = kill(Pid::from_raw(worker["pid"].as_u64().unwrap() as i32), Signal::SIGKILL);
        }
        check(&format!("kill {round}"));
    }
    // The pool comes back whole: two workers registered, the kills counted.
    let refs: Vec<&Gearmand> = pool.gearmands.iter().collect();
    li3g_tests::wait_for_workers(&refs, "Misbehave::sleep", 2);
    wait_until("the kills are counted", WAIT, || {
        let (_, text) = http(port, "GET", "/metrics", &[], "");
        text.lines().any(|l| {
            l.starts_with("li3g_child_restarts_total{kind=\"worker\",reason=\"killed\"}") && !l.ends_with(" 0")
        })
    });
}

#[test]
fn a_dashboard_action_waits_at_most_1_5_s_for_redis_and_one_runs_at_a_time() {
    let redis = Redis::start();
    let monitor = InProcess::start(&format!("[default]\nredis = \"{}\"\n", redis.url()));
    let config = li3g_host::config::load(None, "default", None).unwrap();
    let mut store = li3g_host::scheduler::Schedule::open(&redis.url(), &config.scheduler).unwrap();
    assert!(store.bury("j1", "{}", "boom", false).unwrap());
    let (status, page) = http(monitor.port, "GET", "/dead", &[], "");
    assert_eq!(status, 200, "{page}");
    let (action, csrf) = form_of(&page, "/dead/j1/retry");
    let body = format!("csrf={csrf}");

    // Redis stopped: the kernel accepts, nothing answers. Four POSTs at once: one waits for
    // Redis (at most its 1.5 s), the others are told at once that an action is in progress;
    // no handler is Redis's for its 10 s read timeout.
    let stopped = Stopped::new(redis.pid());
    let port = monitor.port;
    let posts: Vec<_> = (0..4)
        .map(|_| {
            let (action, body) = (action.clone(), body.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let form = [("Content-Type", "application/x-www-form-urlencoded")];
                let answer = http(port, "POST", &action, &form, &body);
                (answer, started.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = posts.into_iter().map(|p| p.join().unwrap()).collect();
    for ((status, _), took) in &answers {
        assert_eq!(*status, 503, "{answers:?}");
        assert!(*took < Duration::from_secs(3), "{answers:?}");
    }
    let said = |what: &str| answers.iter().filter(|((_, text), _)| text.contains(what)).count();
    assert!(said("Redis did not answer within 1.5s") >= 1, "{answers:?}");
    assert_eq!(said("Redis did not answer") + said("an action is in progress"), 4, "{answers:?}");
    // Meanwhile the pages still answer.
    assert_eq!(http(port, "GET", "/", &[], "").0, 200);

    // Redis back: the retry goes through (the job is unreadable, so it is not requeued, but
    // Redis answered).
    drop(stopped);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, text) = http(port, "POST", &action, &form, &body);
    assert_ne!(status, 503, "{text}");
}
