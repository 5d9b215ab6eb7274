//! A node stopped with SIGSTOP, at default settings, in a cluster as `up` runs it (the
//! embedded store served by one process): the paused node's ranges move to the other nodes
//! within the failover time, and keys on the other nodes never stall meanwhile. With one
//! SQLite file shared by every process, a node paused inside a write transaction kept its
//! write lock and stalled every write in the cluster for the whole pause.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig, RangeLocation};
use support::*;

/// Failover at default settings is about 1.1-1.4 s (`scripts/bench-failover`); the issue's
/// bound is 2 s. The test allows a little more, for a loaded CI machine.
const MOVED_WITHIN: Duration = Duration::from_millis(2500);
/// No single operation on a key of a running node may take this long while another node is
/// paused (one durable write normally takes milliseconds).
const STALL: Duration = Duration::from_millis(750);
/// How long the node stays paused: well past its failover.
const PAUSE: Duration = Duration::from_secs(4);

async fn client_of(data: &std::path::Path, cluster: &serde_json::Value) -> Client {
    let token = std::fs::read_to_string(data.join("cluster.token")).unwrap().trim().to_string();
    let mut cfg = ClientConfig::new(&[cluster["masters"][0]["rpc"].as_str().unwrap()]);
    cfg.token = Some(token);
    Client::with_config(cfg).await.unwrap()
}

/// One key in each range (the range's start key, or "k" for the first).
fn probe_key(r: &RangeLocation) -> String {
    let start = String::from_utf8(r.start.as_bytes().to_vec()).unwrap();
    if start.is_empty() { "k".into() } else { start }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_stalls_only_its_own_ranges_until_they_move() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = UpRun::start(&data, &["--nodes", "3", "--no-restart", "--split-bytes", "4096"]);
    let cluster = up.wait_cluster_file(&data).await;
    let client = Arc::new(client_of(&data, &cluster).await);

    // Enough data for a dozen ranges, then wait until every node serves some.
    for i in 0..300 {
        client.put(format!("k{i:04}"), vec![b'v'; 200]).await.unwrap();
    }
    // The master spreads the ranges (balance moves); wait until every node serves some and
    // nothing has moved for two seconds, so that only the pause moves ranges from here on.
    let mut ranges = Vec::new();
    let mut stable_since = Instant::now();
    let placement = |rs: &[RangeLocation]| rs.iter().map(|r| (r.range_id, r.node_id.clone())).collect::<Vec<_>>();
    wait_until("ranges on every node, placed for good", Duration::from_secs(90), async || {
        let now = client.ranges().await.unwrap();
        if placement(&now) != placement(&ranges) {
            stable_since = Instant::now();
        }
        ranges = now;
        let owners: BTreeSet<_> = ranges.iter().map(|r| r.node_id.clone()).collect();
        owners.len() == 3 && stable_since.elapsed() > Duration::from_secs(2)
    })
    .await;
    let victim = ranges[ranges.len() / 2].node_id.clone();
    let victim_pid = pid_of(&cluster, "nodes", victim.as_str());
    let (theirs, others): (Vec<_>, Vec<_>) = ranges.iter().partition(|r| r.node_id == victim);
    println!("{} ranges; node {victim} (pid {victim_pid}) serves {}", ranges.len(), theirs.len());

    // Writers on the other nodes' keys, each timing every operation.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for r in &others {
        let (client, stop, key) = (client.clone(), stop.clone(), probe_key(r));
        writers.push(tokio::spawn(async move {
            let (mut slowest, mut ops) = (Duration::ZERO, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                client.put(key.as_str(), b"x".to_vec()).await.unwrap();
                client.get(key.as_str()).await.unwrap();
                slowest = slowest.max(started.elapsed());
                ops += 2;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (key, slowest, ops)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SAFETY: signalling a child of our own child (the node `up` started).
    unsafe { libc::kill(victim_pid as i32, libc::SIGSTOP) };
    let paused = Instant::now();
    let moved_key = probe_key(theirs[0]);
    assert_eq!(client.locate(moved_key.as_str()).await.unwrap().node_id, victim, "{moved_key} moved before the pause");
    // A client with a fresh route each time: when does the master hand the range on?
    let mut moved_after = None;
    while paused.elapsed() < PAUSE {
        match client.locate(moved_key.as_str()).await {
            Ok(loc) if loc.node_id != victim && moved_after.is_none() => moved_after = Some(paused.elapsed()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The moved keys answer from their new owners, with the data written before the pause.
    for r in &theirs {
        let key = probe_key(r);
        client.put(key.as_str(), b"after".to_vec()).await.unwrap();
    }
    // Nothing written before the pause is lost (the probe keys were overwritten).
    let probes: BTreeSet<String> = ranges.iter().map(probe_key).collect();
    for i in 0..300 {
        let key = format!("k{i:04}");
        if !probes.contains(&key) {
            assert_eq!(client.get(key.as_str()).await.unwrap().map(|v| v.value), Some(vec![b'v'; 200]), "{key}");
        }
    }
    // SAFETY: as above.
    unsafe { libc::kill(victim_pid as i32, libc::SIGCONT) };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let moved_after = moved_after.unwrap_or_else(|| panic!("{moved_key} still on {victim} after {PAUSE:?}"));
    println!("the paused node's range moved {} ms after SIGSTOP", moved_after.as_millis());
    for w in writers {
        let (key, slowest, ops) = w.await.unwrap();
        println!("{key}: {ops} operations, slowest {} ms", slowest.as_millis());
        assert!(slowest < STALL, "{key} on a running node stalled {slowest:?} while another node was paused");
    }
    assert!(moved_after <= MOVED_WITHIN, "the paused node's range moved only after {moved_after:?}");
    up.stop();
}
