//! Shared by the process-level tests: a minimal protocol client and node processes.
#![allow(dead_code)]

use ampstore_common::config::LocalConfig;
use ampstore_common::error::Error;
use ampstore_common::frame::{decode_body, read_frame, write_frame};
use ampstore_common::ids::RequestId;
use ampstore_common::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, Role};
use ampstore_common::store::Backend;
use ampstore_common::store::local::LocalStore;
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
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut scratch = Vec::new();
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Client,
            client_name: "test".into(),
            auth_token: None,
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ampstore"));
        cmd.arg("--data").arg(data_dir).args(["node", "--rpc", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
        cmd.arg("--set").arg(format!("backend.local.dir={}", store_dir.display()));
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
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NodeProc { child, rpc, admin, node_id, data_dir: data_dir.to_path_buf(), store_dir: store_dir.to_path_buf() }
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
