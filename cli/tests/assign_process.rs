//! No stuck ranges on assign (issue 14 item 1, review S1 and A3), with a real node process;
//! the test plays the master (it creates the range and assigns it with a claim).
//!
//! - Two concurrent assigns of one range to one node load it once: one fence in the log,
//!   one instance.
//! - An assign whose caller gives up (a deadline shorter than the load) still finishes: the
//!   range serves, instead of staying `Loading` for good.

mod support;

use std::time::{Duration, Instant};

use ampstore_common::ids::RequestId;
use ampstore_common::protocol::{Op, Reply, Request, Role};
use ampstore_common::{Key, Seq};
use ampstore_store::EntryKind;
use ampstore_store::meta;
use support::{NodeProc, TestClient, open_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_assigns_of_one_range_load_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node = NodeProc::start(&dir.path().join("a"), &store, &[]);
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    let assign = Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: true };
    // Pipelined: both are in the node at once.
    let answers = c.pipeline(vec![assign.clone(), assign.clone(), assign.clone()]).await;
    println!("answers: {answers:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(c.call(assign.clone()).await, Ok(Reply::Assigned { .. })) {
        assert!(Instant::now() < deadline, "the range never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fences = backend
        .log
        .read(meta::FIRST_RANGE_ID, Seq(1), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EntryKind::Fence)
        .count();
    assert_eq!(fences, 1, "concurrent assigns loaded the range {fences} times (one instance per range per node)");
    let Ok(Reply::Stats(stats)) = c.call(Op::RangeStats).await else { panic!("stats") };
    assert_eq!(stats.ranges.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assign_whose_caller_gave_up_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node = NodeProc::start(&dir.path().join("a"), &store, &[]);
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    let assign = Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: true };
    // A deadline far shorter than a load: the server gives up on the caller's behalf.
    let hurried = Request { id: RequestId(900), deadline_ms: Some(1), op: assign.clone() };
    let first = c.raw_message(&hurried).await;
    println!("hurried assign: {first:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.call(assign.clone()).await {
            Ok(Reply::Assigned { .. }) => break,
            other => {
                assert!(Instant::now() < deadline, "the range is stuck after a cancelled assign: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let put = Op::Put { key: Key::from("k"), value: b"v".to_vec(), write_id: None };
    assert!(matches!(c.call(put).await, Ok(Reply::Written { .. })));
}

/// A merge whose caller gives up after both parents closed their logs still finishes: the
/// merged range serves (instead of both parents refusing writes for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_caller_gave_up_still_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    support::create_ranges(&backend, &["m"]).await;
    // A master places both ranges on the node and commits the merge.
    let master = support::MasterProc::start(&dir.path().join("m"), &store);
    let node = NodeProc::start_with_env(
        &dir.path().join("a"),
        &store,
        &[],
        &[("AMPSTORE_TEST_PAUSE_AT", "merge:closed:1500")],
    );
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    // Ranges are placed on demand: a write to each.
    let client = support::client_for(&master).await;
    client.put("a", "1").await.unwrap();
    client.put("x", "1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Reply::Stats(s)) = c.call(Op::RangeStats).await
            && s.ranges.iter().filter(|r| r.state == ampstore_common::protocol::RangeState::Serving).count() == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "the master never placed both ranges");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let merge = Op::Merge { left_id: ampstore_common::RangeId(1), right_id: ampstore_common::RangeId(2) };
    // The caller gives up while the merge waits with both parents closed.
    let hurried = Request { id: RequestId(901), deadline_ms: Some(500), op: merge };
    let first = c.raw_message(&hurried).await;
    println!("hurried merge: {first:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let put = Op::Put { key: Key::from("x"), value: b"v".to_vec(), write_id: None };
        match c.call(put).await {
            Ok(Reply::Written { .. }) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "writes to a parent are refused for good after a cancelled merge: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let Ok(Reply::Stats(stats)) = c.call(Op::RangeStats).await else { panic!("stats") };
    assert_eq!(stats.ranges.len(), 1, "the merged range serves: {:?}", stats.ranges);
}

/// S2: once the merged range serves, no parent answers reads any more: a delete across
/// both halves taken by the merged range is never followed by a parent's stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_parent_answers_reads_once_the_merged_range_serves() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    support::create_ranges(&backend, &["m"]).await;
    let master = support::MasterProc::start(&dir.path().join("m"), &store);
    let node = NodeProc::start_with_env(
        &dir.path().join("a"),
        &store,
        &[],
        &[("AMPSTORE_TEST_PAUSE_AT", "merge:merged-serving:2000")],
    );
    let client = support::client_for(&master).await;
    client.put("a", "1").await.unwrap();
    client.put("x", "1").await.unwrap();
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Reply::Stats(s)) = c.call(Op::RangeStats).await
            && s.ranges.iter().filter(|r| r.state == ampstore_common::protocol::RangeState::Serving).count() == 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "the master never placed both ranges");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let merging = {
        let addr = node.rpc.clone();
        tokio::spawn(async move {
            let mut m = TestClient::connect_as(&addr, Role::Master, None).await.unwrap();
            m.call(Op::Merge { left_id: ampstore_common::RangeId(1), right_id: ampstore_common::RangeId(2) }).await
        })
    };
    // Delete across both halves as soon as the merged range takes it.
    let delete = Op::DeleteRange { start: Key::from(""), end: Some(Key::from(vec![0xff, 0xff])), write_id: None };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.call(delete.clone()).await {
            Ok(Reply::Deleted { removed: 2, .. }) => break,
            other => {
                assert!(Instant::now() < deadline, "the merged range never took the delete: {other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Reads of the right half while the parents are not yet stopped: never the old value.
    for _ in 0..10 {
        match c.call(Op::Get { key: Key::from("x") }).await {
            Ok(Reply::Value(Some(v))) => {
                panic!("a parent answered a stale read after the merged range deleted it: {v:?}")
            }
            Ok(Reply::Value(None)) | Err(ampstore_common::error::Error::RangeLoading { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(merging.await.unwrap(), Ok(Reply::MergeDone { .. })));
    assert!(matches!(c.call(Op::Get { key: Key::from("x") }).await, Ok(Reply::Value(None))));
}
