//! `ampstore demo`: a guided tour on a temporary local cluster. It starts one master and
//! three nodes, writes, reads and scans keys, shows where keys live, kills the node that
//! owns a key and shows reads and writes carrying on, then stops everything.

use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig, Key};

use crate::settings::SettingsArgs;
use crate::up_cmd::{self, UpArgs};

pub async fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ampstore-demo-{:016x}", rand::random::<u64>()));
    let result = tour(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn step(n: u32, what: &str) {
    println!("\n{n}. {what}");
}

async fn tour(dir: &std::path::Path) -> anyhow::Result<()> {
    println!("Ampstore demo: a local cluster in {}", dir.display());
    // Faster failure detection than the defaults, so the failover step takes seconds.
    let settings = SettingsArgs {
        config: None,
        data_dir: Some(dir.to_path_buf()),
        set: [
            "node.liveness_ms=2000",
            "node.heartbeat_ms=300",
            "node.liveness_margin_ms=400",
            "gossip.suspicion_ms=2000",
        ]
        .map(String::from)
        .to_vec(),
    };
    step(1, "Starting 1 master and 3 nodes (child processes of this binary)...");
    let started = Instant::now();
    let args = UpArgs {
        nodes: 3,
        masters: 1,
        backend: None,
        endpoint: None,
        split_bytes: Some(16 * 1024),
        collectors: 0,
        log: "warn".into(),
        // The demo shows a range served elsewhere after a kill, not the node coming back.
        no_restart: true,
    };
    let mut cluster = up_cmd::start(&settings, &args).await?;
    println!("   up in {:.1} s", started.elapsed().as_secs_f64());
    let roles =
        cluster.file.masters.iter().map(|p| ("master", p)).chain(cluster.file.nodes.iter().map(|p| ("node", p)));
    for (role, p) in roles {
        println!("   {role:<6} {:<20} rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    let outcome = async {
        let masters: Vec<String> = cluster.file.masters.iter().map(|m| m.rpc.clone()).collect();
        let mut cfg = ClientConfig::new(&masters);
        cfg.token = cluster.token.clone();
        cfg.call_deadline = Duration::from_secs(15);
        let client = Client::with_config(cfg).await?;

        step(2, "Writing 200 keys (every write is durable in the commit log before it is acknowledged)...");
        let t = Instant::now();
        for i in 0..200 {
            client.put(format!("user:{i:03}"), format!("{{\"name\": \"user {i}\", \"visits\": {}}}", i % 7)).await?;
        }
        println!("   200 puts in {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);

        step(3, "Reading and scanning...");
        let v = client.get("user:042").await?.ok_or_else(|| anyhow::anyhow!("user:042 is missing"))?;
        println!("   get user:042 -> {} (version {})", String::from_utf8_lossy(&v.value), v.version);
        let page = client.scan("user:100", Some(Key::from("user:105")), 10, false).await?;
        println!("   scan [user:100, user:105):");
        for item in &page.items {
            println!("     {} = {}", item.key, String::from_utf8_lossy(&item.value));
        }
        let rev = client.scan("user:", Some(Key::from("user;")), 3, true).await?;
        let keys: Vec<String> = rev.items.iter().map(|i| i.key.to_string()).collect();
        println!("   last 3 keys, newest first: {}", keys.join(", "));

        step(4, "Where keys live...");
        for r in client.ranges().await? {
            let end = r.end.as_ref().map_or("(end)".to_string(), |e| e.to_string());
            println!(
                "   range {} [{:?}, {end}) on node {} at {}",
                r.range_id,
                r.start.to_string(),
                r.node_id,
                r.node_addr
            );
        }
        let loc = client.locate("user:042").await?;
        println!(
            "   user:042 lives in range {} on node {} (lease {} ms left)",
            loc.range_id, loc.node_id, loc.lease_ms_left
        );

        step(5, &format!("Killing node {} (SIGKILL) while reading and writing...", loc.node_id));
        anyhow::ensure!(cluster.kill_node(loc.node_id.as_str()), "node {} is not a child of this demo", loc.node_id);
        let killed = Instant::now();
        let v = client.get("user:042").await?.ok_or_else(|| anyhow::anyhow!("user:042 lost"))?;
        let read_ms = killed.elapsed().as_millis();
        client.put("user:042", "{\"name\": \"user 42\", \"visits\": 100}").await?;
        let moved = client.locate("user:042").await?;
        println!(
            "   read after the kill answered in {read_ms} ms (the client retried while the master moved the range): {}",
            String::from_utf8_lossy(&v.value)
        );
        println!("   user:042 now lives on node {}; a write to it succeeded", moved.node_id);
        let mut missing = 0;
        for i in 0..200 {
            if client.get(format!("user:{i:03}")).await?.is_none() {
                missing += 1;
            }
        }
        println!("   all 200 keys read back: {} missing", missing);
        anyhow::ensure!(missing == 0, "{missing} keys missing after the failover");

        step(6, "Summary");
        println!("   200 keys written and read back; scans in both directions; one node killed;");
        println!(
            "   its ranges were served again by another node in {:.1} s with no acknowledged write lost.",
            read_ms as f64 / 1000.0
        );
        println!("   Next: `cargo run --release -- up` for a cluster that stays up, then `ampstore put/get/scan`.");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    println!("\nStopping the cluster...");
    cluster.stop().await;
    outcome?;
    println!("Done.");
    Ok(())
}
