//! One request to the node: validate, route to the range actor, answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::{Actor, Addr};
use ampstore_common::error::Error;
use ampstore_common::limits::FRAME_BYTES_MAX;
use ampstore_common::lists::PushId;
use ampstore_common::ownership;
use ampstore_common::protocol::{NodeStats, Op, PROTOCOL_VERSION, RangeState, RangeStats, Reply, Role, ServerInfo};
use ampstore_common::write_ids::WriteKey;
use ampstore_common::{Key, RangeId, Seq};
use ampstore_server::metrics::Metrics;
use ampstore_server::rpc::Service;
use ampstore_store::meta;
use tokio::sync::oneshot;

use crate::directory::Slot;
use crate::range::actor::{
    DropMsg, RangeActor, ReadMsg, ReleaseMsg, SnapshotMsg, SplitNowMsg, StatsMsg, TxnPrepareMsg, WriteMsg,
};
use crate::range::batch::LoggedOp;
use crate::range::core::{Condition, Write};
use crate::range::load;
use crate::range::split::{self, SplitJob};
use crate::shared::NodeShared;

/// How soon a client should retry a range that is loading.
const LOADING_RETRY_MS: u64 = 50;
/// Attempts at loading a range that fails on transient store errors, and the pause before
/// the second (then four times longer each time: 0.1 + 0.4 + 1.6 s in all).
const LOAD_ATTEMPTS_MAX: u32 = 4;
const LOAD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);

/// An error that may go away by itself (the store was unreachable or slow).
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Timeout)
}

impl Service for NodeShared {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.node_id.clone(), role: Role::Node }
    }

    fn handle(self: &Arc<Self>, op: Op) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.ops_total.fetch_add(1, Ordering::Relaxed);
        handle(self, op)
    }

    fn cluster_token(&self) -> Option<&str> {
        self.cluster_token.as_deref()
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }
}

pub async fn handle(shared: &Arc<NodeShared>, op: Op) -> Result<Reply, Error> {
    op.validate()?;
    match op {
        Op::Ping => Ok(Reply::Pong),
        Op::Get { key } => {
            let addr = route_key(shared, &key)?;
            read(&addr, ReadMsg::Get { key }).await
        }
        Op::GetMany { keys } => {
            let mut values = Vec::with_capacity(keys.len());
            let mut bytes = 0usize;
            for key in keys {
                let addr = route_key(shared, &key)?;
                let Reply::Value(v) = read(&addr, ReadMsg::Get { key }).await? else {
                    return Err(Error::internal("get answered with another reply"));
                };
                bytes += v.as_ref().map_or(0, |v| v.value.len() + 32);
                if bytes > FRAME_BYTES_MAX - 64 * 1024 {
                    return Err(Error::too_large("get_many response", bytes, FRAME_BYTES_MAX));
                }
                values.push(v);
            }
            Ok(Reply::Values(values))
        }
        Op::Put { key, value, write_id } => {
            let addr = route_key(shared, &key)?;
            let write_id = write_id.map(WriteKey::Write);
            write(&addr, Write { op: LoggedOp::Put { key, value }, condition: Condition::None, write_id }).await
        }
        Op::PutIfVersion { key, value, expected, write_id } => {
            let addr = route_key(shared, &key)?;
            let write_id = write_id.map(WriteKey::Write);
            let w = Write { op: LoggedOp::Put { key, value }, condition: Condition::Version(expected), write_id };
            write(&addr, w).await
        }
        Op::Batch { ops } => {
            // All at once, so the writes to one range share its next log entries.
            let mut tasks = tokio::task::JoinSet::new();
            let n = ops.len();
            for (i, op) in ops.into_iter().enumerate() {
                let shared = shared.clone();
                tasks.spawn(async move { (i, batched(&shared, op).await) });
            }
            let mut results: Vec<Result<Reply, Error>> = (0..n).map(|_| Err(Error::internal("not run"))).collect();
            while let Some(done) = tasks.join_next().await {
                if let Ok((i, r)) = done {
                    results[i] = r;
                }
            }
            Ok(Reply::Batch { results })
        }
        Op::Enqueue { queue, shard, task_id, payload } => {
            crate::queue::enqueue(shared, &queue, shard, task_id, payload).await
        }
        Op::Dequeue { queue, shard, start, max, visibility_ms } => {
            crate::queue::dequeue(shared, &queue, shard, start, max, visibility_ms).await
        }
        Op::TaskAck { queue, task } => crate::queue::settle(shared, &queue, task, crate::queue::Settle::Ack).await,
        Op::TaskNack { queue, task } => crate::queue::settle(shared, &queue, task, crate::queue::Settle::Nack).await,
        Op::TaskExtend { queue, task, visibility_ms } => {
            crate::queue::settle(shared, &queue, task, crate::queue::Settle::Extend { visibility_ms }).await
        }
        Op::Push { key, element, push_id } => push(shared, key, element, push_id).await,
        Op::Delete { key, write_id } => {
            let addr = route_key(shared, &key)?;
            let write_id = write_id.map(WriteKey::Write);
            write(&addr, Write { op: LoggedOp::Delete { key }, condition: Condition::None, write_id }).await
        }
        Op::DeleteRange { start, end, write_id } => {
            let addr = route_key(shared, &start)?;
            let write_id = write_id.map(WriteKey::Write);
            write(&addr, Write { op: LoggedOp::DeleteRange { start, end }, condition: Condition::None, write_id }).await
        }
        Op::Scan { start, end, limit, reverse } => {
            let addr =
                if reverse { route(shared.directory.lookup_below(end.as_ref()))? } else { route_key(shared, &start)? };
            read(&addr, ReadMsg::Scan { start, end, limit: limit as usize, reverse }).await
        }
        Op::Assign { range_id, start, claim } => assign(shared, range_id, start, claim).await,
        Op::Release { range_id } => {
            let addr = serving(shared, range_id)?;
            let (tx, rx) = oneshot::channel();
            addr.send(ReleaseMsg { reply: Some(tx) }).await.map_err(|_| not_owner())?;
            rx.await.map_err(|_| not_owner())?
        }
        Op::Split { range_id } => {
            let addr = serving(shared, range_id)?;
            addr.send(SplitNowMsg).await.map_err(|_| not_owner())?.map(|()| Reply::Pong)
        }
        Op::Snapshot { range_id } => {
            let addr = serving(shared, range_id)?;
            let (tx, rx) = oneshot::channel();
            addr.send(SnapshotMsg { reply: tx }).await.map_err(|_| not_owner())?;
            rx.await.map_err(|_| not_owner())?
        }
        Op::RangeStats => Ok(Reply::Stats(stats(shared).await)),
        Op::Merge { left_id, right_id } => {
            // In a task of its own: a merge dropped after closing both parents' logs would
            // leave them refusing writes for good. The caller only waits for it.
            let shared = shared.clone();
            let merge: AssignFuture =
                Box::pin(async move { crate::range::merge::run(&shared, left_id, right_id).await });
            tokio::spawn(merge).await.unwrap_or_else(|e| Err(Error::internal(format!("the merge task failed: {e}"))))
        }
        Op::Txn { txn_id, parts, hold_ms } => crate::txn::run(shared, txn_id, parts, hold_ms).await,
        Op::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms } => {
            let addr = serving(shared, range_id)?;
            let (tx, rx) = oneshot::channel();
            let msg = TxnPrepareMsg { txn_id, checks, writes, reads, hold_ms, local: false, reply: tx };
            addr.send(msg).await.map_err(|_| not_owner())?;
            rx.await.map_err(|_| not_owner())?
        }
        Op::TxnResolve { txn_id, range_id, seq, decision } => {
            crate::txn::resolve(shared, txn_id, range_id, seq, decision).await
        }
        Op::Locate { .. }
        | Op::LocateRange { .. }
        | Op::Drain { .. }
        | Op::MasterStatus
        | Op::SplitRange { .. }
        | Op::CommitMerge { .. }
        | Op::Members => Err(Error::invalid("this is a node; send routing requests to the master")),
    }
}

/// One operation of a `Batch` (pushes and enqueues only; `Op::validate` checked that).
async fn batched(shared: &Arc<NodeShared>, op: Op) -> Result<Reply, Error> {
    match op {
        Op::Push { key, element, push_id } => push(shared, key, element, push_id).await,
        Op::Enqueue { queue, shard, task_id, payload } => {
            crate::queue::enqueue(shared, &queue, shard, task_id, payload).await
        }
        other => Err(Error::invalid(format!("a batch cannot hold {}", other.name()))),
    }
}

async fn push(shared: &NodeShared, key: Key, element: Vec<u8>, push_id: PushId) -> Result<Reply, Error> {
    // The element's key is a pure function of the list and the push id, so a retried push
    // finds its element in place: applied once, whatever happens. `ListTail` keeps the
    // list in the order pushes took effect.
    let element_key = ampstore_common::lists::element_key(&key, push_id);
    let addr = route_key(shared, &element_key)?;
    let w = Write {
        op: LoggedOp::Put { key: element_key, value: element },
        condition: Condition::ListTail,
        write_id: Some(WriteKey::Push(push_id)),
    };
    write(&addr, w).await
}

fn not_owner() -> Error {
    Error::NotOwner { hint: None }
}

/// Routes a key; a key this node does not serve gets `NotOwner` with a hint when known.
pub(crate) fn route_key(shared: &NodeShared, key: &Key) -> Result<Addr<RangeActor>, Error> {
    match shared.directory.lookup(key) {
        None => Err(Error::NotOwner { hint: shared.directory.hint_for(key) }),
        slot => route(slot),
    }
}

fn route(slot: Option<(RangeId, Slot)>) -> Result<Addr<RangeActor>, Error> {
    match slot {
        None => Err(not_owner()),
        Some((_, Slot::Loading { .. })) => Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS }),
        Some((id, Slot::Failed { error, .. })) => Err(Error::unavailable(format!("{id} failed to load: {error}"))),
        Some((_, Slot::Serving { addr, .. })) => Ok(addr),
    }
}

fn serving(shared: &NodeShared, range_id: RangeId) -> Result<Addr<RangeActor>, Error> {
    route(shared.directory.get(range_id).map(|s| (range_id, s)))
}

pub(crate) async fn read(addr: &Addr<RangeActor>, msg: ReadMsg) -> Result<Reply, Error> {
    // A closed mailbox means the actor stopped (released or fenced) since routing.
    addr.send(msg).await.map_err(|_| not_owner())?
}

pub(crate) async fn write(addr: &Addr<RangeActor>, write: Write) -> Result<Reply, Error> {
    let (tx, rx) = oneshot::channel();
    // Not delivered: the range stopped before it saw the write, so nothing was written.
    addr.send(WriteMsg { write, reply: tx }).await.map_err(|_| not_owner())?;
    // Delivered but never answered: the range stopped with the write somewhere on its way to
    // the log (the range answers what it knows; this is what it could not), so the outcome
    // is unknown.
    rx.await.map_err(|_| Error::Timeout)?
}

/// A boxed `Send` future: assigning can lead back to assigning (a split completed on load
/// loads its children here), and a named type breaks that cycle for the compiler.
pub(crate) type AssignFuture = std::pin::Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send>>;

/// Loads and serves the range at `start` (see `assign_inner`).
pub(crate) fn assign(shared: &Arc<NodeShared>, range_id: RangeId, start: Key, claim: bool) -> AssignFuture {
    let shared = shared.clone();
    Box::pin(async move { assign_inner(&shared, range_id, start, claim).await })
}

async fn assign_inner(shared: &Arc<NodeShared>, range_id: RangeId, start: Key, claim: bool) -> Result<Reply, Error> {
    if !shared.liveness.is_valid() {
        return Err(Error::unavailable("this node is not live (no valid heartbeat)"));
    }
    // One load of a range at a time on this node, taken before any await: two assigns of
    // one range must never both load it (two instances, one of which would later clear the
    // owner the other serves under).
    let Some(guard) = shared.directory.begin_assign(range_id) else {
        return Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS });
    };
    match shared.directory.get(range_id) {
        Some(Slot::Serving { addr, instance, epoch, .. }) if epoch != shared.liveness.epoch() => {
            // An instance of an ended epoch refuses every request: never report it as
            // serving. Stop it and load the range afresh in this epoch.
            tracing::warn!(%range_id, old_epoch = epoch.0, "an instance of an ended epoch was still in the directory: reloading");
            shared.directory.remove_instance(range_id, instance);
            addr.do_send(DropMsg);
        }
        Some(Slot::Serving { addr, .. }) => {
            drop(guard);
            let stats = addr.send(StatsMsg).await.map_err(|_| not_owner())?;
            return Ok(Reply::Assigned { range_id, serving_from: stats.applied_seq });
        }
        Some(Slot::Loading { .. }) => return Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS }),
        Some(Slot::Failed { .. }) | None => {}
    }
    // The load runs in a task of its own that the caller's deadline cannot cancel: a load
    // dropped half-way would leave the range `Loading` for good (and a split completion
    // half-done). The caller only waits for it.
    let shared = shared.clone();
    let task = tokio::spawn(async move {
        let result = load_and_serve(&shared, range_id, start, claim).await;
        drop(guard);
        result
    });
    task.await.unwrap_or_else(|e| Err(Error::internal(format!("{range_id}: the load task failed: {e}"))))
}

/// Loads the range and starts serving it (or completes the split its log ends in).
async fn load_and_serve(shared: &Arc<NodeShared>, range_id: RangeId, start: Key, claim: bool) -> Result<Reply, Error> {
    let desc = meta::get_range(shared.backend.meta.as_ref(), &start)
        .await?
        .ok_or_else(|| Error::invalid(format!("no range starts at {start}")))?
        .record;
    let range = desc.range.clone();
    shared.directory.insert(range_id, Slot::Loading { range: range.clone() });
    let batch_bytes = shared.cfg.batch_bytes as usize;
    // A transient store error (unavailable, timed out) is retried with backoff; corruption
    // is not (it will not go away).
    let mut backoff = LOAD_RETRY_FIRST;
    let mut attempt = 1;
    let loaded = loop {
        match load::load(&shared.backend, range_id, &start, shared.owner(), claim, batch_bytes).await {
            Err(e) if is_transient(&e) && attempt < LOAD_ATTEMPTS_MAX => {
                tracing::warn!(%range_id, attempt, error = %e, ?backoff, "range load failed on a transient error; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 4;
                attempt += 1;
            }
            other => break other,
        }
    };
    match loaded {
        Ok(loaded) if loaded.core.split_state().is_some() => {
            // The log ends in a split: finish it (children serve here), never serve the parent
            // (its slot stays `Loading` meanwhile).
            let Some((split_seq, plan)) = loaded.core.split_state().cloned() else {
                return Err(Error::internal("split state vanished"));
            };
            tracing::info!(%range_id, split_key = %plan.split_key, "loaded a range whose log ends in a split: completing it");
            let (left, right) = loaded.core.divide(&plan.split_key);
            let job = SplitJob {
                parent_id: range_id,
                parent_range: range,
                split_seq,
                plan: plan.clone(),
                left,
                right,
                write_ids: loaded.core.write_ids().clone(),
                owner: loaded.owner,
            };
            let done = split::complete(shared, job).await;
            shared.directory.remove(range_id);
            done?;
            Err(Error::conflict(format!(
                "{range_id} had split into {} and {}; both serve here now",
                plan.left, plan.right
            )))
        }
        Ok(loaded) => {
            crate::test_points::pause_once("assign:loaded").await;
            let epoch = loaded.owner.epoch;
            let epoch_ended =
                || !ownership::instance_may_serve(epoch, shared.liveness.epoch(), shared.liveness.is_valid());
            if epoch_ended() {
                // The node's epoch ended while the range loaded: an instance of it would
                // refuse every request. The master assigns it again in the new epoch.
                shared.directory.remove(range_id);
                return Err(Error::NotOwner { hint: None });
            }
            let serving_from: Seq = loaded.core.next_seq();
            let instance = shared.next_instance();
            let (core, owner, actor_shared) = (loaded.core, loaded.owner, shared.clone());
            let addr = RangeActor::start_in_arbiter(shared.arbiter_for(range_id), move |_| {
                RangeActor::new(core, owner, actor_shared, instance)
            });
            shared.directory.insert(range_id, Slot::Serving { range, addr: addr.clone(), instance, epoch });
            if epoch_ended() {
                // The epoch ended between the check and the insert (the directory was
                // cleared before it): take the instance out again.
                shared.directory.remove_instance(range_id, instance);
                addr.do_send(DropMsg);
                return Err(Error::NotOwner { hint: None });
            }
            Ok(Reply::Assigned { range_id, serving_from })
        }
        Err(e) => {
            match &e {
                // Not ours to serve: forget it.
                Error::NotOwner { .. } | Error::Conflict { .. } | Error::Invalid { .. } => {
                    shared.directory.remove(range_id)
                }
                // The store kept failing: give the range back (clear our ownership) so that a
                // master places it elsewhere, rather than hold it unserved.
                e if is_transient(e) => {
                    shared.directory.remove(range_id);
                    let me = shared.owner();
                    match load::clear_owner(&shared.backend, range_id, &start, &me).await {
                        Ok(()) => tracing::warn!(%range_id, error = %e, "range load kept failing: gave the range back"),
                        Err(clear) => {
                            tracing::error!(%range_id, error = %e, clear_error = %clear, "range load kept failing and the range could not be given back")
                        }
                    }
                }
                // Ours but unreadable (a corrupt or missing snapshot): not served, and says why.
                _ => {
                    tracing::error!(%range_id, error = %e, "range failed to load; not serving it");
                    shared.directory.insert(range_id, Slot::Failed { range, error: e.to_string() });
                }
            }
            Err(e)
        }
    }
}

/// The node's ranges and their state (also served on the admin port).
pub async fn stats(shared: &Arc<NodeShared>) -> NodeStats {
    let mut ranges = Vec::new();
    // Ask every serving range at once: one busy range must not hold up the whole answer.
    let mut asks = tokio::task::JoinSet::new();
    let mut others = Vec::new();
    for (range_id, slot) in shared.directory.all() {
        match slot {
            Slot::Serving { addr, range, .. } => {
                asks.spawn(async move { (range_id, range, addr.send(StatsMsg).await.ok()) });
            }
            other => others.push((range_id, other)),
        }
    }
    let mut answered = Vec::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(a) = done {
            answered.push(a);
        }
    }
    for (range_id, range, stats) in answered {
        ranges.push(match stats {
            Some(s) => s,
            None => RangeStats {
                range_id,
                range,
                state: RangeState::Released,
                keys: 0,
                data_bytes: 0,
                applied_seq: Seq(0),
                checkpoint_seq: Seq(0),
                log_bytes_since_checkpoint: 0,
                error: None,
                idle_ms: 0,
            },
        });
    }
    for (range_id, slot) in others {
        let blank = |state: RangeState, error: Option<String>, range| RangeStats {
            range_id,
            range,
            state,
            keys: 0,
            data_bytes: 0,
            applied_seq: Seq(0),
            checkpoint_seq: Seq(0),
            log_bytes_since_checkpoint: 0,
            error,
            idle_ms: 0,
        };
        ranges.push(match slot {
            Slot::Serving { addr, range, .. } => match addr.send(StatsMsg).await {
                Ok(s) => s,
                Err(_) => blank(RangeState::Released, None, range),
            },
            Slot::Loading { range } => blank(RangeState::Loading, None, range),
            Slot::Failed { range, error } => blank(RangeState::Failed, Some(error), range),
        });
    }
    ranges.sort_by(|a, b| a.range.start.cmp(&b.range.start));
    NodeStats {
        node_id: shared.node_id.clone(),
        epoch: shared.liveness.epoch(),
        liveness_ms_left: shared.liveness.ms_left(),
        ranges,
        resident_bytes: resident_bytes(),
        ops_total: shared.ops_total.load(Ordering::Relaxed),
        memory_budget_bytes: shared.cfg.memory_budget_bytes,
        split_bytes: shared.cfg.split_bytes,
    }
}

/// The process's resident set size, from `/proc/self/statm` (0 where that does not exist).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
