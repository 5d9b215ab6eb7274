//! The ranges a node knows: by id (dashmap) and by start key (ordered index), so a key is
//! routed to its range actor with one ordered lookup.

use std::collections::BTreeMap;
use std::sync::RwLock;

use actix::Addr;
use ampstore_common::{Key, KeyRange, RangeId};
use dashmap::DashMap;

use crate::range::actor::RangeActor;

#[derive(Clone)]
pub enum Slot {
    Loading {
        range: KeyRange,
    },
    Serving {
        range: KeyRange,
        addr: Addr<RangeActor>,
        instance: u64,
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

#[derive(Default)]
pub struct Directory {
    by_id: DashMap<RangeId, Slot>,
    by_start: RwLock<BTreeMap<Key, RangeId>>,
}

impl Directory {
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
    }

    pub fn remove(&self, id: RangeId) {
        if let Some((_, slot)) = self.by_id.remove(&id)
            && let Ok(mut idx) = self.by_start.write()
            && idx.get(&slot.range().start) == Some(&id)
        {
            idx.remove(&slot.range().start);
        }
    }

    fn slot_of(&self, id: Option<RangeId>) -> Option<(RangeId, Slot)> {
        let id = id?;
        self.by_id.get(&id).map(|s| (id, s.clone()))
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
        all
    }
}
