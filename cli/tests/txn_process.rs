//! Transactions with real processes (issue 8): single- and cross-range commits, conflicts
//! naming their key, the bank invariant under a node kill, and coordinator death before
//! and after the atomic append.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ampstore_client::{Error, Key, Txn};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn flags() -> Vec<String> {
    fast_node_flags()
}

fn balance(v: &Option<ampstore_client::Versioned>) -> i64 {
    v.as_ref().map_or(0, |v| String::from_utf8_lossy(&v.value).parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_atomically_and_conflicts_name_their_key() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    create_ranges(&open_store(&store), &["g", "n", "t"]).await;
    let master = MasterProc::start(&root.join("m"), &store);
    let f = flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> = (0..2).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &f)).collect();
    let client = client_for(&master).await;

    // One range: one conditional entry.
    let out = client.commit(Txn::new().require_absent("a1").put("a1", "x").put("a2", "y")).await.unwrap();
    assert_eq!(out.versions.len(), 2);
    assert_eq!(out.versions[0].1.seq, out.versions[1].1.seq, "one log entry");
    let err = client.commit(Txn::new().require_absent("a1").put("a3", "z")).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict { key: Some(k), .. } if k.as_bytes() == b"a1"), "{err:?}");
    assert!(client.get("a3").await.unwrap().is_none(), "nothing of a failed transaction is written");

    // Four ranges, on two nodes.
    let keys = ["b", "h", "p", "w"];
    let mut txn = Txn::new();
    for k in keys {
        txn = txn.require_absent(k).put(k, format!("v-{k}"));
    }
    let out = client.commit(txn).await.unwrap();
    assert_eq!(out.versions.len(), 4);
    for k in keys {
        assert_eq!(client.get(k).await.unwrap().unwrap().value, format!("v-{k}").into_bytes());
    }
    // A stale read version in one range fails the whole transaction, naming that key.
    let seen = client.get("p").await.unwrap().unwrap().version;
    client.put("p", "changed").await.unwrap();
    let err = client
        .commit(Txn::new().require_version("p", seen).put("b", "nope").put("h", "nope").delete("w"))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Conflict { key: Some(k), .. } if k.as_bytes() == b"p"), "{err:?}");
    assert_eq!(client.get("b").await.unwrap().unwrap().value, b"v-b");
    assert!(client.get("w").await.unwrap().is_some());
    // Value conditions and deletes across ranges.
    client.commit(Txn::new().require_value("h", "v-h").delete("b").put("t1", "new")).await.unwrap();
    assert!(client.get("b").await.unwrap().is_none());
    // A push inside a transaction, with a put in another range; the same push id again
    // adds nothing.
    let id = client.push_id();
    client.commit(Txn::new().push("audit", "moved b", id).put("w", "after")).await.unwrap();
    client.commit(Txn::new().push("audit", "moved b", id)).await.unwrap();
    let page = client.list("audit", None, 10).await.unwrap();
    assert_eq!(page.elements, vec![(id, b"moved b".to_vec())]);
    // A consistent read across ranges.
    let values = client.read_consistent(keys.iter().map(|k| Key::from(*k)).collect()).await.unwrap();
    assert!(values[0].is_none() && values[1].is_some() && values[3].is_some());
    assert_eq!(values[3].as_ref().unwrap().value, b"after");

    // Keys with a TTL in four ranges expire at one moment: the coordinator stamps the expiry
    // once, and the participants and the log entries carry it.
    let ttl_keys = ["e-b", "e-h", "e-p", "e-w"];
    let mut txn = Txn::new();
    for k in ttl_keys {
        txn = txn.require_absent(k).put_with_ttl(k, "soon", Duration::from_millis(2_500));
    }
    client.commit(txn.put("e-forever", "x")).await.unwrap();
    let mut expiries = Vec::new();
    for k in ttl_keys {
        let asked = Instant::now();
        let left = client.ttl(k).await.unwrap().remaining().unwrap_or_else(|| panic!("{k} has no expiry"));
        assert!(left <= Duration::from_millis(2_500), "{k}: {left:?} left");
        expiries.push(asked + left);
    }
    let (first, last) = (expiries.iter().min().unwrap(), expiries.iter().max().unwrap());
    assert!(
        last.duration_since(*first) < Duration::from_millis(100),
        "expiries spread over {:?}",
        last.duration_since(*first)
    );
    tokio::time::sleep(last.saturating_duration_since(Instant::now()) + Duration::from_millis(50)).await;
    for k in ttl_keys {
        assert!(client.get(k).await.unwrap().is_none(), "{k} outlived its TTL");
    }
    assert!(client.get("e-forever").await.unwrap().is_some());
    // An expired key is absent to a transaction's conditions, before the sweep deletes it.
    let mut txn = Txn::new();
    for k in ttl_keys {
        txn = txn.require_absent(k).put(k, "again");
    }
    client.commit(txn).await.unwrap();
    assert_eq!(client.ttl("e-p").await.unwrap(), ampstore_client::KeyTtl::Persistent, "a plain put clears the TTL");
    // A TTL of zero is refused, and nothing of the transaction is written.
    let err = client.commit(Txn::new().put("z-1", "x").put_with_ttl("a-9", "x", Duration::ZERO)).await.unwrap_err();
    assert!(err.to_string().contains("TTL must be at least 1 ms"), "{err}");
    assert!(client.get("z-1").await.unwrap().is_none());
}

/// 10 accounts over 4 ranges, 20 clients moving money for 30 s while a node is SIGKILLed:
/// every consistent read sees the same total, and so does the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_keep_the_total_through_a_node_kill() {
    let _serial = SERIAL.lock().await;
    const ACCOUNTS: usize = 10;
    const START: i64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    create_ranges(&open_store(&store), &["acct3", "acct5", "acct8"]).await;
    let master = MasterProc::start(&root.join("m"), &store);
    let f = flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = (0..3).map(|i| NodeProc::start(&root.join(format!("n{i}")), &store, &f)).collect();
    let client = client_for(&master).await;
    let accounts: Vec<Key> = (0..ACCOUNTS).map(|i| Key::from(format!("acct{i}"))).collect();
    let mut init = Txn::new();
    for a in &accounts {
        init = init.require_absent(a.clone()).put(a.clone(), START.to_string());
    }
    client.commit(init).await.unwrap();
    let total = START * ACCOUNTS as i64;
    let ranges = client.master_status().await.unwrap().ranges.len();
    assert!(ranges >= 4, "accounts over {ranges} ranges");

    let stop = Arc::new(AtomicBool::new(false));
    let (committed, conflicts, errors) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..20u64 {
        let (client, accounts, stop) = (client.clone(), accounts.clone(), stop.clone());
        let (committed, conflicts, errors) = (committed.clone(), conflicts.clone(), errors.clone());
        tasks.spawn(async move {
            let mut n = w;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let from = (n >> 33) as usize % ACCOUNTS;
                let to = (from + 1 + (n >> 45) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                let amount = 1 + (n >> 20) as i64 % 50;
                let Ok(vals) = client.get_many(vec![accounts[from].clone(), accounts[to].clone()]).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (a, b) = (vals[0].clone().unwrap(), vals[1].clone().unwrap());
                let txn = Txn::new()
                    .require_version(accounts[from].clone(), a.version)
                    .require_version(accounts[to].clone(), b.version)
                    .put(accounts[from].clone(), (balance(&Some(a.clone())) - amount).to_string())
                    .put(accounts[to].clone(), (balance(&Some(b.clone())) + amount).to_string());
                match client.commit(txn).await {
                    Ok(_) => committed.fetch_add(1, Ordering::Relaxed),
                    Err(Error::Conflict { .. }) => conflicts.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let checker = {
        let (client, accounts, stop) = (client.clone(), accounts.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(values) = client.read_consistent(accounts.clone()).await {
                    let sum: i64 = values.iter().map(balance).sum();
                    assert_eq!(sum, total, "a consistent read saw a partial transfer: {values:?}");
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            reads
        })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    nodes[1].kill9();
    println!("killed node 1 after {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let reads = checker.await.unwrap();
    let values = client.read_consistent(accounts.clone()).await.unwrap();
    let sum: i64 = values.iter().map(balance).sum();
    println!(
        "30 s: {} transfers committed, {} conflicts, {} errors; {reads} consistent reads; final total {sum}",
        committed.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    assert_eq!(sum, total);
    assert!(reads >= 3, "only {reads} consistent reads");
    assert!(committed.load(Ordering::Relaxed) > 100, "too few transfers");
}

/// The coordinator dies after every participant prepared (before the atomic append), or
/// right after it: every participant resolves within its hold time, and they agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_death_before_or_after_the_append_leaves_participants_agreeing() {
    let _serial = SERIAL.lock().await;
    for (point, commits) in [("txn:prepared", false), ("txn:appended", true)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = root.join("store");
        create_ranges(&open_store(&store), &["m"]).await;
        let master = MasterProc::start(&root.join("m"), &store);
        let f = flags();
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        // A serves both ranges at first; B joins, and the balancer gives it one.
        let mut a = NodeProc::start_with_env(&root.join("a"), &store, &f, &[("AMPSTORE_TEST_CRASH_AT", point)]);
        let client = client_for(&master).await;
        client.put("c", "0").await.unwrap();
        client.put("x", "0").await.unwrap();
        let b = NodeProc::start(&root.join("b"), &store, &f);
        let started = Instant::now();
        let coordinator_key = loop {
            let status = client.master_status().await.unwrap();
            let owners: Vec<_> = status.ranges.iter().map(|r| (r.range.start.clone(), r.owner.clone())).collect();
            if let [(_, Some(o1)), (_, Some(o2))] = owners.as_slice()
                && o1 != o2
            {
                // The range A still serves coordinates (its key is written first).
                let a_first = o1.as_str() == a.node_id;
                break if a_first { "c" } else { "x" };
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the ranges never spread: {owners:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let other_key = if coordinator_key == "c" { "x" } else { "c" };
        let (ca, cb) =
            (client.get(coordinator_key).await.unwrap().unwrap(), client.get(other_key).await.unwrap().unwrap());
        let txn = Txn::new()
            .require_version(coordinator_key, ca.version)
            .require_version(other_key, cb.version)
            .put(coordinator_key, "1")
            .put(other_key, "1");
        let t = Instant::now();
        let result = client.commit(txn).await;
        assert!(result.is_err(), "{point}: the coordinator died, so the client got no answer: {result:?}");
        let exited = Instant::now();
        while !matches!(a.child.try_wait(), Ok(Some(_))) {
            assert!(exited.elapsed() < Duration::from_secs(5), "{point}: node A did not crash at the point");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // B's participant resolves on its own within its hold time (2 s); A's range is
        // reloaded by B once A's epoch ends, from the log. A consistent read needs both
        // ranges free of the transaction (plain reads are served during a hold, from the
        // data before it).
        let resolved = loop {
            match client.read_consistent(vec![Key::from(other_key), Key::from(coordinator_key)]).await {
                Ok(values) => {
                    let value = |i: usize| values[i].as_ref().map(|v| v.value.clone()).unwrap_or_default();
                    break (value(0), value(1), t.elapsed());
                }
                Err(e) => println!("{point}: consistent read after {:?}: {e}", t.elapsed()),
            }
            assert!(t.elapsed() < Duration::from_secs(30), "{point}: never resolved");
        };
        let want: &[u8] = if commits { b"1" } else { b"0" };
        assert_eq!(resolved.0, want, "{point}: the participant on B");
        assert_eq!(resolved.1, want, "{point}: the coordinator's own range, reloaded");
        println!(
            "{point}: both ranges {} after {:.1} s",
            if commits { "committed" } else { "aborted" },
            resolved.2.as_secs_f64()
        );
        // Both ranges take writes again.
        client.commit(Txn::new().put(coordinator_key, "2").put(other_key, "2")).await.unwrap();
        a.kill9();
        drop(b);
    }
}
