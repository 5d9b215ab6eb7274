//! Node processes on 127.0.0.1, killed, paused and fed garbage (issue: step 2).
//! Until the master exists the test plays its part: it creates the first range, claims
//! ranges through the admin `Assign`, and bumps a paused node's epoch.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, Reply, Role, Versioned};
use ampstore_common::{Epoch, Key, RangeId, Seq, Version};
use ampstore_store::meta::{self, NodeRecord, PK_NODE};
use ampstore_store::{Backend, Expect};
use support::{LIVENESS_MS, NodeProc, TestClient, open_store};

const RANGE: RangeId = meta::FIRST_RANGE_ID;

fn assign(claim: bool) -> Op {
    Op::Assign { range_id: RANGE, start: Key::default(), claim }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put { key: Key::from(k), value: v.as_bytes().to_vec(), write_id: None }
}

fn get(k: &str) -> Op {
    Op::Get { key: Key::from(k) }
}

struct Cluster {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: std::path::PathBuf,
    backend: Backend,
}

impl Cluster {
    async fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = root.join("store");
        let backend = open_store(&store);
        meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
        Cluster { _dir: dir, root, store, backend }
    }

    fn node(&self, name: &str) -> NodeProc {
        NodeProc::start(&self.root.join(name), &self.store, &[])
    }

    /// What a master does to a node it found dead: bump its epoch.
    async fn bump_epoch(&self, node_id: &str) {
        let id = ampstore_common::NodeId::new(node_id).unwrap();
        let cur = meta::get_node(self.backend.meta.as_ref(), &id).await.unwrap().unwrap();
        let bumped = NodeRecord { epoch: Epoch(cur.record.epoch.0 + 1), ..cur.record };
        self.backend
            .meta
            .put(PK_NODE, node_id.as_bytes(), &meta::encode(&bumped), Expect::Version(cur.version))
            .await
            .unwrap();
    }
}

/// A connection in the master's role: the test plays the master (assigns, snapshots).
async fn client(n: &NodeProc) -> TestClient {
    TestClient::connect_as(&n.rpc, Role::Master, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_no_acknowledged_put() {
    let c = Cluster::new().await;
    let mut a = c.node("a");
    client(&a).await.call(assign(true)).await.unwrap();

    const CONNECTIONS: usize = 50;
    const PUTS: usize = 10_000;
    let acked: Arc<std::sync::Mutex<Vec<(String, String, Version)>>> = Default::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..CONNECTIONS {
        let (acked, sent, rpc) = (acked.clone(), sent.clone(), a.rpc.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = TestClient::connect(&rpc).await.unwrap();
            for i in 0..PUTS / CONNECTIONS {
                let (k, v) = (format!("k{t:02}-{i:04}"), format!("v{t}-{i}-{}", "x".repeat(i % 50)));
                sent.fetch_add(1, Ordering::Relaxed);
                match cl.call(put(&k, &v)).await {
                    Ok(Reply::Written { version }) => acked.lock().unwrap().push((k, v, version)),
                    Ok(other) => panic!("unexpected reply {other:?}"),
                    Err(_) => return, // the node died
                }
            }
        }));
    }
    // Kill it mid-stream.
    let start = Instant::now();
    while acked.lock().unwrap().len() < 3000 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "{} puts sent, {} acknowledged before SIGKILL at {:?}",
        sent.load(Ordering::Relaxed),
        acked.len(),
        start.elapsed()
    );
    assert!(acked.len() >= 3000 && acked.len() < PUTS, "kill landed mid-stream ({} acked)", acked.len());

    // The same node restarts (new epoch) and loads the range again.
    let a2 = c.node("a");
    assert_eq!(a2.node_id, a.node_id, "node id kept in its data dir");
    let mut cl = client(&a2).await;
    cl.call(assign(true)).await.unwrap();
    let mut missing = 0;
    for chunk in acked.chunks(500) {
        let replies = cl.pipeline(chunk.iter().map(|(k, _, _)| get(k)).collect()).await;
        for ((k, v, version), r) in chunk.iter().zip(replies) {
            match r {
                Ok(Reply::Value(Some(Versioned { value, version: got }))) => {
                    assert_eq!(value, v.as_bytes(), "{k}");
                    assert_eq!(&got, version, "{k}");
                }
                other => {
                    missing += 1;
                    eprintln!("{k}: {other:?}");
                }
            }
        }
    }
    assert_eq!(missing, 0, "acknowledged puts lost");
    println!("all {} acknowledged puts read back with their values and versions", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zombie_owner_acknowledges_nothing_after_takeover() {
    let c = Cluster::new().await;
    let a = c.node("a");
    let b = c.node("b");
    let mut ca = client(&a).await;
    ca.call(assign(true)).await.unwrap();
    ca.call(put("k", "from-a")).await.unwrap();

    a.signal(libc::SIGSTOP);
    let paused = Instant::now();
    // B may not take the range while A's epoch is current.
    let mut cb = client(&b).await;
    let refused = cb.call(assign(true)).await;
    assert!(matches!(refused, Err(Error::Conflict { .. })), "{refused:?}");
    // Past A's liveness window, the "master" ends A's epoch and B takes over.
    tokio::time::sleep(Duration::from_millis(LIVENESS_MS + 300)).await;
    c.bump_epoch(&a.node_id).await;
    cb.call(assign(true)).await.unwrap();
    cb.call(put("k", "from-b")).await.unwrap();

    a.signal(libc::SIGCONT);
    println!("A paused for {:?}", paused.elapsed());
    // From the moment it resumes, A must neither acknowledge a write nor serve a read.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut attempts = 0;
    while Instant::now() < deadline {
        let r = ca.call(put("k", "zombie-write")).await;
        assert!(r.is_err(), "zombie acknowledged a write: {r:?}");
        let r = ca.call(get("k")).await;
        assert!(r.is_err(), "zombie served a read: {r:?}");
        attempts += 2;
    }
    println!("{attempts} requests to the resumed zombie: all refused");
    assert_eq!(
        cb.call(get("k")).await,
        Ok(Reply::Value(Some(Versioned { value: b"from-b".to_vec(), version: Version { seq: Seq(4), index: 0 } })))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_loads_snapshot_plus_log_tail() {
    let c = Cluster::new().await;
    let mut a = c.node("a");
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("key{i:05}")).collect();
    for chunk in keys.chunks(100) {
        for r in cl.pipeline(chunk.iter().map(|k| put(k, &format!("v1-{k}"))).collect()).await {
            r.unwrap();
        }
    }
    let Ok(Reply::Snapshotted { seq, .. }) = cl.call(Op::Snapshot { range_id: RANGE }).await else { panic!() };
    // The log below the checkpoint is gone.
    let first = c.backend.log.read(RANGE, Seq(1), 1).await.unwrap();
    assert_eq!(first[0].0, seq, "log truncated up to the checkpoint");
    // A tail after the snapshot: overwrite some keys, delete one.
    for k in keys.iter().step_by(10) {
        cl.call(put(k, &format!("v2-{k}"))).await.unwrap();
    }
    cl.call(Op::Delete { key: Key::from("key00001"), write_id: None }).await.unwrap();
    a.kill9();

    let a = c.node("a");
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    let Ok(Reply::Stats(stats)) = cl.call(Op::RangeStats).await else { panic!() };
    let r = &stats.ranges[0];
    assert_eq!(r.checkpoint_seq, seq, "loaded from the snapshot");
    assert!(r.applied_seq.0 > seq.0 + 100, "and replayed the tail");
    assert_eq!(r.keys, 999);
    for (i, k) in keys.iter().enumerate() {
        let expect = if i == 1 {
            None
        } else if i % 10 == 0 {
            Some(format!("v2-{k}"))
        } else {
            Some(format!("v1-{k}"))
        };
        let Ok(Reply::Value(v)) = cl.call(get(k)).await else { panic!("{k}") };
        assert_eq!(v.map(|v| String::from_utf8(v.value).unwrap()), expect, "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_snapshot_is_not_served() {
    let c = Cluster::new().await;
    let mut a = c.node("a");
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    for i in 0..200 {
        cl.call(put(&format!("k{i:03}"), "value")).await.unwrap();
    }
    cl.call(Op::Snapshot { range_id: RANGE }).await.unwrap();
    a.kill9();
    let desc = meta::get_range(c.backend.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
    let blob = c.store.join("blobs").join(&desc.record.checkpoint.unwrap().blob);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    // Blobs are immutable to the store; the test damages it behind its back.
    std::fs::write(&blob, &bytes).unwrap();

    let a = c.node("a");
    let mut cl = client(&a).await;
    let err = cl.call(assign(true)).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    let r = cl.call(get("k001")).await;
    assert!(matches!(&r, Err(Error::Unavailable { reason }) if reason.contains("corrupt")), "{r:?}");
    let Ok(Reply::Stats(stats)) = cl.call(Op::RangeStats).await else { panic!() };
    assert_eq!(stats.ranges[0].state, ampstore_common::protocol::RangeState::Failed);
    println!("load refused: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_leaves_the_node_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::new().await;
    let a = c.node("a");
    let mut good = client(&a).await;
    good.call(assign(true)).await.unwrap();

    // Random bytes instead of a hello: the node closes that connection.
    for seed in 0..20u64 {
        let mut s = tokio::net::TcpStream::connect(&a.rpc).await.unwrap();
        let junk: Vec<u8> = (0..256).map(|i| ((i as u64 * 2654435761 + seed * 97) >> 7) as u8).collect();
        let _ = s.write_all(&junk).await;
        // Random bytes may announce a frame longer than what was sent; the node waits for
        // the rest until the peer goes away, then drops the truncated frame.
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("node closed it");
    }
    // A length of 0xFFFFFFFF after a valid hello: TooLarge, then closed.
    let mut s = TestClient::connect(&a.rpc).await.unwrap();
    let huge = s.raw_send(&u32::MAX.to_be_bytes()).await;
    assert!(matches!(huge, Some(Err(Error::TooLarge { .. }))), "{huge:?}");
    // Valid frames of the wrong shape: Invalid, and the connection goes on.
    let mut s = TestClient::connect(&a.rpc).await.unwrap();
    #[derive(serde::Serialize)]
    struct Wrong {
        id: u64,
        op: &'static str,
    }
    let r = s.raw_message(&Wrong { id: 5, op: "Explode" }).await;
    assert!(matches!(r, Some(Err(Error::Invalid { .. }))), "{r:?}");
    let r = s.raw_message(&[1u8, 2, 3]).await;
    assert!(r.is_some(), "an error frame before closing");
    // Oversized key and value: typed errors.
    let mut s = TestClient::connect(&a.rpc).await.unwrap();
    let big_key = "k".repeat(ampstore_common::limits::KEY_BYTES_MAX + 1);
    assert!(matches!(s.call(put(&big_key, "v")).await, Err(Error::TooLarge { .. })));
    let big_value =
        Op::Put { key: Key::from("k"), value: vec![0; ampstore_common::limits::VALUE_BYTES_MAX + 1], write_id: None };
    assert!(matches!(s.call(big_value).await, Err(Error::TooLarge { .. })));
    assert_eq!(s.call(Op::Ping).await, Ok(Reply::Pong), "same connection still works");

    // Through all of it, the well-formed client kept working.
    good.call(put("still", "here")).await.unwrap();
    assert!(matches!(good.call(get("still")).await, Ok(Reply::Value(Some(_)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_releases_ranges_and_exits() {
    let c = Cluster::new().await;
    let mut a = c.node("a");
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    for i in 0..50 {
        cl.call(put(&format!("k{i}"), "v")).await.unwrap();
    }
    let started = Instant::now();
    a.signal(libc::SIGTERM);
    let status = a.child.wait().unwrap();
    println!("node exited {status:?} {:?} after SIGTERM", started.elapsed());
    assert!(status.success(), "{status:?}");
    let desc = meta::get_range(c.backend.meta.as_ref(), &Key::default()).await.unwrap().unwrap().record;
    assert_eq!(desc.owner, None, "owner cleared on release");
    let cp = desc.checkpoint.expect("snapshot taken before release");
    // Everything is in the snapshot: the log holds only the checkpoint entry.
    assert_eq!(c.backend.log.head(RANGE).await.unwrap(), Some(cp.seq));
    // Another node picks it up without a claim race and sees the data.
    let b = c.node("b");
    let mut cb = client(&b).await;
    cb.call(assign(true)).await.unwrap();
    assert!(matches!(cb.call(get("k49")).await, Ok(Reply::Value(Some(_)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_port_reports_status_and_ranges() {
    let c = Cluster::new().await;
    let a = c.node("a");
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    for i in 0..10 {
        cl.call(put(&format!("k{i}"), "0123456789")).await.unwrap();
    }
    let status = support::http_get_json(&a.admin, "/v1/status").await;
    assert_eq!(status["id"], a.node_id.as_str());
    assert_eq!(status["rpc"], a.rpc.as_str());
    assert_eq!(status["live"], true);
    assert_eq!(status["ranges"]["serving"], 1);
    assert_eq!(status["keys"], 10);
    let ranges = support::http_get_json(&a.admin, "/v1/ranges").await;
    assert_eq!(ranges[0]["range_id"], 1);
    assert_eq!(ranges[0]["state"], "serving");
    assert_eq!(ranges[0]["start"], "");
    assert_eq!(ranges[0]["end"], serde_json::Value::Null);
    assert_eq!(ranges[0]["data_bytes"], 10 * (2 + 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_descriptor_checkpoint_is_refused_not_a_panic() {
    let c = Cluster::new().await;
    let cur = meta::get_range(c.backend.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
    let mut desc = cur.record;
    desc.checkpoint = Some(meta::Checkpoint { seq: Seq(u64::MAX), blob: "ranges/x".into(), merkle_root: vec![0; 32] });
    meta::put_range(c.backend.meta.as_ref(), &desc, Expect::Version(cur.version)).await.unwrap();
    let a = c.node("a");
    let mut cl = client(&a).await;
    let err = cl.call(assign(true)).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // The node is still up and answering.
    assert_eq!(cl.call(Op::Ping).await, Ok(Reply::Pong));
}

/// Reads are served from the range's published view, not through its actor: they must
/// still count as use, or a range that is only read would be released as idle under its
/// readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_that_is_only_read_is_not_released_as_idle() {
    const IDLE_MS: u64 = 1500;
    let c = Cluster::new().await;
    let a = NodeProc::start(&c.root.join("a"), &c.store, &["--set", &format!("node.idle_release_ms={IDLE_MS}")]);
    let mut cl = client(&a).await;
    cl.call(assign(true)).await.unwrap();
    cl.call(put("k", "v")).await.unwrap();
    // Read past the range's first idle check (every 5 s), by then idle for over `IDLE_MS`
    // but for the reads.
    let until = Instant::now() + Duration::from_millis(6500);
    while Instant::now() < until {
        let Ok(Reply::Value(Some(v))) = cl.call(get("k")).await else { panic!("the range stopped serving reads") };
        assert_eq!(v.value, b"v");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Ok(Reply::Stats(stats)) = cl.call(Op::RangeStats).await else { panic!("stats") };
    assert_eq!(stats.ranges.len(), 1, "still loaded");
    assert_eq!(stats.ranges[0].checkpoint_seq, Seq(0), "not released (a release snapshots the dirty range first)");
    // Without readers it is idle, and goes.
    support::wait_until(
        "the unread range to be released as idle",
        Duration::from_secs(15),
        async || matches!(cl.call(Op::RangeStats).await, Ok(Reply::Stats(s)) if s.ranges.is_empty()),
    )
    .await;
}
