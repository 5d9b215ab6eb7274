//! `ampstore bench`: load the keys a workload needs, run it from C clients with P requests
//! in flight each for S seconds, and report throughput and latency percentiles
//! (hdrhistogram). `--json` prints one object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ampstore_client::{Client, Key};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

use crate::data_cmd::{self, ClusterArgs};
use crate::settings::SettingsArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Get,
    Put,
    /// Half gets, half puts.
    Mixed,
    /// Scans of 10 keys from a random key.
    Scan,
    /// Transactions writing `--txn-keys` keys spread evenly over the loaded keys (so over
    /// as many ranges, once the data has split that far).
    Txn,
    /// Task cycles: enqueue, dequeue one task, ack it.
    Queue,
    /// Pushes to 64 lists (through collectors with `--collectors`).
    Push,
}

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "get")]
    workload: Workload,
    /// Independent clients (each with its own connections).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Skip loading (the keys are there from an earlier run).
    #[arg(long)]
    no_load: bool,
    /// Keys each transaction writes (txn workload).
    #[arg(long, default_value_t = 1, value_name = "N")]
    txn_keys: u64,
    /// Send pushes and enqueues through the cluster's collectors (found through gossip).
    #[arg(long)]
    collectors: bool,
    #[arg(long)]
    json: bool,
}

const CLIENTS_MAX: usize = 256;
const PIPELINE_MAX: usize = 1024;

/// `bench:` and `i` in ten digits (more when it needs them): the same bytes as
/// `format!("bench:{i:010}")`, written without the formatting machinery (which cost about
/// 1,700 instructions a request, more than the rest of the bench's own work).
fn key(i: u64) -> Key {
    const PREFIX: &[u8] = b"bench:";
    let mut digits = [0u8; 20];
    let (mut n, mut at) = (i, digits.len());
    while n > 0 || digits.len() - at < 10 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut k = Vec::with_capacity(PREFIX.len() + digits.len() - at);
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(&digits[at..]);
    Key::from(k)
}

pub async fn run(settings: &SettingsArgs, cluster: &ClusterArgs, args: BenchArgs) -> anyhow::Result<()> {
    if !(1..=CLIENTS_MAX).contains(&args.clients) || !(1..=PIPELINE_MAX).contains(&args.pipeline) {
        anyhow::bail!("--clients must be 1 to {CLIENTS_MAX} and --pipeline 1 to {PIPELINE_MAX}");
    }
    if args.keys == 0 || args.duration == 0 {
        anyhow::bail!("--keys and --duration must be above 0");
    }
    if args.value_bytes > ampstore_common::limits::VALUE_BYTES_MAX {
        anyhow::bail!("--value-bytes is over the value limit of {} bytes", ampstore_common::limits::VALUE_BYTES_MAX);
    }
    if args.txn_keys == 0 || args.txn_keys > args.keys.min(ampstore_common::limits::TXN_OPS_MAX as u64) {
        anyhow::bail!("--txn-keys must be 1 to min(--keys, {})", ampstore_common::limits::TXN_OPS_MAX);
    }
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = data_cmd::client(settings, cluster).await?;
        if args.collectors && client.discover_collectors().await? == 0 {
            anyhow::bail!("--collectors: the cluster has no live collector");
        }
        clients.push(client);
    }
    let value = vec![b'v'; args.value_bytes];
    if !args.no_load && matches!(args.workload, Workload::Get | Workload::Mixed | Workload::Scan) {
        load(&clients[0], args.keys, &value, args.json).await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    // Microseconds, 1 us to 60 s, 3 significant digits.
    let template = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut workers = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        for p in 0..args.pipeline {
            let (client, stop, ops, value, hist) =
                (client.clone(), stop.clone(), ops.clone(), value.clone(), template.clone());
            let (workload, keys) = (args.workload, args.keys);
            let seed = (c * PIPELINE_MAX + p) as u64;
            let job = Job { workload, keys, value, seed, txn_keys: args.txn_keys };
            workers.spawn(async move { worker(hist, client, job, stop, ops).await });
        }
    }
    let bar = (!args.json).then(|| {
        let b = indicatif::ProgressBar::new(args.duration);
        b.set_style(
            indicatif::ProgressStyle::with_template("running [{bar:30}] {pos}/{len} s {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let started = Instant::now();
    let mut last = 0;
    for s in 1..=args.duration {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let now = ops.load(Ordering::Relaxed);
        if let Some(b) = &bar {
            b.set_position(s);
            b.set_message(format!("{} ops/s", now - last));
        }
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut hist = template;
    let mut errors = 0u64;
    let mut first_error = None;
    while let Some(done) = workers.join_next().await {
        let (h, e, first) = done?;
        hist.add(&h)?;
        errors += e;
        first_error = first_error.or(first);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let total = hist.len();
    let ops_per_sec = total as f64 / elapsed.as_secs_f64();
    let (p50, p99, p999) = (hist.value_at_quantile(0.5), hist.value_at_quantile(0.99), hist.value_at_quantile(0.999));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": format!("{:?}", args.workload).to_lowercase(),
                "clients": args.clients,
                "pipeline": args.pipeline,
                "keys": args.keys,
                "value_bytes": args.value_bytes,
                "duration_s": elapsed.as_secs_f64(),
                "ops": total,
                "ops_per_sec": ops_per_sec.round(),
                "p50_us": p50,
                "p99_us": p99,
                "p999_us": p999,
                "errors": errors,
            })
        );
    } else {
        println!(
            "{:?}: {} clients x {} in flight, {} keys of {} bytes, {:.1} s",
            args.workload,
            args.clients,
            args.pipeline,
            args.keys,
            args.value_bytes,
            elapsed.as_secs_f64()
        );
        println!("  {ops_per_sec:.0} ops/s   p50 {p50} us   p99 {p99} us   p999 {p999} us   errors {errors}");
    }
    if let Some(e) = first_error {
        eprintln!("ampstore: warning: {errors} operations failed; the first: {e}");
    }
    Ok(())
}

async fn load(client: &Client, keys: u64, value: &[u8], quiet: bool) -> anyhow::Result<()> {
    let bar = (!quiet).then(|| {
        let b = indicatif::ProgressBar::new(keys);
        b.set_style(
            indicatif::ProgressStyle::with_template("loading [{bar:30}] {pos}/{len} keys ({elapsed}, eta {eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, next, value) = (client.clone(), next.clone(), value.to_vec());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), ampstore_client::Error>(());
                }
                client.put(key(i), value.clone()).await?;
            }
        });
    }
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => {
                if let Some(r) = done {
                    r??;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if let Some(b) = &bar {
            b.set_position(next.load(Ordering::Relaxed).min(keys));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}

/// What one worker does.
struct Job {
    workload: Workload,
    keys: u64,
    value: Vec<u8>,
    seed: u64,
    txn_keys: u64,
}

/// One request stream: sequential operations on random keys until `stop`.
async fn worker(
    mut hist: Histogram<u64>,
    client: Client,
    job: Job,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> (Histogram<u64>, u64, Option<String>) {
    let Job { workload, keys, value, seed, txn_keys } = job;
    let (mut errors, mut first) = (0u64, None);
    // xorshift: cheap, and each worker gets its own sequence.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % keys);
        let started = Instant::now();
        let put = match workload {
            Workload::Put => true,
            Workload::Mixed => n % 2 == 1,
            Workload::Get | Workload::Scan | Workload::Txn | Workload::Queue | Workload::Push => false,
        };
        let result = if workload == Workload::Txn {
            let mut txn = ampstore_client::Txn::new();
            for j in 0..txn_keys {
                txn = txn.put(key((x + j * (keys / txn_keys)) % keys), value.clone());
            }
            client.commit(txn).await.map(|_| ())
        } else if workload == Workload::Queue {
            queue_cycle(&client, &value).await
        } else if workload == Workload::Push {
            client.push(format!("bench:list:{}", x % 64), value.clone()).await.map(|_| ())
        } else if put {
            client.put(k, value.clone()).await.map(|_| ())
        } else if workload == Workload::Scan {
            client.scan(k, None, 10, false).await.map(|_| ())
        } else {
            client.get(k).await.map(|_| ())
        };
        n += 1;
        match result {
            Ok(()) => {
                let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (hist, errors, first)
}

/// One task through the queue: enqueue it, lease one task, ack it.
async fn queue_cycle(client: &Client, payload: &[u8]) -> Result<(), ampstore_client::Error> {
    client.enqueue("bench", payload.to_vec()).await?;
    for t in client.dequeue("bench", 1, Duration::from_secs(30)).await? {
        client.ack("bench", t.task).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_formatted_number() {
        for i in [0, 1, 9, 10, 99_999, 1_234_567_890, 9_999_999_999, 10_000_000_000, 123_456_789_012_345, u64::MAX] {
            assert_eq!(key(i), Key::from(format!("bench:{i:010}")), "{i}");
        }
    }
}
