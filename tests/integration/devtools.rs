//! Headless Chromium driven over the Chrome DevTools Protocol, so a test can click what a user
//! clicks: the browser is started on a page with `--remote-debugging-port=0`, its port is read from
//! `DevToolsActivePort` in its profile, and one WebSocket (tungstenite) to the browser target
//! attaches to the page and evaluates JavaScript in it. Chromium and its helpers run in their own
//! process group, killed by that group's id when the [`Browser`] drops.

use li3g_tests::{wait_until_ok, POLL};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// A headless Chromium showing one page, and a DevTools session attached to that page.
pub(crate) struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `url` and attaches to its page; waits at most `timeout` for each step.
    pub(crate) fn open(url: &str, timeout: Duration) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args(crate::monitor::HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium runs (apt install chromium)");
        // Built at once so that a failure below still kills the browser.
        let mut browser = Browser::connect(child, profile, timeout);
        let targets = browser.command(None, "Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("a page target in {targets}"))["targetId"]
            .clone();
        let attached = browser.command(None, "Target.attachToTarget", json!({ "targetId": page, "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn connect(child: Child, profile: tempfile::TempDir, timeout: Duration) -> Browser {
        let file = profile.path().join("DevToolsActivePort");
        // Chromium writes the file once it listens: the port, then the browser target's path.
        let (port, path) = wait_until_ok("Chromium writes DevToolsActivePort", timeout, POLL, || {
            let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            let mut lines = text.lines();
            match (lines.next().and_then(|p| p.parse::<u16>().ok()), lines.next()) {
                (Some(port), Some(path)) => Ok((port, path.to_string())),
                _ => Err(format!("not complete yet: {text:?}")),
            }
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream.set_read_timeout(Some(timeout)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream).expect("DevTools handshake");
        Browser { child, ws, session: String::new(), next_id: 0, _profile: profile }
    }

    /// Sends `method` (to the page's session when `session` is set) and returns its `result`;
    /// panics on a protocol error.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_command(session, method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn try_command(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(message.to_string())).map_err(|e| e.to_string())?;
        // Events arrive in between; the answer is the message with our id.
        loop {
            let text = match self.ws.read().map_err(|e| e.to_string())? {
                Message::Text(text) => text,
                _ => continue,
            };
            let answer: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if answer["id"] == id {
                return match answer.get("error") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(answer["result"].clone()),
                };
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value; `Err` when it threw or the page
    /// was between documents (a navigation in progress).
    pub(crate) fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let session = self.session.clone();
        let result = self.try_command(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(result["result"]["value"].clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and the renderers it started.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
