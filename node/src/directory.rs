//! The ranges a node knows: by id (dashmap) and by start key (ordered index), and the
//! serving ones as a sorted list published after every change (`routes`), which every
//! request reads with no lock: a key is routed with one binary search.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use ampstore_common::error::{Error, OwnerHint};
use ampstore_common::{Key, KeyRange, RangeId};
use dashmap::DashMap;

use tokio::sync::mpsc;

use crate::range::handle::RangeHandle;
use crate::range::host::{RangeHost, SplitJob, SplitTask};

#[derive(Clone)]
pub enum Slot {
    Loading {
        range: KeyRange,
    },
    Serving {
        range: KeyRange,
        handle: RangeHandle,
        instance: u64,
        /// The node epoch the instance was loaded in: it serves only in that epoch.
        epoch: ampstore_common::Epoch,
    },
    /// Loading failed: the range is not served, and requests are told why.
    Failed {
        range: KeyRange,
        error: String,
    },
}

impl Slot {
    pub fn range(&self) -> &KeyRange {
        match self {
            Slot::Loading { range } | Slot::Serving { range, .. } | Slot::Failed { range, .. } => range,
        }
    }
}

/// A serving range in the published routes.
struct Route {
    range: KeyRange,
    handle: RangeHandle,
}

/// Most ranges remembered after they left this node (for `NotOwner` hints).
const DEPARTED_MAX: usize = 4096;

pub struct Directory {
    by_id: DashMap<RangeId, Slot>,
    /// Ranges an assign is loading right now (at most one assign per range).
    assigning: std::sync::Arc<DashMap<RangeId, ()>>,
    by_start: RwLock<BTreeMap<Key, RangeId>>,
    /// The serving ranges by start key, as `by_start` and `by_id` say after the last
    /// change: the request path's routing table. Changes are rare (assign, release, split,
    /// merge); each publishes a new list, built under `publishing` so that the last list
    /// published sees every change made before it.
    routes: ArcSwap<Vec<Route>>,
    publishing: Mutex<()>,
    /// Ranges that left this node, by start key, with who took them when known.
    departed: RwLock<BTreeMap<Key, (KeyRange, Option<OwnerHint>)>>,
    /// Where split and merge jobs go (the node's reshaper). Unbounded: a split job comes
    /// from a range that stopped to split (at most one per range of this node), which cannot
    /// wait; a merge comes from the master, one per pair of ranges.
    reshaper: mpsc::UnboundedSender<ReshapeTask>,
}

/// A job for the node's reshaper (`reshape::run`).
pub enum ReshapeTask {
    /// Boxed: a split job carries the children's data maps (a few hundred bytes by value).
    Split(Box<SplitTask>),
    Merge(MergeTask),
}

/// Merge two adjacent ranges this node serves; `done` hears `MergeDone` or why not.
pub struct MergeTask {
    pub left_id: RangeId,
    pub right_id: RangeId,
    pub done: tokio::sync::oneshot::Sender<Result<ampstore_common::protocol::Reply, Error>>,
}

/// Held while an assign loads a range; the next assign of it may start once it is dropped.
pub struct AssignGuard {
    assigning: std::sync::Arc<DashMap<RangeId, ()>>,
    id: RangeId,
}

impl Drop for AssignGuard {
    fn drop(&mut self) {
        self.assigning.remove(&self.id);
    }
}

impl Directory {
    /// An empty directory whose split and merge jobs go to `reshaper`.
    pub fn new(reshaper: mpsc::UnboundedSender<ReshapeTask>) -> Directory {
        Directory {
            by_id: DashMap::new(),
            assigning: Default::default(),
            by_start: RwLock::default(),
            routes: ArcSwap::from_pointee(Vec::new()),
            publishing: Mutex::new(()),
            departed: RwLock::default(),
            reshaper,
        }
    }

    /// Hands a split or merge job to the reshaper; its `done` hears the outcome. An error
    /// when the reshaper is gone (the node is stopping).
    pub fn queue(&self, task: ReshapeTask) -> Result<(), Error> {
        self.reshaper.send(task).map_err(|_| Error::unavailable("the node is stopping"))
    }

    /// Starts an assign of `id`, atomically: `None` while another assign of it runs.
    pub fn begin_assign(&self, id: RangeId) -> Option<AssignGuard> {
        match self.assigning.entry(id) {
            dashmap::mapref::entry::Entry::Occupied(_) => None,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(());
                Some(AssignGuard { assigning: self.assigning.clone(), id })
            }
        }
    }

    pub fn insert(&self, id: RangeId, slot: Slot) {
        let start = slot.range().start.clone();
        if let Some(old) = self.by_id.insert(id, slot)
            && old.range().start != start
            && let Ok(mut idx) = self.by_start.write()
        {
            idx.remove(&old.range().start);
        }
        if let Ok(mut idx) = self.by_start.write() {
            idx.insert(start, id);
        }
        self.publish_routes();
    }

    /// Publishes the serving ranges (after a change to `by_id` or `by_start`).
    fn publish_routes(&self) {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let routes: Vec<Route> = match self.by_start.read() {
            Ok(idx) => idx
                .values()
                .filter_map(|id| match &*self.by_id.get(id)? {
                    Slot::Serving { range, handle, .. } => Some(Route { range: range.clone(), handle: handle.clone() }),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        self.routes.store(Arc::new(routes));
    }

    pub fn get(&self, id: RangeId) -> Option<Slot> {
        self.by_id.get(&id).map(|s| s.clone())
    }

    /// Removes the range unless it was replaced by a newer actor instance meanwhile.
    pub fn remove_instance(&self, id: RangeId, instance: u64) {
        let removed =
            self.by_id.remove_if(&id, |_, s| matches!(s, Slot::Serving { instance: i, .. } if *i == instance));
        if let Some((_, slot)) = removed
            && let Ok(mut idx) = self.by_start.write()
            && idx.get(&slot.range().start) == Some(&id)
        {
            idx.remove(&slot.range().start);
        }
        self.publish_routes();
    }

    pub fn remove(&self, id: RangeId) {
        if let Some((_, slot)) = self.by_id.remove(&id)
            && let Ok(mut idx) = self.by_start.write()
            && idx.get(&slot.range().start) == Some(&id)
        {
            idx.remove(&slot.range().start);
        }
        self.publish_routes();
    }

    fn slot_of(&self, id: Option<RangeId>) -> Option<(RangeId, Slot)> {
        let id = id?;
        self.by_id.get(&id).map(|s| (id, s.clone()))
    }

    /// The handle of the range holding `key` when it serves here: the request path's
    /// lookup, a binary search of the published routes with no lock (the ordered index
    /// behind a lock, then the by-id map, cost about 1,100 instructions a request,
    /// callgrind); `None` for anything else, which [`Directory::lookup`] then explains.
    pub fn serving_handle(&self, key: &Key) -> Option<RangeHandle> {
        let routes = self.routes.load();
        let after = routes.partition_point(|r| r.range.start.as_bytes() <= key.as_bytes());
        let route = routes.get(after.checked_sub(1)?)?;
        route.range.contains(key.as_bytes()).then(|| route.handle.clone())
    }

    /// The range holding `key`.
    pub fn lookup(&self, key: &Key) -> Option<(RangeId, Slot)> {
        let id = self.by_start.read().ok()?.range(..=key.clone()).next_back().map(|(_, id)| *id);
        self.slot_of(id).filter(|(_, s)| s.range().contains(key.as_bytes()))
    }

    /// The range holding the greatest key below `end` (a reverse scan's first page).
    pub fn lookup_below(&self, end: Option<&Key>) -> Option<(RangeId, Slot)> {
        let idx = self.by_start.read().ok()?;
        let id = match end {
            Some(e) => idx.range(..e.clone()).next_back().map(|(_, id)| *id),
            None => idx.iter().next_back().map(|(_, id)| *id),
        };
        drop(idx);
        self.slot_of(id).filter(|(_, s)| match (end, &s.range().end) {
            (_, None) => true,
            (Some(e), Some(re)) => e <= re,
            (None, Some(_)) => false,
        })
    }

    /// Remembers that `range` left this node, and who took it when known.
    pub fn departed(&self, range: &KeyRange, hint: Option<OwnerHint>) {
        if let Ok(mut d) = self.departed.write() {
            if d.len() >= DEPARTED_MAX
                && let Some(first) = d.keys().next().cloned()
            {
                d.remove(&first);
            }
            d.insert(range.start.clone(), (range.clone(), hint));
        }
    }

    /// Who serves `key` now, if this node saw the range leave to someone it knows.
    pub fn hint_for(&self, key: &Key) -> Option<OwnerHint> {
        let d = self.departed.read().ok()?;
        let (_, (range, hint)) = d.range(..=key.clone()).next_back()?;
        if range.contains(key.as_bytes()) { hint.clone() } else { None }
    }

    pub fn all(&self) -> Vec<(RangeId, Slot)> {
        self.by_id.iter().map(|e| (*e.key(), e.value().clone())).collect()
    }

    /// Forgets every range (the node's epoch ended); returns what was there.
    pub fn clear(&self) -> Vec<(RangeId, Slot)> {
        let all = self.all();
        self.by_id.clear();
        if let Ok(mut idx) = self.by_start.write() {
            idx.clear();
        }
        self.publish_routes();
        all
    }
}

impl RangeHost for Directory {
    fn routes_to(&self, range_id: RangeId, instance: u64) -> bool {
        matches!(self.get(range_id), Some(Slot::Serving { instance: i, .. }) if i == instance)
    }

    fn split_ready(&self, job: SplitJob) {
        let parent_id = job.parent_id;
        self.insert(parent_id, Slot::Loading { range: job.parent_range.clone() });
        if self.queue(ReshapeTask::Split(Box::new(SplitTask { job, done: None }))).is_err() {
            // The node is stopping: the next owner's load finds the log ending in the split
            // and completes it.
            self.remove(parent_id);
        }
    }

    fn failed(&self, range_id: RangeId, instance: u64, range: KeyRange, reason: String) {
        if self.routes_to(range_id, instance) {
            self.insert(range_id, Slot::Failed { range, error: reason });
        }
    }

    fn stopped(&self, range_id: RangeId, instance: u64, range: &KeyRange) {
        self.remove_instance(range_id, instance);
        self.departed(range, None);
    }

    fn departed(&self, range: &KeyRange, hint: Option<OwnerHint>) {
        Directory::departed(self, range, hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::NodeId;

    fn range(s: &str, e: Option<&str>) -> KeyRange {
        KeyRange::new(Key::from(s), e.map(Key::from)).unwrap()
    }

    #[test]
    fn lookups_route_by_start_key() {
        let d = Directory::new(tokio::sync::mpsc::unbounded_channel().0);
        d.insert(RangeId(1), Slot::Loading { range: range("", Some("g")) });
        d.insert(RangeId(2), Slot::Failed { range: range("m", None), error: "x".into() });
        assert_eq!(d.lookup(&Key::from("a")).map(|(id, _)| id), Some(RangeId(1)));
        assert_eq!(d.lookup(&Key::from("g")).map(|(id, _)| id), None, "gap between g and m");
        assert_eq!(d.lookup(&Key::from("zz")).map(|(id, _)| id), Some(RangeId(2)));
        // Reverse: the range holding the key just below `end`.
        assert_eq!(d.lookup_below(Some(&Key::from("g"))).map(|(id, _)| id), Some(RangeId(1)));
        assert_eq!(d.lookup_below(Some(&Key::from("h"))).map(|(id, _)| id), None);
        assert_eq!(d.lookup_below(None).map(|(id, _)| id), Some(RangeId(2)));
        d.remove(RangeId(1));
        assert!(d.lookup(&Key::from("a")).is_none());
        assert_eq!(d.clear().len(), 1);
        assert!(d.all().is_empty());
    }

    #[test]
    fn departed_ranges_give_hints() {
        let d = Directory::new(tokio::sync::mpsc::unbounded_channel().0);
        let hint = OwnerHint { node_id: NodeId::new("b").unwrap(), rpc_addr: "127.0.0.1:9".into() };
        d.departed(&range("c", Some("f")), Some(hint.clone()));
        d.departed(&range("f", Some("k")), None);
        assert_eq!(d.hint_for(&Key::from("d")), Some(hint));
        assert_eq!(d.hint_for(&Key::from("g")), None, "left, owner unknown");
        assert_eq!(d.hint_for(&Key::from("a")), None);
        assert_eq!(d.hint_for(&Key::from("z")), None);
    }
}
