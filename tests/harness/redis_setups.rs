//! Redis as teams run it, on loopback ports, for the tests: test certificates for TLS (made
//! with the `openssl` CLI), a 3-master Redis Cluster, and a master with a replica watched by
//! three `redis-sentinel` processes. Every process is a [`ChildGuard`] (killed by PID when
//! dropped); waits are bounded.

use super::{free_port, on_a_free_port, serving, wait_until, ChildGuard, Redis};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A CA and a server certificate it signed for `127.0.0.1` and `localhost`, plus a second CA
/// that signed nothing (a wrong CA), as PEM files in a temporary directory.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes them (`openssl req`/`x509`, about 100 ms).
    ///
    /// # Panics
    /// When openssl fails.
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        let sh = |script: &str| {
            let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir.path()).output().expect("sh");
            assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh("for ca in ca wrong-ca; do
              openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
                -keyout $ca.key -out $ca.pem -subj \"/CN=li3g test $ca\" 2>/dev/null
            done
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
              -extfile ext.cnf -out server.pem 2>/dev/null");
        TestCerts { dir }
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.pem")
    }

    /// The CA's, the server certificate's and its key's paths.
    fn files(&self) -> [String; 3] {
        ["ca.pem", "server.pem", "server.key"].map(|name| self.dir.path().join(name).display().to_string())
    }

    /// redis-server's arguments for TLS on `tls_port` (no client certificates asked), its
    /// plaintext port staying open for the harness's checks.
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

impl Default for TestCerts {
    fn default() -> TestCerts {
        TestCerts::new()
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback, created with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The nodes, each serving its own slots.
    pub nodes: Vec<Redis>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts three nodes and joins them; returns once every node says `cluster_state:ok`.
    ///
    /// # Panics
    /// When a node does not start or the cluster does not form within 30 s.
    pub fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a directory for a cluster node");
            let path = dir.path().to_path_buf();
            let node = on_a_free_port("a cluster node", |port| {
                // The cluster bus is port + 10000: that one must be free too.
                if port > 55535 || std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
                    return Err(format!("bus port {} taken", port + 10000));
                }
                Redis::try_start_with(
                    port,
                    &path,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    None,
                )
            });
            nodes.push(node);
            dirs.push(dir);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes, _dirs: dirs };
        wait_until("the cluster is ok on every node", Duration::from_secs(30), || {
            cluster.nodes.iter().all(|n| cluster.cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// `redis-cli -p PORT ARGS...`'s output (no cluster redirection).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        redis_cli(port, args)
    }

    /// The port of the node serving `slot` now.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let mut conn = connect(self.nodes[0].port);
        let slots: Vec<(u16, u16, Vec<redis::Value>)> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        for (start, end, master) in slots {
            if (start..=end).contains(&slot) {
                if let Some(redis::Value::Int(port)) = master.get(1) {
                    return u16::try_from(*port).unwrap();
                }
            }
        }
        panic!("no node serves slot {slot}")
    }

    /// Moves `slot` (and its keys) from the node that serves it to the node on `to`, the way
    /// `redis-cli --cluster reshard` does: SETSLOT IMPORTING/MIGRATING, MIGRATE the keys, then
    /// SETSLOT NODE on every master.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string();
        let (from_id, to_id) = (id(from), id(to));
        let slot_s = slot.to_string();
        redis_cli(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]);
        redis_cli(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]);
        let mut conn = connect(from);
        loop {
            let keys: Vec<String> =
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(100).query(&mut conn).unwrap();
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut conn)
                .unwrap();
        }
        for node in &self.nodes {
            redis_cli(node.port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        }
        wait_until("every node agrees on the slot's new owner", Duration::from_secs(10), || self.owner_of(slot) == to);
    }
}

/// A master, a replica of it, and three sentinels watching it as `mymaster` (quorum 2, down
/// after 1 s, failover timeout 2 s), all on loopback. With TLS ([`SentinelSetup::start_tls`])
/// the master and the replica also listen on a TLS port and replicate through it, and the
/// sentinels listen on TLS only (`port 0`) and reach the master, the replica and one another
/// over TLS (`tls-replication yes`).
pub struct SentinelSetup {
    /// The master (at start), on its plaintext port (for the harness's checks).
    pub master: Option<Redis>,
    /// Its replica, on its plaintext port.
    pub replica: Redis,
    /// The master's and the replica's TLS ports (with TLS): what the sentinels name.
    pub tls_ports: Option<(u16, u16)>,
    /// The sentinels' ports (their TLS ports, with TLS).
    pub sentinel_ports: Vec<u16>,
    /// The CA the sentinels' certificates chain to (with TLS).
    ca: Option<String>,
    conf_dir: PathBuf,
    sentinels: Vec<ChildGuard>,
    /// Servers started for [`SentinelSetup::add_stale_sentinel`].
    others: Vec<Redis>,
    _dirs: Vec<tempfile::TempDir>,
}

/// The master's name the sentinels watch.
pub const MASTER_NAME: &str = "mymaster";

impl SentinelSetup {
    /// Starts them; returns once every sentinel knows the replica and the other sentinels.
    ///
    /// # Panics
    /// When one does not start, or they do not see each other within 30 s.
    pub fn start() -> SentinelSetup {
        SentinelSetup::start_with(None)
    }

    /// The same over TLS with `certs`: see [`SentinelSetup`].
    ///
    /// # Panics
    /// As [`SentinelSetup::start`].
    pub fn start_tls(certs: &TestCerts) -> SentinelSetup {
        SentinelSetup::start_with(Some(certs))
    }

    fn start_with(certs: Option<&TestCerts>) -> SentinelSetup {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let tls_ports = certs.map(|_| (free_port(), free_port()));
        let tls_args = |port: Option<u16>| match (certs, port) {
            (Some(certs), Some(port)) => {
                let mut args = certs.redis_args(port);
                args.extend(["--tls-replication".into(), "yes".into()]);
                args
            }
            _ => Vec::new(),
        };
        let start = |dir: &Path, tls: Option<u16>, replicaof: Option<u16>| {
            let mut args: Vec<String> = ["--save", "", "--appendonly", "no"].map(String::from).to_vec();
            args.extend(tls_args(tls));
            if let Some(port) = replicaof {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            on_a_free_port("a redis-server", |port| Redis::try_start_with(port, dir, &args, None))
        };
        let master = start(dirs[0].path(), tls_ports.map(|p| p.0), None);
        let master_port = tls_ports.map_or(master.port, |p| p.0);
        let replica = start(dirs[1].path(), tls_ports.map(|p| p.1), Some(master_port));
        wait_until("the replica is in sync", Duration::from_secs(30), || {
            redis_cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let conf_dir = tempfile::tempdir().unwrap();
        let mut setup = SentinelSetup {
            master: Some(master),
            replica,
            tls_ports,
            sentinel_ports: Vec::new(),
            ca: certs.map(|c| c.files()[0].clone()),
            conf_dir: conf_dir.path().to_path_buf(),
            sentinels: Vec::new(),
            others: Vec::new(),
            _dirs: dirs.into_iter().chain([conf_dir]).collect(),
        };
        for i in 0..3 {
            let (port, guard) = on_a_free_port("a sentinel", |port| {
                start_sentinel(&setup.conf_dir, i, port, master_port, certs.map(|c| (c, true)))
            });
            setup.sentinel_ports.push(port);
            setup.sentinels.push(guard);
        }
        wait_until("every sentinel sees the replica and two other sentinels", Duration::from_secs(30), || {
            setup.sentinel_ports.iter().all(|port| {
                let info = setup.cli(*port, &["SENTINEL", "MASTER", MASTER_NAME]);
                let field = |name: &str| {
                    let mut lines = info.lines();
                    lines.find(|l| l.trim() == name).and_then(|_| lines.next()).map(|v| v.trim().to_string())
                };
                field("num-slaves").as_deref() == Some("1") && field("num-other-sentinels").as_deref() == Some("2")
            })
        });
        setup
    }

    /// The sentinels' PIDs, in the order of [`SentinelSetup::url`].
    pub fn sentinel_pids(&self) -> Vec<u32> {
        self.sentinels.iter().map(ChildGuard::id).collect()
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster/0`
    /// (`rediss+sentinel://` with TLS).
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let scheme = if self.ca.is_some() { "rediss+sentinel" } else { "redis+sentinel" };
        format!("{scheme}://{}/{MASTER_NAME}/0", addrs.join(","))
    }

    /// One more sentinel watching the same master (TLS to the master and the replica when the
    /// setup has it, `certs`), whose own port is plaintext: a sentinel without a `tls-port`.
    /// Its port, once it knows the master.
    ///
    /// # Panics
    /// When it does not start or learn the master within 30 s.
    pub fn add_plaintext_sentinel(&mut self, certs: Option<&TestCerts>) -> u16 {
        let master = self.tls_ports.map_or_else(|| self.master.as_ref().expect("the master").port, |p| p.0);
        let i = self.sentinels.len();
        let (port, guard) = on_a_free_port("a plaintext sentinel", |port| {
            start_sentinel(&self.conf_dir, i, port, master, certs.map(|c| (c, false)))
        });
        self.sentinels.push(guard);
        wait_until("the plaintext sentinel sees the replica", Duration::from_secs(30), || {
            redis_cli(port, &["SENTINEL", "MASTER", MASTER_NAME]).lines().any(|l| l.trim() == "num-slaves")
                && redis_cli(port, &["SENTINEL", "REPLICAS", MASTER_NAME]).contains("127.0.0.1")
        });
        port
    }

    /// A sentinel with a stale view (as one cut off from the others keeps after a failover):
    /// it watches, as `mymaster`, a server that is a replica (of a server none of the others
    /// watch, so no word of theirs reaches it). Its port, once it names that replica.
    ///
    /// # Panics
    /// When they do not start within 30 s.
    pub fn add_stale_sentinel(&mut self) -> u16 {
        let mut plain = |args: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            let redis = on_a_free_port("a redis-server", |port| Redis::try_start_with(port, dir.path(), args, None));
            self._dirs.push(dir);
            redis
        };
        let elsewhere = plain(&["--save", "", "--appendonly", "no"]);
        let of = elsewhere.port.to_string();
        let replica = plain(&["--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &of]);
        let i = self.sentinels.len();
        let (port, guard) =
            on_a_free_port("a stale sentinel", |port| start_sentinel(&self.conf_dir, i, port, replica.port, None));
        self.sentinels.push(guard);
        let named = replica.port.to_string();
        wait_until("the stale sentinel names the replica", Duration::from_secs(30), || {
            redis_cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]).contains(&named)
        });
        self.others.extend([elsewhere, replica]);
        port
    }

    /// `redis-cli -p PORT ARGS...` on a sentinel (or any server) of the setup: over TLS with
    /// its CA when the setup has TLS and `port` is a sentinel's.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        match &self.ca {
            Some(ca) if self.sentinel_ports.contains(&port) => redis_cli_tls(port, ca, args),
            _ => redis_cli(port, args),
        }
    }

    /// The port the sentinels name as master now.
    pub fn master_port(&self) -> Option<u16> {
        self.master_port_by(0)
    }

    /// The port sentinel number `i` names as master now.
    pub fn master_port_by(&self, i: usize) -> Option<u16> {
        let answer = self.cli(self.sentinel_ports[i], &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        answer.lines().nth(1)?.trim().parse().ok()
    }
}

/// Starts sentinel number `i` on `port`, watching the master on `master`; with `tls` =
/// `(certs, tls_port)`, it reaches the servers and the other sentinels over TLS, and listens on
/// TLS alone when `tls_port` (else in plaintext alone).
fn start_sentinel(
    dir: &Path,
    i: usize,
    port: u16,
    master: u16,
    tls: Option<(&TestCerts, bool)>,
) -> Result<(u16, ChildGuard), String> {
    let conf = dir.join(format!("sentinel-{i}.conf"));
    let listen = match tls {
        Some((certs, tls_port)) => {
            let [ca, cert, key] = certs.files();
            let ports = if tls_port { format!("port 0\ntls-port {port}") } else { format!("port {port}\ntls-port 0") };
            format!(
                "{ports}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
                 tls-auth-clients no\ntls-replication yes\n"
            )
        }
        None => format!("port {port}\n"),
    };
    std::fs::write(
        &conf,
        format!(
            "{listen}bind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let process =
        ChildGuard::spawn(Command::new("redis-sentinel").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()));
    let pid_of = |answer: &str| {
        answer.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
    };
    match tls {
        Some((certs, true)) => {
            let ca = certs.files()[0].clone();
            // `serving` speaks plaintext: ask over TLS with redis-cli, 10 s at most.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if !super::alive(process.id()) {
                    return Err(format!("the sentinel exited (port {port} taken?)"));
                }
                match pid_of(&redis_cli_tls(port, &ca, &["INFO", "server"])) {
                    Some(pid) if pid == process.id() => break,
                    Some(pid) => return Err(format!("port {port} is served by PID {pid}, not ours")),
                    None if std::time::Instant::now() >= deadline => {
                        return Err(format!("nothing served TLS on port {port} within 10 s"))
                    }
                    None => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        _ => serving(&process, port, b"INFO server\r\n", pid_of)?,
    }
    Ok((port, process))
}

/// `redis-cli --tls --cacert CA -p PORT ARGS...`'s standard output.
pub fn redis_cli_tls(port: u16, ca: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain connection to the Redis (or sentinel) on 127.0.0.1:`port`.
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection().unwrap()
}

/// `redis-cli -p PORT ARGS...`'s standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port that is free now, for a TLS port.
pub fn another_port() -> u16 {
    free_port()
}
