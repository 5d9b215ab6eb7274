//! Exactly-once writes across moves and failovers (issue 13 item 1, review S3), with real
//! processes: a write sent with an id, later writes over it, then the range moves (drain),
//! fails over (SIGKILL after a checkpoint), splits or merges; then the first write is sent
//! again with the same id, as a client retrying after a timeout would. The retry must be
//! answered with the first outcome and change nothing. The same for a delete, a
//! conditional put, a push and an enqueue; and on a hot range, a retry of the first write
//! after 5 s of writes at full rate.

mod support;

use std::time::{Duration, Instant};

use ampstore_client::{Client, Key};
use ampstore_common::connection::Connection;
use ampstore_common::lists::PushId;
use ampstore_common::protocol::{Op, RangeLocation, Reply, Role, WriteId};
use ampstore_common::queue;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const QUEUE: &str = "jobs";
const LIST: &str = "events";

/// The operator's role: it may send drain, snapshot and split.
const ADMIN_ROLE: Role = Role::Admin;

async fn admin_call(addr: &str, op: Op) -> Result<Reply, ampstore_client::Error> {
    let conn = Connection::connect(addr, ADMIN_ROLE, "exactly-once-test", None).await?;
    conn.call(op, Duration::from_secs(20)).await
}

/// Sends `op` to the node serving `key`, following moves, until it gets an answer that is
/// not "try elsewhere / later".
async fn call_owner(client: &Client, key: &Key, op: Op) -> Result<Reply, ampstore_client::Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = match client.locate(key.clone()).await {
            Ok(loc) => match Connection::connect(&loc.node_addr, Role::Client, "exactly-once-test", None).await {
                Ok(conn) => conn.call(op.clone(), Duration::from_secs(5)).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Err(e)
                if e.is_retryable() && !matches!(e, ampstore_client::Error::Timeout) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// The first attempts: what each answered, and how to send it again.
struct Firsts {
    ops: Vec<(&'static str, Key, Op, Result<Reply, ampstore_client::Error>)>,
    task_key: Key,
}

fn id(n: u64) -> WriteId {
    WriteId::new(0xE0_0000 + rand_u16() as u64, n)
}

fn rand_u16() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 65_521) as u16
}

/// Sends each kind of write once with an id, then overwrites what it did with later writes
/// (from the product client, so with other ids).
async fn first_writes(client: &Client, prefix: &str) -> Firsts {
    let client_id = id(0).client;
    let wid = |n: u64| WriteId::new(client_id, n);
    let k_put = Key::from(format!("{prefix}put"));
    let k_del = Key::from(format!("{prefix}del"));
    let k_cond = Key::from(format!("{prefix}cond"));
    let mut ops = Vec::new();

    let put = Op::Put { key: k_put.clone(), value: b"first".to_vec(), write_id: Some(wid(1)) };
    let r = call_owner(client, &k_put, put.clone()).await;
    assert!(matches!(r, Ok(Reply::Written { .. })), "first put: {r:?}");
    ops.push(("put", k_put.clone(), put, r));

    client.put(k_del.clone(), "doomed").await.unwrap();
    let del = Op::Delete { key: k_del.clone(), write_id: Some(wid(2)) };
    let r = call_owner(client, &k_del, del.clone()).await;
    assert!(matches!(r, Ok(Reply::Deleted { removed: 1, .. })), "first delete: {r:?}");
    ops.push(("delete", k_del.clone(), del, r));

    let cond =
        Op::PutIfVersion { key: k_cond.clone(), value: b"first".to_vec(), expected: None, write_id: Some(wid(3)) };
    let r = call_owner(client, &k_cond, cond.clone()).await;
    assert!(matches!(r, Ok(Reply::Written { .. })), "first conditional put: {r:?}");
    ops.push(("conditional put", k_cond.clone(), cond, r));

    let push_id = PushId { ms: 1_000_000, client: client_id, n: 4 };
    let list = Key::from(format!("{prefix}{LIST}"));
    let push = Op::Push { key: list.clone(), element: b"e1".to_vec(), push_id };
    let element_key = ampstore_common::lists::element_key(&list, push_id);
    let r = call_owner(client, &element_key, push.clone()).await;
    assert!(matches!(r, Ok(Reply::Written { .. })), "first push: {r:?}");
    ops.push(("push", element_key, push, r));

    let task_id = PushId { ms: 1_000_000, client: client_id, n: 5 };
    let queue_name = format!("{prefix}{QUEUE}");
    let enqueue = Op::Enqueue { queue: queue_name.clone(), shard: 0, task_id, payload: b"job".to_vec() };
    let task_key = queue::task_key(&queue_name, 0, task_id);
    let r = call_owner(client, &task_key, enqueue.clone()).await;
    assert!(matches!(r, Ok(Reply::Written { .. })), "first enqueue: {r:?}");
    ops.push(("enqueue", task_key.clone(), enqueue, r));

    // Later acknowledged writes over the same keys; the task is delivered and acked.
    client.put(k_put.clone(), "second").await.unwrap();
    client.put(k_del.clone(), "after").await.unwrap();
    client.put(k_cond.clone(), "second").await.unwrap();
    let tasks = client.dequeue(&queue_name, 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(tasks.len(), 1, "the enqueued task is delivered");
    client.ack(&queue_name, tasks[0].task).await.unwrap();
    Firsts { ops, task_key }
}

/// Sends every first write again with its id: each answer must equal the first, and
/// nothing may change.
async fn retry_and_check(what: &str, client: &Client, prefix: &str, firsts: &Firsts) {
    for (name, key, op, first) in &firsts.ops {
        let again = call_owner(client, key, op.clone()).await;
        assert_eq!(&again, first, "{what}: the retried {name} must get the first outcome");
    }
    let get = |k: &str| {
        let k = format!("{prefix}{k}");
        async move { client.get(k.as_str()).await.unwrap().map(|v| String::from_utf8(v.value).unwrap()) }
    };
    assert_eq!(get("put").await.as_deref(), Some("second"), "{what}: a retried put overwrote a later write");
    assert_eq!(get("del").await.as_deref(), Some("after"), "{what}: a retried delete deleted a later write");
    assert_eq!(get("cond").await.as_deref(), Some("second"), "{what}: a retried conditional put was applied again");
    let page = client.list(format!("{prefix}{LIST}"), None, 100).await.unwrap();
    assert_eq!(page.elements.len(), 1, "{what}: the list holds one element");
    let queue_name = format!("{prefix}{QUEUE}");
    let again = client.dequeue(&queue_name, 10, Duration::from_secs(60)).await.unwrap();
    assert!(again.is_empty(), "{what}: an acked task was delivered again after a retried enqueue: {again:?}");
    let _ = &firsts.task_key;
}

struct Cluster {
    _dir: tempfile::TempDir,
    master: MasterProc,
    nodes: Vec<NodeProc>,
    client: Client,
}

async fn cluster(splits: &[&str], master_extra: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = root.join("store");
    if !splits.is_empty() {
        create_ranges(&open_store(&store), splits).await;
    }
    let master = MasterProc::start_with(&root.join("m"), &store, master_extra);
    let flags = fast_node_flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nodes: Vec<NodeProc> =
        (0..2).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &flag_refs)).collect();
    let client = client_for(&master).await;
    Cluster { _dir: dir, master, nodes, client }
}

fn node_of<'a>(c: &'a Cluster, loc: &RangeLocation) -> &'a NodeProc {
    c.nodes.iter().find(|n| n.node_id == loc.node_id.as_str()).expect("owner is one of ours")
}

async fn wait_moved(client: &Client, key: &str, from: &str) -> RangeLocation {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(loc) = client.locate(key).await
            && loc.node_id.as_str() != from
        {
            return loc;
        }
        assert!(Instant::now() < deadline, "the range of {key} never left {from}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_drain_is_answered_not_applied() {
    let _serial = SERIAL.lock().await;
    let c = cluster(&[], &[]).await;
    let firsts = first_writes(&c.client, "d-").await;
    let before = c.client.locate("d-put").await.unwrap();
    let drained = admin_call(&c.master.rpc, Op::Drain { node_id: before.node_id.clone(), undo: false }).await;
    assert!(drained.is_ok(), "drain: {drained:?}");
    wait_moved(&c.client, "d-put", before.node_id.as_str()).await;
    retry_and_check("after a drain", &c.client, "d-", &firsts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_sigkill_failover_is_answered_not_applied() {
    let _serial = SERIAL.lock().await;
    let mut c = cluster(&[], &[]).await;
    let firsts = first_writes(&c.client, "k-").await;
    let before = c.client.locate("k-put").await.unwrap();
    // A checkpoint first (as the automatic ones do on a busy range): the log below it is
    // truncated, so the new owner cannot learn the write ids from the log alone.
    let owner_rpc = node_of(&c, &before).rpc.clone();
    let snap = admin_call(&owner_rpc, Op::Snapshot { range_id: before.range_id }).await;
    assert!(matches!(snap, Ok(Reply::Snapshotted { .. })), "snapshot: {snap:?}");
    let i = c.nodes.iter().position(|n| n.node_id == before.node_id.as_str()).unwrap();
    c.nodes[i].kill9();
    wait_moved(&c.client, "k-put", before.node_id.as_str()).await;
    retry_and_check("after a SIGKILL failover", &c.client, "k-", &firsts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_split_is_answered_not_applied() {
    let _serial = SERIAL.lock().await;
    let c = cluster(&[], &[]).await;
    let firsts = first_writes(&c.client, "s-").await;
    for i in 0..50 {
        c.client.put(format!("s-fill{i:03}"), vec![b'x'; 100]).await.unwrap();
    }
    let before = c.client.locate("s-put").await.unwrap();
    let ranges_before = c.client.master_status().await.unwrap().ranges.len();
    let split = admin_call(&node_of(&c, &before).rpc, Op::Split { range_id: before.range_id }).await;
    assert!(matches!(split, Ok(Reply::Pong)), "split: {split:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.client.master_status().await.map(|s| s.ranges.len()).unwrap_or(0) <= ranges_before {
        assert!(Instant::now() < deadline, "the range never split");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    retry_and_check("after a split", &c.client, "s-", &firsts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_merge_is_answered_not_applied() {
    let _serial = SERIAL.lock().await;
    // Two ranges: the user keys in the left one, lists and queues (the reserved namespace)
    // in the right one. Idle small neighbours merge.
    let c = cluster(&["m"], &["--set", "master.merge_idle_ms=1500"]).await;
    let firsts = first_writes(&c.client, "g-").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.client.master_status().await.map(|s| s.ranges.len()).unwrap_or(0) != 1 {
        assert!(Instant::now() < deadline, "the two ranges never merged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    retry_and_check("after a merge", &c.client, "g-", &firsts).await;
}

/// A hot range: 5 s of writes at full rate (far more than the 10,000 ids a range used to
/// keep), then a retry of the first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_a_hot_range_after_5_s_of_writes_is_answered_not_applied() {
    let _serial = SERIAL.lock().await;
    let c = cluster(&[], &[]).await;
    let key = Key::from("hot-first");
    let client_id = id(0).client;
    let first = Op::Put { key: key.clone(), value: b"first".to_vec(), write_id: Some(WriteId::new(client_id, 0)) };
    let answer = call_owner(&c.client, &key, first.clone()).await;
    assert!(matches!(answer, Ok(Reply::Written { .. })), "{answer:?}");
    c.client.put(key.clone(), "second").await.unwrap();
    // Pipelined writes with fresh ids from several connections, for 5 s.
    let loc = c.client.locate(key.clone()).await.unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for conn_no in 0..4u64 {
        let addr = loc.node_addr.clone();
        tasks.spawn(async move {
            let conn = Connection::connect(&addr, Role::Client, "hot", None).await.unwrap();
            let conn = std::sync::Arc::new(conn);
            let mut n = 1 + conn_no * 10_000_000;
            let mut acked = 0u64;
            while started.elapsed() < Duration::from_secs(5) {
                let mut batch = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    n += 1;
                    let op = Op::Put {
                        key: Key::from(format!("hot-{:06}", n % 1000)),
                        value: vec![b'v'; 16],
                        write_id: Some(WriteId::new(client_id + 1, n)),
                    };
                    let conn = conn.clone();
                    batch.spawn(async move { conn.call(op, Duration::from_secs(10)).await });
                }
                while let Some(r) = batch.join_next().await {
                    if matches!(r, Ok(Ok(_))) {
                        acked += 1;
                    }
                }
            }
            acked
        });
    }
    let mut writes = 0;
    while let Some(r) = tasks.join_next().await {
        writes += r.unwrap();
    }
    println!("{writes} writes in 5 s on one range");
    assert!(writes > 10_000, "only {writes} writes: not hot enough to test eviction");
    let again = call_owner(&c.client, &key, first).await;
    assert_eq!(again, answer, "the retry gets the first outcome");
    let v = c.client.get(key).await.unwrap().unwrap();
    assert_eq!(v.value, b"second".to_vec(), "the retry of the first write overwrote a later one");
}

/// Client floors (`WriteId::floor`): a client's finished writes leave no records behind (before
/// floors, every write's record stayed for the whole 90 s retention: about 80 bytes a key right
/// after a load), and a duplicate of a write delayed past its client's floor is refused, not
/// applied, also on a new owner after a checkpoint and a SIGKILL failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_writes_leave_no_records_and_their_late_duplicates_are_refused() {
    let _serial = SERIAL.lock().await;
    let mut c = cluster(&[], &[]).await;
    // 2,000 puts through the client, 16 at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16 {
        let client = c.client.clone();
        tasks.spawn(async move {
            for i in 0..125 {
                client.put(format!("f-{t:02}-{i:04}"), vec![b'v'; 100]).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let mut record_bytes = 0;
    for n in &c.nodes {
        record_bytes += http_get_json(&n.admin, "/v1/status").await["write_id_bytes"].as_u64().unwrap();
    }
    // At most the last window of open writes (16) and a floor step (64) stay, with the floor.
    assert!(record_bytes <= 16 * 1024, "{record_bytes} bytes of write-id records after 2,000 finished puts");

    // A raw client: write 1, then write 100 with floor 100 (it is done with 1; a range raises
    // a floor in steps of 64).
    let key = Key::from("f-late");
    let client_id = id(0).client;
    let first = Op::Put {
        key: key.clone(),
        value: b"first".to_vec(),
        write_id: Some(WriteId { client: client_id, n: 1, floor: 1 }),
    };
    assert!(matches!(call_owner(&c.client, &key, first.clone()).await, Ok(Reply::Written { .. })));
    let second = Op::Put {
        key: key.clone(),
        value: b"second".to_vec(),
        write_id: Some(WriteId { client: client_id, n: 100, floor: 100 }),
    };
    assert!(matches!(call_owner(&c.client, &key, second).await, Ok(Reply::Written { .. })));
    let late = call_owner(&c.client, &key, first.clone()).await;
    assert!(matches!(late, Err(ampstore_client::Error::Invalid { .. })), "late duplicate: {late:?}");
    // Checkpoint (the log below it goes), SIGKILL the owner, and send it again to the new one.
    let before = c.client.locate(key.clone()).await.unwrap();
    let snap = admin_call(&node_of(&c, &before).rpc, Op::Snapshot { range_id: before.range_id }).await;
    assert!(matches!(snap, Ok(Reply::Snapshotted { .. })), "snapshot: {snap:?}");
    let i = c.nodes.iter().position(|n| n.node_id == before.node_id.as_str()).unwrap();
    c.nodes[i].kill9();
    wait_moved(&c.client, "f-late", before.node_id.as_str()).await;
    let late = call_owner(&c.client, &key, first).await;
    assert!(matches!(late, Err(ampstore_client::Error::Invalid { .. })), "late duplicate on the new owner: {late:?}");
    assert_eq!(c.client.get(key).await.unwrap().unwrap().value, b"second".to_vec(), "the duplicate changed nothing");
}
