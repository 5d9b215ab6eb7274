//! Gossip membership, its security, and the ops view, with real processes on 127.0.0.1
//! (issue 5).

mod support;

use std::time::{Duration, Instant};

use ampstore_common::Error;
use ampstore_common::protocol::{Op, Reply};
use ampstore_server::metrics::{parse_text, sum};
use serde_json::Value;
use support::*;

/// One cluster at a time: the tests measure detection times.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SUSPICION_MS: u64 = 2000;
const KEY: &str = "4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

fn gossip_flags(key: &str, seeds: Option<&str>) -> Vec<String> {
    let mut f: Vec<String> = [
        format!("gossip.suspicion_ms={SUSPICION_MS}"),
        "gossip.refresh_ms=500".to_string(),
        "gossip.cluster_size=8".to_string(),
        format!("cluster.gossip_key={key}"),
    ]
    .into_iter()
    .flat_map(|kv| ["--set".to_string(), kv])
    .collect();
    if let Some(s) = seeds {
        f.extend(["--seeds".to_string(), s.to_string()]);
    }
    f
}

struct Group {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: std::path::PathBuf,
    master: MasterProc,
    nodes: Vec<NodeProc>,
}

impl Group {
    /// A master and `nodes` nodes, all joining through the master's gossip address.
    fn start(nodes: usize) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = root.join("store");
        let flags = gossip_flags(KEY, None);
        let master =
            MasterProc::start_with(&root.join("m"), &store, &flags.iter().map(String::as_str).collect::<Vec<_>>());
        let mut g = Group { _dir: dir, root, store, master, nodes: Vec::new() };
        for i in 0..nodes {
            g.start_node(&format!("n{i}"), KEY);
        }
        g
    }

    fn start_node(&mut self, name: &str, key: &str) -> usize {
        let mut flags = fast_node_flags();
        flags.extend(gossip_flags(key, Some(&self.master.gossip)));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.nodes.push(NodeProc::start(&self.root.join(name), &self.store, &flags));
        self.nodes.len() - 1
    }

    fn admins(&self) -> Vec<String> {
        std::iter::once(self.master.admin.clone()).chain(self.nodes.iter().map(|n| n.admin.clone())).collect()
    }
}

async fn members(admin: &str) -> Vec<Value> {
    match http_get_json(admin, "/v1/members").await {
        Value::Array(list) => list,
        other => panic!("members is not a list: {other}"),
    }
}

/// (id, state, bump) of every member `admin` reports.
async fn view(admin: &str) -> Vec<(String, String, u64)> {
    members(admin)
        .await
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
                m["bump"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn alive_ids(admin: &str) -> Vec<String> {
    view(admin).await.into_iter().filter(|(_, s, _)| s == "alive").map(|(id, _, _)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_converge_within_3s() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let g = Group::start(4);
    let all_started = Instant::now();
    let mut expected: Vec<String> =
        std::iter::once(g.master.id.clone()).chain(g.nodes.iter().map(|n| n.node_id.clone())).collect();
    expected.sort();
    let admins = g.admins();
    wait_until("every process to list the same 5 alive members", Duration::from_secs(10), async || {
        for a in &admins {
            if alive_ids(a).await != expected {
                return false;
            }
        }
        true
    })
    .await;
    let took = all_started.elapsed();
    println!(
        "5 processes converged {:.0} ms after the last one started ({:.0} ms after the first)",
        took.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(took < Duration::from_secs(3), "converged only after {took:?}");
    // Every member learns every other's role and addresses (metadata follows membership).
    wait_until("everyone's role and addresses to be known everywhere", Duration::from_secs(3), async || {
        for a in &admins {
            if !members(a)
                .await
                .iter()
                .all(|m| m["role"].is_string() && m["rpc"].is_string() && m["gossip"].is_string())
            {
                return false;
            }
        }
        true
    })
    .await;
    println!(
        "roles and addresses known everywhere {:.0} ms after the last start",
        all_started.elapsed().as_secs_f64() * 1000.0
    );
    let master_entry = members(&g.nodes[0].admin).await.into_iter().find(|m| m["id"] == g.master.id.as_str()).unwrap();
    assert_eq!(master_entry["role"], "master");
    assert_eq!(master_entry["rpc"], g.master.rpc.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_reported_down_and_rejoins_with_a_higher_bump() {
    let _serial = SERIAL.lock().await;
    let mut g = Group::start(4);
    let admins = g.admins();
    wait_until("convergence", Duration::from_secs(10), async || {
        for a in &admins {
            if alive_ids(a).await.len() != 5 {
                return false;
            }
        }
        true
    })
    .await;
    let victim_id = g.nodes[3].node_id.clone();
    let old_bump = view(&g.master.admin).await.into_iter().find(|(id, _, _)| *id == victim_id).unwrap().2;
    g.nodes[3].kill9();
    let killed_at = Instant::now();
    let others: Vec<String> = admins[..4].to_vec();
    let mut reported = vec![None; others.len()];
    while reported.iter().any(Option::is_none) && killed_at.elapsed() < Duration::from_secs(15) {
        for (i, a) in others.iter().enumerate() {
            if reported[i].is_none() && view(a).await.iter().any(|(id, s, _)| *id == victim_id && s == "down") {
                reported[i] = Some(killed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let times: Vec<u128> = reported.iter().map(|t| t.expect("never reported down").as_millis()).collect();
    println!("SIGKILLed member reported down after {times:?} ms (suspicion time {SUSPICION_MS} ms)");
    assert!(times.iter().all(|&t| t <= SUSPICION_MS as u128), "reported down after {times:?} ms");

    // Same node id (same data dir): alive again, newer identity, no stale duplicate.
    let data = g.nodes[3].data_dir.clone();
    let mut flags = fast_node_flags();
    flags.extend(gossip_flags(KEY, Some(&g.master.gossip)));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    g.nodes[3] = NodeProc::start(&data, &g.store, &flags);
    assert_eq!(g.nodes[3].node_id, victim_id);
    wait_until("the restarted member to be alive everywhere", Duration::from_secs(10), async || {
        for a in &others {
            let v = view(a).await;
            let entries: Vec<_> = v.iter().filter(|(id, _, _)| *id == victim_id).collect();
            if entries.len() != 1 || entries[0].1 != "alive" || entries[0].2 <= old_bump {
                return false;
            }
        }
        true
    })
    .await;
    let v = view(&g.master.admin).await;
    assert_eq!(v.iter().filter(|(id, _, _)| *id == victim_id).count(), 1, "{v:?}");
    assert_eq!(v.len(), 5, "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_the_wrong_key_never_joins() {
    let _serial = SERIAL.lock().await;
    let mut g = Group::start(2);
    let wrong = "00".repeat(32);
    let intruder = g.start_node("intruder", &wrong);
    let intruder_id = g.nodes[intruder].node_id.clone();
    let drops_before = http_get_json(&g.master.admin, "/v1/status").await["gossip_dropped_packets"].as_u64().unwrap();
    let admins: Vec<String> = g.admins()[..3].to_vec();
    wait_until("the keyed members to see each other", Duration::from_secs(10), async || {
        for a in &admins {
            if alive_ids(a).await.len() != 3 {
                return false;
            }
        }
        true
    })
    .await;
    // Give gossip several rounds: the intruder keeps announcing itself to the master.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    for a in &admins {
        assert!(view(a).await.iter().all(|(id, _, _)| *id != intruder_id), "{a} lists the intruder");
    }
    assert_eq!(view(&g.nodes[intruder].admin).await.len(), 1, "the intruder learned nobody");
    let drops_after = http_get_json(&g.master.admin, "/v1/status").await["gossip_dropped_packets"].as_u64().unwrap();
    println!("master dropped {} packets that failed authentication", drops_after - drops_before);
    assert!(drops_after > drops_before);
    let text = http_get_text(&g.master.admin, "/metrics").await;
    let samples = parse_text(&text).unwrap();
    assert!(sum(&samples, "ampstore_gossip_dropped_packets_total", &[("reason", "auth")]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_needs_the_cluster_token_when_one_is_configured() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut flags = fast_node_flags();
    // A server with the cluster token needs the admin token too (the master reaches the
    // node with it).
    let secrets = ["--set", "cluster.token=s3cret-token", "--set", "cluster.admin_token=s3cret-admin"];
    flags.extend(secrets.map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = NodeProc::start(&dir.path().join("n"), &store, &flags);
    let master = MasterProc::start_with(&dir.path().join("m"), &store, &secrets);
    for (what, addr) in [("node", &node.rpc), ("master", &master.rpc)] {
        for token in [None, Some("wrong"), Some("s3cret-tokem")] {
            let err = TestClient::connect_with_token(addr, token)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what} accepted {token:?}"));
            let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>()).cloned();
            assert!(matches!(inner, Some(Error::Unauthorized { .. })), "{what} with {token:?}: {err}");
        }
        let mut ok = TestClient::connect_with_token(addr, Some("s3cret-token")).await.unwrap();
        assert_eq!(ok.call(Op::Ping).await.unwrap(), Reply::Pong, "{what}");
    }
    // The master talks to the node with the admin token: ranges get served.
    let conn = ampstore_common::connection::Connection::connect(
        &master.rpc,
        ampstore_common::protocol::Role::Client,
        "t",
        Some("s3cret-token".into()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.call(Op::Locate { key: ampstore_common::Key::from("k") }, Duration::from_secs(5)).await {
            Ok(Reply::Location(loc)) => {
                assert_eq!(loc.node_id.as_str(), node.node_id);
                break;
            }
            other => assert!(Instant::now() < deadline, "never located: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_udp_packets_are_dropped_and_counted() {
    let _serial = SERIAL.lock().await;
    let g = Group::start(1);
    let node = &g.nodes[0];
    let drops = async || http_get_json(&node.admin, "/v1/status").await["gossip_dropped_packets"].as_u64().unwrap();
    let before = drops().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut packets: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        b"AG".to_vec(),
        b"AG\x01\x00not foca at all".to_vec(),
        b"AG\x01\x01".to_vec(),
        [b"AG\x01\x01".as_slice(), &[7u8; 100]].concat(),
        [b"AG\x09\x01".as_slice(), &[7u8; 100]].concat(),
        vec![0xff; 2000],
        vec![b'A'; 60_000],
    ];
    for i in 0..50u8 {
        packets.push((0..(i as usize * 29 % 1400)).map(|j| (j as u8).wrapping_mul(i).wrapping_add(13)).collect());
    }
    for p in &packets {
        sock.send_to(p, &node.gossip).await.unwrap();
    }
    wait_until("the drop counter to count the garbage", Duration::from_secs(5), async || drops().await >= before + 50)
        .await;
    let after = drops().await;
    println!("{} garbage packets sent, drop counter {before} -> {after}", packets.len());
    // Still alive, still serving, still a member.
    let mut c = TestClient::connect(&node.rpc).await.unwrap();
    assert_eq!(c.call(Op::Ping).await.unwrap(), Reply::Pong);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive_ids(&g.master.admin).await.contains(&node.node_id));
    let samples = parse_text(&http_get_text(&node.admin, "/metrics").await).unwrap();
    let counted: f64 = ["oversize", "malformed", "auth"]
        .iter()
        .map(|r| sum(&samples, "ampstore_gossip_dropped_packets_total", &[("reason", r)]))
        .sum();
    assert!(counted >= 50.0, "{counted}");
    assert!(sum(&samples, "ampstore_gossip_dropped_packets_total", &[("reason", "oversize")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_requests() {
    let _serial = SERIAL.lock().await;
    let g = Group::start(1);
    let node = &g.nodes[0];
    let scrape =
        async |admin: &str| parse_text(&http_get_text(admin, "/metrics").await).unwrap_or_else(|e| panic!("{e}"));
    let before = scrape(&node.admin).await;
    let pings = |s: &[ampstore_server::metrics::Sample]| {
        sum(s, "ampstore_requests_total", &[("op", "ping"), ("outcome", "ok")])
    };
    let mut c = TestClient::connect(&node.rpc).await.unwrap();
    for _ in 0..7 {
        c.call(Op::Ping).await.unwrap();
    }
    // Writes: log appends and batch sizes move too (the master places the range).
    let client = client_for(&g.master).await;
    for i in 0..20 {
        client.put(format!("key{i}"), "value").await.unwrap();
    }
    let after = scrape(&node.admin).await;
    assert_eq!(pings(&after) - pings(&before), 7.0);
    assert!(sum(&after, "ampstore_requests_total", &[("op", "put"), ("outcome", "ok")]) >= 20.0);
    assert!(sum(&after, "ampstore_request_duration_seconds_count", &[("op", "put")]) >= 20.0);
    assert!(sum(&after, "ampstore_log_appends_total", &[]) >= 1.0);
    assert!(sum(&after, "ampstore_log_batch_writes_count", &[]) >= 1.0);
    assert!(sum(&after, "ampstore_gossip_packets_total", &[("direction", "in")]) > 0.0);
    assert!(sum(&after, "ampstore_members", &[("state", "alive")]) >= 2.0);
    wait_until("the range gauge to show the served range", Duration::from_secs(5), async || {
        sum(&scrape(&node.admin).await, "ampstore_ranges", &[("state", "serving")]) >= 1.0
    })
    .await;
    // The master's metrics count locates.
    let m = scrape(&g.master.admin).await;
    assert!(sum(&m, "ampstore_requests_total", &[("op", "locate")]) >= 1.0);
}
