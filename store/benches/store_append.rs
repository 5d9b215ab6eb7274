//! Append throughput and latency of the commit log, with N ranges appending concurrently
//! (each range keeps one append in flight, as a range actor does).
//!
//! ```text
//! cargo bench -p ampstore-common --bench store_append                       # embedded backend
//! AMPSTORE_BENCH_AWS_ENDPOINT=http://127.0.0.1:5000 \
//!   cargo bench -p ampstore-common --features aws --bench store_append       # also AWS (moto)
//! ```
//! `AMPSTORE_BENCH_SECS` sets the seconds per case (default 3). Results: docs/benchmarks.md.

use ampstore_common::{Epoch, NodeId, RangeId, Seq};
use ampstore_store::config::LocalConfig;
use ampstore_store::local::LocalStore;
use ampstore_store::{CommitLog, EntryKind, LogEntry};
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Outcome {
    appends: u64,
    bytes: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

async fn run_case(log: Arc<dyn CommitLog>, ranges: u64, entry_bytes: usize, secs: f64, range_base: u64) -> Outcome {
    let payload = Bytes::from((0..entry_bytes).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..ranges {
        let log = log.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let entry =
                LogEntry { kind: EntryKind::Batch, writer: NodeId::new("bench").unwrap(), epoch: Epoch(1), payload };
            let range = RangeId(range_base + r);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut seq = Seq(1);
            while Instant::now() < deadline {
                let t = Instant::now();
                log.append(range, seq, &entry).await.expect("append");
                hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                seq = seq.next();
            }
            hist
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        latency_us.add(t.await.unwrap()).unwrap();
    }
    let appends = latency_us.len();
    Outcome { appends, bytes: appends * entry_bytes as u64, elapsed: start.elapsed(), latency_us }
}

fn print_row(backend: &str, ranges: u64, entry_bytes: usize, o: &Outcome) {
    let secs = o.elapsed.as_secs_f64();
    println!(
        "| {backend:<5} | {ranges:>6} | {entry_bytes:>6} | {:>10.0} | {:>8.1} | {:>8} | {:>8} | {:>8} |",
        o.appends as f64 / secs,
        o.bytes as f64 / secs / 1e6,
        o.latency_us.value_at_quantile(0.5),
        o.latency_us.value_at_quantile(0.99),
        o.latency_us.value_at_quantile(0.999),
    );
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; run a tiny case then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 =
        if quick { 0.2 } else { std::env::var("AMPSTORE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("| backend | ranges | entry B | appends/s | MB/s | p50 us | p99 us | p999 us |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let cases = [(1u64, 100usize), (16, 100), (256, 100), (1, 65536), (16, 65536), (256, 65536)];
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap();
        let log = store.backend().log;
        for (i, (ranges, bytes)) in cases.iter().enumerate() {
            let o = run_case(log.clone(), *ranges, *bytes, secs, 1000 * (i as u64 + 1)).await;
            print_row("local", *ranges, *bytes, &o);
        }
        aws_cases(&cases, secs).await;
    });
}

#[cfg(feature = "aws")]
async fn aws_cases(cases: &[(u64, usize)], secs: f64) {
    use ampstore_store::aws::AwsStore;
    use ampstore_store::config::AwsConfig;
    let Ok(endpoint) = std::env::var("AMPSTORE_BENCH_AWS_ENDPOINT") else {
        eprintln!("AMPSTORE_BENCH_AWS_ENDPOINT not set: AWS cases not run");
        return;
    };
    let id = rand::random::<u32>();
    let cfg = AwsConfig {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        prefix: format!("bench{id:08x}"),
        bucket: format!("bench-{id:08x}"),
    };
    AwsStore::init(&cfg).await.unwrap();
    let log = AwsStore::connect(&cfg).await.unwrap().backend().log;
    for (i, (ranges, bytes)) in cases.iter().enumerate() {
        let o = run_case(log.clone(), *ranges, *bytes, secs, 1000 * (i as u64 + 1)).await;
        print_row("aws", *ranges, *bytes, &o);
    }
}

#[cfg(not(feature = "aws"))]
async fn aws_cases(_cases: &[(u64, usize)], _secs: f64) {
    eprintln!("built without feature aws: AWS cases not run");
}
