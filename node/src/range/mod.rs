//! Range actors: one per loaded range (DESIGN section 5).

pub mod actor;
pub mod batch;
pub mod core;
pub mod load;
pub mod machine;
pub mod merge;
pub mod reshape;
pub mod snapshot;
pub mod split;
pub mod write_ids;

/// Counts one durable batch in the node's metrics (`Effect::BatchApplied`). Outside
/// `actor.rs` so that the actor's one log append stays the only append-shaped call there.
pub(crate) fn count_batch(metrics: &ampstore_common::metrics::Metrics, writes: usize, bytes: usize) {
    metrics.log_append(writes, bytes);
}
