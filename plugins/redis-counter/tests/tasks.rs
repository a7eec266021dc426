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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(&[], None)
    }

    /// With `args` added, waiting until it answers (with `password`) on its plaintext port.
    fn start_with(args: &[&str], password: Option<&str>) -> Redis {
        let port = free_port();
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (tests/setup installs it)");
        let redis = Redis { port, process };
        // Serving once a PING is answered; each try is bounded by the connect timeout.
        let url = match password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{port}/0"),
            None => redis.url(),
        };
        let client = redis::Client::open(url).unwrap();
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

/// An ACL user in the URL (`redis://user:password@...`) and TLS (`rediss://` with `tls_ca`, a
/// CA the test makes with the openssl CLI): the state connects and counts; a CA that did not
/// sign the server's certificate fails the task, naming the certificate.
#[test]
fn an_acl_user_and_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    sh("for ca in ca wrong; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
          -keyout $ca.key -out $ca.pem -subj /CN=$ca 2>/dev/null; done
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
          -subj /CN=localhost 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf \
          -out server.pem 2>/dev/null");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls_port = free_port().to_string();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let redis = Redis::start_with(
        &[
            "--requirepass",
            "admin",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
        Some("admin"),
    );
    let mut admin =
        redis::Client::open(format!("redis://:admin@127.0.0.1:{}/0", redis.port)).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "counter", "on", ">pw", "~counted:*", "+incr", "+client|setname", "+client|id", "+select"])
        .query(&mut admin)
        .unwrap();
    let settings = format!("url = \"redis://counter:pw@127.0.0.1:{}/0\"", redis.port);
    let mut counter = Harness::new(redis_counter::LI3G_PLUGIN).settings(&settings);
    assert_eq!(counter.call("Counter::incr", json!(["counted:a"])).json(), json!(1));
    let settings = format!("url = \"rediss://counter:pw@127.0.0.1:{tls_port}/0\"\ntls_ca = \"{ca}\"");
    let mut counter = Harness::new(redis_counter::LI3G_PLUGIN).settings(&settings);
    assert_eq!(counter.call("Counter::incr", json!(["counted:a"])).json(), json!(2), "over TLS, as the ACL user");
    let settings = format!("url = \"rediss://counter:pw@127.0.0.1:{tls_port}/0\"\ntls_ca = \"{}\"", file("wrong.pem"));
    let mut counter = Harness::new(redis_counter::LI3G_PLUGIN).settings(&settings);
    let call = counter.call("Counter::incr", json!(["counted:a"]));
    let message = call.failure().expect("it failed");
    assert!(message.contains("certificate"), "{message}");
}
