//! Loading a range: check (or claim) ownership, read the snapshot, replay the log, fence it.
//!
//! Fencing writes a `Fence` entry at the first free slot after everything replayed. If an
//! older owner appended in between, the fence finds its slot taken: the new entries are
//! replayed and the fence moves to the next slot. Once the fence is written, every later
//! append of an older owner fails on its slot, so no write it acknowledges can be lost.
//! The fence also reopens a log that a merge entry closed (`core::MergePlan`).

use ampstore_common::error::Error;
use ampstore_common::{Key, NodeId, RangeId, Seq};
use ampstore_store::meta::{self, Owner, RangeDescriptor};
use ampstore_store::snapshot::Snapshot;
use ampstore_store::{Backend, EntryKind, Expect, LogEntry, StoreError};
use bytes::Bytes;

use super::core::{Entry, Memtable, RangeCore};
use super::write_ids::WriteIdTable;
use ampstore_common::write_ids::{ClientFloor, WriteRecord};

const FENCE_ATTEMPTS_MAX: usize = 100;
const CLAIM_ATTEMPTS_MAX: usize = 10;

pub struct Loaded<W> {
    pub core: RangeCore<W>,
    pub owner: Owner,
}

/// Loads the range starting at `start` for `me`. With `claim`, first records `me` as owner
/// when the range has no live owner (no owner, an older epoch of `me`, or an owner whose
/// node record has moved past the owner's epoch).
pub async fn load<W>(
    backend: &Backend,
    range_id: RangeId,
    start: &Key,
    me: Owner,
    claim: bool,
    batch_bytes_max: usize,
) -> Result<Loaded<W>, Error> {
    crate::test_points::fail_times("load:read")?;
    let desc = claim_or_check(backend, range_id, start, &me, claim).await?;
    // Seqs live in 1..=i64::MAX (the stores refuse others); a descriptor saying otherwise is
    // damaged, and must not reach `Seq::next`.
    if let Some(cp) = &desc.checkpoint
        && cp.seq.0 > i64::MAX as u64
    {
        return Err(Error::internal(format!("{range_id}: descriptor checkpoint seq {} is corrupt", cp.seq)));
    }
    let (data, write_ids, checkpoint_seq) = match &desc.checkpoint {
        None => (Memtable::new(), (Vec::new(), Vec::new()), Seq(0)),
        Some(cp) => {
            let blob = backend
                .blobs
                .get(&cp.blob)
                .await?
                .ok_or_else(|| Error::internal(format!("{range_id}: snapshot blob {} is missing", cp.blob)))?;
            let seq = cp.seq;
            let cp = cp.clone();
            let (data, write_ids) = tokio::task::spawn_blocking(move || decode_snapshot(range_id, &cp, &blob))
                .await
                .map_err(|e| Error::internal(format!("snapshot decode task: {e}")))??;
            (data, write_ids, seq)
        }
    };
    let mut core = RangeCore::new(
        range_id,
        desc.range.clone(),
        me.node_id.clone(),
        me.epoch,
        data,
        checkpoint_seq,
        batch_bytes_max,
    )
    .with_write_ids(WriteIdTable::from_records(write_ids.0, write_ids.1, super::write_ids::unix_now_ms()));
    // Writes replayed from the log are remembered as of now: at least as long as needed.
    core.set_clock(super::write_ids::unix_now_ms());
    replay_from(backend, &mut core).await?;
    let fence = LogEntry { kind: EntryKind::Fence, writer: me.node_id.clone(), epoch: me.epoch, payload: Bytes::new() };
    for _ in 0..FENCE_ATTEMPTS_MAX {
        let seq = core.next_seq();
        match backend.log.append(range_id, seq, &fence).await {
            Ok(()) => {
                if let Some(plan) = core.fenced_at(seq) {
                    // Loadable at all means the merge was never recorded (see `MergePlan`).
                    tracing::info!(%range_id, merged = %plan.merged, "the log ended in an unrecorded merge: reopened it");
                }
                tracing::info!(%range_id, %seq, owner = %me.node_id, "range fenced and loaded");
                return Ok(Loaded { core, owner: me });
            }
            // An older owner appended after our read: replay it, fence the next slot.
            Err(StoreError::SlotTaken { .. }) => replay_from(backend, &mut core).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable(format!("{range_id}: could not fence the log after {FENCE_ATTEMPTS_MAX} attempts")))
}

async fn replay_from<W>(backend: &Backend, core: &mut RangeCore<W>) -> Result<(), Error> {
    loop {
        let page = backend.log.read(core.range_id(), core.next_seq(), 1000).await?;
        if page.is_empty() {
            return Ok(());
        }
        for (seq, entry) in &page {
            core.replay(*seq, entry)?;
        }
    }
}

/// The snapshot's data and remembered write ids, once it is verified against its checkpoint.
/// A snapshot's remembered writes and client floors.
type SnapshotWriteIds = (Vec<WriteRecord>, Vec<ClientFloor>);

fn decode_snapshot(
    range_id: RangeId,
    cp: &meta::Checkpoint,
    blob: &[u8],
) -> Result<(Memtable, SnapshotWriteIds), Error> {
    let snap = Snapshot::decode(blob).map_err(|e| Error::internal(format!("{range_id}: snapshot {}: {e}", cp.blob)))?;
    if snap.header.range_id != range_id || snap.header.seq != cp.seq || snap.merkle_root.as_slice() != cp.merkle_root {
        return Err(Error::internal(format!(
            "{range_id}: snapshot {} does not match its checkpoint (range {}, seq {})",
            cp.blob, snap.header.range_id, snap.header.seq
        )));
    }
    let data = snap
        .entries
        .iter()
        .map(|e| Entry::with_expiry(e.key.as_bytes(), &e.value, e.version, e.expires_at_ms))
        .collect();
    Ok((data, (snap.write_ids, snap.write_id_floors)))
}

async fn claim_or_check(
    backend: &Backend,
    range_id: RangeId,
    start: &Key,
    me: &Owner,
    claim: bool,
) -> Result<RangeDescriptor, Error> {
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        let current = meta::get_range(backend.meta.as_ref(), start)
            .await?
            .ok_or_else(|| Error::invalid(format!("no range starts at {start}")))?;
        let desc = current.record;
        if desc.range_id != range_id {
            return Err(Error::invalid(format!("the range at {start} is {}, not {range_id}", desc.range_id)));
        }
        if desc.owner.as_ref() == Some(me) {
            return Ok(desc);
        }
        if !claim {
            return Err(Error::NotOwner { hint: None });
        }
        if let Some(owner) = &desc.owner
            && owner.node_id != me.node_id
            && owner_is_live(backend, owner).await?
        {
            return Err(Error::conflict(format!(
                "{range_id} is owned by {} in epoch {}, which is still current",
                owner.node_id, owner.epoch
            )));
        }
        let mut claimed = desc.clone();
        claimed.owner = Some(me.clone());
        match meta::put_range(backend.meta.as_ref(), &claimed, Expect::Version(current.version)).await {
            Ok(_) => return Ok(claimed),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable(format!("{range_id}: descriptor keeps changing while claiming it")))
}

/// Whether `owner` still holds the range by its node record as stored now (the rule is
/// `common::ownership::owner_epoch_over`).
async fn owner_is_live(backend: &Backend, owner: &Owner) -> Result<bool, Error> {
    let node: &NodeId = &owner.node_id;
    let record = meta::get_node(backend.meta.as_ref(), node).await?;
    Ok(!ampstore_common::ownership::owner_epoch_over(record.as_ref().map(|n| &n.record), owner))
}

/// Clears `me` as the owner of range `range_id` at `start` (after a release). Nothing to do
/// when the descriptor there is another range (a split replaced it) or another owner's.
pub async fn clear_owner(backend: &Backend, range_id: RangeId, start: &Key, me: &Owner) -> Result<(), Error> {
    for _ in 0..CLAIM_ATTEMPTS_MAX {
        let Some(current) = meta::get_range(backend.meta.as_ref(), start).await? else { return Ok(()) };
        if current.record.owner.as_ref() != Some(me) || current.record.range_id != range_id {
            return Ok(());
        }
        let mut desc = current.record;
        desc.owner = None;
        match meta::put_range(backend.meta.as_ref(), &desc, Expect::Version(current.version)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable("descriptor keeps changing while releasing it"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::{Epoch, KeyRange};
    use ampstore_server::config::LocalConfig;
    use ampstore_store::local::LocalStore;
    use ampstore_store::lost_responses::ResponseLosingMeta;

    #[tokio::test]
    async fn owner_clear_whose_response_was_lost_counts_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let me = Owner { node_id: NodeId::new("n1").unwrap(), epoch: Epoch(1) };
        let desc = RangeDescriptor {
            range_id: RangeId(1),
            range: KeyRange::full(),
            generation: 1,
            owner: Some(me.clone()),
            checkpoint: None,
        };
        meta::put_range(b.meta.as_ref(), &desc, Expect::Absent).await.unwrap();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        losing.answer_unavailable_after_next_commits(1);
        clear_owner(&wrapped, RangeId(1), &Key::default(), &me).await.expect("the owner clear whose response was lost");
        assert_eq!(losing.responses_lost(), 1);
        let stored = meta::get_range(b.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
        assert_eq!(stored.record.owner, None);
    }
}
