//! The memory budget: when the ranges a node holds (their data and remembered write ids)
//! exceed `node.memory_budget_bytes`, the least recently used ones (idle for at least
//! `node.budget_idle_ms`) are snapshotted and released, so the node stays under its budget
//! and the master places them elsewhere when someone asks for them again.

use std::sync::Arc;
use std::time::Duration;

use ampstore_common::RangeId;
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeState, RangeStats};

use crate::shared::NodeShared;

/// How often the node compares its data with its budget.
const BUDGET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a range counts against the budget: its data and its remembered write ids (right
/// after a load about as many bytes as the data, for `WRITE_ID_RETENTION_MS`).
fn budgeted_bytes(r: &RangeStats) -> u64 {
    r.data_bytes + r.write_id_bytes
}

/// Which ranges to release to get `ranges` under `budget_bytes`: least recently used first,
/// only serving ranges idle for at least `idle_min_ms`. Empty when within budget.
pub fn ranges_to_release(ranges: &[RangeStats], budget_bytes: u64, idle_min_ms: u64) -> Vec<RangeId> {
    let mut total: u64 = ranges.iter().map(budgeted_bytes).sum();
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
        total -= budgeted_bytes(r);
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
            write_id_bytes: 0,
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

    #[test]
    fn remembered_write_ids_count_against_the_budget() {
        // Right after a load a range's write ids are about as many bytes as its data.
        let with_ids = |id, data_bytes, write_id_bytes, idle_ms| RangeStats {
            write_id_bytes,
            ..range(id, data_bytes, idle_ms, RangeState::Serving)
        };
        let ranges = vec![with_ids(1, 400, 400, 10_000), with_ids(2, 400, 0, 50_000)];
        // 1200 bytes held: at the budget exactly, nothing to do.
        assert!(ranges_to_release(&ranges, 1200, 1000).is_empty());
        // Over by one: releasing range 2 (400) brings 1200 to 800, under.
        assert_eq!(ranges_to_release(&ranges, 1199, 1000), vec![RangeId(2)]);
        // Under 800 range 1 (its data and its write ids) goes too.
        assert_eq!(ranges_to_release(&ranges, 799, 1000), vec![RangeId(2), RangeId(1)]);
    }
}
