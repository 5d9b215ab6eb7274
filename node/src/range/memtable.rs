//! The memtable: a range's applied data, a persistent ordered map from key to value and
//! version (a clone is O(1), so a snapshot never stalls writes), and the reads over it.
//!
//! Layout (issue 16, "Memory"): each key's entry is ONE heap allocation holding its
//! version, the key and the value ([`Entry`]), behind an 8-byte shared pointer. The ordered
//! map is an `imbl` B-tree: its leaves are fixed arrays of 64 slots allocated whole, so the
//! slot size is paid 64 times per leaf whatever its fill (leaves split at the middle, so a
//! load in key order leaves them half full). With the former `OrdMap<Key, Stored>` a slot
//! was 72 bytes (a `Vec` key, a `Bytes` value, the version) and each entry had two more
//! allocations (key and value): 271 bytes requested per 16-byte key with a 100-byte value
//! (`tests`), 914 resident bytes per key with the write-id table after loading 1M keys
//! (`docs/benchmarks.md`, "Memory per key"). Then a slot of 8 bytes (the pointer alone):
//! 170 bytes requested per key, each one a 160-byte allocator block. Now a slot is 24
//! bytes (the pointer and a key prefix, below): 203 bytes requested per key.
//!
//! The map is an `imbl::OrdSet<Slot>` (an `OrdMap<Slot, ()>` inside): its `insert`
//! returns the entry it replaced (the range needs its size for its byte count) in the same
//! descent, where `OrdMap::insert` returns only the old `()` and needs a lookup first (that
//! lookup and the write-id table's like one measured about 1,500 node instructions per
//! durable put).
//!
//! Sharing the entry (a reference count, not a copy) matters twice: a write while a
//! snapshot's clone is alive copies the path's nodes, and those copies only bump counts;
//! and the B-tree's separator keys in branch nodes are clones of entries.
//!
//! Each slot also holds the key's first 16 bytes ([`Slot`]). A slot holding only the pointer
//! made every comparison of an insert's binary search read a random entry to find its key:
//! about 24 % of the node's CPU samples under durable puts (`perf`, `docs/benchmarks.md`,
//! "Keys beside the pointers"), most of it cache misses. With the prefix beside the pointer,
//! the descent compares slots in place and reads an entry only where two keys share their
//! first 16 bytes (at the end of a search that finds its key: one entry, not one a step).
//! A slot is 24 bytes instead of 8.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;

use ampstore_common::error::Error;
use ampstore_common::limits::SCAN_PAGE_BYTES_MAX;
use ampstore_common::protocol::{KeyTtl, Reply, ScanItem, Versioned};
use ampstore_common::{Key, KeyRange, Seq, Version};
use imbl::OrdSet;
use triomphe::{Arc, HeaderWithLength, ThinArc, UniqueArc};

/// What an entry's allocation holds before its bytes: the version and where the key ends.
/// 16 bytes (with the reference count and the slice length kept by `ThinArc`, 32 bytes
/// before the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryHead {
    seq: u64,
    index: u32,
    /// The key is the first `key_bytes & KEY_BYTES_MASK` bytes of the slice, the value the
    /// rest; with [`HAS_EXPIRY`] set, the slice's last 8 bytes are the key's expiry
    /// (`expires_at_ms`, little-endian) and the value ends before them. Keys without a TTL
    /// (nearly all) pay nothing for it.
    key_bytes: u32,
}

/// The flag in `EntryHead::key_bytes` saying the entry carries an expiry.
const HAS_EXPIRY: u32 = 1 << 31;
const KEY_BYTES_MASK: u32 = HAS_EXPIRY - 1;
const EXPIRY_BYTES: usize = 8;

// Every key fits the head's length field below the flag (keys are checked against
// KEY_BYTES_MAX where they enter: the protocol, the log and snapshot decoders).
const _: () = assert!(ampstore_common::limits::KEY_BYTES_MAX < KEY_BYTES_MASK as usize);

/// The wall clock in Unix ms (one definition for the whole workspace).
pub use ampstore_common::clock::unix_now_ms;

/// One key with its value and version, in one allocation. Cloning it shares it (a reference
/// count). Ordered, compared and borrowed by its key alone, so the map finds it by `&[u8]`.
#[derive(Clone)]
pub struct Entry(ThinArc<EntryHead, u8>);

impl Entry {
    pub fn new(key: &[u8], value: &[u8], version: Version) -> Entry {
        Entry::with_expiry(key, value, version, None)
    }

    /// An entry that expires at `expires_at_ms` (Unix ms), or never (`None`).
    pub fn with_expiry(key: &[u8], value: &[u8], version: Version, expires_at_ms: Option<u64>) -> Entry {
        // Clipped below the flag: a (never seen) key that long would lose bytes in `key()`,
        // never read outside the slice.
        let key_len = u32::try_from(key.len()).unwrap_or(KEY_BYTES_MASK).min(KEY_BYTES_MASK);
        let head = EntryHead {
            seq: version.seq.0,
            index: version.index,
            key_bytes: key_len | if expires_at_ms.is_some() { HAS_EXPIRY } else { 0 },
        };
        let expiry = expires_at_ms.map(u64::to_le_bytes);
        let expiry: &[u8] = expiry.as_ref().map_or(&[], |b| &b[..]);
        let len = key.len() + value.len() + expiry.len();
        let mut uninit = UniqueArc::from_header_and_uninit_slice(HeaderWithLength::new(head, len), len);
        let (key_part, rest) = uninit.slice.split_at_mut(key.len());
        let (value_part, expiry_part) = rest.split_at_mut(value.len());
        key_part.write_copy_of_slice(key);
        value_part.write_copy_of_slice(value);
        expiry_part.write_copy_of_slice(expiry);
        // SAFETY: the slice's `len` bytes were all written just above (the key, the value,
        // then the expiry if any: `len` bytes), and the header was written at allocation.
        let init = unsafe { uninit.assume_init_slice_with_header() };
        // Two memcpys into one allocation (triomphe's iterator constructor copies byte by
        // byte); `into_thin` checks that the header's length is the slice's.
        Entry(Arc::into_thin(init.shareable()))
    }

    /// The number of key bytes, clipped to the slice (so slicing never panics).
    fn key_end(&self) -> usize {
        ((self.0.header.header.key_bytes & KEY_BYTES_MASK) as usize).min(self.0.slice.len())
    }

    /// Where the value ends: before the expiry, if the entry has one.
    fn value_end(&self) -> usize {
        let len = self.0.slice.len();
        if self.0.header.header.key_bytes & HAS_EXPIRY != 0 { len.saturating_sub(EXPIRY_BYTES) } else { len }
    }

    pub fn key(&self) -> &[u8] {
        &self.0.slice[..self.key_end()]
    }

    pub fn value(&self) -> &[u8] {
        let end = self.value_end();
        self.0.slice.get(self.key_end()..end).unwrap_or_default()
    }

    /// When the key expires (Unix ms), if it does.
    pub fn expires_at_ms(&self) -> Option<u64> {
        if self.0.header.header.key_bytes & HAS_EXPIRY == 0 {
            return None;
        }
        let bytes = self.0.slice.get(self.value_end()..)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// Expired at `now_ms`: absent to every read from then on (the sweep deletes it later).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }

    pub fn version(&self) -> Version {
        let h = &self.0.header.header;
        Version { seq: Seq(h.seq), index: h.index }
    }

    /// What the entry counts in the range's data bytes: its key, value and expiry.
    pub fn data_bytes(&self) -> u64 {
        self.0.slice.len() as u64
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &Key::from(self.key()))
            .field("value_bytes", &self.value().len())
            .field("version", &self.version())
            .field("expires_at_ms", &self.expires_at_ms())
            .finish()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}
impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// The bytes of a slot's key prefix: keys up to this long compare without reading their
/// entry.
const SLOT_PREFIX_BYTES: usize = 16;

/// One slot of the map: an entry and its key's first [`SLOT_PREFIX_BYTES`] bytes, as two
/// big-endian words (zero-padded), so that most comparisons read no entry. Ordered by
/// `(prefix, key)`, which is the key's own order: two keys that differ within their first 16
/// bytes differ at the same place in their prefixes (a key shorter than 16 bytes is padded
/// with zeroes, so it is never above a longer key it starts); keys with equal prefixes are
/// compared whole. Two words rather than a `u128`, whose 16-byte alignment would make the
/// slot 32 bytes.
#[derive(Clone)]
struct Slot {
    prefix: [u64; 2],
    entry: Entry,
}

impl Slot {
    fn new(entry: Entry) -> Slot {
        Slot { prefix: key_prefix(entry.key()), entry }
    }
}

/// The first [`SLOT_PREFIX_BYTES`] bytes of `key` (zero-padded) as two big-endian words.
fn key_prefix(key: &[u8]) -> [u64; 2] {
    let mut bytes = [0u8; SLOT_PREFIX_BYTES];
    let n = key.len().min(SLOT_PREFIX_BYTES);
    bytes[..n].copy_from_slice(&key[..n]);
    let (high, low) = bytes.split_at(8);
    [u64::from_be_bytes(high.try_into().unwrap_or_default()), u64::from_be_bytes(low.try_into().unwrap_or_default())]
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        slot_order(self, other) == Ordering::Equal
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        slot_order(self, other)
    }
}
impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.entry.key()
    }
}

/// What a lookup compares slots with: a slot, or a [`Probe`] for a key (so that a get or a
/// remove by key also compares prefixes in place; searching by `&[u8]` would read an entry
/// at every step). Ordered as [`Slot`] is.
trait SlotKey {
    fn prefix(&self) -> [u64; 2];
    fn key(&self) -> &[u8];
}

impl SlotKey for Slot {
    fn prefix(&self) -> [u64; 2] {
        self.prefix
    }
    fn key(&self) -> &[u8] {
        self.entry.key()
    }
}

/// A key to look up, with its prefix computed once.
struct Probe<'a> {
    prefix: [u64; 2],
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(key: &'a [u8]) -> Probe<'a> {
        Probe { prefix: key_prefix(key), key }
    }
}

impl SlotKey for Probe<'_> {
    fn prefix(&self) -> [u64; 2] {
        self.prefix
    }
    fn key(&self) -> &[u8] {
        self.key
    }
}

impl<'a> Borrow<dyn SlotKey + 'a> for Slot {
    fn borrow(&self) -> &(dyn SlotKey + 'a) {
        self
    }
}
/// The one order of slots and probes (`Borrow` needs a slot and its borrowed form to order
/// alike): by prefix, then, between equal prefixes, by the whole key. Generic, so that the
/// slot-to-slot comparisons of an insert are static calls.
fn slot_order<A: SlotKey + ?Sized, B: SlotKey + ?Sized>(a: &A, b: &B) -> Ordering {
    a.prefix().cmp(&b.prefix()).then_with(|| a.key().cmp(b.key()))
}

impl PartialEq for dyn SlotKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        slot_order(self, other) == Ordering::Equal
    }
}
impl Eq for dyn SlotKey + '_ {}
impl PartialOrd for dyn SlotKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn SlotKey + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        slot_order(self, other)
    }
}

/// A range's data: the entries in key order. `Clone` is O(1) (a persistent B-tree); the
/// clone and the original then share nodes and entries until either changes.
#[derive(Clone, Default)]
pub struct Memtable {
    map: OrdSet<Slot>,
    /// How many entries carry an expiry: the expiry sweep runs only while some do.
    expiring: usize,
}

impl std::fmt::Debug for Memtable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Memtable {
    pub fn new() -> Memtable {
        Memtable::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        let probe = Probe::new(key);
        self.map.get(&probe as &dyn SlotKey).map(|s| &s.entry)
    }

    /// Sets `key` to `value` at `version`; the entry it replaced, if any.
    #[cfg(test)]
    pub fn put(&mut self, key: &[u8], value: &[u8], version: Version) -> Option<Entry> {
        self.insert(Entry::new(key, value, version))
    }

    /// Inserts `entry`, replacing the one with its key; the replaced one, if any.
    pub fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let expiring = entry.expires_at_ms().is_some();
        let old = self.map.insert(Slot::new(entry)).map(|s| s.entry);
        self.expiring = self.expiring + usize::from(expiring)
            - usize::from(old.as_ref().is_some_and(|o| o.expires_at_ms().is_some()));
        old
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let probe = Probe::new(key);
        let old = self.map.remove(&probe as &dyn SlotKey).map(|s| s.entry);
        self.expiring -= usize::from(old.as_ref().is_some_and(|o| o.expires_at_ms().is_some()));
        old
    }

    /// How many entries carry an expiry.
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// The entry at `key` unless it expired at `now_ms`.
    pub fn get_live(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.get(key).filter(|e| !e.expired_at(now_ms))
    }

    /// Part of the expiry sweep: looks at up to `examine_max` entries from `from` (the key
    /// after the last one looked at; `None`: the start) and returns the keys of those that
    /// expired at `now_ms` (at most `found_max`), and where the next look starts (`None`:
    /// the end was reached, start again from the top).
    pub fn expired_from(
        &self,
        from: Option<&[u8]>,
        now_ms: u64,
        examine_max: usize,
        found_max: usize,
    ) -> (Vec<Key>, Option<Vec<u8>>) {
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let mut found = Vec::new();
        for (examined, e) in self.range(lower, Bound::Unbounded).enumerate() {
            if examined >= examine_max || found.len() >= found_max {
                return (found, Some(e.key().to_vec()));
            }
            if e.expired_at(now_ms) {
                found.push(Key::from(e.key()));
            }
        }
        (found, None)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.map.iter().map(|s| &s.entry)
    }

    /// The entries within `(lower, upper)`, in key order (reverse it for descending).
    pub fn range<'a>(
        &'a self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = &'a Entry> + 'a {
        self.map.range::<_, [u8]>((lower, upper)).map(|s| &s.entry)
    }

    /// Both maps' entries (for a merge: the two parents hold disjoint keys). On a key in
    /// both, `self`'s entry stays.
    pub fn union(self, other: Memtable) -> Memtable {
        let map = self.map.union(other.map);
        let expiring = count_expiring(&map);
        Memtable { map, expiring }
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Option<&Entry> {
        self.map.get_max().map(|s| &s.entry)
    }

    /// The entries below `split_key`, and those at or above it (two new maps; the entries
    /// are shared, not copied).
    pub fn divide(&self, split_key: &[u8]) -> (Memtable, Memtable) {
        // O(n) either way (imbl's own split walks every entry too); entries are shared.
        let (left, right): (Vec<&Entry>, Vec<&Entry>) = self.iter().partition(|e| e.key() < split_key);
        (left.into_iter().cloned().collect(), right.into_iter().cloned().collect())
    }
}

fn count_expiring(map: &OrdSet<Slot>) -> usize {
    map.iter().filter(|s| s.entry.expires_at_ms().is_some()).count()
}

/// Equal when they hold the same keys with the same values, versions and expiries.
impl PartialEq for Memtable {
    fn eq(&self, other: &Memtable) -> bool {
        let same = |a: &Entry, b: &Entry| {
            a.key() == b.key()
                && a.value() == b.value()
                && a.version() == b.version()
                && a.expires_at_ms() == b.expires_at_ms()
        };
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| same(a, b))
    }
}
impl Eq for Memtable {}

impl FromIterator<Entry> for Memtable {
    /// Later entries replace earlier ones with the same key.
    fn from_iter<I: IntoIterator<Item = Entry>>(iter: I) -> Memtable {
        let mut m = Memtable::new();
        for e in iter {
            m.insert(e);
        }
        m
    }
}

/// The memtable of a serving range: its actor writes it, the connection tasks read it.
pub type SharedMemtable = std::sync::Arc<parking_lot::RwLock<Memtable>>;

/// The value and version at `key`, which must lie in `range`; absent once expired at
/// `now_ms()` (the clock is read only for a key that has an expiry).
pub fn get(data: &Memtable, range: &KeyRange, key: &Key, now_ms: impl Fn() -> u64) -> Result<Option<Versioned>, Error> {
    if !range.contains(key.as_bytes()) {
        return Err(Error::KeyOutOfRange);
    }
    Ok(data
        .get(key.as_bytes())
        .filter(|e| e.expires_at_ms().is_none_or(|at| at > now_ms()))
        .map(|e| Versioned { value: e.value().to_vec(), version: e.version() }))
}

/// How long `key` (in `range`) has to live at `now_ms`.
pub fn ttl(data: &Memtable, range: &KeyRange, key: &Key, now_ms: u64) -> Result<KeyTtl, Error> {
    if !range.contains(key.as_bytes()) {
        return Err(Error::KeyOutOfRange);
    }
    Ok(match data.get_live(key.as_bytes(), now_ms).map(Entry::expires_at_ms) {
        None => KeyTtl::Absent,
        Some(None) => KeyTtl::Persistent,
        Some(Some(at)) => KeyTtl::ExpiresInMs(at.saturating_sub(now_ms).max(1)),
    })
}

/// One page of `[start, end)` clipped to this range (see `Reply::ScanPage`).
pub fn scan(
    data: &Memtable,
    range: &KeyRange,
    start: &Key,
    end: Option<&Key>,
    (limit, reverse): (usize, bool),
    now_ms: u64,
) -> Result<Reply, Error> {
    let lower = if start > &range.start { start } else { &range.start };
    let upper: Option<&Key> = match (end, &range.end) {
        (Some(e), Some(re)) => Some(if e < re { e } else { re }),
        (Some(e), None) => Some(e),
        (None, re) => re.as_ref(),
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
    let lower = Bound::Included(lower.as_bytes());
    let upper = upper.map_or(Bound::Unbounded, |u| Bound::Excluded(u.as_bytes()));
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut stopped_early = false;
    let mut push = |e: &Entry| -> bool {
        if e.expired_at(now_ms) {
            // Absent to reads from its expiry on; skipped, not counted in the page.
            return true;
        }
        if items.len() >= limit || (bytes >= SCAN_PAGE_BYTES_MAX && !items.is_empty()) {
            stopped_early = true;
            return false;
        }
        bytes += e.data_bytes() as usize;
        items.push(ScanItem { key: Key::from(e.key()), value: e.value().to_vec(), version: e.version() });
        true
    };
    if reverse {
        for e in data.range(lower, upper).rev() {
            if !push(e) {
                break;
            }
        }
    } else {
        for e in data.range(lower, upper) {
            if !push(e) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_alloc::held_bytes;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn v(seq: u64, index: u32) -> Version {
        Version { seq: Seq(seq), index }
    }

    /// What the memtable may hold per key, for the bench's shape (16-byte keys, 100-byte
    /// values) loaded in key order (leaves split half full): the entry's one allocation
    /// (32 bytes of count, version and lengths, then 116 bytes) and its share of the
    /// B-tree's nodes. Bytes as requested from the allocator, before its rounding. The
    /// former layout (`OrdMap<Key, Stored>`) measured 271 here, the pointer-only slot 170,
    /// and the slot with its key prefix (24 bytes, 64 to a leaf) 203.
    const MEMTABLE_BYTES_PER_KEY_MAX: i64 = 210;

    #[test]
    fn a_key_costs_little_more_than_its_bytes() {
        const KEYS: u64 = 50_000;
        let value = [b'v'; 100];
        let before = held_bytes();
        let mut data = Memtable::new();
        for i in 0..KEYS {
            data.put(format!("bench:{i:010}").as_bytes(), &value, v(i, 0));
        }
        let per_key = (held_bytes() - before) / KEYS as i64;
        drop(data);
        eprintln!("memtable: {per_key} bytes per key");
        assert!(per_key <= MEMTABLE_BYTES_PER_KEY_MAX, "{per_key} bytes per key");
        assert_eq!(std::mem::size_of::<Entry>(), 8, "an entry is one thin pointer");
        assert_eq!(std::mem::size_of::<Slot>(), 24, "a map slot is the pointer and two prefix words");
    }

    #[test]
    fn an_entry_keeps_key_value_and_version_apart() {
        let e = Entry::new(b"key", b"value", v(7, 3));
        assert_eq!((e.key(), e.value(), e.version(), e.data_bytes()), (&b"key"[..], &b"value"[..], v(7, 3), 8));
        let empty = Entry::new(b"", b"", v(0, 0));
        assert_eq!((empty.key(), empty.value()), (&b""[..], &b""[..]));
        let key_only = Entry::new(b"k", b"", v(1, 0));
        assert_eq!((key_only.key(), key_only.value()), (&b"k"[..], &b""[..]));
        // Ordered by key only: the value and version do not take part.
        assert_eq!(Entry::new(b"a", b"x", v(1, 0)), Entry::new(b"a", b"y", v(2, 0)));
        assert!(Entry::new(b"a", b"z", v(9, 0)) < Entry::new(b"ab", b"", v(1, 0)));
    }

    #[test]
    fn put_get_remove_and_replace() {
        let mut m = Memtable::new();
        assert!(m.put(b"b", b"1", v(1, 0)).is_none());
        assert!(m.put(b"a", b"2", v(1, 1)).is_none());
        let old = m.put(b"b", b"33", v(2, 0)).map(|e| (e.value().to_vec(), e.version()));
        assert_eq!(old, Some((b"1".to_vec(), v(1, 0))), "the replaced entry comes back");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(b"b").map(|e| (e.value(), e.version())), Some((&b"33"[..], v(2, 0))));
        assert!(m.get(b"c").is_none());
        assert_eq!(m.remove(b"a").map(|e| e.version()), Some(v(1, 1)));
        assert!(m.remove(b"a").is_none());
        assert_eq!(m.iter().map(|e| e.key().to_vec()).collect::<Vec<_>>(), [b"b".to_vec()]);
        assert_eq!(m.last().map(|e| e.key()), Some(&b"b"[..]));
    }

    #[test]
    fn divide_puts_the_split_key_right() {
        let m: Memtable = [b"a", b"m", b"z"].iter().map(|k| Entry::new(&k[..], b"", v(1, 0))).collect();
        let keys = |m: &Memtable| m.iter().map(|e| e.key().to_vec()).collect::<Vec<_>>();
        let (l, r) = m.divide(b"m");
        assert_eq!((keys(&l), keys(&r)), (vec![b"a".to_vec()], vec![b"m".to_vec(), b"z".to_vec()]));
        let (l, r) = m.divide(b"n");
        assert_eq!((keys(&l), keys(&r)), (vec![b"a".to_vec(), b"m".to_vec()], vec![b"z".to_vec()]));
        assert_eq!(m.len(), 3, "the divided map is unchanged");
    }

    /// One step of the model test.
    #[derive(Clone, Debug)]
    enum Step {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        /// Clone the memtable (a snapshot) and check later that it still sees this moment.
        Snapshot,
        Scan(Vec<u8>, Option<Vec<u8>>, bool),
        Divide(Vec<u8>),
    }

    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct keys, so that puts replace and deletes hit; some of them long, with
        // zero bytes running across the slot prefix's end (16 bytes), where slots compare
        // their entries' keys.
        prop_oneof![
            3 => proptest::collection::vec(0u8..4, 0..4),
            1 => (14usize..18, proptest::collection::vec(0u8..2, 0..3)).prop_map(|(zeroes, mut tail)| {
                let mut key = vec![0u8; zeroes];
                key.append(&mut tail);
                key
            }),
        ]
    }

    proptest! {
        /// Slots order as their keys do, across the prefix's end and with zero padding; so
        /// does a lookup's probe against a slot.
        #[test]
        fn slots_order_as_their_keys(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..34),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..34),
        ) {
            let slot = |k: &[u8]| Slot::new(Entry::new(k, b"", v(1, 0)));
            prop_assert_eq!(slot(&a).cmp(&slot(&b)), a.cmp(&b));
            prop_assert_eq!(slot(&a) == slot(&b), a == b);
            let (probe, b_slot) = (Probe::new(&a), slot(&b));
            let b_key: &dyn SlotKey = b_slot.borrow();
            prop_assert_eq!((&probe as &dyn SlotKey).cmp(b_key), a.cmp(&b));
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (small_key(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(k, v)| Step::Put(k, v)),
            2 => small_key().prop_map(Step::Delete),
            1 => Just(Step::Snapshot),
            1 => (small_key(), proptest::option::of(small_key()), any::<bool>()).prop_map(|(s, e, r)| Step::Scan(s, e, r)),
            1 => small_key().prop_map(Step::Divide),
        ]
    }

    type Model = BTreeMap<Vec<u8>, (Vec<u8>, Version)>;

    fn contents(m: &Memtable) -> Vec<(Vec<u8>, Vec<u8>, Version)> {
        m.iter().map(|e| (e.key().to_vec(), e.value().to_vec(), e.version())).collect()
    }

    fn model_contents(m: &Model) -> Vec<(Vec<u8>, Vec<u8>, Version)> {
        m.iter().map(|(k, (val, ver))| (k.clone(), val.clone(), *ver)).collect()
    }

    proptest! {
        /// Against a `BTreeMap`: gets, puts, deletes, range scans (both directions), divides,
        /// and snapshot isolation (a clone taken before writes still sees the old data).
        #[test]
        fn behaves_like_a_btreemap(steps in proptest::collection::vec(step(), 1..80)) {
            let mut m = Memtable::new();
            let mut model = Model::new();
            let mut bytes = 0u64;
            let mut snapshots: Vec<(Memtable, Model)> = Vec::new();
            for (i, s) in steps.into_iter().enumerate() {
                let ver = v(i as u64, 0);
                match s {
                    Step::Put(k, val) => {
                        let old = m.put(&k, &val, ver);
                        let model_old = model.insert(k.clone(), (val.clone(), ver));
                        prop_assert_eq!(old.as_ref().map(|e| (e.value().to_vec(), e.version())), model_old);
                        bytes += (k.len() + val.len()) as u64;
                        bytes -= old.map_or(0, |e| e.data_bytes());
                    }
                    Step::Delete(k) => {
                        let old = m.remove(&k);
                        let model_old = model.remove(&k);
                        prop_assert_eq!(old.as_ref().map(|e| (e.value().to_vec(), e.version())), model_old);
                        bytes -= old.map_or(0, |e| e.data_bytes());
                    }
                    Step::Snapshot => snapshots.push((m.clone(), model.clone())),
                    Step::Scan(start, end, reverse) => {
                        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                        if end.as_ref().is_some_and(|e| e < &start) {
                            continue; // BTreeMap panics on an inverted range.
                        }
                        let got: Vec<Vec<u8>> = if reverse {
                            m.range(Bound::Included(&start), upper).rev().map(|e| e.key().to_vec()).collect()
                        } else {
                            m.range(Bound::Included(&start), upper).map(|e| e.key().to_vec()).collect()
                        };
                        let it = model.range::<[u8], _>((Bound::Included(&start[..]), upper)).map(|(k, _)| k.clone());
                        let want: Vec<Vec<u8>> = if reverse { it.rev().collect() } else { it.collect() };
                        prop_assert_eq!(got, want);
                    }
                    Step::Divide(at) => {
                        let (l, r) = m.divide(&at);
                        let (ml, mr): (Model, Model) = model.clone().into_iter().partition(|(k, _)| k < &at);
                        prop_assert_eq!(contents(&l), model_contents(&ml));
                        prop_assert_eq!(contents(&r), model_contents(&mr));
                    }
                }
                for k in [&b""[..], b"\x00", b"\x01\x02", b"\x03\x03\x03"] {
                    prop_assert_eq!(
                        m.get(k).map(|e| (e.value().to_vec(), e.version())),
                        model.get(k).cloned()
                    );
                }
                prop_assert_eq!(m.len(), model.len());
                prop_assert_eq!(m.iter().map(Entry::data_bytes).sum::<u64>(), bytes);
            }
            prop_assert_eq!(contents(&m), model_contents(&model));
            for (snap, snap_model) in &snapshots {
                prop_assert_eq!(contents(snap), model_contents(snap_model), "a snapshot sees its own moment");
            }
        }
    }

    #[test]
    fn get_and_scan_check_the_range_and_page() {
        let mut m = Memtable::new();
        for k in ["a", "b", "c", "d"] {
            m.put(k.as_bytes(), k.as_bytes(), v(1, 0));
        }
        let range = KeyRange { start: Key::from("b"), end: Some(Key::from("d")) };
        assert!(matches!(get(&m, &range, &Key::from("a"), || 0), Err(Error::KeyOutOfRange)));
        assert_eq!(get(&m, &range, &Key::from("c"), || 0).unwrap().map(|x| x.value), Some(b"c".to_vec()));
        assert!(matches!(scan(&m, &range, &Key::from("a"), None, (10, false), 0), Err(Error::KeyOutOfRange)));
        let page = |limit, reverse, start: &str, end: Option<&str>| {
            let end = end.map(Key::from);
            match scan(&m, &range, &Key::from(start), end.as_ref(), (limit, reverse), 0) {
                Ok(Reply::ScanPage { items, resume }) => {
                    (items.into_iter().map(|i| i.key.to_string()).collect::<Vec<_>>(), resume.map(|k| k.to_string()))
                }
                other => panic!("{other:?}"),
            }
        };
        // The whole range, then the rest is in the next range.
        assert_eq!(page(10, false, "b", None), (vec!["b".into(), "c".into()], Some("d".into())));
        // A full page resumes just after its last key.
        assert_eq!(page(1, false, "b", None), (vec!["b".into()], Some("b\\x00".into())));
        assert_eq!(page(10, true, "a", Some("d")), (vec!["c".into(), "b".into()], Some("b".into())));
    }

    #[test]
    fn an_entry_keeps_its_expiry_apart_from_its_value() {
        for value in [&b""[..], b"v", &[7u8; 300][..]] {
            let e = Entry::with_expiry(b"key", value, v(3, 1), Some(1_700_000_000_123));
            assert_eq!((e.key(), e.value(), e.version()), (&b"key"[..], value, v(3, 1)));
            assert_eq!(e.expires_at_ms(), Some(1_700_000_000_123));
            assert!(!e.expired_at(1_700_000_000_122) && e.expired_at(1_700_000_000_123));
            assert_eq!(e.data_bytes(), 3 + value.len() as u64 + 8);
            let plain = Entry::new(b"key", value, v(3, 1));
            assert_eq!((plain.value(), plain.expires_at_ms(), plain.expired_at(u64::MAX)), (value, None, false));
        }
    }

    #[test]
    fn expired_keys_are_absent_to_reads_and_found_by_the_sweep() {
        let mut m = Memtable::new();
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            // b and d expire at 100; e at 200; a and c never.
            let at = match *k {
                "b" | "d" => Some(100),
                "e" => Some(200),
                _ => None,
            };
            m.insert(Entry::with_expiry(k.as_bytes(), k.as_bytes(), v(1, i as u32), at));
        }
        assert_eq!(m.expiring(), 3);
        let all = KeyRange::full();
        let keys_at = |now: u64| match scan(&m, &all, &Key::from(""), None, (2, false), now) {
            Ok(Reply::ScanPage { items, .. }) => items.into_iter().map(|i| i.key.to_string()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(keys_at(99), ["a", "b"]);
        // A page of two skips the expired keys, it does not come back short.
        assert_eq!(keys_at(100), ["a", "c"]);
        assert!(get(&m, &all, &Key::from("b"), || 100).unwrap().is_none());
        assert!(get(&m, &all, &Key::from("b"), || 99).unwrap().is_some());
        assert_eq!(ttl(&m, &all, &Key::from("b"), 40).unwrap(), KeyTtl::ExpiresInMs(60));
        assert_eq!(ttl(&m, &all, &Key::from("b"), 100).unwrap(), KeyTtl::Absent);
        assert_eq!(ttl(&m, &all, &Key::from("a"), 100).unwrap(), KeyTtl::Persistent);
        assert_eq!(ttl(&m, &all, &Key::from("zz"), 100).unwrap(), KeyTtl::Absent);
        // The sweep, two entries at a time, from the top and around.
        let (found, next) = m.expired_from(None, 150, 2, 10);
        assert_eq!((found, next.as_deref()), (vec![Key::from("b")], Some(&b"c"[..])));
        let (found, next) = m.expired_from(next.as_deref(), 150, 2, 10);
        assert_eq!((found, next.as_deref()), (vec![Key::from("d")], Some(&b"e"[..])));
        let (found, next) = m.expired_from(next.as_deref(), 150, 2, 10);
        assert_eq!((found, next), (vec![], None));
        // At most `found_max` keys a call.
        let (found, next) = m.expired_from(None, 500, 10, 2);
        assert_eq!((found, next.as_deref()), (vec![Key::from("b"), Key::from("d")], Some(&b"e"[..])));
        // The count follows replacements and removals.
        m.insert(Entry::new(b"b", b"b", v(2, 0)));
        m.remove(b"e");
        assert_eq!(m.expiring(), 1);
        let (l, r) = m.divide(b"c");
        assert_eq!((l.expiring(), r.expiring()), (0, 1));
        assert_eq!(l.union(r).expiring(), 1);
    }
}
