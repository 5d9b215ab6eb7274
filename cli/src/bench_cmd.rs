//! `ampstore bench`: load the keys a workload needs, run it from C clients with P requests
//! in flight each for S seconds, and report throughput and latency percentiles
//! (hdrhistogram). `--json` prints one object.
//!
//! The clients are shared out among `--threads` threads, each running its clients (their
//! connections included) on a single-threaded runtime of its own: no task of one client is
//! ever woken on another thread. On one multi-threaded runtime the workers woke each other
//! to steal tasks (a `futex` call per 8 durable puts, an `epoll_wait` per 8 more), which
//! cost more CPU per put than the client's own work.

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
    /// Increments of `--keys` counters (`bench:counter:N`, apart from the loaded keys, whose
    /// values are not integers).
    Incr,
    /// Puts with a TTL (`--ttl`): the keys keep expiring and the nodes keep deleting them.
    PutTtl,
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
    /// The TTL of each put (put-ttl workload): `2s`, `500ms`, `1m`.
    #[arg(long, default_value = "2s", value_parser = crate::data_cmd::parse_ttl)]
    ttl: Duration,
    /// Send pushes and enqueues through the cluster's collectors (found through gossip).
    #[arg(long)]
    collectors: bool,
    /// Threads running the clients (each client and its connections on one of them);
    /// 0: one per core, at most one per client.
    #[arg(long, default_value_t = 0)]
    threads: usize,
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
    let value = vec![b'v'; args.value_bytes];
    if !args.no_load && matches!(args.workload, Workload::Get | Workload::Mixed | Workload::Scan) {
        let client = data_cmd::client(settings, cluster).await?;
        load(&client, args.keys, &value, args.json).await?;
    }
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(args.clients);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    // Microseconds, 1 us to 60 s, 3 significant digits.
    let template = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (start, _) = tokio::sync::watch::channel(false);
    let mut shares = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = Share {
            settings: settings.clone(),
            cluster: cluster.clone(),
            clients: (t..args.clients).step_by(threads).collect(),
            pipeline: args.pipeline,
            collectors: args.collectors,
            job: Job {
                workload: args.workload,
                keys: args.keys,
                value: value.clone(),
                seed: 0,
                txn_keys: args.txn_keys,
                ttl: args.ttl,
            },
            hist: template.clone(),
            stop: stop.clone(),
            ops: ops.clone(),
            start: start.subscribe(),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || run_share(share, ready_tx, done_tx))?;
        shares.push((ready_rx, done_rx, thread));
    }
    // Every thread's clients connected before the clock starts (dropping `start` on an
    // error stops the others).
    for (ready, _, _) in &mut shares {
        ready.await.map_err(|_| anyhow::anyhow!("a bench thread stopped while connecting"))??;
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
    start.send_replace(true);
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
    for (_, done, thread) in shares {
        let (h, workers) = done.await.map_err(|_| anyhow::anyhow!("a bench thread stopped"))?;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a bench thread panicked"))?;
        hist.add(&h)?;
        for w in workers {
            let (e, first) = w.map_err(|e| anyhow::anyhow!("a bench worker failed: {e}"))?;
            errors += e;
            first_error = first_error.or(first);
        }
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

/// One thread's part of the run: its clients, each with `pipeline` workers.
struct Share {
    settings: SettingsArgs,
    cluster: ClusterArgs,
    /// The clients' numbers (for the workers' seeds).
    clients: Vec<usize>,
    pipeline: usize,
    collectors: bool,
    /// Every worker's job but its seed.
    job: Job,
    /// The latencies of all the thread's workers (one histogram a thread, not one a worker:
    /// 800 workers held 100 MB of histograms, a different one touched by every request).
    hist: Histogram<u64>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    /// Turns true when the clock starts.
    start: tokio::sync::watch::Receiver<bool>,
}

/// A worker's error count and first error, or how it failed.
type WorkerResult = Result<(u64, Option<String>), String>;

/// Runs `share` on a single-threaded runtime of this thread: connects its clients, says
/// so on `ready`, waits for the start, runs the workers until `stop` and hands their
/// results to `done`.
fn run_share(
    share: Share,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    done: tokio::sync::oneshot::Sender<(Histogram<u64>, Vec<WorkerResult>)>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("cannot start a bench thread's runtime: {e}")));
            return;
        }
    };
    rt.block_on(async move {
        let Share { settings, cluster, clients: numbers, pipeline, collectors, job, hist, stop, ops, mut start } =
            share;
        let mut clients = Vec::with_capacity(numbers.len());
        for _ in &numbers {
            let client = match data_cmd::client(&settings, &cluster).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            if collectors {
                match client.discover_collectors().await {
                    Ok(0) => {
                        let _ = ready.send(Err(anyhow::anyhow!("--collectors: the cluster has no live collector")));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                        return;
                    }
                }
            }
            clients.push(client);
        }
        let _ = ready.send(Ok(()));
        if start.wait_for(|&go| go).await.is_err() {
            return;
        }
        let hist = Arc::new(std::sync::Mutex::new(hist));
        let mut workers = tokio::task::JoinSet::new();
        for (client, &c) in clients.iter().zip(&numbers) {
            for p in 0..pipeline {
                let (client, stop, ops, hist) = (client.clone(), stop.clone(), ops.clone(), hist.clone());
                let seed = (c * PIPELINE_MAX + p) as u64;
                let job = Job { value: job.value.clone(), seed, ..job };
                workers.spawn(async move { worker(hist, client, job, stop, ops).await });
            }
        }
        let mut results = Vec::with_capacity(workers.len());
        while let Some(w) = workers.join_next().await {
            results.push(w.map_err(|e| e.to_string()));
        }
        drop(workers);
        let hist = Arc::try_unwrap(hist).map_or_else(
            |h| h.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            |h| h.into_inner().unwrap_or_else(|p| p.into_inner()),
        );
        let _ = done.send((hist, results));
    });
}

/// What one worker does.
struct Job {
    workload: Workload,
    keys: u64,
    value: Vec<u8>,
    seed: u64,
    txn_keys: u64,
    ttl: Duration,
}

/// One request stream: sequential operations on random keys until `stop`.
async fn worker(
    hist: Arc<std::sync::Mutex<Histogram<u64>>>,
    client: Client,
    job: Job,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> (u64, Option<String>) {
    let Job { workload, keys, value, seed, txn_keys, ttl } = job;
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
            Workload::Get
            | Workload::Scan
            | Workload::Txn
            | Workload::Queue
            | Workload::Push
            | Workload::Incr
            | Workload::PutTtl => false,
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
        } else if workload == Workload::Incr {
            client.incr(format!("bench:counter:{}", x % keys), 1).await.map(|_| ())
        } else if workload == Workload::PutTtl {
            client.put_with_ttl(k, value.clone(), ttl).await.map(|_| ())
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
                let took = started.elapsed().as_micros().max(1) as u64;
                let _ = hist.lock().unwrap_or_else(|p| p.into_inner()).record(took);
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (errors, first)
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
