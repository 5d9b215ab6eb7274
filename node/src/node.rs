//! Running a node: identity, backend, actix arbiters, liveness, the RPC server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, ArbiterHandle, System};
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeState, Role};
use ampstore_server::config::Config;
use ampstore_server::gossip::{Gossip, GossipLoad, GossipSettings};
use tokio::sync::watch;

use crate::admin;
use crate::liveness::{self, Beat, Registration};
use crate::shared::NodeShared;
use ampstore_server::identity;
use ampstore_server::rpc;

/// How long a graceful shutdown waits for ranges to snapshot and release.
const SHUTDOWN_RELEASE_WAIT: Duration = Duration::from_secs(20);

/// How often each actor thread runs the thread upkeep hook ([`set_thread_upkeep`]).
pub const THREAD_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What each actor thread runs every [`THREAD_UPKEEP_INTERVAL`], set once per process by the
/// binary (which owns the allocator): the range actors allocate and free every key's entry
/// on their threads, and an allocator that keeps per-thread pages (mimalloc) hands emptied
/// ones back only when that thread asks; an actor whose keys expired or were released is
/// mostly idle and would keep them (`docs/benchmarks.md`, "Memory after expiry").
static THREAD_UPKEEP: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the hook every actor thread runs every [`THREAD_UPKEEP_INTERVAL`] (the first call
/// wins; call it before [`run`]).
pub fn set_thread_upkeep(hook: fn()) {
    let _ = THREAD_UPKEEP.set(hook);
}

/// What a node tells the binary once it serves (`run_with`): enough to start the processes'
/// own extras (the RESP listener) without this crate depending on the client.
pub struct Serving {
    pub node_id: String,
    /// The RPC addresses of the masters gossip reports alive now.
    pub masters: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    /// The node's service in process, for a client running inside it
    /// (`ClientConfig::local`).
    pub local: ampstore_common::wire::local::Local,
}

/// Runs a node until `shutdown` resolves, then releases its ranges and stops.
/// Prints one line `ampstore node ID ready: rpc ADDR epoch N admin ADDR gossip ADDR` (and
/// `resp ADDR` when `node.resp_addr` is set) to stdout once serving.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with(cfg, shutdown, |_| {}).await
}

/// [`run`], calling `on_serving` once the node serves.
pub async fn run_with(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    on_serving: impl FnOnce(Serving),
) -> Result<(), Error> {
    let node_id = identity::load_or_create(&cfg.data_dir)?;
    let backend = ampstore_server::open_backend(&cfg).await?;
    let (listener, rpc_addr) = rpc::bind(&cfg.node.rpc_addr).await?;
    let (admin_listener, admin_addr) = rpc::bind(&cfg.node.admin_addr).await?;
    let arbiters_count = match cfg.node.arbiters_count {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n as usize,
    };
    let (arbiters, system) = start_actix(arbiters_count)?;
    let tokens = cfg.cluster.server_tokens()?;
    let (shared, split_jobs) =
        NodeShared::new(node_id.clone(), rpc_addr.clone(), cfg.node.clone(), backend, arbiters, tokens);
    let shared = Arc::new(shared);
    // Splits complete off the range actors, in the reshaper's tasks.
    let reshaper = tokio::spawn(crate::reshape::run(shared.clone(), split_jobs));
    let reg = liveness::register(shared.backend.meta.as_ref(), &node_id, &rpc_addr, &shared.liveness).await?;
    let settings =
        GossipSettings::from_config(&cfg, node_id.clone(), Role::Node, &cfg.node.gossip_addr, &rpc_addr, &admin_addr)?;
    let gossip = Gossip::start(settings, shared.metrics.clone()).await?;
    let gossip_addr = gossip.local_addr();
    let _ = shared.gossip.set(gossip);
    tracing::info!(%node_id, %rpc_addr, %admin_addr, %gossip_addr, epoch = reg.epoch.0, arbiters = arbiters_count, "node serving");
    let resp = if cfg.node.resp_addr.is_empty() { String::new() } else { format!(" resp {}", cfg.node.resp_addr) };
    println!(
        "ampstore node {node_id} ready: rpc {rpc_addr} epoch {} admin {admin_addr} gossip {gossip_addr}{resp}",
        reg.epoch.0
    );
    let gossip_of = shared.clone();
    on_serving(Serving {
        node_id: node_id.to_string(),
        local: ampstore_common::wire::local::Local(Arc::new(crate::local::InProcess(shared.clone()))),
        masters: Arc::new(move || {
            gossip_of
                .gossip
                .get()
                .map(|g| g.members())
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.role == Some(Role::Master) && m.state == ampstore_common::member::MemberState::Alive)
                .filter_map(|m| m.rpc)
                .collect()
        }),
    });
    let reporter = tokio::spawn(report_load(shared.clone()));
    let other_nodes = tokio::spawn(watch_other_nodes(shared.clone()));

    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), reg));
    let budget = tokio::spawn(crate::budget::enforce_loop(shared.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(rpc::serve(listener, shared.clone(), stop_rx.clone()));
    let admin = tokio::spawn(admin::serve(admin_listener, shared.clone(), stop_rx));
    shutdown.await;
    tracing::info!("shutting down: releasing ranges");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = admin.await;
    release_all(&shared).await;
    if let Some(g) = shared.gossip.get() {
        g.leave().await;
    }
    reporter.abort();
    other_nodes.abort();
    heartbeat.abort();
    budget.abort();
    reshaper.abort();
    system.stop();
    Ok(())
}

fn start_actix(count: usize) -> Result<(Vec<ArbiterHandle>, System), Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("ampstore-actix".into())
        .spawn(move || {
            let system = System::new();
            let arbiters: Vec<Arbiter> = system.block_on(async { (0..count).map(|_| Arbiter::new()).collect() });
            if let Some(&hook) = THREAD_UPKEEP.get() {
                for a in &arbiters {
                    a.spawn(async move {
                        loop {
                            actix::clock::sleep(THREAD_UPKEEP_INTERVAL).await;
                            hook();
                        }
                    });
                }
            }
            let handles = arbiters.iter().map(Arbiter::handle).collect();
            let _ = tx.send((handles, System::current()));
            let _ = system.run();
            for a in arbiters {
                a.stop();
            }
        })
        .map_err(|e| Error::internal(format!("cannot start the actor system: {e}")))?;
    rx.recv().map_err(|_| Error::internal("the actor system did not start"))
}

async fn heartbeat_loop(shared: Arc<NodeShared>, mut reg: Registration) {
    let meta = shared.backend.meta.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(shared.cfg.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match liveness::heartbeat_once(meta.as_ref(), &shared.node_id, &shared.rpc_addr, &reg, &shared.liveness).await {
            Beat::Renewed(version) => reg.version = version,
            Beat::Lost => {
                tracing::warn!(epoch = reg.epoch.0, "node epoch ended (declared dead): dropping every range");
                shared.ranges.drop_all();
                loop {
                    match liveness::register(meta.as_ref(), &shared.node_id, &shared.rpc_addr, &shared.liveness).await {
                        Ok(r) => {
                            tracing::info!(epoch = r.epoch.0, "registered in a new epoch");
                            reg = r;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "registration failed, retrying");
                            tokio::time::sleep(Duration::from_millis(shared.cfg.heartbeat_ms)).await;
                        }
                    }
                }
            }
            Beat::Failed(e) => {
                tracing::warn!(error = %e, ms_left = shared.liveness.ms_left(), "heartbeat failed");
            }
        }
    }
}

async fn release_all(shared: &Arc<NodeShared>) {
    // All at once, each with its own deadline.
    let mut waits = tokio::task::JoinSet::new();
    for (range_id, range) in shared.ranges.all_serving() {
        waits.spawn(async move {
            match tokio::time::timeout(SHUTDOWN_RELEASE_WAIT, range.release()).await {
                Ok(Ok(_)) => {}
                // Stopped already (fenced, its epoch over): nothing to release.
                Ok(Err(Error::NotOwner { .. })) => {}
                Ok(Err(e)) => tracing::warn!(%range_id, error = %e, "release at shutdown failed"),
                Err(_) => tracing::warn!(%range_id, "release at shutdown did not finish"),
            }
        });
    }
    while waits.join_next().await.is_some() {}
}

/// Publishes the node's load through gossip and its range counts as metrics, once a second.
async fn report_load(shared: Arc<NodeShared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ops: Option<(u64, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let stats = shared.stats().await;
        let count = |state: RangeState| stats.ranges.iter().filter(|r| r.state == state).count() as i64;
        shared.metrics.set_ranges(&[
            ("serving", count(RangeState::Serving)),
            ("loading", count(RangeState::Loading)),
            ("failed", count(RangeState::Failed)),
        ]);
        let now = std::time::Instant::now();
        let ops_per_sec = match last_ops {
            Some((ops, at)) if now > at => {
                (stats.ops_total.saturating_sub(ops) as f64 / now.duration_since(at).as_secs_f64()) as u64
            }
            _ => 0,
        };
        last_ops = Some((stats.ops_total, now));
        if let Some(g) = shared.gossip.get() {
            g.set_load(GossipLoad {
                resident_bytes: stats.resident_bytes,
                ranges: stats.ranges.len() as u64,
                ops_per_sec,
            });
        }
    }
}

/// Reads the node records every `other_nodes::READ_EVERY` for as long as the node runs. A failed read
/// keeps the last count (a store outage is no reason to split or not).
async fn watch_other_nodes(shared: Arc<NodeShared>) {
    let mut tick = tokio::time::interval(crate::other_nodes::READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match ampstore_store::meta::list_nodes(shared.backend.meta.as_ref()).await {
            Ok(nodes) => {
                let others = nodes.iter().filter(|(id, n)| !n.record.ended && *id != shared.node_id).count();
                shared.other_nodes.set_live(u32::try_from(others).unwrap_or(u32::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "reading the node records for hot splits failed"),
        }
    }
}
