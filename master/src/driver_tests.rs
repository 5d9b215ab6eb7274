//! Tests of the driver against a local store and fake nodes (the decisions have their own,
//! pure tests in `state_tests.rs` and `commits_tests.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, PROTOCOL_VERSION, Reply, Role, ServerInfo};
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId};
use ampstore_server::config::{LocalConfig, MasterConfig};
use ampstore_server::rpc::{self, Service};
use ampstore_store::local::LocalStore;
use ampstore_store::meta::{
    self, LeaseRecord, NodeRecord, Owner, PK_DRAIN, PK_MASTER, PK_NODE, RangeDescriptor, SK_LEASE, SK_TERM, TermRecord,
    Versioned,
};
use ampstore_store::{Backend, Expect};
use tokio::sync::watch;

use crate::driver::Master;
use crate::routing::RoutingTable;
use crate::state::Active;

fn master(backend: Backend, id: &str) -> Arc<Master> {
    Arc::new(Master::new(
        NodeId::new(id).unwrap(),
        "127.0.0.1:1".into(),
        MasterConfig::default(),
        backend,
        (None, None),
    ))
}

/// A master that believes it is active (as one paused mid-action would, before it looks
/// at its clock again) writes nothing once another master took the term.
#[tokio::test]
async fn a_deposed_master_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
    let meta_store = backend.meta.clone();
    let a = master(backend, "a");
    let term_a = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
    let lease = |holder: &str, term| LeaseRecord {
        holder: NodeId::new(holder).unwrap(),
        term: ampstore_common::Term(term),
        rvn: 1,
        rpc_addr: String::new(),
        lease_ms: 1000,
    };
    meta_store.put(PK_MASTER, SK_LEASE, &meta::encode(&lease("a", 1)), Expect::Absent).await.unwrap();
    meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_a), Expect::Absent).await.unwrap();
    let (routing, nodes) = a.take_over(&term_a).await.unwrap();
    assert_eq!(routing.len(), 1, "the first range is created on an empty store");
    let node = NodeId::new("n1").unwrap();
    let rec = NodeRecord { epoch: Epoch(1), rvn: 5, rpc_addr: "127.0.0.1:2".into(), liveness_ms: 1000, ended: false };
    meta_store.put(PK_NODE, b"n1", &meta::encode(&rec), Expect::Absent).await.unwrap();
    {
        let mut st = a.lock();
        st.active = Some(Active {
            term: term_a.clone(),
            valid_until: Instant::now() + Duration::from_secs(3600),
            routing,
            routing_changes: 0,
        });
        st.nodes = nodes;
        st.nodes.observe(Instant::now(), &node, Versioned { version: 1, record: rec });
    }
    // While A holds the term, its writes land.
    a.drain(node.clone(), false).await.unwrap();
    assert!(meta_store.get(PK_DRAIN, b"n1").await.unwrap().is_some());

    // B takes over (the term item changes with the lease).
    let term_b = TermRecord { term: ampstore_common::Term(2), holder: NodeId::new("b").unwrap() };
    meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_b), Expect::Any).await.unwrap();
    let before = meta::list_ranges(meta_store.as_ref()).await.unwrap();

    // A still thinks it is active: a drain undo and an assignment are both refused.
    let err = a.drain(node.clone(), true).await.unwrap_err();
    assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
    assert!(meta_store.get(PK_DRAIN, b"n1").await.unwrap().is_some(), "the drain record is unchanged");
    {
        let mut st = a.lock();
        st.active = Some(Active {
            term: term_a.clone(),
            valid_until: Instant::now() + Duration::from_secs(3600),
            routing: RoutingTable::load(before.clone()).unwrap(),
            routing_changes: 0,
        });
    }
    let desc = before[0].clone();
    let owner = Owner { node_id: node.clone(), epoch: Epoch(1) };
    let err = a.set_owner(&term_a, desc, Some(owner)).await.unwrap_err();
    assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
    assert_eq!(meta::list_ranges(meta_store.as_ref()).await.unwrap(), before, "routing unchanged");
    assert_eq!(a.writes_refused_on_term.load(Ordering::Relaxed), 2);
    assert!(a.acting_term().is_none(), "a refused write makes the master step down");
}

/// A master whose lease ran out by its own clock (renewals stalled) refuses an
/// assignment with `NotMaster`, and stays responsive: it used to take its state lock
/// twice on that path and hang for good.
#[tokio::test]
async fn an_assignment_after_the_lease_ran_out_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
    let meta_store = backend.meta.clone();
    let a = master(backend, "a");
    let term_a = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
    meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_a), Expect::Absent).await.unwrap();
    let (routing, nodes) = a.take_over(&term_a).await.unwrap();
    let start = routing.iter().next().unwrap().record.range.start.clone();
    {
        let mut st = a.lock();
        st.active = Some(Active { term: term_a, valid_until: Instant::now(), routing, routing_changes: 0 });
        st.nodes = nodes;
    }
    // On its own thread: a deadlock blocks the runtime it happens on, timers included.
    let (tx, rx) = std::sync::mpsc::channel();
    let m = a.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = tx.send(rt.block_on(m.assign_inner(&start)));
    });
    let err = rx.recv_timeout(Duration::from_secs(10)).expect("the assignment hung").unwrap_err();
    assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
    assert!(a.acting_term().is_none());
}

/// A node that accepts requests and never answers them (a stopped process whose
/// connection is already open).
struct Stuck;

impl Service for Stuck {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: NodeId::new("stuck").unwrap(), role: Role::Node }
    }

    async fn handle(self: &Arc<Self>, _op: Op) -> Result<Reply, Error> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_assignment_to_a_node_that_stops_answering_ends_with_its_epoch_not_the_handoff_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
    let a = master(backend, "a");
    let (listener, addr) = rpc::bind("127.0.0.1:0").await.unwrap();
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(rpc::serve(listener, Arc::new(Stuck), stopped));
    let node = NodeId::new("n1").unwrap();
    let record = |epoch: u64, ended: bool| Versioned {
        version: epoch,
        record: ampstore_store::meta::NodeRecord {
            epoch: Epoch(epoch),
            rvn: 1,
            rpc_addr: addr.clone(),
            liveness_ms: 60_000,
            ended,
        },
    };
    let routing = RoutingTable::load(vec![Versioned {
        version: 1,
        record: RangeDescriptor {
            range_id: RangeId(7),
            range: KeyRange::full(),
            generation: 1,
            owner: Some(Owner { node_id: node.clone(), epoch: Epoch(1) }),
            checkpoint: None,
        },
    }])
    .unwrap();
    {
        let mut st = a.lock();
        st.nodes.observe(Instant::now(), &node, record(1, false));
        let term = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
        st.active =
            Some(Active { term, valid_until: Instant::now() + Duration::from_secs(60), routing, routing_changes: 0 });
    }
    let owner = Owner { node_id: node.clone(), epoch: Epoch(1) };
    let m = a.clone();
    let started = Instant::now();
    let load = tokio::spawn(async move { m.load_on(&owner, &Key::default()).await });
    // Live: the master keeps waiting for the answer.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!load.is_finished(), "gave up on a live node");
    // The node's epoch is ended (what `watch_nodes` does once it stays silent).
    a.lock().nodes.observe(Instant::now(), &node, record(2, true));
    let result =
        tokio::time::timeout(Duration::from_secs(5), load).await.expect("still waiting on a dead node").unwrap();
    let err = result.unwrap_err();
    assert!(matches!(&err, Error::Unavailable { reason } if reason.contains("no longer live")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

/// A node that answers stats polls at once.
struct Answers(NodeId);

impl Service for Answers {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.0.clone(), role: Role::Node }
    }

    async fn handle(self: &Arc<Self>, _op: Op) -> Result<Reply, Error> {
        Ok(Reply::Stats(ampstore_common::protocol::NodeStats {
            node_id: self.0.clone(),
            epoch: Epoch(1),
            liveness_ms_left: 60_000,
            ranges: vec![],
            resident_bytes: 0,
            ops_total: 0,
            memory_budget_bytes: 0,
            split_bytes: 0,
        }))
    }
}

#[tokio::test]
async fn a_node_that_never_answers_its_stats_poll_does_not_make_the_others_unplaceable() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
    let a = master(backend, "a");
    let (_stop, stopped) = watch::channel(false);
    let (stuck_listener, stuck_addr) = rpc::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(rpc::serve(stuck_listener, Arc::new(Stuck), stopped.clone()));
    let healthy = NodeId::new("healthy").unwrap();
    let (listener, healthy_addr) = rpc::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(rpc::serve(listener, Arc::new(Answers(healthy.clone())), stopped));
    let stuck = NodeId::new("stuck").unwrap();
    for (id, addr) in [(&stuck, &stuck_addr), (&healthy, &healthy_addr)] {
        let record = ampstore_store::meta::NodeRecord {
            epoch: Epoch(1),
            rvn: 1,
            rpc_addr: addr.clone(),
            liveness_ms: 60_000,
            ended: false,
        };
        a.lock().nodes.observe(Instant::now(), id, Versioned { version: 1, record });
    }
    // The control loop's rhythm: a poll round every 300 ms, for longer than STATS_STALE.
    let until = Instant::now() + crate::nodes::STATS_STALE + Duration::from_secs(2);
    let mut stale_at = None;
    while Instant::now() < until {
        a.poll_stats();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = Instant::now();
        if stale_at.is_none() && now > until - Duration::from_secs(3) && !a.lock().nodes.accepts(now, &healthy, false) {
            stale_at = Some(now);
        }
    }
    assert_eq!(stale_at, None, "the healthy node's stats went stale behind the stuck node's poll");
    assert!(!a.lock().nodes.accepts(Instant::now(), &stuck, false), "the stuck node never answered");
    assert_eq!(a.lock().stats_polling.len(), 1, "one poll of the stuck node at a time");
}
