//! A whole chaos run: start the cluster, run the workloads while the nemesis follows its
//! schedule, heal, read the final state, check, summarize.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig};
use anyhow::Context;
use serde::Serialize;

use crate::availability::{self, Availability, FailoverBounds};
use crate::cluster::{self, Backend, Cluster};
use crate::history::{Event, Outcome};
use crate::nemesis::{self, FaultReport};
use crate::net::Network;
use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::schedule::{self, Nemesis, ScheduleSpec, Step};
use crate::verdicts::{self, WorkloadVerdict};
use crate::workload::{self, Ctx, Workload};

/// Each operation of the workloads gives up after this long (and is then unknown).
const CALL_DEADLINE: Duration = Duration::from_secs(3);
const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// How long the cluster may take to serve after it started, and after the last heal.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub enum BackendChoice {
    Local,
    /// The endpoint as this process reaches it (e.g. `http://127.0.0.1:5000`).
    Aws {
        endpoint: String,
    },
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub duration: Duration,
    pub seed: u64,
    pub nemeses: Vec<Nemesis>,
    pub workloads: Vec<Workload>,
    pub nodes: usize,
    pub masters: usize,
    pub backend: BackendChoice,
    /// Holds the history, the summary, the processes' data and logs.
    pub dir: PathBuf,
    /// The `ampstore` binary.
    pub exe: PathBuf,
    /// Faults given explicitly (`--schedule FILE`) instead of drawn from the seed.
    pub schedule: Option<Vec<Step>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub duration_s: u64,
    pub nodes: usize,
    pub masters: usize,
    pub history: PathBuf,
    /// Operations by kind and outcome.
    pub ops: BTreeMap<String, Counts>,
    pub faults: Vec<FaultReport>,
    pub verdicts: Vec<WorkloadVerdict>,
    /// Each fault's "serving again" judged against the failover time expected for its
    /// kind (docs/chaos.md, "Availability").
    pub availability: Availability,
    /// Processes that exited on their own, and steps that could not finish (final reads).
    pub problems: Vec<String>,
}

impl Summary {
    pub fn failed(&self) -> bool {
        self.verdicts.iter().any(WorkloadVerdict::is_violation)
            || self.availability.is_violation()
            || !self.problems.is_empty()
    }
}

pub async fn run(spec: &RunSpec) -> anyhow::Result<Summary> {
    anyhow::ensure!((3..=5).contains(&spec.nodes), "--nodes must be 3 to 5");
    anyhow::ensure!(!spec.workloads.is_empty(), "choose at least one workload");
    std::fs::create_dir_all(&spec.dir).with_context(|| format!("creating {}", spec.dir.display()))?;
    let partitions = match &spec.schedule {
        Some(steps) => steps.iter().any(|s| s.fault.nemesis() == Nemesis::Partition),
        None => spec.nemeses.contains(&Nemesis::Partition),
    };
    let net = Network::create(spec.masters, spec.nodes, partitions)?;
    let backend = match &spec.backend {
        BackendChoice::Local => Backend::Local(spec.dir.join("store")),
        BackendChoice::Aws { endpoint } => aws_backend(spec, &net, endpoint).await?,
    };
    say(&format!(
        "chaos: seed {}, {} s, {} masters + {} nodes ({}), nemeses [{}], workloads [{}]; data in {}",
        spec.seed,
        spec.duration.as_secs(),
        spec.masters,
        spec.nodes,
        match net {
            Network::Namespaces(_) => "one network namespace each",
            Network::Loopback { .. } => "loopback addresses",
        },
        spec.nemeses.iter().map(|n| n.name()).collect::<Vec<_>>().join(","),
        spec.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(","),
        spec.dir.display()
    ));
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(net, &spec.exe, &spec.dir, backend, spec.masters, spec.nodes))?;
    let client = connect(&cluster, CALL_DEADLINE).await?;
    let probe = connect(&cluster, PROBE_DEADLINE).await?;
    workload::until_ok(SERVE_TIMEOUT, || client.put("chaos-ready", "1")).await.context("the cluster never served")?;
    say("chaos: cluster serving; workloads start");

    let history_path = spec.dir.join("history.jsonl");
    let (rec, writer) = Recorder::create(&history_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Ctx { client: client.clone(), rec, stop: stop.clone() };
    let mut rng = Rng::new(spec.seed);
    let mut problems = Vec::new();
    if spec.workloads.contains(&Workload::Bank) {
        workload::bank::open(&ctx).await.context("opening the bank accounts")?;
    }
    let workers = start_workers(spec, &ctx, &mut rng);

    let probe_keys: Vec<workload::Probe> = spec.workloads.iter().flat_map(|w| w.probes()).collect();
    let steps = match &spec.schedule {
        Some(steps) => steps.clone(),
        None => schedule::schedule(
            &ScheduleSpec {
                duration_ms: spec.duration.as_millis() as u64,
                nemeses: spec.nemeses.clone(),
                nodes: spec.nodes,
                masters: spec.masters,
                liveness_ms: cluster::LIVENESS_MS,
            },
            spec.seed,
        ),
    };
    let began = Instant::now();
    let mut faults = Vec::new();
    for step in &steps {
        // A slow recovery delays the schedule: faults that no longer fit are dropped.
        let ends_ms = began.elapsed().as_millis() as u64 + step.hold_ms + schedule::COOLDOWN_MS;
        if ends_ms.max(step.at_ms + step.hold_ms + schedule::COOLDOWN_MS) > spec.duration.as_millis() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(step.at_ms).saturating_sub(began.elapsed())).await;
        let at_ms = began.elapsed().as_millis() as u64;
        let report = nemesis::run_step(&mut cluster, &probe, &probe_keys, step, at_ms).await;
        say(&describe(&report));
        faults.push(report);
        problems.extend(cluster.exited());
    }
    tokio::time::sleep(spec.duration.saturating_sub(began.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    say("chaos: workloads stop; healing and reading the final state");
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }

    // Heal whatever is left, bring every process back, and wait for the cluster.
    let _ = cluster.net.heal();
    problems.extend(cluster.exited());
    for p in cluster.procs() {
        cluster.resume(p);
        if cluster.pid(p).is_none() {
            tokio::task::block_in_place(|| cluster.spawn(p)).with_context(|| format!("restarting {p}"))?;
        }
    }
    let recover = Instant::now();
    if workload::until_ok(SERVE_TIMEOUT, || async {
        for p in &probe_keys {
            p.read(&client).await?;
        }
        Ok(())
    })
    .await
    .is_err()
    {
        problems.push(format!("the cluster did not serve every key within {} s of healing", SERVE_TIMEOUT.as_secs()));
    }
    say(&format!("chaos: healed cluster serving after {} ms", recover.elapsed().as_millis()));
    let elapsed_ns = ctx.rec.now_ns();
    for w in &spec.workloads {
        let result = match w {
            Workload::Register => {
                workload::register::final_reads(&ctx, workload::register::generations(elapsed_ns)).await
            }
            Workload::ListAppend => workload::list::final_reads(&ctx, workload::list::generations(elapsed_ns)).await,
            Workload::Bank => workload::bank::final_reads(&ctx).await,
            Workload::Queue => workload::queue::final_drain(&ctx).await,
            Workload::Counter => workload::counter::final_reads(&ctx).await,
        };
        if let Err(e) = result {
            problems.push(format!("final read of {w}: {e:#}"));
        }
    }
    problems.extend(cluster.exited());
    drop(ctx);
    let history = writer.finish().await?;
    cluster.stop();
    drop(cluster);

    Ok(Summary {
        seed: spec.seed,
        duration_s: spec.duration.as_secs(),
        nodes: spec.nodes,
        masters: spec.masters,
        history: history_path,
        ops: count_ops(&history),
        availability: availability::check(&faults, &failover_bounds()),
        faults,
        verdicts: verdicts::check_all(&history),
        problems,
    })
}

/// The bounds of the availability rule, from the settings this run gives its processes.
pub fn failover_bounds() -> FailoverBounds {
    FailoverBounds {
        liveness_ms: cluster::LIVENESS_MS,
        liveness_margin_ms: cluster::LIVENESS_MARGIN_MS,
        lease_ms: cluster::LEASE_MS,
        range_load_ms: availability::RANGE_LOAD_MS,
        margin_ms: availability::AVAILABILITY_MARGIN_MS,
    }
}

fn start_workers(spec: &RunSpec, ctx: &Ctx, rng: &mut Rng) -> Vec<tokio::task::JoinHandle<()>> {
    let mut out = Vec::new();
    let values = Arc::new(AtomicU64::new(0));
    for w in &spec.workloads {
        match w {
            Workload::Register => {
                for _ in 0..4 {
                    out.push(tokio::spawn(workload::register::worker(ctx.clone(), rng.fork(), values.clone())));
                }
            }
            Workload::ListAppend => {
                for _ in 0..3 {
                    out.push(tokio::spawn(workload::list::worker(ctx.clone(), rng.fork(), values.clone())));
                }
            }
            Workload::Bank => {
                for _ in 0..2 {
                    out.push(tokio::spawn(workload::bank::transfers(ctx.clone(), rng.fork())));
                }
                out.push(tokio::spawn(workload::bank::readers(ctx.clone(), rng.fork())));
            }
            Workload::Queue => {
                for _ in 0..2 {
                    out.push(tokio::spawn(workload::queue::producer(ctx.clone(), rng.fork(), values.clone())));
                    out.push(tokio::spawn(workload::queue::consumer(ctx.clone(), rng.fork())));
                }
            }
            Workload::Counter => {
                for _ in 0..3 {
                    out.push(tokio::spawn(workload::counter::worker(ctx.clone(), rng.fork())));
                }
            }
        }
    }
    out
}

async fn connect(cluster: &Cluster, deadline: Duration) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(&cluster.master_rpcs());
    cfg.call_deadline = deadline;
    cfg.name = "ampstore-chaos".into();
    let started = Instant::now();
    loop {
        match Client::with_config(cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() > SERVE_TIMEOUT => return Err(e).context("connecting to the masters"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The AWS backend: tables and bucket named for this run, created by `ampstore init`; the
/// endpoint forwarded onto the bridge when the processes live in namespaces.
async fn aws_backend(spec: &RunSpec, net: &Network, endpoint: &str) -> anyhow::Result<Backend> {
    let name = format!("chaos-{}-{}", std::process::id(), spec.seed % 1_000_000);
    let out = std::process::Command::new(&spec.exe)
        .args(["init", "--backend", "aws", "--endpoint", endpoint, "--prefix", &name, "--bucket", &name])
        .output()
        .context("running ampstore init")?;
    anyhow::ensure!(out.status.success(), "ampstore init failed: {}", String::from_utf8_lossy(&out.stderr));
    let reachable = match net.gateway() {
        None => endpoint.to_string(),
        Some(gw) => {
            let target = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
            format!("http://{}", crate::forward::start(gw, target).await?)
        }
    };
    Ok(Backend::Aws { endpoint: reachable, prefix: name.clone(), bucket: name })
}

fn count_ops(history: &[Event]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for e in history.iter().filter(|e| e.process != crate::history::FINAL_PROCESS) {
        let name = serde_json::to_value(&e.op)
            .ok()
            .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
            .unwrap_or_else(|| "?".into());
        let c = out.entry(name).or_default();
        match e.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Unknown => c.unknown += 1,
        }
    }
    out
}

fn describe(r: &FaultReport) -> String {
    let ms = |v: Option<u64>| v.map_or("not within 30 s".to_string(), |v| format!("{v} ms"));
    let mut line = format!("[{:>6.1} s] {}", r.at_ms as f64 / 1000.0, r.fault);
    if r.nemesis != "split" {
        line += &format!(
            " for {} ms: serving again after {}, {} after healing",
            r.hold_ms,
            ms(r.failover_ms),
            ms(r.recovered_ms)
        );
    }
    if let Some(note) = &r.note {
        line += &format!(" ({note})");
    }
    if let Some(v) = availability::check(std::slice::from_ref(r), &failover_bounds()).violations.first() {
        line += &format!(" AVAILABILITY VIOLATION: allowed {} ms", v.allowed_ms);
    }
    line
}

fn say(line: &str) {
    println!("{line}");
}

/// The summary as the command prints it.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    out += &format!(
        "\n== chaos summary (seed {}, {} s, {} masters, {} nodes)\n",
        s.seed, s.duration_s, s.masters, s.nodes
    );
    out += "operations        ok     fail  unknown\n";
    for (name, c) in &s.ops {
        out += &format!("  {name:<12} {:>7} {:>8} {:>8}\n", c.ok, c.fail, c.unknown);
    }
    let mut by_kind: BTreeMap<&str, Vec<&FaultReport>> = BTreeMap::new();
    for f in &s.faults {
        by_kind.entry(f.nemesis.as_str()).or_default().push(f);
    }
    out += &format!("faults: {}\n", s.faults.len());
    for (kind, fs) in &by_kind {
        let failovers: Vec<String> =
            fs.iter().map(|f| f.failover_ms.map_or("-".into(), |v| format!("{:.1}", v as f64 / 1000.0))).collect();
        out += &format!("  {kind:<10} {:>3}  failover s: {}\n", fs.len(), failovers.join(" "));
    }
    out += "verdicts\n";
    for v in &s.verdicts {
        out += &format!(
            "  {:<12} {}{}\n",
            v.workload.name(),
            v.verdict,
            if v.detail.is_empty() { String::new() } else { format!(": {}", v.detail) }
        );
    }
    out += &s.availability.render();
    for p in &s.problems {
        out += &format!("problem: {p}\n");
    }
    out += &format!("history: {}\n", s.history.display());
    out += if s.failed() { "RESULT: VIOLATION\n" } else { "RESULT: ok\n" };
    out
}
