//! A load that fails on a transient store error (issue 14 item 1, review A2), with a real
//! node process; the test plays the master. The node retries the load with backoff, and
//! when the store keeps failing it gives the range back (clears its owner) so that a master
//! places it elsewhere. Only corruption leaves a range `Failed`.

mod support;

use std::time::{Duration, Instant};

use ampstore_common::Key;
use ampstore_common::protocol::{Op, Reply, Role};
use ampstore_store::meta;
use support::{NodeProc, TestClient, open_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_failed_on_a_transient_error_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node =
        NodeProc::start_with_env(&dir.path().join("a"), &store, &[], &[("AMPSTORE_TEST_FAIL_AT", "load:read:2")]);
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    // One assign, as a master sends it; nobody sends another.
    let assigned = c.call(Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: true }).await;
    println!("assign: {assigned:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.call(Op::Put { key: Key::from("k"), value: b"v".to_vec(), write_id: None }).await {
            Ok(Reply::Written { .. }) => break,
            other => {
                assert!(Instant::now() < deadline, "the range is not served after a transient load error: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_keeps_failing_gives_the_range_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node =
        NodeProc::start_with_env(&dir.path().join("a"), &store, &[], &[("AMPSTORE_TEST_FAIL_AT", "load:read:1000")]);
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    // Record this node as the owner first (as a master does before it assigns).
    let id = ampstore_common::NodeId::new(&node.node_id).unwrap();
    let epoch = meta::get_node(backend.meta.as_ref(), &id).await.unwrap().unwrap().record.epoch;
    let cur = meta::get_range(backend.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
    let mut desc = cur.record.clone();
    desc.owner = Some(meta::Owner { node_id: id.clone(), epoch });
    meta::put_range(backend.meta.as_ref(), &desc, ampstore_store::Expect::Version(cur.version)).await.unwrap();
    let assigned = c.call(Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: false }).await;
    assert!(matches!(assigned, Err(ampstore_common::error::Error::Unavailable { .. })), "{assigned:?}");
    // Given back: no owner, so a master places it elsewhere; and not held here as `Failed`.
    let owner = meta::get_range(backend.meta.as_ref(), &Key::default()).await.unwrap().unwrap().record.owner;
    assert_eq!(owner, None, "the node gave the range back");
    let Ok(Reply::Stats(stats)) = c.call(Op::RangeStats).await else { panic!("stats") };
    assert!(stats.ranges.is_empty(), "nothing held here: {:?}", stats.ranges);
}

/// A4: the node's epoch ends while a range loads. The instance loaded in the old epoch
/// must never be reported as serving; the master's next assign (in the new epoch) serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_loss_during_a_load_leaves_no_instance_of_the_old_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node = NodeProc::start_with_env(
        &dir.path().join("a"),
        &store,
        &[],
        &[("AMPSTORE_TEST_PAUSE_AT", "assign:loaded:1500")],
    );
    let assign = Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: true };
    let pending = {
        let (addr, assign) = (node.rpc.clone(), assign.clone());
        tokio::spawn(async move { TestClient::connect_as(&addr, Role::Master, None).await.unwrap().call(assign).await })
    };
    // The load is done and waits; end the node's epoch meanwhile (a master found it dead).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = ampstore_common::NodeId::new(&node.node_id).unwrap();
    let cur = meta::get_node(backend.meta.as_ref(), &id).await.unwrap().unwrap();
    let ended = meta::NodeRecord { epoch: ampstore_common::Epoch(cur.record.epoch.0 + 1), ended: true, ..cur.record };
    backend
        .meta
        .put(
            meta::PK_NODE,
            node.node_id.as_bytes(),
            &meta::encode(&ended),
            ampstore_store::Expect::Version(cur.version),
        )
        .await
        .unwrap();
    println!("first assign: {:?}", pending.await.unwrap());
    // The master assigns the range again once the node registered a new epoch.
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = c.call(assign.clone()).await;
        match c.call(Op::Put { key: Key::from("k"), value: b"v".to_vec(), write_id: None }).await {
            Ok(Reply::Written { .. }) => break,
            other => {
                assert!(Instant::now() < deadline, "the range is not served in the new epoch: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A5: an append lands but its answer is lost; the retry finds the slot taken by that very
/// entry. That is success, not a fence: the range goes on serving (on the old code it
/// dropped itself while still owned by this live node, unserved until a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_answer_was_lost_is_not_taken_for_a_fence() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let node = NodeProc::start_with_env(
        &dir.path().join("a"),
        &store,
        &[],
        &[("AMPSTORE_TEST_FAIL_ONCE_AT", "append:answer-lost")],
    );
    let mut c = TestClient::connect_as(&node.rpc, Role::Master, None).await.unwrap();
    let assign = Op::Assign { range_id: meta::FIRST_RANGE_ID, start: Key::default(), claim: true };
    assert!(matches!(c.call(assign).await, Ok(Reply::Assigned { .. })));
    let put = |k: &str| Op::Put { key: Key::from(k), value: b"v".to_vec(), write_id: None };
    let first = c.call(put("first")).await;
    assert!(matches!(first, Ok(Reply::Written { .. })), "the write whose answer was lost: {first:?}");
    let second = c.call(put("second")).await;
    assert!(matches!(second, Ok(Reply::Written { .. })), "the range still serves: {second:?}");
    let entries = backend.log.read(meta::FIRST_RANGE_ID, ampstore_common::Seq(1), 100).await.unwrap();
    assert_eq!(entries.len(), 3, "fence, first, second: each written once");
}
