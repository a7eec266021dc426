//! The stateful example's own tests, with the test kit: settings as in the configuration, the
//! state built by the plugin's constructor and kept across calls as a worker keeps it, against
//! a real redis-server.

use li3g_plugin_api::testing::Harness;
use li3g_plugin_api::TaskErrorKind;
use serde_json::json;
use std::process::{Child, Command, Stdio};

/// A redis-server of this test's own on a free loopback port, killed by PID when dropped.
struct Redis {
    port: u16,
    process: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (tests/setup installs it)");
        let redis = Redis { port, process };
        // Serving once a PING is answered; each try is bounded by the connect timeout.
        let client = redis::Client::open(redis.url()).unwrap();
        let served = (0..100).any(|_| {
            let up = client
                .get_connection_with_timeout(std::time::Duration::from_millis(100))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
                .is_ok();
            if !up {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            up
        });
        assert!(served, "redis-server on port {port} did not serve");
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn incr_counts_on_one_connection_kept_across_calls() {
    let redis = Redis::start();
    let mut counter =
        Harness::new(redis_counter::LI3G_PLUGIN).settings(&format!("url = \"{}\"", redis.url())).id("job-1");
    assert_eq!(counter.call("Counter::incr", json!(["k"])).json(), json!(1));
    assert_eq!(counter.call("Counter::incr", json!(["k"])).json(), json!(2));
    let first = counter.call("Counter::whoami", json!([])).json();
    let second = counter.call("Counter::whoami", json!([])).json();
    assert_eq!(first["id"], second["id"], "one connection for every call, as in a worker");
    assert_eq!(first["job"], "job-1");
    // A fresh state is a fresh connection.
    counter.reset_state();
    assert_ne!(counter.call("Counter::whoami", json!([])).json()["id"], first["id"]);
}

#[test]
fn bad_settings_fail_the_tasks_that_take_the_state_and_name_the_key() {
    let mut counter = Harness::new(redis_counter::LI3G_PLUGIN).settings("url = 5");
    let call = counter.call("Counter::incr", json!(["k"]));
    assert_eq!(call.failure_kind(), Some(TaskErrorKind::BadArguments));
    let message = call.failure().expect("it failed");
    assert!(message.contains("url: invalid type: integer `5`, expected a string"), "{message}");
    // A task that takes no state still runs.
    assert_eq!(counter.call("Counter::pid", json!([])).json(), json!(std::process::id()));
}
