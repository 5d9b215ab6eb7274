//! Conditional meta writes that stay correct when they are retried after a lost response.
//!
//! A write over a network can land while its answer is lost. Whoever retries it (the AWS
//! SDK, inside one `UpdateItem` call, or [`put`] and [`transact`] here after an
//! `Unavailable`) then sends a write whose condition fails against the first attempt's own
//! result. Read naively, that failure says "someone else wrote the item": a node would end
//! its epoch and drop every range, a master would give up its lease.
//!
//! The rule, in this one place: when a conditional write fails its condition, read the item
//! back; if it holds exactly the value this call wrote, the write landed and counts as
//! success, at the version stored. This is sound because every value written through here
//! is one no other writer produces: heartbeats and leases carry a fresh random `rvn`,
//! checkpoints name a blob unique to the owner and seq, owner changes name the owner. A
//! different stored value is someone else's write and stays a failure: the condition is
//! never weakened for it.
//!
//! The read-back is made even when the first attempt itself reports the failed condition:
//! the SDK's retry is invisible to us. Transactions are read back only after an attempt of
//! ours had an unknown outcome: the AWS backend gives each `TransactWriteItems` a request
//! token, so the SDK's own retries of it are idempotent and never fail on their first
//! attempt's result.

use std::time::Duration;

use super::{Expect, MetaOp, MetaStore, StoreError, StoreResult};
use ampstore_common::limits::OWN_WRITE_ATTEMPTS_MAX;

/// Pause before our attempt `attempt + 1` after an unknown outcome: short, because the
/// callers (heartbeats, lease renewals) run on a clock of about a second.
fn pause_after(attempt: u32) -> Duration {
    Duration::from_millis(25 * u64::from(attempt))
}

/// Writes `value` at `(pk, sk)` if `expect` holds, like [`MetaStore::put`], and returns the
/// item's version. A failed condition counts as success when the item holds exactly
/// `value` (an earlier attempt of this call landed); an `Unavailable` attempt is retried up
/// to [`OWN_WRITE_ATTEMPTS_MAX`] attempts in all. `value` must be unique to this call (see the
/// module documentation).
pub async fn put(meta: &dyn MetaStore, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64> {
    let mut attempt = 1;
    loop {
        match meta.put(pk, sk, value, expect.clone()).await {
            Ok(version) => return Ok(version),
            Err(failed @ StoreError::ConditionFailed { .. }) => {
                // A read-back that fails leaves the outcome unknown: its error (say
                // `Unavailable`) is returned, never the condition failure, which would claim
                // someone else wrote.
                return match meta.get(pk, sk).await? {
                    Some(stored) if stored.value == value => Ok(stored.version),
                    _ => Err(failed),
                };
            }
            Err(StoreError::Unavailable(_)) if attempt < OWN_WRITE_ATTEMPTS_MAX => {
                tokio::time::sleep(pause_after(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies `ops` like [`MetaStore::transact`], retrying an `Unavailable` attempt up to
/// [`OWN_WRITE_ATTEMPTS_MAX`] attempts in all. When a retry fails a condition, the
/// transaction counts as applied if every item it puts holds exactly the value it puts (it
/// applies all or nothing, so one landed put means all landed). `ops` must put at least one
/// value unique to this call for that to tell; with no put, the failure stands.
pub async fn transact(meta: &dyn MetaStore, ops: &[MetaOp]) -> StoreResult<()> {
    let mut attempt = 1;
    loop {
        match meta.transact(ops).await {
            Ok(()) => return Ok(()),
            Err(failed @ StoreError::ConditionFailed { .. }) if attempt > 1 => {
                return if holds_every_put(meta, ops).await? { Ok(()) } else { Err(failed) };
            }
            Err(StoreError::Unavailable(_)) if attempt < OWN_WRITE_ATTEMPTS_MAX => {
                tokio::time::sleep(pause_after(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `ops` has at least one put and every item it puts holds exactly that value.
async fn holds_every_put(meta: &dyn MetaStore, ops: &[MetaOp]) -> StoreResult<bool> {
    let mut puts = 0;
    for op in ops {
        if let MetaOp::Put { pk, sk, value, .. } = op {
            puts += 1;
            match meta.get(pk, sk).await? {
                Some(stored) if stored.value == *value => {}
                _ => return Ok(false),
            }
        }
    }
    Ok(puts > 0)
}
