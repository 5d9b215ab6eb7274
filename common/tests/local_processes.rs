//! Process-level tests of the embedded backend:
//! - `sigkill_loses_no_acknowledged_append`: a child appends to 16 ranges as fast as it can
//!   and prints every acknowledged seq; it is killed with SIGKILL (three times, resuming
//!   each time); every acknowledged entry must be present and intact, and logs dense.
//! - `processes_share_one_store`: three processes contend for the same slots of one
//!   SQLite file; every slot has exactly one winner, whose entry is the one stored.
//!
//! The binary re-runs itself as the child when `AMPSTORE_CHILD_MODE` is set.

use ampstore_common::config::LocalConfig;
use ampstore_common::store::local::LocalStore;
use ampstore_common::store::{EntryKind, LogEntry, StoreError};
use ampstore_common::{Epoch, NodeId, RangeId, Seq};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RANGES: u64 = 16;
const CONTEND_SLOTS: u64 = 200;

fn payload(range: u64, seq: u64) -> Vec<u8> {
    // Mostly 100-byte entries, every tenth 64 KiB, all derived from (range, seq).
    let len = if seq.is_multiple_of(10) { 64 * 1024 } else { 100 };
    let pattern = format!("r{range}-s{seq}|");
    pattern.bytes().cycle().take(len).collect()
}

fn writer() -> NodeId {
    NodeId::new(format!("p{}", std::process::id())).unwrap()
}

fn open(dir: &Path) -> LocalStore {
    LocalStore::open(dir, &LocalConfig::default()).unwrap()
}

async fn child_append_forever(dir: &Path) {
    let store = open(dir);
    let log = store.backend().log;
    for r in 1..=RANGES {
        let log = log.clone();
        tokio::spawn(async move {
            let range = RangeId(r);
            let mut seq = log.head(range).await.unwrap().map_or(Seq(1), Seq::next);
            loop {
                let e = LogEntry {
                    kind: EntryKind::Batch,
                    writer: writer(),
                    epoch: Epoch(1),
                    payload: Bytes::from(payload(r, seq.0)),
                };
                if let Err(err) = log.append(range, seq, &e).await {
                    // Exit loudly: the parent then sees too few acknowledgements and fails.
                    eprintln!("append {range}/{seq} failed: {err}");
                    std::process::exit(3);
                }
                // Printed only after the append returned: this line is the acknowledgement.
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {r} {}", seq.0).unwrap();
                seq = seq.next();
            }
        });
    }
    // Appends until the parent kills the process.
    std::future::pending::<()>().await
}

async fn child_contend(dir: &Path) {
    let store = open(dir);
    let log = store.backend().log;
    let me = writer();
    for s in 1..=CONTEND_SLOTS {
        let e = LogEntry { kind: EntryKind::Fence, writer: me.clone(), epoch: Epoch(s), payload: Bytes::new() };
        match log.append(RangeId(7), Seq(s), &e).await {
            Ok(()) => println!("WON {s} {me}"),
            Err(StoreError::SlotTaken { .. }) => {}
            Err(e) => panic!("slot {s}: {e}"),
        }
    }
    println!("DONE");
}

fn spawn_child(mode: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env("AMPSTORE_CHILD_MODE", mode)
        .env("AMPSTORE_CHILD_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn sigkill_loses_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for round in 1..=3 {
        let mut child = spawn_child("append", dir.path());
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // Let it run for a while, then kill it mid-stream.
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut n = 0;
        for line in lines.iter().filter(|l| l.starts_with("ACK ")) {
            let mut parts = line.split(' ').skip(1);
            let r: u64 = parts.next().unwrap().parse().unwrap();
            let s: u64 = parts.next().unwrap().parse().unwrap();
            assert!(acked.entry(r).or_default().insert(s), "seq {r}/{s} acknowledged twice");
            n += 1;
        }
        println!("round {round}: {n} acknowledged appends in {:?} before SIGKILL", start.elapsed());
        assert!(n > 100, "the child acknowledged only {n} appends; it should be much faster");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = open(dir.path()).backend().log;
        let mut total = 0;
        for r in 1..=RANGES {
            let range = RangeId(r);
            let head = log.head(range).await.unwrap().map_or(0, |s| s.0);
            let max_acked = acked.get(&r).and_then(|s| s.last().copied()).unwrap_or(0);
            assert!(head >= max_acked, "range {r}: head {head} is below acknowledged {max_acked}");
            // Every entry up to the head is present (dense) and intact.
            let mut next = 1;
            while next <= head {
                let page = log.read(range, Seq(next), 1000).await.unwrap();
                assert!(!page.is_empty(), "range {r}: entries from {next} missing");
                for (seq, e) in page {
                    assert_eq!(seq.0, next, "range {r}: gap before {}", seq.0);
                    assert_eq!(&e.payload[..], &payload(r, seq.0)[..], "range {r} seq {} damaged", seq.0);
                    next += 1;
                }
            }
            // And specifically every acknowledged one.
            for s in acked.get(&r).into_iter().flatten() {
                assert!(*s <= head, "acknowledged {r}/{s} lost");
            }
            total += head;
        }
        println!("verified {total} entries; every acknowledged append is present and intact");
    });
}

fn processes_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    // Create the schema first so the children race on appends, not on setup.
    drop(open(dir.path()));
    let children: Vec<_> = (0..3).map(|_| spawn_child("contend", dir.path())).collect();
    let mut winners: BTreeMap<u64, String> = BTreeMap::new();
    for mut child in children {
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut done = false;
        for line in out.lines() {
            let line = line.unwrap();
            if line == "DONE" {
                done = true;
            } else if let Some(rest) = line.strip_prefix("WON ") {
                let (s, who) = rest.split_once(' ').unwrap();
                let s: u64 = s.parse().unwrap();
                assert!(winners.insert(s, who.to_string()).is_none(), "slot {s} won twice");
            }
        }
        assert!(child.wait().unwrap().success());
        assert!(done, "a child did not finish");
    }
    assert_eq!(winners.len() as u64, CONTEND_SLOTS, "every slot has exactly one winner");
    let distinct: BTreeSet<&String> = winners.values().collect();
    println!("3 processes contended for {CONTEND_SLOTS} slots; {} of them won some", distinct.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = open(dir.path()).backend().log;
        let stored = log.read(RangeId(7), Seq(1), 1000).await.unwrap();
        assert_eq!(stored.len() as u64, CONTEND_SLOTS);
        for (seq, e) in stored {
            assert_eq!(e.writer.as_str(), winners[&seq.0], "slot {seq} holds another writer's entry");
        }
    });
}

fn main() {
    if let Ok(mode) = std::env::var("AMPSTORE_CHILD_MODE") {
        let dir = std::path::PathBuf::from(std::env::var("AMPSTORE_CHILD_DIR").unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        match mode.as_str() {
            "append" => rt.block_on(child_append_forever(&dir)),
            "contend" => rt.block_on(child_contend(&dir)),
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let tests: [(&str, fn()); 2] = [
        ("sigkill_loses_no_acknowledged_append", sigkill_loses_no_acknowledged_append),
        ("processes_share_one_store", processes_share_one_store),
    ];
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
    }
}
