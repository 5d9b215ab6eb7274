//! Lists with real processes (issue 8): order, paging, and idempotency of pushes under
//! client retries and a node kill.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use ampstore_client::{Client, ClientConfig, PushId};
use support::*;

const PUSHES: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_ordered_paged_and_applied_once_through_retries_and_a_node_kill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let master = MasterProc::start(&root.join("m"), &store);
    // A small split size: the reserved namespace splits (between lists, never inside one).
    let mut f = fast_node_flags();
    f.extend(["--set".to_string(), "node.split_bytes=16384".to_string()]);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = (0..2).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &f)).collect();
    let mut cfg = ClientConfig::new(&[master.rpc.as_str()]);
    cfg.call_deadline = Duration::from_secs(20);
    let client = Client::with_config(cfg.clone()).await.unwrap();
    let other = Client::with_config(cfg).await.unwrap();

    // Order and paging.
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(client.push("log", format!("e{i:02}")).await.unwrap());
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = client.list("log", after, 10).await.unwrap();
        assert!(page.elements.len() <= 10);
        seen.extend(page.elements.iter().map(|(id, v)| (*id, String::from_utf8(v.clone()).unwrap())));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert_eq!(seen[24].1, "e24");

    // The same push id from two clients, many times at once: one element.
    let id = PushId { ms: 1, client: 42, n: 7 };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let c = if i % 2 == 0 { client.clone() } else { other.clone() };
        tasks.spawn(async move { c.push_with_id("dedup", "only once", id).await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}
    let page = client.list("dedup", None, 100).await.unwrap();
    assert_eq!(page.elements, vec![(id, b"only once".to_vec())]);

    // A writer pushes while the node serving the list is killed; every push is retried by
    // the client, and then once more by the application: each element appears once.
    let owner =
        client.locate(ampstore_common::lists::element_key(&"kill".into(), PushId::default())).await.unwrap().node_id;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            for i in 0..PUSHES {
                let id = PushId { ms: 1000 + i, client: 1, n: i };
                client.push_with_id("kill", format!("k{i}"), id).await.unwrap_or_else(|e| panic!("push {i}: {e}"));
                pushed.push(id);
            }
            pushed
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let victim = nodes.iter_mut().position(|n| n.node_id == owner.as_str()).unwrap();
    assert!(!writer.is_finished(), "the kill must land while pushes go on");
    nodes[victim].kill9();
    let pushed = writer.await.unwrap();
    for (i, id) in pushed.iter().enumerate() {
        client.push_with_id("kill", format!("k{i}"), *id).await.unwrap();
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = client.list("kill", after, 1000).await.unwrap();
        all.extend(page.elements.iter().map(|(id, _)| *id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(all.len() as u64, PUSHES, "every push once");
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len() as u64, PUSHES);
    assert_eq!(all, pushed, "in push-id order");
    // The reserved namespace split, but only between lists: a list never straddles two
    // ranges (the range checks a push against the whole list).
    let status = client.master_status().await.unwrap();
    assert!(status.ranges.len() >= 2, "the reserved namespace split: {} ranges", status.ranges.len());
    for list in ["kill", "log", "dedup"] {
        let (lo, hi) = ampstore_common::lists::bounds(&list.into(), None);
        for r in &status.ranges {
            assert!(!(r.range.start > lo && r.range.start < hi), "{} starts inside list {list}", r.range_id);
        }
    }

    // A push id below the list's last element (a clock behind) is refused, naming that
    // element; `push` re-stamps above it, so the list keeps the order pushes took effect.
    let ahead = PushId { ms: u64::MAX / 2, client: 5, n: 0 };
    client.push_with_id("order", "from a clock ahead", ahead).await.unwrap();
    let err = client.push_with_id("order", "behind", PushId { ms: 1, client: 5, n: 1 }).await.unwrap_err();
    let last = ampstore_common::lists::element_key(&"order".into(), ahead);
    assert!(matches!(&err, ampstore_client::Error::Conflict { key: Some(k), .. } if *k == last), "{err:?}");
    let after = client.push("order", "after").await.unwrap();
    assert!(after > ahead);
    let page = client.list("order", None, 10).await.unwrap();
    let values: Vec<&[u8]> = page.elements.iter().map(|(_, v)| v.as_slice()).collect();
    assert_eq!(values, vec![b"from a clock ahead".as_slice(), b"after"]);
}
