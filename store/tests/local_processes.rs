//! Process-level tests of the embedded backend:
//! - `sigkill_loses_no_acknowledged_append`: a child appends to 16 ranges as fast as it can
//!   and prints every acknowledged seq; it is killed with SIGKILL (three times, resuming
//!   each time); every acknowledged entry must be present and intact, and logs dense.
//! - `processes_share_one_store`: three processes contend for the same slots of one
//!   SQLite file; every slot has exactly one winner, whose entry is the one stored.
//!
//! The binary re-runs itself as the child when `AMPSTORE_CHILD_MODE` is set. It has no
//! libtest harness, so `main` reads libtest's arguments itself (filters, `--skip`,
//! `--exact`, `--list`; the values of `--test-threads` and the like are not filters), and
//! checks that reading on every run (`libtest_arguments_select_the_right_tests`).

use ampstore_common::{Epoch, NodeId, RangeId, Seq};
use ampstore_store::config::LocalConfig;
use ampstore_store::local::LocalStore;
use ampstore_store::{EntryKind, LogEntry, StoreError};
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
    // Checked on every run, whatever the filters: a broken parser cannot skip its own check.
    libtest_arguments_select_the_right_tests();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sel = match Selection::parse(&args) {
        Ok(sel) => sel,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(101);
        }
    };
    let tests: [(&str, fn()); 2] = [
        ("sigkill_loses_no_acknowledged_append", sigkill_loses_no_acknowledged_append),
        ("processes_share_one_store", processes_share_one_store),
    ];
    let names: Vec<&str> = tests.iter().map(|(n, _)| *n).collect();
    let (chosen, skipped): (Vec<_>, Vec<_>) = tests.iter().partition(|(name, _)| sel.selects(name));
    if sel.list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        println!("\n{} tests, 0 benchmarks", chosen.len());
        return;
    }
    println!("\nrunning {} tests", chosen.len());
    for (name, test) in &chosen {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
    }
    let skipped: Vec<&str> = skipped.iter().map(|(n, _)| *n).collect();
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out{}",
        chosen.len(),
        skipped.len(),
        if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join(", ")) }
    );
    // Like libtest this exits 0 (`cargo test NAME` filters every test binary, and most
    // match nothing), but says so plainly rather than printing nothing.
    if chosen.is_empty() {
        println!(
            "note: no test of local_processes matches the filters {:?}{}; the tests are: {}",
            sel.filters,
            if sel.skip.is_empty() { String::new() } else { format!(" (skipping {:?})", sel.skip) },
            names.join(", ")
        );
    }
}

/// Which tests a libtest-style command line selects (this binary has `harness = false`,
/// but `cargo test` passes it the arguments meant for libtest).
#[derive(Debug, Default, PartialEq)]
struct Selection {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    /// `--ignored`: only ignored tests, and none of these is.
    ignored_only: bool,
}

/// libtest options followed by a value (`--name value` or `--name=value`).
const OPTIONS_WITH_VALUE: &[&str] =
    &["--test-threads", "--skip", "--logfile", "--format", "--color", "--shuffle-seed", "-Z"];
/// libtest flags without a value.
const FLAGS: &[&str] = &[
    "--nocapture",
    "--no-capture",
    "--show-output",
    "--quiet",
    "-q",
    "--include-ignored",
    "--test",
    "--bench",
    "--force-run-in-process",
    "--shuffle",
    "--ensure-time",
    "--fail-fast",
    "--no-fail-fast",
];

impl Selection {
    fn parse(args: &[String]) -> Result<Selection, String> {
        let mut sel = Selection::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with('-') || arg == "-" {
                sel.filters.push(arg.clone());
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            match name {
                "--exact" => sel.exact = true,
                "--list" => sel.list = true,
                "--ignored" => sel.ignored_only = true,
                "--report-time" => {} // its value, if any, only in the `=` form
                _ if OPTIONS_WITH_VALUE.contains(&name) => {
                    let value = match inline {
                        Some(v) => v,
                        None => it.next().cloned().ok_or_else(|| format!("option {name} needs a value"))?,
                    };
                    if name == "--skip" {
                        sel.skip.push(value);
                    }
                }
                _ if FLAGS.contains(&name) => {}
                _ if name.starts_with("-Z") => {} // `-Zunstable-options`
                _ => return Err(format!("unrecognized option: {arg}")),
            }
        }
        Ok(sel)
    }

    fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| if self.exact { name == f } else { name.contains(f.as_str()) };
        !self.ignored_only && (self.filters.is_empty() || self.filters.iter().any(hit)) && !self.skip.iter().any(hit)
    }
}

/// The options `cargo test -- ...` passes on do not become name filters (a plain
/// `--test-threads 2` once made the filter "2", which matched nothing, and the binary
/// passed without running anything).
fn libtest_arguments_select_the_right_tests() {
    let all = ["sigkill_loses_no_acknowledged_append", "processes_share_one_store"];
    let selected = |args: &[&str]| -> Vec<&str> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let sel = Selection::parse(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        all.iter().copied().filter(|n| sel.selects(n)).collect()
    };
    assert_eq!(selected(&[]), all);
    assert_eq!(selected(&["--test-threads", "2"]), all, "--test-threads 2");
    assert_eq!(selected(&["--test-threads=2", "--nocapture"]), all);
    assert_eq!(selected(&["--color", "never", "--format", "pretty", "-Z", "unstable-options"]), all);
    assert_eq!(selected(&["-Zunstable-options", "--report-time", "--logfile=x"]), all);
    assert_eq!(selected(&["--test-threads", "1", "sigkill"]), ["sigkill_loses_no_acknowledged_append"]);
    assert_eq!(selected(&["--skip", "sigkill"]), ["processes_share_one_store"]);
    assert_eq!(selected(&["--skip=share"]), ["sigkill_loses_no_acknowledged_append"]);
    assert_eq!(selected(&["share", "--exact"]), Vec::<&str>::new());
    assert_eq!(selected(&["processes_share_one_store", "--exact"]), ["processes_share_one_store"]);
    assert_eq!(selected(&["--ignored"]), Vec::<&str>::new());
    assert_eq!(selected(&["no_such_test"]), Vec::<&str>::new());
    assert!(Selection::parse(&["--test-threads".to_string()]).is_err(), "a missing value is an error");
    assert!(Selection::parse(&["--bogus".to_string()]).is_err(), "an unknown option is an error");
}
