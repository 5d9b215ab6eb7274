//! Closing the log: a split (the split entry, then the children's data goes to the split
//! procedure and the range stops) and a merge close (the merge entry after the append in
//! flight, then the data goes to the merging node; the range waits for `MergeEnd`).

use std::time::{Duration, Instant};

use ampstore_common::error::Error;

use super::{
    Admission, AppendResult, Effect, MergeClosed, Phase, Purpose, RangeMachine, SPLIT_RETRY_MS, StopHow, not_owner,
    reply_all,
};
use crate::range::core::{MergePlan, SplitPlan};
use crate::range::host::SplitJob;
use ampstore_common::Seq;

impl<W, M> RangeMachine<W, M> {
    // ----- split -----

    /// Over the split size, or hot for long enough, or asked for, with nothing else going on.
    pub(super) fn should_split(&self, now: Instant) -> bool {
        self.split_due(now) && self.may_split()
    }

    /// The range is big or hot enough to split, or a split was asked for.
    pub(super) fn split_due(&self, now: Instant) -> bool {
        let big = self.cfg.split_bytes > 0 && self.core.data_bytes() > self.cfg.split_bytes;
        let hot_for = Duration::from_millis(self.cfg.hot_split_ms);
        let hot = self.heat.hot_since.is_some_and(|t| now.saturating_duration_since(t) >= hot_for);
        big || hot || self.heat.split_requested
    }

    /// Nothing else going on that a split would disturb.
    pub(super) fn may_split(&self) -> bool {
        matches!(self.phase, Phase::Serving)
            && self.core.txn_held().is_none()
            && self.txns.waiting.is_empty()
            && self.snapshots.running.is_none()
            && !self.core.append_in_flight()
            && self.core.split_state().is_none()
    }

    /// Closes the log with a split entry; once it is in, the children's data goes to the
    /// split procedure and the range stops (requests get `RangeLoading` until the children serve).
    pub(super) fn start_split(&mut self, out: &mut Vec<Effect<W, M>>) {
        self.heat.split_requested = false;
        let Some(split_key) = self.core.split_key() else { return };
        let (left, right) = (self.cfg.child_ids)();
        let plan = SplitPlan { split_key, left, right };
        reply_all(self.core.refuse_pending(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }), out);
        let (seq, entry) = self.core.split_entry(&plan);
        tracing::info!(range = %self.core.range_id(), %seq, split_key = %plan.split_key, bytes = self.core.data_bytes(), "splitting");
        self.phase = Phase::Splitting { plan, release: None };
        out.push(Effect::Append { seq, entry, purpose: Purpose::Split });
    }

    pub(super) fn split_appended(&mut self, seq: Seq, result: AppendResult, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let Phase::Splitting { plan, release } = std::mem::replace(&mut self.phase, Phase::Serving) else {
            self.broken_invariant(format!("a split entry at {seq} was appended while not splitting"), out);
            return;
        };
        if let AppendResult::Refused(e) | AppendResult::Failed(e) = result {
            // Not closed: serve on (split again after the next write); a release that
            // waited for the split goes on now.
            tracing::warn!(range = %self.core.range_id(), error = %e, "split entry not appended");
            if let Some(waiters) = release {
                self.phase = Phase::Releasing { waiters, snapshot_tried: false, clearing: false };
                self.continue_release(now, out);
            }
            return;
        }
        self.phase = Phase::Splitting { plan: plan.clone(), release };
        self.core.on_split_appended(seq, plan.clone());
        if self.stop_if_broken(out) {
            return;
        }
        let (left, right) = self.core.divide(&plan.split_key);
        // Both children remember every write id of the parent (an O(1) clone each): a retry
        // of a parent's write reaches whichever child holds its key.
        let job = SplitJob {
            parent_id: self.core.range_id(),
            parent_range: self.core.range().clone(),
            split_seq: seq,
            plan,
            left,
            right,
            write_ids: self.core.write_ids().clone(),
            owner: self.owner.clone(),
        };
        // A release that waited learns the range is gone here (the children serve elsewhere
        // in the directory).
        if let Phase::Splitting { release: Some(waiters), .. } = &mut self.phase {
            out.extend(waiters.drain(..).map(|w| Effect::Reply(w, Err(not_owner()))));
        }
        self.phase = Phase::Stopped;
        out.push(Effect::Split(job));
        out.push(Effect::Stop(StopHow::Split));
    }

    // ----- merge -----

    pub(super) fn merge_close(&mut self, plan: MergePlan, reply: M, admission: Admission, out: &mut Vec<Effect<W, M>>) {
        if let Err(e) = self.may_serve(admission) {
            out.push(Effect::ReplyMerge(reply, Err(e)));
            return;
        }
        if !matches!(self.phase, Phase::Serving)
            || self.snapshots.running.is_some()
            || self.core.split_state().is_some()
            || self.core.txn_held().is_some()
            || !self.txns.waiting.is_empty()
        {
            out.push(Effect::ReplyMerge(
                reply,
                Err(Error::unavailable("the range is busy (splitting, merging, snapshotting or in a transaction)")),
            ));
            return;
        }
        reply_all(self.core.refuse_pending(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }), out);
        self.phase = Phase::MergeClosing { plan, reply };
        self.start_merge_entry(out);
    }

    /// Appends the merge entry once nothing is in flight (called again when it finishes).
    pub(super) fn start_merge_entry(&mut self, out: &mut Vec<Effect<W, M>>) {
        if self.core.append_in_flight() {
            return;
        }
        let Phase::MergeClosing { plan, reply } = std::mem::replace(&mut self.phase, Phase::Serving) else { return };
        let (seq, entry) = self.core.merge_entry(&plan);
        self.phase = Phase::MergeAppending { plan, reply };
        out.push(Effect::Append { seq, entry, purpose: Purpose::Merge });
    }

    pub(super) fn merge_appended(&mut self, seq: Seq, result: AppendResult, out: &mut Vec<Effect<W, M>>) {
        let Phase::MergeAppending { plan, reply } = std::mem::replace(&mut self.phase, Phase::Serving) else {
            self.broken_invariant(format!("a merge entry at {seq} was appended while not merging"), out);
            return;
        };
        match result {
            AppendResult::Ok | AppendResult::SlotTaken => {
                self.core.on_merge_appended(seq, plan);
                self.phase = Phase::MergeClosed;
                let (_, data, write_ids, _) = self.core.snapshot_view();
                let closed = MergeClosed { seq, data, write_ids, owner: self.owner.clone() };
                tracing::info!(range = %self.core.range_id(), %seq, "closed for a merge");
                out.push(Effect::ReplyMerge(reply, Ok(closed)));
            }
            // Not closed: serve on.
            AppendResult::Refused(e) | AppendResult::Failed(e) => out.push(Effect::ReplyMerge(reply, Err(e))),
        }
    }
}
