//! The range actor: the actix shell around a [`RangeMachine`].
//!
//! Each message becomes a machine [`Input`]; the machine's [`Effect`]s are run by one
//! `execute` match, and every completion (an append, a snapshot, clearing the owner, a
//! timer) comes back as an input. The lifecycle (what may happen when) lives in
//! `machine.rs`; this file only does I/O. Reads never come here: readers share the core's
//! memtable (`range::view`), and after every step, before that step's effects run, the actor
//! tells them whether the range still serves reads.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use ampstore_common::Seq;
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeStats, WriteId};
use ampstore_common::txn::TxnDecision;
use ampstore_store::StoreError;
use ampstore_store::meta::Owner;
use tokio::sync::oneshot;

use super::core::{MergePlan, RangeCore};
use super::host::{self, RangeEnv};
use super::inbox::WriteInbox;
use super::machine::{
    Admission, AppendResult, ClearOutcome, Effect, Input, MachineConfig, MergeClosed, Prepare, Purpose, RangeMachine,
    StopHow,
};
use super::view::ViewCell;
use super::{load, snapshot};

pub(super) use super::host::Responder;
pub(super) type MergeResponder = oneshot::Sender<Result<MergeClosed, Error>>;

type Machine = RangeMachine<Responder, MergeResponder>;
type Fx = Effect<Responder, MergeResponder>;

const MAILBOX_CAPACITY: usize = 4096;

/// The range's write inbox has writes (`range::inbox`): take them all.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct DrainWrites;

/// Snapshot now; answers `Snapshotted`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct SnapshotMsg {
    pub reply: Responder,
}

/// Stop serving: refuse new writes, finish the append in flight, snapshot when dirty,
/// clear the owner, stop. Answers `Released`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct ReleaseMsg {
    pub reply: Option<Responder>,
}

/// The node's epoch ended: stop at once.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct DropMsg;

/// Apply the staged batch (`Effect::ApplyStaged`).
#[derive(Message)]
#[rtype(result = "()")]
struct ApplyStagedMsg;

#[derive(Message)]
#[rtype(result = "RangeStats")]
pub(super) struct StatsMsg;

/// Split now, whatever the range's size (admin `Split`).
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(super) struct SplitNowMsg;

/// Close the log for `plan` (after the append in flight) and hand over the data. Writes
/// are refused with `RangeLoading` from now on; reads are still served.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct MergeCloseMsg {
    pub plan: MergePlan,
    pub reply: MergeResponder,
}

/// The merge is over for this range (the merged range serves, or the merge was abandoned
/// and the range goes through a fresh load): stop without touching the descriptor.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct MergeEndMsg;

/// Prepare a transaction here (`RangeCore::txn_prepare`) and answer `TxnPrepared`; with
/// `local` (a transaction of this range alone) also append its entry and answer
/// `TxnCommitted`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TxnPrepareMsg {
    pub prepare: Prepare,
    pub reply: Responder,
}

/// Finish a prepared transaction; answers `TxnResolved`.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TxnResolveMsg {
    pub txn_id: WriteId,
    pub decision: TxnDecision,
    pub reply: Responder,
}

pub(super) struct RangeActor {
    machine: Machine,
    env: Arc<RangeEnv>,
    /// This instance's number in the directory: only the current instance of a range may
    /// clear its owner or mark it failed.
    instance: u64,
    /// Effects of the current step (kept to reuse the allocation).
    fx: Vec<Fx>,
    /// What readers share with this range (`range::view`): its memtable and whether it
    /// still serves reads.
    cell: Arc<ViewCell>,
    /// Writes waiting for this actor (`range::inbox`).
    inbox: Arc<WriteInbox>,
    /// `cell.reads()` when the actor last looked: reads since count as use.
    reads_seen: u64,
}

impl RangeActor {
    pub fn new(
        core: RangeCore<Responder>,
        owner: Owner,
        env: Arc<RangeEnv>,
        instance: u64,
        cell: Arc<ViewCell>,
        inbox: Arc<WriteInbox>,
    ) -> RangeActor {
        let cfg = &env.cfg;
        let machine_cfg = MachineConfig {
            snapshot_log_bytes: cfg.snapshot_log_bytes,
            split_bytes: cfg.split_bytes,
            hot_split_writes_per_sec: cfg.hot_split_writes_per_sec,
            hot_split_ms: cfg.hot_split_ms,
            idle_release_ms: cfg.idle_release_ms,
            child_ids: host::child_ids,
        };
        let machine = RangeMachine::new(core, owner, machine_cfg, Instant::now());
        RangeActor { machine, env, instance, fx: Vec::new(), cell, inbox, reads_seen: 0 }
    }

    /// The node's liveness as the serving rule needs it.
    fn admission(&self) -> Admission {
        Admission {
            live: self.env.liveness.is_valid(),
            epoch: self.env.liveness.epoch(),
            other_nodes_live: self.env.other_nodes.any_live(),
        }
    }

    /// Runs `f` on the machine with the time and the node's liveness, then runs its effects.
    fn run<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Machine, Instant, Admission, &mut Vec<Fx>) -> R,
    ) -> R {
        let admission = self.admission();
        let now = Instant::now();
        self.machine.set_unix_clock(super::write_ids::unix_now_ms());
        let reads = self.cell.reads();
        if reads != self.reads_seen {
            self.reads_seen = reads;
            self.machine.touch(now);
        }
        let mut fx = std::mem::take(&mut self.fx);
        let result = f(&mut self.machine, now, admission, &mut fx);
        // Before any effect: the range stops serving reads before it gives itself up.
        self.tell_readers();
        for effect in fx.drain(..) {
            self.execute(effect, ctx);
        }
        self.fx = fx;
        result
    }

    /// Tells readers whether the range still serves reads (the data they read is the
    /// core's own, applied before any reply goes out).
    fn tell_readers(&self) {
        self.cell.set_serving(self.machine.serves_reads());
    }

    fn step(&mut self, input: Input<Responder, MergeResponder>, ctx: &mut Context<Self>) {
        self.run(ctx, |m, now, admission, fx| m.handle(input, now, admission, fx));
    }

    fn is_current(&self) -> bool {
        self.env.host.routes_to(self.machine.range_id(), self.instance)
    }

    fn execute(&mut self, effect: Fx, ctx: &mut Context<Self>) {
        let range_id = self.machine.range_id();
        match effect {
            Effect::Reply(tx, result) => {
                // The caller may have given up (deadline); nothing to do then.
                tx.send(result);
            }
            Effect::ReplyMerge(tx, result) => {
                let _ = tx.send(result);
            }
            Effect::Append { seq, entry, purpose } => {
                let log = self.env.backend.log.clone();
                // Queued with the store now, not when the actor next polls its futures: an
                // `ApplyStaged` after this effect applies the last batch meanwhile.
                let started = log.clone().start_append(range_id, seq, entry.clone());
                ctx.spawn(
                    async move {
                        let mut result = started.await;
                        if purpose == Purpose::Batch {
                            // Test hook: the append landed but its answer is lost.
                            if result.is_ok() {
                                result = crate::test_points::fail_once("append:answer-lost")
                                    .map_err(|e| StoreError::Unavailable(e.to_string()));
                            }
                            // Taken by whom? By this very entry (an earlier attempt of this
                            // append whose answer was lost, then retried) is success, not a
                            // fence: giving up the range would leave it owned by this live
                            // node and unserved.
                            if let Err(StoreError::SlotTaken { .. }) = result
                                && let Ok(found) = log.read(range_id, seq, 1).await
                                && found.first().is_some_and(|(s, e)| *s == seq && *e == entry)
                            {
                                tracing::info!(range = %range_id, %seq, "log slot taken by our own earlier attempt: appended");
                                result = Ok(());
                            }
                        }
                        if purpose == Purpose::Txn {
                            crate::test_points::pause_once("txn:appended-unanswered").await;
                        }
                        match result {
                            Ok(()) => AppendResult::Ok,
                            Err(StoreError::SlotTaken { .. }) => AppendResult::SlotTaken,
                            Err(e @ (StoreError::TooLarge { .. } | StoreError::Invalid(_))) => {
                                AppendResult::Refused(e.into())
                            }
                            Err(e) => AppendResult::Failed(e.into()),
                        }
                    }
                    .into_actor(self)
                    .map(move |result, act, ctx| act.step(Input::Appended { seq, purpose, result }, ctx)),
                );
            }
            Effect::ReadSlot { seq } => {
                let log = self.env.backend.log.clone();
                ctx.spawn(
                    async move {
                        log.read(range_id, seq, 1).await.map(|found| found.into_iter().next()).map_err(Error::from)
                    }
                    .into_actor(self)
                    .map(move |found, act, ctx| act.step(Input::SlotRead { seq, found }, ctx)),
                );
            }
            Effect::WriteSnapshot(job) => {
                let backend = self.env.backend.clone();
                let started = Instant::now();
                ctx.spawn(async move { snapshot::write(&backend, job).await }.into_actor(self).map(
                    move |result, act, ctx| {
                        let result = result.map(|(cp, size)| {
                            let took = started.elapsed();
                            tracing::info!(range = %range_id, seq = %cp.seq, bytes = size, ms = took.as_millis() as u64, "snapshot written");
                            act.env.metrics.snapshot(took, size);
                            cp.seq
                        });
                        act.step(Input::SnapshotWritten(result), ctx);
                    },
                ));
            }
            Effect::ClearOwner => {
                // Only the instance the directory routes to may give the range up: another
                // instance of it on this node (same owner) would otherwise lose its
                // ownership under it.
                let clear = self.is_current().then(|| {
                    let (backend, owner) = (self.env.backend.clone(), self.machine.owner().clone());
                    let start = self.machine.range().start.clone();
                    async move { load::clear_owner(&backend, range_id, &start, &owner).await }
                });
                ctx.spawn(
                    async move {
                        match clear {
                            None => ClearOutcome::NotCurrentInstance,
                            Some(clear) => match clear.await {
                                Ok(()) => ClearOutcome::Cleared,
                                Err(e) => ClearOutcome::Failed(e),
                            },
                        }
                    }
                    .into_actor(self)
                    .map(|outcome, act, ctx| act.step(Input::OwnerCleared(outcome), ctx)),
                );
            }
            // The parent stops serving now (even reads: the children will take writes); its
            // slot answers `RangeLoading` until the node's reshaper has the children serving.
            Effect::Split(job) => self.env.host.split_ready(job),
            Effect::LearnNewOwner { seq } => self.learn_new_owner(seq),
            Effect::BatchApplied { writes, bytes } => self.env.count_batch(writes, bytes),
            Effect::ApplyStaged => ctx.notify(ApplyStagedMsg),
            Effect::SetTimer { timer, after } => {
                ctx.run_later(after, move |act, ctx| act.step(Input::Timer(timer), ctx));
            }
            Effect::Stop(how) => {
                match how {
                    StopHow::Departed => self.env.host.stopped(range_id, self.instance, self.machine.range()),
                    StopHow::Split => {}
                    StopHow::Failed { reason } => {
                        self.env.host.failed(range_id, self.instance, self.machine.range().clone(), reason)
                    }
                }
                ctx.stop();
            }
        }
    }

    /// The entry that took our slot names its writer: look up where it serves, so requests
    /// that still come here get a `NotOwner` hint. Runs detached (the actor is stopping).
    fn learn_new_owner(&self, seq: Seq) {
        let backend = self.env.backend.clone();
        let host = self.env.host.clone();
        let (range_id, range) = (self.machine.range_id(), self.machine.range().clone());
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
        self.step(Input::Start, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Writes still in the inbox never reached the range: nothing of theirs was written.
        self.inbox.refuse_all(&Error::NotOwner { hint: None });
    }
}

impl Handler<DrainWrites> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: DrainWrites, ctx: &mut Context<Self>) {
        let writes = self.inbox.take();
        if !writes.is_empty() {
            self.step(Input::Writes(writes), ctx);
        }
    }
}

impl Handler<SnapshotMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: SnapshotMsg, ctx: &mut Context<Self>) {
        self.step(Input::Snapshot(msg.reply), ctx);
    }
}

impl Handler<SplitNowMsg> for RangeActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, _msg: SplitNowMsg, ctx: &mut Context<Self>) -> Result<(), Error> {
        self.run(ctx, |m, now, admission, fx| m.split_now(now, admission, fx))
    }
}

impl Handler<ReleaseMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: ReleaseMsg, ctx: &mut Context<Self>) {
        self.step(Input::Release(msg.reply), ctx);
    }
}

impl Handler<ApplyStagedMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: ApplyStagedMsg, ctx: &mut Context<Self>) {
        self.step(Input::ApplyStaged, ctx);
    }
}

impl Handler<DropMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: DropMsg, ctx: &mut Context<Self>) {
        self.step(Input::Drop, ctx);
    }
}

impl Handler<MergeCloseMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: MergeCloseMsg, ctx: &mut Context<Self>) {
        self.step(Input::MergeClose(msg.plan, msg.reply), ctx);
    }
}

impl Handler<TxnPrepareMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: TxnPrepareMsg, ctx: &mut Context<Self>) {
        self.step(Input::Prepare(msg.prepare, msg.reply), ctx);
    }
}

impl Handler<TxnResolveMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, msg: TxnResolveMsg, ctx: &mut Context<Self>) {
        self.step(Input::Resolve { txn_id: msg.txn_id, decision: msg.decision, reply: msg.reply }, ctx);
    }
}

impl Handler<MergeEndMsg> for RangeActor {
    type Result = ();

    fn handle(&mut self, _msg: MergeEndMsg, ctx: &mut Context<Self>) {
        self.step(Input::MergeEnd, ctx);
    }
}

impl Handler<StatsMsg> for RangeActor {
    type Result = MessageResult<StatsMsg>;

    fn handle(&mut self, _msg: StatsMsg, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.stats(Instant::now()))
    }
}
