//! One `ampstore node` process over TCP on 127.0.0.1: gets/s and puts/s (1 and 64 clients,
//! pipelined and not, 100-byte values), write latency with and without a snapshot running,
//! and resident memory per key with 1 million keys.
//!
//! ```text
//! cargo build --release -p ampstore && cargo bench -p ampstore --bench node_rpc
//! ```
//! `AMPSTORE_BENCH_SECS` sets the seconds per case (default 3), `AMPSTORE_BENCH_NODE_SET`
//! adds node settings (`"node.batch_bytes=65536 ..."`). Results: docs/benchmarks.md.
//! Each node is the `ampstore` binary Cargo builds alongside the bench (release under
//! `cargo bench`, debug under `cargo test`; `target/release/ampstore` if Cargo names none),
//! with the embedded backend in a fresh temp dir; its log goes to stderr (`RUST_LOG`,
//! default `warn`). Without `--bench` (`cargo test --all-targets`) it runs a tiny version.

use ampstore_common::frame::{decode_body, encode_frame, read_frame};
use ampstore_common::ids::RequestId;
use ampstore_common::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, RangeStats, Reply, Request, Response, Role};
use ampstore_common::{Error, Key};
use ampstore_server::config::LocalConfig;
use ampstore_store::local::LocalStore;
use ampstore_store::meta::{FIRST_RANGE_ID, ensure_first_range};
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const VALUE_BYTES: usize = 100;

/// A 16-byte key.
fn key(i: u64) -> Key {
    Key::new(format!("key{i:013}"))
}

/// 100 bytes that differ per key and write (so nothing compresses them away).
fn value(mut seed: u64) -> Vec<u8> {
    (0..VALUE_BYTES.div_ceil(8)).flat_map(|_| splitmix(&mut seed).to_le_bytes()).take(VALUE_BYTES).collect()
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

// ---- the node process ----

/// An `ampstore node` child; SIGTERM (then SIGKILL after 30 s) on drop, panics included.
struct Node {
    child: Child,
    rpc: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// `settings`: extra `--set KEY=VALUE`s, after those of `AMPSTORE_BENCH_NODE_SET`.
    async fn start(settings: &[&str]) -> Node {
        // `AMPSTORE_BENCH_BIN` (another build, for before/after figures in one run); else the
        // binary Cargo built for this bench profile; else the release build.
        let bin = std::env::var_os("AMPSTORE_BENCH_BIN")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_BIN_EXE_ampstore").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ampstore"));
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --release -p ampstore` first (the bench drives the release binary)",
            bin.display()
        );
        eprintln!("node binary: {}", bin.display());
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let backend = LocalStore::open(&store, &LocalConfig::default()).unwrap().backend();
        ensure_first_range(backend.meta.as_ref()).await.unwrap();
        let env_settings = std::env::var("AMPSTORE_BENCH_NODE_SET").unwrap_or_default();
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(dir.path().join("node"))
            .args(["node", "--rpc", "127.0.0.1:0", "--set"])
            .arg(format!("backend.local.dir={}", store.display()))
            // No master runs here to commit a split: without these the one range splits once
            // its data passes 1 MiB, never completes the split, and every request after gets
            // `RangeLoading` (the bench measured refusals from step 6 until this was found).
            .args(["--set", "node.split_bytes=0", "--set", "node.hot_split_writes_per_sec=0"])
            .args(env_settings.split_whitespace().chain(settings.iter().copied()).flat_map(|kv| ["--set", kv]))
            .env_remove("AMPSTORE_CONFIG")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("node printed nothing").expect("read node stdout");
        // "ampstore node ID ready: rpc ADDR epoch N"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[3] == "ready:", "unexpected ready line: {line}");
        let rpc = words[5].to_string();
        std::thread::spawn(move || for _ in lines {});
        Node { child, rpc, _dir: dir }
    }

    /// Resident and peak resident bytes (VmRSS, VmHWM).
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = |field: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("node did not exit 30 s after SIGTERM: killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a bare protocol client: hello, then pipelined requests ----

struct Client {
    rd: tokio::io::BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    next_id: u64,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (rd, wr) = stream.into_split();
        let mut c = Client { rd: tokio::io::BufReader::new(rd), wr, next_id: 1, out: Vec::new(), body: Vec::new() };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            // The bench stands in for the master too (assign, snapshot, range stats); the
            // node runs without tokens, so the role is taken as declared.
            role: Role::Master,
            client_name: "bench".into(),
            auth_token: None,
        };
        encode_frame(&hello, &mut c.out).unwrap();
        c.wr.write_all(&c.out).await.unwrap();
        assert!(read_frame(&mut c.rd, &mut c.body).await.unwrap(), "closed before hello reply");
        decode_body::<HelloReply>(&c.body).unwrap().result.expect("hello refused");
        c
    }

    /// Sends the requests in one write.
    async fn send(&mut self, ops: impl IntoIterator<Item = Op>) {
        self.out.clear();
        for op in ops {
            let req = Request { id: RequestId(self.next_id), deadline_ms: Some(20_000), op };
            self.next_id += 1;
            encode_frame(&req, &mut self.out).unwrap();
        }
        self.wr.write_all(&self.out).await.expect("send");
    }

    /// The next response, whichever request it answers.
    async fn recv(&mut self) -> Result<Reply, Error> {
        assert!(read_frame(&mut self.rd, &mut self.body).await.expect("read"), "node closed the connection");
        decode_body::<Response>(&self.body).unwrap().result
    }

    async fn call(&mut self, op: Op) -> Result<Reply, Error> {
        self.send([op]).await;
        self.recv().await
    }

    async fn range_stats(&mut self) -> RangeStats {
        match self.call(Op::RangeStats).await {
            Ok(Reply::Stats(s)) => s.ranges.into_iter().find(|r| r.range_id == FIRST_RANGE_ID).expect("range 1"),
            other => panic!("range stats: {other:?}"),
        }
    }
}

/// Claims the first (whole key space) range on the node.
async fn assign(addr: &str) {
    let op = Op::Assign { range_id: FIRST_RANGE_ID, start: Key::default(), claim: true };
    Client::connect(addr).await.call(op).await.expect("assign");
}

/// Counts failed requests and keeps the first error.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: std::sync::Mutex<Option<Error>>,
}

impl Errors {
    fn note(&self, e: Error) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first.lock().unwrap() = Some(e);
        }
    }

    fn report(&self, what: &str) {
        let n = self.count.load(Ordering::Relaxed);
        // A failed request is not a measurement: one node alone must answer every request
        // (the run under `cargo test` fails here instead of printing a table of refusals).
        assert!(n == 0, "{what}: {n} requests failed, first: {:?}", self.first.lock().unwrap());
    }
}

/// Puts keys `0..n` with `conns` connections of `depth` requests in flight each.
async fn load(addr: &str, n: u64, conns: u64, depth: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (addr, done, errors) = (addr.to_string(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&addr).await;
            let mut i = c;
            while i < n {
                let batch: Vec<u64> = (0..depth).map(|j| i + j * conns).take_while(|&k| k < n).collect();
                i += depth * conns;
                let ops = batch.iter().map(|&k| Op::Put { key: key(k), value: value(k), write_id: None });
                client.send(ops).await;
                for _ in &batch {
                    if let Err(e) = client.recv().await {
                        errors.note(e);
                    }
                }
                let before = done.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let after = before + batch.len() as u64;
                if before / 100_000 != after / 100_000 {
                    let s = start.elapsed().as_secs_f64();
                    eprintln!("  loaded {} keys in {s:.1} s", after / 100_000 * 100_000);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    errors.report("load");
}

// ---- 1. gets and puts ----

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Get,
    Put,
}

struct Outcome {
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Outcome {
    fn cells(&self) -> String {
        let q = |q| self.latency_us.value_at_quantile(q);
        format!(
            "{:>9.0} | {:>7} | {:>7} | {:>7} |",
            self.ops as f64 / self.elapsed.as_secs_f64(),
            q(0.5),
            q(0.99),
            q(0.999)
        )
    }
}

/// `clients` connections, each sending batches of `depth` requests (waiting for the whole
/// batch before the next) on random keys of `0..keys` until `secs` pass. Latency of a
/// request: from sending its batch to receiving its response.
async fn run_case(addr: &str, w: Workload, clients: u64, depth: u64, keys: u64, secs: f64) -> Outcome {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Client::connect(addr).await);
    }
    let errors = Arc::new(Errors::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for (c, mut client) in conns.into_iter().enumerate() {
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x5eed_0000 + c as u64 * 7919 + w as u64;
            let mut h = hist();
            let mut ok = 0u64;
            while Instant::now() < deadline {
                let ops = (0..depth).map(|_| {
                    let k = splitmix(&mut rng) % keys;
                    match w {
                        Workload::Get => Op::Get { key: key(k) },
                        Workload::Put => Op::Put { key: key(k), value: value(rng), write_id: None },
                    }
                });
                let t = Instant::now();
                client.send(ops).await;
                for _ in 0..depth {
                    match client.recv().await {
                        Ok(_) => ok += 1,
                        Err(e) => errors.note(e),
                    }
                    h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                }
            }
            (ok, h)
        }));
    }
    let (mut ops, mut latency_us) = (0, hist());
    for t in tasks {
        let (ok, h) = t.await.unwrap();
        ops += ok;
        latency_us.add(h).unwrap();
    }
    let elapsed = start.elapsed();
    errors.report(&format!("{} x{clients} depth {depth}", if w == Workload::Get { "get" } else { "put" }));
    Outcome { ops, elapsed, latency_us }
}

// ---- 2. puts while snapshots run back to back ----

async fn puts_under_snapshots(addr: &str, keys: u64, secs: f64, snapshots: bool) -> (Outcome, u64, Histogram<u64>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let snapper = snapshots.then(|| {
        let (addr, stop) = (addr.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut client = Client::connect(&addr).await;
            let (mut n, mut h) = (0u64, hist());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.call(Op::Snapshot { range_id: FIRST_RANGE_ID }).await {
                    Ok(Reply::Snapshotted { .. }) => n += 1,
                    other => eprintln!("snapshot: {other:?}"),
                }
                h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
            }
            (n, h)
        })
    });
    let o = run_case(addr, Workload::Put, 64, 1, keys, secs).await;
    stop.store(true, Ordering::Relaxed);
    let (n, h) = match snapper {
        Some(t) => t.await.unwrap(),
        None => (0, hist()),
    };
    (o, n, h)
}

// ---- 3. resident memory per key ----

/// RSS right after the last put is acknowledged, and again once a snapshot (the automatic
/// one under way, or a new one) has finished and the node had a second to settle.
async fn memory(keys: u64) {
    let node = Node::start(&[]).await;
    assign(&node.rpc).await;
    let mut admin = Client::connect(&node.rpc).await;
    let (before, _) = node.rss();
    let t = Instant::now();
    load(&node.rpc, keys, 16, 64).await;
    let load_secs = t.elapsed().as_secs_f64();
    let (after, _) = node.rss();
    let stats = admin.range_stats().await;
    eprintln!("  range after load: {stats:?}");
    let t = Instant::now();
    let snap = admin.call(Op::Snapshot { range_id: FIRST_RANGE_ID }).await;
    eprintln!("  snapshot after load: {snap:?} in {:.1} s", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (settled, peak) = node.rss();
    let mib = |b: u64| b as f64 / 1048576.0;
    let per_key = |b: u64| b.saturating_sub(before) as f64 / keys as f64;
    println!(
        "| keys | load s | RSS before MiB | RSS after MiB | B/key after load | B/key after snapshot | B/key peak | data_bytes B/key |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {load_secs:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
        stats.keys,
        mib(before),
        mib(after),
        per_key(after),
        per_key(settled),
        per_key(peak),
        stats.data_bytes as f64 / keys as f64
    );
}

/// A fresh node serving the first range, holding keys `0..keys`.
async fn loaded_node(keys: u64, settings: &[&str]) -> Node {
    let node = Node::start(settings).await;
    assign(&node.rpc).await;
    eprintln!("preloading {keys} keys");
    load(&node.rpc, keys, 8, 64).await;
    node
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: run a tiny version then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 =
        if quick { 0.2 } else { std::env::var("AMPSTORE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0) };
    let (keys, mem_keys) = if quick { (10_000, 10_000) } else { (100_000, 1_000_000) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let node = loaded_node(keys, &[]).await;
        println!("\n### Gets and puts ({keys} keys of 16 B, values of 100 B, {secs} s per case)\n");
        println!("| op | clients | depth | ops/s | p50 us | p99 us | p999 us |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for w in [Workload::Get, Workload::Put] {
            for clients in [1, 64] {
                for depth in [1, 16] {
                    let o = run_case(&node.rpc, w, clients, depth, keys, secs).await;
                    let op = if w == Workload::Get { "get" } else { "put" };
                    println!("| {op} | {clients:>3} | {depth:>3} | {}", o.cells());
                }
            }
        }
        drop(node);

        // Automatic snapshots off, so that "none" means none.
        let node = loaded_node(keys, &["node.snapshot_log_bytes=1000000000000"]).await;
        let s = Client::connect(&node.rpc).await.range_stats().await;
        println!("\n### Puts with and without snapshots (64 clients, depth 1, {secs} s per case)\n");
        println!("Range: {} keys, {:.1} MB of data; automatic snapshots off.\n", s.keys, s.data_bytes as f64 / 1e6);
        println!("| snapshots | puts/s | p50 us | p99 us | p999 us | snapshots done | ms per snapshot (p50) |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for with in [false, true] {
            let (o, n, h) = puts_under_snapshots(&node.rpc, keys, secs, with).await;
            let snap_ms = if n > 0 { format!("{:.0}", h.value_at_quantile(0.5) as f64 / 1000.0) } else { "-".into() };
            let label = if with { "back to back" } else { "none" };
            println!("| {label} | {} {n} | {snap_ms} |", o.cells());
        }
        drop(node);

        println!("\n### Resident memory ({mem_keys} keys of 16 B, values of 100 B)\n");
        memory(mem_keys).await;
    });
}
