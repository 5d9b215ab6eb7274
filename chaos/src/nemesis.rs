//! Carries out one step of the schedule on the running cluster, and measures how long the
//! cluster took to serve again.

use std::time::{Duration, Instant};

use ampstore_client::Client;
use ampstore_common::connection::Connection;
use ampstore_common::protocol::{MasterStatus, Role};
use ampstore_common::wire::admin::Split;
use ampstore_common::wire::routing;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::schedule::{Fault, Proc, Step};
use crate::workload::Probe;

/// How long a probe waits for the cluster to serve again before reporting it did not.
const RECOVERY_MAX: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a forced split may take to be requested.
const SPLIT_DEADLINE: Duration = Duration::from_secs(10);

/// What happened to one fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultReport {
    /// Since the workload started.
    pub at_ms: u64,
    pub nemesis: String,
    pub fault: String,
    pub hold_ms: u64,
    /// From the fault until every probed key was served again (for a master kill: until
    /// the other master was active). `None`: not within the limit.
    pub failover_ms: Option<u64>,
    /// From healing until every probed key was served.
    pub recovered_ms: Option<u64>,
    /// The fault could not be carried out (e.g. a range too small to split).
    pub note: Option<String>,
}

/// Reads every probe key with a short deadline; true when all answered.
async fn serves(probe: &Client, keys: &[Probe]) -> bool {
    for k in keys {
        if k.read(probe).await.is_err() {
            return false;
        }
    }
    true
}

/// How long until `keys` are all served, from `since`.
async fn until_served(probe: &Client, keys: &[Probe], since: Instant) -> Option<u64> {
    while since.elapsed() < RECOVERY_MAX {
        if serves(probe, keys).await {
            return Some(since.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    None
}

/// The master that says it is active, and what it says, if any answers so. Asks each
/// master directly (a client's `master_status` gives up on a standby's answer).
async fn active_status(cluster: &Cluster) -> Option<(Proc, MasterStatus)> {
    for p in cluster.procs().into_iter().filter(|p| matches!(p, Proc::Master(_))) {
        let Ok(conn) = Connection::connect(&cluster.rpc(p), Role::Client, "chaos", None).await else { continue };
        if let Ok(s) = conn.call_typed(routing::MasterStatus, Duration::from_millis(500)).await
            && s.active_term.is_some()
        {
            return Some((p, s));
        }
    }
    None
}

pub async fn active_master(cluster: &Cluster) -> Option<Proc> {
    active_status(cluster).await.map(|(p, _)| p)
}

pub async fn run_step(cluster: &mut Cluster, probe: &Client, keys: &[Probe], step: &Step, at_ms: u64) -> FaultReport {
    let mut report = FaultReport {
        at_ms,
        nemesis: step.fault.nemesis().name().to_string(),
        fault: step.fault.to_string(),
        hold_ms: step.hold_ms,
        failover_ms: None,
        recovered_ms: None,
        note: None,
    };
    let hold = Duration::from_millis(step.hold_ms);
    let started = Instant::now();
    match &step.fault {
        Fault::KillNode { pick } => {
            let node = serving_node(cluster, keys, *pick).await;
            report.fault = format!("kill {node}");
            let started = Instant::now();
            cluster.kill(node);
            report.failover_ms = measure_during(probe, keys, started, hold).await;
            if let Err(e) = tokio::task::block_in_place(|| cluster.spawn(node)) {
                report.note = Some(format!("restart failed: {e:#}"));
            }
        }
        Fault::PauseNode { pick } => {
            let node = serving_node(cluster, keys, *pick).await;
            report.fault = format!("pause {node}");
            let started = Instant::now();
            cluster.pause(node);
            report.failover_ms = measure_during(probe, keys, started, hold).await;
            cluster.resume(node);
        }
        Fault::Partition { a, b } => {
            if let Err(e) = cluster.net.partition(a, b) {
                report.note = Some(format!("{e:#}"));
            }
            report.failover_ms = measure_during(probe, keys, started, hold).await;
            if let Err(e) = cluster.net.heal() {
                report.note = Some(format!("heal failed: {e:#}"));
            }
        }
        Fault::KillActiveMaster => match active_master(cluster).await {
            None => report.note = Some("no master was active".into()),
            Some(m) => {
                report.fault = format!("kill the active master {m}");
                cluster.kill(m);
                while started.elapsed() < RECOVERY_MAX {
                    if active_master(cluster).await.is_some() {
                        report.failover_ms = Some(started.elapsed().as_millis() as u64);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
                if let Err(e) = tokio::task::block_in_place(|| cluster.spawn(m)) {
                    report.note = Some(format!("restart failed: {e:#}"));
                }
            }
        },
        Fault::Split { key_index } => {
            report.note = match keys.get((*key_index % keys.len().max(1) as u64) as usize) {
                Some(p) => split(cluster, &p.key()).await.err(),
                None => Some("no key to split at".into()),
            };
            return report;
        }
    }
    let healed = Instant::now();
    report.recovered_ms = until_served(probe, keys, healed).await;
    // Not served again while the fault held: the failover took until after healing.
    let held_ms = healed.duration_since(started).as_millis() as u64;
    report.failover_ms = report.failover_ms.or(report.recovered_ms.map(|r| held_ms + r));
    report
}

/// Probes while the fault holds: how long until every key was served (possibly never
/// while it held; then the probe goes on after healing, up to the limit).
async fn measure_during(probe: &Client, keys: &[Probe], started: Instant, hold: Duration) -> Option<u64> {
    let measured = tokio::time::timeout(hold, until_served(probe, keys, started)).await;
    match measured {
        Ok(found) => {
            tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
            found
        }
        Err(_) => None,
    }
}

/// The node serving the range of probe key number `pick`, as the master sees it; a node
/// by `pick` alone when the master does not answer or the range has no owner.
async fn serving_node(cluster: &Cluster, keys: &[Probe], pick: u64) -> Proc {
    let nodes = cluster.procs().into_iter().filter(|p| matches!(p, Proc::Node(_))).count().max(1);
    let fallback = Proc::Node((pick % nodes as u64) as usize);
    let Some(key) = keys.get((pick % keys.len().max(1) as u64) as usize).map(Probe::key) else { return fallback };
    let Some((_, status)) = active_status(cluster).await else { return fallback };
    let owner = status.ranges.iter().find(|r| r.range.contains(key.as_bytes())).and_then(|r| r.owner.clone());
    let addr = owner.and_then(|o| status.nodes.iter().find(|n| n.node_id == o).map(|n| n.rpc_addr.clone()));
    addr.and_then(|a| cluster.node_index_of_rpc(&a)).map_or(fallback, Proc::Node)
}

/// Splits the range holding `key`, found through the master (a client's cached route may
/// be stale right after a fault).
async fn split(cluster: &Cluster, key: &ampstore_common::Key) -> Result<(), String> {
    let (_, status) = active_status(cluster).await.ok_or("no master is active")?;
    let range = status.ranges.iter().find(|r| r.range.contains(key.as_bytes())).ok_or("no range holds the key")?;
    let owner = range.owner.as_ref().ok_or_else(|| format!("{} has no owner", range.range_id))?;
    let node = status.nodes.iter().find(|n| &n.node_id == owner).ok_or_else(|| format!("owner {owner} unknown"))?;
    // A forced split is an operator's command (role admin); the chaos cluster runs without
    // tokens, so the role is taken as declared.
    let conn = Connection::connect(&node.rpc_addr, Role::Admin, "chaos", None)
        .await
        .map_err(|e| format!("split of {}: cannot reach {}: {e}", range.range_id, node.rpc_addr))?;
    match conn.call_typed(Split { range_id: range.range_id }, SPLIT_DEADLINE).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("split of {} refused: {e}", range.range_id)),
    }
}
