//! Snapshots and releases: the snapshot desk (one snapshot at a time, callers waiting for a
//! snapshot that covers their writes), and giving the range up (finish the append in flight,
//! snapshot when dirty, clear the owner, stop).

use std::time::Instant;

use ampstore_common::Seq;
use ampstore_common::error::Error;
use ampstore_common::protocol::Reply;

use super::{ClearOutcome, Effect, Phase, RangeMachine, not_owner, reply_all};
use crate::range::snapshot::SnapshotJob;

/// The snapshot running, and who waits for one.
pub(super) struct SnapshotDesk<W> {
    /// The snapshot being written: the log bytes at its seq (the checkpoint's replay bound).
    pub(super) running: Option<SnapshotRun>,
    /// Callers of `Snapshot`, each with the seq its snapshot must cover (applied when it asked).
    pub(super) waiters: Vec<(Seq, W)>,
}

pub(super) struct SnapshotRun {
    log_bytes: u64,
}

impl<W> Default for SnapshotDesk<W> {
    fn default() -> Self {
        SnapshotDesk { running: None, waiters: Vec::new() }
    }
}

impl<W, M> RangeMachine<W, M> {
    /// Starts a snapshot once the range took `snapshot_log_bytes` of log since its
    /// checkpoint, unless one is running (after an append finished or a staged batch was
    /// applied: the two places the log grows).
    pub(super) fn snapshot_if_due(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if self.snapshots.running.is_none() && self.core.log_bytes_since_checkpoint() >= self.cfg.snapshot_log_bytes {
            self.start_snapshot(now, out);
        }
    }

    pub(super) fn start_snapshot(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if self.snapshots.running.is_some() || self.closing() || self.core.split_state().is_some() {
            return;
        }
        let (seq, data, write_ids, log_bytes) = self.core.snapshot_view();
        if seq <= self.core.checkpoint_seq() {
            self.snapshot_done(Ok(seq), now, out);
            return;
        }
        self.snapshots.running = Some(SnapshotRun { log_bytes });
        out.push(Effect::WriteSnapshot(SnapshotJob {
            range_id: self.core.range_id(),
            range: self.core.range().clone(),
            seq,
            data,
            write_ids,
            owner: self.owner.clone(),
        }));
    }

    pub(super) fn snapshot_written(&mut self, result: Result<Seq, Error>, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let Some(run) = self.snapshots.running.take() else {
            self.broken_invariant("a snapshot finished while none was running".into(), out);
            return;
        };
        if let Ok(seq) = &result {
            self.core.on_checkpoint(*seq, run.log_bytes);
        }
        self.snapshot_done(result, now, out);
    }

    fn snapshot_done(&mut self, result: Result<Seq, Error>, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let range_id = self.core.range_id();
        // A snapshot that started before a caller asked may not cover its writes: such callers
        // wait for the next one, which starts at once.
        let (answered, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshots.waiters)
            .into_iter()
            .partition(|(needed, _)| result.as_ref().map_or(true, |seq| seq >= needed));
        for (_, w) in answered {
            out.push(Effect::Reply(w, result.clone().map(|seq| Reply::Snapshotted { range_id, seq })));
        }
        self.snapshots.waiters = later;
        if !self.snapshots.waiters.is_empty() && result.is_ok() && !self.releasing() {
            self.start_snapshot(now, out);
        }
        match result {
            Err(Error::Fenced) => {
                tracing::warn!(range = %range_id, "descriptor names another owner: dropping the range");
                self.fence(None, out);
                return;
            }
            Err(e) => tracing::warn!(range = %range_id, error = %e, "snapshot failed"),
            Ok(_) => {}
        }
        if self.releasing() {
            self.continue_release(now, out);
        }
    }

    pub(super) fn begin_release(&mut self, reply: Option<W>, now: Instant, out: &mut Vec<Effect<W, M>>) {
        match &mut self.phase {
            Phase::MergeClosing { .. } | Phase::MergeAppending { .. } | Phase::MergeClosed => {
                if let Some(w) = reply {
                    out.push(Effect::Reply(
                        w,
                        Err(Error::unavailable("the range is merging; release it once the merge is over")),
                    ));
                }
            }
            Phase::Releasing { waiters, .. } | Phase::Splitting { release: Some(waiters), .. } => waiters.extend(reply),
            Phase::Splitting { release, .. } => {
                // Carried on when the split entry does not go in; answered when the range stops.
                *release = Some(reply.into_iter().collect());
            }
            Phase::Stopped => out.extend(reply.map(|w| Effect::Reply(w, Err(not_owner())))),
            Phase::Serving => {
                self.phase =
                    Phase::Releasing { waiters: reply.into_iter().collect(), snapshot_tried: false, clearing: false };
                reply_all(self.core.refuse_pending(not_owner()), out);
                self.continue_release(now, out);
            }
        }
    }

    /// Goes on with the release once nothing is in flight (called again when things finish).
    pub(super) fn continue_release(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if self.core.append_in_flight() || self.snapshots.running.is_some() || self.core.txn_held().is_some() {
            return;
        }
        let dirty = self.core.is_dirty();
        let Phase::Releasing { waiters, snapshot_tried, clearing } = &mut self.phase else { return };
        if *clearing {
            return;
        }
        if dirty {
            if !*snapshot_tried {
                *snapshot_tried = true;
                self.start_snapshot(now, out);
                return;
            }
            // The snapshot failed: keep serving rather than leave a long log behind silently.
            let err = Error::unavailable("release: the snapshot before release failed");
            out.extend(waiters.drain(..).map(|w| Effect::Reply(w, Err(err.clone()))));
            self.phase = super::Phase::Serving;
            return;
        }
        *clearing = true;
        out.push(Effect::ClearOwner);
    }

    pub(super) fn owner_cleared(&mut self, outcome: ClearOutcome, out: &mut Vec<Effect<W, M>>) {
        let range_id = self.core.range_id();
        let Phase::Releasing { waiters, clearing: true, .. } = &mut self.phase else {
            self.broken_invariant("the owner was cleared while not releasing".into(), out);
            return;
        };
        let waiters = std::mem::take(waiters);
        match outcome {
            ClearOutcome::Cleared | ClearOutcome::NotCurrentInstance => {
                if outcome == ClearOutcome::Cleared {
                    tracing::info!(range = %range_id, "range released");
                } else {
                    tracing::warn!(range = %range_id, "not the range's current instance: stopping without clearing the owner");
                }
                out.extend(waiters.into_iter().map(|w| Effect::Reply(w, Ok(Reply::Released { range_id }))));
                self.stop_serving(out);
            }
            ClearOutcome::Failed(e) => {
                tracing::warn!(range = %range_id, error = %e, "release failed; still serving");
                out.extend(waiters.into_iter().map(|w| Effect::Reply(w, Err(e.clone()))));
                self.phase = Phase::Serving;
            }
        }
    }
}
