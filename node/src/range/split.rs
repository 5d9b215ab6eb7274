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

use ampstore_client::connection::Connection;
use ampstore_common::error::Error;
use ampstore_common::meta::{self, Owner};
use ampstore_common::protocol::{Op, Reply, Role};
use ampstore_common::{Key, KeyRange, RangeId, Seq};

use super::core::{Memtable, SplitPlan};
use super::snapshot::{self, SnapshotJob};
use crate::shared::NodeShared;

/// How long a split keeps asking for the master's commit before giving up (the parent
/// stays closed; the next load of it retries).
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(120);

/// Test-only crash points (`AMPSTORE_TEST_CRASH_AT=split:<point>`); compiled out of release
/// builds.
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("AMPSTORE_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("ampstore: test crash point {name} reached: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Fresh, unique ids for two children.
pub fn child_ids() -> (RangeId, RangeId) {
    let id = || RangeId((rand::random::<u64>() >> 2) | (1 << 32));
    (id(), id())
}

pub struct SplitJob {
    pub parent_id: RangeId,
    pub parent_range: KeyRange,
    pub split_seq: Seq,
    pub plan: SplitPlan,
    pub left: Memtable,
    pub right: Memtable,
    pub owner: Owner,
}

/// Steps 1-4. Returns once both children serve here (or with the error that stopped it).
pub async fn complete(shared: &Arc<NodeShared>, job: SplitJob) -> Result<(), Error> {
    let SplitJob { parent_id, parent_range, split_seq, plan, left, right, owner } = job;
    let started = std::time::Instant::now();
    crash_point("split:entry");
    let left_range = KeyRange::new(parent_range.start.clone(), Some(plan.split_key.clone()))?;
    let right_range = KeyRange::new(plan.split_key.clone(), parent_range.end.clone())?;
    let (left_cp, left_bytes) = snapshot::store_blob(
        &shared.backend,
        SnapshotJob { range_id: plan.left, range: left_range, seq: split_seq, data: left, owner: owner.clone() },
    )
    .await?;
    crash_point("split:left");
    let (right_cp, right_bytes) = snapshot::store_blob(
        &shared.backend,
        SnapshotJob { range_id: plan.right, range: right_range, seq: split_seq, data: right, owner: owner.clone() },
    )
    .await?;
    crash_point("split:right");
    let op = Op::SplitRange {
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
    if let Err(e) = commit(shared, op).await {
        // Not recorded: give the parent up so the master places it again; its next owner
        // finds the log ending in the split and completes it.
        if let Err(release) = super::load::clear_owner(&shared.backend, parent_id, &parent_range.start, &owner).await {
            tracing::warn!(range = %parent_id, error = %release, "could not give up the unsplit parent");
        }
        return Err(e);
    }
    crash_point("split:commit");
    for (id, start) in [(plan.left, parent_range.start.clone()), (plan.right, plan.split_key.clone())] {
        load_child(shared, id, start).await?;
    }
    tracing::info!(
        parent = %parent_id, left = %plan.left, right = %plan.right, split_key = %plan.split_key,
        left_bytes, right_bytes, ms = started.elapsed().as_millis() as u64, "split complete: children serving"
    );
    Ok(())
}

/// Asks the active master (found through the lease record) to commit, until it answers.
async fn commit(shared: &Arc<NodeShared>, op: Op) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + COMMIT_RETRY_FOR;
    let mut backoff = Duration::from_millis(50);
    loop {
        let result = async {
            let lease = meta::get_lease(shared.backend.meta.as_ref())
                .await?
                .ok_or_else(|| Error::unavailable("no master has ever run"))?;
            let conn = Connection::connect(
                &lease.record.rpc_addr,
                Role::Node,
                shared.node_id.as_str(),
                shared.auth_token.clone(),
            )
            .await?;
            conn.call(op.clone(), Duration::from_secs(10)).await
        }
        .await;
        match result {
            Ok(Reply::SplitDone { .. }) => return Ok(()),
            Ok(other) => return Err(Error::internal(format!("split commit answered {other:?}"))),
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, ?backoff, "split commit not done yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn load_child(shared: &Arc<NodeShared>, id: RangeId, start: Key) -> Result<(), Error> {
    let mut last = None;
    for _ in 0..20 {
        match Box::pin(crate::dispatch::assign(shared, id, start.clone(), false)).await {
            Ok(_) => return Ok(()),
            Err(Error::RangeLoading { .. }) => return Ok(()),
            // The child is no longer ours to load: the master moved it, or it split again
            // under another owner. Whoever owns it serves it.
            Err(e @ (Error::NotOwner { .. } | Error::Invalid { .. } | Error::Conflict { .. })) => {
                tracing::info!(range = %id, error = %e, "split child moved on before it loaded here");
                return Ok(());
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("child did not load")))
}
