//! Collectors with real processes (issue 8): pushes and enqueues through collectors,
//! discovery through gossip, and a collector SIGKILLed mid-batch losing no acknowledged push.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ampstore_client::{Client, ClientConfig, PushId};
use support::*;

struct CollectorProc {
    child: Child,
    rpc: String,
}

impl CollectorProc {
    fn start(data: &Path, master: &MasterProc, window_ms: u64) -> CollectorProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ampstore"))
            .arg("--data")
            .arg(data)
            .args(["collector", "--rpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gossip", "127.0.0.1:0"])
            .args(["--seeds", master.gossip.as_str()])
            .args(["--set", &format!("collector.window_ms={window_ms}")])
            .env_remove("AMPSTORE_CONFIG")
            .env("RUST_LOG", "warn,ampstore_node::collector=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start collector");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("collector printed nothing").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[1] == "collector" && words[3] == "ready:", "{line}");
        let rpc = words[5].to_string();
        std::thread::spawn(move || for _ in lines {});
        CollectorProc { child, rpc }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn all_elements(client: &Client, key: &str) -> Vec<PushId> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client.list(key, after, 1000).await.unwrap();
        out.extend(page.elements.iter().map(|(id, _)| *id));
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_through_collectors_and_survive_a_collector_kill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let master = MasterProc::start(&root.join("m"), &store);
    let f = fast_node_flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> = (0..2).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &f)).collect();
    // A wide window, so the kill lands while batches wait.
    let mut c1 = CollectorProc::start(&root.join("c1"), &master, 20);
    let c2 = CollectorProc::start(&root.join("c2"), &master, 20);

    // Discovery through the master's gossip view.
    let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(20);
    let client = Client::with_config(cfg.clone()).await.unwrap();
    let mut found = 0;
    for _ in 0..50 {
        found = client.discover_collectors().await.unwrap();
        if found == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found, 2, "both collectors found through gossip");
    let mut collectors = client.collectors();
    collectors.sort();
    let mut given = vec![c1.rpc.clone(), c2.rpc.clone()];
    given.sort();
    assert_eq!(collectors, given);

    // Pushes and enqueues through the collectors (c1 first).
    client.set_collectors(vec![c1.rpc.clone(), c2.rpc.clone()]);
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(client.push("through", format!("e{i}")).await.unwrap());
    }
    assert_eq!(all_elements(&client, "through").await, ids);
    for i in 0..20 {
        client.enqueue("jobs", format!("t{i}")).await.unwrap();
    }
    let tasks = client.dequeue("jobs", 100, Duration::from_secs(30)).await.unwrap();
    assert_eq!(tasks.len(), 20);
    // A collector refuses anything else.
    let direct = Client::with_config(cfg).await.unwrap();
    let err = direct.call_node(&c1.rpc, ampstore_common::protocol::Op::Get { key: "x".into() }).await.unwrap_err();
    assert!(matches!(err, ampstore_client::Error::Invalid { .. }), "{err:?}");

    // 16 writers push through the collectors; c1 is SIGKILLed mid-stream. Every push that
    // was acknowledged is in the list afterwards, once.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (client, stop) = (client.clone(), stop.clone());
        writers.spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match client.push("stream", format!("w{w}")).await {
                    Ok(id) => acked.push(id),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    c1.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    while let Some(r) = writers.join_next().await {
        let (a, f) = r.unwrap();
        acked.extend(a);
        failed += f;
    }
    let stored = all_elements(&client, "stream").await;
    let stored_set: BTreeSet<PushId> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "no element twice");
    let lost: Vec<_> = acked.difference(&stored_set).collect();
    assert!(lost.is_empty(), "{} acknowledged pushes lost", lost.len());
    println!(
        "collector killed mid-stream: {} pushes acknowledged, {} stored, {failed} failed calls, 0 lost",
        acked.len(),
        stored.len()
    );
    assert!(acked.len() > 100, "too few pushes: {}", acked.len());
    drop(c2);
}
