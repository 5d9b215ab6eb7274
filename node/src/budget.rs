//! The memory budget: when the ranges a node holds exceed `node.memory_budget_bytes`, the
//! least recently used ones (idle for at least `node.budget_idle_ms`) are snapshotted and
//! released, so the node stays under its budget and the master places them elsewhere when
//! someone asks for them again.

use std::sync::Arc;
use std::time::Duration;

use ampstore_common::RangeId;
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeState, RangeStats};

use crate::shared::NodeShared;

/// How often the node compares its data with its budget.
const BUDGET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Which ranges to release to get `ranges` under `budget_bytes`: least recently used first,
/// only serving ranges idle for at least `idle_min_ms`. Empty when within budget.
pub fn ranges_to_release(ranges: &[RangeStats], budget_bytes: u64, idle_min_ms: u64) -> Vec<RangeId> {
    let mut total: u64 = ranges.iter().map(|r| r.data_bytes).sum();
    if budget_bytes == 0 || total <= budget_bytes {
        return Vec::new();
    }
    let mut candidates: Vec<&RangeStats> =
        ranges.iter().filter(|r| r.state == RangeState::Serving && r.idle_ms >= idle_min_ms).collect();
    candidates.sort_by(|a, b| b.idle_ms.cmp(&a.idle_ms).then(a.range_id.cmp(&b.range_id)));
    let mut out = Vec::new();
    for r in candidates {
        if total <= budget_bytes {
            break;
        }
        total -= r.data_bytes;
        out.push(r.range_id);
    }
    out
}

/// Runs forever: releases ranges while the node is over its budget (when it has one).
pub async fn enforce_loop(shared: Arc<NodeShared>) {
    if shared.cfg.memory_budget_bytes == 0 {
        return;
    }
    let mut tick = tokio::time::interval(BUDGET_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stats = shared.stats().await;
        for range_id in ranges_to_release(&stats.ranges, shared.cfg.memory_budget_bytes, shared.cfg.budget_idle_ms) {
            if let Ok(range) = shared.ranges.serving(range_id) {
                tracing::info!(%range_id, budget = shared.cfg.memory_budget_bytes, "over the memory budget: releasing");
                match range.release().await {
                    Ok(_) | Err(Error::NotOwner { .. }) => {}
                    Err(e) => tracing::warn!(%range_id, error = %e, "release for the memory budget failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::{KeyRange, Seq};

    fn range(id: u64, data_bytes: u64, idle_ms: u64, state: RangeState) -> RangeStats {
        RangeStats {
            range_id: RangeId(id),
            range: KeyRange::full(),
            state,
            keys: 1,
            data_bytes,
            applied_seq: Seq(1),
            checkpoint_seq: Seq(0),
            log_bytes_since_checkpoint: 0,
            error: None,
            idle_ms,
        }
    }

    #[test]
    fn releases_least_recently_used_idle_ranges_until_under_budget() {
        let ranges = vec![
            range(1, 400, 10_000, RangeState::Serving),
            range(2, 400, 50_000, RangeState::Serving),
            range(3, 400, 90_000, RangeState::Loading),
            range(4, 400, 40_000, RangeState::Serving),
            range(5, 400, 100, RangeState::Serving),
        ];
        // 2000 bytes held. At the budget exactly: nothing to do.
        assert!(ranges_to_release(&ranges, 2000, 1000).is_empty());
        // One byte under: the longest idle serving range goes (3 is loading: never).
        assert_eq!(ranges_to_release(&ranges, 1999, 1000), vec![RangeId(2)]);
        assert_eq!(ranges_to_release(&ranges, 1000, 1000), vec![RangeId(2), RangeId(4), RangeId(1)]);
        // Recently used ranges stay even when that leaves the node over budget.
        assert_eq!(ranges_to_release(&ranges, 1, 1000), vec![RangeId(2), RangeId(4), RangeId(1)]);
        assert!(ranges_to_release(&ranges, 0, 0).is_empty(), "0 means no budget");
    }
}
