//! What a range actor sees of its node: [`RangeEnv`] (settings, the store, liveness,
//! metrics) and [`RangeHost`], the node's side of a range's lifecycle (its directory and
//! the split queue). The node's directory implements `RangeHost`; a range never
//! imports the node's modules, so the node's modules form a DAG above `range`.

use std::sync::Arc;

use ampstore_common::error::{Error, OwnerHint};
use ampstore_common::protocol::Reply;
use ampstore_common::{KeyRange, RangeId, Seq};
use ampstore_server::completions::ConnReply;
use ampstore_server::config::NodeConfig;
use ampstore_server::metrics::Metrics;
use ampstore_store::Backend;
use ampstore_store::meta::Owner;
use tokio::sync::oneshot;

use super::core::{Memtable, SplitPlan};
use super::write_ids::WriteIdTable;
use crate::liveness::Liveness;

/// Where a range sends the answer to a write, snapshot, release or transaction request.
pub enum Responder {
    /// A caller awaiting the answer.
    Once(oneshot::Sender<Result<Reply, Error>>),
    /// A connection's request handed on (`Service::start`): the answer goes straight to the
    /// connection's queue of answers, with no future or channel of its own.
    Conn(ConnReply),
}

impl Responder {
    /// A responder and the receiver its answer comes to.
    pub fn once() -> (Responder, oneshot::Receiver<Result<Reply, Error>>) {
        let (tx, rx) = oneshot::channel();
        (Responder::Once(tx), rx)
    }

    /// Sends the answer; a caller that gave up (deadline) is not an error.
    pub fn send(self, result: Result<Reply, Error>) {
        match self {
            Responder::Once(tx) => {
                let _ = tx.send(result);
            }
            Responder::Conn(reply) => reply.send(result),
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Responder::Once(_) => f.write_str("Responder::Once"),
            Responder::Conn(c) => write!(f, "Responder::{c:?}"),
        }
    }
}

/// The node's resources a range actor uses.
pub struct RangeEnv {
    pub cfg: NodeConfig,
    pub backend: Backend,
    pub liveness: Arc<Liveness>,
    pub metrics: Arc<Metrics>,
    pub host: Arc<dyn RangeHost>,
    pub other_nodes: Arc<crate::other_nodes::OtherNodes>,
}

impl RangeEnv {
    /// Counts one durable batch in the node's metrics (`Effect::BatchApplied`). Here, not
    /// in `actor.rs`, so that the actor's one log append stays its only append-shaped call.
    pub fn count_batch(&self, writes: usize, bytes: usize) {
        self.metrics.log_append(writes, bytes);
    }
}

/// The node's side of a range's lifecycle, called by the range actor.
pub trait RangeHost: Send + Sync + 'static {
    /// Whether `instance` is the instance the node routes `range_id` to (another instance
    /// of the same range, same owner, must not give the range up under it).
    fn routes_to(&self, range_id: RangeId, instance: u64) -> bool;
    /// The range closed its log with a split entry and stopped: its slot answers
    /// `RangeLoading` until the children serve; the split completes off the actor.
    fn split_ready(&self, job: SplitJob);
    /// A broken invariant stopped `instance`: its slot shows `reason`.
    fn failed(&self, range_id: RangeId, instance: u64, range: KeyRange, reason: String);
    /// `instance` stopped serving (released, fenced, its epoch over).
    fn stopped(&self, range_id: RangeId, instance: u64, range: &KeyRange);
    /// Where a range that left this node went (a `NotOwner` hint for requests still coming).
    fn departed(&self, range: &KeyRange, hint: Option<OwnerHint>);
}

/// A split whose entry is in the parent's log: what completing it needs.
pub struct SplitJob {
    pub parent_id: RangeId,
    pub parent_range: KeyRange,
    pub split_seq: Seq,
    pub plan: SplitPlan,
    pub left: Memtable,
    pub right: Memtable,
    /// The parent's remembered write ids: both children get them all.
    pub write_ids: WriteIdTable,
    pub owner: Owner,
}

/// A split job on its way to the node's reshaper, with whom to tell when it is done
/// (`None`: nobody waits; the outcome is logged).
pub struct SplitTask {
    pub job: SplitJob,
    pub done: Option<oneshot::Sender<Result<(), Error>>>,
}

/// A fresh, unique range id, far from the small ids the master gives the first ranges.
pub fn fresh_range_id() -> RangeId {
    RangeId((rand::random::<u64>() >> 2) | (1 << 32))
}

/// Fresh, unique ids for a split's two children.
pub fn child_ids() -> (RangeId, RangeId) {
    (fresh_range_id(), fresh_range_id())
}
