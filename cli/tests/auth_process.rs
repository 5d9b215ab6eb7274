//! Authorization over real frames against a running master and node (DESIGN §4,
//! "Authorization"; review S7 and A6): what the cluster token an app server holds may and
//! may not do, and the reserved `ff ff` namespace.
//!
//! Every process gets `cluster.token` and `admin.token` in its data directory (as `ampstore
//! up` writes them); the test speaks the protocol itself, frame by frame, as any holder of
//! the cluster token could.

mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use ampstore_common::error::Error;
use ampstore_common::ids::{Epoch, NodeId, RangeId};
use ampstore_common::lists::PushId;
use ampstore_common::protocol::{Op, RangeLocation, Reply, Role, WriteId};
use ampstore_common::queue;
use ampstore_common::txn::{TxnCheck, TxnCondition, TxnDecision, TxnPart, TxnWrite};
use ampstore_common::{ErrorCode, Key};
use ampstore_store::meta::Checkpoint;
use support::*;

const CLUSTER_TOKEN: &str = "app-servers-get-this-token";
const ADMIN_TOKEN: &str = "only-the-cluster-itself-gets-this-token";

/// One cluster at a time on this 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes the two credentials into a process's data directory, mode 0600.
fn write_secrets(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    for (name, token) in [("cluster.token", CLUSTER_TOKEN), ("admin.token", ADMIN_TOKEN)] {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(data_dir.join(name)).unwrap();
        std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes()).unwrap();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    master: MasterProc,
    node: NodeProc,
    others: Vec<NodeProc>,
}

/// A master and `nodes` nodes with both tokens, and two ranges split at "m".
async fn start_cluster(nodes: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    create_ranges(&open_store(&store_dir), &["m"]).await;
    let master_dir = dir.path().join("m0");
    write_secrets(&master_dir);
    let master = MasterProc::start(&master_dir, &store_dir);
    let mut started: Vec<NodeProc> = (0..nodes)
        .map(|i| {
            let node_dir = dir.path().join(format!("n{i}"));
            write_secrets(&node_dir);
            start_fast_node(&node_dir, &store_dir)
        })
        .collect();
    let node = started.remove(0);
    Cluster { dir, master, node, others: started }
}

/// Connects and sends a hello with `role` and `token` (frames written by the test itself):
/// the connection, or the server's refusal from the hello reply.
async fn hello_as(addr: &str, role: Role, token: Option<&str>) -> Result<TestClient, Error> {
    TestClient::connect_as(addr, role, token).await.map_err(|e| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Error>())
            .cloned()
            .unwrap_or_else(|| Error::unavailable(e.to_string()))
    })
}

/// A connection with what an app server holds: role client, the cluster token.
async fn app_server(addr: &str) -> TestClient {
    hello_as(addr, Role::Client, Some(CLUSTER_TOKEN)).await.expect("the cluster token opens a client connection")
}

/// Where `key` is served, once it is (the master assigns on a locate).
async fn located(master: &mut TestClient, key: &Key) -> RangeLocation {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match master.call(Op::Locate { key: key.clone() }).await {
            Ok(Reply::Location(loc)) => return loc,
            other => assert!(std::time::Instant::now() < deadline, "locate {key}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls `op` until the range has loaded (answers other than `RangeLoading`/`NotOwner`).
async fn settled(node: &mut TestClient, op: Op) -> Result<Reply, Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match node.call(op.clone()).await {
            Err(Error::RangeLoading { .. } | Error::NotOwner { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

fn checkpoint() -> Checkpoint {
    Checkpoint { seq: ampstore_common::Seq(1), blob: "forged".into(), merkle_root: vec![0; 32] }
}

/// Every internal and admin operation, aimed at the real range `loc` and node `node_id`.
fn admin_ops(loc: &RangeLocation, node_id: &NodeId) -> Vec<Op> {
    let txn_id = WriteId::new(7, 7);
    vec![
        Op::Assign { range_id: loc.range_id, start: loc.start.clone(), claim: true },
        Op::Release { range_id: loc.range_id },
        Op::Snapshot { range_id: loc.range_id },
        Op::Split { range_id: loc.range_id },
        Op::Merge { left_id: loc.range_id, right_id: RangeId(loc.range_id.0 + 1) },
        Op::RangeStats,
        Op::Drain { node_id: node_id.clone(), undo: false },
        Op::SplitRange {
            parent_id: loc.range_id,
            parent_start: loc.start.clone(),
            split_key: Key::from("g"),
            owner_node: node_id.clone(),
            owner_epoch: Epoch(1),
            left_id: RangeId(1000),
            left_checkpoint: checkpoint(),
            right_id: RangeId(1001),
            right_checkpoint: checkpoint(),
        },
        Op::CommitMerge {
            left_id: loc.range_id,
            left_start: loc.start.clone(),
            right_id: RangeId(loc.range_id.0 + 1),
            right_start: Key::from("m"),
            owner_node: node_id.clone(),
            owner_epoch: Epoch(1),
            merged_id: RangeId(1002),
            merged_checkpoint: checkpoint(),
        },
        Op::TxnPrepare {
            txn_id,
            range_id: loc.range_id,
            checks: vec![],
            writes: vec![TxnWrite::Put { key: Key::from("a"), value: b"forged".to_vec() }],
            reads: vec![],
            hold_ms: 5000,
        },
        Op::TxnResolve { txn_id, range_id: loc.range_id, seq: None, decision: TxnDecision::Commit },
        Op::Batch {
            ops: vec![Op::Push { key: Key::from("list"), element: b"x".to_vec(), push_id: PushId::default() }],
        },
    ]
}

/// S7: the cluster token with role client is refused every internal and admin operation,
/// by the node and by the master; an internal role is refused with the cluster token; data
/// operations go on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_token_allows_data_operations_only() {
    let _serial = SERIAL.lock().await;
    let c = start_cluster(1).await;
    let mut master = app_server(&c.master.rpc).await;
    let key = Key::from("a");
    let loc = located(&mut master, &key).await;
    assert_eq!(loc.node_addr, c.node.rpc);
    let mut node = app_server(&c.node.rpc).await;
    let put = Op::Put { key: key.clone(), value: b"before".to_vec(), write_id: Some(WriteId::new(1, 1)) };
    assert!(matches!(settled(&mut node, put).await, Ok(Reply::Written { .. })));

    let node_id = NodeId::new(&c.node.node_id).unwrap();
    let mut carried_out = Vec::new();
    for (server, conn) in [("node", &mut node), ("master", &mut master)] {
        for op in admin_ops(&loc, &node_id) {
            let name = op.name();
            match conn.call(op).await {
                Err(Error::Unauthorized { reason }) => {
                    assert!(reason.contains(name), "{server} {name}: the refusal names the operation: {reason}")
                }
                other => carried_out.push(format!("{server} {name}: {other:?}")),
            }
        }
    }
    assert!(carried_out.is_empty(), "not refused as Unauthorized:\n{}", carried_out.join("\n"));

    // The range was neither released nor taken: data operations still work.
    let get = node.call(Op::Get { key: key.clone() }).await;
    assert!(matches!(&get, Ok(Reply::Value(Some(v))) if v.value == b"before"), "{get:?}");
    assert!(matches!(master.call(Op::MasterStatus).await, Ok(Reply::Master(_))));
    let scan = Op::Scan { start: Key::from(""), end: Some(Key::from("m")), limit: 10, reverse: false };
    assert!(matches!(node.call(scan).await, Ok(Reply::ScanPage { .. })));

    // The role must match the credential.
    for addr in [&c.node.rpc, &c.master.rpc] {
        for role in [Role::Node, Role::Master, Role::Collector] {
            let refused = hello_as(addr, role, Some(CLUSTER_TOKEN)).await.err();
            assert_eq!(
                refused.map(|e| e.code()),
                Some(ErrorCode::Unauthorized),
                "{role:?} with the cluster token at {addr}"
            );
        }
        let refused = hello_as(addr, Role::Client, Some(ADMIN_TOKEN)).await.err();
        assert_eq!(refused.map(|e| e.code()), Some(ErrorCode::Unauthorized), "client with the admin token at {addr}");
        let refused = hello_as(addr, Role::Client, None).await.err();
        assert_eq!(refused.map(|e| e.code()), Some(ErrorCode::Unauthorized), "client without a token at {addr}");
    }

    // With the admin token and its own role, an internal process gets through: a node may
    // prepare (and resolve) a transaction on another node.
    let mut peer = hello_as(&c.node.rpc, Role::Node, Some(ADMIN_TOKEN)).await.expect("a node with the admin token");
    let txn_id = WriteId::new(9, 1);
    let prepare = Op::TxnPrepare {
        txn_id,
        range_id: loc.range_id,
        checks: vec![],
        writes: vec![],
        reads: vec![key.clone()],
        hold_ms: 1000,
    };
    let prepared = peer.call(prepare).await;
    assert!(matches!(prepared, Ok(Reply::TxnPrepared { .. })), "{prepared:?}");
    let resolved =
        peer.call(Op::TxnResolve { txn_id, range_id: loc.range_id, seq: None, decision: TxnDecision::Commit }).await;
    assert!(resolved.is_ok(), "{resolved:?}");
    // ...but not the master's operations.
    let refused = peer.call(Op::Release { range_id: loc.range_id }).await;
    assert!(matches!(refused, Err(Error::Unauthorized { .. })), "{refused:?}");
}

/// A6: no user write touches the reserved `ff ff` namespace, over raw frames, and a task
/// acknowledged by `enqueue` is still delivered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_writes_cannot_touch_the_reserved_namespace() {
    let _serial = SERIAL.lock().await;
    let c = start_cluster(1).await;
    let mut master = app_server(&c.master.rpc).await;
    let task_id = PushId { ms: 1, client: 2, n: 3 };
    let task_key = queue::task_key("jobs", 0, task_id);
    located(&mut master, &task_key).await;
    located(&mut master, &Key::from("a")).await;
    let mut node = app_server(&c.node.rpc).await;
    let enqueue = Op::Enqueue { queue: "jobs".into(), shard: 0, task_id, payload: b"deliver me".to_vec() };
    let enqueued = settled(&mut node, enqueue).await;
    assert!(matches!(enqueued, Ok(Reply::Written { .. })), "{enqueued:?}");

    let reserved = Key::user_end();
    let write_id = || Some(WriteId::new(3, next_n()));
    let txn_on = |range_id: RangeId, checks: Vec<TxnCheck>, writes: Vec<TxnWrite>| Op::Txn {
        txn_id: WriteId::new(3, next_n()),
        parts: vec![TxnPart { range_id, node_addr: c.node.rpc.clone(), checks, writes, reads: vec![] }],
        hold_ms: 1000,
    };
    let reserved_range = located(&mut master, &reserved).await.range_id;
    let refused = vec![
        Op::Put { key: task_key.clone(), value: b"overwritten".to_vec(), write_id: write_id() },
        Op::PutIfVersion { key: task_key.clone(), value: b"x".to_vec(), expected: None, write_id: write_id() },
        Op::Delete { key: task_key.clone(), write_id: write_id() },
        Op::DeleteRange { start: reserved.clone(), end: None, write_id: write_id() },
        Op::DeleteRange { start: Key::from("a"), end: None, write_id: write_id() },
        Op::DeleteRange { start: Key::from("n"), end: Some(Key::new(vec![0xff, 0xff, 0xff])), write_id: write_id() },
        txn_on(reserved_range, vec![], vec![TxnWrite::Delete { key: task_key.clone() }]),
        txn_on(reserved_range, vec![], vec![TxnWrite::Put { key: task_key.clone(), value: b"x".to_vec() }]),
        txn_on(
            reserved_range,
            vec![TxnCheck { key: task_key.clone(), condition: TxnCondition::Absent }],
            vec![TxnWrite::Put { key: Key::from("n"), value: b"x".to_vec() }],
        ),
    ];
    let mut accepted = Vec::new();
    for op in refused {
        let name = op.name();
        match node.call(op).await {
            Err(Error::Invalid { reason }) if reason.contains("reserved") => {}
            other => accepted.push(format!("{name}: {other:?}")),
        }
    }
    assert!(accepted.is_empty(), "not refused as Invalid naming the reserved namespace:\n{}", accepted.join("\n"));

    // What the product client sends (a delete clipped at ff ff) still works.
    let clipped = Op::DeleteRange { start: Key::from("n"), end: Some(reserved.clone()), write_id: write_id() };
    assert!(matches!(settled(&mut node, clipped).await, Ok(Reply::Deleted { .. })));

    // The task is still there and is delivered.
    let (start, _) = queue::shard_bounds("jobs", 0);
    let dequeued =
        node.call(Op::Dequeue { queue: "jobs".into(), shard: 0, start, max: 10, visibility_ms: 30_000 }).await;
    let Ok(Reply::Tasks { tasks, .. }) = dequeued else { panic!("dequeue: {dequeued:?}") };
    assert_eq!(tasks.iter().map(|t| t.payload.as_slice()).collect::<Vec<_>>(), [b"deliver me".as_slice()]);
}

/// A transaction's participant addresses come from the client: the coordinator refuses an
/// address that is not a live node's, without connecting to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_connects_only_to_live_nodes() {
    let _serial = SERIAL.lock().await;
    let c = start_cluster(2).await;
    let mut master = app_server(&c.master.rpc).await;
    let left = located(&mut master, &Key::from("a")).await;
    let right = located(&mut master, &Key::from("n")).await;
    assert_ne!(left.range_id, right.range_id);
    for (loc, key) in [(&left, "a"), (&right, "n")] {
        let mut owner = app_server(&loc.node_addr).await;
        let served = settled(&mut owner, Op::Get { key: Key::from(key) }).await;
        assert!(served.is_ok(), "{key}: {served:?}");
    }
    // The coordinator serves the first part; the second is usually on the other node, so
    // the live address is looked up in the node records rather than being this node's own.
    println!("left on {}, right on {} (nodes {} and {})", left.node_addr, right.node_addr, c.node.rpc, c.others[0].rpc);
    let mut node = app_server(&left.node_addr).await;

    // Somewhere a client would like the node to connect to.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_addr = elsewhere.local_addr().unwrap().to_string();
    let txn = |right_addr: &str| Op::Txn {
        txn_id: WriteId::new(4, next_n()),
        parts: vec![
            TxnPart {
                range_id: left.range_id,
                node_addr: left.node_addr.clone(),
                checks: vec![],
                writes: vec![TxnWrite::Put { key: Key::from("a"), value: b"1".to_vec() }],
                reads: vec![],
            },
            TxnPart {
                range_id: right.range_id,
                node_addr: right_addr.to_string(),
                checks: vec![],
                writes: vec![TxnWrite::Put { key: Key::from("n"), value: b"1".to_vec() }],
                reads: vec![],
            },
        ],
        hold_ms: 1000,
    };
    let refused = node.call(txn(&elsewhere_addr)).await;
    let connected = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await.is_ok();
    assert!(!connected, "the node connected to an address from the request");
    assert!(matches!(refused, Err(Error::NotOwner { .. })), "{refused:?}");
    // Asked of whoever owns "a" now: the master may have moved the range meanwhile (two
    // ranges on one node of two get balanced).
    let owner_now = located(&mut master, &Key::from("a")).await;
    let get = settled(&mut app_server(&owner_now.node_addr).await, Op::Get { key: Key::from("a") }).await;
    assert!(matches!(get, Ok(Reply::Value(None))), "nothing was written: {get:?}");

    // The live owner's address is fine.
    let committed = node.call(txn(&right.node_addr)).await;
    assert!(matches!(committed, Ok(Reply::TxnCommitted { .. })), "{committed:?}");
}

/// A collector process with both tokens in its data directory.
struct CollectorProc {
    child: std::process::Child,
    rpc: String,
}

impl CollectorProc {
    fn start(data_dir: &Path, master: &MasterProc) -> CollectorProc {
        use std::io::BufRead;
        write_secrets(data_dir);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ampstore"))
            .arg("--data")
            .arg(data_dir)
            .args(["collector", "--rpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gossip", "127.0.0.1:0"])
            .args(["--seeds", master.gossip.as_str(), "--masters", master.rpc.as_str()])
            .env_remove("AMPSTORE_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start collector");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("collector printed nothing").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[3] == "ready:", "{line}");
        let rpc = words[5].to_string();
        std::thread::spawn(move || for _ in lines {});
        CollectorProc { child, rpc }
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app server holding only the cluster token pushes through a collector; the collector
/// sends the batches to the node in its own role with the admin token, and the node takes
/// them as batches (none refused, none sent again one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_batches_for_an_app_server_holding_only_the_cluster_token() {
    use ampstore_server::metrics::{parse_text, sum};
    let _serial = SERIAL.lock().await;
    let c = start_cluster(1).await;
    let collector = CollectorProc::start(&c.dir.path().join("c0"), &c.master);
    let mut cfg = ampstore_client::ClientConfig::new(&[c.master.rpc.as_str()]);
    cfg.token = Some(CLUSTER_TOKEN.into());
    cfg.collectors = vec![collector.rpc.clone()];
    cfg.call_deadline = Duration::from_secs(20);
    let client = ampstore_client::Client::with_config(cfg).await.expect("the cluster token is enough for a client");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(client.push("through", format!("e{i}")).await.unwrap());
    }
    let page = client.list("through", None, 100).await.unwrap();
    assert_eq!(page.elements.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    let samples = parse_text(&http_get_text(&c.node.admin, "/metrics").await).unwrap();
    let batches = |outcome: &str| sum(&samples, "ampstore_requests_total", &[("op", "batch"), ("outcome", outcome)]);
    assert!(batches("ok") > 0.0, "the node took the collector's batches");
    assert_eq!(batches("unauthorized"), 0.0, "no batch was refused");
    assert_eq!(sum(&samples, "ampstore_requests_total", &[("op", "push")]), 0.0, "nothing went one by one");
}

fn next_n() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}
