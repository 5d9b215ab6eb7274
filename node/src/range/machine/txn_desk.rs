//! The transaction desk: prepares waiting for the range, the held transaction's local
//! commit or abort, and the callers waiting for it to be resolved (DESIGN section 9).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::{Reply, Versioned, WriteId};
use ampstore_common::txn::TxnDecision;
use ampstore_common::{Seq, Version};
use ampstore_store::{EntryKind, LogEntry};

use super::{AppendResult, Effect, Ending, Prepare, Purpose, RangeMachine, Timer, not_owner};
use crate::range::batch;

/// Prepares that may wait for one range.
const TXN_WAITING_MAX: usize = 1024;
/// How long a participant's prepare waits for a busy range before it is refused.
const TXN_PARTICIPANT_WAIT: Duration = Duration::from_millis(50);
/// How soon resolving the held transaction is tried again after a failure.
const RESOLVE_RETRY: Duration = Duration::from_millis(100);

pub(super) struct TxnDesk<W> {
    /// Prepares waiting for the range (held by another transaction, or an append in
    /// flight), each with the time it stops waiting.
    pub(super) waiting: VecDeque<(Prepare, W, Instant)>,
    /// The entry of a transaction of this range alone is being appended.
    committing: Option<LocalCommit<W>>,
    /// The abort of the held transaction is being appended (or its slot read): its id.
    resolving: Option<WriteId>,
    /// Callers waiting for the held transaction to be resolved.
    resolve_waiters: Vec<W>,
}

struct LocalCommit<W> {
    txn_id: WriteId,
    values: Vec<Option<Versioned>>,
    reply: W,
}

impl<W> Default for TxnDesk<W> {
    fn default() -> Self {
        TxnDesk { waiting: VecDeque::new(), committing: None, resolving: None, resolve_waiters: Vec::new() }
    }
}

impl<W> TxnDesk<W> {
    /// Answers everyone at once as the range stops (see `RangeMachine::answer_waiters`).
    pub(super) fn answer_all<M>(&mut self, ending: &Ending, out: &mut Vec<Effect<W, M>>) {
        for (p, w, _) in self.waiting.drain(..) {
            // Not run yet: a local transaction's caller makes a closed channel "unknown", a
            // remote coordinator "not the owner".
            out.push(Effect::Reply(w, Err(if p.local { Error::Timeout } else { not_owner() })));
        }
        let (commit_err, resolve_err) = match ending {
            Ending::Fenced => (Error::Fenced, Error::Fenced),
            Ending::Departed => (Error::Timeout, Error::Timeout),
            Ending::Broken(reason) => (Error::Timeout, Error::internal(reason.clone())),
        };
        if let Some(c) = self.committing.take() {
            out.push(Effect::Reply(c.reply, Err(commit_err)));
        }
        out.extend(self.resolve_waiters.drain(..).map(|w| Effect::Reply(w, Err(resolve_err.clone()))));
    }
}

impl<W, M> RangeMachine<W, M> {
    pub(super) fn prepare(
        &mut self,
        prepare: Prepare,
        reply: W,
        now: Instant,
        admission: super::Admission,
        out: &mut Vec<Effect<W, M>>,
    ) {
        if let Err(e) = self.may_serve(admission) {
            out.push(Effect::Reply(reply, Err(e)));
            return;
        }
        if self.closing() || self.releasing() {
            out.push(Effect::Reply(reply, Err(Error::RangeLoading { retry_after_ms: super::SPLIT_RETRY_MS })));
            return;
        }
        self.heat.last_used = now;
        let held_by_other = self.core.txn_held().is_some_and(|h| h.txn_id != prepare.txn_id);
        if held_by_other || self.core.append_in_flight() || !self.txns.waiting.is_empty() {
            if self.txns.waiting.len() >= TXN_WAITING_MAX {
                let err =
                    Error::unavailable(format!("{} has {TXN_WAITING_MAX} transactions waiting", self.core.range_id()));
                out.push(Effect::Reply(reply, Err(err)));
                return;
            }
            // A transaction of this range alone waits its turn; a participant of several
            // waits only briefly, so transactions holding ranges in opposite orders do not
            // wait on each other for a whole hold time.
            let wait = if prepare.local { Duration::from_millis(prepare.hold_ms) } else { TXN_PARTICIPANT_WAIT };
            self.txns.waiting.push_back((prepare, reply, now + wait));
            out.push(Effect::SetTimer { timer: Timer::TxnWait, after: wait });
            return;
        }
        self.run_prepare(prepare, reply, now, out);
    }

    fn read_values(&self, prepare: &Prepare) -> Result<Vec<Option<Versioned>>, Error> {
        prepare.reads.iter().map(|key| self.core.get(key)).collect()
    }

    fn run_prepare(&mut self, prepare: Prepare, reply: W, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let txn_id = prepare.txn_id;
        // A retry of a transaction this range committed: answered, never applied again.
        if let Some((true, seq)) = self.core.txn_outcome(txn_id) {
            let values = match self.read_values(&prepare) {
                Ok(v) => v,
                Err(e) => {
                    out.push(Effect::Reply(reply, Err(e)));
                    return;
                }
            };
            let answer = if prepare.local {
                let versions = match seq {
                    Some(seq) => (0..prepare.writes.len()).map(|i| Version { seq, index: i as u32 }).collect(),
                    None => Vec::new(),
                };
                Reply::TxnCommitted { versions: vec![versions], values: vec![values] }
            } else {
                self.prepared(seq, values, true)
            };
            out.push(Effect::Reply(reply, Ok(answer)));
            return;
        }
        let seq = match self.core.txn_prepare(txn_id, &prepare.checks, &prepare.writes) {
            Ok(seq) => seq,
            Err(e) => {
                out.push(Effect::Reply(reply, Err(e)));
                return;
            }
        };
        let values = match self.read_values(&prepare) {
            Ok(v) => v,
            Err(e) => {
                // Nobody was told of the hold yet: give it back at once.
                if seq.is_none() {
                    self.core.txn_release();
                } else {
                    self.resolve_txn_here(now, out);
                }
                out.push(Effect::Reply(reply, Err(e)));
                return;
            }
        };
        if !prepare.local {
            out.push(Effect::Reply(reply, Ok(self.prepared(seq, values, false))));
            let after = Duration::from_millis(prepare.hold_ms);
            out.push(Effect::SetTimer { timer: Timer::TxnHold(txn_id), after });
            return;
        }
        // One range: the entry is ours to write.
        let Some((seq, entry)) = self.core.txn_entry() else {
            self.core.txn_release();
            out.push(Effect::Reply(
                reply,
                Ok(Reply::TxnCommitted { versions: vec![Vec::new()], values: vec![values] }),
            ));
            self.pump(out);
            return;
        };
        self.txns.committing = Some(LocalCommit { txn_id, values, reply });
        out.push(Effect::Append { seq, entry, purpose: Purpose::Txn });
    }

    fn prepared(&self, seq: Option<Seq>, values: Vec<Option<Versioned>>, committed: bool) -> Reply {
        Reply::TxnPrepared { seq, writer: self.owner.node_id.clone(), epoch: self.owner.epoch, values, committed }
    }

    pub(super) fn txn_appended(&mut self, seq: Seq, result: AppendResult, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let Some(LocalCommit { txn_id, values, reply }) = self.txns.committing.take() else {
            self.broken_invariant(format!("a transaction entry at {seq} was appended with none being committed"), out);
            return;
        };
        match result {
            AppendResult::Ok | AppendResult::SlotTaken => match self.core.txn_commit() {
                Ok(versions) => {
                    self.core.remember_txn(txn_id, true, Some(seq));
                    out.push(Effect::Reply(
                        reply,
                        Ok(Reply::TxnCommitted { versions: vec![versions], values: vec![values] }),
                    ));
                    self.after_txn(now, out);
                }
                Err(_) => {
                    // In the log but not applied here: the next owner replays it.
                    out.push(Effect::Reply(reply, Err(Error::Timeout)));
                    self.stop_if_broken(out);
                }
            },
            AppendResult::Refused(e) | AppendResult::Failed(e) => {
                // Maybe written (a store may not know): the slot decides; the caller learns
                // only that the outcome is unknown.
                tracing::warn!(range = %self.core.range_id(), %seq, error = %e, "transaction append failed; resolving at the slot");
                out.push(Effect::Reply(reply, Err(Error::Timeout)));
                self.resolve_txn_here(now, out);
            }
        }
    }

    pub(super) fn resolve(
        &mut self,
        txn_id: WriteId,
        decision: TxnDecision,
        reply: W,
        now: Instant,
        out: &mut Vec<Effect<W, M>>,
    ) {
        let held = self.core.txn_held().cloned();
        match held {
            Some(h) if h.txn_id == txn_id => match decision {
                TxnDecision::Commit => {
                    let committed = h.seq.is_some();
                    if committed {
                        if self.core.txn_commit().is_err() {
                            out.push(Effect::Reply(reply, Err(Error::Timeout)));
                            self.stop_if_broken(out);
                            return;
                        }
                    } else {
                        self.core.txn_release();
                    }
                    self.core.remember_txn(h.txn_id, committed, h.seq);
                    out.push(Effect::Reply(reply, Ok(Reply::TxnResolved { committed })));
                    self.after_txn(now, out);
                }
                TxnDecision::Resolve => {
                    self.txns.resolve_waiters.push(reply);
                    self.resolve_txn_here(now, out);
                }
            },
            _ => {
                let known = self.core.txn_outcome(txn_id).map(|(committed, _)| committed);
                let answer = match known {
                    Some(committed) => Ok(Reply::TxnResolved { committed }),
                    None => Err(Error::invalid("this range holds no such transaction")),
                };
                out.push(Effect::Reply(reply, answer));
            }
        }
    }

    /// Resolves the held transaction from the log: an `Abort` at the reserved slot ends it,
    /// unless the slot already holds its entry (it committed). Answers the resolve waiters.
    pub(super) fn resolve_txn_here(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let Some(hold) = self.core.txn_held().cloned() else {
            self.finish_txn(None, now, out);
            return;
        };
        if self.txns.resolving.is_some() {
            return;
        }
        let Some((seq, entry)) = self.core.txn_abort_entry() else {
            self.core.txn_release();
            self.finish_txn(Some((hold.txn_id, false, None)), now, out);
            return;
        };
        self.txns.resolving = Some(hold.txn_id);
        out.push(Effect::Append { seq, entry, purpose: Purpose::Abort });
    }

    pub(super) fn abort_appended(&mut self, seq: Seq, result: AppendResult, now: Instant, out: &mut Vec<Effect<W, M>>) {
        let Some(txn_id) = self.txns.resolving else {
            self.broken_invariant(format!("an abort at {seq} was appended with none under way"), out);
            return;
        };
        match result {
            AppendResult::Ok => {
                self.txns.resolving = None;
                self.core.txn_aborted();
                self.finish_txn(Some((txn_id, false, None)), now, out);
            }
            // Taken by the transaction's own entry (it committed) or by a newer owner.
            AppendResult::SlotTaken => out.push(Effect::ReadSlot { seq }),
            AppendResult::Refused(e) | AppendResult::Failed(e) => self.resolve_failed(seq, e, out),
        }
    }

    /// The slot the abort found taken, as read back.
    pub(super) fn abort_slot_read(
        &mut self,
        seq: Seq,
        found: Result<Option<(Seq, LogEntry)>, Error>,
        now: Instant,
        out: &mut Vec<Effect<W, M>>,
    ) {
        let Some(txn_id) = self.txns.resolving else {
            self.broken_invariant(format!("slot {seq} was read back with no abort under way"), out);
            return;
        };
        let ours = match found {
            Ok(Some((s, e))) if s == seq && e.kind == EntryKind::Txn => match batch::decode_txn(&e.payload) {
                Ok(p) => p.txn_id == txn_id,
                Err(e) => return self.resolve_failed(seq, e, out),
            },
            Ok(_) => false,
            Err(e) => return self.resolve_failed(seq, e, out),
        };
        if !ours {
            tracing::warn!(range = %self.core.range_id(), %seq, "transaction slot taken by a newer owner: range fenced");
            self.fence(Some(seq), out);
            return;
        }
        self.txns.resolving = None;
        if self.core.txn_commit().is_err() {
            self.stop_if_broken(out);
            return;
        }
        self.finish_txn(Some((txn_id, true, Some(seq))), now, out);
    }

    fn resolve_failed(&mut self, seq: Seq, e: Error, out: &mut Vec<Effect<W, M>>) {
        tracing::warn!(range = %self.core.range_id(), %seq, error = %e, "resolving a transaction failed; retrying");
        self.txns.resolving = None;
        out.push(Effect::SetTimer { timer: Timer::ResolveRetry, after: RESOLVE_RETRY });
    }

    fn finish_txn(&mut self, outcome: Option<(WriteId, bool, Option<Seq>)>, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if let Some((id, committed, seq)) = outcome {
            self.core.remember_txn(id, committed, seq);
            out.extend(
                self.txns.resolve_waiters.drain(..).map(|w| Effect::Reply(w, Ok(Reply::TxnResolved { committed }))),
            );
        }
        self.after_txn(now, out);
    }

    /// The range is free again: queued writes go out, a waiting release goes on.
    fn after_txn(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        if self.releasing() {
            self.continue_release(now, out);
            return;
        }
        self.pump(out);
        self.run_waiting(now, out);
    }

    /// Starts the next waiting prepare when the range is free; answers those that waited
    /// too long.
    pub(super) fn run_waiting(&mut self, now: Instant, out: &mut Vec<Effect<W, M>>) {
        while let Some((_, _, deadline)) = self.txns.waiting.front() {
            if *deadline <= now {
                if let Some((_, w, _)) = self.txns.waiting.pop_front() {
                    let err = Error::unavailable(format!("{} is held by another transaction", self.core.range_id()));
                    out.push(Effect::Reply(w, Err(err)));
                }
                continue;
            }
            if self.is_stopped() || self.core.txn_held().is_some() || self.core.append_in_flight() || self.releasing() {
                return;
            }
            if let Some((p, w, _)) = self.txns.waiting.pop_front() {
                self.run_prepare(p, w, now, out);
            }
        }
    }
}
