//! What every part of a node shares: identity, config, backend, liveness, the directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ampstore_common::protocol::Role;
use ampstore_common::wire::pool::Pool;

use ampstore_server::gossip::Gossip;
use ampstore_server::metrics::Metrics;

use actix::ArbiterHandle;
use ampstore_common::{NodeId, RangeId};
use ampstore_server::config::NodeConfig;
use ampstore_store::Backend;
use ampstore_store::meta::Owner;

use tokio::sync::mpsc;

use crate::directory::Directory;
use crate::liveness::Liveness;
use crate::range::host::{RangeEnv, SplitTask};

pub struct NodeShared {
    pub node_id: NodeId,
    pub rpc_addr: String,
    pub cfg: NodeConfig,
    pub backend: Backend,
    pub liveness: Arc<Liveness>,
    pub directory: Arc<Directory>,
    /// What range actors see of the node (they never see this struct).
    pub range_env: Arc<RangeEnv>,
    pub arbiters: Vec<ArbiterHandle>,
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
    instances: AtomicU64,
}

impl NodeShared {
    pub fn new(
        node_id: NodeId,
        rpc_addr: String,
        cfg: NodeConfig,
        backend: Backend,
        arbiters: Vec<ArbiterHandle>,
        (cluster_token, admin_token): (Option<String>, Option<String>),
    ) -> (NodeShared, mpsc::UnboundedReceiver<SplitTask>) {
        let liveness = Arc::new(Liveness::new(cfg.liveness_ms, cfg.liveness_margin_ms));
        let (splits, split_jobs) = mpsc::unbounded_channel();
        let directory = Arc::new(Directory::new(splits));
        let metrics = Metrics::new();
        let range_env = Arc::new(RangeEnv {
            cfg: cfg.clone(),
            backend: backend.clone(),
            liveness: liveness.clone(),
            metrics: metrics.clone(),
            host: directory.clone(),
        });
        let pool = Pool::new(Role::Node, node_id.as_str(), admin_token.clone());
        let shared = NodeShared {
            node_id,
            rpc_addr,
            cfg,
            backend,
            liveness,
            directory,
            range_env,
            arbiters,
            ops_total: AtomicU64::new(0),
            metrics,
            cluster_token,
            admin_token,
            gossip: OnceLock::new(),
            pool,
            live_node_addrs: Default::default(),
            instances: AtomicU64::new(1),
        };
        (shared, split_jobs)
    }

    /// This node as a range owner, in its current epoch.
    pub fn owner(&self) -> Owner {
        Owner { node_id: self.node_id.clone(), epoch: self.liveness.epoch() }
    }

    /// The arbiter (thread) a range's actor runs on: spread by range id.
    pub fn arbiter_for(&self, range: RangeId) -> &ArbiterHandle {
        let i = (range.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.arbiters.len();
        &self.arbiters[i]
    }

    /// A number that tells one actor instance of a range from a later one.
    pub fn next_instance(&self) -> u64 {
        self.instances.fetch_add(1, Ordering::Relaxed)
    }
}
