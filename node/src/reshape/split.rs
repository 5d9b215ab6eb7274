//! Completing a split (DESIGN section 5). The parent's log already ends in a `Split` entry
//! (so the parent takes no more writes, and the plan is fixed); from here:
//!
//! 1. store the left child's snapshot (keys below the split key) at the split seq;
//! 2. store the right child's snapshot;
//! 3. ask the active master to replace the parent with both children (owned by this node)
//!    in one transactional meta update (idempotent);
//! 4. load both children here (fresh logs continuing after the split seq, so versions keep
//!    growing).
//!
//! A crash anywhere leaves the parent's descriptor (until step 3) or both children's (after
//! it); whoever loads the parent next finds the log ending in the split and runs this again
//! with the same plan. Snapshot blobs are put-if-absent and the commit is idempotent, so
//! repeating a step is harmless.

use std::sync::Arc;
use std::time::Duration;

use ampstore_common::KeyRange;
use ampstore_common::error::Error;
use ampstore_common::wire::peer::SplitRange;

use super::commit;
use crate::range::host::SplitJob;
use crate::range::snapshot::{self, SnapshotJob};
use crate::shared::NodeShared;

/// How long a split keeps asking for the master's commit before giving up (the parent
/// stays closed; the next load of it retries).
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(120);

/// Steps 1-4. Returns once both children serve here (or with the error that stopped it).
pub async fn complete(shared: &Arc<NodeShared>, job: SplitJob) -> Result<(), Error> {
    let SplitJob { parent_id, parent_range, split_seq, plan, left, right, write_ids, owner } = job;
    let started = std::time::Instant::now();
    crate::test_points::crash_point("split:entry");
    // Each child remembers the writes routed to its half (and the transactions).
    let (left_ids, right_ids) = write_ids.divide(&plan.split_key, crate::range::write_ids::unix_now_ms());
    let left_range = KeyRange::new(parent_range.start.clone(), Some(plan.split_key.clone()))?;
    let right_range = KeyRange::new(plan.split_key.clone(), parent_range.end.clone())?;
    let (left_cp, left_bytes) = snapshot::store_blob(
        &shared.backend,
        SnapshotJob {
            range_id: plan.left,
            range: left_range,
            seq: split_seq,
            data: left,
            write_ids: left_ids,
            owner: owner.clone(),
        },
    )
    .await?;
    crate::test_points::crash_point("split:left");
    let (right_cp, right_bytes) = snapshot::store_blob(
        &shared.backend,
        SnapshotJob {
            range_id: plan.right,
            range: right_range,
            seq: split_seq,
            data: right,
            write_ids: right_ids,
            owner: owner.clone(),
        },
    )
    .await?;
    crate::test_points::crash_point("split:right");
    let stored_ms = started.elapsed().as_millis() as u64;
    let req = SplitRange {
        parent_id,
        parent_start: parent_range.start.clone(),
        split_key: plan.split_key.clone(),
        owner_node: owner.node_id.clone(),
        owner_epoch: owner.epoch,
        left_id: plan.left,
        left_checkpoint: left_cp,
        right_id: plan.right,
        right_checkpoint: right_cp,
    };
    let committed = commit::ask_master(shared, req, COMMIT_RETRY_FOR).await;
    if let Err(e) = committed {
        // Not recorded: give the parent up so the master places it again; its next owner
        // finds the log ending in the split and completes it.
        if let Err(release) =
            crate::range::load::clear_owner(&shared.backend, parent_id, &parent_range.start, &owner).await
        {
            tracing::warn!(range = %parent_id, error = %release, "could not give up the unsplit parent");
        }
        return Err(e);
    }
    crate::test_points::crash_point("split:commit");
    let committed_ms = started.elapsed().as_millis() as u64;
    let (left_loaded, right_loaded) = tokio::join!(
        commit::load_here(shared, plan.left, parent_range.start.clone()),
        commit::load_here(shared, plan.right, plan.split_key.clone())
    );
    left_loaded?;
    right_loaded?;
    tracing::info!(
        parent = %parent_id, left = %plan.left, right = %plan.right, split_key = %plan.split_key,
        left_bytes, right_bytes, stored_ms, committed_ms, ms = started.elapsed().as_millis() as u64,
        "split complete: children serving"
    );
    Ok(())
}
