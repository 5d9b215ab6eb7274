//! Admin requests: what the active master (placement) or an operator asks of a node.

use crate::error::Error;
use crate::ids::{RangeId, Seq};
use crate::key::Key;
use crate::wire::protocol::NodeStats;
use crate::wire::request;

/// The answer to [`Assign`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub range_id: RangeId,
    /// The sequence the range serves from (its applied end when it loaded).
    pub serving_from: Seq,
}

request! {
    /// Load and serve the range starting at `start` (with `claim`, record this node as its
    /// owner first; tests and tools).
    Assign { range_id: RangeId, start: Key, claim: bool }
    as "assign" -> Assigned {
        Reply::Assigned { range_id, serving_from } => Assigned { range_id, serving_from }
    }
    validate { Ok(Key::validate_bound(start.as_bytes())?) }
}

request! {
    /// Stop serving a range and clear its owner.
    Release { range_id: RangeId } as "release" -> RangeId { Reply::Released { range_id } => range_id }
}

request! {
    /// Snapshot a range now; answers the sequence the snapshot covers.
    Snapshot { range_id: RangeId } as "snapshot" -> Seq { Reply::Snapshotted { seq, .. } => seq }
}

request! {
    /// Split a range at the key that halves its data, as soon as it can.
    Split { range_id: RangeId } as "split" -> () { Reply::Pong => () }
}

request! {
    /// The node's ranges and their state.
    RangeStats as "range_stats" -> NodeStats { Reply::Stats(s) => s }
}

request! {
    /// Merge two adjacent ranges served by this node; answers the merged range's id.
    Merge { left_id: RangeId, right_id: RangeId }
    as "merge" -> RangeId { Reply::MergeDone { merged_id } => merged_id }
    validate {
        if left_id == right_id {
            return Err(Error::invalid("a range cannot merge with itself"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::{Op, Reply};
    use crate::wire::test_util::check;

    #[test]
    fn each_request_sends_the_old_op_and_checks_its_reply() {
        let r = RangeId(4);
        let assigned = check(
            Assign { range_id: r, start: Key::from("a"), claim: true },
            Op::Assign { range_id: r, start: Key::from("a"), claim: true },
            Reply::Assigned { range_id: r, serving_from: Seq(9) },
        );
        assert_eq!(assigned, Assigned { range_id: r, serving_from: Seq(9) });
        assert_eq!(check(Release { range_id: r }, Op::Release { range_id: r }, Reply::Released { range_id: r }), r);
        let seq = check(
            Snapshot { range_id: r },
            Op::Snapshot { range_id: r },
            Reply::Snapshotted { range_id: r, seq: Seq(2) },
        );
        assert_eq!(seq, Seq(2));
        check(Split { range_id: r }, Op::Split { range_id: r }, Reply::Pong);
        let merged = check(
            Merge { left_id: r, right_id: RangeId(5) },
            Op::Merge { left_id: r, right_id: RangeId(5) },
            Reply::MergeDone { merged_id: RangeId(6) },
        );
        assert_eq!(merged, RangeId(6));
        let stats = NodeStats {
            node_id: crate::NodeId::new("n").expect("id"),
            epoch: crate::Epoch(1),
            liveness_ms_left: 0,
            ranges: Vec::new(),
            resident_bytes: 0,
            ops_total: 0,
            memory_budget_bytes: 0,
            split_bytes: 0,
        };
        check(RangeStats, Op::RangeStats, Reply::Stats(stats));
    }
}
