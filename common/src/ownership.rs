//! The ownership and serving rules (DESIGN section 4), written once.
//!
//! A range descriptor names its owner as a node *and an epoch*. The node's meta record says
//! which epoch the node is in and whether the master ended it. Two questions follow, asked by
//! the master (may the range be placed elsewhere?), the loader (may this node claim it?) and
//! the node serving it (may this instance still answer?):
//!
//! - [`owner_epoch_over`]: the owner named in a descriptor no longer holds the range. Only
//!   then may anyone else take it; the next owner fences the log, so an old owner's late
//!   appends fail on their slots.
//! - [`instance_may_serve`]: a loaded instance answers only in the epoch it was loaded in,
//!   and only while the node's own heartbeat is valid (its clock, its margin).
//!
//! Both are pure, over the records as read; the truth tables below are the specification.

use crate::ids::Epoch;
use crate::meta::{NodeRecord, Owner};

/// Whether `owner`'s hold on a range is over, by the owner's node record as last read
/// (`None`: no record, an unknown node).
///
/// Over: the node is unknown; the record moved to a later epoch (the node re-registered, or
/// the master ended the owner's epoch, which writes the next epoch); or the record is at the
/// owner's epoch and marked ended. Not over: the record is at the owner's epoch and live, or
/// at an *earlier* epoch (the reader's view predates the owner's registration: the owner may
/// be live, so the range stays where it is until a newer read says otherwise).
pub fn owner_epoch_over(record: Option<&NodeRecord>, owner: &Owner) -> bool {
    match record {
        None => true,
        Some(r) => r.epoch > owner.epoch || (r.epoch == owner.epoch && r.ended),
    }
}

/// Whether an instance loaded in `instance_epoch` may answer requests, on a node now in
/// `node_epoch` whose heartbeat is `heartbeat_valid` by its own clock.
pub fn instance_may_serve(instance_epoch: Epoch, node_epoch: Epoch, heartbeat_valid: bool) -> bool {
    heartbeat_valid && instance_epoch == node_epoch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn record(epoch: u64, ended: bool) -> NodeRecord {
        NodeRecord { epoch: Epoch(epoch), rvn: 1, rpc_addr: "a:1".into(), liveness_ms: 1000, ended }
    }

    #[test]
    fn an_owner_epoch_is_over_exactly_when_its_record_says_so() {
        let owner = Owner { node_id: NodeId::new("n1").unwrap(), epoch: Epoch(5) };
        // (record epoch, ended) -> over
        let table: [(Option<(u64, bool)>, bool); 7] = [
            (None, true),              // unknown node
            (Some((4, false)), false), // a view older than the owner's registration
            (Some((4, true)), false),  // ... even one that shows an earlier epoch ended
            (Some((5, false)), false), // the owner's epoch, live
            (Some((5, true)), true),   // the owner's epoch, ended by the master
            (Some((6, false)), true),  // the node re-registered
            (Some((6, true)), true),   // the master ended the owner's epoch (it writes the next)
        ];
        for (rec, over) in table {
            let r = rec.map(|(e, ended)| record(e, ended));
            assert_eq!(owner_epoch_over(r.as_ref(), &owner), over, "record {rec:?}");
        }
    }

    #[test]
    fn an_instance_serves_only_in_its_own_epoch_with_a_valid_heartbeat() {
        // (instance epoch, node epoch, heartbeat valid) -> serves
        let table = [
            (5, 5, true, true),
            (5, 5, false, false), // the heartbeat ran out: the master may already have moved it
            (5, 6, true, false),  // loaded in an epoch that has ended
            (5, 6, false, false),
            (6, 5, true, false), // cannot happen (instances are loaded in the node's epoch); refused
        ];
        for (instance, node, valid, serves) in table {
            assert_eq!(instance_may_serve(Epoch(instance), Epoch(node), valid), serves, "{instance} {node} {valid}");
        }
    }
}
