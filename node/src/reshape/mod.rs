//! Splits and merges of this node's ranges (DESIGN section 5), and what they share: asking
//! the active master to commit a routing change, and loading a new range on this node.
//!
//! The reshaper ([`run`]) takes split jobs from a queue: a range actor that closed its log
//! with a split entry, or a load that found a log ending in one, hands the job over
//! (`RangeHost::split_ready`, `Directory::queue_split`) instead of completing it itself, so
//! no future loads a range that loads a range (no recursion, nothing boxed), and a range
//! never calls up into the node.

pub mod commit;
pub mod merge;
pub mod split;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::range::host::SplitTask;
use crate::shared::NodeShared;

/// Completes every split job that comes in, each in a task of its own (a split loads its
/// children, and a child's log may end in a split again: its job comes back through this
/// queue rather than as a nested future). Runs until the node stops.
pub async fn run(shared: Arc<NodeShared>, mut jobs: mpsc::UnboundedReceiver<SplitTask>) {
    while let Some(SplitTask { job, done }) = jobs.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let parent_id = job.parent_id;
            let result = split::complete(&shared, job).await;
            if let Err(e) = &result {
                tracing::error!(range = %parent_id, error = %e, "split did not complete; the next load of the range completes it");
            }
            // Only the parent's own slot goes: a child may already hold its start key.
            shared.directory.remove(parent_id);
            if let Some(done) = done {
                let _ = done.send(result);
            }
        });
    }
}
