//! The chaos suite on the AWS backend (DynamoDB and S3 served by moto, which
//! `./scripts/test` starts): a shorter mixed run must find no violation. Processes in
//! their network namespaces reach moto through the run's forwarder on the bridge.

mod support;

#[cfg(feature = "aws")]
#[test]
fn a_chaos_run_on_the_aws_backend_finds_no_violation() {
    let endpoint = std::env::var("AMPSTORE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("AMPSTORE_TEST_AWS_ENDPOINT is not set: run the tests through ./scripts/test, which starts moto")
    });
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_007;
    let seed = std::env::var("AMPSTORE_CHAOS_SEED").unwrap_or(seed.to_string());
    let dir_arg = run_dir.to_str().unwrap();
    let o = support::ampstore_cli(&[
        "chaos",
        "--backend",
        "aws",
        "--endpoint",
        &endpoint,
        "--duration",
        "40",
        "--seed",
        &seed,
        "--dir",
        dir_arg,
    ]);
    eprintln!("{}", support::output_text(&o));
    assert_eq!(o.status.code(), Some(0), "chaos run on aws with seed {seed} failed");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    let verdicts = summary["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 5, "every workload checked: {verdicts:?}");
    assert!(verdicts.iter().all(|v| v["verdict"] == "valid"), "{verdicts:?}");
    assert!(summary["faults"].as_array().unwrap().len() >= 4);
}
