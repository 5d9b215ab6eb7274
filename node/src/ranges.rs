//! The node's ranges: routing a key or id to its range actor, loading a range (`assign`),
//! and their statistics. Below the service, the transaction coordinator, the queue and the
//! reshaper, which all reach ranges through here and never back through the service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::{Actor, Addr};
use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{NodeStats, RangeState, RangeStats, Reply};
use ampstore_common::{Key, RangeId, Seq};
use ampstore_store::meta;
use tokio::sync::oneshot;

use crate::directory::Slot;
use crate::range::actor::{DropMsg, RangeActor, ReadMsg, StatsMsg, WriteMsg};
use crate::range::core::Write;
use crate::range::host::{SplitJob, SplitTask};
use crate::range::load;
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

pub fn not_owner() -> Error {
    Error::NotOwner { hint: None }
}

/// Routes a key; a key this node does not serve gets `NotOwner` with a hint when known.
pub fn route_key(shared: &NodeShared, key: &Key) -> Result<Addr<RangeActor>, Error> {
    match shared.directory.lookup(key) {
        None => Err(Error::NotOwner { hint: shared.directory.hint_for(key) }),
        slot => route(slot),
    }
}

pub fn route(slot: Option<(RangeId, Slot)>) -> Result<Addr<RangeActor>, Error> {
    match slot {
        None => Err(not_owner()),
        Some((_, Slot::Loading { .. })) => Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS }),
        Some((id, Slot::Failed { error, .. })) => Err(Error::unavailable(format!("{id} failed to load: {error}"))),
        Some((_, Slot::Serving { addr, .. })) => Ok(addr),
    }
}

pub fn serving(shared: &NodeShared, range_id: RangeId) -> Result<Addr<RangeActor>, Error> {
    route(shared.directory.get(range_id).map(|s| (range_id, s)))
}

pub async fn read(addr: &Addr<RangeActor>, msg: ReadMsg) -> Result<Reply, Error> {
    // A closed mailbox means the actor stopped (released or fenced) since routing.
    addr.send(msg).await.map_err(|_| not_owner())?
}

pub async fn write(addr: &Addr<RangeActor>, write: Write) -> Result<Reply, Error> {
    let (tx, rx) = oneshot::channel();
    // Not delivered: the range stopped before it saw the write, so nothing was written.
    addr.send(WriteMsg { write, reply: tx }).await.map_err(|_| not_owner())?;
    // Delivered but never answered: the range stopped with the write somewhere on its way to
    // the log (the range answers what it knows; this is what it could not), so the outcome
    // is unknown.
    rx.await.map_err(|_| Error::Timeout)?
}

/// Loads and serves the range at `start`, or answers how it serves already.
pub async fn assign(shared: &Arc<NodeShared>, range_id: RangeId, start: Key, claim: bool) -> Result<Reply, Error> {
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
            // The reshaper completes it (and takes the parent's slot out after).
            let (done_tx, done) = oneshot::channel();
            shared.directory.queue_split(SplitTask { job, done: Some(done_tx) })?;
            done.await.map_err(|_| Error::unavailable("the node stopped before the split completed"))??;
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
            let (core, owner, env) = (loaded.core, loaded.owner, shared.range_env.clone());
            let addr = RangeActor::start_in_arbiter(shared.arbiter_for(range_id), move |_| {
                RangeActor::new(core, owner, env, instance)
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
