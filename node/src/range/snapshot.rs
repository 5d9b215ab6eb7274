//! Writing a snapshot of a range and making it the checkpoint.
//!
//! 1. Encode the frozen view (an O(1) clone of the memtable) into a snapshot file, off the
//!    actor's thread.
//! 2. Store it as a new blob (`put_if_absent`; names never repeat).
//! 3. Update the range descriptor's checkpoint, conditional on its version and only while
//!    it still names this owner.
//! 4. Truncate the log below the checkpoint seq and delete the previous snapshot blob.
//!
//! A crash between steps leaves either an unused blob or an untruncated log: both harmless.

use ampstore_common::error::Error;
use ampstore_common::{Key, KeyRange, RangeId, Seq};
use ampstore_store::meta::{self, Checkpoint, Owner};
use ampstore_store::snapshot::{SnapshotHeader, SnapshotWriter};
use ampstore_store::{Backend, Expect, StoreError};
use bytes::Bytes;

use super::core::Memtable;
use super::write_ids::WriteIdTable;

pub struct SnapshotJob {
    pub range_id: RangeId,
    pub range: KeyRange,
    pub seq: Seq,
    pub data: Memtable,
    /// The write ids remembered at `seq`: they travel in the snapshot.
    pub write_ids: WriteIdTable,
    pub owner: Owner,
}

pub fn blob_name(range_id: RangeId, seq: Seq, owner: &Owner) -> String {
    format!("ranges/{:016x}/{:020}-{}-e{}.snap", range_id.0, seq.0, owner.node_id, owner.epoch.0)
}

use ampstore_common::clock::unix_now_ms as now_unix_ms;

/// Runs the whole procedure; returns the new checkpoint and the file size.
pub async fn write(backend: &Backend, job: SnapshotJob) -> Result<(Checkpoint, usize), Error> {
    let (range_id, seq, owner, start) = (job.range_id, job.seq, job.owner.clone(), job.range.start.clone());
    let (checkpoint, size) = store_blob(backend, job).await?;
    let previous = set_checkpoint(backend, range_id, &start, &owner, &checkpoint).await?;
    if let Err(e) = backend.log.truncate(range_id, seq).await {
        tracing::warn!(%range_id, %seq, error = %e, "log truncation after checkpoint failed; retried next time");
    }
    if let Some(prev) = previous
        && prev.blob != checkpoint.blob
        && let Err(e) = backend.blobs.delete(&prev.blob).await
    {
        tracing::warn!(%range_id, blob = %prev.blob, error = %e, "old snapshot blob not deleted");
    }
    Ok((checkpoint, size))
}

/// Steps 1 and 2: encodes the view and stores it as a blob; returns the checkpoint it makes
/// (not yet recorded anywhere) and the file size. Splits use it for the children.
pub async fn store_blob(backend: &Backend, job: SnapshotJob) -> Result<(Checkpoint, usize), Error> {
    let SnapshotJob { range_id, range, seq, data, write_ids, owner } = job;
    let header = SnapshotHeader { range_id, range, seq, created_unix_ms: now_unix_ms() };
    let (bytes, root) = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, [u8; 32]), Error> {
        let mut w = SnapshotWriter::new(header)?;
        for e in data.iter() {
            w.push_expiring(e.key(), e.value(), e.version(), e.expires_at_ms())?;
        }
        w.set_write_ids(write_ids.records(), write_ids.floors())?;
        Ok(w.finish_with_root())
    })
    .await
    .map_err(|e| Error::internal(format!("snapshot encode task: {e}")))??;
    let size = bytes.len();
    let name = blob_name(range_id, seq, &owner);
    let bytes = Bytes::from(bytes);
    match backend.blobs.put_if_absent(&name, bytes).await {
        Ok(()) => {}
        // Ours from an earlier attempt (a split or merge repeated by the same owner, or a
        // lost answer): fine if it holds the same data (its header's creation time differs).
        Err(StoreError::AlreadyExists { .. }) => {
            let existing =
                backend.blobs.get(&name).await?.ok_or_else(|| Error::unavailable("snapshot blob vanished"))?;
            let same = tokio::task::spawn_blocking(move || {
                ampstore_store::snapshot::Snapshot::decode(&existing)
                    .is_ok_and(|s| s.merkle_root == root && s.header.seq == seq && s.header.range_id == range_id)
            })
            .await
            .unwrap_or(false);
            if !same {
                return Err(Error::conflict(format!("snapshot blob {name} exists with other data")));
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok((Checkpoint { seq, blob: name, merkle_root: root.to_vec() }, size))
}

/// Records `checkpoint` in the descriptor if it still names `owner` and is newer than what
/// is there. Returns the checkpoint it replaced.
async fn set_checkpoint(
    backend: &Backend,
    range_id: RangeId,
    start: &Key,
    owner: &Owner,
    checkpoint: &Checkpoint,
) -> Result<Option<Checkpoint>, Error> {
    for _ in 0..10 {
        let current = meta::get_range(backend.meta.as_ref(), start)
            .await?
            .ok_or_else(|| Error::internal(format!("range descriptor at {start} vanished")))?;
        // Another owner, or another range at this start (a split replaced us): not ours.
        if current.record.owner.as_ref() != Some(owner) || current.record.range_id != range_id {
            return Err(Error::Fenced);
        }
        if current.record.checkpoint.as_ref().is_some_and(|c| c.seq >= checkpoint.seq) {
            return Ok(None);
        }
        let mut desc = current.record.clone();
        let previous = desc.checkpoint.replace(checkpoint.clone());
        match meta::put_range(backend.meta.as_ref(), &desc, Expect::Version(current.version)).await {
            Ok(_) => return Ok(previous),
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::unavailable("range descriptor keeps changing while checkpointing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::{Epoch, NodeId};
    use ampstore_server::config::LocalConfig;
    use ampstore_store::local::LocalStore;
    use ampstore_store::lost_responses::ResponseLosingMeta;
    use ampstore_store::meta::RangeDescriptor;

    #[tokio::test]
    async fn checkpoint_whose_response_was_lost_counts_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let owner = Owner { node_id: NodeId::new("n1").unwrap(), epoch: Epoch(1) };
        let range_id = RangeId(1);
        let desc = RangeDescriptor {
            range_id,
            range: KeyRange::full(),
            generation: 1,
            owner: Some(owner.clone()),
            checkpoint: None,
        };
        meta::put_range(b.meta.as_ref(), &desc, Expect::Absent).await.unwrap();
        let job = |seq| SnapshotJob {
            range_id,
            range: KeyRange::full(),
            seq: Seq(seq),
            data: Default::default(),
            write_ids: Default::default(),
            owner: owner.clone(),
        };
        let (first, _) = write(&b, job(5)).await.unwrap();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);

        losing.answer_unavailable_after_next_commits(1);
        let (second, _) = write(&wrapped, job(9)).await.expect("the checkpoint whose response was lost");
        let stored = meta::get_range(b.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
        assert_eq!(stored.record.checkpoint.as_ref(), Some(&second));
        assert_eq!(b.blobs.get(&first.blob).await.unwrap(), None, "the snapshot it replaced is deleted");

        losing.resend_after_next_commits(1);
        let (third, _) = write(&wrapped, job(12)).await.expect("the checkpoint resent after a lost response");
        let stored = meta::get_range(b.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
        assert_eq!(stored.record.checkpoint.as_ref(), Some(&third));
        assert_eq!(b.blobs.get(&second.blob).await.unwrap(), None, "the snapshot it replaced is deleted");
        assert_eq!(losing.responses_lost(), 2);
    }
}
