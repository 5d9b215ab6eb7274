//! The records Ampstore keeps in the meta store, shared by nodes and masters.
//!
//! | partition | sort key | record |
//! |---|---|---|
//! | `master` | `lease` | [`LeaseRecord`]: the active master, its term and a heartbeat nonce |
//! | `node` | node id | [`NodeRecord`]: the node's liveness epoch and a heartbeat nonce |
//! | `range` | start key | [`RangeDescriptor`]: bounds, owner `{node, epoch}`, checkpoint |
//!
//! Records are MessagePack maps, so fields can be added.

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, NodeId, RangeId, Seq, Term};
use crate::key::KeyRange;

pub const PK_MASTER: &str = "master";
pub const SK_LEASE: &[u8] = b"lease";
/// The active master's term, changed only by a takeover; every master write checks it.
pub const SK_TERM: &[u8] = b"term";
pub const PK_NODE: &str = "node";
pub const PK_RANGE: &str = "range";
/// Nodes being drained: sort key node id, record [`DrainRecord`].
pub const PK_DRAIN: &str = "drain";

/// Range id of the first range, created on an empty meta store.
pub const FIRST_RANGE_ID: RangeId = RangeId(1);

/// A node's liveness record. The node rewrites it every heartbeat with a fresh `rvn`,
/// conditional on the version it last wrote; the master declares the node dead by bumping
/// `epoch` after seeing `rvn` unchanged for the liveness duration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub epoch: Epoch,
    pub rvn: u64,
    pub rpc_addr: String,
    /// Milliseconds the node treats a successful heartbeat as valid for (the master waits at
    /// least this long without a change before it bumps the epoch).
    pub liveness_ms: u64,
    /// Set by the master when it ends the epoch: nobody is live in this epoch (the node
    /// registers a new one when it comes back).
    #[serde(default)]
    pub ended: bool,
}

/// The master's term, in its own item so that lease renewals (which rewrite the lease item)
/// never race routing writes (which check this one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    pub term: Term,
    pub holder: NodeId,
}

/// A node being drained: no range is placed on it, and its ranges move off, while its
/// record is in `epoch` (a restart ends the drain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    pub epoch: Epoch,
}

/// The master lease ("noisy tyrant"): the holder rewrites it with a fresh `rvn` every
/// heartbeat; a standby takes over, bumping `term`, only after seeing one `rvn` unchanged
/// for `lease_ms` on its own clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: NodeId,
    pub term: Term,
    pub rvn: u64,
    pub rpc_addr: String,
    pub lease_ms: u64,
}

/// Who serves a range: a node in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub node_id: NodeId,
    pub epoch: Epoch,
}

/// The latest snapshot of a range: the log up to `seq` is in `blob`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: Seq,
    pub blob: String,
    #[serde(with = "serde_bytes")]
    pub merkle_root: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDescriptor {
    pub range_id: RangeId,
    pub range: KeyRange,
    /// Bumped by every change of bounds (split, merge).
    pub generation: u64,
    pub owner: Option<Owner>,
    pub checkpoint: Option<Checkpoint>,
}
