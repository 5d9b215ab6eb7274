//! The task queue with real processes (issue 8): leases, acks, nacks and redelivery, and
//! at-least-once delivery through a node kill.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ampstore_client::Error;
use ampstore_common::queue::{QUEUE_SHARDS, shard_bounds};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_acks_nacks_and_redelivery() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let master = MasterProc::start(&root.join("m"), &store);
    let f = fast_node_flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let _node = NodeProc::start(&root.join("n0"), &store, &f);
    let client = client_for(&master).await;

    for i in 0..40 {
        client.enqueue("jobs", format!("job{i}")).await.unwrap();
    }
    let first = client.dequeue("jobs", 25, Duration::from_secs(60)).await.unwrap();
    assert_eq!(first.len(), 25);
    let rest = client.dequeue("jobs", 100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(rest.len(), 15, "leased tasks are not delivered twice");
    let payloads: BTreeSet<Vec<u8>> = first.iter().chain(&rest).map(|t| t.payload.clone()).collect();
    assert_eq!(payloads.len(), 40);
    assert!(client.dequeue("jobs", 10, Duration::from_secs(60)).await.unwrap().is_empty());

    // Ack removes; a repeated ack is fine; nack returns at once.
    for t in &first {
        client.ack("jobs", t.task).await.unwrap();
    }
    client.ack("jobs", first[0].task).await.unwrap();
    client.nack("jobs", rest[0].task).await.unwrap();
    let again = client.dequeue("jobs", 10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].payload.clone(), again[0].deliveries), (rest[0].payload.clone(), 2));

    // Not acked in time: delivered again, and the old lease can no longer ack it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = client.dequeue("jobs", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].deliveries, 3);
    let err = client.ack("jobs", again[0].task).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // Extend keeps it invisible past its first timeout.
    let short = client.dequeue("jobs", 20, Duration::from_millis(1)).await.unwrap();
    assert!(short.is_empty(), "everything is leased");
    client.extend("jobs", third[0].task, Duration::from_millis(200)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fourth = client.dequeue("jobs", 20, Duration::from_secs(60)).await.unwrap();
    assert_eq!(fourth.len(), 1, "only the extended task's lease ran out");
    assert!(client.dequeue("jobs", 20, Duration::from_secs(60)).await.unwrap().is_empty());
    // Queue tasks stay out of plain scans.
    assert!(client.scan("", None, 100, false).await.unwrap().items.is_empty());
}

/// Producers and consumers on a queue spread over 4 ranges on 3 nodes while one node is
/// SIGKILLed: every task is delivered at least once, no task comes back after an ack that
/// succeeded, and tasks deliberately left unacked come back after their visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_is_delivered_through_a_node_kill() {
    let _serial = SERIAL.lock().await;
    const TASKS: usize = 1000;
    const VISIBILITY: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let splits: Vec<_> = [4u16, 8, 12].iter().map(|s| shard_bounds("work", *s).0).collect();
    let split_refs: Vec<&[u8]> = splits.iter().map(|k| k.as_bytes()).collect();
    create_ranges_bytes(&open_store(&store), &split_refs).await;
    let master = MasterProc::start(&root.join("m"), &store);
    let f = fast_node_flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = (0..3).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &f)).collect();
    let client = client_for(&master).await;
    assert_eq!(QUEUE_SHARDS, 16);

    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..TASKS {
                let t = client.enqueue("work", format!("t{i}")).await.unwrap_or_else(|e| panic!("enqueue {i}: {e}"));
                ids.push((t.shard, t.id));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            ids
        })
    };
    // Per task: deliveries seen, whether an ack succeeded, when it was left unacked.
    #[derive(Default)]
    struct Seen {
        delivered: BTreeMap<String, u32>,
        acked: BTreeSet<String>,
        dropped_at: BTreeMap<String, Instant>,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = tokio::task::JoinSet::new();
    for c in 0..4 {
        let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
        consumers.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                let Ok(tasks) = client.dequeue("work", 20, VISIBILITY).await else { continue };
                if tasks.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for t in tasks {
                    let name = String::from_utf8(t.payload.clone()).unwrap();
                    let first = {
                        let mut s = seen.lock().unwrap();
                        if s.acked.contains(&name) {
                            s.violations.push(format!("{name} came back after an ack"));
                        }
                        let early = s
                            .dropped_at
                            .get(&name)
                            .map(Instant::elapsed)
                            .filter(|e| *e < VISIBILITY - Duration::from_millis(200));
                        if let Some(e) = early {
                            s.violations.push(format!(
                                "{name} came back {e:?} after it was dropped (delivery {} by the server, lease {:x})",
                                t.deliveries, t.task.lease
                            ));
                        }
                        let n = s.delivered.entry(name.clone()).or_default();
                        *n += 1;
                        *n == 1
                    };
                    // Every 7th task is dropped on its first delivery: it must come back.
                    let idx: usize = name[1..].parse().unwrap();
                    if first && idx % 7 == c % 7 {
                        // Its lease started at the latest when the dequeue was asked.
                        seen.lock().unwrap().dropped_at.insert(name, asked);
                        continue;
                    }
                    if client.ack("work", t.task).await.is_ok() {
                        seen.lock().unwrap().acked.insert(name);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!producer.is_finished(), "the kill must land while tasks are enqueued");
    nodes[2].kill9();
    let ids = producer.await.unwrap();
    assert_eq!(ids.len(), TASKS);
    let started = Instant::now();
    loop {
        let done = seen.lock().unwrap().acked.len();
        if done == TASKS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "only {done} of {TASKS} tasks acked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while consumers.join_next().await.is_some() {}
    {
        let s = seen.lock().unwrap();
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert_eq!(s.delivered.len(), TASKS, "every task delivered");
        let redelivered = s.dropped_at.keys().filter(|k| s.delivered[*k] >= 2).count();
        assert_eq!(redelivered, s.dropped_at.len(), "every dropped task came back");
        println!(
            "{TASKS} tasks through a node kill: {} deliveries, {} dropped on purpose and redelivered",
            s.delivered.values().sum::<u32>(),
            s.dropped_at.len()
        );
    }
    assert!(client.dequeue("work", 100, VISIBILITY).await.unwrap().is_empty(), "nothing left");
}
