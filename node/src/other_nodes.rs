//! Whether another node is registered in the cluster: the meta store's node records not
//! ended, read every [`READ_EVERY`] by the node's driver (`node::watch_other_nodes`). Range actors read the answer (one relaxed load) when they
//! decide on a hot split: the halves of a hot range help only where another node can take
//! one of them (the master moves ranges to even out the nodes' loads). Alone, a node gains
//! nothing from a hot split and pays for it in smaller log appends (docs/benchmarks.md,
//! "Ranges per node and the durable put rate").
//!
//! The node records, not gossip: they exist in every deployment (gossip needs seeds), and a
//! killed node's record stays until the master ends its epoch, which is when its ranges move.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
