//! The `ampstore` binary as users and scripts call it.

use ampstore_common::{KeyRange, RangeId, Seq, Version};
use ampstore_store::snapshot::{SnapshotHeader, SnapshotWriter};
use std::process::Output;

mod support;

use support::ampstore_cli as ampstore;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn init_local_creates_store_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let o = ampstore(&["--data", data, "init"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("local store ready"));
    }
    assert!(dir.path().join("store/store.db").is_file());
    assert!(dir.path().join("store/blobs").is_dir());
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[backend]\nkind = \"postgres\"\n").unwrap();
    let o = ampstore(&["--config", bad.to_str().unwrap(), "init"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with("ampstore: error:") && err.trim_end().lines().count() == 1, "{err}");
    assert!(err.contains("postgres"), "{err}");

    let o = ampstore(&["init", "--backend", "aws", "--bucket", "Not_A_Bucket"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bucket"), "{}", stderr(&o));

    // In the temporary directory: `up` writes the cluster's secrets before it checks its
    // flags, which once left (and committed) secrets in cli/ampstore-data.
    let data = dir.path().to_str().unwrap();
    let o = ampstore(&["--data", data, "up", "--nodes", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--nodes"), "{}", stderr(&o));
    let o = ampstore(&["--data", data, "up", "--endpoint", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--backend aws"), "{}", stderr(&o));

    let o = ampstore(&["members", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ampstore up"), "{}", stderr(&o));
}

#[test]
fn drain_and_master_refuse_bad_input_with_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let one_line = |o: &Output| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let err = stderr(o);
        assert!(err.starts_with("ampstore: error:") && err.trim_end().lines().count() == 1, "{err}");
        err
    };
    let err = one_line(&ampstore(&["--data", data, "drain", "bad id!"]));
    assert!(err.contains("node id"), "{err}");
    // No master has ever run on this store, and none was named.
    let err = one_line(&ampstore(&["--data", data, "drain", "n1"]));
    assert!(err.contains("--master"), "{err}");
    // A named master that is not there.
    let err = one_line(&ampstore(&["--data", data, "drain", "n1", "--master", "127.0.0.1:1"]));
    assert!(err.contains("no active master"), "{err}");
    let err = one_line(&ampstore(&["--data", data, "--set", "master.renew_ms=0", "master"]));
    assert!(err.contains("renew_ms"), "{err}");
}

#[test]
fn snapshot_verify_reports_content_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let header = SnapshotHeader { range_id: RangeId(5), range: KeyRange::full(), seq: Seq(77), created_unix_ms: 1 };
    let mut w = SnapshotWriter::new(header).unwrap();
    for i in 0..1000u32 {
        w.push(format!("k{i:06}").as_bytes(), &i.to_be_bytes(), Version { seq: Seq(77), index: i }).unwrap();
    }
    let bytes = w.finish();
    let good = dir.path().join("good.snap");
    std::fs::write(&good, &bytes).unwrap();
    let o = ampstore(&["snapshot", "verify", good.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["entries"], 1000);
    assert_eq!(v["seq"], 77);
    assert_eq!(v["range_id"], 5);

    let mut damaged = bytes.clone();
    damaged[100] ^= 0x10;
    let bad = dir.path().join("bad.snap");
    std::fs::write(&bad, &damaged).unwrap();
    let o = ampstore(&["snapshot", "verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("corrupt: block 0"), "{}", stderr(&o));
}

#[cfg(feature = "aws")]
#[test]
fn init_aws_twice_against_the_test_server() {
    let endpoint = std::env::var("AMPSTORE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("AMPSTORE_TEST_AWS_ENDPOINT is not set: run the tests through ./scripts/test, which starts moto")
    });
    let id = format!("{:016x}", std::process::id() as u64 * 7919 + 13);
    let prefix = format!("cli{id}");
    let bucket = format!("cli-{id}");
    for round in 0..2 {
        let o =
            ampstore(&["init", "--backend", "aws", "--endpoint", &endpoint, "--prefix", &prefix, "--bucket", &bucket]);
        assert!(o.status.success(), "round {round}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("{prefix}-log")) && out.contains(&bucket), "{out}");
    }
}
