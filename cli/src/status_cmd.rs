//! `ampstore status`: a one-screen summary of the cluster: which master is active, the
//! members by state and role (gossip, from any admin port), and the ranges and nodes as
//! the active master sees them (`MasterStatus` over RPC).

use std::time::Duration;

use ampstore_common::connection::Connection;
use ampstore_common::protocol::{MasterStatus, Role};
use ampstore_common::wire::routing;
use ampstore_server::gossip::{MemberState, MemberView};
use clap::Args;
use serde::Serialize;

use crate::cluster_file::resolve_admin_addrs;
use crate::master_link::operator_credential;
use crate::members_cmd::{align, fetch_members, human_bytes};
use crate::settings::{self, BackendArgs, SettingsArgs};

const CALL_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct StatusArgs {
    /// Admin HTTP address of any master or node (repeatable or comma-separated; the first
    /// that answers is used); default: the processes listed in DATA_DIR/cluster.json.
    #[arg(long, value_name = "ADDR")]
    admin: Vec<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    active_master: Option<ActiveMaster>,
    members: MemberCounts,
    roles: RoleCounts,
    /// `None` without an active master.
    ranges: Option<u64>,
    ranges_unowned: Option<u64>,
    /// From the active master (empty without one).
    nodes: Vec<NodeLine>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct ActiveMaster {
    id: String,
    rpc: String,
    term: u64,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
struct MemberCounts {
    alive: u64,
    suspect: u64,
    down: u64,
    left: u64,
    total: u64,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
struct RoleCounts {
    master: u64,
    node: u64,
    collector: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct NodeLine {
    id: String,
    state: String,
    ranges: u64,
    data_bytes: u64,
    resident_bytes: u64,
    ops_per_sec: u64,
    draining: bool,
}

pub async fn run(settings: &SettingsArgs, args: StatusArgs) -> anyhow::Result<()> {
    let addrs = resolve_admin_addrs(&args.admin, settings)?;
    let credential = operator_credential(&settings::load(settings, &BackendArgs::default())?)?;
    let fetched = fetch_members(&addrs).await?;
    let active = find_active_master(&fetched.members, credential).await;
    let report = summarize(&fetched.members, active.as_ref().map(|(rpc, s)| (rpc.as_str(), s)));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Asks every alive master with an RPC address for its status (all at once); the one
/// reporting an active term is active (the highest term, should two claim it). Masters
/// that do not answer are reported on stderr.
async fn find_active_master(
    members: &[MemberView],
    credential: (Role, Option<String>),
) -> Option<(String, MasterStatus)> {
    let mut calls = tokio::task::JoinSet::new();
    for m in members {
        let (Some(Role::Master), MemberState::Alive, Some(rpc)) = (m.role, m.state, &m.rpc) else { continue };
        let (id, rpc, credential) = (m.id.to_string(), rpc.clone(), credential.clone());
        calls.spawn(async move {
            let status = master_status(&rpc, credential).await;
            (id, rpc, status)
        });
    }
    let mut best: Option<(String, MasterStatus)> = None;
    while let Some(joined) = calls.join_next().await {
        let Ok((id, rpc, status)) = joined else { continue };
        match status {
            Ok(s) if s.active_term.is_some() => {
                if best.as_ref().is_none_or(|(_, b)| b.active_term < s.active_term) {
                    best = Some((rpc, s));
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("ampstore: warning: master {id} at {rpc}: {e:#}"),
        }
    }
    best
}

async fn master_status(rpc: &str, (role, token): (Role, Option<String>)) -> anyhow::Result<MasterStatus> {
    let conn = Connection::connect(rpc, role, "ampstore-cli", token).await?;
    Ok(conn.call_typed(routing::MasterStatus, CALL_DEADLINE).await?)
}

/// The report from the gossip member list and the active master's status, if any (with
/// the RPC address it answered on).
fn summarize(members: &[MemberView], active: Option<(&str, &MasterStatus)>) -> StatusReport {
    let mut counts = MemberCounts::default();
    let mut roles = RoleCounts::default();
    for m in members {
        counts.total += 1;
        match m.state {
            MemberState::Alive => counts.alive += 1,
            MemberState::Suspect => counts.suspect += 1,
            MemberState::Down => counts.down += 1,
            MemberState::Left => counts.left += 1,
        }
        match m.role {
            Some(Role::Master) => roles.master += 1,
            Some(Role::Node) => roles.node += 1,
            Some(Role::Collector) => roles.collector += 1,
            Some(Role::Client | Role::Admin) | None => {}
        }
    }
    let Some((rpc, status)) = active else {
        return StatusReport {
            active_master: None,
            members: counts,
            roles,
            ranges: None,
            ranges_unowned: None,
            nodes: Vec::new(),
        };
    };
    let mut nodes: Vec<NodeLine> = status
        .nodes
        .iter()
        .map(|n| NodeLine {
            id: n.node_id.to_string(),
            state: n.state.to_string(),
            ranges: n.ranges,
            data_bytes: n.data_bytes,
            resident_bytes: n.resident_bytes,
            ops_per_sec: n.ops_per_sec,
            draining: n.draining,
        })
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    StatusReport {
        active_master: Some(ActiveMaster {
            id: status.master_id.to_string(),
            rpc: rpc.to_string(),
            term: status.active_term.map_or(0, |t| t.0),
        }),
        members: counts,
        roles,
        ranges: Some(status.ranges.len() as u64),
        ranges_unowned: Some(status.ranges.iter().filter(|r| r.owner.is_none()).count() as u64),
        nodes,
    }
}

fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    match &r.active_master {
        Some(a) => out.push_str(&format!("active master: {} at {} (term {})\n", a.id, a.rpc, a.term)),
        None => out.push_str("active master: none (no alive master reports an active term)\n"),
    }
    let c = &r.members;
    out.push_str(&format!(
        "members: {} alive, {} suspect, {} down, {} left ({} total)\n",
        c.alive, c.suspect, c.down, c.left, c.total
    ));
    out.push_str(&format!(
        "roles: {}, {}, {}\n",
        plural(r.roles.master, "master"),
        plural(r.roles.node, "node"),
        plural(r.roles.collector, "collector")
    ));
    match (r.ranges, r.ranges_unowned) {
        (Some(n), Some(unowned)) => out.push_str(&format!("ranges: {n} ({unowned} unowned)\n")),
        _ => out.push_str("ranges: unknown (no active master)\n"),
    }
    if r.active_master.is_none() {
        return out;
    }
    if r.nodes.is_empty() {
        out.push_str("nodes: none registered\n");
        return out;
    }
    out.push_str("nodes:\n");
    let rows: Vec<[String; 7]> = r
        .nodes
        .iter()
        .map(|n| {
            [
                n.id.clone(),
                n.state.clone(),
                plural(n.ranges, "range"),
                format!("{} data", human_bytes(n.data_bytes)),
                format!("{} resident", human_bytes(n.resident_bytes)),
                format!("{} ops/s", n.ops_per_sec),
                if n.draining { "draining".into() } else { String::new() },
            ]
        })
        .collect();
    for line in align(rows.iter()).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members_cmd::tests::sample;
    use ampstore_common::protocol::{NodeView, RangeView};
    use ampstore_common::{Epoch, KeyRange, NodeId, RangeId, Term};

    fn node(id: &str, state: &str, ranges: u64, draining: bool) -> NodeView {
        NodeView {
            node_id: NodeId::new(id).unwrap(),
            rpc_addr: "127.0.0.1:1".into(),
            epoch: Epoch(1),
            state: ampstore_common::protocol::NodeState::from(state.to_string()),
            draining,
            ranges,
            data_bytes: ranges * 1_300_000,
            resident_bytes: 36_909_875,
            memory_budget_bytes: 0,
            ops_per_sec: 1520 * ranges,
            lease_ms_left: 0,
        }
    }

    fn range(id: u64, owner: Option<&str>) -> RangeView {
        RangeView {
            range_id: RangeId(id),
            range: KeyRange::full(),
            generation: 1,
            owner: owner.map(|o| NodeId::new(o).unwrap()),
            owner_epoch: owner.map(|_| Epoch(1)),
            data_bytes: 0,
            log_bytes: 0,
        }
    }

    fn master_status() -> MasterStatus {
        MasterStatus {
            master_id: NodeId::new("m-a").unwrap(),
            active_term: Some(Term(3)),
            lease_holder: None,
            lease_holder_rpc: None,
            nodes: vec![node("n-b", "dead", 0, false), node("n-a", "live", 6, true)],
            ranges: (0..6).map(|i| range(i, Some("n-a"))).chain([range(6, None)]).collect(),
            writes_refused_on_term: 0,
        }
    }

    #[test]
    fn human_summary_with_an_active_master() {
        let status = master_status();
        let report = summarize(&sample(), Some(("127.0.0.1:7001", &status)));
        let text = render(&report);
        print!("{text}");
        assert_eq!(
            text,
            "\
active master: m-a at 127.0.0.1:7001 (term 3)
members: 2 alive, 1 suspect, 1 down, 0 left (4 total)
roles: 1 master, 2 nodes, 0 collectors
ranges: 7 (1 unowned)
nodes:
  n-a  live  6 ranges  7.4 MiB data  35.2 MiB resident  9120 ops/s  draining
  n-b  dead  0 ranges  0 B data      35.2 MiB resident  0 ops/s
"
        );
    }

    #[test]
    fn human_summary_without_an_active_master() {
        let text = render(&summarize(&sample(), None));
        print!("{text}");
        assert_eq!(
            text,
            "\
active master: none (no alive master reports an active term)
members: 2 alive, 1 suspect, 1 down, 0 left (4 total)
roles: 1 master, 2 nodes, 0 collectors
ranges: unknown (no active master)
"
        );
    }

    #[test]
    fn json_shape() {
        let status = master_status();
        let v = serde_json::to_value(summarize(&sample(), Some(("127.0.0.1:7001", &status)))).unwrap();
        assert_eq!(v["active_master"], serde_json::json!({"id": "m-a", "rpc": "127.0.0.1:7001", "term": 3}));
        assert_eq!(v["members"], serde_json::json!({"alive": 2, "suspect": 1, "down": 1, "left": 0, "total": 4}));
        assert_eq!(v["roles"], serde_json::json!({"master": 1, "node": 2, "collector": 0}));
        assert_eq!((v["ranges"].as_u64(), v["ranges_unowned"].as_u64()), (Some(7), Some(1)));
        assert_eq!(
            v["nodes"][0],
            serde_json::json!({"id": "n-a", "state": "live", "ranges": 6, "data_bytes": 7_800_000u64,
                "resident_bytes": 36_909_875u64, "ops_per_sec": 9120, "draining": true})
        );
        let none = serde_json::to_value(summarize(&sample(), None)).unwrap();
        assert!(none["active_master"].is_null() && none["ranges"].is_null() && none["ranges_unowned"].is_null());
        assert_eq!(none["nodes"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn no_alive_master_means_no_active_master() {
        // Only the master in the sample has no reachable RPC port: the call fails, which is
        // a warning, and the answer is "none".
        let mut members = sample();
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        for m in &mut members {
            if m.role == Some(Role::Master) {
                m.rpc = Some(addr.clone());
            }
        }
        assert!(find_active_master(&members, (Role::Admin, None)).await.is_none());
    }
}
