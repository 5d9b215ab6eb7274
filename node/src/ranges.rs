//! [`Ranges`]: the node's ranges. It owns the directory (which range serves which keys, and
//! how: loading, serving, failed) and is the only way to a range: routing a key or id to a
//! [`RangeHandle`], loading a range (`assign`), handing splits and merges to the reshaper,
//! and their statistics. Below the service, the transaction coordinator, the queue and the
//! reshaper, which all reach ranges through here and never back through the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::ArbiterHandle;
use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{RangeState, RangeStats, Reply};
use ampstore_common::{Key, KeyRange, NodeId, RangeId, Seq};
use ampstore_store::meta::{self, Owner};
use tokio::sync::{mpsc, oneshot};

use crate::directory::{Directory, MergeTask, ReshapeTask, Slot};
use crate::range::handle::RangeHandle;
use crate::range::host::{RangeEnv, SplitJob, SplitTask};
use crate::range::load;

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

/// What a slot means to a request: its range's handle, or why not.
fn route(slot: Option<(RangeId, Slot)>) -> Result<RangeHandle, Error> {
    match slot {
        None => Err(not_owner()),
        Some((_, Slot::Loading { .. })) => Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS }),
        Some((id, Slot::Failed { error, .. })) => Err(Error::unavailable(format!("{id} failed to load: {error}"))),
        Some((_, Slot::Serving { handle, .. })) => Ok(handle),
    }
}

/// The node's ranges (see the module doc).
pub struct Ranges {
    directory: Arc<Directory>,
    /// What range actors see of the node; its `host` is `directory`.
    env: Arc<RangeEnv>,
    node_id: NodeId,
    /// The threads range actors run on.
    arbiters: Vec<ArbiterHandle>,
    /// Numbers that tell one actor instance of a range from a later one.
    instances: AtomicU64,
}

impl Ranges {
    /// No ranges yet; split and merge jobs go out on `reshaper`.
    pub fn new(
        node_id: NodeId,
        env_of: impl FnOnce(Arc<Directory>) -> RangeEnv,
        arbiters: Vec<ArbiterHandle>,
        reshaper: mpsc::UnboundedSender<ReshapeTask>,
    ) -> Ranges {
        let directory = Arc::new(Directory::new(reshaper));
        let env = Arc::new(env_of(directory.clone()));
        Ranges { directory, env, node_id, arbiters, instances: AtomicU64::new(1) }
    }

    /// This node as a range owner, in its current epoch.
    pub fn owner(&self) -> Owner {
        Owner { node_id: self.node_id.clone(), epoch: self.env.liveness.epoch() }
    }

    /// Routes a key; a key this node does not serve gets `NotOwner` with a hint when known.
    pub fn route_key(&self, key: &Key) -> Result<RangeHandle, Error> {
        if let Some(handle) = self.directory.serving_handle(key) {
            return Ok(handle);
        }
        match self.directory.lookup(key) {
            None => Err(Error::NotOwner { hint: self.directory.hint_for(key) }),
            slot => route(slot),
        }
    }

    /// Routes a reverse scan: the range holding the greatest key below `end`.
    pub fn route_below(&self, end: Option<&Key>) -> Result<RangeHandle, Error> {
        route(self.directory.lookup_below(end))
    }

    /// The range `range_id` if it serves here, else why not.
    pub fn serving(&self, range_id: RangeId) -> Result<RangeHandle, Error> {
        route(self.directory.get(range_id).map(|s| (range_id, s)))
    }

    /// The range `range_id` and its key range, if it serves here.
    pub fn serving_with_range(&self, range_id: RangeId) -> Result<(RangeHandle, KeyRange), Error> {
        match self.directory.get(range_id) {
            Some(Slot::Serving { handle, range, .. }) => Ok((handle, range)),
            other => Err(route(other.map(|s| (range_id, s))).err().unwrap_or_else(not_owner)),
        }
    }

    /// A range is being reshaped: requests get `RangeLoading` until `forget` or a new load.
    pub fn set_loading(&self, range_id: RangeId, range: KeyRange) {
        self.directory.insert(range_id, Slot::Loading { range });
    }

    /// The range no longer serves here (split or merged away).
    pub fn forget(&self, range_id: RangeId) {
        self.directory.remove(range_id);
    }

    /// The node's epoch ended: every range stops at once (no I/O; the next owner fences).
    pub fn drop_all(&self) {
        for (_, slot) in self.directory.clear() {
            if let Slot::Serving { handle, .. } = slot {
                handle.drop_now();
            }
        }
    }

    /// Every range that serves here now.
    pub fn all_serving(&self) -> Vec<(RangeId, RangeHandle)> {
        let all = self.directory.all().into_iter();
        all.filter_map(|(id, slot)| match slot {
            Slot::Serving { handle, .. } => Some((id, handle)),
            _ => None,
        })
        .collect()
    }

    /// Merges two adjacent ranges this node serves, through the reshaper's queue (a merge
    /// dropped half-way would leave both ranges refusing writes, so it runs in the
    /// reshaper's task; the caller only waits for it). Answers `MergeDone`.
    pub async fn merge(&self, left_id: RangeId, right_id: RangeId) -> Result<Reply, Error> {
        let (done, answer) = oneshot::channel();
        self.directory.queue(ReshapeTask::Merge(MergeTask { left_id, right_id, done }))?;
        answer.await.map_err(|_| Error::unavailable("the node stopped before the merge completed"))?
    }

    /// Loads and serves the range at `start`, or answers how it serves already.
    pub async fn assign(self: &Arc<Self>, range_id: RangeId, start: Key, claim: bool) -> Result<Reply, Error> {
        if !self.env.liveness.is_valid() {
            return Err(Error::unavailable("this node is not live (no valid heartbeat)"));
        }
        // One load of a range at a time on this node, taken before any await: two assigns
        // of one range must never both load it (two instances, one of which would later
        // clear the owner the other serves under).
        let Some(guard) = self.directory.begin_assign(range_id) else {
            return Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS });
        };
        match self.directory.get(range_id) {
            Some(Slot::Serving { handle, instance, epoch, .. }) if epoch != self.env.liveness.epoch() => {
                // An instance of an ended epoch refuses every request: never report it as
                // serving. Stop it and load the range afresh in this epoch.
                tracing::warn!(%range_id, old_epoch = epoch.0, "an instance of an ended epoch was still in the directory: reloading");
                self.directory.remove_instance(range_id, instance);
                handle.drop_now();
            }
            Some(Slot::Serving { handle, .. }) => {
                drop(guard);
                let stats = handle.stats().await?;
                return Ok(Reply::Assigned { range_id, serving_from: stats.applied_seq });
            }
            Some(Slot::Loading { .. }) => return Err(Error::RangeLoading { retry_after_ms: LOADING_RETRY_MS }),
            Some(Slot::Failed { .. }) | None => {}
        }
        // The load runs in a task of its own that the caller's deadline cannot cancel: a
        // load dropped half-way would leave the range `Loading` for good (and a split
        // completion half-done). The caller only waits for it.
        let ranges = self.clone();
        let task = tokio::spawn(async move {
            let result = ranges.load_and_serve(range_id, start, claim).await;
            drop(guard);
            result
        });
        task.await.unwrap_or_else(|e| Err(Error::internal(format!("{range_id}: the load task failed: {e}"))))
    }

    /// The arbiter (thread) a range's actor runs on: spread by range id.
    fn arbiter_for(&self, range: RangeId) -> &ArbiterHandle {
        let i = (range.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.arbiters.len();
        &self.arbiters[i]
    }

    /// Loads the range and starts serving it (or completes the split its log ends in).
    async fn load_and_serve(&self, range_id: RangeId, start: Key, claim: bool) -> Result<Reply, Error> {
        let desc = meta::get_range(self.env.backend.meta.as_ref(), &start)
            .await?
            .ok_or_else(|| Error::invalid(format!("no range starts at {start}")))?
            .record;
        let range = desc.range.clone();
        self.directory.insert(range_id, Slot::Loading { range: range.clone() });
        let batch_bytes = self.env.cfg.batch_bytes as usize;
        // A transient store error (unavailable, timed out) is retried with backoff; corruption
        // is not (it will not go away).
        let mut backoff = LOAD_RETRY_FIRST;
        let mut attempt = 1;
        let loaded = loop {
            match load::load(&self.env.backend, range_id, &start, self.owner(), claim, batch_bytes).await {
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
                self.directory.queue(ReshapeTask::Split(Box::new(SplitTask { job, done: Some(done_tx) })))?;
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
                    || !ownership::instance_may_serve(epoch, self.env.liveness.epoch(), self.env.liveness.is_valid());
                if epoch_ended() {
                    // The node's epoch ended while the range loaded: an instance of it would
                    // refuse every request. The master assigns it again in the new epoch.
                    self.directory.remove(range_id);
                    return Err(Error::NotOwner { hint: None });
                }
                let serving_from: Seq = loaded.core.next_seq();
                let instance = self.instances.fetch_add(1, Ordering::Relaxed);
                let handle = RangeHandle::start(
                    loaded.core,
                    loaded.owner,
                    self.env.clone(),
                    instance,
                    self.arbiter_for(range_id),
                );
                self.directory.insert(range_id, Slot::Serving { range, handle: handle.clone(), instance, epoch });
                if epoch_ended() {
                    // The epoch ended between the check and the insert (the directory was
                    // cleared before it): take the instance out again.
                    self.directory.remove_instance(range_id, instance);
                    handle.drop_now();
                    return Err(Error::NotOwner { hint: None });
                }
                Ok(Reply::Assigned { range_id, serving_from })
            }
            Err(e) => {
                match &e {
                    // Not ours to serve: forget it.
                    Error::NotOwner { .. } | Error::Conflict { .. } | Error::Invalid { .. } => {
                        self.directory.remove(range_id)
                    }
                    // The store kept failing: give the range back (clear our ownership) so that a
                    // master places it elsewhere, rather than hold it unserved.
                    e if is_transient(e) => {
                        self.directory.remove(range_id);
                        let me = self.owner();
                        match load::clear_owner(&self.env.backend, range_id, &start, &me).await {
                            Ok(()) => {
                                tracing::warn!(%range_id, error = %e, "range load kept failing: gave the range back")
                            }
                            Err(clear) => {
                                tracing::error!(%range_id, error = %e, clear_error = %clear, "range load kept failing and the range could not be given back")
                            }
                        }
                    }
                    // Ours but unreadable (a corrupt or missing snapshot): not served, and says why.
                    _ => {
                        tracing::error!(%range_id, error = %e, "range failed to load; not serving it");
                        self.directory.insert(range_id, Slot::Failed { range, error: e.to_string() });
                    }
                }
                Err(e)
            }
        }
    }
}

impl Ranges {
    /// Every range's statistics, by start key. Serving ranges are asked all at once: one
    /// busy range must not hold up the whole answer.
    pub async fn stats(&self) -> Vec<RangeStats> {
        let mut asks = tokio::task::JoinSet::new();
        let mut ranges = Vec::new();
        for (range_id, slot) in self.directory.all() {
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
                write_id_bytes: 0,
            };
            match slot {
                Slot::Serving { handle, range, .. } => {
                    // Stopped since it was listed: it is on its way out.
                    let gone = blank(RangeState::Released, None, range);
                    asks.spawn(async move { handle.stats().await.unwrap_or(gone) });
                }
                Slot::Loading { range } => ranges.push(blank(RangeState::Loading, None, range)),
                Slot::Failed { range, error } => ranges.push(blank(RangeState::Failed, Some(error), range)),
            }
        }
        while let Some(done) = asks.join_next().await {
            if let Ok(stats) = done {
                ranges.push(stats);
            }
        }
        ranges.sort_by(|a, b| a.range.start.cmp(&b.range.start));
        ranges
    }
}
