//! Splits and merges of this node's ranges (DESIGN section 5), and what they share: asking
//! the active master to commit a routing change, and loading a new range on this node.
//!
//! The reshaper ([`run`]) takes split and merge jobs from one queue: a range actor that
//! closed its log with a split entry, or a load that found a log ending in one, hands the
//! job over (`RangeHost::split_ready`, `Directory::queue`) instead of completing it itself,
//! so no future loads a range that loads a range (no recursion, nothing boxed), and a range
//! never calls up into the node. The master's `Merge` comes in the same way
//! (`Ranges::merge`), so a merge runs to its end even when its caller gives up.

pub mod commit;
pub mod merge;
pub mod split;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::directory::{MergeTask, ReshapeTask};
use crate::range::host::SplitTask;
use crate::shared::NodeShared;

/// Runs every split and merge job that comes in, each in a task of its own (a split loads
/// its children, and a child's log may end in a split again: its job comes back through
/// this queue rather than as a nested future). Runs until the node stops.
pub async fn run(shared: Arc<NodeShared>, mut jobs: mpsc::UnboundedReceiver<ReshapeTask>) {
    while let Some(task) = jobs.recv().await {
        let shared = shared.clone();
        match task {
            ReshapeTask::Split(task) => tokio::spawn(async move {
                let SplitTask { job, done } = *task;
                let parent_id = job.parent_id;
                let result = split::complete(&shared, job).await;
                if let Err(e) = &result {
                    tracing::error!(range = %parent_id, error = %e, "split did not complete; the next load of the range completes it");
                }
                // Only the parent's own slot goes: a child may already hold its start key.
                shared.ranges.forget(parent_id);
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }),
            ReshapeTask::Merge(MergeTask { left_id, right_id, done }) => tokio::spawn(async move {
                let result = merge::run(&shared, left_id, right_id).await;
                if let Err(e) = &result {
                    tracing::warn!(left = %left_id, right = %right_id, error = %e, "merge did not complete");
                }
                let _ = done.send(result);
            }),
        };
    }
}
