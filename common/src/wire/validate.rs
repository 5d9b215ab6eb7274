//! `Op::validate`: the checks of every operation, by handing each variant's fields to its
//! request struct's own checks (`validate_fields` in `data`, `routing`, `admin`, `peer`).
//! Apart from `protocol` so that the messages do not depend on the requests built on them.

use crate::error::Error;
use crate::wire::protocol::Op;
use crate::wire::{admin, data, peer, routing};

impl Op {
    /// Checks every limit of `common::limits` that applies to this operation. Both the
    /// client (before sending) and the server (before acting) call it.
    ///
    /// The checks are each request's own (`validate_fields` of its struct in `data`,
    /// `routing`, `admin` or `peer`); this only hands the variant's fields to them, so a
    /// typed request and the `Op` it becomes are refused alike.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Op::Ping => data::Ping::validate_fields(),
            Op::Get { key } => data::Get::validate_fields(key),
            Op::GetMany { keys } => data::GetMany::validate_fields(keys),
            Op::Put { key, value, write_id } => data::Put::validate_fields(key, value, write_id),
            Op::PutIfVersion { key, value, expected, write_id } => {
                data::PutIfVersion::validate_fields(key, value, expected, write_id)
            }
            Op::Delete { key, write_id } => data::Delete::validate_fields(key, write_id),
            Op::DeleteRange { start, end, write_id } => data::DeleteRange::validate_fields(start, end, write_id),
            Op::Scan { start, end, limit, reverse } => data::Scan::validate_fields(start, end, limit, reverse),
            Op::Push { key, element, push_id } => data::Push::validate_fields(key, element, push_id),
            Op::Enqueue { queue, shard, task_id, payload } => {
                data::Enqueue::validate_fields(queue, shard, task_id, payload)
            }
            Op::Dequeue { queue, shard, start, max, visibility_ms } => {
                data::Dequeue::validate_fields(queue, shard, start, max, visibility_ms)
            }
            Op::TaskAck { queue, task } => data::TaskAck::validate_fields(queue, task),
            Op::TaskNack { queue, task } => data::TaskNack::validate_fields(queue, task),
            Op::TaskExtend { queue, task, visibility_ms } => {
                data::TaskExtend::validate_fields(queue, task, visibility_ms)
            }
            Op::Batch { ops } => data::Batch::validate_fields(ops),
            Op::Txn { txn_id, parts, hold_ms } => data::Txn::validate_fields(txn_id, parts, hold_ms),
            Op::Locate { key } => routing::Locate::validate_fields(key),
            Op::LocateRange { start, end } => routing::LocateRange::validate_fields(start, end),
            Op::Drain { node_id, undo } => routing::Drain::validate_fields(node_id, undo),
            Op::MasterStatus => routing::MasterStatus::validate_fields(),
            Op::Members => routing::Members::validate_fields(),
            Op::Assign { range_id, start, claim } => admin::Assign::validate_fields(range_id, start, claim),
            Op::Release { range_id } => admin::Release::validate_fields(range_id),
            Op::Snapshot { range_id } => admin::Snapshot::validate_fields(range_id),
            Op::Split { range_id } => admin::Split::validate_fields(range_id),
            Op::RangeStats => admin::RangeStats::validate_fields(),
            Op::Merge { left_id, right_id } => admin::Merge::validate_fields(left_id, right_id),
            Op::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms } => {
                peer::TxnPrepare::validate_fields(txn_id, range_id, checks, writes, reads, hold_ms)
            }
            Op::TxnResolve { txn_id, range_id, seq, decision } => {
                peer::TxnResolve::validate_fields(txn_id, range_id, seq, decision)
            }
            Op::PutWithTtl { key, value, ttl_ms, write_id } => {
                data::PutWithTtl::validate_fields(key, value, ttl_ms, write_id)
            }
            Op::Expire { key, ttl_ms, when, write_id } => data::Expire::validate_fields(key, ttl_ms, when, write_id),
            Op::Persist { key, write_id } => data::Persist::validate_fields(key, write_id),
            Op::Ttl { key } => data::Ttl::validate_fields(key),
            Op::Incr { key, by, write_id } => data::Incr::validate_fields(key, by, write_id),
            Op::SplitRange {
                parent_id,
                parent_start,
                split_key,
                owner_node,
                owner_epoch,
                left_id,
                left_checkpoint,
                right_id,
                right_checkpoint,
            } => peer::SplitRange::validate_fields(
                parent_id,
                parent_start,
                split_key,
                owner_node,
                owner_epoch,
                left_id,
                left_checkpoint,
                right_id,
                right_checkpoint,
            ),
            Op::CommitMerge {
                left_id,
                left_start,
                right_id,
                right_start,
                owner_node,
                owner_epoch,
                merged_id,
                merged_checkpoint,
            } => peer::CommitMerge::validate_fields(
                left_id,
                left_start,
                right_id,
                right_start,
                owner_node,
                owner_epoch,
                merged_id,
                merged_checkpoint,
            ),
        }
    }
}
