//! The Redis interface (DESIGN §13, `docs/redis.md`) against an `up` cluster, with real
//! clients: redis-py runs every command (`tests/resp/redis_py_suite.py`), a pipeline of
//! 10,000 commands and MULTI/EXEC with a WATCH conflict against any node, keys spread over
//! ranges on several nodes; redis-cli; raw frames for bad input and wrong credentials; and a
//! node killed while redis-py writes through another one.
//!
//! redis-py and redis-cli are installed by `./scripts/test` (the Python package into its
//! venv, `redis-tools` from Debian). Without them these tests fail, never skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{UpRun, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One test at a time: each starts a cluster of several processes on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Python with the `redis` package: `AMPSTORE_TEST_PYTHON`, else the venv
/// `./scripts/test` makes.
fn python() -> PathBuf {
    let python = std::env::var_os("AMPSTORE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(".venv-moto/bin/python"));
    let ok = Command::new(&python).args(["-c", "import redis"]).status().is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import redis (redis-py): run ./scripts/test, which installs it, or set AMPSTORE_TEST_PYTHON",
        python.display()
    );
    python
}

fn redis_cli_installed() {
    let ok = Command::new("redis-cli").arg("--version").status().is_ok_and(|s| s.success());
    assert!(ok, "redis-cli is missing: ./scripts/test installs Debian's redis-tools");
}

struct Cluster {
    up: UpRun,
    data: PathBuf,
    resp: Vec<String>,
    token: String,
    admin: String,
}

impl Cluster {
    async fn start(dir: &Path, args: &[&str]) -> Cluster {
        let data = dir.join("data");
        let mut up = UpRun::start(&data, args);
        let file = up.wait_cluster_file(&data).await;
        let resp: Vec<String> = file["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["resp"].as_str().expect("every node has a RESP address in cluster.json").to_string())
            .collect();
        let token = std::fs::read_to_string(data.join("cluster.token")).unwrap().trim().to_string();
        let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();
        let cluster = Cluster { up, data, resp, token, admin };
        for addr in &cluster.resp {
            wait_until(&format!("RESP on {addr} answers"), Duration::from_secs(30), async || {
                let Ok(mut c) = Raw::connect(addr).await else { return false };
                c.send(&format!("AUTH {}\r\nPING\r\n", cluster.token)).await;
                c.read_replies(2).await.is_some_and(|r| r == "+OK\r\n+PONG\r\n")
            })
            .await;
        }
        cluster
    }

    fn ports(&self) -> String {
        self.resp.iter().map(|a| a.rsplit(':').next().unwrap()).collect::<Vec<_>>().join(",")
    }

    async fn client(&self) -> ampstore_client::Client {
        let file = support::read_cluster_file(&self.data).unwrap();
        let masters: Vec<String> =
            file["masters"].as_array().unwrap().iter().map(|m| m["rpc"].as_str().unwrap().to_string()).collect();
        let mut cfg = ampstore_client::ClientConfig::new(&masters);
        cfg.token = Some(self.token.clone());
        ampstore_client::Client::with_config(cfg).await.unwrap()
    }

    fn python(&self, script_args: &[&str], prefix: &str) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp").join(script_args[0]))
            .args(&script_args[1..])
            .env("RESP_PORTS", self.ports())
            .env("RESP_TOKEN", &self.token)
            .env("RESP_ADMIN", &self.admin)
            .env("RESP_PREFIX", prefix);
        cmd
    }
}

/// A raw RESP connection: bytes in, reply text out.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(addr: &str) -> std::io::Result<Raw> {
        Ok(Raw { stream: TcpStream::connect(addr).await? })
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }

    /// Reads until `count` complete top-level replies arrived (simple ones, bulk strings,
    /// arrays of them); `None` if the server closed first or 10 s passed.
    async fn read_replies(&mut self, count: usize) -> Option<String> {
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if complete_replies(&buf) >= count {
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout_at(deadline.into(), self.stream.read(&mut chunk)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closed the connection (within 5 s), after any bytes it still sent.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline.into(), self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// How many complete replies `buf` starts with.
fn complete_replies(buf: &[u8]) -> usize {
    fn one(buf: &[u8], at: usize) -> Option<usize> {
        let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(&buf[at + 1..line_end]).ok()?;
        let after = line_end + 2;
        match buf[at] {
            b'$' => {
                let len: i64 = head.parse().ok()?;
                if len < 0 {
                    return Some(after);
                }
                let end = after + len as usize + 2;
                (buf.len() >= end).then_some(end)
            }
            b'*' => {
                let n: i64 = head.parse().ok()?;
                let mut at = after;
                for _ in 0..n.max(0) {
                    at = one(buf, at)?;
                }
                Some(at)
            }
            _ => Some(after),
        }
    }
    let (mut at, mut count) = (0, 0);
    while at < buf.len() {
        match one(buf, at) {
            Some(next) => {
                at = next;
                count += 1;
            }
            None => break,
        }
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_and_redis_cli_run_every_command_against_any_node() {
    let _serial = SERIAL.lock().await;
    redis_cli_installed();
    let dir = tempfile::tempdir().unwrap();
    // Small ranges, so the keys spread over many ranges and the three nodes (forwarding).
    let cluster = Cluster::start(dir.path(), &["--nodes", "3", "--split-bytes", "65536"]).await;
    let run = cluster.python(&["redis_py_suite.py"], "py:").output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    println!("redis-py suite: {printed}");
    assert!(run.status.success(), "the redis-py suite failed:\n{printed}\nup printed:\n{}", cluster.up.printed());
    assert!(printed.contains("checks passed"), "{printed}");

    // The keys the suite wrote live in several ranges on more than one node: the commands
    // above were forwarded from the node redis-py talked to.
    let client = cluster.client().await;
    let ranges = client.ranges().await.unwrap();
    let owners: std::collections::BTreeSet<String> = ranges.iter().map(|r| r.node_id.to_string()).collect();
    println!("{} ranges on {} nodes", ranges.len(), owners.len());
    assert!(ranges.len() >= 3, "the suite's keys should have split the key space: {ranges:?}");
    assert!(owners.len() >= 2, "ranges on one node only: {ranges:?}");
    let (lo, hi) = (client.locate("!py:x").await.unwrap(), client.locate("~py:y").await.unwrap());
    assert_ne!(lo.range_id, hi.range_id, "the suite's cross-range transactions were in one range");

    // redis-cli, as an operator types it (commands on stdin and as arguments).
    let port = cluster.resp[1].rsplit(':').next().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port, "-a", &cluster.token, "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["SET", "cli:k", "hello"]), "OK");
    assert_eq!(cli(&["GET", "cli:k"]), "hello");
    assert_eq!(cli(&["GET", "py:pipe:42"]), "42", "a key redis-py wrote through another node");
    assert_eq!(cli(&["INCRBY", "cli:n", "5"]), "5");
    assert!(cli(&["INFO", "server"]).contains("ampstore_version"));
    assert_eq!(cli(&["LPUSH", "cli:l", "x"]).split(' ').next(), Some("ERR"), "LPUSH is refused with a reason");

    // FLUSHDB: refused with the cluster credential, done with the admin one.
    let mut raw = Raw::connect(&cluster.resp[0]).await.unwrap();
    raw.send(&format!("AUTH {}\r\nFLUSHDB\r\nAUTH {}\r\nFLUSHDB\r\nDBSIZE\r\n", cluster.token, cluster.admin)).await;
    let replies = raw.read_replies(5).await.unwrap();
    let lines: Vec<&str> = replies.lines().collect();
    assert_eq!(lines[0], "+OK");
    assert!(lines[1].starts_with("-NOPERM"), "{replies}");
    assert_eq!(&lines[2..], ["+OK", "+OK", ":0"], "{replies}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_or_closed_and_never_wedges_the_node() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &["--nodes", "1"]).await;
    let addr = &cluster.resp[0];

    // Credentials: nothing before AUTH, a wrong one refused, the data one cannot flush.
    let mut c = Raw::connect(addr).await.unwrap();
    c.send(&format!("GET k\r\nAUTH nope\r\nAUTH {}\r\nFLUSHALL\r\nPING\r\n", cluster.token)).await;
    let r = c.read_replies(5).await.unwrap();
    let lines: Vec<&str> = r.lines().collect();
    assert!(lines[0].starts_with("-NOAUTH"), "{r}");
    assert!(lines[1].starts_with("-WRONGPASS"), "{r}");
    assert_eq!(lines[2], "+OK");
    assert!(lines[3].starts_with("-NOPERM"), "{r}");
    assert_eq!(lines[4], "+PONG");

    // Inline commands, quoted arguments, an unknown command: answered, connection kept.
    c.send("SET inline \"a b\"\r\nGET inline\r\nFOO bar\r\nPING\r\n").await;
    let r = c.read_replies(4).await.unwrap();
    assert!(r.starts_with("+OK\r\n$3\r\na b\r\n-ERR unknown command 'FOO', with args beginning with: 'bar'"), "{r}");
    assert!(r.ends_with("+PONG\r\n"), "{r}");

    // A pipeline of 20,000 commands in one write: every one answered, in order.
    let mut pipeline = String::new();
    for i in 0..10_000 {
        pipeline.push_str(&format!("*3\r\n$3\r\nSET\r\n$6\r\np{i:05}\r\n${}\r\n{i}\r\n", i.to_string().len()));
    }
    for i in 0..10_000 {
        pipeline.push_str(&format!("*2\r\n$3\r\nGET\r\n$6\r\np{i:05}\r\n"));
    }
    c.send(&pipeline).await;
    let r = c.read_replies(20_000).await.expect("every pipelined command answered");
    assert!(r.starts_with("+OK\r\n+OK\r\n"));
    assert!(r.ends_with("$4\r\n9998\r\n$4\r\n9999\r\n"), "{}", &r[r.len() - 100..]);

    // Framing errors are answered, then the connection closes; the node keeps serving.
    let bad: [(&str, &str); 4] = [
        ("*1\r\n+GET\r\n", "Protocol error: expected '$'"),
        ("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n", "RESP_BULK_BYTES_MAX"),
        ("*9999999\r\n", "RESP_ARGS_MAX"),
        ("*1\r\n$abc\r\n", "Protocol error: invalid bulk length"),
    ];
    for (input, error) in bad {
        let mut c = Raw::connect(addr).await.unwrap();
        c.send(&format!("AUTH {}\r\n", cluster.token)).await;
        c.send(input).await;
        let r = c.read_replies(2).await.unwrap_or_default();
        assert!(r.starts_with("+OK\r\n-ERR ") && r.contains(error), "{input:?} answered {r:?}");
        assert!(c.closed().await, "{input:?}: the connection stays open");
    }

    // A client that stops reading: it sends GETs of a 200 KB value and never reads. The node
    // holds a bounded amount for it, keeps serving everyone else, and closes it in time.
    let mut setup = Raw::connect(addr).await.unwrap();
    let big = "x".repeat(200 * 1024);
    setup.send(&format!("AUTH {}\r\n*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n{big}\r\n", cluster.token, big.len())).await;
    assert_eq!(setup.read_replies(2).await.unwrap(), "+OK\r\n+OK\r\n");
    let mut stuck = Raw::connect(addr).await.unwrap();
    let stuck_sent = Instant::now();
    stuck.send(&format!("AUTH {}\r\n{}", cluster.token, "GET big\r\n".repeat(2000))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other_started = Instant::now();
    let mut other = Raw::connect(addr).await.unwrap();
    other.send(&format!("AUTH {}\r\nGET inline\r\n", cluster.token)).await;
    assert_eq!(other.read_replies(2).await.unwrap(), "+OK\r\n$3\r\na b\r\n");
    assert!(other_started.elapsed() < Duration::from_secs(2), "another client waited {:?}", other_started.elapsed());
    // Closed after RESP_WRITE_STALL_MS without progress (reading now drains what was sent).
    let stall = Duration::from_millis(ampstore_common::limits::RESP_WRITE_STALL_MS);
    tokio::time::sleep(stall.saturating_sub(stuck_sent.elapsed()) + Duration::from_secs(3)).await;
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stuck.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => drained += n,
            Err(_) => panic!("the connection that stopped reading is still open after {:?}", stuck_sent.elapsed()),
        }
    }
    println!("the stalled connection was closed after {drained} bytes of replies (of 400 MB asked)");
    assert!(drained < 64 << 20, "the node buffered {drained} bytes for a client that did not read");
    other.send("PING\r\n").await;
    assert_eq!(other.read_replies(1).await.unwrap(), "+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_redis_py_writes_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &["--nodes", "3", "--split-bytes", "65536"]).await;
    let out = dir.path().join("acked.txt");
    // redis-py writes through node 0 for 12 s, keys over the whole key space.
    let writer = cluster
        .python(&["redis_py_writer.py", "12", out.to_str().unwrap()], "kill:")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Kill a node the writer is not connected to but whose ranges it writes to: they fail
    // over while the writes go on.
    let file = support::read_cluster_file(&cluster.data).unwrap();
    let through = file["nodes"][0]["id"].as_str().unwrap().to_string();
    let client = cluster.client().await;
    let mut victim_id = None;
    wait_until("a node other than the writer's owns a range", Duration::from_secs(8), async || {
        let ranges = client.ranges().await.unwrap_or_default();
        victim_id = ranges.iter().map(|r| r.node_id.to_string()).find(|n| *n != through);
        victim_id.is_some()
    })
    .await;
    let victim_id = victim_id.unwrap();
    let owned = client.ranges().await.unwrap().iter().filter(|r| r.node_id.to_string() == victim_id).count();
    println!("killing {victim_id}, which owns {owned} ranges");
    let victim = support::pid_of(&file, "nodes", &victim_id);
    // SAFETY: signalling a process of this test's cluster.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let status = tokio::task::spawn_blocking(move || writer.wait_with_output()).await.unwrap().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
    println!("writer: {printed}");
    assert!(status.status.success(), "the writer failed: {printed}");
    let acked: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(String::from).collect();
    assert!(acked.len() > 100, "only {} writes acknowledged", acked.len());
    // Every acknowledged write reads back, through another node.
    let mut reader = Raw::connect(&cluster.resp[2]).await.unwrap();
    reader.send(&format!("AUTH {}\r\n", cluster.token)).await;
    reader.read_replies(1).await.unwrap();
    for chunk in acked.chunks(500) {
        let mut cmd = format!("*{}\r\n$4\r\nMGET\r\n", chunk.len() + 1);
        for k in chunk {
            cmd.push_str(&format!("${}\r\n{k}\r\n", k.len()));
        }
        reader.send(&cmd).await;
        let r = reader.read_replies(1).await.unwrap();
        for k in chunk {
            assert!(r.contains(&format!("\r\nv-{k}\r\n")), "acknowledged {k} is lost: {r}");
        }
    }
    println!("{} acknowledged writes all read back after the kill", acked.len());
}
