//! The master with real processes on 127.0.0.1: failure reassignment, master failover, a
//! paused master, a joining node and a drain (issue 4).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig};
use ampstore_common::Key;
use ampstore_common::protocol::{Op, Reply};
use ampstore_store::meta;
use support::*;

/// The tests measure failover times: one cluster at a time on this machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    _dir: tempfile::TempDir,
    store_dir: std::path::PathBuf,
    root: std::path::PathBuf,
    masters: Vec<MasterProc>,
    nodes: Vec<NodeProc>,
}

impl Cluster {
    /// `splits`: range boundaries written before the first master starts.
    async fn start(masters: usize, nodes: usize, splits: &[&str]) -> Cluster {
        Cluster::start_with(masters, nodes, splits, &[]).await
    }

    /// `node_flags`: extra flags for every node.
    async fn start_with(masters: usize, nodes: usize, splits: &[&str], node_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store_dir = root.join("store");
        if !splits.is_empty() {
            create_ranges(&open_store(&store_dir), splits).await;
        }
        let masters = (0..masters).map(|i| MasterProc::start(&root.join(format!("m{i}")), &store_dir)).collect();
        let mut flags = fast_node_flags();
        flags.extend(node_flags.iter().map(|f| f.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let nodes = (0..nodes).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store_dir, &flags)).collect();
        Cluster { _dir: dir, store_dir, root, masters, nodes }
    }

    fn add_node(&mut self) -> &NodeProc {
        let i = self.nodes.len();
        self.nodes.push(start_fast_node(&self.root.join(format!("n{i}")), &self.store_dir));
        self.nodes.last().unwrap()
    }

    fn master_addrs(&self) -> Vec<&str> {
        self.masters.iter().map(|m| m.rpc.as_str()).collect()
    }

    fn node_index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.node_id == id).unwrap_or_else(|| panic!("no node {id}"))
    }
}

/// Ranges split at k1..k9 so keys `kNNNN` spread over 10 ranges.
const TEN_RANGES: &[&str] = &["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];

fn key(i: u64) -> String {
    format!("k{:04}", (i * 7919) % 10_000)
}

/// The product client of the cluster behind `masters`, each call retrying for up to
/// `deadline` (routing, retries and write ids are the client crate's own).
async fn client_of(masters: &[&str], deadline: Duration) -> Client {
    let mut cfg = ClientConfig::new(masters);
    cfg.call_deadline = deadline;
    Client::with_config(cfg).await.unwrap()
}

/// Puts keys until `stop`, recording every acknowledged one. Each put is one logical
/// write (the client keeps its write id across retries) within the client's call deadline.
async fn writer(
    client: Client,
    deadline: Duration,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    worst_ms: Arc<AtomicU64>,
    first: u64,
) {
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let value = format!("v{i}");
        match client.put(key(i), value).await {
            Ok(_) => acked.lock().unwrap().push(i),
            Err(e) => panic!("write {} failed after {:?} (call deadline {deadline:?}): {e}", key(i), started.elapsed()),
        }
        worst_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every acknowledged write reads back with its value (later writes to the same key win:
/// keys repeat every 10,000 writes, far beyond these tests).
async fn check_acked(client: &Client, acked: &[u64]) {
    for &i in acked {
        let got = client.get(key(i)).await.unwrap_or_else(|e| panic!("read {}: {e}", key(i)));
        assert_eq!(got.map(|v| v.value), Some(format!("v{i}").into_bytes()), "acknowledged write {} lost", key(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_owner_is_replaced_within_3s_and_no_acknowledged_write_is_lost() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(1, 3, TEN_RANGES).await;
    let deadline = Duration::from_secs(10);
    let client = client_of(&c.master_addrs(), deadline).await;
    // Load every range, then write while we kill the owner of one key.
    for i in 0..50 {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    let (stop, acked, worst) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new((0..50).collect())), Arc::new(AtomicU64::new(0)));
    let w = tokio::spawn(writer(client.clone(), deadline, stop.clone(), acked.clone(), worst.clone(), 0));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let probe = Key::from("k5000");
    let owner = client.locate(probe.clone()).await.unwrap();
    let victim = c.node_index(owner.node_id.as_str());
    c.nodes[victim].kill9();
    let killed_at = Instant::now();
    // A fresh reader (no cached route) asks until the key is served again (the client
    // retries inside the call; a call that gives up is asked again).
    let fresh = client_of(&c.master_addrs(), deadline).await;
    loop {
        match fresh.get(probe.clone()).await {
            Ok(_) => break,
            other => assert!(killed_at.elapsed() < Duration::from_secs(10), "never served again: {other:?}"),
        }
    }
    let took = killed_at.elapsed();
    let new_owner = fresh.locate(probe.clone()).await.unwrap();
    println!(
        "key served again by {} {:.0} ms after SIGKILL of {}",
        new_owner.node_id,
        took.as_secs_f64() * 1000.0,
        owner.node_id
    );
    assert_ne!(new_owner.node_id, owner.node_id);
    assert!(took < Duration::from_secs(3), "served again only after {took:?}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    println!("{} writes acknowledged across the kill; slowest took {} ms", acked.len(), worst.load(Ordering::Relaxed));
    check_acked(&client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_master_takes_over_and_cached_routes_never_notice() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(2, 3, TEN_RANGES).await;
    let store = open_store(&c.store_dir);
    let loader = client_of(&c.master_addrs(), Duration::from_secs(10)).await;
    for i in 0..100 {
        loader.put(key(i), format!("v{i}")).await.unwrap();
    }
    let refs: Vec<&MasterProc> = c.masters.iter().collect();
    let active = wait_active(&refs, Duration::from_secs(10)).await;
    let standby = 1 - active;
    // The ranges were just placed on demand; let the balancer finish spreading them first
    // (owners unchanged over three balance intervals), so that only the master change can
    // move a range in the window this test watches.
    let settled_by = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = owners(&store).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = owners(&store).await;
        if now == seen {
            break;
        }
        assert!(std::time::Instant::now() < settled_by, "the ranges never settled: {now:?}");
        seen = now;
    }
    // Every range is served and cached by a client that knows only the active master: once
    // that master is killed, any call that needs a master (to relocate after an error)
    // fails, so an error-free run shows the cached routes carried every call.
    let cached = client_of(&[c.masters[active].rpc.as_str()], Duration::from_secs(5)).await;
    let routes = |locs: Vec<ampstore_client::RangeLocation>| {
        locs.into_iter().map(|l| (l.range_id, l.start.to_string(), l.node_id.to_string())).collect::<Vec<_>>()
    };
    let cached_routes = routes(cached.ranges().await.unwrap());
    assert_eq!(cached_routes.len(), 10, "{cached_routes:?}");
    let before = owners(&store).await;
    assert!(before.iter().all(|(_, o)| o.is_some()), "{before:?}");
    let (stop, errors, ops) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let client = {
        let (cached, stop, errors, ops) = (cached.clone(), stop.clone(), errors.clone(), ops.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = key(i % 100);
                let r = if i.is_multiple_of(2) {
                    cached.get(k.as_str()).await.map(|_| ())
                } else {
                    cached.put(k.as_str(), format!("v{}", i % 100)).await.map(|_| ())
                };
                if let Err(e) = r {
                    errors.lock().unwrap().push(format!("{k}: {e}"));
                }
                ops.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.masters[active].kill9();
    let killed_at = Instant::now();
    loop {
        if c.masters[standby].status().await.is_some_and(|s| s.active_term.is_some()) {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(15), "the standby never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed_at.elapsed();
    println!(
        "standby active {:.0} ms after SIGKILL of the active master (lease {LEASE_MS} ms)",
        took.as_secs_f64() * 1000.0
    );
    assert!(took <= Duration::from_millis(LEASE_MS + 1000), "took over after {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let errors = errors.lock().unwrap().clone();
    println!(
        "{} client calls on cached routes during the failover, {} errors",
        ops.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(errors.is_empty(), "clients noticed the master change: {:?}", &errors[..errors.len().min(5)]);
    assert_eq!(owners(&store).await, before, "a range changed owner because of the master change");
    // The new master answers locates with the same owners.
    let fresh = client_of(&[c.masters[standby].rpc.as_str()], Duration::from_secs(10)).await;
    assert_eq!(routes(fresh.ranges().await.unwrap()), cached_routes, "the new master routes differently");
    check_acked(&fresh, &(0..100).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_master_cannot_change_routing_after_it_resumes() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(2, 3, TEN_RANGES).await;
    let store = open_store(&c.store_dir);
    let client = client_of(&c.master_addrs(), Duration::from_secs(10)).await;
    for i in 0..50 {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    let refs: Vec<&MasterProc> = c.masters.iter().collect();
    let a = wait_active(&refs, Duration::from_secs(10)).await;
    let b = 1 - a;
    let term_a = meta::get_term(store.meta.as_ref()).await.unwrap().unwrap();
    assert_eq!(term_a.holder.as_str(), c.masters[a].id);

    c.masters[a].signal(libc::SIGSTOP);
    let paused_at = Instant::now();
    wait_until("the standby to take over", Duration::from_millis(LEASE_MS + 3000), async || {
        c.masters[b].status().await.is_some_and(|s| s.active_term.is_some())
    })
    .await;
    println!("standby active {:.0} ms after the active master was paused", paused_at.elapsed().as_secs_f64() * 1000.0);
    // While A is paused, B changes routing: a node dies and B reassigns its ranges.
    // (The client may ask the paused master first: it gives up on it and asks B.)
    let victim_id = client.locate("k3").await.unwrap().node_id.to_string();
    let victim = c.node_index(&victim_id);
    c.nodes[victim].kill9();
    wait_until("B to reassign the dead node's ranges", Duration::from_secs(10), async || {
        owners(&store).await.iter().all(|(_, o)| o.as_deref().is_some_and(|o| o != victim_id))
    })
    .await;
    // Let B finish what it does after a failure (rebalancing the survivors): routing stays
    // the same for 2 s.
    let mut routing_by_b = owners(&store).await;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = owners(&store).await;
        if now != routing_by_b {
            (routing_by_b, stable_since) = (now, Instant::now());
        }
    }
    let term_b = meta::get_term(store.meta.as_ref()).await.unwrap().unwrap();
    assert!(term_b.term > term_a.term);

    // A resumes: it may still believe in its old term for a moment, but meta refuses it.
    c.masters[a].signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 500)).await;
    let status_a = c.masters[a].status().await.unwrap();
    assert_eq!(status_a.active_term, None, "a deposed master must be a standby");
    assert_eq!(status_a.lease_holder.map(|h| h.to_string()), Some(c.masters[b].id.clone()));
    let err = ampstore_common::connection::Connection::connect(
        &c.masters[a].rpc,
        ampstore_common::protocol::Role::Client,
        "t",
        None,
    )
    .await
    .unwrap()
    .call(Op::Locate { key: Key::from("k1") }, Duration::from_secs(5))
    .await
    .unwrap_err();
    assert!(
        matches!(err, ampstore_common::Error::NotMaster { hint: Some(ref h) } if h.rpc_addr == c.masters[b].rpc),
        "{err:?}"
    );
    assert_eq!(meta::get_term(store.meta.as_ref()).await.unwrap().unwrap(), term_b, "the term item is B's");
    assert_eq!(owners(&store).await, routing_by_b, "routing changed after the paused master resumed");
    check_acked(&client, &(0..50).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_receives_ranges_and_every_key_reads_back() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(1, 3, &["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k95", "l"]).await;
    let client = client_of(&c.master_addrs(), Duration::from_secs(10)).await;
    let keys: Vec<u64> = (0..300).collect();
    for &i in &keys {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    client.put("m-first-key-of-the-last-range", "x").await.unwrap();
    let counts = async |m: &MasterProc| {
        let s = m.status().await.unwrap();
        s.nodes
            .iter()
            .filter(|n| n.state == ampstore_common::protocol::NodeState::Live)
            .map(|n| (n.node_id.to_string(), n.ranges))
            .collect::<Vec<_>>()
    };
    println!("before the join: {:?}", counts(&c.masters[0]).await);
    let joined = c.add_node().node_id.clone();
    let master = &c.masters[0];
    let started = Instant::now();
    wait_until("the new node to get its share (3 of 12 ranges)", Duration::from_secs(30), async || {
        let s = master.status().await.unwrap();
        let per_node: Vec<u64> = s
            .nodes
            .iter()
            .filter(|n| n.state == ampstore_common::protocol::NodeState::Live)
            .map(|n| n.ranges)
            .collect();
        per_node.len() == 4 && per_node.iter().all(|&r| r == 3)
    })
    .await;
    println!("after the join ({:.1} s): {:?}", started.elapsed().as_secs_f64(), counts(master).await);
    // A scan's view: the ranges covering a span, contiguous, in key order, each served.
    let conn = ampstore_common::connection::Connection::connect(
        &master.rpc,
        ampstore_common::protocol::Role::Client,
        "t",
        None,
    )
    .await
    .unwrap();
    let span = Op::LocateRange { start: Key::from("k15"), end: Some(Key::from("k75")) };
    let Ok(Reply::Locations(locs)) = conn.call(span, Duration::from_secs(5)).await else { panic!("locate_range") };
    let starts: Vec<String> = locs.iter().map(|l| l.start.to_string()).collect();
    assert_eq!(starts, ["k1", "k2", "k3", "k4", "k5", "k6", "k7"], "{locs:?}");
    assert!(locs.windows(2).all(|w| w[0].end.as_ref() == Some(&w[1].start)));
    assert!(locs.iter().all(|l| !l.node_addr.is_empty() && l.lease_ms_left > 0));
    let Ok(Reply::Locations(all)) =
        conn.call(Op::LocateRange { start: Key::default(), end: None }, Duration::from_secs(5)).await
    else {
        panic!("locate_range")
    };
    assert_eq!(all.len(), 12);
    assert_eq!(all.last().unwrap().end, None);
    let s = master.status().await.unwrap();
    assert_eq!(s.nodes.iter().find(|n| n.node_id.as_str() == joined).unwrap().ranges, 3);
    check_acked(&client, &keys).await;
    assert_eq!(client.get("m-first-key-of-the-last-range").await.unwrap().map(|v| v.value), Some(b"x".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_empties_a_node_while_a_writer_runs() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(1, 3, TEN_RANGES).await;
    // The call deadline no write may exceed.
    let deadline = Duration::from_secs(5);
    let client = client_of(&c.master_addrs(), deadline).await;
    for i in 0..30 {
        client.put(key(i), format!("v{i}")).await.unwrap();
    }
    let master = &c.masters[0];
    wait_until("every node to hold ranges", Duration::from_secs(10), async || {
        let s = master.status().await.unwrap();
        s.nodes.iter().all(|n| n.ranges > 0)
    })
    .await;
    let s = master.status().await.unwrap();
    let target = s.nodes.iter().max_by_key(|n| n.ranges).unwrap().node_id.to_string();
    let held = s.nodes.iter().find(|n| n.node_id.as_str() == target).unwrap().ranges;

    let (stop, acked, worst) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new((0..30).collect())), Arc::new(AtomicU64::new(0)));
    let w = tokio::spawn(writer(client.clone(), deadline, stop.clone(), acked.clone(), worst.clone(), 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    wait_until("the master to see the writer's load", Duration::from_secs(5), async || {
        master.status().await.unwrap().nodes.iter().any(|n| n.ops_per_sec > 0 && n.resident_bytes > 0)
    })
    .await;
    // The operator's own data directory (no secrets: this cluster has no tokens), so no
    // stray `./ampstore-data` decides the credential.
    let operator = c.root.join("operator");
    let out = tokio::task::spawn_blocking({
        let (master_rpc, target, operator) = (master.rpc.clone(), target.clone(), operator.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ampstore"))
                .arg("--data")
                .arg(&operator)
                .args(["drain", &target, "--master", &master_rpc, "--timeout", "60"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "drain failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("drained"), "{stdout}");
    println!("drain of {target} ({held} ranges) took {:.1} s: {}", started.elapsed().as_secs_f64(), stdout.trim());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();

    let s = master.status().await.unwrap();
    let drained = s.nodes.iter().find(|n| n.node_id.as_str() == target).unwrap();
    assert!(drained.draining);
    assert_eq!(drained.ranges, 0);
    assert!(s.ranges.iter().all(|r| r.owner.as_ref().is_some_and(|o| o.as_str() != target)));
    // The node itself serves nothing.
    let node = c.nodes.iter().find(|n| n.node_id == target).unwrap();
    // Range stats are an operator's view (role admin; this cluster has no tokens).
    let mut tc = TestClient::connect_as(&node.rpc, ampstore_common::protocol::Role::Admin, None).await.unwrap();
    let Ok(Reply::Stats(stats)) = tc.call(Op::RangeStats).await else { panic!("stats") };
    assert!(
        stats.ranges.iter().all(|r| r.state != ampstore_common::protocol::RangeState::Serving),
        "{:?}",
        stats.ranges
    );
    let acked = acked.lock().unwrap().clone();
    println!(
        "{} writes during the drain; slowest took {} ms (deadline {deadline:?})",
        acked.len(),
        worst.load(Ordering::Relaxed),
    );
    check_acked(&client, &acked).await;
    // Undo: the node accepts ranges again.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .arg("--data")
        .arg(&operator)
        .args(["drain", &target, "--master", &master.rpc, "--undo"])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_until("the undrained node to get ranges back", Duration::from_secs(20), async || {
        master.status().await.unwrap().nodes.iter().any(|n| n.node_id.as_str() == target && !n.draining && n.ranges > 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_release_idle_ranges_to_stay_under_their_memory_budget() {
    let _serial = SERIAL.lock().await;
    const BUDGET: u64 = 24 * 1024;
    let budget_flag = format!("node.memory_budget_bytes={BUDGET}");
    let c = Cluster::start_with(1, 2, TEN_RANGES, &["--set", &budget_flag, "--set", "node.budget_idle_ms=300"]).await;
    let client = client_of(&c.master_addrs(), Duration::from_secs(10)).await;
    // 10 ranges x 4 keys x 2 KiB = 80 KiB of data for 2 nodes with 24 KiB each.
    let value = vec![b'x'; 2048];
    let keys: Vec<String> = (0..10).flat_map(|r| (0..4).map(move |i| format!("k{r}{i:03}"))).collect();
    for k in &keys {
        client.put(k.as_str(), value.clone()).await.unwrap();
    }
    let master = &c.masters[0];
    wait_until("both nodes to be back under their budget", Duration::from_secs(20), async || {
        let s = master.status().await.unwrap();
        let released = s.ranges.iter().any(|r| r.owner.is_none());
        released && s.nodes.iter().all(|n| n.memory_budget_bytes == BUDGET && n.data_bytes <= BUDGET)
    })
    .await;
    let s = master.status().await.unwrap();
    let unowned = s.ranges.iter().filter(|r| r.owner.is_none()).count();
    println!(
        "after the writes: {unowned} of 10 ranges released; data per node {:?}",
        s.nodes.iter().map(|n| n.data_bytes).collect::<Vec<_>>()
    );
    assert!(unowned > 0, "some ranges must have been released");
    // Released ranges come back on demand: every key reads back.
    for k in &keys {
        assert_eq!(client.get(k.as_str()).await.unwrap().map(|v| v.value), Some(value.clone()), "{k}");
    }
}
