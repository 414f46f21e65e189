//! The tests' harness, shared by every crate's integration tests: a real
//! `redis-server` and a real Kafka-protocol broker (tansu) on free loopback
//! ports, `ingest run` as a real process, the read API in-process, and the
//! hot-state [`fixture`]. Every process is killed when its handle drops.
#![allow(missing_debug_implementations)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod fixture;

/// The read API's options, for tests of other crates that serve it beside them.
pub use leaderboard::api::server::ServeOptions;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 30 s");
}

/// A binary of this workspace, built beside the test that runs
/// (`target/<profile>/<name>`): `cargo test --workspace` builds every one.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --bin {name}` first)",
        binary.display()
    );
    binary
}

fn find_binary(name: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return path.into();
    }
    let home_bin = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"))
        .join("bin")
        .join(name);
    if home_bin.exists() {
        return home_bin;
    }
    PathBuf::from(name)
}

/// A throwaway Redis that keeps nothing on disk: one `redis-server`, or a
/// Redis Cluster of plain `redis-server --cluster-enabled yes` nodes joined by
/// `redis-cli --cluster create`. [`Redis::start`] gives a cluster of three
/// masters when `TEST_REDIS=cluster` (how `.ci/run` runs the pipeline,
/// read-API and gateway tests a second time), one server otherwise.
pub struct Redis {
    nodes: Vec<(Child, u16)>,
    /// The first node's port.
    pub port: u16,
    /// Masters and replicas per master, for a cluster.
    cluster: Option<(usize, usize)>,
    dir: TempDir,
}

/// Whether `TEST_REDIS=cluster` asks for a Redis Cluster.
pub fn cluster_requested() -> bool {
    std::env::var("TEST_REDIS").is_ok_and(|v| v == "cluster")
}

impl Redis {
    /// One server, or three masters when `TEST_REDIS=cluster`.
    pub fn start() -> Redis {
        if cluster_requested() {
            Redis::start_cluster(3, 0)
        } else {
            Redis::start_with(&[])
        }
    }

    /// One server started with extra settings (`--requirepass`, …).
    pub fn start_with(settings: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Redis::spawn(port, dir.path(), settings);
        Redis {
            nodes: vec![(child, port)],
            port,
            cluster: None,
            dir,
        }
    }

    /// A cluster of `masters` masters with `replicas` replicas each, on
    /// loopback, once every node reports `cluster_state:ok`.
    pub fn start_cluster(masters: usize, replicas: usize) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..masters * (1 + replicas)).map(|_| free_port()).collect();
        let mut redis = Redis {
            nodes: Vec::new(),
            port: ports[0],
            cluster: Some((masters, replicas)),
            dir,
        };
        redis.form_cluster(&ports);
        redis
    }

    /// `bus` is the node's cluster bus port: by default Redis takes the
    /// client port plus 10,000, which fails above 55,535 (a third of the
    /// ports a free-port lookup gives here) and may be taken by anything.
    fn cluster_settings(port: u16, bus: u16) -> Vec<String> {
        vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-port".into(),
            bus.to_string(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--cluster-node-timeout".into(),
            "1000".into(),
            // A replica syncs at once (not after the default 5 s), and may
            // always take over: a test kills masters seconds after start.
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--cluster-replica-validity-factor".into(),
            "0".into(),
        ]
    }

    fn form_cluster(&mut self, ports: &[u16]) {
        let (_, replicas) = self.cluster.expect("a cluster");
        for &port in ports {
            let _ = std::fs::remove_file(self.dir.path().join(format!("nodes-{port}.conf")));
            let settings = Redis::cluster_settings(port, free_port());
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            let child = Redis::spawn(port, self.dir.path(), &settings);
            self.nodes.push((child, port));
        }
        let status = Command::new(find_binary("redis-cli", "REDIS_CLI_BIN"))
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs (scripts/test installs it)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in ports {
            loop {
                if Redis::node_info(port, "CLUSTER", "INFO").contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster is not ok within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Every replica in sync with its master.
        for &port in ports {
            loop {
                let replication = Redis::node_info(port, "INFO", "replication");
                if replication.contains("role:master")
                    || replication.contains("master_link_status:up")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a replica is not in sync within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// A direct connection to one node; `None` when it does not answer.
    fn node_connection(port: u16) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .ok()
    }

    /// A command's text answer from one node (empty when it does not answer).
    fn node_info(port: u16, command: &str, argument: &str) -> String {
        let Some(mut connection) = Redis::node_connection(port) else {
            return String::new();
        };
        redis::cmd(command)
            .arg(argument)
            .query::<String>(&mut connection)
            .unwrap_or_default()
    }

    fn spawn(port: u16, dir: &Path, settings: &[&str]) -> Child {
        let mut child = Command::new(find_binary("redis-server", "REDIS_SERVER_BIN"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        wait_for_port(port, "redis-server", &mut child);
        child
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The ports of the cluster's masters (the one server's port otherwise).
    pub fn master_ports(&self) -> Vec<u16> {
        if self.cluster.is_none() {
            return vec![self.port];
        }
        self.nodes
            .iter()
            .map(|(_, port)| *port)
            .filter(|port| Redis::node_info(*port, "INFO", "replication").contains("role:master"))
            .collect()
    }

    /// The port of the master that serves `key`'s slot: the one node that
    /// answers a direct `EXISTS` rather than `MOVED` (the one server's port
    /// without a cluster).
    pub fn master_of(&self, key: &str) -> u16 {
        if self.cluster.is_none() {
            return self.port;
        }
        self.master_ports()
            .into_iter()
            .find(|port| {
                Redis::node_connection(*port).is_some_and(|mut connection| {
                    redis::cmd("EXISTS")
                        .arg(key)
                        .query::<u64>(&mut connection)
                        .is_ok()
                })
            })
            .expect("a master serves every slot")
    }

    /// How many times Redis has run `command` (from scripts too), summed
    /// over the masters: `INFO commandstats`' `calls`.
    pub fn calls_of(&self, command: &str) -> u64 {
        let field = format!("cmdstat_{}:calls=", command.to_lowercase());
        self.master_ports()
            .into_iter()
            .map(|port| {
                Redis::node_info(port, "INFO", "commandstats")
                    .lines()
                    .find_map(|line| line.strip_prefix(&field))
                    .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Kills every node (an outage: every key is lost).
    pub fn kill(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills one node with SIGKILL (a crash), by port.
    pub fn kill_node(&mut self, port: u16) {
        for (child, node) in &mut self.nodes {
            if *node == port {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts empty again on the same ports (a cluster is formed anew).
    pub fn restart(&mut self) {
        self.kill();
        let ports: Vec<u16> = self.nodes.drain(..).map(|(_, port)| port).collect();
        if self.cluster.is_some() {
            self.form_cluster(&ports);
        } else {
            let child = Redis::spawn(ports[0], self.dir.path(), &[]);
            self.nodes.push((child, ports[0]));
        }
    }

    /// `REDIS_URL`: `redis://…`, or `redis+cluster://…` naming every node.
    pub fn url(&self) -> String {
        match self.cluster {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => {
                let nodes: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|(_, port)| format!("127.0.0.1:{port}"))
                    .collect();
                format!("redis+cluster://{}", nodes.join(","))
            }
        }
    }

    /// A blocking connection for the tests' own checks (cluster-aware).
    pub fn connection(&self) -> TestConnection {
        // The seeds as the services read them from the URL.
        match leaderboard_hot::Topology::parse(&self.url()).unwrap() {
            leaderboard_hot::Topology::Single(url) => {
                TestConnection::Single(redis::Client::open(url).unwrap().get_connection().unwrap())
            }
            leaderboard_hot::Topology::Cluster(seeds) => TestConnection::Cluster(Box::new(
                redis::cluster::ClusterClient::new(seeds)
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )),
        }
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`; on a cluster the sharded
    /// ones, `PUBSUB SHARDNUMSUB`, summed over every node).
    pub fn subscribers(&self, channel: &str) -> u64 {
        let which = if self.is_cluster() {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        };
        self.nodes
            .iter()
            .map(|(_, port)| {
                let Some(mut connection) = Redis::node_connection(*port) else {
                    return 0;
                };
                redis::cmd("PUBSUB")
                    .arg(which)
                    .arg(channel)
                    .query::<(String, u64)>(&mut connection)
                    .map_or(0, |(_, count)| count)
            })
            .sum()
    }

    /// An async connection, as the services make it.
    pub async fn connect(&self) -> leaderboard_hot::HotConnection {
        leaderboard_hot::connect(&self.url()).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking connection to one server or to a cluster.
pub enum TestConnection {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for TestConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            TestConnection::Single(c) => c.req_packed_command(cmd),
            TestConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            TestConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            TestConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            TestConnection::Single(c) => c.req_command(cmd),
            TestConnection::Cluster(c) => c.req_command(cmd),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            TestConnection::Single(c) => c.supports_pipelining(),
            TestConnection::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            TestConnection::Single(c) => c.get_db(),
            TestConnection::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            TestConnection::Single(c) => c.check_connection(),
            TestConnection::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            TestConnection::Single(c) => c.is_open(),
            TestConnection::Cluster(c) => c.is_open(),
        }
    }
}

/// A tansu broker with in-memory storage.
pub struct Broker {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let mut child = Command::new(find_binary("tansu", "TANSU_BIN"))
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu runs (scripts/test installs it)");
        wait_for_port(port, "tansu", &mut child);
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ingest run` as a child process, with its store in `store_dir`.
pub struct Ingest {
    child: Child,
    pub admin_port: u16,
}

impl Ingest {
    pub fn start(broker: &Broker, redis: &Redis, store_dir: &Path, extra: &[&str]) -> Ingest {
        Ingest::start_at(&broker.brokers(), &redis.url(), store_dir, extra)
    }

    /// `ingest run` against any broker and Redis address (a wrong password,
    /// a broker that is not there, …).
    pub fn start_at(brokers: &str, redis_url: &str, store_dir: &Path, extra: &[&str]) -> Ingest {
        let admin_port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store_dir.join("ingest.log"))
            .unwrap();
        let mut child = Command::new(workspace_binary("ingest"))
            .arg("run")
            .args(extra)
            .env("KAFKA_BROKERS", brokers)
            .env("REDIS_URL", redis_url)
            .env(
                "STORE",
                format!("file://{}", store_dir.join("store").display()),
            )
            .env("HTTP_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("KAFKA_GROUP", "ingest-test")
            .env("RUST_LOG", "info")
            .env_remove("RULES")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(admin_port, "ingest run", &mut child);
        Ingest { child, admin_port }
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ingest did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics")
    }

    /// `/readyz`: (status, body).
    pub fn readiness(&self) -> (u16, String) {
        let (status, _, body) = http(self.admin_port, "/readyz");
        (status, body)
    }

    /// Waits up to `seconds` for the process to exit by itself.
    pub fn wait_exit(&mut self, seconds: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ingest did not exit within {seconds} s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP GET on loopback; returns the body.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

/// The shared Cricsheet matches.
pub fn ipl_dir() -> PathBuf {
    match std::env::var("CRICSHEET_DIR") {
        Ok(dir) if PathBuf::from(&dir).join("ipl").is_dir() => PathBuf::from(dir).join("ipl"),
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cricsheet/ipl")
        }
    }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
pub fn wait_until(seconds: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {seconds} s waiting for {what}");
}

/// One HTTP/1.1 GET on loopback: (status, headers in lower case, body).
pub fn http(port: u16, path: &str) -> (u16, Vec<(String, String)>, String) {
    request(port, "GET", path)
}

/// One HTTP/1.1 request without a body: (status, headers in lower case, body).
pub fn request(port: u16, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    request_with(port, method, path, &[])
}

/// One HTTP/1.1 request without a body, with extra headers.
pub fn request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("")[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// `leaderboard serve`'s application on a free port, in this process:
/// (port, its cache, the token that stops it). Returns once its notice
/// follower has subscribed (Redis counts one more pattern subscription).
pub async fn serve_api(
    redis_url: &str,
    store: Option<&Path>,
    options: leaderboard::api::server::ServeOptions,
) -> (
    u16,
    leaderboard::api::cache::NodeCache,
    tokio_util::sync::CancellationToken,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let store = match store {
        Some(dir) => Some(
            leaderboard_store::open(&format!("file://{}", dir.display()))
                .await
                .unwrap(),
        ),
        None => None,
    };
    let mut cache = leaderboard::api::cache::NodeCache::new(
        leaderboard_hot::connect(redis_url).await.unwrap(),
        Duration::from_secs(60),
    )
    .with_preload_from(options.preload_teams_from);
    if let Some(store) = &store {
        cache = cache.with_store(store.clone());
    }
    // On one server the follower holds one pattern subscription; on a
    // cluster it subscribes each contest's sharded channel as it caches it.
    let cluster = redis_url.starts_with(leaderboard_hot::connection::CLUSTER_SCHEME);
    let subscribed_before = if cluster {
        0
    } else {
        pattern_subscriptions(redis_url).await
    };
    let follower = tokio::spawn(leaderboard::api::cache::follow_notices(
        cache.clone(),
        redis_url.to_owned(),
        shutdown.clone(),
    ));
    let app = leaderboard::api::server::app(cache.clone(), redis_url, store, &options).unwrap();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        leaderboard::api::server::serve_http1(listener, app, stop).await;
        let _ = follower.await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster && pattern_subscriptions(redis_url).await <= subscribed_before {
        assert!(
            Instant::now() < deadline,
            "the API's notice follower did not subscribe within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (port, cache, shutdown)
}

/// Clients holding a pattern subscription (`CLIENT LIST`, `psub` > 0):
/// unlike `PUBSUB NUMPAT`, which counts distinct patterns, this sees a
/// second API node subscribing the same pattern.
pub async fn pattern_subscriptions(redis_url: &str) -> u64 {
    let mut connection = leaderboard_hot::connect(redis_url).await.unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    clients
        .lines()
        .filter(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("psub="))
                .and_then(|count| count.parse::<u64>().ok())
                .is_some_and(|count| count > 0)
        })
        .count() as u64
}

/// `count` connections to `port` that send the start of a request and never
/// finish its headers (a slowloris client).
pub fn slow_clients(port: u16, count: usize) -> Vec<TcpStream> {
    use std::io::Write;
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Never: ")
                .unwrap();
            stream
        })
        .collect()
}

/// How many of `streams` the server has closed (a read returns end of
/// stream or an error rather than blocking).
pub fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    use std::io::Read;
    streams
        .iter_mut()
        .filter(|stream| {
            let mut stream: &TcpStream = stream;
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0_u8; 256];
            let closed = match stream.read(&mut byte) {
                Ok(_) => true, // end of stream (0), or an error response before it
                Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
            };
            stream.set_nonblocking(false).unwrap();
            closed
        })
        .count()
}

/// A sample of the Prometheus text at `port`'s `/metrics`: the value after
/// `series` (a metric name with its labels, then a space), 0 while absent.
pub fn metric(port: u16, series: &str) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A workspace binary's long-running command as a child process, listening
/// on a free loopback port given as `HTTP_ADDR` (`leaderboard serve`,
/// `ws-gateway serve`, `jobs schedule`, …); killed when dropped. Its log
/// goes to `<log_dir>/<name>.log`.
pub struct Service {
    child: Child,
    pub port: u16,
}

impl Service {
    pub fn start(name: &str, args: &[&str], env: &[(&str, String)], log_dir: &Path) -> Service {
        let port = free_port();
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(workspace_binary(name))
            .args(args)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port, name, &mut child);
        Service { child, port }
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Free ports above 55,535, where a node's default bus port (its port
    /// plus 10,000) does not exist.
    fn high_free_ports(count: usize) -> Vec<u16> {
        (56_000..65_000)
            .filter(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
            .take(count)
            .collect()
    }

    #[test]
    fn a_cluster_forms_on_ports_above_55535() {
        let ports = high_free_ports(3);
        let mut redis = Redis {
            nodes: Vec::new(),
            port: ports[0],
            cluster: Some((3, 0)),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.form_cluster(&ports);
        assert_eq!(redis.master_ports().len(), 3);
    }
}
