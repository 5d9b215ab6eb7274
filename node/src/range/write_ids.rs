//! A range's table of recent writes (write id -> outcome), bounded by time and by bytes.
//!
//! A record is kept for at least `WRITE_ID_RETENTION_MS` after its outcome was decided, unless
//! the range's records pass `RANGE_WRITE_IDS_BYTES_MAX`, when the oldest go first (and the
//! count of such early evictions is kept, to be reported). The table is persistent
//! (`imbl`): cloning it for a snapshot costs one word per client (`ClientWindow`), not per
//! record. A split gives each child only the records of
//! the writes routed to its half ([`WriteIdTable::divide`]): a retry goes to the range that
//! holds its key, and copies of every record in both children would multiply with each
//! split (measured: 8 KiB of node memory per key after loading 100,000 keys that split into
//! 22 ranges).
//!
//! Time comes in from the caller (unix ms), so the table is tested without a clock.

use ampstore_common::limits::{RANGE_WRITE_IDS_BYTES_MAX, WRITE_ID_FLOOR_BYTES_FIXED, WRITE_ID_RETENTION_MS};
use ampstore_common::protocol::WriteId;
use ampstore_common::write_ids::{ClientFloor, WriteKey, WriteOutcome, WriteRecord};
use ampstore_common::{Key, Version};

/// How often expired client floors (and their windows' expired records) are looked for (a
/// pass over all clients): a floor lives at least `WRITE_ID_RETENTION_MS` after it was last
/// raised, and at most this much longer.
const FLOOR_SWEEP_MS: u64 = 10_000;

/// Entries of the time order whose record is gone (moved into its client's window when the
/// client's first floor came) are dropped in one pass once there are more of them than live
/// records, and at least this many.
const STALE_ORDER_COMPACT_MIN: usize = 1024;

/// The wall clock in Unix ms (one definition for the whole workspace).
pub use ampstore_common::clock::unix_now_ms;

/// One remembered write of the shared tier, in one shared allocation: the id map and the
/// time order hold the same record (an 8-byte pointer each), and a snapshot's clone of the
/// table shares it.
#[derive(Clone)]
struct Rec(triomphe::Arc<Remembered>);

struct Remembered {
    id: WriteKey,
    outcome: Outcome,
    /// When the outcome was decided (unix ms).
    at_unix_ms: u64,
    /// The key the write was routed by (`None` for a transaction): a split gives the record
    /// to the child holding it. A boxed slice, not a `Key` (`Vec`): 8 bytes less.
    data_key: Option<Box<[u8]>>,
}

/// A [`WriteOutcome`] in 24 bytes instead of 56: a put's `Written` (nearly every record)
/// inline, anything else (a delete's count, a conflict's text, a transaction) boxed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Written(Version),
    Other(Box<WriteOutcome>),
}

impl Outcome {
    fn new(outcome: WriteOutcome) -> Outcome {
        match outcome {
            WriteOutcome::Written { version } => Outcome::Written(version),
            other => Outcome::Other(Box::new(other)),
        }
    }

    fn get(&self) -> WriteOutcome {
        match self {
            Outcome::Written(version) => WriteOutcome::Written { version: *version },
            Outcome::Other(o) => WriteOutcome::clone(o),
        }
    }
}

impl PartialEq for Rec {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for Rec {}
impl PartialOrd for Rec {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
/// By id alone: the map is found by `&WriteKey`.
impl Ord for Rec {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}
impl std::borrow::Borrow<WriteKey> for Rec {
    fn borrow(&self) -> &WriteKey {
        &self.0.id
    }
}

/// One remembered plain write of a client with a floor, in its client's window.
#[derive(Clone)]
struct WindowRec {
    n: u64,
    outcome: Outcome,
    at_unix_ms: u64,
    data_key: Option<Box<[u8]>>,
}

/// A client that sends floors (`WriteId::floor`): its floor and the records of its plain
/// writes at or above it, by number. Its writes arrive nearly in order and its floor follows
/// them, so a new record is a push at the back and a raise pops the front: a few hundred
/// instructions a write, where an ordered set insert plus a later remove cost ~2,800
/// (callgrind, issue 16). `imbl::Vector`: a snapshot's clone of the table shares it.
#[derive(Clone)]
struct ClientWindow {
    floor: u64,
    /// When the floor was last raised (unix ms).
    raised_at_unix_ms: u64,
    recs: imbl::Vector<WindowRec>,
}

impl ClientWindow {
    /// Where record `n` is (`Ok`) or would go (`Err`); the usual case (a new, highest
    /// number) without a search.
    fn position(&self, n: u64) -> Result<usize, usize> {
        match self.recs.back() {
            None => Err(0),
            Some(last) if last.n < n => Err(self.recs.len()),
            Some(_) => self.recs.binary_search_by_key(&n, |r| r.n),
        }
    }
}

type ClientHasher = foldhash::fast::RandomState;

/// Layout (issue 16, "Memory" and "Client floors"): two tiers.
/// - Clients that send floors (every client of today's crate): a [`ClientWindow`] each,
///   holding only the records of their writes still open or recently answered. Nearly every
///   write's record is here, and is pushed and popped again within a few writes.
/// - Everything else (pushes, transactions, plain writes of clients that send no floor): one
///   record allocation ([`Rec`]) that two persistent structures point to, an ordered set by
///   id (`imbl::OrdSet`) for lookups and a vector in time order for expiry, kept for the
///   whole retention. The former layout (a hash trie keyed by id holding outcome, time and
///   key, plus a vector of (time, id)) measured about 500 bytes per record; this one measures
///   in `footprint_tests`.
///
/// Invariant: a client with a window has no plain-write record in the shared tier (they move
/// into the window when it is made).
#[derive(Clone)]
pub struct WriteIdTable {
    /// The shared tier's records, by id.
    records: imbl::OrdSet<Rec>,
    /// The shared tier's records in the order they were remembered (times never decrease
    /// along it, see `extend`); an entry whose id's record was replaced or moved is skipped
    /// when it is popped.
    order: imbl::Vector<Rec>,
    /// Each client's window, by client id.
    windows: std::collections::HashMap<u64, ClientWindow, ClientHasher>,
    bytes: usize,
    bytes_max: usize,
    retention_ms: u64,
    /// Records dropped before their retention ran out (the byte bound).
    evicted_early: u64,
    /// Entries of `order` whose record was moved into a window.
    stale_in_order: usize,
    floors_swept_at_ms: u64,
}

impl Default for WriteIdTable {
    fn default() -> Self {
        WriteIdTable::with_limits(RANGE_WRITE_IDS_BYTES_MAX, WRITE_ID_RETENTION_MS)
    }
}

impl WriteIdTable {
    pub fn with_limits(bytes_max: usize, retention_ms: u64) -> Self {
        WriteIdTable {
            records: imbl::OrdSet::new(),
            order: imbl::Vector::new(),
            windows: Default::default(),
            bytes: 0,
            bytes_max,
            retention_ms,
            evicted_early: 0,
            stale_in_order: 0,
            floors_swept_at_ms: 0,
        }
    }

    /// A table holding `records` and `floors` (from a snapshot, in any order) that are still
    /// within the retention at `now_unix_ms`.
    pub fn from_records(records: Vec<WriteRecord>, floors: Vec<ClientFloor>, now_unix_ms: u64) -> Self {
        let mut t = WriteIdTable::default();
        t.extend(records, floors, now_unix_ms);
        t
    }

    /// Adds `records` and `floors` (a merge's other parent, a snapshot), oldest first; a
    /// key already present keeps its record, a client keeps the higher floor, and records
    /// below their client's floor are left out.
    pub fn extend(&mut self, records: Vec<WriteRecord>, floors: Vec<ClientFloor>, now_unix_ms: u64) {
        let mut all = self.records();
        all.extend(records.into_iter().filter(|r| self.get(&r.key).is_none()));
        // Rebuilt in time order, so that expiry (which looks at the oldest) stays exact.
        all.sort_by_key(|r| r.at_unix_ms);
        let mut all_floors = self.floors();
        all_floors.extend(floors);
        let evicted_early = self.evicted_early;
        *self = WriteIdTable::with_limits(self.bytes_max, self.retention_ms);
        self.evicted_early = evicted_early;
        for f in all_floors {
            self.set_floor(f.client, f.floor, f.at_unix_ms);
        }
        for r in all {
            if !self.below_floor(&r.key) {
                self.insert(r.key, r.outcome, r.data_key, r.at_unix_ms);
            }
        }
        self.floors_swept_at_ms = 0;
        self.expire(now_unix_ms);
    }

    /// The floor `client` promised (0: none known).
    pub fn floor_of(&self, client: u64) -> u64 {
        self.windows.get(&client).map_or(0, |w| w.floor)
    }

    /// Whether `key` is a plain write below its client's floor: forgotten, and refused if
    /// it comes again.
    pub fn below_floor(&self, key: &WriteKey) -> bool {
        match key {
            WriteKey::Write(id) => id.n < self.floor_of(id.client),
            WriteKey::Push(_) | WriteKey::Txn(_) => false,
        }
    }

    /// `client` promised never to send again a write of its below `floor`: the records of
    /// its plain writes below it are forgotten (their memory freed at once). A lower or
    /// equal floor changes nothing.
    pub fn raise_floor(&mut self, client: u64, floor: u64, now_unix_ms: u64) {
        self.raise_floor_from(client, self.floor_of(client), floor, now_unix_ms);
    }

    /// [`WriteIdTable::raise_floor`] for a caller that has just read the client's floor
    /// (`current`, from [`WriteIdTable::floor_of`]).
    pub fn raise_floor_from(&mut self, client: u64, current: u64, floor: u64, now_unix_ms: u64) {
        if floor <= current {
            return;
        }
        self.set_floor(client, floor, now_unix_ms);
    }

    /// Sets `client`'s floor to `floor` when higher (making its window the first time, and
    /// moving its plain-write records there) and forgets its records below it.
    fn set_floor(&mut self, client: u64, floor: u64, at_unix_ms: u64) {
        let Some(w) = self.windows.get_mut(&client) else { return self.open_window(client, floor, at_unix_ms) };
        if w.floor >= floor {
            return;
        }
        w.floor = floor;
        w.raised_at_unix_ms = at_unix_ms;
        while w.recs.front().is_some_and(|r| r.n < floor) {
            if let Some(r) = w.recs.pop_front() {
                self.bytes -= window_rec_bytes(&r);
            }
        }
    }

    /// The first floor of `client`: its window, with its plain-write records of the shared
    /// tier at or above `floor` moved in (those below it are forgotten).
    fn open_window(&mut self, client: u64, floor: u64, at_unix_ms: u64) {
        let (lo, hi) = (WriteKey::Write(WriteId::new(client, 0)), WriteKey::Write(WriteId::new(client, u64::MAX)));
        let mine: Vec<WriteKey> = self.records.range::<_, WriteKey>(lo..=hi).map(|r| r.0.id).collect();
        let mut recs = imbl::Vector::new();
        for id in mine {
            let Some(r) = self.records.remove(&id) else { continue };
            self.stale_in_order += 1;
            let WriteKey::Write(id) = r.0.id else { continue };
            if id.n < floor {
                self.bytes -= record_bytes(&r.0.outcome.get(), r.0.data_key.as_deref());
                continue;
            }
            // Same bytes counted, now in the window (ids come out of the set in order).
            recs.push_back(WindowRec {
                n: id.n,
                outcome: r.0.outcome.clone(),
                at_unix_ms: r.0.at_unix_ms,
                data_key: r.0.data_key.clone(),
            });
        }
        self.windows.insert(client, ClientWindow { floor, raised_at_unix_ms: at_unix_ms, recs });
        self.bytes += WRITE_ID_FLOOR_BYTES_FIXED;
        self.compact_order();
    }

    /// Drops the time order's entries whose record is gone, once there are many.
    fn compact_order(&mut self) {
        if self.stale_in_order >= STALE_ORDER_COMPACT_MIN && self.stale_in_order > self.records.len() {
            let records = &self.records;
            self.order = self
                .order
                .iter()
                .filter(|rec| records.get(&rec.0.id).is_some_and(|r| triomphe::Arc::ptr_eq(&r.0, &rec.0)))
                .cloned()
                .collect();
            self.stale_in_order = 0;
        }
    }

    /// Every client floor (for a snapshot).
    pub fn floors(&self) -> Vec<ClientFloor> {
        let mut floors: Vec<ClientFloor> = self
            .windows
            .iter()
            .map(|(&client, w)| ClientFloor { client, floor: w.floor, at_unix_ms: w.raised_at_unix_ms })
            .collect();
        floors.sort_by_key(|f| f.client);
        floors
    }

    pub fn get(&self, key: &WriteKey) -> Option<WriteOutcome> {
        if let WriteKey::Write(id) = key
            && let Some(w) = self.windows.get(&id.client)
        {
            return w.position(id.n).ok().and_then(|i| w.recs.get(i)).map(|r| r.outcome.get());
        }
        self.records.get(key).map(|r| r.0.outcome.get())
    }

    /// Remembers `outcome` for `key` at `now_unix_ms` (a key already present keeps its first
    /// outcome), then drops what is past the retention or over the byte bound. `data_key`:
    /// the key the write was routed by (`None` for a transaction).
    pub fn remember(&mut self, key: WriteKey, outcome: WriteOutcome, data_key: Option<Key>, now_unix_ms: u64) {
        // A write its client has already given up on (it promised never to send it again).
        if self.below_floor(&key) {
            return;
        }
        if self.insert(key, outcome, data_key, now_unix_ms) {
            self.expire(now_unix_ms);
        }
    }

    /// Adds a record; `false` (and nothing changes) when `key` is already remembered.
    fn insert(&mut self, key: WriteKey, outcome: WriteOutcome, data_key: Option<Key>, at: u64) -> bool {
        let bytes = record_bytes(&outcome, data_key.as_ref().map(Key::as_bytes));
        let data_key = data_key.map(|k| k.0.into_boxed_slice());
        if let WriteKey::Write(id) = key
            && let Some(w) = self.windows.get_mut(&id.client)
        {
            let Err(at_index) = w.position(id.n) else { return false };
            let rec = WindowRec { n: id.n, outcome: Outcome::new(outcome), at_unix_ms: at, data_key };
            if at_index == w.recs.len() {
                w.recs.push_back(rec);
            } else {
                w.recs.insert(at_index, rec);
            }
        } else {
            let rec = Rec(triomphe::Arc::new(Remembered {
                id: key,
                outcome: Outcome::new(outcome),
                at_unix_ms: at,
                data_key,
            }));
            // One descent for the usual case (a new id) instead of a lookup and an insert: a
            // record already there comes back out and goes back in (its first outcome stays).
            if let Some(first) = self.records.insert(rec.clone()) {
                self.records.insert(first);
                return false;
            }
            self.order.push_back(rec);
        }
        self.bytes += bytes;
        while self.bytes > self.bytes_max {
            if !self.pop_oldest() {
                break;
            }
            self.evicted_early += 1;
        }
        true
    }

    /// Drops records older than the retention, and (every `FLOOR_SWEEP_MS`) the windows'
    /// records as old and floors not raised for as long.
    pub fn expire(&mut self, now_unix_ms: u64) {
        while let Some(oldest) = self.order.front() {
            if oldest.0.at_unix_ms.saturating_add(self.retention_ms) >= now_unix_ms {
                break;
            }
            self.pop_oldest_shared();
        }
        if !self.windows.is_empty() && now_unix_ms >= self.floors_swept_at_ms.saturating_add(FLOOR_SWEEP_MS) {
            self.floors_swept_at_ms = now_unix_ms;
            let retention_ms = self.retention_ms;
            let live = |at: u64| at.saturating_add(retention_ms) >= now_unix_ms;
            let mut freed = 0;
            self.windows.retain(|_, w| {
                // Looked at first: a retain copies the vector's nodes a snapshot shares.
                if w.recs.iter().any(|r| !live(r.at_unix_ms)) {
                    w.recs.retain(|r| {
                        let keep = live(r.at_unix_ms);
                        if !keep {
                            freed += window_rec_bytes(r);
                        }
                        keep
                    });
                }
                // A floor goes once it was not raised for the retention and it guards no
                // record any more.
                let keep = live(w.raised_at_unix_ms) || !w.recs.is_empty();
                if !keep {
                    freed += WRITE_ID_FLOOR_BYTES_FIXED;
                }
                keep
            });
            self.bytes -= freed;
        }
    }

    /// Drops the oldest record (the shared tier's, else the oldest at the front of a window).
    fn pop_oldest(&mut self) -> bool {
        if self.pop_oldest_shared() {
            return true;
        }
        let oldest =
            self.windows.iter().filter_map(|(&client, w)| w.recs.front().map(|r| (r.at_unix_ms, client))).min();
        let Some((_, client)) = oldest else { return false };
        if let Some(r) = self.windows.get_mut(&client).and_then(|w| w.recs.pop_front()) {
            self.bytes -= window_rec_bytes(&r);
        }
        true
    }

    fn pop_oldest_shared(&mut self) -> bool {
        let Some(oldest) = self.order.pop_front() else { return false };
        // The order may hold a record whose id was remembered again later (`extend` of an
        // older record): only remove the map's record if it is this one.
        // One descent for the usual case (it is this one); another record goes back in.
        match self.records.remove(&oldest.0.id) {
            Some(gone) if triomphe::Arc::ptr_eq(&gone.0, &oldest.0) => {
                self.bytes -= record_bytes(&gone.0.outcome.get(), gone.0.data_key.as_deref());
            }
            Some(other) => {
                self.records.insert(other);
            }
            // Moved into its client's window.
            None => self.stale_in_order = self.stale_in_order.saturating_sub(1),
        }
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len() + self.windows.values().map(|w| w.recs.len()).sum::<usize>()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    /// Every record, oldest first (for a snapshot).
    pub fn records(&self) -> Vec<WriteRecord> {
        let mut all: Vec<WriteRecord> = self
            .order
            .iter()
            .filter(|rec| self.records.get(&rec.0.id).is_some_and(|r| triomphe::Arc::ptr_eq(&r.0, &rec.0)))
            .map(|rec| WriteRecord {
                key: rec.0.id,
                outcome: rec.0.outcome.get(),
                at_unix_ms: rec.0.at_unix_ms,
                data_key: rec.0.data_key.as_deref().map(Key::from),
            })
            .collect();
        if !self.windows.is_empty() {
            let mut clients: Vec<(&u64, &ClientWindow)> = self.windows.iter().collect();
            clients.sort_by_key(|(client, _)| **client);
            for (&client, w) in clients {
                all.extend(w.recs.iter().map(|r| WriteRecord {
                    key: WriteKey::Write(WriteId::new(client, r.n)),
                    outcome: r.outcome.get(),
                    at_unix_ms: r.at_unix_ms,
                    data_key: r.data_key.as_deref().map(Key::from),
                }));
            }
            // Stable: the shared tier's order stays as it was.
            all.sort_by_key(|r| r.at_unix_ms);
        }
        all
    }

    /// The two children's tables of a split at `split_key`: a record goes to the child
    /// holding its data key; one without (a transaction, or from an older snapshot) to both.
    /// O(records): called off the range's actor (the split's completion).
    pub fn divide(&self, split_key: &Key, now_unix_ms: u64) -> (WriteIdTable, WriteIdTable) {
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for r in self.records() {
            match &r.data_key {
                Some(k) if k < split_key => left.push(r),
                Some(_) => right.push(r),
                None => {
                    left.push(r.clone());
                    right.push(r);
                }
            }
        }
        // A floor is the client's promise about all its writes: both children keep it.
        let child = |records| {
            let mut t = WriteIdTable::with_limits(self.bytes_max, self.retention_ms);
            t.extend(records, self.floors(), now_unix_ms);
            t
        };
        (child(left), child(right))
    }
}

/// What one window record counts against the byte bound (as [`record_bytes`]).
fn window_rec_bytes(r: &WindowRec) -> usize {
    record_bytes(&r.outcome.get(), r.data_key.as_deref())
}

/// What one record counts against the byte bound: its fixed part and its data key.
fn record_bytes(outcome: &WriteOutcome, data_key: Option<&[u8]>) -> usize {
    outcome.accounted_bytes() + data_key.map_or(0, <[u8]>::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::Seq;
    use ampstore_common::limits::WRITE_ID_RECORD_BYTES_FIXED;
    use ampstore_common::protocol::WriteId;

    fn id(n: u64) -> WriteKey {
        WriteKey::Write(WriteId::new(1, n))
    }

    fn written(seq: u64) -> WriteOutcome {
        WriteOutcome::Written { version: Version { seq: Seq(seq), index: 0 } }
    }

    #[test]
    fn records_live_exactly_the_retention() {
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        t.remember(id(1), written(1), None, 10_000);
        t.remember(id(2), written(2), None, 10_500);
        t.expire(11_000);
        assert!(t.get(&id(1)).is_some(), "at the retention's end it is still there");
        t.expire(11_001);
        assert!(t.get(&id(1)).is_none(), "one ms later it is gone");
        assert!(t.get(&id(2)).is_some());
        assert_eq!(t.len(), 1);
        assert_eq!(t.bytes(), WRITE_ID_RECORD_BYTES_FIXED);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_first_and_counts_it() {
        let per = WRITE_ID_RECORD_BYTES_FIXED;
        let mut t = WriteIdTable::with_limits(3 * per, u64::MAX / 2);
        for n in 1..=3 {
            t.remember(id(n), written(n), None, n);
        }
        assert_eq!((t.len(), t.bytes(), t.evicted_early()), (3, 3 * per, 0), "at the bound: all kept");
        t.remember(id(4), written(4), None, 4);
        assert_eq!((t.len(), t.bytes(), t.evicted_early()), (3, 3 * per, 1), "one over: the oldest goes");
        assert!(t.get(&id(1)).is_none() && t.get(&id(4)).is_some());
    }

    #[test]
    fn a_retry_keeps_the_first_outcome() {
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        t.remember(id(1), written(1), None, 1);
        t.remember(id(1), written(2), None, 2);
        assert_eq!(t.get(&id(1)), Some(written(1)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn records_round_trip_and_merge() {
        let mut a = WriteIdTable::with_limits(usize::MAX, 1000);
        a.remember(id(1), written(1), Some(Key::from("a")), 100);
        a.remember(id(2), written(2), None, 200);
        assert_eq!(WriteIdTable::from_records(a.records(), Vec::new(), 300).records(), a.records());
        let mut b = WriteIdTable::with_limits(usize::MAX, 1000);
        b.extend(a.records(), Vec::new(), 300);
        assert_eq!(b.records(), a.records());
        // A merge: the other parent's records join, oldest first; stale ones are dropped.
        let other = vec![
            WriteRecord { key: id(3), outcome: written(3), at_unix_ms: 150, data_key: None },
            WriteRecord { key: id(1), outcome: written(9), at_unix_ms: 50, data_key: None },
        ];
        b.extend(other, Vec::new(), 300);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(&id(1)), Some(written(1)), "a key present keeps its record");
        b.expire(1_160);
        assert_eq!(b.len(), 1, "records at 100 and 150 expired at 1160");
        assert!(b.get(&id(2)).is_some());
    }

    #[test]
    fn a_split_gives_each_child_the_records_of_its_own_keys() {
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        t.remember(id(1), written(1), Some(Key::from("apple")), 100);
        t.remember(id(2), written(2), Some(Key::from("m")), 101);
        t.remember(id(3), written(3), Some(Key::from("zebra")), 102);
        t.remember(WriteKey::Txn(WriteId::new(1, 4)), WriteOutcome::Txn { committed: true, seq: None }, None, 103);
        let (left, right) = t.divide(&Key::from("m"), 200);
        let ids = |t: &WriteIdTable| t.records().into_iter().map(|r| r.key).collect::<Vec<_>>();
        let txn = WriteKey::Txn(WriteId::new(1, 4));
        assert_eq!(ids(&left), [id(1), txn], "below the split key, and the transaction");
        assert_eq!(ids(&right), [id(2), id(3), txn], "the split key and above, and the transaction");
        assert_eq!(left.get(&id(1)), Some(written(1)));
        let per = WRITE_ID_RECORD_BYTES_FIXED;
        assert_eq!(left.bytes(), per + "apple".len() + per, "a record counts its data key");
        assert_eq!(t.bytes(), 4 * per + "apple".len() + "m".len() + "zebra".len());
    }
}

#[cfg(test)]
mod footprint_tests {
    use super::*;
    use crate::test_alloc::held_bytes;
    use ampstore_common::Seq;
    use ampstore_common::protocol::WriteId;

    /// What a range's table may hold per remembered put (16-byte data key), as requested
    /// from the allocator. Right after a load every key has a record for
    /// `WRITE_ID_RETENTION_MS`, so this adds to the memtable's bytes per key then. The
    /// former table (a hash trie of (outcome, time, key) and a time-ordered vector of ids)
    /// measured 495 to 720 here; one shared record with the whole `WriteOutcome` 156, with
    /// the compact `Outcome` 132.
    const WRITE_ID_TABLE_BYTES_PER_RECORD_MAX: i64 = 140;

    #[test]
    fn a_remembered_put_costs_a_few_words_and_its_key() {
        for records in [5_000u64, 50_000] {
            let before = held_bytes();
            let mut t = WriteIdTable::with_limits(usize::MAX, u64::MAX / 2);
            for i in 0..records {
                t.remember(
                    WriteKey::Write(WriteId::new(0x1234_5678_9abc, i)),
                    WriteOutcome::Written { version: Version { seq: Seq(i), index: 0 } },
                    Some(Key::from(format!("bench:{i:010}"))),
                    1000 + i / 10,
                );
            }
            let per_record = (held_bytes() - before) / records as i64;
            drop(t);
            eprintln!("write ids: {records} records, {per_record} bytes per record");
            assert!(per_record <= WRITE_ID_TABLE_BYTES_PER_RECORD_MAX, "{records} records: {per_record} bytes each");
        }
    }
}

#[cfg(test)]
mod floor_tests {
    use super::*;
    use ampstore_common::Seq;
    use ampstore_common::limits::WRITE_ID_RECORD_BYTES_FIXED;

    fn w(client: u64, n: u64) -> WriteKey {
        WriteKey::Write(WriteId::new(client, n))
    }

    fn written(seq: u64) -> WriteOutcome {
        WriteOutcome::Written { version: Version { seq: Seq(seq), index: 0 } }
    }

    #[test]
    fn a_floor_forgets_only_its_clients_plain_writes_below_it() {
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        for n in 0..10 {
            t.remember(w(1, n), written(n), None, 100);
            t.remember(w(2, n), written(n), None, 100);
        }
        t.remember(WriteKey::Txn(WriteId::new(1, 3)), WriteOutcome::Txn { committed: true, seq: None }, None, 100);
        t.raise_floor(1, 5, 200);
        assert_eq!(t.len(), 5 + 10 + 1, "client 1's 0..5 are gone; client 2's and the transaction stay");
        assert!(t.get(&w(1, 4)).is_none() && t.get(&w(1, 5)).is_some() && t.get(&w(2, 0)).is_some());
        assert!(t.below_floor(&w(1, 4)) && !t.below_floor(&w(1, 5)) && !t.below_floor(&w(2, 0)));
        assert_eq!(
            t.bytes(),
            15 * WRITE_ID_RECORD_BYTES_FIXED + WRITE_ID_RECORD_BYTES_FIXED + WRITE_ID_FLOOR_BYTES_FIXED
        );
        // A lower floor changes nothing; a higher one forgets at once; a record below the
        // floor is not remembered.
        t.raise_floor(1, 2, 300);
        assert_eq!(t.floor_of(1), 5);
        t.raise_floor(1, 6, 300);
        assert_eq!(t.floor_of(1), 6);
        assert!(t.get(&w(1, 5)).is_none() && t.get(&w(1, 6)).is_some() && t.get(&w(2, 5)).is_some());
        t.remember(w(1, 3), written(3), None, 300);
        assert!(t.get(&w(1, 3)).is_none());
    }

    /// The time order drops forgotten entries in bulk, so a client whose floor follows its
    /// writes keeps only its window of records in memory, not the whole retention's.
    #[test]
    fn with_a_moving_floor_the_table_stays_at_the_clients_window() {
        let mut t = WriteIdTable::with_limits(usize::MAX, u64::MAX / 2);
        for n in 0..100_000u64 {
            t.raise_floor(9, n.saturating_sub(16), 1 + n / 100);
            t.remember(w(9, n), written(n), Some(Key::from("k")), 1 + n / 100);
        }
        assert!(t.len() <= 17, "{} records", t.len());
        // The first writes (before the client's first floor) went to the shared tier and
        // moved into the window; their time-order entries go when they expire.
        assert!(t.records.is_empty() && t.order.len() <= 17, "the shared tier holds {}", t.order.len());
        assert_eq!(t.records().len(), t.len());
    }

    /// A client's window: records in any order, the first outcome kept, found by number;
    /// its writes before its first floor move in; a clone (a snapshot's) is not changed by
    /// later writes.
    #[test]
    fn a_clients_window_keeps_its_open_writes() {
        let per = WRITE_ID_RECORD_BYTES_FIXED;
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        for n in [3, 1, 2] {
            t.remember(w(4, n), written(n), None, 100);
        }
        t.raise_floor(4, 2, 100);
        assert_eq!((t.records.len(), t.windows[&4].recs.len()), (0, 2), "2 and 3 moved in, 1 forgotten");
        for n in [7, 5, 6, 5] {
            t.remember(w(4, n), written(10 + n), None, 110);
        }
        let ns: Vec<u64> = t.windows[&4].recs.iter().map(|r| r.n).collect();
        assert_eq!(ns, [2, 3, 5, 6, 7]);
        assert_eq!(t.get(&w(4, 5)), Some(written(15)), "a retry keeps the first outcome");
        assert_eq!(t.get(&w(4, 4)), None);
        assert_eq!(t.bytes(), 5 * per + WRITE_ID_FLOOR_BYTES_FIXED);
        let snapshot = t.clone();
        t.raise_floor(4, 6, 120);
        t.remember(w(4, 8), written(18), None, 120);
        assert_eq!(t.len(), 3);
        assert_eq!(snapshot.len(), 5, "the clone is unchanged");
        assert_eq!(snapshot.get(&w(4, 2)), Some(written(2)));
        assert_eq!(snapshot.floor_of(4), 2);
        assert_eq!(t.records().iter().map(|r| r.key).collect::<Vec<_>>(), [w(4, 6), w(4, 7), w(4, 8)]);
    }

    /// The byte bound reaches into the windows once the shared tier is empty (the oldest
    /// first), and a window's records and floor expire by the sweep.
    #[test]
    fn window_records_are_bounded_and_expire() {
        let per = WRITE_ID_RECORD_BYTES_FIXED;
        let mut t = WriteIdTable::with_limits(2 * WRITE_ID_FLOOR_BYTES_FIXED + 3 * per, 1000);
        t.raise_floor(1, 1, 10);
        t.raise_floor(2, 1, 10);
        t.remember(w(1, 1), written(1), None, 10);
        t.remember(w(2, 1), written(2), None, 11);
        t.remember(w(1, 2), written(3), None, 12);
        assert_eq!((t.len(), t.evicted_early()), (3, 0));
        t.remember(w(2, 2), written(4), None, 13);
        assert_eq!((t.len(), t.evicted_early()), (3, 1), "one over: the oldest went");
        assert!(t.get(&w(1, 1)).is_none() && t.get(&w(2, 1)).is_some());
        // The sweep drops records past the retention, then floors that guard nothing and
        // were not raised for as long.
        t.raise_floor(2, 2, 500);
        t.expire(11 + 1000 + FLOOR_SWEEP_MS);
        assert_eq!(t.len(), 0);
        assert_eq!((t.floor_of(1), t.floor_of(2)), (0, 0));
        assert_eq!(t.bytes(), 0);
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        t.raise_floor(3, 1, 10);
        t.remember(w(3, 1), written(1), None, 10_500);
        t.expire(10 + 1000 + FLOOR_SWEEP_MS);
        assert_eq!((t.floor_of(3), t.len()), (1, 1), "a floor guarding a live record stays");
    }

    #[test]
    fn floors_travel_split_merge_and_expire() {
        let mut t = WriteIdTable::with_limits(usize::MAX, 1000);
        t.remember(w(1, 7), written(7), Some(Key::from("a")), 100);
        t.raise_floor(1, 7, 100);
        t.raise_floor(2, 3, 150);
        assert_eq!(WriteIdTable::from_records(t.records(), t.floors(), 200).floors(), t.floors());
        let mut copy = WriteIdTable::with_limits(usize::MAX, 1000);
        copy.extend(t.records(), t.floors(), 200);
        assert_eq!((copy.floor_of(1), copy.floor_of(2), copy.len()), (7, 3, 1));
        let (left, right) = t.divide(&Key::from("m"), 200);
        assert_eq!(
            (left.floor_of(1), right.floor_of(1), right.floor_of(2)),
            (7, 7, 3),
            "both children keep every floor"
        );
        // A merge keeps the higher floor, and drops the other parent's records below it.
        let mut merged = left.clone();
        merged.extend(
            vec![WriteRecord { key: w(2, 1), outcome: written(1), at_unix_ms: 150, data_key: None }],
            vec![ClientFloor { client: 1, floor: 9, at_unix_ms: 180 }],
            200,
        );
        assert_eq!((merged.floor_of(1), merged.floor_of(2)), (9, 3));
        assert!(merged.get(&w(1, 7)).is_none() && merged.get(&w(2, 1)).is_none());
        // A floor lives the retention after it was last raised (found by the next sweep).
        let mut t = copy;
        t.expire(150 + 1000);
        assert_eq!(t.floor_of(2), 3, "at the retention's end it is still there");
        t.expire(150 + 1000 + FLOOR_SWEEP_MS + 1);
        assert_eq!((t.floor_of(1), t.floor_of(2)), (0, 0));
        assert_eq!(t.bytes(), 0);
    }
}
