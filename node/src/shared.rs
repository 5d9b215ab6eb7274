//! What every part of a node shares: identity, config, backend, liveness, its ranges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ampstore_common::protocol::{NodeStats, Role};
use ampstore_common::wire::pool::Pool;

use ampstore_server::gossip::Gossip;
use ampstore_server::metrics::Metrics;

use actix::ArbiterHandle;
use ampstore_common::NodeId;
use ampstore_server::config::NodeConfig;
use ampstore_store::Backend;

use tokio::sync::mpsc;

use crate::directory::ReshapeTask;
use crate::liveness::Liveness;
use crate::other_nodes::OtherNodes;
use crate::range::host::RangeEnv;
use crate::ranges::Ranges;

pub struct NodeShared {
    pub node_id: NodeId,
    pub rpc_addr: String,
    pub cfg: NodeConfig,
    pub backend: Backend,
    pub liveness: Arc<Liveness>,
    /// The ranges this node serves, and the only way to them.
    pub ranges: Arc<Ranges>,
    /// Requests handled since start (reported to the master for ops/s).
    pub ops_total: AtomicU64,
    pub metrics: Arc<Metrics>,
    /// A client's hello must present it, when set (`cluster.token`).
    pub cluster_token: Option<String>,
    /// Every other role's hello must present it, and this node presents it to masters and
    /// peers (`cluster.admin_token`).
    pub admin_token: Option<String>,
    /// Set once gossip runs (after the ports are bound).
    pub gossip: OnceLock<Gossip>,
    /// Connections to other nodes (transaction participants) and to the active master
    /// (split and merge commits), by address: role `Node`, the admin token.
    pub pool: Pool,
    /// The live nodes' addresses: the only ones a transaction may make this node connect to.
    pub live_node_addrs: crate::peers::LiveNodeAddrs,
    /// Whether another node is registered: range actors read it for hot splits.
    pub other_nodes: Arc<OtherNodes>,
}

impl NodeShared {
    pub fn new(
        node_id: NodeId,
        rpc_addr: String,
        cfg: NodeConfig,
        backend: Backend,
        arbiters: Vec<ArbiterHandle>,
        (cluster_token, admin_token): (Option<String>, Option<String>),
    ) -> (NodeShared, mpsc::UnboundedReceiver<ReshapeTask>) {
        let liveness = Arc::new(Liveness::new(cfg.liveness_ms, cfg.liveness_margin_ms));
        let (reshaper, reshape_jobs) = mpsc::unbounded_channel();
        let metrics = Metrics::new();
        let other_nodes = Arc::new(OtherNodes::default());
        // What range actors see of the node (they never see this struct).
        let env_of = |directory: Arc<crate::directory::Directory>| RangeEnv {
            cfg: cfg.clone(),
            backend: backend.clone(),
            liveness: liveness.clone(),
            metrics: metrics.clone(),
            host: directory,
            other_nodes: other_nodes.clone(),
        };
        let ranges = Arc::new(Ranges::new(node_id.clone(), env_of, arbiters, reshaper));
        let pool = Pool::new(Role::Node, node_id.as_str(), admin_token.clone());
        let shared = NodeShared {
            node_id,
            rpc_addr,
            cfg,
            backend,
            liveness,
            ranges,
            ops_total: AtomicU64::new(0),
            metrics,
            cluster_token,
            admin_token,
            gossip: OnceLock::new(),
            pool,
            live_node_addrs: Default::default(),
            other_nodes,
        };
        (shared, reshape_jobs)
    }
}

impl NodeShared {
    /// The node's ranges and their state (also served on the admin port).
    pub async fn stats(&self) -> NodeStats {
        NodeStats {
            node_id: self.node_id.clone(),
            epoch: self.liveness.epoch(),
            liveness_ms_left: self.liveness.ms_left(),
            ranges: self.ranges.stats().await,
            resident_bytes: resident_bytes(),
            ops_total: self.ops_total.load(Ordering::Relaxed),
            memory_budget_bytes: self.cfg.memory_budget_bytes,
            split_bytes: self.cfg.split_bytes,
        }
    }
}

/// The process's resident set size, from `/proc/self/statm` (0 where that does not exist).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
