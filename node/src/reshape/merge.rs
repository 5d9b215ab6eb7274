//! Merging two adjacent ranges this node serves (DESIGN section 5, "by the same pattern"
//! as a split). The master picks the pair and sends `Merge`; from here:
//!
//! 1. close the right range's log with a `Merge` entry (writes now get `RangeLoading`);
//! 2. close the left range's log the same way;
//! 3. store the merged range's snapshot: both data sets, at the higher of the two merge
//!    entries' seqs, so versions keep growing in the merged range;
//! 4. ask the active master to record the merged range in place of both, in one
//!    transactional update that requires both parents to be owned by this node in its
//!    epoch (idempotent);
//! 5. load the merged range here and stop both parents.
//!
//! Unlike a split, an unrecorded merge is rolled back, not completed: its two parents may
//! be loaded by different nodes after a crash, and neither could finish it alone. A log
//! closed by a merge entry is reopened by the next `Fence` (a new owner's, or ours when we
//! abandon the merge), which is safe because a range can only be loaded while its
//! descriptor exists, and the commit replaces both descriptors at once and requires our
//! ownership, which any new owner's claim ends. Abandoning gives both ranges up
//! (`clear_owner`, which also makes a late commit fail) and loads them again here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::Reply;
use ampstore_common::wire::peer::CommitMerge;
use ampstore_common::{KeyRange, RangeId, Seq};
use ampstore_store::meta;

use super::commit;
use crate::range::core::MergePlan;
use crate::range::handle::RangeHandle;
use crate::range::machine::MergeClosed;
use crate::range::snapshot::{self, SnapshotJob};
use crate::shared::NodeShared;

/// How long a merge keeps asking for the master's commit before abandoning it (both
/// ranges refuse writes meanwhile, so this is short).
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(10);
/// How long giving up an abandoned merge's ranges keeps retrying.
const ABANDON_RETRY_FOR: Duration = Duration::from_secs(30);

struct Parent {
    id: RangeId,
    range: KeyRange,
    handle: RangeHandle,
}

/// Steps 1-5. Answers `MergeDone` once the merged range serves here.
pub async fn run(shared: &Arc<NodeShared>, left_id: RangeId, right_id: RangeId) -> Result<Reply, Error> {
    let started = Instant::now();
    let left = serving(shared, left_id)?;
    let right = serving(shared, right_id)?;
    if left.range.end.as_ref() != Some(&right.range.start) {
        return Err(Error::invalid(format!("{} and {} are not adjacent", left.range, right.range)));
    }
    let merged_range = KeyRange::new(left.range.start.clone(), right.range.end.clone())?;
    let plan = MergePlan { merged: crate::range::host::fresh_range_id(), left: left_id, right: right_id };
    crate::test_points::crash_point("merge:entry");
    let right_closed = close(&right, &plan).await?;
    crate::test_points::crash_point("merge:right");
    let left_closed = match close(&left, &plan).await {
        Ok(c) => c,
        Err(e) => {
            abandon(shared, &[(&right, &right_closed)], plan.merged).await;
            return Err(e);
        }
    };
    crate::test_points::crash_point("merge:left");
    crate::test_points::pause_once("merge:closed").await;
    let owner = left_closed.owner.clone();
    // Both parents were closed by this node in one epoch (`serving` found both here); were
    // they not, the commit's ownership check would refuse it, but the merged snapshot must
    // not be written under a mixed owner in the first place. Checked in release builds.
    if owner != right_closed.owner {
        abandon(shared, &[(&right, &right_closed), (&left, &left_closed)], plan.merged).await;
        return Err(Error::internal(format!(
            "merge parents closed under different owners ({} epoch {} and {} epoch {})",
            owner.node_id, owner.epoch.0, right_closed.owner.node_id, right_closed.owner.epoch.0
        )));
    }
    let seq: Seq = left_closed.seq.max(right_closed.seq);
    // Disjoint key sets: the union is a concatenation, O(log n) on the persistent maps.
    let data = left_closed.data.clone().union(right_closed.data.clone());
    let keys = data.len();
    // The merged range remembers the write ids of both parents.
    let mut write_ids = left_closed.write_ids.clone();
    write_ids.extend(
        right_closed.write_ids.records(),
        right_closed.write_ids.floors(),
        crate::range::write_ids::unix_now_ms(),
    );
    let stored = snapshot::store_blob(
        &shared.backend,
        SnapshotJob { range_id: plan.merged, range: merged_range.clone(), seq, data, write_ids, owner: owner.clone() },
    )
    .await;
    let (checkpoint, bytes) = match stored {
        Ok(s) => s,
        Err(e) => {
            abandon(shared, &[(&right, &right_closed), (&left, &left_closed)], plan.merged).await;
            return Err(e);
        }
    };
    crate::test_points::crash_point("merge:snapshot");
    let req = CommitMerge {
        left_id,
        left_start: left.range.start.clone(),
        right_id,
        right_start: right.range.start.clone(),
        owner_node: owner.node_id.clone(),
        owner_epoch: owner.epoch,
        merged_id: plan.merged,
        merged_checkpoint: checkpoint,
    };
    let committed = match crate::test_points::fail_once("merge:refused") {
        Err(e) => Err(e),
        Ok(()) => match commit::ask_master(shared, req, COMMIT_RETRY_FOR).await {
            Ok(merged_id) if merged_id == plan.merged => crate::test_points::fail_once("merge:answer-lost"),
            Ok(other) => {
                Err(Error::internal(format!("merge commit answered merged range {other}, not {}", plan.merged)))
            }
            Err(e) => Err(e),
        },
    };
    // After an error the commit may still have landed (its answer lost): then carry on.
    if let Err(e) = committed
        && abandon(shared, &[(&right, &right_closed), (&left, &left_closed)], plan.merged).await != Some(plan.merged)
    {
        return Err(e);
    }
    crate::test_points::crash_point("merge:commit");
    // The parents stop answering before the merged range serves: once it takes a write
    // (a delete across both halves, say), a parent's read would be stale. Their slots answer
    // `RangeLoading` meanwhile.
    for p in [&left, &right] {
        shared.ranges.set_loading(p.id, p.range.clone());
    }
    let loaded = commit::load_here(shared, plan.merged, merged_range.start.clone()).await;
    crate::test_points::pause_once("merge:merged-serving").await;
    // The merge is committed whatever the load did: the parents are obsolete here.
    for p in [&left, &right] {
        shared.ranges.forget(p.id);
        p.handle.merge_end().await;
    }
    loaded?;
    tracing::info!(
        left = %left_id, right = %right_id, merged = %plan.merged, range = %merged_range, keys, bytes,
        ms = started.elapsed().as_millis() as u64, "merge complete: merged range serving"
    );
    Ok(Reply::MergeDone { merged_id: plan.merged })
}

fn serving(shared: &NodeShared, id: RangeId) -> Result<Parent, Error> {
    let (handle, range) = shared.ranges.serving_with_range(id)?;
    Ok(Parent { id, range, handle })
}

async fn close(p: &Parent, plan: &MergePlan) -> Result<MergeClosed, Error> {
    p.handle.merge_close(plan.clone()).await
}

/// Rolls back an unrecorded merge: stops the closed parents, gives them up (after which
/// no commit can land), and loads them again here, where the load's fence reopens their
/// logs. Returns the merged range's id instead when the commit turns out to have landed.
async fn abandon(shared: &Arc<NodeShared>, closed: &[(&Parent, &MergeClosed)], merged: RangeId) -> Option<RangeId> {
    for (p, _) in closed {
        p.handle.merge_end().await;
    }
    for (p, c) in closed {
        let deadline = Instant::now() + ABANDON_RETRY_FOR;
        loop {
            match crate::range::load::clear_owner(&shared.backend, p.id, &p.range.start, &c.owner).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(range = %p.id, error = %e, "giving up a merge parent failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    // The node's heartbeat needs the same store: its epoch ends, and the
                    // master places the range elsewhere.
                    tracing::error!(range = %p.id, error = %e, "could not give up a merge parent");
                    break;
                }
            }
        }
    }
    // Both descriptors are now unowned (or replaced): a commit can no longer land. Did one?
    let left_start = closed.iter().map(|(p, _)| p.range.start.clone()).min()?;
    if let Ok(Some(d)) = meta::get_range(shared.backend.meta.as_ref(), &left_start).await
        && d.record.range_id == merged
    {
        return Some(merged);
    }
    for (p, _) in closed {
        tracing::info!(range = %p.id, "merge abandoned: reloading the range");
        if let Err(e) = shared.ranges.assign(p.id, p.range.start.clone(), true).await {
            tracing::warn!(range = %p.id, error = %e, "reloading a merge parent failed; the master places it");
        }
    }
    None
}
