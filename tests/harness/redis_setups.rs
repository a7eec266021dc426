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
/// after 1 s, failover timeout 2 s), all on loopback.
pub struct SentinelSetup {
    /// The master (at start).
    pub master: Option<Redis>,
    /// Its replica.
    pub replica: Redis,
    /// The sentinels' ports.
    pub sentinel_ports: Vec<u16>,
    _sentinels: Vec<ChildGuard>,
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
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let persistence = ["--save", "", "--appendonly", "no"];
        let master =
            on_a_free_port("the master", |port| Redis::try_start_with(port, dirs[0].path(), &persistence, None));
        let replicaof = master.port.to_string();
        let replica = on_a_free_port("the replica", |port| {
            Redis::try_start_with(
                port,
                dirs[1].path(),
                &["--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", &replicaof],
                None,
            )
        });
        wait_until("the replica is in sync", Duration::from_secs(30), || {
            redis_cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let conf_dir = tempfile::tempdir().unwrap();
        let mut sentinels = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let (port, guard) =
                on_a_free_port("a sentinel", |port| start_sentinel(conf_dir.path(), i, port, master.port));
            ports.push(port);
            sentinels.push(guard);
        }
        let setup = SentinelSetup {
            master: Some(master),
            replica,
            sentinel_ports: ports,
            _sentinels: sentinels,
            _dirs: dirs.into_iter().chain([conf_dir]).collect(),
        };
        wait_until("every sentinel sees the replica and two other sentinels", Duration::from_secs(30), || {
            setup.sentinel_ports.iter().all(|port| {
                let info = redis_cli(*port, &["SENTINEL", "MASTER", MASTER_NAME]);
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
        self._sentinels.iter().map(ChildGuard::id).collect()
    }

    /// `redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/mymaster/0`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}/0", addrs.join(","))
    }

    /// The port the sentinels name as master now.
    pub fn master_port(&self) -> Option<u16> {
        self.master_port_by(0)
    }

    /// The port sentinel number `i` names as master now.
    pub fn master_port_by(&self, i: usize) -> Option<u16> {
        let mut conn = connect(self.sentinel_ports[i]);
        let addr: Option<(String, u16)> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME).query(&mut conn).ok()?;
        addr.map(|(_, port)| port)
    }
}

fn start_sentinel(dir: &Path, i: usize, port: u16, master: u16) -> Result<(u16, ChildGuard), String> {
    let conf = dir.join(format!("sentinel-{i}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 2000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let process =
        ChildGuard::spawn(Command::new("redis-sentinel").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()));
    serving(&process, port, b"INFO server\r\n", |answer| {
        answer.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
    })?;
    Ok((port, process))
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
