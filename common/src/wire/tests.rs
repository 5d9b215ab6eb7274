//! The wire's own checks across every request.

use crate::error::Error;
use crate::wire::protocol::{Op, Reply};
use crate::wire::{Call, unexpected};
use crate::wire::{admin, data, peer, routing};

/// The typed request of each operation: a new `Op` variant does not compile here until
/// it has one.
fn typed_name(op: &Op) -> &'static str {
    match op {
        Op::Ping => data::Ping::NAME,
        Op::Get { .. } => data::Get::NAME,
        Op::GetMany { .. } => data::GetMany::NAME,
        Op::Put { .. } => data::Put::NAME,
        Op::PutIfVersion { .. } => data::PutIfVersion::NAME,
        Op::Delete { .. } => data::Delete::NAME,
        Op::DeleteRange { .. } => data::DeleteRange::NAME,
        Op::Scan { .. } => data::Scan::NAME,
        Op::Push { .. } => data::Push::NAME,
        Op::Enqueue { .. } => data::Enqueue::NAME,
        Op::Dequeue { .. } => data::Dequeue::NAME,
        Op::TaskAck { .. } => data::TaskAck::NAME,
        Op::TaskNack { .. } => data::TaskNack::NAME,
        Op::TaskExtend { .. } => data::TaskExtend::NAME,
        Op::Batch { .. } => data::Batch::NAME,
        Op::Txn { .. } => data::Txn::NAME,
        Op::Locate { .. } => routing::Locate::NAME,
        Op::LocateRange { .. } => routing::LocateRange::NAME,
        Op::Drain { .. } => routing::Drain::NAME,
        Op::MasterStatus => routing::MasterStatus::NAME,
        Op::Members => routing::Members::NAME,
        Op::Assign { .. } => admin::Assign::NAME,
        Op::Release { .. } => admin::Release::NAME,
        Op::Snapshot { .. } => admin::Snapshot::NAME,
        Op::Split { .. } => admin::Split::NAME,
        Op::RangeStats => admin::RangeStats::NAME,
        Op::Merge { .. } => admin::Merge::NAME,
        Op::TxnPrepare { .. } => peer::TxnPrepare::NAME,
        Op::TxnResolve { .. } => peer::TxnResolve::NAME,
        Op::SplitRange { .. } => peer::SplitRange::NAME,
        Op::CommitMerge { .. } => peer::CommitMerge::NAME,
        Op::PutWithTtl { .. } => data::PutWithTtl::NAME,
        Op::Expire { .. } => data::Expire::NAME,
        Op::Persist { .. } => data::Persist::NAME,
        Op::Ttl { .. } => data::Ttl::NAME,
        Op::Incr { .. } => data::Incr::NAME,
    }
}

#[test]
fn every_operation_has_a_typed_request_of_its_name() {
    let mut names = std::collections::BTreeSet::new();
    for op in crate::wire::protocol::tests::one_of_each() {
        assert_eq!(typed_name(&op), op.name());
        names.insert(op.name());
    }
    assert_eq!(names.len(), 36, "one of each operation");
}

#[test]
fn a_request_is_validated_as_its_op() {
    let huge =
        data::Put { key: crate::Key::from("k"), value: vec![0; crate::limits::VALUE_BYTES_MAX + 1], write_id: None };
    assert!(matches!(huge.validate(), Err(Error::TooLarge { .. })));
    assert!(data::Put { key: crate::Key::from("k"), value: vec![0; 8], write_id: None }.validate().is_ok());
    assert!(admin::Merge { left_id: crate::RangeId(1), right_id: crate::RangeId(1) }.validate().is_err());
}

#[test]
fn an_op_is_its_own_untyped_call() {
    assert_eq!(Op::Ping.into_op(), Op::Ping);
    assert_eq!(<Op as Call>::reply(Reply::Pong), Ok(Reply::Pong));
    assert_eq!(unexpected("get", &Reply::Pong), Error::internal("get answered with pong"));
}
