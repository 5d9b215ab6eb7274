//! Shared by the process-level tests: a minimal protocol client and node processes.
#![allow(dead_code)]

use ampstore_common::error::Error;
use ampstore_common::frame::{decode_body, read_frame, write_frame};
use ampstore_common::ids::RequestId;
use ampstore_common::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, Role};
use ampstore_server::config::LocalConfig;
use ampstore_store::Backend;
use ampstore_store::local::LocalStore;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;

/// A bare protocol client (the real client crate comes later): one connection, requests
/// one at a time or pipelined.
pub struct TestClient {
    stream: TcpStream,
    next_id: u64,
    scratch: Vec<u8>,
    body: Vec<u8>,
}

impl TestClient {
    pub async fn connect(addr: &str) -> std::io::Result<TestClient> {
        TestClient::connect_with_token(addr, None).await
    }

    /// Connects presenting `token` in the hello; a refused hello is an error holding the
    /// server's `Error`.
    pub async fn connect_with_token(addr: &str, token: Option<&str>) -> std::io::Result<TestClient> {
        TestClient::connect_as(addr, Role::Client, token).await
    }

    /// Connects as `role` (a test that stands in for a master, or an operator, sends the
    /// operations only that role may send), presenting `token`.
    pub async fn connect_as(addr: &str, role: Role, token: Option<&str>) -> std::io::Result<TestClient> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut scratch = Vec::new();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            role,
            client_name: "test".into(),
            auth_token: token.map(String::from),
        };
        write_frame(&mut stream, &hello, &mut scratch).await.map_err(std::io::Error::other)?;
        let mut body = Vec::new();
        if !read_frame(&mut stream, &mut body).await.map_err(std::io::Error::other)? {
            return Err(std::io::Error::other("closed before hello reply"));
        }
        let reply: HelloReply = decode_body(&body).map_err(std::io::Error::other)?;
        reply.result.map_err(std::io::Error::other)?;
        Ok(TestClient { stream, next_id: 1, scratch, body })
    }

    /// Sends one request and waits for its answer. `Err(Unavailable)` when the connection fails.
    pub async fn call(&mut self, op: Op) -> Result<Reply, Error> {
        let mut out = self.pipeline(vec![op]).await;
        out.pop().unwrap_or(Err(Error::unavailable("no response")))
    }

    /// Sends all requests, then reads all answers (which may come in any order).
    pub async fn pipeline(&mut self, ops: Vec<Op>) -> Vec<Result<Reply, Error>> {
        let n = ops.len();
        let first = self.next_id;
        self.scratch.clear();
        for op in ops {
            let req = Request { id: RequestId(self.next_id), deadline_ms: Some(20_000), op };
            self.next_id += 1;
            if ampstore_common::frame::encode_frame(&req, &mut self.scratch).is_err() {
                return vec![Err(Error::invalid("unencodable")); n];
            }
        }
        use tokio::io::AsyncWriteExt;
        if let Err(e) = self.stream.write_all(&self.scratch).await {
            return vec![Err(Error::unavailable(e.to_string())); n];
        }
        let mut got: HashMap<u64, Result<Reply, Error>> = HashMap::new();
        while got.len() < n {
            match read_frame(&mut self.stream, &mut self.body).await {
                Ok(true) => match decode_body::<Response>(&self.body) {
                    Ok(r) => {
                        got.insert(r.id.0, r.result);
                    }
                    Err(e) => return vec![Err(Error::unavailable(e.to_string())); n],
                },
                Ok(false) => break,
                Err(e) => return vec![Err(Error::unavailable(e.to_string())); n],
            }
        }
        (first..first + n as u64)
            .map(|id| got.remove(&id).unwrap_or(Err(Error::unavailable("connection closed"))))
            .collect()
    }
}

/// A node process of the `ampstore` binary.
pub struct NodeProc {
    pub child: Child,
    pub rpc: String,
    pub admin: String,
    pub gossip: String,
    pub node_id: String,
    pub data_dir: PathBuf,
    pub store_dir: PathBuf,
}

pub const LIVENESS_MS: u64 = 2000;
pub const HEARTBEAT_MS: u64 = 300;
pub const MARGIN_MS: u64 = 400;

impl NodeProc {
    /// Starts a node with its own data dir and a shared embedded store; waits until ready.
    pub fn start(data_dir: &Path, store_dir: &Path, extra: &[&str]) -> NodeProc {
        NodeProc::start_with_env(data_dir, store_dir, extra, &[])
    }

    /// Like `start`, with extra environment variables for the node (test hooks).
    pub fn start_with_env(data_dir: &Path, store_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> NodeProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ampstore"));
        cmd.envs(env.iter().copied());
        cmd.arg("--data").arg(data_dir).args([
            "node",
            "--rpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ]);
        cmd.arg("--set").arg(format!("backend.local.dir={}", store_dir.display()));
        // Many nodes on one host: the RESP listener on a free port too.
        cmd.arg("--set").arg("node.resp_addr=127.0.0.1:0");
        for kv in [
            format!("node.liveness_ms={LIVENESS_MS}"),
            format!("node.heartbeat_ms={HEARTBEAT_MS}"),
            format!("node.liveness_margin_ms={MARGIN_MS}"),
        ] {
            cmd.arg("--set").arg(kv);
        }
        cmd.args(extra).env_remove("AMPSTORE_CONFIG").env("RUST_LOG", "warn,ampstore_node=info");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start node");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("node printed nothing").expect("read node stdout");
        // "ampstore node ID ready: rpc ADDR epoch N admin ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 10 && words[3] == "ready:", "unexpected ready line: {line}");
        let (node_id, rpc, admin) = (words[2].to_string(), words[5].to_string(), words[9].to_string());
        let gossip = words.get(11).map(|s| s.to_string()).unwrap_or_default();
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NodeProc {
            child,
            rpc,
            admin,
            gossip,
            node_id,
            data_dir: data_dir.to_path_buf(),
            store_dir: store_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the shared embedded store from the test process (as a master would use it).
pub fn open_store(store_dir: &Path) -> Backend {
    LocalStore::open(store_dir, &LocalConfig::default()).unwrap().backend()
}

pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

impl TestClient {
    /// Writes raw bytes and returns the next response, if any arrives before the close.
    pub async fn raw_send(&mut self, bytes: &[u8]) -> Option<Result<Reply, Error>> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.ok()?;
        self.next_response().await
    }

    /// Writes one frame holding any MessagePack value and returns the next response.
    pub async fn raw_message<T: serde::Serialize + ?Sized>(&mut self, msg: &T) -> Option<Result<Reply, Error>> {
        self.scratch.clear();
        ampstore_common::frame::encode_frame(msg, &mut self.scratch).ok()?;
        let bytes = std::mem::take(&mut self.scratch);
        let r = self.raw_send(&bytes).await;
        self.scratch = bytes;
        r
    }

    async fn next_response(&mut self) -> Option<Result<Reply, Error>> {
        let read = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut self.stream, &mut self.body)).await;
        match read {
            Ok(Ok(true)) => decode_body::<Response>(&self.body).ok().map(|r| r.result),
            _ => None,
        }
    }
}

/// GET `path` from an admin port and parse the JSON body (plain HTTP/1.1, no client crate).
/// GET `path` from an admin port and return the body as text.
pub async fn http_get_text(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        return out;
    }
    body.to_string()
}

pub async fn http_get_json(addr: &str, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

// ---- masters and routed calls ----------------------------------------------------------

use ampstore_common::Key;
use ampstore_common::connection::Connection;
use ampstore_common::protocol::MasterStatus;
use ampstore_common::{KeyRange, RangeId};
use ampstore_store::Expect;
use ampstore_store::meta::{self, RangeDescriptor};
use std::time::Instant;

/// Timings of the master-level tests: fast failure detection on a busy 2-core machine.
pub const FAST_LIVENESS_MS: u64 = 1500;
pub const FAST_HEARTBEAT_MS: u64 = 250;
pub const FAST_MARGIN_MS: u64 = 400;
pub const LEASE_MS: u64 = 2000;

/// Node flags for the master-level tests.
pub fn fast_node_flags() -> Vec<String> {
    [
        format!("node.liveness_ms={FAST_LIVENESS_MS}"),
        format!("node.heartbeat_ms={FAST_HEARTBEAT_MS}"),
        format!("node.liveness_margin_ms={FAST_MARGIN_MS}"),
    ]
    .into_iter()
    .flat_map(|kv| ["--set".to_string(), kv])
    .collect()
}

pub fn start_fast_node(data_dir: &Path, store_dir: &Path) -> NodeProc {
    let flags = fast_node_flags();
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    NodeProc::start(data_dir, store_dir, &extra)
}

/// A master process of the `ampstore` binary.
pub struct MasterProc {
    pub child: Child,
    pub rpc: String,
    pub admin: String,
    pub gossip: String,
    pub id: String,
}

impl MasterProc {
    pub fn start(data_dir: &Path, store_dir: &Path) -> MasterProc {
        MasterProc::start_with(data_dir, store_dir, &[])
    }

    pub fn start_with(data_dir: &Path, store_dir: &Path, extra: &[&str]) -> MasterProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ampstore"));
        cmd.arg("--data").arg(data_dir).args([
            "master",
            "--rpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
        ]);
        cmd.arg("--set").arg(format!("backend.local.dir={}", store_dir.display()));
        for kv in [
            format!("master.lease_ms={LEASE_MS}"),
            "master.renew_ms=250".to_string(),
            "master.lease_margin_ms=500".to_string(),
            "master.poll_ms=100".to_string(),
            "master.stats_ms=300".to_string(),
            "master.rebalance_interval_ms=500".to_string(),
            // Tests that count ranges must not see idle ones merge; merge tests turn it on.
            "master.merge_idle_ms=0".to_string(),
        ] {
            cmd.arg("--set").arg(kv);
        }
        cmd.args(extra).env_remove("AMPSTORE_CONFIG").env("RUST_LOG", "warn,ampstore_master=info");
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start master");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("master printed nothing").expect("read master stdout");
        // "ampstore master ID ready: rpc ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[3] == "ready:", "unexpected ready line: {line}");
        let (id, rpc) = (words[2].to_string(), words[5].to_string());
        let admin = words.get(7).map(|s| s.to_string()).unwrap_or_default();
        let gossip = words.get(9).map(|s| s.to_string()).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        MasterProc { child, rpc, admin, gossip, id }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub async fn status(&self) -> Option<MasterStatus> {
        let conn = Connection::connect(&self.rpc, Role::Client, "test", None).await.ok()?;
        match conn.call(Op::MasterStatus, Duration::from_secs(5)).await {
            Ok(Reply::Master(s)) => Some(s),
            _ => None,
        }
    }
}

impl Drop for MasterProc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes range descriptors splitting the key space at `splits` (before any master runs),
/// as splits (step 6) will; `splits` must be ascending and non-empty keys.
pub async fn create_ranges(store: &Backend, splits: &[&str]) {
    let splits: Vec<&[u8]> = splits.iter().map(|s| s.as_bytes()).collect();
    create_ranges_bytes(store, &splits).await;
}

/// [`create_ranges`] with split keys of any bytes.
#[allow(dead_code)]
pub async fn create_ranges_bytes(store: &Backend, splits: &[&[u8]]) {
    let mut bounds: Vec<Key> = vec![Key::default()];
    bounds.extend(splits.iter().map(|s| Key::new(s.to_vec())));
    for (i, start) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).cloned();
        let desc = RangeDescriptor {
            range_id: RangeId(i as u64 + 1),
            range: KeyRange::new(start.clone(), end).unwrap(),
            generation: 1,
            owner: None,
            checkpoint: None,
        };
        meta::put_range(store.meta.as_ref(), &desc, Expect::Absent).await.unwrap();
    }
}

/// Waits until one of `masters` reports itself active; returns its index.
pub async fn wait_active(masters: &[&MasterProc], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, m) in masters.iter().enumerate() {
            if let Some(s) = m.status().await
                && s.active_term.is_some()
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no master became active within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every range's owner node as recorded in meta, by range id.
pub async fn owners(store: &Backend) -> Vec<(RangeId, Option<String>)> {
    meta::list_ranges(store.meta.as_ref())
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.record.range_id, d.record.owner.map(|o| o.node_id.to_string())))
        .collect()
}

/// The ranges cover the key space once: sorted, no gap, no overlap, open at the end.
#[allow(dead_code)]
pub fn assert_contiguous(ranges: &[ampstore_common::protocol::RangeView]) {
    let mut sorted: Vec<&ampstore_common::protocol::RangeView> = ranges.iter().collect();
    sorted.sort_by(|a, b| a.range.start.cmp(&b.range.start));
    assert!(sorted[0].range.start.is_empty(), "first range starts at {}", sorted[0].range.start);
    for w in sorted.windows(2) {
        assert_eq!(
            w[0].range.end.as_ref(),
            Some(&w[1].range.start),
            "gap or overlap between {} and {}",
            w[0].range,
            w[1].range
        );
    }
    assert_eq!(sorted.last().unwrap().range.end, None);
}

#[allow(dead_code)]
pub async fn full_scan(client: &ampstore_client::Client) -> Vec<String> {
    let mut keys = Vec::new();
    let mut s = client.scanner("", None, false);
    while let Some(item) = s.next().await.unwrap() {
        keys.push(item.key.to_string());
    }
    keys
}

/// A client of the cluster behind `master` whose calls retry for up to 20 s (long enough
/// to ride out a node's failover in the process tests).
#[allow(dead_code)]
pub async fn client_for(master: &MasterProc) -> ampstore_client::Client {
    let mut cfg = ampstore_client::ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(20);
    ampstore_client::Client::with_config(cfg).await.unwrap()
}

/// Runs the `ampstore` binary with `args` (no config from the environment) to completion.
pub fn ampstore_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .args(args)
        .env_remove("AMPSTORE_CONFIG")
        .output()
        .expect("run ampstore")
}

/// A finished command's stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `up` with its stdout and stderr in files (to read what it printed), stopped on drop.
pub struct UpRun {
    pub child: Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl UpRun {
    pub fn start(data: &Path, args: &[&str]) -> UpRun {
        std::fs::create_dir_all(data).unwrap();
        let out = data.with_extension("stdout");
        let err = data.with_extension("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_ampstore"))
            .arg("--data")
            .arg(data)
            .arg("up")
            .args(args)
            .env_remove("AMPSTORE_CONFIG")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start up");
        UpRun { child, out, err }
    }

    pub fn printed(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        format!("{out}{err}")
    }

    /// Panics (with what `up` printed) when `up` has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("up exited ({status}) {when}; it printed:\n{}", self.printed());
        }
    }

    /// Waits for `cluster.json` (failing at once when `up` exits first).
    pub async fn wait_cluster_file(&mut self, data: &Path) -> serde_json::Value {
        let path = data.join("cluster.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.is_file() {
            self.assert_running("before writing cluster.json");
            assert!(Instant::now() < deadline, "no cluster.json within 60 s:\n{}", self.printed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// SIGTERM, then waits: `up` stops its cluster and exits 0.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "up exited with {status}:\n{}", self.printed());
        started.elapsed()
    }
}

impl Drop for UpRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}

pub fn pid_of(cluster: &serde_json::Value, kind: &str, id: &str) -> u64 {
    let list = cluster[kind].as_array().unwrap();
    let p = list.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{kind} {id} not in {cluster}"));
    p["pid"].as_u64().unwrap()
}

pub fn read_cluster_file(data: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(data.join("cluster.json")).ok()?).ok()
}
