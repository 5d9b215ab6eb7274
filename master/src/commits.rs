//! What a split or merge commit must satisfy against the descriptors in meta, and the
//! transactional write that records it: pure, so every refusal is tested without a store.
//!
//! A node that split (or merged) a range asks the master to record the result. The master
//! reads the descriptors involved, checks them here, and applies the returned `Commit` in
//! one term-checked transaction whose conditions pin the versions it checked. A request
//! repeated after a lost answer finds its own result in place and is answered the same.

use ampstore_common::error::Error;
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId};
use ampstore_store::meta::{self, Checkpoint, Owner, PK_RANGE, RangeDescriptor, Versioned};
use ampstore_store::{Expect, MetaOp};

/// A split to record: the parent at `parent_start` becomes `left` (same start) and `right`
/// (from `split_key`), both owned by the parent's owner.
#[derive(Clone, Debug)]
pub(crate) struct SplitRequest {
    pub(crate) parent_id: RangeId,
    pub(crate) parent_start: Key,
    pub(crate) split_key: Key,
    pub(crate) owner: Owner,
    pub(crate) left: (RangeId, Checkpoint),
    pub(crate) right: (RangeId, Checkpoint),
}

/// A merge to record: the neighbours at `left.1` and `right.1` become `merged` (from the
/// left's start), owned by the node that owns both.
#[derive(Clone, Debug)]
pub(crate) struct MergeRequest {
    pub(crate) left: (RangeId, Key),
    pub(crate) right: (RangeId, Key),
    pub(crate) owner: Owner,
    pub(crate) merged: (RangeId, Checkpoint),
}

/// The meta write of a valid commit, and the routing change it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) ops: Vec<MetaOp>,
    /// Starts of the descriptors that go from the routing table.
    pub(crate) removed: Vec<Key>,
    /// Starts of the descriptors to read back into it.
    pub(crate) added: Vec<Key>,
    /// The new bounds (of the merged range; of the parent for a split).
    pub(crate) range: KeyRange,
}

/// What to do with a split request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SplitStep {
    /// The parent's start already holds the left child: committed before, unless the
    /// right child is missing (check it with [`split_replayed`]).
    Replayed,
    Commit(Commit),
}

/// What to do with a merge request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MergeStep {
    /// Committed already (an earlier attempt whose answer was lost).
    Done,
    Commit(Commit),
}

/// Why a commit is refused. Each maps to the wire error it was always answered with.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum CommitError {
    #[error("no range starts at {0}")]
    NoRange(Key),
    #[error("the range at {start} is {found}, not {expected}")]
    WrongRange { start: Key, found: RangeId, expected: RangeId },
    #[error("the ranges at {left_start} and {right_start} are {found_left} and {found_right}, not {left} and {right}")]
    WrongPair {
        left_start: Key,
        right_start: Key,
        found_left: RangeId,
        found_right: RangeId,
        left: RangeId,
        right: RangeId,
    },
    #[error("{range} is not owned by {node} in epoch {epoch}")]
    NotOwned { range: RangeId, node: NodeId, epoch: Epoch },
    #[error("{left} and {right} are not both owned by {node} in epoch {epoch}")]
    NotBothOwned { left: RangeId, right: RangeId, node: NodeId, epoch: Epoch },
    #[error("split key {key} is not inside {range}")]
    SplitKeyOutside { key: Key, range: KeyRange },
    #[error("{left} and {right} are not adjacent")]
    NotAdjacent { left: KeyRange, right: KeyRange },
    #[error("split of {parent}: left child recorded without the right one")]
    HalfSplit { parent: RangeId },
    #[error("merge into {merged}: recorded with {right} still there")]
    HalfMerge { merged: RangeId, right: RangeId },
    /// Bounds or a generation that cannot be built (a damaged descriptor).
    #[error("{0}")]
    Other(Error),
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Error {
        match e {
            CommitError::NoRange(_) | CommitError::SplitKeyOutside { .. } | CommitError::NotAdjacent { .. } => {
                Error::invalid(e.to_string())
            }
            CommitError::WrongRange { .. }
            | CommitError::WrongPair { .. }
            | CommitError::NotOwned { .. }
            | CommitError::NotBothOwned { .. } => Error::conflict(e.to_string()),
            CommitError::HalfSplit { .. } | CommitError::HalfMerge { .. } => Error::internal(e.to_string()),
            CommitError::Other(e) => e,
        }
    }
}

/// Checks a split against `parent`, the descriptor now at `req.parent_start`: it must be
/// the named parent, owned by `req.owner` (same node, same epoch), and `split_key` must lie
/// strictly inside it. The commit puts the left child over the parent (conditional on the
/// parent's version) and the right child where none is.
pub(crate) fn split_commit(
    parent: Option<&Versioned<RangeDescriptor>>,
    req: &SplitRequest,
) -> Result<SplitStep, CommitError> {
    let parent = parent.ok_or_else(|| CommitError::NoRange(req.parent_start.clone()))?;
    let p = &parent.record;
    if p.range_id == req.left.0 {
        return Ok(SplitStep::Replayed);
    }
    if p.range_id != req.parent_id {
        return Err(CommitError::WrongRange {
            start: req.parent_start.clone(),
            found: p.range_id,
            expected: req.parent_id,
        });
    }
    if p.owner.as_ref() != Some(&req.owner) {
        return Err(CommitError::NotOwned {
            range: req.parent_id,
            node: req.owner.node_id.clone(),
            epoch: req.owner.epoch,
        });
    }
    if !p.range.contains(req.split_key.as_bytes()) || req.split_key == p.range.start {
        return Err(CommitError::SplitKeyOutside { key: req.split_key.clone(), range: p.range.clone() });
    }
    let generation = ampstore_common::ids::checked_increment("range generation", p.generation)
        .map_err(|e| CommitError::Other(e.into()))?;
    let child = |id: RangeId, range: KeyRange, cp: &Checkpoint| RangeDescriptor {
        range_id: id,
        range,
        generation,
        owner: Some(req.owner.clone()),
        checkpoint: Some(cp.clone()),
    };
    let bounds =
        |start: &Key, end: Option<Key>| KeyRange::new(start.clone(), end).map_err(|e| CommitError::Other(e.into()));
    let left = child(req.left.0, bounds(&p.range.start, Some(req.split_key.clone()))?, &req.left.1);
    let right = child(req.right.0, bounds(&req.split_key, p.range.end.clone())?, &req.right.1);
    let ops = vec![
        MetaOp::Put {
            pk: PK_RANGE.into(),
            sk: req.parent_start.as_bytes().to_vec(),
            value: meta::encode(&left),
            expect: Expect::Version(parent.version),
        },
        MetaOp::Put {
            pk: PK_RANGE.into(),
            sk: req.split_key.as_bytes().to_vec(),
            value: meta::encode(&right),
            expect: Expect::Absent,
        },
    ];
    Ok(SplitStep::Commit(Commit {
        ops,
        removed: vec![req.parent_start.clone()],
        added: vec![req.parent_start.clone(), req.split_key.clone()],
        range: p.range.clone(),
    }))
}

/// A replayed split (`SplitStep::Replayed`) is complete when `right`, the descriptor now at
/// the split key, is the right child.
pub(crate) fn split_replayed(
    right: Option<&Versioned<RangeDescriptor>>,
    req: &SplitRequest,
) -> Result<(), CommitError> {
    match right {
        Some(r) if r.record.range_id == req.right.0 => Ok(()),
        _ => Err(CommitError::HalfSplit { parent: req.parent_id }),
    }
}

/// Checks a merge against `left` and `right`, the descriptors now at the two starts: they
/// must be the named ranges, adjacent, and both owned by `req.owner` (same node, same
/// epoch). The commit puts the merged range over the left one and deletes the right one,
/// each conditional on the version checked.
pub(crate) fn merge_commit(
    left: Option<&Versioned<RangeDescriptor>>,
    right: Option<&Versioned<RangeDescriptor>>,
    req: &MergeRequest,
) -> Result<MergeStep, CommitError> {
    let (left_id, left_start) = &req.left;
    let (right_id, right_start) = &req.right;
    let (merged_id, checkpoint) = &req.merged;
    let left = left.ok_or_else(|| CommitError::NoRange(left_start.clone()))?;
    if left.record.range_id == *merged_id {
        return match right {
            None => Ok(MergeStep::Done),
            Some(_) => Err(CommitError::HalfMerge { merged: *merged_id, right: *right_id }),
        };
    }
    let right = right.ok_or_else(|| CommitError::NoRange(right_start.clone()))?;
    let (l, r) = (&left.record, &right.record);
    if l.range_id != *left_id || r.range_id != *right_id {
        return Err(CommitError::WrongPair {
            left_start: left_start.clone(),
            right_start: right_start.clone(),
            found_left: l.range_id,
            found_right: r.range_id,
            left: *left_id,
            right: *right_id,
        });
    }
    if l.range.end.as_ref() != Some(&r.range.start) {
        return Err(CommitError::NotAdjacent { left: l.range.clone(), right: r.range.clone() });
    }
    if l.owner.as_ref() != Some(&req.owner) || r.owner.as_ref() != Some(&req.owner) {
        return Err(CommitError::NotBothOwned {
            left: *left_id,
            right: *right_id,
            node: req.owner.node_id.clone(),
            epoch: req.owner.epoch,
        });
    }
    let range = KeyRange::new(l.range.start.clone(), r.range.end.clone()).map_err(|e| CommitError::Other(e.into()))?;
    let generation = ampstore_common::ids::checked_increment("range generation", l.generation.max(r.generation))
        .map_err(|e| CommitError::Other(e.into()))?;
    let merged = RangeDescriptor {
        range_id: *merged_id,
        range,
        generation,
        owner: Some(req.owner.clone()),
        checkpoint: Some(checkpoint.clone()),
    };
    let ops = vec![
        MetaOp::Put {
            pk: PK_RANGE.into(),
            sk: left_start.as_bytes().to_vec(),
            value: meta::encode(&merged),
            expect: Expect::Version(left.version),
        },
        MetaOp::Delete {
            pk: PK_RANGE.into(),
            sk: right_start.as_bytes().to_vec(),
            expect: Expect::Version(right.version),
        },
    ];
    Ok(MergeStep::Commit(Commit {
        ops,
        removed: vec![left_start.clone(), right_start.clone()],
        added: vec![left_start.clone()],
        range: merged.range,
    }))
}

#[cfg(test)]
#[path = "commits_tests.rs"]
mod tests;
