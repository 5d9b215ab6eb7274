//! [`RangeHandle`]: the only face of a range outside `range/`.
//!
//! The actor's messages stay private to `range/`; everything the node asks of a range is a
//! method here with a typed answer. Reads (`get`, `scan`) are served from the range's
//! memtable, which readers share with the actor (`range::view`), in the caller's task, with
//! no message; writes go through the range's inbox (`range::inbox`). This is the one
//! place that says what a closed mailbox or a dropped answer means for each other request:
//! - not delivered (the actor stopped before it saw the request): nothing happened, so the
//!   caller hears `NotOwner` and may retry on the next owner;
//! - delivered but never answered: for a write or a transaction that appends, the outcome is
//!   unknown (`Timeout`, never "not written"); for anything else, `NotOwner`.

use actix::{Actor, Addr, ArbiterHandle};
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeStats, Reply, Versioned, WriteId};
use ampstore_common::txn::TxnDecision;
use ampstore_common::wire::data::Page;
use ampstore_common::{Key, wire};
use ampstore_store::meta::Owner;
use std::sync::Arc;
use tokio::sync::oneshot;

use super::actor::{
    DrainWrites, DropMsg, MergeCloseMsg, MergeEndMsg, RangeActor, ReleaseMsg, SnapshotMsg, SplitNowMsg, StatsMsg,
    TxnPrepareMsg, TxnResolveMsg,
};
use super::core::{MergePlan, RangeCore, Write};
use super::host::{RangeEnv, Responder};
use super::inbox::{Pushed, WriteInbox};
use super::machine::{MergeClosed, Prepare};
use super::view::ViewCell;
use crate::liveness::Liveness;

/// A serving range, as the node's directory holds it: its actor, the readers' view of its
/// memtable, and its write inbox. Cheap to clone: one shared pointer (every request clones
/// the handle it is routed to).
#[derive(Clone)]
pub struct RangeHandle(Arc<Parts>);

pub struct Parts {
    addr: Addr<RangeActor>,
    view: Arc<ViewCell>,
    inbox: Arc<WriteInbox>,
    liveness: Arc<Liveness>,
}

impl std::ops::Deref for RangeHandle {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The request never reached the range (its actor stopped): nothing was done.
fn not_delivered() -> Error {
    Error::NotOwner { hint: None }
}

impl RangeHandle {
    /// Starts serving a loaded range on `arbiter` (its thread). `instance` tells this actor
    /// from a later one of the same range.
    pub fn start(
        core: RangeCore<Responder>,
        owner: Owner,
        env: Arc<RangeEnv>,
        instance: u64,
        arbiter: &ArbiterHandle,
    ) -> RangeHandle {
        // Readers may read the loaded data at once; the actor applies every change to it.
        let view =
            Arc::new(ViewCell::new(core.shared_data().clone(), core.range().clone(), owner.epoch, !core.is_fenced()));
        let liveness = env.liveness.clone();
        let inbox = Arc::new(WriteInbox::default());
        let (cell, actor_inbox) = (view.clone(), inbox.clone());
        let addr = RangeActor::start_in_arbiter(arbiter, move |_| {
            RangeActor::new(core, owner, env, instance, cell, actor_inbox)
        });
        RangeHandle(Arc::new(Parts { addr, view, inbox, liveness }))
    }

    /// The value and version at `key` (`None`: absent), from the range's memtable: no turn
    /// through the actor.
    pub fn get(&self, key: &Key) -> Result<Option<Versioned>, Error> {
        self.view.get(&self.liveness, key)
    }

    /// How long `key` has to live, from the memtable.
    pub fn ttl(&self, key: &Key) -> Result<ampstore_common::protocol::KeyTtl, Error> {
        self.view.ttl(&self.liveness, key)
    }

    /// One page of `[start, end)` within this range, from its memtable.
    pub fn scan(&self, start: &Key, end: Option<&Key>, limit: usize, reverse: bool) -> Result<Page, Error> {
        let reply = self.view.scan(&self.liveness, start, end, limit, reverse)?;
        <wire::data::Scan as wire::Call>::reply(reply)
    }

    /// A logged write; answers once it is durable. It goes through the range's inbox
    /// (`range::inbox`): writes that arrive while the actor is busy reach it together.
    pub async fn write(&self, write: Write) -> Result<Reply, Error> {
        let (tx, rx) = Responder::once();
        self.write_to(write, tx);
        // Never answered: the range stopped with the write somewhere on its way to the log
        // (the range answers what it knows, and refuses what it never took; this is what it
        // could not), so the outcome is unknown.
        rx.await.map_err(|_| Error::Timeout)?
    }

    /// [`RangeHandle::write`] answered through `reply` (a connection's request handed on,
    /// `Service::start`): no future waits for it.
    pub fn write_to(&self, write: Write, reply: Responder) {
        match self.inbox.push(write, reply) {
            Ok(Pushed::First) => self.wake(),
            Ok(Pushed::Queued) => {}
            Err((e, reply)) => reply.send(Err(e)),
        }
    }

    /// Tells the actor its inbox has writes. One such message at most is needed per
    /// non-empty inbox, so it may pass the mailbox's bound; an actor that is gone refuses
    /// what waits (never delivered: nothing was written).
    fn wake(&self) {
        match self.addr.try_send(DrainWrites) {
            Ok(()) => {}
            Err(actix::prelude::SendError::Full(msg)) => self.addr.do_send(msg),
            Err(actix::prelude::SendError::Closed(_)) => self.inbox.refuse_all(&not_delivered()),
        }
    }

    /// A snapshot now; answers `Snapshotted`.
    pub async fn snapshot(&self) -> Result<Reply, Error> {
        let (tx, rx) = Responder::once();
        self.addr.send(SnapshotMsg { reply: tx }).await.map_err(|_| not_delivered())?;
        rx.await.map_err(|_| not_delivered())?
    }

    /// Stops serving: finishes the append in flight, snapshots when dirty, clears the owner.
    /// Answers `Released`.
    pub async fn release(&self) -> Result<Reply, Error> {
        let (tx, rx) = Responder::once();
        self.addr.send(ReleaseMsg { reply: Some(tx) }).await.map_err(|_| not_delivered())?;
        rx.await.map_err(|_| not_delivered())?
    }

    /// The node's epoch ended: stop at once (nothing is written; the next owner fences).
    pub fn drop_now(&self) {
        self.addr.do_send(DropMsg);
    }

    /// The range's statistics; `NotOwner` once it stopped.
    pub async fn stats(&self) -> Result<RangeStats, Error> {
        self.addr.send(StatsMsg).await.map_err(|_| not_delivered())
    }

    /// Splits now, whatever the range's size (admin `Split`).
    pub async fn split_now(&self) -> Result<(), Error> {
        self.addr.send(SplitNowMsg).await.map_err(|_| not_delivered())?
    }

    /// Closes the log for a merge and hands over the data; writes get `RangeLoading` from
    /// then on.
    pub async fn merge_close(&self, plan: MergePlan) -> Result<MergeClosed, Error> {
        let (tx, rx) = oneshot::channel();
        self.addr.send(MergeCloseMsg { plan, reply: tx }).await.map_err(|_| not_delivered())?;
        rx.await.map_err(|_| not_delivered())?
    }

    /// The merge is over for this range: it stops without touching its descriptor.
    pub async fn merge_end(&self) {
        let _ = self.addr.send(MergeEndMsg).await;
    }

    /// Prepares a transaction here (with `prepare.local`, a transaction of this range alone:
    /// also appends it and answers `TxnCommitted`).
    pub async fn txn_prepare(&self, prepare: Prepare) -> Result<Reply, Error> {
        // Unanswered after an append may have started: unknown for a local transaction,
        // which appends; a participant's prepare only holds, and the coordinator aborts.
        let unanswered = if prepare.local { Error::Timeout } else { not_delivered() };
        let (tx, rx) = Responder::once();
        self.addr.send(TxnPrepareMsg { prepare, reply: tx }).await.map_err(|_| not_delivered())?;
        rx.await.map_err(|_| unanswered)?
    }

    /// Finishes a prepared transaction; answers `TxnResolved`. A range that stopped meanwhile
    /// may have appended the commit or not: `Timeout` (the coordinator asks again).
    pub async fn txn_resolve(&self, txn_id: WriteId, decision: TxnDecision) -> Result<Reply, Error> {
        let (tx, rx) = Responder::once();
        self.addr.send(TxnResolveMsg { txn_id, decision, reply: tx }).await.map_err(|_| Error::Timeout)?;
        rx.await.map_err(|_| Error::Timeout)?
    }
}
