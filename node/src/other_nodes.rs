//! Whether another node is registered in the cluster: the meta store's node records not
//! ended, read every [`READ_EVERY`]. Range actors read the answer (one relaxed load) when they
//! decide on a hot split: the halves of a hot range help only where another node can take
//! one of them (the master moves ranges to even out the nodes' loads). Alone, a node gains
//! nothing from a hot split and pays for it in smaller log appends (docs/benchmarks.md,
//! "Ranges per node and the durable put rate").
//!
//! The node records, not gossip: they exist in every deployment (gossip needs seeds), and a
//! killed node's record stays until the master ends its epoch, which is when its ranges move.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ampstore_store::meta;

use crate::shared::NodeShared;

/// How often the node records are read.
pub const READ_EVERY: Duration = Duration::from_secs(2);

/// The count of other registered nodes (not masters or collectors).
#[derive(Debug, Default)]
pub struct OtherNodes {
    live: AtomicU32,
}

impl OtherNodes {
    pub fn set_live(&self, count: u32) {
        self.live.store(count, Ordering::Relaxed);
    }

    pub fn any_live(&self) -> bool {
        self.live.load(Ordering::Relaxed) > 0
    }
}

/// Reads the node records every [`READ_EVERY`] for as long as the node runs. A failed read
/// keeps the last count (a store outage is no reason to split or not).
pub async fn watch(shared: Arc<NodeShared>) {
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match meta::list_nodes(shared.backend.meta.as_ref()).await {
            Ok(nodes) => {
                let others = nodes.iter().filter(|(id, n)| !n.record.ended && *id != shared.node_id).count();
                shared.other_nodes.set_live(u32::try_from(others).unwrap_or(u32::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "reading the node records for hot splits failed"),
        }
    }
}
