//! The client crate under failover: a writer and a reader keep going while the node that
//! owns their keys is SIGKILLed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig, Key};
use ampstore_common::{NodeId, RangeId};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_succeed_through_a_node_kill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    create_ranges(&open_store(&store), &["c", "m", "w"]).await;
    let master = MasterProc::start(&root.join("m"), &store);
    let mut nodes: Vec<NodeProc> = (0..3).map(|i| start_fast_node(&root.join(format!("n{i}")), &store)).collect();
    let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(10);
    let client = Client::with_config(cfg).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    // Writer: a chain of conditional increments (a write applied twice, or lost, breaks the
    // chain with a Conflict) plus plain puts to fresh keys.
    let writer = {
        let (client, stop, errors, slowest) = (client.clone(), stop.clone(), errors.clone(), slowest_ms.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut version = None;
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.put_if_version("counter", (n + 1).to_string(), version).await {
                    Ok(v) => {
                        n += 1;
                        version = Some(v);
                    }
                    Err(e) => errors.lock().unwrap().push(format!("increment {}: {e}", n + 1)),
                }
                match client.put(format!("w:{n:05}"), format!("after {n}")).await {
                    Ok(_) => acked.push(n),
                    Err(e) => errors.lock().unwrap().push(format!("put w:{n:05}: {e}")),
                }
                slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            (n, acked)
        })
    };
    // Reader: the counter never goes back.
    let reader = {
        let (client, stop, errors) = (client.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            let (mut last, mut reads) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match client.get("counter").await {
                    Ok(v) => {
                        let seen: u64 = v.map_or(0, |v| String::from_utf8_lossy(&v.value).parse().unwrap());
                        if seen < last {
                            errors.lock().unwrap().push(format!("counter went back from {last} to {seen}"));
                        }
                        last = seen;
                        reads += 1;
                    }
                    Err(e) => errors.lock().unwrap().push(format!("read: {e}")),
                }
            }
            reads
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owner = client.locate(Key::from("counter")).await.unwrap();
    let victim = nodes.iter().position(|n| n.node_id == owner.node_id.as_str()).unwrap();
    nodes[victim].kill9();
    let killed = Instant::now();
    // Keep going until the counter is served by someone else, then a little more.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(loc) = client.locate(Key::from("counter")).await
            && loc.node_id != owner.node_id
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(15), "never failed over");
    }
    println!("failed over to another node {:.0} ms after the kill", killed.elapsed().as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (n, acked) = writer.await.unwrap();
    let reads = reader.await.unwrap();
    let errors = errors.lock().unwrap().clone();
    println!(
        "{n} increments, {} puts, {reads} reads; slowest write pair {} ms",
        acked.len(),
        slowest_ms.load(Ordering::Relaxed)
    );
    assert!(errors.is_empty(), "calls failed: {errors:?}");
    assert!(n > 10, "the writer barely ran: {n}");
    // Exactly once: the counter equals the acknowledged increments.
    let counter = client.get("counter").await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&counter.value), n.to_string());
    // Nothing acknowledged is missing.
    for &i in &acked {
        let v = client.get(format!("w:{i:05}")).await.unwrap();
        assert_eq!(v.map(|v| v.value), Some(format!("after {i}").into_bytes()), "w:{i:05}");
    }
    // A scan across the ranges sees every plain put once, in order.
    let mut keys = Vec::new();
    let mut scanner = client.scanner("w:", Some(Key::from("w;")), false);
    while let Some(item) = scanner.next().await.unwrap() {
        keys.push(item.key.to_string());
    }
    let expected: Vec<String> =
        acked.iter().map(|i| format!("w:{i:05}")).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(
        keys.len(),
        expected.len(),
        "the scan returned {} keys for {} acknowledged puts",
        keys.len(),
        expected.len()
    );
    assert_eq!(keys, expected, "the scan returned keys out of order, twice, missing or never acknowledged");
    drop(master);
}

/// Full scans, forward and reverse, while ranges keep moving between nodes (drain, undrain):
/// every key comes back once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_return_every_key_once_while_ranges_move() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let splits: Vec<String> = (1..10).map(|i| format!("k{i}")).collect();
    create_ranges(&open_store(&store), &splits.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let master = MasterProc::start(&root.join("m"), &store);
    let _nodes: Vec<NodeProc> = (0..3).map(|i| start_fast_node(&root.join(format!("n{i}")), &store)).collect();
    let client = Client::connect(&[master.rpc.as_str()]).await.unwrap();
    let expected: Vec<String> = (0..2000).map(|i| format!("k{i:04}")).collect();
    for k in &expected {
        client.put(k.as_str(), "v").await.unwrap();
    }
    let status = client.master_status().await.unwrap();
    let node_ids: Vec<String> = status.nodes.iter().map(|n| n.node_id.to_string()).collect();
    // Move ranges around the whole time: drain each node in turn, then undo.
    let stop = Arc::new(AtomicBool::new(false));
    // The operator's own data directory (no secrets: this cluster has no tokens), so no
    // stray `./ampstore-data` decides the credential.
    let operator = root.join("operator");
    let mover = {
        let (stop, rpc) = (stop.clone(), master.rpc.clone());
        tokio::spawn(async move {
            let mut moves = 0;
            while !stop.load(Ordering::Relaxed) {
                for id in &node_ids {
                    for undo in [false, true] {
                        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ampstore"))
                            .arg("--data")
                            .arg(&operator)
                            .args(["drain", id, "--master", &rpc, "--no-wait"])
                            .args(undo.then_some("--undo"))
                            .output()
                            .await
                            .unwrap();
                        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        moves += 1;
                    }
                }
            }
            moves
        })
    };
    // Watches the owners the master records while the scans run: the moves must be real.
    let watcher = {
        let (stop, client) = (stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut last: std::collections::HashMap<RangeId, NodeId> = std::collections::HashMap::new();
            let mut moved = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = client.master_status().await {
                    for r in s.ranges {
                        if let Some(owner) = r.owner
                            && let Some(before) = last.insert(r.range_id, owner.clone())
                            && before != owner
                        {
                            moved += 1;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            moved
        })
    };
    let started = Instant::now();
    let mut scans = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for reverse in [false, true] {
            let mut keys = Vec::new();
            let mut scanner = client.scanner("", None, reverse);
            while let Some(item) = scanner.next().await.unwrap() {
                keys.push(item.key.to_string());
            }
            if reverse {
                keys.reverse();
            }
            assert_eq!(keys, expected, "a {} scan while ranges move", if reverse { "reverse" } else { "forward" });
            scans += 1;
        }
        // Small pages cross range boundaries often.
        let mut keys = Vec::new();
        let mut start = Key::default();
        loop {
            let page = client.scan(start.clone(), None, 37, false).await.unwrap();
            keys.extend(page.items.iter().map(|i| i.key.to_string()));
            match page.resume {
                Some(r) => start = r,
                None => break,
            }
        }
        assert_eq!(keys, expected, "paged scan");
    }
    stop.store(true, Ordering::Relaxed);
    let moves = mover.await.unwrap();
    let moved = watcher.await.unwrap();
    let after = client.master_status().await.unwrap();
    println!(
        "{scans} full scans during {moves} drain/undrain steps, {moved} ranges changed owner; final owners {:?}",
        after.nodes.iter().map(|n| n.ranges).collect::<Vec<_>>()
    );
    assert!(moves >= 4);
    // 10 ranges over 3 nodes: each drain moves about 3, each undrain rebalances some back.
    assert!(moved >= 10, "only {moved} ranges changed owner while the scans ran");
}
