//! The range lifecycle as a pure state machine (target layout 3c.5): no actix, no tokio, no
//! store. Inputs and the time come in; [`Effect`]s go out, and the driver (`actor.rs`) runs
//! them and feeds their completions back as inputs.
//!
//! The machine owns the [`RangeCore`] (what the range holds, the batches) and every piece of
//! lifecycle state around it: the `Phase` (serving, splitting, merging, releasing,
//! stopped), the snapshot desk (`snapshots.rs`), the transaction desk (`txn_desk.rs`) and the
//! heat of the range (hot-split and idle bookkeeping). Which combinations are legal is
//! decided here, once, and every way of losing the log (a `SlotTaken` answer to any append)
//! ends in one fencing reaction (`fence`, in `machine/stopping.rs`).
//!
//! `W` answers a caller with `Result<Reply, Error>`, `M` answers a merge close with
//! `Result<MergeClosed, Error>` (oneshot senders in the actor, plain ids in tests).

mod closing;
mod reads;
mod snapshots;
mod stopping;
mod txn_desk;

use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{Reply, WriteId};
use ampstore_common::txn::{TxnCheck, TxnDecision, TxnWrite};
use ampstore_common::{Epoch, Key, KeyRange, RangeId, Seq};
use ampstore_store::LogEntry;
use ampstore_store::meta::Owner;

use super::core::{Memtable, MergePlan, Outcome, RangeCore, SplitPlan, Write};
use super::host::SplitJob;
use super::snapshot::SnapshotJob;
use super::write_ids::WriteIdTable;
use snapshots::SnapshotDesk;
use txn_desk::TxnDesk;

/// How often a range measures its write rate (hot-range splits).
pub const HOT_CHECK: Duration = Duration::from_secs(1);
/// How often a range looks for expired keys to delete (`RangeCore::sweep_expired`).
pub const EXPIRY_SWEEP: Duration = Duration::from_millis(100);
/// How often an idle range checks whether to release itself.
pub const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How soon a client should retry a range that is splitting or merging.
const SPLIT_RETRY_MS: u64 = 20;
/// The longest wait between retries of a failed (not refused) append.
const APPEND_RETRY_MAX: Duration = Duration::from_secs(1);

/// The settings the lifecycle decides by (from the node's config).
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Log bytes since the checkpoint that trigger a snapshot.
    pub snapshot_log_bytes: u64,
    /// Data bytes over which the range splits (0: never by size).
    pub split_bytes: u64,
    /// Writes per second over which the range counts as hot (0: never).
    pub hot_split_writes_per_sec: u64,
    /// How long the range must stay hot before it splits.
    pub hot_split_ms: u64,
    /// How long without reads or writes before the range releases itself.
    pub idle_release_ms: u64,
    /// Fresh ids for the two children of a split (random in the node, fixed in tests).
    pub child_ids: fn() -> (RangeId, RangeId),
}

/// Whether the node may serve at all, as the driver reads it from its liveness: its heartbeat
/// is valid by its own clock, and the epoch it is in. The rule is `ownership::instance_may_serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub live: bool,
    pub epoch: Epoch,
    /// Another node is registered (its record not ended), so the halves of a hot range have
    /// somewhere to go: alone, a node gains nothing from a hot split and pays for it in
    /// smaller appends (docs/benchmarks.md, "Ranges per node").
    pub other_nodes_live: bool,
}

/// A transaction prepare as the range receives it (see `TxnPrepareMsg`).
#[derive(Clone, Debug)]
pub struct Prepare {
    pub txn_id: WriteId,
    pub checks: Vec<TxnCheck>,
    pub writes: Vec<TxnWrite>,
    pub reads: Vec<Key>,
    pub hold_ms: u64,
    /// A transaction of this range alone: the range writes its entry itself.
    pub local: bool,
}

/// What a range closed for a merge holds: its data at `seq`, the seq of the merge entry.
pub struct MergeClosed {
    pub seq: Seq,
    pub data: Memtable,
    pub write_ids: WriteIdTable,
    pub owner: Owner,
}

/// Why an append went out; its completion comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A group-commit batch of writes.
    Batch,
    /// The split entry that closes the log.
    Split,
    /// The merge entry that closes the log.
    Merge,
    /// The entry of a transaction of this range alone.
    Txn,
    /// The abort that gives up a held transaction's reserved slot.
    Abort,
}

/// How an append ended, as the driver classifies the store's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum AppendResult {
    Ok,
    /// The slot holds another writer's entry: a newer owner fenced the log.
    SlotTaken,
    /// The store refuses this entry for good (too large, invalid): nothing was written.
    Refused(Error),
    /// Not known to be written (a transient failure).
    Failed(Error),
}

/// How clearing the owner before a release ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ClearOutcome {
    Cleared,
    /// The directory routes the range to another instance on this node: this one stops
    /// without clearing the owner (it would take the range from under that instance).
    NotCurrentInstance,
    Failed(Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    HotCheck,
    IdleCheck,
    /// Look for expired keys and delete them (`EXPIRY_SWEEP`).
    ExpirySweep,
    /// The hold time of a participant's prepare ran out.
    TxnHold(WriteId),
    /// A waiting prepare's deadline passed.
    TxnWait,
    /// Retry the batch append in flight after a transient failure.
    AppendRetry,
    /// Retry resolving the held transaction after a failure.
    ResolveRetry,
}

pub enum Input<W, M> {
    /// The driver started: arm the periodic checks.
    Start,
    /// Writes that arrived together (the range's inbox, `range::handle`): all are queued
    /// before an append is considered, so they share one log entry.
    Writes(Vec<(Write, W)>),
    Prepare(Prepare, W),
    Resolve {
        txn_id: WriteId,
        decision: TxnDecision,
        reply: W,
    },
    Snapshot(W),
    Release(Option<W>),
    MergeClose(MergePlan, M),
    MergeEnd,
    /// The node's epoch ended.
    Drop,
    Appended {
        seq: Seq,
        purpose: Purpose,
        result: AppendResult,
    },
    /// The slot of a held transaction, read after its abort found the slot taken.
    SlotRead {
        seq: Seq,
        found: Result<Option<(Seq, LogEntry)>, Error>,
    },
    /// The snapshot finished: the seq it checkpointed.
    SnapshotWritten(Result<Seq, Error>),
    OwnerCleared(ClearOutcome),
    Timer(Timer),
    /// Apply the staged batch (see `Effect::ApplyStaged`); every input does that first.
    ApplyStaged,
}

/// How the driver stops the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopHow {
    /// Released, fenced, dropped or merged away: leave the directory, tell routes it departed.
    Departed,
    /// The split job (effect `Split`) takes over the range's directory slot.
    Split,
    /// A safety invariant did not hold: the directory shows the range failed with `reason`.
    Failed { reason: String },
}

pub enum Effect<W, M> {
    Reply(W, Result<Reply, Error>),
    ReplyMerge(M, Result<MergeClosed, Error>),
    /// Append `entry` at `seq`; answer with `Input::Appended` carrying `purpose`.
    Append {
        seq: Seq,
        entry: LogEntry,
        purpose: Purpose,
    },
    /// Read log slot `seq`; answer with `Input::SlotRead`.
    ReadSlot {
        seq: Seq,
    },
    /// Write the snapshot; answer with `Input::SnapshotWritten`.
    WriteSnapshot(SnapshotJob),
    /// Clear this range's owner in its descriptor (if this instance is the current one);
    /// answer with `Input::OwnerCleared`.
    ClearOwner,
    /// Complete the split (children's snapshots, the master's commit, loading them).
    Split(SplitJob),
    /// The entry at `seq` took our slot: find out where its writer serves (a routing hint).
    LearnNewOwner {
        seq: Seq,
    },
    /// A batch is durable (metrics).
    BatchApplied {
        writes: usize,
        bytes: usize,
    },
    SetTimer {
        timer: Timer,
        after: Duration,
    },
    Stop(StopHow),
    /// A durable batch is staged and the next one was sent (`RangeCore::stage_appended`):
    /// the driver answers with `Input::ApplyStaged` once the `Append` effect before this
    /// one has reached the store, so that the store commits the next batch while this one
    /// is applied.
    ApplyStaged,
}

/// The lifecycle phase: what the range does besides serving reads and batching writes.
enum Phase<W, M> {
    Serving,
    /// The split entry is being appended: writes are refused with `RangeLoading`. A release
    /// that arrives meanwhile waits here (answered when the range stops, or carried on if
    /// the split entry does not go in).
    Splitting {
        plan: SplitPlan,
        release: Option<Vec<W>>,
    },
    /// Waiting for the append in flight to finish before the merge entry goes in.
    MergeClosing {
        plan: MergePlan,
        reply: M,
    },
    /// The merge entry is being appended.
    MergeAppending {
        plan: MergePlan,
        reply: M,
    },
    /// The log is closed for the merge: waits for `MergeEnd`.
    MergeClosed,
    Releasing {
        waiters: Vec<W>,
        snapshot_tried: bool,
        clearing: bool,
    },
    Stopped,
}

/// Hot-split and idle bookkeeping.
struct Heat {
    /// Writes submitted since the last hot check.
    writes_since_check: u64,
    /// Since when the write rate has stayed above the hot-split threshold.
    hot_since: Option<Instant>,
    /// An admin `Split` asked for a split: done at the next moment the range may split.
    split_requested: bool,
    /// When a client last read or wrote the range.
    last_used: Instant,
}

/// Why waiters are answered all at once (see `answer_waiters`).
#[derive(Clone, Debug)]
enum Ending {
    Fenced,
    Departed,
    Broken(String),
}

fn not_owner() -> Error {
    Error::NotOwner { hint: None }
}

fn reply_all<W, M>(outcomes: Vec<Outcome<W>>, out: &mut Vec<Effect<W, M>>) {
    out.extend(outcomes.into_iter().map(|(w, r)| Effect::Reply(w, r)));
}

pub struct RangeMachine<W, M> {
    core: RangeCore<W>,
    owner: Owner,
    cfg: MachineConfig,
    phase: Phase<W, M>,
    snapshots: SnapshotDesk<W>,
    txns: TxnDesk<W>,
    heat: Heat,
    /// Transient failures of the batch append in flight, in a row (the retry backoff).
    append_failures: u32,
    /// Write ids dropped before their retention ran out, as last reported.
    write_ids_evicted_reported: u64,
}

impl<W, M> RangeMachine<W, M> {
    pub fn new(core: RangeCore<W>, owner: Owner, cfg: MachineConfig, now: Instant) -> Self {
        RangeMachine {
            core,
            owner,
            cfg,
            phase: Phase::Serving,
            snapshots: SnapshotDesk::default(),
            txns: TxnDesk::default(),
            heat: Heat { writes_since_check: 0, hot_since: None, split_requested: false, last_used: now },
            append_failures: 0,
            write_ids_evicted_reported: 0,
        }
    }

    pub fn range_id(&self) -> RangeId {
        self.core.range_id()
    }
    pub fn range(&self) -> &KeyRange {
        self.core.range()
    }
    pub fn owner(&self) -> &Owner {
        &self.owner
    }
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// Sets the wall clock (unix ms) that remembered write outcomes are stamped with.
    pub fn set_unix_clock(&mut self, now_unix_ms: u64) {
        self.core.set_clock(now_unix_ms);
    }

    /// Admin `Split`: split now whatever the size; when busy (an append in flight, a
    /// transaction held), as soon as the range is free.
    pub fn split_now(&mut self, now: Instant, admission: Admission, out: &mut Vec<Effect<W, M>>) -> Result<(), Error> {
        self.apply_staged(now, out);
        self.may_serve(admission)?;
        if self.core.split_key().is_none() {
            return Err(Error::invalid(format!("{} has no split key (one key, or one list)", self.core.range_id())));
        }
        self.heat.split_requested = true;
        if self.should_split(now) {
            self.start_split(out);
        }
        Ok(())
    }

    pub fn handle(&mut self, input: Input<W, M>, now: Instant, admission: Admission, out: &mut Vec<Effect<W, M>>) {
        // A durable batch is applied (and answered) before anything else is decided: every
        // input sees the data as the log has it.
        self.apply_staged(now, out);
        if self.is_stopped() {
            // The driver stops with the range; whatever still arrives learns it is gone.
            match input {
                Input::Prepare(_, w) | Input::Resolve { reply: w, .. } | Input::Snapshot(w) => {
                    out.push(Effect::Reply(w, Err(not_owner())))
                }
                Input::Writes(writes) => {
                    out.extend(writes.into_iter().map(|(_, w)| Effect::Reply(w, Err(not_owner()))))
                }
                Input::Release(Some(w)) => out.push(Effect::Reply(w, Err(not_owner()))),
                Input::MergeClose(_, m) => out.push(Effect::ReplyMerge(m, Err(not_owner()))),
                _ => {}
            }
            return;
        }
        match input {
            Input::Start => {
                out.push(Effect::SetTimer { timer: Timer::HotCheck, after: HOT_CHECK });
                out.push(Effect::SetTimer { timer: Timer::IdleCheck, after: IDLE_CHECK });
                out.push(Effect::SetTimer { timer: Timer::ExpirySweep, after: EXPIRY_SWEEP });
            }
            Input::Writes(writes) => {
                for (write, reply) in writes {
                    self.queue_write(write, reply, now, admission, out);
                }
                self.pump(out);
            }
            Input::Prepare(prepare, reply) => self.prepare(prepare, reply, now, admission, out),
            Input::Resolve { txn_id, decision, reply } => self.resolve(txn_id, decision, reply, now, out),
            Input::Snapshot(reply) => {
                if let Err(e) = self.may_serve(admission) {
                    out.push(Effect::Reply(reply, Err(e)));
                    return;
                }
                self.snapshots.waiters.push((self.core.applied(), reply));
                self.start_snapshot(now, out);
            }
            Input::Release(reply) => self.begin_release(reply, now, out),
            Input::MergeClose(plan, reply) => self.merge_close(plan, reply, admission, out),
            Input::MergeEnd => self.stop_serving(out),
            Input::Drop => {
                tracing::warn!(range = %self.core.range_id(), "node epoch ended: dropping the range");
                self.stop_serving(out);
            }
            Input::Appended { seq, purpose, result } => self.appended(seq, purpose, result, now, out),
            Input::SlotRead { seq, found } => self.abort_slot_read(seq, found, now, out),
            Input::SnapshotWritten(result) => self.snapshot_written(result, now, out),
            Input::OwnerCleared(outcome) => self.owner_cleared(outcome, out),
            Input::Timer(timer) => self.timer(timer, now, admission, out),
            // Applied above.
            Input::ApplyStaged => {}
        }
    }

    /// Applies the staged batch, if any, and answers its writers; then starts a snapshot
    /// when the log has grown enough (the rest of what follows an append waits for the
    /// append in flight).
    fn apply_staged(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if !self.core.has_staged() {
            return;
        }
        reply_all(self.core.apply_staged(), out);
        if self.stop_if_broken(out) {
            return;
        }
        self.snapshot_if_due(now, out);
    }

    /// Whether the next batch may go out before the durable one is applied: the range only
    /// serves and batches (no release, split, merge or transaction waits for the log to be
    /// idle), and the next queued write is decided without the data.
    fn may_send_before_apply(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Serving)
            && self.txns.waiting.is_empty()
            && self.core.txn_held().is_none()
            && !self.split_due(now)
            && self.core.next_write_needs_no_data()
    }

    // ----- serving -----

    /// The serving rule (DESIGN section 4, `common::ownership`), checked on every request.
    fn may_serve(&self, admission: Admission) -> Result<(), Error> {
        if !ownership::instance_may_serve(self.owner.epoch, admission.epoch, admission.live) {
            return Err(not_owner());
        }
        if self.core.is_fenced() || self.releasing() || self.is_stopped() {
            return Err(not_owner());
        }
        Ok(())
    }

    /// A release is under way (or waits for the split entry in flight).
    fn releasing(&self) -> bool {
        matches!(self.phase, Phase::Releasing { .. } | Phase::Splitting { release: Some(_), .. })
    }

    fn merging(&self) -> bool {
        matches!(self.phase, Phase::MergeClosing { .. } | Phase::MergeAppending { .. } | Phase::MergeClosed)
    }

    /// The log is being (or has been) closed by this instance: writes are refused.
    fn closing(&self) -> bool {
        matches!(self.phase, Phase::Splitting { .. }) || self.merging()
    }

    /// Admits a write to the core's queue (or answers it at once); the caller pumps.
    fn queue_write(&mut self, write: Write, reply: W, now: Instant, admission: Admission, out: &mut Vec<Effect<W, M>>) {
        if let Err(e) = self.may_serve(admission) {
            out.push(Effect::Reply(reply, Err(e)));
            return;
        }
        if self.closing() {
            out.push(Effect::Reply(reply, Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS })));
            return;
        }
        self.heat.last_used = now;
        self.heat.writes_since_check += 1;
        if let Some((w, result)) = self.core.submit(write, reply) {
            out.push(Effect::Reply(w, result));
        }
    }

    /// With no append in flight, sends the pending writes out as the next batch.
    fn pump(&mut self, out: &mut Vec<Effect<W, M>>) {
        if self.core.append_in_flight() || self.releasing() {
            return;
        }
        let plan = self.core.next_batch();
        reply_all(plan.early, out);
        if let Some((seq, entry)) = plan.append {
            out.push(Effect::Append { seq, entry, purpose: Purpose::Batch });
        }
    }

    fn appended(
        &mut self,
        seq: Seq,
        purpose: Purpose,
        result: AppendResult,
        now: Instant,
        out: &mut Vec<Effect<W, M>>,
    ) {
        // A taken slot is a fence, except under an abort: there the transaction's own entry
        // may hold it (it committed), which the slot read decides (`abort_slot_read`).
        if result == AppendResult::SlotTaken && purpose != Purpose::Abort {
            tracing::warn!(range = %self.core.range_id(), %seq, ?purpose, "log slot taken by a newer owner: range fenced, dropping it");
            self.fence(Some(seq), out);
            return;
        }
        match purpose {
            Purpose::Batch => self.batch_appended(seq, result, now, out),
            Purpose::Split => self.split_appended(seq, result, now, out),
            Purpose::Merge => self.merge_appended(seq, result, out),
            Purpose::Txn => self.txn_appended(seq, result, now, out),
            Purpose::Abort => self.abort_appended(seq, result, now, out),
        }
    }

    fn batch_appended(&mut self, seq: Seq, result: AppendResult, now: Instant, out: &mut Vec<Effect<W, M>>) {
        match result {
            AppendResult::Ok | AppendResult::SlotTaken => {
                self.append_failures = 0;
                let (writes, bytes) = (self.core.in_flight_writes(), self.core.in_flight_payload_bytes());
                let send_first = self.may_send_before_apply(now);
                if let Err(done) = self.core.stage_appended(seq) {
                    reply_all(done, out);
                    self.stop_if_broken(out);
                    return;
                }
                out.push(Effect::BatchApplied { writes, bytes });
                if send_first {
                    let plan = self.core.next_batch();
                    reply_all(plan.early, out);
                    if let Some((seq, entry)) = plan.append {
                        out.push(Effect::Append { seq, entry, purpose: Purpose::Batch });
                        out.push(Effect::ApplyStaged);
                        return;
                    }
                }
                reply_all(self.core.apply_staged(), out);
                if self.stop_if_broken(out) {
                    return;
                }
                self.append_finished(now, out);
            }
            AppendResult::Refused(e) => {
                // Retrying the same entry at the same slot would wedge the range: fail the
                // batch (nothing was written) and go on.
                tracing::error!(range = %self.core.range_id(), %seq, error = %e, "the store refused a log batch; failing its writes");
                self.append_failures = 0;
                reply_all(self.core.on_append_refused(e), out);
                self.append_finished(now, out);
            }
            AppendResult::Failed(e) => {
                // Not written (or, on AWS, read back and found ours): retry the same slot.
                self.append_failures += 1;
                let after = Duration::from_millis(25u64 << self.append_failures.min(6)).min(APPEND_RETRY_MAX);
                tracing::warn!(range = %self.core.range_id(), %seq, error = %e, ?after, "append failed, retrying");
                out.push(Effect::SetTimer { timer: Timer::AppendRetry, after });
            }
        }
    }

    /// The append in flight is over (applied or refused): whatever waited for it goes on.
    fn append_finished(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if self.releasing() {
            self.continue_release(now, out);
            return;
        }
        if matches!(self.phase, Phase::MergeClosing { .. }) {
            self.start_merge_entry(out);
            return;
        }
        // Transactions and plain writes take turns: a waiting prepare goes first after an
        // append; the writes queued meanwhile go after it.
        self.run_waiting(now, out);
        if self.is_stopped() || self.core.txn_held().is_some() {
            return;
        }
        if self.should_split(now) {
            self.start_split(out);
            return;
        }
        self.snapshot_if_due(now, out);
        self.pump(out);
    }

    fn timer(&mut self, timer: Timer, now: Instant, admission: Admission, out: &mut Vec<Effect<W, M>>) {
        match timer {
            Timer::HotCheck => {
                let rate_per_sec = self.heat.writes_since_check * 1000 / HOT_CHECK.as_millis() as u64;
                self.heat.writes_since_check = 0;
                let threshold = self.cfg.hot_split_writes_per_sec;
                // Hot counts only where a half could go to another node (`Admission::other_nodes_live`).
                if threshold == 0 || rate_per_sec < threshold || !admission.other_nodes_live {
                    self.heat.hot_since = None;
                } else if self.heat.hot_since.is_none() {
                    self.heat.hot_since = Some(now);
                }
                if self.should_split(now) {
                    self.start_split(out);
                }
                let evicted = self.core.write_ids().evicted_early();
                if evicted > self.write_ids_evicted_reported {
                    tracing::warn!(
                        range = %self.core.range_id(),
                        evicted = evicted - self.write_ids_evicted_reported,
                        bytes = self.core.write_ids().bytes(),
                        "write ids dropped before their retention ran out (RANGE_WRITE_IDS_BYTES_MAX): a retry of those writes could apply them again"
                    );
                    self.write_ids_evicted_reported = evicted;
                }
                out.push(Effect::SetTimer { timer: Timer::HotCheck, after: HOT_CHECK });
            }
            Timer::ExpirySweep => {
                // Expired keys are absent to reads already; deleting them is the owner's
                // job (ordinary logged deletes), only while it serves and may write.
                if admission.live
                    && matches!(self.phase, Phase::Serving)
                    && !self.is_stopped()
                    && self.core.sweep_expired()
                {
                    self.pump(out);
                }
                if !self.is_stopped() {
                    out.push(Effect::SetTimer { timer: Timer::ExpirySweep, after: EXPIRY_SWEEP });
                }
            }
            Timer::IdleCheck => {
                let idle = Duration::from_millis(self.cfg.idle_release_ms);
                // Only a range with nothing going on is idle: queued or in-flight writes, a
                // held transaction or a merge keep it.
                if !self.releasing()
                    && !self.merging()
                    && self.core.txn_held().is_none()
                    && !self.core.has_work()
                    && now.saturating_duration_since(self.heat.last_used) >= idle
                {
                    tracing::info!(range = %self.core.range_id(), "idle: releasing");
                    self.begin_release(None, now, out);
                }
                // Lost liveness with nothing to do: answer whatever waits and keep quiet.
                if !admission.live && !self.is_stopped() {
                    reply_all(self.core.refuse_pending(not_owner()), out);
                }
                if !self.is_stopped() {
                    out.push(Effect::SetTimer { timer: Timer::IdleCheck, after: IDLE_CHECK });
                }
            }
            Timer::TxnHold(txn_id) => {
                if self.core.txn_held().is_some_and(|h| h.txn_id == txn_id) {
                    tracing::info!(range = %self.core.range_id(), ?txn_id, "transaction not resolved in time: resolving it here");
                    self.resolve_txn_here(now, out);
                }
            }
            Timer::TxnWait => self.run_waiting(now, out),
            Timer::AppendRetry => {
                if let Some((seq, entry)) = self.core.in_flight_append() {
                    out.push(Effect::Append { seq, entry, purpose: Purpose::Batch });
                }
            }
            Timer::ResolveRetry => self.resolve_txn_here(now, out),
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
