//! `ampstore up` as a user runs it: secrets, cluster.json, the ops commands finding the
//! cluster, a graceful stop, and the same data after a restart.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ampstore_common::Error;
use ampstore_common::protocol::{Op, Reply, Role};
use serde_json::Value;
use support::*;

fn ampstore(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("AMPSTORE_CONFIG")
        .output()
        .expect("run ampstore")
}

fn start_up(data: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .arg("--data")
        .arg(data)
        .args(["up", "--nodes", "3"])
        .env_remove("AMPSTORE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start up")
}

async fn wait_cluster_file(data: &Path) -> Value {
    let path = data.join("cluster.json");
    wait_until("cluster.json", Duration::from_secs(60), async || path.is_file()).await;
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn stop(mut up: Child) -> Duration {
    let started = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let status = up.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_keeps_secrets_private_and_the_cli_finds_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start_up(&data);
    let cluster = wait_cluster_file(&data).await;
    let masters = cluster["masters"].as_array().unwrap();
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!((masters.len(), nodes.len()), (1, 3));
    for p in masters.iter().chain(nodes) {
        for field in ["id", "rpc", "admin", "gossip"] {
            assert!(p[field].is_string(), "{field} in {p}");
        }
        assert!(p["pid"].as_u64().unwrap() > 0);
    }
    for f in ["cluster.token", "admin.token", "gossip.key"] {
        let mode = std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let token = std::fs::read_to_string(data.join("cluster.token")).unwrap().trim().to_string();
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();
    assert_ne!(token, admin_token, "app servers' token is not the admin token");

    // RPC needs the token.
    let node_rpc = nodes[0]["rpc"].as_str().unwrap();
    let err = TestClient::connect(node_rpc).await.err().expect("a hello without the token is refused");
    assert!(matches!(err.get_ref().and_then(|e| e.downcast_ref::<Error>()), Some(Error::Unauthorized { .. })), "{err}");
    let mut c = TestClient::connect_with_token(node_rpc, Some(&token)).await.unwrap();
    assert_eq!(c.call(Op::Ping).await.unwrap(), Reply::Pong);
    // The processes of the cluster use the admin token: an operator's connection gets range
    // stats, which the cluster token does not.
    assert!(matches!(c.call(Op::RangeStats).await, Err(Error::Unauthorized { .. })));
    let mut ops = TestClient::connect_as(node_rpc, Role::Admin, Some(&admin_token)).await.unwrap();
    assert!(matches!(ops.call(Op::RangeStats).await, Ok(Reply::Stats(_))));

    // The ops commands find the cluster (and its token) through --data. Membership can
    // converge a moment before every member's role and addresses have spread (they travel
    // as a separate broadcast): give them a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let members: Vec<Value> = loop {
        let out = ampstore(&data, &["members", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let members: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let complete = members.len() == 4 && members.iter().all(|m| !m["role"].is_null() && !m["rpc"].is_null());
        if complete || std::time::Instant::now() >= deadline {
            break members;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(members.len(), 4, "{members:?}");
    for m in &members {
        for field in ["id", "role", "state", "rpc", "gossip", "bump"] {
            assert!(!m[field].is_null(), "{field} missing in {m}");
        }
        assert_eq!(m["state"], "alive");
    }
    let out = ampstore(&data, &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["active_master"]["id"], masters[0]["id"]);
    assert_eq!(status["active_master"]["rpc"], masters[0]["rpc"]);
    assert_eq!(status["members"]["alive"], 4);
    assert!(status["ranges"].as_u64().unwrap() >= 1);
    let out = ampstore(&data, &["members"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID") && table.lines().count() == 5, "{table}");

    // Data written now is there after a restart of the whole cluster.
    let mut cfg = ampstore_client::ClientConfig::new(&[masters[0]["rpc"].as_str().unwrap()]);
    cfg.token = Some(token.clone());
    let client = ampstore_client::Client::with_config(cfg).await.unwrap();
    for i in 0..20 {
        client.put(format!("user:{i}"), format!("v{i}")).await.unwrap();
    }
    let took = stop(up);
    println!("up stopped gracefully in {:.1} s", took.as_secs_f64());
    assert!(!data.join("cluster.json").exists(), "cluster.json is removed on stop");
    for p in masters.iter().chain(nodes) {
        let pid = p["pid"].as_u64().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "child {pid} still running");
    }

    let up = start_up(&data);
    let again = wait_cluster_file(&data).await;
    let ids = |c: &Value| {
        let mut v: Vec<String> =
            c["nodes"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&again), ids(&cluster), "the same node ids come back");
    let mut cfg = ampstore_client::ClientConfig::new(&[again["masters"][0]["rpc"].as_str().unwrap()]);
    cfg.token = Some(token);
    let client = ampstore_client::Client::with_config(cfg).await.unwrap();
    for i in 0..20 {
        let got = client.get(format!("user:{i}")).await.unwrap().map(|v| v.value);
        assert_eq!(got, Some(format!("v{i}").into_bytes()));
    }
    stop(up);
}
