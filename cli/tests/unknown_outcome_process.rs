//! "Unknown is not 'not written'" (issue 13 item 2, review S6 and S4), with real node
//! processes. The test plays the master: it creates ranges, claims them with the admin
//! `Assign`, and ends a node's epoch in the metadata store.
//!
//! - A node whose epoch ends while a transaction's entry is durable but not yet answered
//!   must answer `Timeout` (outcome unknown), never `NotOwner` ("not written, retry"); a
//!   retry with the same transaction id is then answered as committed, not applied again.
//! - A participant that resolved a transaction itself and then checkpointed (its log slot
//!   truncated) and restarted must still answer "committed" to a coordinator that asks,
//!   never "not committed"; a retry of the whole transaction is answered, not applied.

mod support;

use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, Reply, Role, WriteId};
use ampstore_common::txn::{TxnCheck, TxnCondition, TxnDecision, TxnPart, TxnWrite};
use ampstore_common::{Epoch, Key, RangeId, Seq};
use ampstore_store::meta::{self, NodeRecord, PK_NODE};
use ampstore_store::{Backend, EntryKind, Expect};
use support::{NodeProc, TestClient, create_ranges, open_store};

async fn end_epoch(backend: &Backend, node_id: &str) {
    let id = ampstore_common::NodeId::new(node_id).unwrap();
    let cur = meta::get_node(backend.meta.as_ref(), &id).await.unwrap().unwrap();
    let ended = NodeRecord { epoch: Epoch(cur.record.epoch.0 + 1), ended: true, ..cur.record };
    backend.meta.put(PK_NODE, node_id.as_bytes(), &meta::encode(&ended), Expect::Version(cur.version)).await.unwrap();
}

/// Claims the range at `start` on `node`, retrying while the node re-registers.
async fn claim(node: &NodeProc, range_id: RangeId, start: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = match TestClient::connect_as(&node.rpc, Role::Master, None).await {
            Ok(mut c) => c.call(Op::Assign { range_id, start: Key::from(start), claim: true }).await,
            Err(e) => Err(Error::unavailable(e.to_string())),
        };
        match r {
            Ok(Reply::Assigned { .. }) => return,
            other => {
                assert!(Instant::now() < deadline, "claiming {range_id} on {}: {other:?}", node.node_id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn get(node: &NodeProc, key: &str) -> Option<(Vec<u8>, ampstore_common::Version)> {
    let mut c = TestClient::connect(&node.rpc).await.unwrap();
    match c.call(Op::Get { key: Key::from(key) }).await.unwrap() {
        Reply::Value(v) => v.map(|v| (v.value, v.version)),
        other => panic!("get answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_loss_with_a_transaction_append_in_flight_answers_timeout_and_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let backend = open_store(&store);
    meta::ensure_first_range(backend.meta.as_ref()).await.unwrap();
    let range = meta::FIRST_RANGE_ID;
    // The transaction's entry becomes durable, then the node waits 3 s before answering.
    let a = NodeProc::start_with_env(
        &root.join("a"),
        &store,
        &[],
        &[("AMPSTORE_TEST_PAUSE_AT", "txn:appended-unanswered:3000")],
    );
    claim(&a, range, "").await;
    let mut c = TestClient::connect(&a.rpc).await.unwrap();
    let Reply::Written { version } =
        c.call(Op::Put { key: Key::from("acct"), value: b"0".to_vec(), write_id: None }).await.unwrap()
    else {
        panic!("put")
    };
    let txn_id = WriteId::new(0x5eed, 1);
    let txn = Op::Txn {
        txn_id,
        parts: vec![TxnPart {
            range_id: range,
            node_addr: a.rpc.clone(),
            checks: vec![TxnCheck { key: Key::from("acct"), condition: TxnCondition::Version(version) }],
            writes: vec![TxnWrite::Put { key: Key::from("acct"), value: b"1".to_vec() }],
            reads: vec![],
        }],
        hold_ms: 5000,
    };
    let pending = {
        let txn = txn.clone();
        let addr = a.rpc.clone();
        tokio::spawn(async move { TestClient::connect(&addr).await.unwrap().call(txn).await })
    };
    // The entry is durable by now; the answer is held back. End the node's epoch.
    tokio::time::sleep(Duration::from_millis(800)).await;
    end_epoch(&backend, &a.node_id).await;
    let answer = pending.await.unwrap();
    assert_eq!(
        answer,
        Err(Error::Timeout),
        "a transaction whose entry may be in the log must be answered 'unknown', never 'not written'"
    );
    // The node registers a new epoch; the range is loaded again from the log, which holds
    // the transaction's entry. A retry with the same id is answered, not applied again.
    claim(&a, range, "").await;
    let (value, applied_at) = get(&a, "acct").await.unwrap();
    assert_eq!(value, b"1".to_vec(), "the transaction was applied");
    let retry = TestClient::connect(&a.rpc).await.unwrap().call(txn).await;
    match retry {
        Ok(Reply::TxnCommitted { versions, .. }) => assert_eq!(versions, vec![vec![applied_at]]),
        other => panic!("the retried transaction must be answered as committed: {other:?}"),
    }
    assert_eq!(get(&a, "acct").await.unwrap(), (b"1".to_vec(), applied_at), "applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_checkpointed_and_restarted_still_knows_the_transaction_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let backend = open_store(&store);
    create_ranges(&backend, &["m"]).await;
    let (left, right) = (RangeId(1), RangeId(2));
    // The coordinator dies right after the transaction's entries are durable.
    let mut a = NodeProc::start_with_env(&root.join("a"), &store, &[], &[("AMPSTORE_TEST_CRASH_AT", "txn:appended")]);
    let mut b = NodeProc::start(&root.join("b"), &store, &[]);
    claim(&a, left, "").await;
    claim(&b, right, "m").await;
    let txn_id = WriteId::new(0x5eed, 2);
    let parts = vec![
        TxnPart {
            range_id: left,
            node_addr: a.rpc.clone(),
            checks: vec![TxnCheck { key: Key::from("a"), condition: TxnCondition::Absent }],
            writes: vec![TxnWrite::Put { key: Key::from("a"), value: b"1".to_vec() }],
            reads: vec![],
        },
        TxnPart {
            range_id: right,
            node_addr: b.rpc.clone(),
            checks: vec![TxnCheck { key: Key::from("x"), condition: TxnCondition::Absent }],
            writes: vec![TxnWrite::Put { key: Key::from("x"), value: b"1".to_vec() }],
            reads: vec![],
        },
    ];
    let txn = Op::Txn { txn_id, parts, hold_ms: 1000 };
    let answer = TestClient::connect(&a.rpc).await.unwrap().call(txn.clone()).await;
    assert!(answer.is_err(), "the coordinator crashed before answering: {answer:?}");
    let _ = a.child.wait();
    // The participant's hold runs out; it finds the entry at its slot and applies it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&b, "x").await.is_none() {
        assert!(Instant::now() < deadline, "the participant never resolved the transaction");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slot = backend
        .log
        .read(right, Seq(1), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|(_, e)| e.kind == EntryKind::Txn)
        .map(|(s, _)| s)
        .expect("the transaction's entry is in the participant's log");
    // A checkpoint truncates the log below it, slot included; then the participant restarts.
    let mut c = TestClient::connect_as(&b.rpc, Role::Admin, None).await.unwrap();
    assert!(matches!(c.call(Op::Snapshot { range_id: right }).await, Ok(Reply::Snapshotted { .. })));
    // Something after the slot, so the checkpoint lies past it.
    c.call(Op::Put { key: Key::from("y"), value: b"1".to_vec(), write_id: None }).await.unwrap();
    assert!(matches!(c.call(Op::Snapshot { range_id: right }).await, Ok(Reply::Snapshotted { .. })));
    let head = backend.log.read(right, Seq(1), 100).await.unwrap();
    assert!(
        head.iter().all(|(s, _)| *s > slot),
        "the slot is truncated: {:?}",
        head.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    b.kill9();
    let b = NodeProc::start(&root.join("b"), &store, &[]);
    claim(&b, right, "m").await;
    // A coordinator asking now (a restarted one, resolving from the slot it was given).
    let resolved = TestClient::connect_as(&b.rpc, Role::Node, None)
        .await
        .unwrap()
        .call(Op::TxnResolve { txn_id, range_id: right, seq: Some(slot), decision: TxnDecision::Resolve })
        .await;
    assert_eq!(
        resolved,
        Ok(Reply::TxnResolved { committed: true }),
        "a participant whose slot was truncated must answer from the remembered outcome, never 'not committed'"
    );
    // The client retries the whole transaction with the same id: answered, not applied again.
    let a = NodeProc::start(&root.join("a"), &store, &[]);
    claim(&a, left, "").await;
    let (a_value, a_version) = get(&a, "a").await.unwrap();
    let (x_value, x_version) = get(&b, "x").await.unwrap();
    assert_eq!((a_value.as_slice(), x_value.as_slice()), (&b"1"[..], &b"1"[..]));
    let txn = match txn {
        Op::Txn { txn_id, mut parts, hold_ms } => {
            parts[0].node_addr = a.rpc.clone();
            parts[1].node_addr = b.rpc.clone();
            Op::Txn { txn_id, parts, hold_ms }
        }
        other => other,
    };
    let retry = TestClient::connect(&a.rpc).await.unwrap().call(txn).await;
    assert_eq!(
        retry,
        Ok(Reply::TxnCommitted { versions: vec![vec![a_version], vec![x_version]], values: vec![vec![], vec![]] }),
        "the retry is answered as committed (its conditions no longer hold, so applying it again would conflict)"
    );
    assert_eq!(get(&a, "a").await.unwrap().1, a_version, "applied once");
    assert_eq!(get(&b, "x").await.unwrap().1, x_version, "applied once");
}
