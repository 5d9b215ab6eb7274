//! Range splits with real processes: crash-safety at every step, and a large load that ends
//! in hundreds of ranges (issue 7).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig, Key};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn split_flags(split_bytes: u64) -> Vec<String> {
    let mut f = fast_node_flags();
    f.extend(["--set".to_string(), format!("node.split_bytes={split_bytes}")]);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_split_loses_nothing() {
    let _serial = SERIAL.lock().await;
    for point in ["split:entry", "split:left", "split:right", "split:commit"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("store");
        let master = MasterProc::start(&root.join("m"), &store);
        let flags = split_flags(8192);
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Node A crashes at the point; it starts alone, so it owns the first range.
        let mut a = NodeProc::start_with_env(&root.join("a"), &store, &flag_refs, &[("AMPSTORE_TEST_CRASH_AT", point)]);
        let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
        cfg.call_deadline = Duration::from_secs(20);
        let client = Client::with_config(cfg).await.unwrap();
        client.put("seed", "x").await.unwrap();
        let b = NodeProc::start(&root.join("b"), &store, &flag_refs);
        // Write until A has crashed at the point and B has taken over; every write must succeed.
        let mut acked = BTreeSet::new();
        acked.insert("seed".to_string());
        let started = Instant::now();
        let mut i = 0u64;
        let mut crashed_at = None;
        while crashed_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(4)) {
            let k = format!("key{i:05}");
            client.put(k.as_str(), vec![b'v'; 200]).await.unwrap_or_else(|e| panic!("{point}: write {k}: {e}"));
            acked.insert(k);
            i += 1;
            if crashed_at.is_none() && matches!(a.child.try_wait(), Ok(Some(_))) {
                crashed_at = Some(Instant::now());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{point}: node A never reached its crash point");
        }
        let keys = full_scan(&client).await;
        let unique: BTreeSet<String> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), unique.len(), "{point}: a key came back twice");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{point}: scan out of order");
        assert_eq!(unique, acked, "{point}: acknowledged writes missing or extra keys");
        let status = client.master_status().await.unwrap();
        assert_contiguous(&status.ranges);
        assert!(status.ranges.len() >= 2, "{point}: the split never completed");
        println!(
            "{point}: {} writes, A crashed, {} ranges after recovery by {}",
            acked.len(),
            status.ranges.len(),
            b.node_id
        );
        a.kill9();
        drop(b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_keys_end_in_hundreds_of_ranges() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let master = MasterProc::start(&root.join("m"), &store);
    let flags = split_flags(64 * 1024);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> =
        (0..3).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &flag_refs)).collect();
    let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(30);
    let client = Client::with_config(cfg).await.unwrap();
    const KEYS: u64 = 200_000;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
        tasks.spawn(async move {
            let mut worst = Duration::ZERO;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= KEYS {
                    return worst;
                }
                // Spread over the key space so many ranges split at once.
                let k = format!("{:08x}", (i.wrapping_mul(0x9E37_79B9) & 0xffff_ffff) ^ 0x5a5a);
                let t = Instant::now();
                if let Err(e) = client.put(k.as_str(), vec![b'v'; 100]).await {
                    failed.store(true, Ordering::Relaxed);
                    panic!("write {k} failed during splits: {e}");
                }
                worst = worst.max(t.elapsed());
            }
        });
    }
    let mut worst = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        worst = worst.max(r.unwrap());
    }
    assert!(!failed.load(Ordering::Relaxed));
    let took = started.elapsed();
    let status = client.master_status().await.unwrap();
    println!(
        "{KEYS} writes in {:.1} s ({:.0}/s), slowest {:.0} ms; {} ranges",
        took.as_secs_f64(),
        KEYS as f64 / took.as_secs_f64(),
        worst.as_secs_f64() * 1000.0,
        status.ranges.len()
    );
    assert!(status.ranges.len() >= 100, "only {} ranges", status.ranges.len());
    assert_contiguous(&status.ranges);
    let keys = full_scan(&client).await;
    assert_eq!(keys.len() as u64, KEYS, "a full scan returns every key once");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates");
    let _ = Key::default();
}

/// Writes from 8 tasks until `until` says stop or `limit` passes; returns how many.
async fn write_hot(client: &Client, limit: Duration, until: impl Fn(usize) -> bool) -> (u64, usize) {
    let started = Instant::now();
    let mut written = 0u64;
    loop {
        let ranges = client.master_status().await.unwrap().ranges.len();
        if until(ranges) || started.elapsed() >= limit {
            return (written, ranges);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u64 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in 0..100u64 {
                    let k = format!("hot{:04}", (t * 100 + i) % 500);
                    client.put(k.as_str(), vec![b'v'; 100]).await.unwrap_or_else(|e| panic!("write {k}: {e}"));
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        written += 800;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_range_splits_only_while_another_node_is_alive() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let master = MasterProc::start(&root.join("m"), &store);
    // No size splits; hot above 100 writes/s for 1 s.
    let mut flags = split_flags(0);
    for kv in ["node.hot_split_writes_per_sec=100", "node.hot_split_ms=1000"] {
        flags.extend(["--set".to_string(), kv.to_string()]);
    }
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _a = NodeProc::start(&root.join("a"), &store, &flag_refs);
    let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(20);
    let client = Client::with_config(cfg).await.unwrap();
    // Alone: hot for five times the hot time, and still one range.
    let (written, ranges) = write_hot(&client, Duration::from_secs(5), |_| false).await;
    assert!(written as f64 / 5.0 > 200.0, "not hot enough to test: {written} writes in 5 s");
    assert_eq!(ranges, 1, "a lone node split a hot range");
    // A second node joins: the still-hot range splits (within the hot time, the next gossip
    // refresh and the check's second).
    let _b = NodeProc::start(&root.join("b"), &store, &flag_refs);
    let (written, ranges) = write_hot(&client, Duration::from_secs(30), |n| n >= 2).await;
    println!("{written} writes after the second node joined; {ranges} ranges");
    assert!(ranges >= 2, "the hot range never split with a second node alive");
    let status = client.master_status().await.unwrap();
    assert_contiguous(&status.ranges);
}
