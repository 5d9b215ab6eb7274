//! `ampstore chaos`: a cluster of real processes under checked workloads while a nemesis
//! injects faults (see the `ampstore-chaos` crate and docs/chaos.md). Exits 1 when a
//! checker finds a violation (or a process crashed), 2 when the run itself failed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ampstore_chaos::run::{BackendChoice, RunSpec};
use ampstore_chaos::schedule::Nemesis;
use ampstore_chaos::workload::Workload;
use anyhow::Context;
use clap::Args;

use crate::settings::BackendArg;

/// Longest run one command does (a long campaign is many runs, see docs/chaos.md).
const DURATION_S_MAX: u64 = 24 * 3600;

#[derive(Args)]
pub struct ChaosArgs {
    /// How long the workloads run, in seconds (faults stop 3 s before the end).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    duration: u64,
    /// Seed of the fault schedule and the workloads (default: from the clock; printed).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Faults to inject, comma-separated: kill, pause, partition, master, split.
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition,master,split")]
    nemesis: Vec<String>,
    /// Workloads, comma-separated: register, list-append, bank, queue.
    #[arg(long, value_delimiter = ',', default_value = "register,list-append,bank,queue,counter")]
    workload: Vec<String>,
    /// Number of nodes (3 to 5); there are always 2 masters.
    #[arg(long, default_value_t = 3, value_name = "N")]
    nodes: usize,
    /// Storage backend: local (embedded, default) or aws (needs --endpoint).
    #[arg(long, value_enum, default_value = "local")]
    backend: BackendArg,
    /// DynamoDB/S3 endpoint for --backend aws (e.g. a moto server).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Where the history, summary, data and logs go (default chaos-runs/SEED-TIME).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run these faults instead of drawing them from the seed: one a line, `AT_MS HOLD_MS
    /// FAULT`, FAULT written as a run prints it (see docs/chaos.md); the seed still drives
    /// the workloads.
    #[arg(long, value_name = "FILE", conflicts_with = "nemesis")]
    schedule: Option<PathBuf>,
    /// Check a saved history (history.jsonl of an earlier run) instead of running; the
    /// availability rule is applied too when summary.json lies beside it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seed", "dir", "endpoint"])]
    replay: Option<PathBuf>,
}

/// A checker found a violation: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("the chaos run found a violation (see above)")]
pub struct Violation;

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.replay {
        return replay(path);
    }
    let nemeses = parse_list::<Nemesis>(&args.nemesis)?;
    let workloads = parse_list::<Workload>(&args.workload)?;
    if !(1..=DURATION_S_MAX).contains(&args.duration) {
        anyhow::bail!("--duration must be 1 to {DURATION_S_MAX} seconds");
    }
    let backend = match (args.backend, args.endpoint) {
        (BackendArg::Aws, Some(endpoint)) => BackendChoice::Aws { endpoint },
        (BackendArg::Aws, None) => anyhow::bail!("--backend aws needs --endpoint URL"),
        (BackendArg::Local, None) => BackendChoice::Local,
        (BackendArg::Local, Some(_)) => anyhow::bail!("--endpoint needs --backend aws"),
    };
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
    });
    let schedule = match &args.schedule {
        None => None,
        Some(path) => {
            let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if meta.len() > ampstore_chaos::schedule::SCHEDULE_FILE_BYTES_MAX as u64 {
                anyhow::bail!("{}: over {} bytes", path.display(), ampstore_chaos::schedule::SCHEDULE_FILE_BYTES_MAX);
            }
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let steps = ampstore_chaos::schedule::parse_steps(&text, 2, args.nodes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if let Some(last) = steps.last()
                && last.at_ms + last.hold_ms + ampstore_chaos::schedule::COOLDOWN_MS > args.duration * 1000
            {
                anyhow::bail!(
                    "{}: the last fault ends after the run (--duration {} s; faults must heal {} ms before the end)",
                    path.display(),
                    args.duration,
                    ampstore_chaos::schedule::COOLDOWN_MS
                );
            }
            Some(steps)
        }
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("chaos-runs").join(format!("{seed}-{now_s}")));
    let spec = RunSpec {
        duration: Duration::from_secs(args.duration),
        seed,
        nemeses,
        workloads,
        nodes: args.nodes,
        masters: 2,
        backend,
        dir: dir.clone(),
        exe: std::env::current_exe().context("finding the ampstore binary")?,
        schedule,
    };
    let summary = ampstore_chaos::run::run(&spec).await?;
    print!("{}", ampstore_chaos::run::render(&summary));
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    println!("summary: {}", dir.join("summary.json").display());
    let schedule_arg = args.schedule.as_ref().map_or(String::new(), |p| format!(" --schedule {}", p.display()));
    println!("again: ampstore chaos --seed {seed} --duration {} --nodes {}{schedule_arg}", args.duration, args.nodes);
    if summary.failed() { Err(Violation.into()) } else { Ok(()) }
}

fn replay(path: &PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let history = ampstore_chaos::history::from_json_lines(&text).map_err(anyhow::Error::msg)?;
    let verdicts = ampstore_chaos::verdicts::check_all(&history);
    println!("{} events in {}", history.len(), path.display());
    for v in &verdicts {
        let detail = if v.detail.is_empty() { String::new() } else { format!(": {}", v.detail) };
        println!("  {:<12} {}{detail}", v.workload.name(), v.verdict);
    }
    let availability = match replay_availability(path) {
        Ok(a) => {
            println!("availability: judged from the fault records in summary.json beside the history");
            print!("{}", a.render());
            a.is_violation()
        }
        Err(why) => {
            println!("availability: SKIPPED ({why}; only this rule is skipped)");
            false
        }
    };
    if verdicts.iter().any(|v| v.is_violation()) || availability { Err(Violation.into()) } else { Ok(()) }
}

/// The fault records of a replayed run are not in its history: they are in the
/// summary.json beside it, with the bounds the run used.
fn replay_availability(history: &Path) -> Result<ampstore_chaos::availability::Availability, String> {
    #[derive(serde::Deserialize)]
    struct Saved {
        faults: Vec<ampstore_chaos::nemesis::FaultReport>,
        availability: Option<ampstore_chaos::availability::Availability>,
    }
    let path = history.with_file_name("summary.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("the faults are not in the history, and {} cannot be read: {e}", path.display()))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| format!("{}: no fault records: {e}", path.display()))?;
    // An older summary has no bounds: this build's settings are the run's.
    let bounds = saved.availability.map_or_else(ampstore_chaos::run::failover_bounds, |a| a.bounds);
    Ok(ampstore_chaos::availability::check(&saved.faults, &bounds))
}

fn parse_list<T: std::str::FromStr<Err = String> + PartialEq>(items: &[String]) -> anyhow::Result<Vec<T>> {
    let mut out: Vec<T> = Vec::new();
    for s in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let v = s.parse::<T>().map_err(anyhow::Error::msg)?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ampstore_chaos::cluster;
    use ampstore_server::config::{MasterConfig, NodeConfig};

    /// The chaos suite passes no failure detection settings: its schedule and availability
    /// rule must use the same values as the processes, the defaults.
    #[test]
    fn chaos_runs_at_the_default_failover_settings() {
        let (node, master) = (NodeConfig::default(), MasterConfig::default());
        assert_eq!(cluster::LIVENESS_MS, node.liveness_ms);
        assert_eq!(cluster::LIVENESS_MARGIN_MS, node.liveness_margin_ms);
        assert_eq!(cluster::LEASE_MS, master.lease_ms);
    }
}
