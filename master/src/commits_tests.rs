//! What a split or merge commit must satisfy: each refusal, the replay of a committed
//! request, and the exact write of a valid one.

use ampstore_common::error::Error;
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId, Seq};
use ampstore_store::meta::{self, Checkpoint, Owner, PK_RANGE, RangeDescriptor, Versioned};
use ampstore_store::{Expect, MetaOp};

use super::*;

fn owner(node: &str, epoch: u64) -> Owner {
    Owner { node_id: NodeId::new(node).unwrap(), epoch: Epoch(epoch) }
}

fn cp(seq: u64) -> Checkpoint {
    Checkpoint { seq: Seq(seq), blob: format!("blob-{seq}"), merkle_root: vec![1, 2, 3] }
}

fn desc(version: u64, id: u64, start: &str, end: Option<&str>, o: Option<Owner>) -> Versioned<RangeDescriptor> {
    Versioned {
        version,
        record: RangeDescriptor {
            range_id: RangeId(id),
            range: KeyRange::new(Key::from(start), end.map(Key::from)).unwrap(),
            generation: 4,
            owner: o,
            checkpoint: None,
        },
    }
}

/// Split r1 = ["c", "p") owned by n1 in epoch 2 at "g" into r10 and r11.
fn split_req() -> SplitRequest {
    SplitRequest {
        parent_id: RangeId(1),
        parent_start: Key::from("c"),
        split_key: Key::from("g"),
        owner: owner("n1", 2),
        left: (RangeId(10), cp(7)),
        right: (RangeId(11), cp(8)),
    }
}

fn parent() -> Versioned<RangeDescriptor> {
    desc(5, 1, "c", Some("p"), Some(owner("n1", 2)))
}

#[test]
fn a_valid_split_puts_both_children_conditional_on_the_parent_version() {
    let step = split_commit(Some(&parent()), &split_req()).unwrap();
    let SplitStep::Commit(commit) = step else { panic!("expected a commit, got {step:?}") };
    let child = |id, start: &str, end: &str, cp| RangeDescriptor {
        range_id: RangeId(id),
        range: KeyRange::new(Key::from(start), Some(Key::from(end))).unwrap(),
        generation: 5,
        owner: Some(owner("n1", 2)),
        checkpoint: Some(cp),
    };
    assert_eq!(
        commit.ops,
        vec![
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: b"c".to_vec(),
                value: meta::encode(&child(10, "c", "g", cp(7))),
                expect: Expect::Version(5),
            },
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: b"g".to_vec(),
                value: meta::encode(&child(11, "g", "p", cp(8))),
                expect: Expect::Absent,
            },
        ]
    );
    assert_eq!(commit.removed, vec![Key::from("c")]);
    assert_eq!(commit.added, vec![Key::from("c"), Key::from("g")]);
}

#[test]
fn a_split_with_a_stale_owner_epoch_is_refused_as_a_conflict() {
    let mut req = split_req();
    req.owner = owner("n1", 1); // the parent is owned by n1 in epoch 2 now
    let err = split_commit(Some(&parent()), &req).unwrap_err();
    assert_eq!(err, CommitError::NotOwned { range: RangeId(1), node: NodeId::new("n1").unwrap(), epoch: Epoch(1) });
    let wire = Error::from(err);
    assert!(
        matches!(&wire, Error::Conflict { reason, .. } if reason == "r1 is not owned by n1 in epoch e1"),
        "{wire:?}"
    );
    // Another node in the same epoch is refused too.
    req.owner = owner("n2", 2);
    assert!(matches!(split_commit(Some(&parent()), &req), Err(CommitError::NotOwned { .. })));
}

#[test]
fn a_split_of_a_range_that_is_no_longer_the_parent_is_refused() {
    let other = desc(6, 3, "c", Some("p"), Some(owner("n1", 2)));
    let err = split_commit(Some(&other), &split_req()).unwrap_err();
    assert!(matches!(err, CommitError::WrongRange { found: RangeId(3), expected: RangeId(1), .. }), "{err:?}");
    assert!(matches!(Error::from(err), Error::Conflict { .. }));
    let err = split_commit(None, &split_req()).unwrap_err();
    assert_eq!(err, CommitError::NoRange(Key::from("c")));
    assert!(matches!(Error::from(err), Error::Invalid { .. }));
}

#[test]
fn a_split_key_must_lie_strictly_inside_the_parent() {
    for key in ["c", "a", "p", "z"] {
        let mut req = split_req();
        req.split_key = Key::from(key);
        let err = split_commit(Some(&parent()), &req).unwrap_err();
        assert!(matches!(err, CommitError::SplitKeyOutside { .. }), "{key}: {err:?}");
        assert!(matches!(Error::from(err), Error::Invalid { .. }));
    }
}

#[test]
fn a_repeated_split_is_answered_the_same_only_when_both_children_are_in_place() {
    let left = desc(6, 10, "c", Some("g"), Some(owner("n1", 2)));
    assert_eq!(split_commit(Some(&left), &split_req()).unwrap(), SplitStep::Replayed);
    let right = desc(1, 11, "g", Some("p"), Some(owner("n1", 2)));
    assert_eq!(split_replayed(Some(&right), &split_req()), Ok(()));
    let err = split_replayed(None, &split_req()).unwrap_err();
    assert_eq!(err, CommitError::HalfSplit { parent: RangeId(1) });
    assert!(matches!(Error::from(err), Error::Internal { .. }));
    let stranger = desc(1, 12, "g", Some("p"), Some(owner("n1", 2)));
    assert!(split_replayed(Some(&stranger), &split_req()).is_err());
}

/// Merge r4 = ["c", "g") and r5 = ["g", "p"), both on n1 in epoch 2, into r9.
fn merge_req() -> MergeRequest {
    MergeRequest {
        left: (RangeId(4), Key::from("c")),
        right: (RangeId(5), Key::from("g")),
        owner: owner("n1", 2),
        merged: (RangeId(9), cp(3)),
    }
}

fn pair() -> (Versioned<RangeDescriptor>, Versioned<RangeDescriptor>) {
    (desc(7, 4, "c", Some("g"), Some(owner("n1", 2))), desc(8, 5, "g", Some("p"), Some(owner("n1", 2))))
}

#[test]
fn a_valid_merge_puts_the_merged_range_and_deletes_the_right_one() {
    let (l, r) = pair();
    let step = merge_commit(Some(&l), Some(&r), &merge_req()).unwrap();
    let MergeStep::Commit(commit) = step else { panic!("expected a commit, got {step:?}") };
    let merged = RangeDescriptor {
        range_id: RangeId(9),
        range: KeyRange::new(Key::from("c"), Some(Key::from("p"))).unwrap(),
        generation: 5,
        owner: Some(owner("n1", 2)),
        checkpoint: Some(cp(3)),
    };
    assert_eq!(
        commit.ops,
        vec![
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: b"c".to_vec(),
                value: meta::encode(&merged),
                expect: Expect::Version(7)
            },
            MetaOp::Delete { pk: PK_RANGE.into(), sk: b"g".to_vec(), expect: Expect::Version(8) },
        ]
    );
    assert_eq!(commit.removed, vec![Key::from("c"), Key::from("g")]);
    assert_eq!(commit.added, vec![Key::from("c")]);
    assert_eq!(commit.range, merged.range);
}

#[test]
fn a_merge_of_ranges_that_are_not_adjacent_is_refused() {
    let l = desc(7, 4, "c", Some("f"), Some(owner("n1", 2)));
    let (_, r) = pair();
    let err = merge_commit(Some(&l), Some(&r), &merge_req()).unwrap_err();
    assert!(matches!(err, CommitError::NotAdjacent { .. }), "{err:?}");
    assert!(matches!(Error::from(err), Error::Invalid { .. }));
}

#[test]
fn a_merge_needs_both_ranges_owned_by_the_merging_node_in_its_epoch() {
    let (l, mut r) = pair();
    r.record.owner = Some(owner("n1", 1)); // the right one's owner is a stale epoch
    let err = merge_commit(Some(&l), Some(&r), &merge_req()).unwrap_err();
    assert!(matches!(err, CommitError::NotBothOwned { .. }), "{err:?}");
    assert!(matches!(Error::from(err), Error::Conflict { .. }));
    r.record.owner = None;
    assert!(matches!(merge_commit(Some(&l), Some(&r), &merge_req()), Err(CommitError::NotBothOwned { .. })));
}

#[test]
fn a_merge_of_ranges_other_than_the_named_ones_is_refused() {
    let (l, _) = pair();
    let r = desc(8, 6, "g", Some("p"), Some(owner("n1", 2)));
    let err = merge_commit(Some(&l), Some(&r), &merge_req()).unwrap_err();
    assert!(matches!(err, CommitError::WrongPair { found_right: RangeId(6), .. }), "{err:?}");
    assert!(matches!(Error::from(err), Error::Conflict { .. }));
    assert_eq!(merge_commit(Some(&l), None, &merge_req()), Err(CommitError::NoRange(Key::from("g"))));
    assert_eq!(merge_commit(None, None, &merge_req()), Err(CommitError::NoRange(Key::from("c"))));
}

#[test]
fn a_repeated_merge_is_answered_the_same_only_when_the_right_range_is_gone() {
    let merged = desc(9, 9, "c", Some("p"), Some(owner("n1", 2)));
    assert_eq!(merge_commit(Some(&merged), None, &merge_req()), Ok(MergeStep::Done));
    let (_, r) = pair();
    let err = merge_commit(Some(&merged), Some(&r), &merge_req()).unwrap_err();
    assert_eq!(err, CommitError::HalfMerge { merged: RangeId(9), right: RangeId(5) });
    assert!(matches!(Error::from(err), Error::Internal { .. }));
}
