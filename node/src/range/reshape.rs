//! What splits and merges share: test-only crash points, fresh range ids, asking the
//! active master to commit a routing change, and loading a new range on this node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_client::connection::Connection;
use ampstore_common::error::Error;
use ampstore_common::meta;
use ampstore_common::protocol::{Op, Reply, Role};
use ampstore_common::{Key, RangeId};

use crate::shared::NodeShared;

/// Deadline of one commit request to the master.
const COMMIT_CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Test-only crash points (`AMPSTORE_TEST_CRASH_AT=split:<point>` or `merge:<point>`);
/// compiled out of release builds.
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("AMPSTORE_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("ampstore: test crash point {name} reached: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Test-only failure points (`AMPSTORE_TEST_FAIL_ONCE_AT=merge:<point>`): the first time
/// the process reaches the point it returns an `Unavailable` error; compiled out of
/// release builds.
pub fn fail_once(name: &str) -> Result<(), Error> {
    #[cfg(debug_assertions)]
    {
        static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if std::env::var("AMPSTORE_TEST_FAIL_ONCE_AT").is_ok_and(|v| v == name)
            && !FAILED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(point = name, "test failure point reached: failing once");
            return Err(Error::unavailable(format!("test failure point {name}")));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    Ok(())
}

/// Test-only failure points that fail several times (`AMPSTORE_TEST_FAIL_AT=<point>:<times>`):
/// the first `times` times the process reaches the point it returns an `Unavailable` error
/// (a transient store failure); compiled out of release builds.
pub fn fail_times(name: &str) -> Result<(), Error> {
    #[cfg(debug_assertions)]
    {
        static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let times = std::env::var("AMPSTORE_TEST_FAIL_AT").ok().and_then(|v| {
            let (point, times) = v.rsplit_once(':')?;
            (point == name).then(|| times.parse::<u64>().ok()).flatten()
        });
        if let Some(times) = times
            && FAILED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < times
        {
            tracing::warn!(point = name, "test failure point reached: failing");
            return Err(Error::unavailable(format!("test failure point {name}")));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    Ok(())
}

/// Test-only pause points (`AMPSTORE_TEST_PAUSE_AT=<point>:<ms>`): the first time the
/// process reaches the point it waits that long (say, between a durable append and its
/// answer); compiled out of release builds.
pub async fn pause_once(name: &str) {
    #[cfg(debug_assertions)]
    {
        static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let ms = std::env::var("AMPSTORE_TEST_PAUSE_AT").ok().and_then(|v| {
            let (point, ms) = v.rsplit_once(':')?;
            (point == name).then(|| ms.parse::<u64>().ok()).flatten()
        });
        if let Some(ms) = ms
            && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(point = name, ms, "test pause point reached: waiting");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// A fresh range id, far from the small ids the master gives the first ranges.
pub fn fresh_range_id() -> RangeId {
    RangeId((rand::random::<u64>() >> 2) | (1 << 32))
}

/// Asks the active master (found through the lease record) to commit `op`, retrying
/// retryable errors with backoff for up to `retry_for`. Commits are idempotent, so a retry
/// after a lost answer is harmless.
pub async fn ask_master(shared: &Arc<NodeShared>, op: Op, retry_for: Duration) -> Result<Reply, Error> {
    let deadline = Instant::now() + retry_for;
    let mut backoff = Duration::from_millis(50);
    loop {
        let result = async {
            let lease = meta::get_lease(shared.backend.meta.as_ref())
                .await?
                .ok_or_else(|| Error::unavailable("no master has ever run"))?;
            master_conn(shared, &lease.record.rpc_addr).await?.call(op.clone(), COMMIT_CALL_DEADLINE).await
        }
        .await;
        match result {
            Ok(reply) => return Ok(reply),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(op = op.name(), error = %e, ?backoff, "commit not done yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The cached connection to the master at `addr`, or a new one (a burst of splits would
/// otherwise connect once per split).
async fn master_conn(shared: &NodeShared, addr: &str) -> Result<Arc<Connection>, Error> {
    let cached = shared.master_link.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some((a, c)) = cached
        && a == addr
        && !c.is_closed()
    {
        return Ok(c);
    }
    // Split and merge commits are internal operations: the node's role, the admin token.
    let conn =
        Arc::new(Connection::connect(addr, Role::Node, shared.node_id.as_str(), shared.admin_token.clone()).await?);
    *shared.master_link.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr.to_string(), conn.clone()));
    Ok(conn)
}

/// Loads range `id` (starting at `start`, recorded as owned by this node) here. A range
/// that has moved on (the master placed it elsewhere, or it changed shape again) is not
/// an error: whoever owns it serves it.
pub async fn load_here(shared: &Arc<NodeShared>, id: RangeId, start: Key) -> Result<(), Error> {
    let mut last = None;
    for _ in 0..20 {
        match Box::pin(crate::dispatch::assign(shared, id, start.clone(), false)).await {
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
