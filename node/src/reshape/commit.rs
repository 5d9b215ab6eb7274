//! What splits and merges share: asking the active master to commit a routing change, and
//! loading a new range on this node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::wire::Call;
use ampstore_common::{Key, RangeId};
use ampstore_store::meta;

use crate::shared::NodeShared;

/// Deadline of one commit request to the master.
const COMMIT_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Asks the active master (found through the lease record) to commit `req`, retrying
/// retryable errors with backoff for up to `retry_for`. Commits are idempotent, so a retry
/// after a lost answer is harmless. The connection comes from the node's pool (role `Node`,
/// the admin token), so a burst of splits connects once.
pub async fn ask_master<C: Call>(shared: &Arc<NodeShared>, req: C, retry_for: Duration) -> Result<C::Reply, Error> {
    let op = req.into_op();
    let deadline = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(50);
    loop {
        let result = async {
            let lease = meta::get_lease(shared.backend.meta.as_ref())
                .await?
                .ok_or_else(|| Error::unavailable("no master has ever run"))?;
            shared.pool.call(&lease.record.rpc_addr, op.clone(), COMMIT_CALL_DEADLINE).await
        }
        .await;
        match result {
            Ok(reply) => return C::reply(reply),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(op = op.name(), error = %e, ?backoff, "commit not done yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Loads range `id` (starting at `start`, recorded as owned by this node) here. A range
/// that has moved on (the master placed it elsewhere, or it changed shape again) is not
/// an error: whoever owns it serves it.
pub async fn load_here(shared: &Arc<NodeShared>, id: RangeId, start: Key) -> Result<(), Error> {
    let mut last = None;
    for _ in 0..20 {
        match shared.ranges.assign(id, start.clone(), false).await {
            Ok(_) => return Ok(()),
            Err(Error::RangeLoading { .. }) => return Ok(()),
            Err(e @ (Error::NotOwner { .. } | Error::Invalid { .. } | Error::Conflict { .. })) => {
                tracing::info!(range = %id, error = %e, "new range moved on before it loaded here");
                return Ok(());
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::internal("range did not load")))
}
