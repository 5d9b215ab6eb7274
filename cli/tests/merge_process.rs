//! Range merges with real processes (issue 7): small idle neighbours merge into one range
//! holding every key (also when they sit on two nodes), and a crash at every step of a
//! merge loses nothing.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ampstore_client::Client;
use ampstore_common::protocol::RangeView;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MERGE_IDLE_MS: u64 = 600;
/// Merges need combined data under a quarter of this.
const SPLIT_BYTES: u64 = 64 * 1024;

fn master_flags() -> [String; 2] {
    ["--set".to_string(), format!("master.merge_idle_ms={MERGE_IDLE_MS}")]
}

fn node_flags() -> Vec<String> {
    let mut f = fast_node_flags();
    f.extend(["--set".to_string(), format!("node.split_bytes={SPLIT_BYTES}")]);
    f
}

/// Every key of `acked` comes back once, in order, with nothing else; ranges contiguous.
async fn assert_all_keys(what: &str, client: &Client, acked: &BTreeSet<String>) -> Vec<RangeView> {
    let keys = full_scan(client).await;
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "{what}: a key came back twice");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{what}: scan out of order");
    assert_eq!(&unique, acked, "{what}: acknowledged writes missing, or extra keys");
    for k in acked.iter().step_by(17) {
        let v = client.get(k.as_str()).await.unwrap().unwrap_or_else(|| panic!("{what}: get {k} found nothing"));
        assert_eq!(v.value, k.as_bytes(), "{what}: value of {k}");
    }
    let status = client.master_status().await.unwrap();
    assert_contiguous(&status.ranges);
    status.ranges
}

async fn wait_for_ranges(client: &Client, n: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let count = client.master_status().await.map(|s| s.ranges.len()).unwrap_or(usize::MAX);
        if count == n {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "still {count} ranges after {timeout:?} (want {n})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_idle_neighbours_on_two_nodes_merge_into_one_range() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    create_ranges(&open_store(&store), &["d", "h", "m", "r", "w"]).await;
    let master = MasterProc::start_with(&root.join("m"), &store, &master_flags().each_ref().map(String::as_str));
    let flags = node_flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> =
        (0..2).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &flag_refs)).collect();
    let client = client_for(&master).await;
    // 260 keys of about 20 bytes: far under a quarter of the split size in total. Written
    // round-robin over the ranges, so none sits idle (and merges) while the others fill.
    let mut acked = BTreeSet::new();
    for i in 0..10 {
        for c in b'a'..=b'z' {
            let k = format!("{}{i:03}", c as char);
            client.put(k.as_str(), k.as_bytes()).await.unwrap();
            acked.insert(k);
        }
    }
    let before = client.master_status().await.unwrap();
    // On a slow machine a pair may have merged already; most are still apart.
    assert!(before.ranges.len() >= 3, "{:?}", before.ranges);
    let owners: BTreeSet<_> = before.ranges.iter().filter_map(|r| r.owner.clone()).collect();
    assert_eq!(owners.len(), 2, "the ranges are spread over both nodes: {:?}", before.ranges);
    let took = wait_for_ranges(&client, 1, Duration::from_secs(60)).await;
    println!(
        "{} idle ranges on 2 nodes merged into 1 in {:.1} s (idle period {MERGE_IDLE_MS} ms)",
        before.ranges.len(),
        took.as_secs_f64()
    );
    let ranges = assert_all_keys("after merging", &client, &acked).await;
    assert!(ranges[0].generation > 1, "the merged range is a new generation");
    // The merged range takes writes, and the old routes in the client's cache recover.
    for k in ["a500", "k500", "z500"] {
        client.put(k, k.as_bytes()).await.unwrap();
        acked.insert(k.to_string());
    }
    assert_all_keys("after writing to the merged range", &client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_of_a_merge_loses_nothing() {
    let _serial = SERIAL.lock().await;
    for point in ["merge:entry", "merge:right", "merge:left", "merge:snapshot", "merge:commit"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("store");
        create_ranges(&open_store(&store), &["m"]).await;
        let master = MasterProc::start_with(&root.join("m"), &store, &master_flags().each_ref().map(String::as_str));
        let flags = node_flags();
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Node A serves both ranges alone and crashes at the point when it merges them.
        let mut a = NodeProc::start_with_env(&root.join("a"), &store, &flag_refs, &[("AMPSTORE_TEST_CRASH_AT", point)]);
        let client = client_for(&master).await;
        let mut acked = BTreeSet::new();
        for i in 0..60 {
            for side in ["c", "p"] {
                let k = format!("{side}{i:03}");
                client.put(k.as_str(), k.as_bytes()).await.unwrap_or_else(|e| panic!("{point}: write {k}: {e}"));
                acked.insert(k);
            }
        }
        let started = Instant::now();
        while !matches!(a.child.try_wait(), Ok(Some(_))) {
            assert!(started.elapsed() < Duration::from_secs(30), "{point}: node A never reached its crash point");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let crashed_after = started.elapsed();
        // Node B takes both ranges (or the merged one) over once A's epoch ends, and
        // completes the merge (itself, when A's attempt was rolled back).
        let _b = NodeProc::start(&root.join("b"), &store, &flag_refs);
        let recovered = wait_for_ranges(&client, 1, Duration::from_secs(60)).await;
        assert_all_keys(point, &client, &acked).await;
        for i in 0..20 {
            let k = format!("z{i:03}");
            client.put(k.as_str(), k.as_bytes()).await.unwrap_or_else(|e| panic!("{point}: write {k} after: {e}"));
            acked.insert(k);
        }
        assert_all_keys(point, &client, &acked).await;
        println!(
            "{point}: A crashed {:.1} s after the last write; merged by B {:.1} s after it started; {} keys",
            crashed_after.as_secs_f64(),
            recovered.as_secs_f64(),
            acked.len()
        );
        a.kill9();
    }
}

/// The two ways a live merge can end without a clear commit: the master refuses it (the
/// merge is rolled back and both ranges serve again), or it commits and the answer is lost
/// (the node finds the merged range recorded and carries on). Either way nothing is lost
/// and the ranges end up merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_unanswered_commit_loses_nothing() {
    let _serial = SERIAL.lock().await;
    for point in ["merge:refused", "merge:answer-lost"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("store");
        create_ranges(&open_store(&store), &["m"]).await;
        let master = MasterProc::start_with(&root.join("m"), &store, &master_flags().each_ref().map(String::as_str));
        let flags = node_flags();
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let _a =
            NodeProc::start_with_env(&root.join("a"), &store, &flag_refs, &[("AMPSTORE_TEST_FAIL_ONCE_AT", point)]);
        let client = client_for(&master).await;
        let mut acked = BTreeSet::new();
        for i in 0..50 {
            for side in ["c", "p"] {
                let k = format!("{side}{i:03}");
                client.put(k.as_str(), k.as_bytes()).await.unwrap();
                acked.insert(k);
            }
        }
        let took = wait_for_ranges(&client, 1, Duration::from_secs(60)).await;
        assert_all_keys(point, &client, &acked).await;
        for k in ["a", "n", "zz"] {
            client.put(k, k.as_bytes()).await.unwrap_or_else(|e| panic!("{point}: write {k} after: {e}"));
            acked.insert(k.to_string());
        }
        assert_all_keys(point, &client, &acked).await;
        println!("{point}: merged {:.1} s after the last write", took.as_secs_f64());
    }
}
