//! Collectors with real processes (issue 8): pushes and enqueues through collectors,
//! discovery through gossip, and a collector SIGKILLed mid-batch losing no acknowledged push.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig, PushId};
use support::*;

struct CollectorProc {
    child: Child,
    rpc: String,
    admin: String,
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
            .env("RUST_LOG", "warn,ampstore_collector=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start collector");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("collector printed nothing").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[1] == "collector" && words[3] == "ready:", "{line}");
        let rpc = words[5].to_string();
        let admin = words.get(7).map(|s| s.to_string()).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        CollectorProc { child, rpc, admin }
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
    all_elements_with_values(client, key).await.into_iter().map(|(id, _)| id).collect()
}

async fn all_elements_with_values(client: &Client, key: &str) -> Vec<(PushId, Vec<u8>)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client.list(key, after, 1000).await.unwrap();
        out.extend(page.elements);
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

    // 16 writers push through the collectors; c1 is SIGKILLed mid-stream. The client fails
    // over to c2: pushes keep being acknowledged after the kill, at most a few calls fail
    // (only those in flight around the kill), and every acknowledged push is in the list
    // afterwards exactly once (each element value is unique, so a push applied twice under
    // two ids shows too). Each writer has its own list: 16 writers on one list starve each
    // other ("push to stream was overtaken 16 times in a row", with or without the kill),
    // which is not what this test is about.
    let c2_pushes = async || {
        let m = ampstore_server::metrics::parse_text(&http_get_text(&c2.admin, "/metrics").await).unwrap();
        ampstore_server::metrics::sum(&m, "ampstore_requests_total", &[("op", "push"), ("outcome", "ok")])
    };
    let c2_before = c2_pushes().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (client, stop) = (client.clone(), stop.clone());
        writers.spawn(async move {
            // (started, value, push id if acknowledged, error if not)
            let mut calls: Vec<(Instant, String, Result<PushId, String>)> = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("w{w}-{n}");
                n += 1;
                let started = Instant::now();
                let r = client.push(format!("stream-w{w}"), value.clone()).await.map_err(|e| e.to_string());
                calls.push((started, value, r));
            }
            calls
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    c1.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    while let Some(r) = writers.join_next().await {
        calls.extend(r.unwrap());
    }
    let c2_after = c2_pushes().await;
    let acked: BTreeMap<PushId, &str> =
        calls.iter().filter_map(|(_, v, r)| r.as_ref().ok().map(|id| (*id, v.as_str()))).collect();
    let failed: Vec<(f64, &str, &str)> = calls
        .iter()
        .filter_map(|(t, v, r)| {
            let since_kill_ms = t.saturating_duration_since(killed).as_secs_f64() * 1000.0
                - killed.saturating_duration_since(*t).as_secs_f64() * 1000.0;
            r.as_ref().err().map(|e| (since_kill_ms, v.as_str(), e.as_str()))
        })
        .collect();
    // Pushes begun well after the kill: c1 is gone, so they went through c2 (or direct).
    let settled = killed + Duration::from_millis(300);
    let acked_after_kill = calls.iter().filter(|(t, _, r)| *t >= settled && r.is_ok()).count();
    let mut stored = Vec::new();
    for w in 0..16 {
        stored.extend(all_elements_with_values(&client, &format!("stream-w{w}")).await);
    }
    let stored_ids: BTreeSet<PushId> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(stored.len(), stored_ids.len(), "no element twice");
    let mut by_value: BTreeMap<&[u8], Vec<PushId>> = BTreeMap::new();
    for (id, v) in &stored {
        by_value.entry(v.as_slice()).or_default().push(*id);
    }
    let twice: Vec<_> =
        by_value.iter().filter(|(_, ids)| ids.len() > 1).map(|(v, _)| String::from_utf8_lossy(v)).collect();
    assert!(twice.is_empty(), "pushes applied more than once: {twice:?}");
    let lost: Vec<_> = acked.iter().filter(|(id, v)| by_value.get(v.as_bytes()) != Some(&vec![**id])).collect();
    println!(
        "collector killed mid-stream: {} pushes acknowledged ({acked_after_kill} begun 300+ ms after the kill), \
         {} stored, {} failed calls {:?}, {} lost; c2 acknowledged {} pushes",
        acked.len(),
        stored.len(),
        failed.len(),
        &failed[..failed.len().min(3)],
        lost.len(),
        c2_after - c2_before
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged pushes lost or stored under another id: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(acked.len() > 100, "too few pushes: {}", acked.len());
    // At most one failed call per writer, and only for pushes begun just around the kill.
    assert!(failed.len() <= 16, "{} pushes failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(
        failed.iter().all(|(ms, _, _)| (-1000.0..=1000.0).contains(ms)),
        "pushes failed away from the kill (ms since the kill, value, error): {failed:?}"
    );
    assert!(acked_after_kill >= 50, "only {acked_after_kill} pushes acknowledged after the kill");
    assert!(
        c2_after - c2_before >= acked_after_kill as f64,
        "c2 took {} pushes, fewer than the {acked_after_kill} acknowledged after the kill: it did not take over",
        c2_after - c2_before
    );
    drop(c2);
}
