//! The range actor: drives a [`RangeCore`] with real I/O.
//!
//! One append is in flight at a time; writes queue in the core meanwhile and become the
//! next batch (group commit). Reads are answered from applied data at once, also while an
//! append is in flight. A snapshot works on an O(1) clone of the memtable in a background
//! future, so writes never wait for it. Every request first checks the serving rule: the
//! node's liveness is valid by its own clock and its epoch is still the one this range was
//! loaded in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{RangeState, RangeStats, Reply, WriteId};
use ampstore_common::txn::{TxnCheck, TxnDecision, TxnWrite};
use ampstore_common::{Key, Seq};
use ampstore_store::meta::Owner;
use ampstore_store::{EntryKind, StoreError};
use tokio::sync::oneshot;

use super::batch;
use super::core::{Memtable, MergePlan, Outcome, RangeCore, SplitPlan, Write};
use super::host::{self, RangeEnv, SplitJob};
use super::load;
use super::snapshot::{self, SnapshotJob};
use super::write_ids::WriteIdTable;

pub type Responder = oneshot::Sender<Result<Reply, Error>>;

const MAILBOX_CAPACITY: usize = 4096;
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// How often a range measures its write rate (hot-range splits).
const HOT_CHECK: Duration = Duration::from_secs(1);
/// How soon a client should retry a range that is splitting or merging.
const SPLIT_RETRY_MS: u64 = 20;
const APPEND_RETRY_MAX: Duration = Duration::from_secs(1);

#[derive(Message)]
#[rtype(result = "Result<Reply, Error>")]
pub enum ReadMsg {
    Get { key: Key },
    Scan { start: Key, end: Option<Key>, limit: usize, reverse: bool },
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteMsg {
    pub write: Write,
    pub reply: Responder,
}

/// Snapshot now; answers `Snapshotted`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotMsg {
    pub reply: Responder,
}

/// Stop serving: refuse new writes, finish the append in flight, snapshot when dirty,
/// clear the owner, stop. Answers `Released`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseMsg {
    pub reply: Option<Responder>,
}

/// The node's epoch ended: stop at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropMsg;

#[derive(Message)]
#[rtype(result = "RangeStats")]
pub struct StatsMsg;

/// Split now, whatever the range's size (admin `Split`).
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub struct SplitNowMsg;

/// Close the log for `plan` (after the append in flight) and hand over the data. Writes
/// are refused with `RangeLoading` from now on; reads are still served.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MergeCloseMsg {
    pub plan: MergePlan,
    pub reply: oneshot::Sender<Result<MergeClosed, Error>>,
}

/// What a range closed for a merge holds: its data at `seq`, the seq of the merge entry.
pub struct MergeClosed {
    pub seq: Seq,
    pub data: Memtable,
    pub write_ids: WriteIdTable,
    pub owner: Owner,
}

/// The merge is over for this range (the merged range serves, or the merge was abandoned
/// and the range goes through a fresh load): stop without touching the descriptor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MergeEndMsg;

/// Prepare a transaction here (`RangeCore::txn_prepare`) and answer `TxnPrepared`; with
/// `local` (a transaction of this range alone) also append its entry and answer
/// `TxnCommitted`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TxnPrepareMsg {
    pub txn_id: WriteId,
    pub checks: Vec<TxnCheck>,
    pub writes: Vec<TxnWrite>,
    pub reads: Vec<Key>,
    pub hold_ms: u64,
    pub local: bool,
    pub reply: Responder,
}

/// Finish a prepared transaction; answers `TxnResolved`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TxnResolveMsg {
    pub txn_id: WriteId,
    pub decision: TxnDecision,
    pub reply: Responder,
}

/// Prepares that may wait for one range.
const TXN_WAITING_MAX: usize = 1024;
/// How long a participant's prepare waits for a busy range before it is refused.
const TXN_PARTICIPANT_WAIT: Duration = Duration::from_millis(50);

enum Merging {
    /// Waiting for the append in flight to finish before the merge entry goes in.
    Closing(MergePlan, oneshot::Sender<Result<MergeClosed, Error>>),
    /// The merge entry is being appended.
    Appending,
    Closed,
}

pub struct RangeActor {
    core: RangeCore<Responder>,
    owner: Owner,
    env: Arc<RangeEnv>,
    instance: u64,
    snapshot_running: bool,
    /// Callers of `Snapshot`, each with the seq its snapshot must cover (applied when it asked).
    snapshot_waiters: Vec<(Seq, Responder)>,
    releasing: Option<Vec<Responder>>,
    release_snapshot_tried: bool,
    last_used: Instant,
    append_failures: u32,
    /// The split entry is being appended: writes are refused with `RangeLoading`.
    splitting: bool,
    /// Writes submitted since the last hot-range check, and since when the rate has stayed
    /// above the hot-split threshold.
    writes_since_check: u64,
    hot_since: Option<Instant>,
    /// An admin `Split` asked for a split: done at the next moment the range may split.
    split_requested: bool,
    merging: Option<Merging>,
    /// A prepare waiting for the append in flight.
    /// Prepares waiting for the range (held by another transaction, or an append in
    /// flight), each with the time it stops waiting.
    txn_waiting: std::collections::VecDeque<(TxnPrepareMsg, Instant)>,
    /// The abort of the held transaction is being appended.
    txn_resolving: bool,
    /// Callers waiting for the held transaction to be resolved.
    txn_resolve_waiters: Vec<Responder>,
    /// Write ids dropped before their retention ran out, as last reported.
    write_ids_evicted_reported: u64,
}

fn deliver(outcomes: Vec<Outcome<Responder>>) {
    for (tx, result) in outcomes {
        // The caller may have given up (deadline); nothing to do then.
        let _ = tx.send(result);
    }
}

fn not_owner() -> Error {
    Error::NotOwner { hint: None }
}

impl RangeActor {
    pub fn new(core: RangeCore<Responder>, owner: Owner, env: Arc<RangeEnv>, instance: u64) -> RangeActor {
        RangeActor {
            core,
            owner,
            env,
            instance,
            snapshot_running: false,
            snapshot_waiters: Vec::new(),
            releasing: None,
            release_snapshot_tried: false,
            last_used: Instant::now(),
            append_failures: 0,
            splitting: false,
            writes_since_check: 0,
            hot_since: None,
            split_requested: false,
            merging: None,
            txn_waiting: std::collections::VecDeque::new(),
            txn_resolving: false,
            txn_resolve_waiters: Vec::new(),
            write_ids_evicted_reported: 0,
        }
    }

    /// The serving rule (DESIGN section 4, `common::ownership`), checked on every request.
    fn may_serve(&self) -> Result<(), Error> {
        let (node_epoch, heartbeat_valid) = (self.env.liveness.epoch(), self.env.liveness.is_valid());
        if !ownership::instance_may_serve(self.owner.epoch, node_epoch, heartbeat_valid) {
            return Err(not_owner());
        }
        if self.core.is_fenced() || self.releasing.is_some() {
            return Err(not_owner());
        }
        Ok(())
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.core.append_in_flight() || self.releasing.is_some() {
            return;
        }
        self.core.set_clock(super::write_ids::unix_now_ms());
        let plan = self.core.next_batch();
        deliver(plan.early);
        if let Some((seq, entry)) = plan.append {
            self.start_append(seq, entry, ctx);
        }
    }

    fn start_append(&mut self, seq: Seq, entry: ampstore_store::LogEntry, ctx: &mut Context<Self>) {
        let log = self.env.backend.log.clone();
        let range = self.core.range_id();
        let bytes = entry.payload.len();
        ctx.spawn(
            async move {
                let result = match log.append(range, seq, &entry).await {
                    // Test hook: the append landed but its answer is lost.
                    Ok(()) => crate::test_points::fail_once("append:answer-lost")
                        .map_err(|e| StoreError::Unavailable(e.to_string())),
                    other => other,
                };
                match result {
                    // Taken by whom? By this very entry (an earlier attempt of this append
                    // whose answer was lost, then retried) is success, not a fence: giving
                    // up the range would leave it owned by this live node and unserved.
                    Err(StoreError::SlotTaken { .. }) => match log.read(range, seq, 1).await {
                        Ok(found) if found.first().is_some_and(|(s, e)| *s == seq && *e == entry) => {
                            tracing::info!(%range, %seq, "log slot taken by our own earlier attempt: appended");
                            Ok(())
                        }
                        _ => result,
                    },
                    other => other,
                }
            }
            .into_actor(self)
            .map(move |result, act, ctx| act.appended(seq, bytes, result, ctx)),
        );
    }

    fn appended(&mut self, seq: Seq, bytes: usize, result: Result<(), StoreError>, ctx: &mut Context<Self>) {
        match result {
            Ok(()) => {
                self.append_failures = 0;
                self.core.set_clock(super::write_ids::unix_now_ms());
                let done = self.core.on_appended(seq);
                self.env.metrics.log_append(done.len(), bytes);
                deliver(done);
                if self.stop_if_broken(ctx) {
                    return;
                }
                self.append_finished(ctx);
            }
            Err(StoreError::SlotTaken { .. }) => {
                tracing::warn!(range = %self.core.range_id(), %seq, "log slot taken by a newer owner: range fenced, dropping it");
                deliver(self.core.on_fenced());
                self.learn_new_owner(seq, ctx);
                self.stop_serving(ctx);
            }
            Err(e @ (StoreError::TooLarge { .. } | StoreError::Invalid(_))) => {
                // The store refuses this entry for good: retrying the same entry at the same
                // slot would wedge the range. Fail the batch (nothing was written) and go on.
                tracing::error!(range = %self.core.range_id(), %seq, error = %e, "the store refused a log batch; failing its writes");
                self.append_failures = 0;
                deliver(self.core.on_append_refused(e.into()));
                self.append_finished(ctx);
            }
            Err(e) => {
                // Not written (or, on AWS, read back and found ours): retry the same slot.
                self.append_failures += 1;
                let backoff = Duration::from_millis(25u64 << self.append_failures.min(6)).min(APPEND_RETRY_MAX);
                tracing::warn!(range = %self.core.range_id(), %seq, error = %e, ?backoff, "append failed, retrying");
                ctx.run_later(backoff, |act, ctx| {
                    if let Some((seq, entry)) = act.core.in_flight_append() {
                        act.start_append(seq, entry, ctx);
                    }
                });
            }
        }
    }

    /// The append in flight is over (applied or refused): whatever waited for it goes on.
    fn append_finished(&mut self, ctx: &mut Context<Self>) {
        if self.releasing.is_some() {
            self.continue_release(ctx);
            return;
        }
        if matches!(self.merging, Some(Merging::Closing(..))) {
            self.start_merge_entry(ctx);
            return;
        }
        // Transactions and plain writes take turns: a waiting prepare goes first after
        // an append; the writes queued meanwhile go after it.
        self.run_waiting(ctx);
        if self.core.txn_held().is_some() {
            return;
        }
        if self.should_split() {
            self.start_split(ctx);
            return;
        }
        if !self.snapshot_running && self.core.log_bytes_since_checkpoint() >= self.env.cfg.snapshot_log_bytes {
            self.start_snapshot(ctx);
        }
        self.pump(ctx);
    }

    /// Over the split size, or hot for long enough, with nothing else going on.
    fn should_split(&self) -> bool {
        let cfg = &self.env.cfg;
        let big = cfg.split_bytes > 0 && self.core.data_bytes() > cfg.split_bytes;
        let hot = self.hot_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(cfg.hot_split_ms));
        (big || hot || self.split_requested) && self.may_split()
    }

    /// Nothing else going on that a split would disturb.
    fn may_split(&self) -> bool {
        !self.splitting
            && self.merging.is_none()
            && self.core.txn_held().is_none()
            && self.txn_waiting.is_empty()
            && !self.snapshot_running
            && self.releasing.is_none()
            && !self.core.append_in_flight()
            && self.core.split_state().is_none()
    }

    /// Closes the log with a split entry, then hands the children's data to the split
    /// procedure (`split.rs`) and stops: requests get `RangeLoading` until the children serve.
    fn start_split(&mut self, ctx: &mut Context<Self>) {
        self.split_requested = false;
        let Some(split_key) = self.core.split_key() else { return };
        let (left, right) = host::child_ids();
        let plan = SplitPlan { split_key, left, right };
        self.splitting = true;
        deliver(self.core.refuse_pending(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
        let (seq, entry) = self.core.split_entry(&plan);
        tracing::info!(range = %self.core.range_id(), %seq, split_key = %plan.split_key, bytes = self.core.data_bytes(), "splitting");
        let log = self.env.backend.log.clone();
        let range = self.core.range_id();
        ctx.spawn(async move { log.append(range, seq, &entry).await }.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(()) => act.split_appended(seq, plan, ctx),
                Err(StoreError::SlotTaken { .. }) => {
                    tracing::warn!(range = %act.core.range_id(), %seq, "split slot taken by a newer owner: range fenced");
                    deliver(act.core.on_fenced());
                    act.stop_serving(ctx);
                }
                Err(e) => {
                    // Not closed: serve on and try again after the next write.
                    tracing::warn!(range = %act.core.range_id(), error = %e, "split entry not appended");
                    act.splitting = false;
                }
            },
        ));
    }

    fn split_appended(&mut self, seq: Seq, plan: SplitPlan, ctx: &mut Context<Self>) {
        self.core.on_split_appended(seq, plan.clone());
        let (left, right) = self.core.divide(&plan.split_key);
        // Both children remember every write id of the parent (an O(1) clone each): a retry
        // of a parent's write reaches whichever child holds its key.
        let write_ids = self.core.write_ids().clone();
        let (parent_id, parent_range) = (self.core.range_id(), self.core.range().clone());
        // The parent stops serving now (even reads: the children will take writes); its slot
        // answers `RangeLoading` until the children serve.
        let job = SplitJob {
            parent_id,
            parent_range,
            split_seq: seq,
            plan,
            left,
            right,
            write_ids,
            owner: self.owner.clone(),
        };
        self.env.host.split_ready(job);
        ctx.stop();
    }

    /// Appends the merge entry once nothing is in flight; answers the `MergeCloseMsg`.
    fn start_merge_entry(&mut self, ctx: &mut Context<Self>) {
        if self.core.append_in_flight() {
            return; // called again when it finishes
        }
        let Some(Merging::Closing(plan, reply)) = self.merging.take() else { return };
        self.merging = Some(Merging::Appending);
        let (seq, entry) = self.core.merge_entry(&plan);
        let log = self.env.backend.log.clone();
        let range = self.core.range_id();
        ctx.spawn(async move { log.append(range, seq, &entry).await }.into_actor(self).map(
            move |result, act, ctx| match result {
                Ok(()) => {
                    act.core.on_merge_appended(seq, plan);
                    act.merging = Some(Merging::Closed);
                    let (_, data, write_ids, _) = act.core.snapshot_view();
                    let closed = MergeClosed {
                        seq,
                        data,
                        write_ids,
                        owner: act.owner.clone(),
                    };
                    tracing::info!(range = %act.core.range_id(), %seq, "closed for a merge");
                    let _ = reply.send(Ok(closed));
                }
                Err(StoreError::SlotTaken { .. }) => {
                    tracing::warn!(range = %act.core.range_id(), %seq, "merge slot taken by a newer owner: range fenced");
                    let _ = reply.send(Err(Error::Fenced));
                    deliver(act.core.on_fenced());
                    act.stop_serving(ctx);
                }
                Err(e) => {
                    // Not closed: serve on.
                    act.merging = None;
                    let _ = reply.send(Err(e.into()));
                }
            },
        ));
    }

    fn run_prepare(&mut self, msg: TxnPrepareMsg, ctx: &mut Context<Self>) {
        let TxnPrepareMsg { txn_id, checks, writes, reads, hold_ms, local, reply } = msg;
        // A retry of a transaction this range committed: answered, never applied again.
        if let Some((true, seq)) = self.core.txn_outcome(txn_id) {
            let values: Result<Vec<_>, Error> = reads.iter().map(|key| self.core.get(key)).collect();
            let values = match values {
                Ok(v) => v,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let answer = if local {
                let versions = match seq {
                    Some(seq) => (0..writes.len()).map(|i| ampstore_common::Version { seq, index: i as u32 }).collect(),
                    None => Vec::new(),
                };
                Reply::TxnCommitted { versions: vec![versions], values: vec![values] }
            } else {
                Reply::TxnPrepared {
                    seq,
                    writer: self.owner.node_id.clone(),
                    epoch: self.owner.epoch,
                    values,
                    committed: true,
                }
            };
            let _ = reply.send(Ok(answer));
            return;
        }
        let seq = match self.core.txn_prepare(txn_id, &checks, &writes) {
            Ok(seq) => seq,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let values: Result<Vec<_>, Error> = reads.iter().map(|key| self.core.get(key)).collect();
        let values = match values {
            Ok(v) => v,
            Err(e) => {
                // Nobody was told of the hold yet: give it back at once.
                if seq.is_none() {
                    self.core.txn_release();
                } else {
                    self.resolve_txn_here(ctx);
                }
                let _ = reply.send(Err(e));
                return;
            }
        };
        if !local {
            let _ = reply.send(Ok(Reply::TxnPrepared {
                seq,
                writer: self.owner.node_id.clone(),
                epoch: self.owner.epoch,
                values,
                committed: false,
            }));
            ctx.run_later(Duration::from_millis(hold_ms), move |act, ctx| {
                if act.core.txn_held().is_some_and(|h| h.txn_id == txn_id) {
                    tracing::info!(range = %act.core.range_id(), ?txn_id, "transaction not resolved in time: resolving it here");
                    act.resolve_txn_here(ctx);
                }
            });
            return;
        }
        // One range: the entry is ours to write.
        let Some((seq, entry)) = self.core.txn_entry() else {
            self.core.txn_release();
            let _ = reply.send(Ok(Reply::TxnCommitted { versions: vec![Vec::new()], values: vec![values] }));
            self.pump(ctx);
            return;
        };
        let log = self.env.backend.log.clone();
        let range = self.core.range_id();
        ctx.spawn(
            async move {
                let appended = log.append(range, seq, &entry).await;
                crate::test_points::pause_once("txn:appended-unanswered").await;
                appended
            }
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(()) => match act.core.txn_commit() {
                    Ok(versions) => {
                        act.remember_txn(txn_id, true, Some(seq));
                        let _ = reply.send(Ok(Reply::TxnCommitted { versions: vec![versions], values: vec![values] }));
                        act.after_txn(ctx);
                    }
                    Err(_) => {
                        // In the log but not applied here: the next owner replays it.
                        let _ = reply.send(Err(Error::Timeout));
                        act.stop_if_broken(ctx);
                    }
                },
                Err(StoreError::SlotTaken { .. }) => {
                    let _ = reply.send(Err(Error::Fenced));
                    deliver(act.core.on_fenced());
                    act.stop_serving(ctx);
                }
                Err(e) => {
                    // Maybe written (a store may not know): the slot decides; the caller
                    // learns only that the outcome is unknown.
                    tracing::warn!(range = %act.core.range_id(), %seq, error = %e, "transaction append failed; resolving at the slot");
                    let _ = reply.send(Err(Error::Timeout));
                    act.resolve_txn_here(ctx);
                }
            }),
        );
    }

    /// Resolves the held transaction from the log: an `Abort` at the reserved slot ends it,
    /// unless the slot already holds its entry (it committed). Answers the resolve waiters.
    fn resolve_txn_here(&mut self, ctx: &mut Context<Self>) {
        let Some(hold) = self.core.txn_held().cloned() else {
            self.finish_txn(None, ctx);
            return;
        };
        if self.txn_resolving {
            return;
        }
        let Some((seq, entry)) = self.core.txn_abort_entry() else {
            self.core.txn_release();
            self.finish_txn(Some((hold.txn_id, false, None)), ctx);
            return;
        };
        self.txn_resolving = true;
        let log = self.env.backend.log.clone();
        let range = self.core.range_id();
        ctx.spawn(
            async move {
                match log.append(range, seq, &entry).await {
                    Ok(()) => Ok(false),
                    Err(StoreError::SlotTaken { .. }) => {
                        let found = log.read(range, seq, 1).await.map_err(Error::from)?;
                        match found.into_iter().next() {
                            Some((s, e)) if s == seq && e.kind == EntryKind::Txn => {
                                let p = batch::decode_txn(&e.payload)?;
                                if p.txn_id == hold.txn_id { Ok(true) } else { Err(Error::Fenced) }
                            }
                            _ => Err(Error::Fenced),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.txn_resolving = false;
                match result {
                    Ok(true) => {
                        if act.core.txn_commit().is_err() {
                            act.stop_if_broken(ctx);
                            return;
                        }
                        act.finish_txn(Some((hold.txn_id, true, Some(seq))), ctx);
                    }
                    Ok(false) => {
                        act.core.txn_aborted();
                        act.finish_txn(Some((hold.txn_id, false, None)), ctx);
                    }
                    Err(Error::Fenced) => {
                        tracing::warn!(range = %act.core.range_id(), %seq, "transaction slot taken by a newer owner: range fenced");
                        for tx in act.txn_resolve_waiters.drain(..) {
                            let _ = tx.send(Err(Error::Fenced));
                        }
                        deliver(act.core.on_fenced());
                        act.stop_serving(ctx);
                    }
                    Err(e) => {
                        tracing::warn!(range = %act.core.range_id(), %seq, error = %e, "resolving a transaction failed; retrying");
                        ctx.run_later(Duration::from_millis(100), |act, ctx| act.resolve_txn_here(ctx));
                    }
                }
            }),
        );
    }

    /// Remembers a transaction's outcome in the range's write-id table, which travels in its
    /// snapshots: a coordinator asking after a checkpoint or a move still gets the answer.
    fn remember_txn(&mut self, txn_id: WriteId, committed: bool, seq: Option<Seq>) {
        self.core.set_clock(super::write_ids::unix_now_ms());
        self.core.remember_txn(txn_id, committed, seq);
    }

    fn finish_txn(&mut self, outcome: Option<(WriteId, bool, Option<Seq>)>, ctx: &mut Context<Self>) {
        if let Some((id, committed, seq)) = outcome {
            self.remember_txn(id, committed, seq);
            for tx in self.txn_resolve_waiters.drain(..) {
                let _ = tx.send(Ok(Reply::TxnResolved { committed }));
            }
        }
        self.after_txn(ctx);
    }

    /// The range is free again: queued writes go out, a waiting release goes on.
    fn after_txn(&mut self, ctx: &mut Context<Self>) {
        if self.releasing.is_some() {
            self.continue_release(ctx);
            return;
        }
        self.pump(ctx);
        self.run_waiting(ctx);
    }

    /// Starts the next waiting prepare when the range is free; answers those that waited
    /// too long.
    fn run_waiting(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some((_, deadline)) = self.txn_waiting.front() {
            if *deadline <= now {
                if let Some((msg, _)) = self.txn_waiting.pop_front() {
                    let _ = msg.reply.send(Err(Error::unavailable(format!(
                        "{} is held by another transaction",
                        self.core.range_id()
                    ))));
                }
                continue;
            }
            if self.core.txn_held().is_some() || self.core.append_in_flight() || self.releasing.is_some() {
                return;
            }
            if let Some((msg, _)) = self.txn_waiting.pop_front() {
                self.run_prepare(msg, ctx);
            }
        }
    }

    fn start_snapshot(&mut self, ctx: &mut Context<Self>) {
        if self.snapshot_running || self.splitting || self.merging.is_some() || self.core.split_state().is_some() {
            return;
        }
        let (seq, data, write_ids, log_bytes) = self.core.snapshot_view();
        if seq <= self.core.checkpoint_seq() {
            self.snapshot_done(Ok(seq), ctx);
            return;
        }
        self.snapshot_running = true;
        let started = Instant::now();
        let job = SnapshotJob {
            range_id: self.core.range_id(),
            range: self.core.range().clone(),
            seq,
            data,
            write_ids,
            owner: self.owner.clone(),
        };
        let backend = self.env.backend.clone();
        ctx.spawn(async move { snapshot::write(&backend, job).await }.into_actor(self).map(
            move |result, act, ctx| {
                act.snapshot_running = false;
                let result = result.map(|(cp, size)| {
                    tracing::info!(range = %act.core.range_id(), seq = %cp.seq, bytes = size, ms = started.elapsed().as_millis() as u64, "snapshot written");
                    act.env.metrics.snapshot(started.elapsed(), size);
                    act.core.on_checkpoint(cp.seq, log_bytes);
                    cp.seq
                });
                act.snapshot_done(result, ctx);
            },
        ));
    }

    fn snapshot_done(&mut self, result: Result<Seq, Error>, ctx: &mut Context<Self>) {
        let range_id = self.core.range_id();
        // A snapshot that started before a caller asked may not cover its writes: such callers
        // wait for the next one, which starts at once.
        let (answered, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshot_waiters)
            .into_iter()
            .partition(|(needed, _)| result.as_ref().map_or(true, |seq| seq >= needed));
        for (_, tx) in answered {
            let _ = tx.send(result.clone().map(|seq| Reply::Snapshotted { range_id, seq }));
        }
        self.snapshot_waiters = later;
        if !self.snapshot_waiters.is_empty() && result.is_ok() && self.releasing.is_none() {
            self.start_snapshot(ctx);
        }
        match result {
            Err(Error::Fenced) => {
                tracing::warn!(range = %range_id, "descriptor names another owner: dropping the range");
                deliver(self.core.on_fenced());
                self.stop_serving(ctx);
            }
            Err(e) => tracing::warn!(range = %range_id, error = %e, "snapshot failed"),
            Ok(_) => {}
        }
        if self.releasing.is_some() {
            self.continue_release(ctx);
        }
    }

    fn begin_release(&mut self, reply: Option<Responder>, ctx: &mut Context<Self>) {
        if self.merging.is_some() {
            if let Some(tx) = reply {
                let _ = tx.send(Err(Error::unavailable("the range is merging; release it once the merge is over")));
            }
            return;
        }
        match &mut self.releasing {
            Some(waiters) => waiters.extend(reply),
            None => {
                self.releasing = Some(reply.into_iter().collect());
                self.release_snapshot_tried = false;
                deliver(self.core.refuse_pending(not_owner()));
                self.continue_release(ctx);
            }
        }
    }

    fn continue_release(&mut self, ctx: &mut Context<Self>) {
        if self.core.append_in_flight() || self.snapshot_running || self.core.txn_held().is_some() {
            return; // called again when they finish
        }
        if self.core.is_dirty() {
            if !self.release_snapshot_tried {
                self.release_snapshot_tried = true;
                self.start_snapshot(ctx);
                return;
            }
            // The snapshot failed: keep serving rather than leave a long log behind silently.
            for tx in self.releasing.take().into_iter().flatten() {
                let _ = tx.send(Err(Error::unavailable("release: the snapshot before release failed")));
            }
            return;
        }
        let backend = self.env.backend.clone();
        let start = self.core.range().start.clone();
        let owner = self.owner.clone();
        let range_id = self.core.range_id();
        // Only the instance the directory routes to may give the range up: another instance
        // of it on this node (same owner) would otherwise lose its ownership under it.
        let is_current = self.env.host.routes_to(range_id, self.instance);
        if !is_current {
            tracing::warn!(range = %range_id, instance = self.instance, "not the range's current instance: stopping without clearing the owner");
            for tx in self.releasing.take().into_iter().flatten() {
                let _ = tx.send(Ok(Reply::Released { range_id }));
            }
            self.stop_serving(ctx);
            return;
        }
        ctx.spawn(async move { load::clear_owner(&backend, range_id, &start, &owner).await }.into_actor(self).map(
            |result, act, ctx| {
                let range_id = act.core.range_id();
                let reply = result.clone().map(|()| Reply::Released { range_id });
                for tx in act.releasing.take().into_iter().flatten() {
                    let _ = tx.send(reply.clone());
                }
                match result {
                    Ok(()) => {
                        tracing::info!(range = %range_id, "range released");
                        act.stop_serving(ctx);
                    }
                    Err(e) => tracing::warn!(range = %range_id, error = %e, "release failed; still serving"),
                }
            },
        ));
    }

    /// A safety invariant did not hold (`RangeCore::broken`): stop the range with the reason
    /// (requests are told it; `RangeStats` shows it), never panic the arbiter thread.
    fn stop_if_broken(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(reason) = self.core.broken().map(str::to_string) else { return false };
        deliver(self.core.abandon_in_flight());
        deliver(self.core.refuse_pending(Error::internal(reason.clone())));
        for (_, tx) in self.snapshot_waiters.drain(..) {
            let _ = tx.send(Err(Error::internal(reason.clone())));
        }
        for tx in self.releasing.take().into_iter().flatten().chain(self.txn_resolve_waiters.drain(..)) {
            let _ = tx.send(Err(Error::internal(reason.clone())));
        }
        let range_id = self.core.range_id();
        self.env.host.failed(range_id, self.instance, self.core.range().clone(), reason);
        ctx.stop();
        true
    }

    fn stop_serving(&mut self, ctx: &mut Context<Self>) {
        // An append still in flight may land after we stop: its writers learn "unknown".
        deliver(self.core.abandon_in_flight());
        deliver(self.core.refuse_pending(not_owner()));
        self.env.host.stopped(self.core.range_id(), self.instance, self.core.range());
        ctx.stop();
    }

    /// The entry that took our slot names its writer: look up where it serves, so requests
    /// that still come here get a `NotOwner` hint. Runs detached (the actor is stopping).
    fn learn_new_owner(&self, seq: Seq, _ctx: &mut Context<Self>) {
        let backend = self.env.backend.clone();
        let host = self.env.host.clone();
        let (range_id, range) = (self.core.range_id(), self.core.range().clone());
        actix::spawn(async move {
            let Ok(entries) = backend.log.read(range_id, seq, 1).await else { return };
            let Some((_, entry)) = entries.into_iter().next() else { return };
            if let Ok(Some(node)) = ampstore_store::meta::get_node(backend.meta.as_ref(), &entry.writer).await
                && node.record.epoch == entry.epoch
            {
                let hint = ampstore_common::error::OwnerHint { node_id: entry.writer, rpc_addr: node.record.rpc_addr };
                host.departed(&range, Some(hint));
            }
        });
    }
}

impl Actor for RangeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(HOT_CHECK, |act, ctx| {
            let threshold = act.env.cfg.hot_split_writes_per_sec;
            let rate = act.writes_since_check * 1000 / HOT_CHECK.as_millis() as u64;
            act.writes_since_check = 0;
            if threshold == 0 || rate < threshold {
                act.hot_since = None;
            } else if act.hot_since.is_none() {
                act.hot_since = Some(Instant::now());
            }
            if act.should_split() {
                act.start_split(ctx);
            }
            let evicted = act.core.write_ids().evicted_early();
            if evicted > act.write_ids_evicted_reported {
                tracing::warn!(
                    range = %act.core.range_id(),
                    evicted = evicted - act.write_ids_evicted_reported,
                    bytes = act.core.write_ids().bytes(),
                    "write ids dropped before their retention ran out (RANGE_WRITE_IDS_BYTES_MAX): a retry of those writes could apply them again"
                );
                act.write_ids_evicted_reported = evicted;
            }
        });
        ctx.run_interval(IDLE_CHECK, |act, ctx| {
            let idle = Duration::from_millis(act.env.cfg.idle_release_ms);
            if act.releasing.is_none()
                && act.merging.is_none()
                && act.core.txn_held().is_none()
                && !act.core.has_work()
                && act.last_used.elapsed() >= idle
            {
                tracing::info!(range = %act.core.range_id(), "idle: releasing");
                act.begin_release(None, ctx);
            }
            // Lost liveness with nothing to do: answer whatever waits and keep quiet.
            if !act.env.liveness.is_valid() {
                deliver(act.core.refuse_pending(not_owner()));
            }
        });
    }
}

impl Handler<ReadMsg> for RangeActor {
    type Result = Result<Reply, Error>;

    fn handle(&mut self, msg: ReadMsg, _ctx: &mut Context<Self>) -> Self::Result {
        self.may_serve()?;
        self.last_used = Instant::now();
        match msg {
            ReadMsg::Get { key } => self.core.get(&key).map(Reply::Value),
            ReadMsg::Scan { start, end, limit, reverse } => self.core.scan(&start, end.as_ref(), limit, reverse),
        }
    }
}

impl Handler<WriteMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: WriteMsg, ctx: &mut Context<Self>) {
        if let Err(e) = self.may_serve() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        if self.splitting || self.merging.is_some() {
            let _ = msg.reply.send(Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
            return;
        }
        self.last_used = Instant::now();
        self.writes_since_check += 1;
        self.core.set_clock(super::write_ids::unix_now_ms());
        if let Some((tx, result)) = self.core.submit(msg.write, msg.reply) {
            let _ = tx.send(result);
        }
        self.pump(ctx);
    }
}

impl Handler<SnapshotMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: SnapshotMsg, ctx: &mut Context<Self>) {
        if let Err(e) = self.may_serve() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        self.snapshot_waiters.push((self.core.applied(), msg.reply));
        self.start_snapshot(ctx);
    }
}

impl Handler<SplitNowMsg> for RangeActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, _msg: SplitNowMsg, ctx: &mut Context<Self>) -> Result<(), Error> {
        self.may_serve()?;
        if self.core.split_key().is_none() {
            return Err(Error::invalid(format!("{} has no split key (one key, or one list)", self.core.range_id())));
        }
        // Busy (an append in flight, a transaction held): split once it is done.
        self.split_requested = true;
        if self.should_split() {
            self.start_split(ctx);
        }
        Ok(())
    }
}

impl Handler<ReleaseMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseMsg, ctx: &mut Context<Self>) {
        self.begin_release(msg.reply, ctx);
    }
}

impl Handler<DropMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: DropMsg, ctx: &mut Context<Self>) {
        tracing::warn!(range = %self.core.range_id(), "node epoch ended: dropping the range");
        self.stop_serving(ctx);
    }
}

impl Handler<MergeCloseMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: MergeCloseMsg, ctx: &mut Context<Self>) {
        if let Err(e) = self.may_serve() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        if self.splitting
            || self.merging.is_some()
            || self.snapshot_running
            || self.core.split_state().is_some()
            || self.core.txn_held().is_some()
            || !self.txn_waiting.is_empty()
        {
            let _ = msg.reply.send(Err(Error::unavailable(
                "the range is busy (splitting, merging, snapshotting or in a transaction)",
            )));
            return;
        }
        deliver(self.core.refuse_pending(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
        self.merging = Some(Merging::Closing(msg.plan, msg.reply));
        self.start_merge_entry(ctx);
    }
}

impl Handler<TxnPrepareMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: TxnPrepareMsg, ctx: &mut Context<Self>) {
        if let Err(e) = self.may_serve() {
            let _ = msg.reply.send(Err(e));
            return;
        }
        if self.splitting || self.merging.is_some() || self.releasing.is_some() {
            let _ = msg.reply.send(Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
            return;
        }
        self.last_used = Instant::now();
        let held_by_other = self.core.txn_held().is_some_and(|h| h.txn_id != msg.txn_id);
        if held_by_other || self.core.append_in_flight() || !self.txn_waiting.is_empty() {
            if self.txn_waiting.len() >= TXN_WAITING_MAX {
                let _ = msg.reply.send(Err(Error::unavailable(format!(
                    "{} has {TXN_WAITING_MAX} transactions waiting",
                    self.core.range_id()
                ))));
                return;
            }
            // A transaction of this range alone waits its turn; a participant of several
            // waits only briefly, so transactions holding ranges in opposite orders do not
            // wait on each other for a whole hold time.
            let wait = if msg.local { Duration::from_millis(msg.hold_ms) } else { TXN_PARTICIPANT_WAIT };
            self.txn_waiting.push_back((msg, Instant::now() + wait));
            ctx.run_later(wait, |act, ctx| act.run_waiting(ctx));
            return;
        }
        self.run_prepare(msg, ctx);
    }
}

impl Handler<TxnResolveMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: TxnResolveMsg, ctx: &mut Context<Self>) {
        let held = self.core.txn_held().cloned();
        match held {
            Some(h) if h.txn_id == msg.txn_id => match msg.decision {
                TxnDecision::Commit => {
                    let committed = h.seq.is_some();
                    if committed {
                        if self.core.txn_commit().is_err() {
                            let _ = msg.reply.send(Err(Error::Timeout));
                            self.stop_if_broken(ctx);
                            return;
                        }
                    } else {
                        self.core.txn_release();
                    }
                    self.remember_txn(h.txn_id, committed, h.seq);
                    let _ = msg.reply.send(Ok(Reply::TxnResolved { committed }));
                    self.after_txn(ctx);
                }
                TxnDecision::Resolve => {
                    self.txn_resolve_waiters.push(msg.reply);
                    self.resolve_txn_here(ctx);
                }
            },
            _ => {
                let known = self.core.txn_outcome(msg.txn_id).map(|(committed, _)| committed);
                let _ = msg.reply.send(match known {
                    Some(committed) => Ok(Reply::TxnResolved { committed }),
                    None => Err(Error::invalid("this range holds no such transaction")),
                });
            }
        }
    }
}

impl Handler<MergeEndMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: MergeEndMsg, ctx: &mut Context<Self>) {
        self.stop_serving(ctx);
    }
}

impl Handler<StatsMsg> for RangeActor {
    type Result = MessageResult<StatsMsg>;

    fn handle(&mut self, _msg: StatsMsg, _ctx: &mut Context<Self>) -> Self::Result {
        let state = if self.releasing.is_some() {
            RangeState::Releasing
        } else if self.merging.is_some() {
            RangeState::Merging
        } else {
            RangeState::Serving
        };
        MessageResult(RangeStats {
            range_id: self.core.range_id(),
            range: self.core.range().clone(),
            state,
            keys: self.core.keys(),
            data_bytes: self.core.data_bytes(),
            applied_seq: self.core.applied(),
            checkpoint_seq: self.core.checkpoint_seq(),
            log_bytes_since_checkpoint: self.core.log_bytes_since_checkpoint(),
            error: None,
            idle_ms: self.last_used.elapsed().as_millis() as u64,
        })
    }
}
