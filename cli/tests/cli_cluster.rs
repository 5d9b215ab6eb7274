//! The CLI contract against a real `ampstore up` cluster: every data command, its exit codes
//! and its `--json` shapes, and `demo`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn ampstore(data: &Path, args: &[&str]) -> Output {
    ampstore_stdin(data, args, None)
}

fn ampstore_stdin(data: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("AMPSTORE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ampstore");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up(data: &Path) -> Up {
    let child = Command::new(env!("CARGO_BIN_EXE_ampstore"))
        .arg("--data")
        .arg(data)
        .args(["up", "--nodes", "2"])
        .env_remove("AMPSTORE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.join("cluster.json").is_file() {
        assert!(Instant::now() < deadline, "up never wrote cluster.json");
        std::thread::sleep(Duration::from_millis(100));
    }
    Up(child)
}

#[test]
fn every_data_command_with_exit_codes_and_json_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _up = up(&data);

    // put / get / exit 1 for a missing key.
    assert!(ok(&ampstore(&data, &["put", "user:1", "alice"])).starts_with("ok"));
    assert_eq!(ok(&ampstore(&data, &["get", "user:1"])), "alice\n");
    let missing = ampstore(&data, &["get", "user:404"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    // A value from stdin, and --json.
    ok(&ampstore_stdin(&data, &["put", "user:2", "-"], Some(b"bob from stdin")));
    let got: Value = serde_json::from_str(&ok(&ampstore(&data, &["get", "user:2", "--json"]))).unwrap();
    assert_eq!(got["key"], "user:2");
    assert_eq!(got["value"], "bob from stdin");
    assert!(got["version"].is_string());

    // import with a JSON-lines file.
    let file = dir.path().join("import.jsonl");
    let lines: String = (0..300).map(|i| format!("{{\"key\": \"item:{i:04}\", \"value\": \"v{i}\"}}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    assert!(ok(&ampstore(&data, &["import", file.to_str().unwrap()])).contains("imported 300 keys"));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"key\": \"a\", \"value\": \"1\"}\nnot json\n").unwrap();
    let o = ampstore(&data, &["import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&o.stderr));

    // scan: bounds, empty END, --limit, --reverse, --json.
    let all = json_lines(&ok(&ampstore(&data, &["scan", "item:", "item;", "--limit", "1000", "--json"])));
    assert_eq!(all.len(), 300);
    assert_eq!(all[0]["key"], "item:0000");
    assert!(all.windows(2).all(|w| w[0]["key"].as_str() < w[1]["key"].as_str()));
    for item in &all {
        assert!(item["key"].is_string() && item["value"].is_string() && item["version"].is_string(), "{item}");
    }
    let first = ok(&ampstore(&data, &["scan", "item:", "", "--limit", "3"]));
    assert_eq!(first, "item:0000\tv0\nitem:0001\tv1\nitem:0002\tv2\n");
    let rev = json_lines(&ok(&ampstore(&data, &["scan", "item:", "item;", "--reverse", "--limit", "2", "--json"])));
    assert_eq!(rev.iter().map(|v| v["key"].as_str().unwrap()).collect::<Vec<_>>(), ["item:0299", "item:0298"]);
    let tail = ok(&ampstore(&data, &["scan", "user:", "", "--limit", "10"]));
    assert_eq!(tail.lines().count(), 2, "{tail}");

    // delete.
    assert!(ok(&ampstore(&data, &["delete", "user:1"])).contains("deleted"));
    assert_eq!(ampstore(&data, &["get", "user:1"]).status.code(), Some(1));
    assert!(ok(&ampstore(&data, &["delete", "user:1"])).contains("absent"));

    // locate and ranges.
    let loc: Value = serde_json::from_str(&ok(&ampstore(&data, &["locate", "user:2", "--json"]))).unwrap();
    for field in ["range_id", "start", "end", "node_id", "node_addr", "lease_ms_left"] {
        assert!(loc.get(field).is_some(), "{field} in {loc}");
    }
    assert!(ok(&ampstore(&data, &["locate", "user:2"])).contains(loc["node_id"].as_str().unwrap()));
    let ranges: Value = serde_json::from_str(&ok(&ampstore(&data, &["ranges", "--json"]))).unwrap();
    let ranges = ranges.as_array().unwrap();
    assert!(!ranges.is_empty());
    for field in ["range_id", "start", "end", "generation", "owner", "data_bytes", "log_bytes"] {
        assert!(ranges[0].get(field).is_some(), "{field} in {:?}", ranges[0]);
    }
    assert!(ok(&ampstore(&data, &["ranges"])).starts_with("RANGE"));

    // members and status against the same cluster.
    let members: Value = serde_json::from_str(&ok(&ampstore(&data, &["members", "--json"]))).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 3);
    let status: Value = serde_json::from_str(&ok(&ampstore(&data, &["status", "--json"]))).unwrap();
    assert!(status["active_master"]["id"].is_string() && status["active_master"]["rpc"].is_string());

    // Errors: exit 2 with one line.
    for args in [vec!["put", "", "x"], vec!["scan", "b", "a"], vec!["get", "k", "--cluster", "127.0.0.1:1"]] {
        let o = ampstore(&data, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("ampstore: error:") && err.trim_end().lines().count() == 1, "{args:?}: {err}");
    }
    // bench: one JSON object with the figures.
    for workload in ["get", "put", "mixed", "scan"] {
        let out = ok(&ampstore(
            &data,
            &[
                "bench",
                "--workload",
                workload,
                "--keys",
                "200",
                "--duration",
                "1",
                "--clients",
                "2",
                "--pipeline",
                "4",
                "--json",
            ],
        ));
        let b: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        for field in ["ops_per_sec", "p50_us", "p99_us", "p999_us", "errors"] {
            assert!(b[field].is_number(), "{field} in {b}");
        }
        assert!(b["ops_per_sec"].as_f64().unwrap() > 0.0, "{b}");
        assert_eq!(b["errors"], 0, "{b}");
        assert!(b["p50_us"].as_u64().unwrap() <= b["p99_us"].as_u64().unwrap());
    }
    let o = ampstore(&data, &["bench", "--clients", "0"]);
    assert_eq!(o.status.code(), Some(2));

    let big = vec![b'x'; ampstore_common::limits::VALUE_BYTES_MAX + 1];
    let o = ampstore_stdin(&data, &["put", "big", "-"], Some(&big));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("too large"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn data_commands_without_a_cluster_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let o = ampstore(dir.path(), &["get", "k"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ampstore up") && err.contains("--cluster"), "{err}");
}

#[test]
fn demo_runs_to_exit_0() {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_ampstore")).arg("demo").env_remove("AMPSTORE_CONFIG").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "demo failed: {out}{}", String::from_utf8_lossy(&o.stderr));
    for expected in ["Writing 200 keys", "scan [user:100, user:105)", "Killing node", "0 missing", "Summary", "Done."] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    println!("demo took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn push_list_and_txn_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _up = up(&data);

    // push prints the push id; list prints elements in order; a repeated id adds nothing.
    let id1 = ok(&ampstore(&data, &["push", "events", "first"])).trim().to_string();
    assert_eq!(id1.len(), 48, "{id1}");
    ok(&ampstore(&data, &["push", "events", "second"]));
    // Pushing a stored id again is a retry: answered, and the first element stays.
    ok(&ampstore(&data, &["push", "events", "first again", "--id", &id1]));
    assert_eq!(ok(&ampstore(&data, &["list", "events"])), "first\nsecond\n");
    let items = json_lines(&ok(&ampstore(&data, &["list", "events", "--json"])));
    assert_eq!(items[0]["id"], id1.as_str());
    assert_eq!(items.len(), 2);
    assert_eq!(ok(&ampstore(&data, &["list", "nothing-here"])), "");
    assert_eq!(ampstore(&data, &["push", "events", "x", "--id", "nothex"]).status.code(), Some(2));
    // List elements stay out of plain scans.
    assert_eq!(ok(&ampstore(&data, &["scan", "", "", "--limit", "100"])), "");

    // txn: commits with reads; a failed condition exits 1 with the key.
    let txn = br#"[{"op":"require_absent","key":"acct:a"},{"op":"put","key":"acct:a","value":"100"},{"op":"read","key":"acct:b"}]"#;
    let out: Value = serde_json::from_str(&ok(&ampstore_stdin(&data, &["txn"], Some(txn)))).unwrap();
    assert_eq!(out["committed"], true);
    assert_eq!(out["versions"][0]["key"], "acct:a");
    assert!(out["values"][0]["value"].is_null());
    let again = ampstore_stdin(&data, &["txn"], Some(txn));
    assert_eq!(again.status.code(), Some(1));
    let out: Value = serde_json::from_str(&String::from_utf8_lossy(&again.stdout)).unwrap();
    assert_eq!(out["committed"], false);
    assert_eq!(out["conflict"]["key"], "acct:a");
    let bad = ampstore_stdin(&data, &["txn"], Some(b"[{\"op\":\"nope\"}]"));
    assert_eq!(bad.status.code(), Some(2));

    // queue: enqueue prints an id; dequeue leases (one JSON object per line); ack.
    let id = ok(&ampstore(&data, &["queue", "enqueue", "mail", "to=ann"])).trim().to_string();
    assert_eq!(id.len(), 68, "{id}");
    ok(&ampstore(&data, &["queue", "enqueue", "mail", "to=bob"]));
    let tasks = json_lines(&ok(&ampstore(&data, &["queue", "dequeue", "mail", "--max", "5", "--json"])));
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["deliveries"], 1);
    assert_eq!(ok(&ampstore(&data, &["queue", "dequeue", "mail"])), "", "both are leased");
    for t in &tasks {
        assert_eq!(ok(&ampstore(&data, &["queue", "ack", "mail", t["id"].as_str().unwrap()])), "acked\n");
    }
    assert_eq!(ampstore(&data, &["queue", "ack", "mail", "zz"]).status.code(), Some(2));
}

#[test]
fn scan_prints_every_key_unless_limited_and_says_when_more_remain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _up = up(&data);
    let file = dir.path().join("keys.jsonl");
    let lines: String = (0..250).map(|i| format!("{{\"key\": \"scan:{i:03}\", \"value\": \"v{i}\"}}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    assert!(ok(&ampstore(&data, &["import", file.to_str().unwrap()])).contains("imported 250 keys"));
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();

    // No --limit: every key in the span, with no note.
    for args in [vec!["scan", "", ""], vec!["scan"], vec!["scan", "scan:", "scan;"]] {
        let o = ampstore(&data, &args);
        let out = ok(&o);
        assert_eq!(out.lines().count(), 250, "{args:?}");
        assert_eq!(out.lines().next(), Some("scan:000\tv0"));
        assert_eq!(out.lines().last(), Some("scan:249\tv249"));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
    // A limit that cuts the span off says where, on stderr only.
    let o = ampstore(&data, &["scan", "--limit", "10"]);
    assert_eq!(ok(&o).lines().count(), 10);
    let note = stderr(&o);
    assert!(note.contains("more keys after scan:009") && note.contains("--limit"), "{note}");
    let o = ampstore(&data, &["scan", "scan:", "scan;", "--reverse", "--limit", "10", "--json"]);
    assert_eq!(json_lines(&ok(&o)).len(), 10);
    assert!(stderr(&o).contains("more keys before scan:240"), "{}", stderr(&o));
    // A limit that fits says nothing.
    let o = ampstore(&data, &["scan", "--limit", "250"]);
    assert_eq!(ok(&o).lines().count(), 250);
    assert_eq!(stderr(&o), "");
    let o = ampstore(&data, &["scan", "--limit", "0"]);
    assert_eq!(o.status.code(), Some(2), "a limit of 0 is refused: {}", stderr(&o));
}
