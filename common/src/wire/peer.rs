//! The cluster's internal requests: node to node (a transaction's two phases) and node to
//! master (committing a split or a merge). Only the `Node` role may send them.

use crate::error::Error;
use crate::ids::{Epoch, NodeId, RangeId, Seq};
use crate::key::Key;
use crate::limits::TXN_OPS_MAX;
use crate::meta::Checkpoint;
use crate::txn::{self, TxnCheck, TxnDecision, TxnWrite};
use crate::wire::protocol::{Versioned, WriteId};
use crate::wire::request;

/// The answer to [`TxnPrepare`]: the participant holds the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// With writes, the log slot reserved for the transaction's entry.
    pub seq: Option<Seq>,
    /// The writer and epoch the entry must carry.
    pub writer: NodeId,
    pub epoch: Epoch,
    /// The values of the prepare's `reads`, read while held.
    pub values: Vec<Option<Versioned>>,
    /// The participant committed this transaction already (a retry): nothing is held.
    pub committed: bool,
}

/// The answer to [`SplitRange`]: the two children are recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitDone {
    pub left_id: RangeId,
    pub right_id: RangeId,
}

request! {
    /// Coordinator to participant: check, hold and (with writes) reserve a slot.
    TxnPrepare {
        txn_id: WriteId,
        range_id: RangeId,
        checks: Vec<TxnCheck>,
        writes: Vec<TxnWrite>,
        reads: Vec<Key>,
        hold_ms: u64,
    }
    as "txn_prepare" -> Prepared {
        Reply::TxnPrepared { seq, writer, epoch, values, committed } => Prepared { seq, writer, epoch, values, committed }
    }
    validate {
        txn::validate_hold_ms(*hold_ms)?;
        let ops = checks.len() + writes.len() + reads.len();
        if ops > TXN_OPS_MAX {
            return Err(Error::too_large("transaction checks, writes and reads", ops, TXN_OPS_MAX));
        }
        reads.iter().try_for_each(|k| Key::validate_user_key(k.as_bytes()))?;
        txn::validate_part(checks, writes)
    }
}

request! {
    /// Coordinator to participant: finish a prepared transaction; answers whether its entry
    /// is in the range's log.
    TxnResolve { txn_id: WriteId, range_id: RangeId, seq: Option<Seq>, decision: TxnDecision }
    as "txn_resolve" -> bool { Reply::TxnResolved { committed } => committed }
}

request! {
    /// Node to master: record a split's two children in place of the parent.
    SplitRange {
        parent_id: RangeId,
        parent_start: Key,
        split_key: Key,
        owner_node: NodeId,
        owner_epoch: Epoch,
        left_id: RangeId,
        left_checkpoint: Checkpoint,
        right_id: RangeId,
        right_checkpoint: Checkpoint,
    }
    as "split_range" -> SplitDone { Reply::SplitDone { left_id, right_id } => SplitDone { left_id, right_id } }
    validate {
        // Split keys may lie in the reserved namespace (lists, queues).
        Key::validate_bound(parent_start.as_bytes())?;
        Key::validate_bound(split_key.as_bytes())?;
        if split_key <= parent_start {
            return Err(Error::invalid("split key must be above the range start"));
        }
        Ok(())
    }
}

request! {
    /// Node to master: record a merged range in place of its two parents.
    CommitMerge {
        left_id: RangeId,
        left_start: Key,
        right_id: RangeId,
        right_start: Key,
        owner_node: NodeId,
        owner_epoch: Epoch,
        merged_id: RangeId,
        merged_checkpoint: Checkpoint,
    }
    as "commit_merge" -> RangeId { Reply::MergeDone { merged_id } => merged_id }
    validate {
        Key::validate_bound(left_start.as_bytes())?;
        Key::validate_bound(right_start.as_bytes())?;
        if right_start <= left_start {
            return Err(Error::invalid("the right range must start above the left one"));
        }
        if left_id == right_id || merged_id == left_id || merged_id == right_id {
            return Err(Error::invalid("a merge needs three distinct range ids"));
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
        let txn_id = WriteId::new(3, 4);
        let r = RangeId(2);
        let n = NodeId::new("n1").expect("id");
        let prepared = check(
            TxnPrepare {
                txn_id,
                range_id: r,
                checks: Vec::new(),
                writes: Vec::new(),
                reads: vec![Key::from("a")],
                hold_ms: 10,
            },
            Op::TxnPrepare {
                txn_id,
                range_id: r,
                checks: Vec::new(),
                writes: Vec::new(),
                reads: vec![Key::from("a")],
                hold_ms: 10,
            },
            Reply::TxnPrepared {
                seq: Some(Seq(3)),
                writer: n.clone(),
                epoch: Epoch(1),
                values: vec![None],
                committed: false,
            },
        );
        assert_eq!(prepared.seq, Some(Seq(3)));
        assert!(!prepared.committed);
        let committed = check(
            TxnResolve { txn_id, range_id: r, seq: None, decision: TxnDecision::Commit },
            Op::TxnResolve { txn_id, range_id: r, seq: None, decision: TxnDecision::Commit },
            Reply::TxnResolved { committed: true },
        );
        assert!(committed);
        let cp = |s| Checkpoint { seq: Seq(s), blob: format!("b{s}"), merkle_root: vec![s as u8] };
        let done = check(
            SplitRange {
                parent_id: r,
                parent_start: Key::default(),
                split_key: Key::from("m"),
                owner_node: n.clone(),
                owner_epoch: Epoch(2),
                left_id: RangeId(3),
                left_checkpoint: cp(1),
                right_id: RangeId(4),
                right_checkpoint: cp(2),
            },
            Op::SplitRange {
                parent_id: r,
                parent_start: Key::default(),
                split_key: Key::from("m"),
                owner_node: n.clone(),
                owner_epoch: Epoch(2),
                left_id: RangeId(3),
                left_checkpoint: cp(1),
                right_id: RangeId(4),
                right_checkpoint: cp(2),
            },
            Reply::SplitDone { left_id: RangeId(3), right_id: RangeId(4) },
        );
        assert_eq!(done, SplitDone { left_id: RangeId(3), right_id: RangeId(4) });
        let merged = check(
            CommitMerge {
                left_id: RangeId(3),
                left_start: Key::default(),
                right_id: RangeId(4),
                right_start: Key::from("m"),
                owner_node: n.clone(),
                owner_epoch: Epoch(2),
                merged_id: RangeId(5),
                merged_checkpoint: cp(3),
            },
            Op::CommitMerge {
                left_id: RangeId(3),
                left_start: Key::default(),
                right_id: RangeId(4),
                right_start: Key::from("m"),
                owner_node: n,
                owner_epoch: Epoch(2),
                merged_id: RangeId(5),
                merged_checkpoint: cp(3),
            },
            Reply::MergeDone { merged_id: RangeId(5) },
        );
        assert_eq!(merged, RangeId(5));
    }
}
