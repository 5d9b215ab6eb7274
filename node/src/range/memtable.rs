//! The memtable: a range's applied data, a persistent ordered map from key to value and
//! version (a clone is O(1), so a snapshot never stalls writes), and the reads over it.

use std::ops::Bound;

use ampstore_common::error::Error;
use ampstore_common::limits::SCAN_PAGE_BYTES_MAX;
use ampstore_common::protocol::{Reply, ScanItem, Versioned};
use ampstore_common::{Key, KeyRange, Version};
use bytes::Bytes;
use imbl::OrdMap;

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Bytes,
    pub version: Version,
}

pub type Memtable = OrdMap<Key, Stored>;

/// The memtable of a serving range: its actor writes it, the connection tasks read it.
pub type SharedMemtable = std::sync::Arc<parking_lot::RwLock<Memtable>>;

/// The value and version at `key`, which must lie in `range`.
pub fn get(data: &Memtable, range: &KeyRange, key: &Key) -> Result<Option<Versioned>, Error> {
    if !range.contains(key.as_bytes()) {
        return Err(Error::KeyOutOfRange);
    }
    Ok(data.get(key).map(|s: &Stored| Versioned { value: s.value.to_vec(), version: s.version }))
}

/// One page of `[start, end)` clipped to this range (see `Reply::ScanPage`).
pub fn scan(
    data: &Memtable,
    range: &KeyRange,
    start: &Key,
    end: Option<&Key>,
    limit: usize,
    reverse: bool,
) -> Result<Reply, Error> {
    let lower = if start > &range.start { start.clone() } else { range.start.clone() };
    let upper: Option<Key> = match (end, &range.end) {
        (Some(e), Some(re)) => Some(if e < re { e.clone() } else { re.clone() }),
        (Some(e), None) => Some(e.clone()),
        (None, re) => re.clone(),
    };
    let in_range = if reverse {
        // The page is served by the range holding the key just below `end`.
        end.is_none_or(|e| e > &range.start) && range.end.as_ref().is_none_or(|re| end.is_some_and(|e| e <= re))
    } else {
        range.contains(start.as_bytes())
    };
    if !in_range {
        return Err(Error::KeyOutOfRange);
    }
    let bounds = (Bound::Included(lower.clone()), upper.clone().map_or(Bound::Unbounded, Bound::Excluded));
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut stopped_early = false;
    let mut push = |k: &Key, s: &Stored| -> bool {
        if items.len() >= limit || (bytes >= SCAN_PAGE_BYTES_MAX && !items.is_empty()) {
            stopped_early = true;
            return false;
        }
        bytes += k.len() + s.value.len();
        items.push(ScanItem { key: k.clone(), value: s.value.to_vec(), version: s.version });
        true
    };
    if reverse {
        for (k, s) in data.range(bounds).rev() {
            if !push(k, s) {
                break;
            }
        }
    } else {
        for (k, s) in data.range(bounds) {
            if !push(k, s) {
                break;
            }
        }
    }
    let resume = if let (true, Some(last)) = (stopped_early, items.last()) {
        let last = &last.key;
        if reverse {
            Some(last.clone())
        } else {
            let mut next = last.as_bytes().to_vec();
            next.push(0);
            Some(Key::from(next))
        }
    } else if reverse {
        // More below this range if the request starts below it.
        (start < &range.start).then(|| range.start.clone())
    } else {
        match (&range.end, end) {
            (Some(re), Some(e)) if e > re => Some(re.clone()),
            (Some(re), None) => Some(re.clone()),
            _ => None,
        }
    };
    Ok(Reply::ScanPage { items, resume })
}
