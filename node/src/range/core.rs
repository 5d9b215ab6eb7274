//! The range state machine, without I/O: what a range holds, which writes go into the next
//! log entry, what each write's version and reply are, how the log is replayed.
//!
//! The actor (`actor.rs`) drives it: it submits writes, asks for the next batch when no
//! append is in flight, appends it, and reports the outcome. `W` is whatever the driver uses
//! to answer a caller (a oneshot sender in the actor, a plain id in tests).
//!
//! The memtable is a persistent ordered map (`imbl::OrdMap`): cloning it is O(1), so a
//! snapshot takes a frozen view and writes keep going while the snapshot is written.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;

use ampstore_common::counter;
use ampstore_common::error::Error;
use ampstore_common::limits::RANGE_PENDING_WRITES_MAX;
use ampstore_common::protocol::{ExpireWhen, Reply, Versioned, WriteId};
use ampstore_common::txn::{TxnCheck, TxnCondition, TxnWrite};
use ampstore_common::write_ids::{WriteKey, WriteOutcome};
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId, Seq, Version};
use ampstore_store::{EntryKind, LogEntry};
use bytes::Bytes;

use super::batch::{self, BatchPayload, LoggedOp, LoggedWrite};
use super::write_ids::WriteIdTable;

pub use super::memtable::{Entry, Memtable, SharedMemtable};

/// A split as the `Split` log entry records it: where, and the children's ids. Once this
/// entry is in the log the parent takes no more writes, and whoever loads the parent
/// completes the split with exactly this plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitPlan {
    pub split_key: Key,
    pub left: RangeId,
    pub right: RangeId,
}

impl SplitPlan {
    pub fn encode(&self) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<SplitPlan, Error> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("split entry does not decode: {e}")))
    }
}

/// A merge as the `Merge` log entry records it, in both parents' logs. Once the entry is
/// in a log the range takes no more writes until a `Fence` reopens it: the merging node
/// writes one when it abandons the merge, and so does any later owner, because a range
/// that is loaded at all was not replaced by the merged range (the master's commit
/// replaces both parents' descriptors, and it requires both to be owned by the merging
/// node in its epoch, which a new owner's claim ended).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergePlan {
    pub merged: RangeId,
    pub left: RangeId,
    pub right: RangeId,
}

impl MergePlan {
    pub fn encode(&self) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<MergePlan, Error> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("merge entry does not decode: {e}")))
    }
}

/// A transaction this range has prepared and not yet resolved. While it is held no other
/// append goes out (writes queue for the batch after it), so nothing can change the keys it
/// checked; with writes, `seq` is the slot reserved for its entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnHold {
    pub txn_id: WriteId,
    pub seq: Option<Seq>,
    pub writes: Vec<LoggedWrite>,
}

/// The condition of a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    None,
    /// The key's version must be this (`None`: the key must be absent).
    Version(Option<Version>),
    /// A push (the key is a list element, `common::lists`): no element of the list may sort
    /// above it, so the list's order is the order its pushes took effect. An element
    /// already stored at the key means a retry: answered with its version, not written.
    ListTail,
    /// A `PutExpiring` whose expiry is this many ms after the owner logs it (stamped when
    /// the batch is made, with the owner's clock).
    ExpiresIn(u64),
    /// A `SetExpiry` of an expire: the key must exist and `when` hold; the expiry is `ttl_ms`
    /// after the batch is made. Otherwise answered `ExpiryChanged { changed: false }`.
    Expire {
        ttl_ms: u64,
        when: ExpireWhen,
    },
    /// A `SetExpiry` of a persist: the key must exist and have an expiry.
    Persist,
    /// A `Counter`: the key's integer plus this, decided when the batch is made.
    Add(i64),
}

impl Condition {
    /// Decided against the key's entry as applied: a key written earlier in the same batch
    /// ends the batch before this write (it goes first in the next one).
    fn reads_the_entry(&self) -> bool {
        matches!(self, Condition::Expire { .. } | Condition::Persist | Condition::Add(_))
    }

    /// Decided without the range's data (nothing, or only the owner's clock): such a write
    /// may go in a batch made before the durable batch ahead of it is applied
    /// (`RangeCore::stage_appended`).
    fn needs_no_data(&self) -> bool {
        matches!(self, Condition::None | Condition::ExpiresIn(_))
    }
}

/// A write as submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub op: LoggedOp,
    pub condition: Condition,
    /// The id a retry of this write carries (a write id, or a push's or enqueue's id): the
    /// write is applied once per id, and a retry gets the first outcome.
    pub write_id: Option<WriteKey>,
}

pub type Outcome<W> = (W, Result<Reply, Error>);

struct Pending<W> {
    write: Write,
    waiter: W,
}

struct InFlight<W> {
    seq: Seq,
    entry: LogEntry,
    /// The callers' writes (one waiter each, in order), then the expiry sweep's deletes.
    writes: Vec<LoggedWrite>,
    waiters: Vec<W>,
}

/// What to append next, and the replies already decided (failed conditions).
pub struct BatchPlan<W> {
    pub append: Option<(Seq, LogEntry)>,
    pub early: Vec<Outcome<W>>,
}

struct Dedup<W> {
    /// Outcomes of applied writes, by id, for `WRITE_ID_RETENTION_MS`.
    done: WriteIdTable,
    /// Callers that sent a write id already pending or in flight: answered with it.
    followers: HashMap<WriteKey, Vec<W>, IdHasher>,
    /// Hashed with foldhash, seeded per process: SipHash on every write's id cost ~300
    /// instructions a put (issue 16); a per-process seed keeps crafted ids from colliding.
    pending: std::collections::HashSet<WriteKey, IdHasher>,
}

type IdHasher = foldhash::fast::RandomState;

impl<W> Dedup<W> {
    /// The callers following `id`. Most writes have none: an empty map is not hashed into
    /// (a SipHash of the id per write, issue 16).
    fn take_followers(&mut self, id: &WriteKey) -> Option<Vec<W>> {
        if self.followers.is_empty() { None } else { self.followers.remove(id) }
    }
}

pub struct RangeCore<W> {
    range_id: RangeId,
    range: KeyRange,
    writer: NodeId,
    epoch: Epoch,
    /// The applied data, shared with the readers of the range (`range::view`): they take a
    /// read lock, `apply` a write lock per operation.
    data: SharedMemtable,
    data_bytes: u64,
    applied: Seq,
    next_seq: Seq,
    pending: VecDeque<Pending<W>>,
    in_flight: Option<InFlight<W>>,
    /// A batch whose append is durable and which is not applied yet: the next batch may go
    /// out first (`stage_appended`), then this one is applied (`apply_staged`) before the
    /// range handles anything else.
    staged: Option<InFlight<W>>,
    fenced: bool,
    dedup: Dedup<W>,
    batch_bytes_max: usize,
    log_bytes_total: u64,
    checkpoint_seq: Seq,
    log_bytes_at_checkpoint: u64,
    /// The split that closed this range's log, and at which seq.
    split: Option<(Seq, SplitPlan)>,
    /// The merge entry that closed the log (until a fence reopens it).
    merge_closed: Option<(Seq, MergePlan)>,
    txn_hold: Option<TxnHold>,
    /// The wall clock (unix ms) as the driver last set it: when outcomes are remembered,
    /// and what expiry is measured against.
    now_unix_ms: u64,
    /// Keys the expiry sweep found expired, to delete in the next batch (each checked
    /// again then), and where the sweep looks next.
    expired_due: Vec<Key>,
    sweep_from: Option<Vec<u8>>,
    /// A safety invariant did not hold (a bug): the range takes no more writes, and its
    /// driver stops it and reports why.
    broken: Option<String>,
}

impl<W> RangeCore<W> {
    /// A range at `checkpoint_seq` holding `data` (from the snapshot, or empty).
    pub fn new(
        range_id: RangeId,
        range: KeyRange,
        writer: NodeId,
        epoch: Epoch,
        data: Memtable,
        checkpoint_seq: Seq,
        batch_bytes_max: usize,
    ) -> Self {
        let data_bytes = data.iter().map(Entry::data_bytes).sum();
        // Only a damaged checkpoint seq has no slot after it: the range starts stopped.
        let (next_seq, broken) = match checkpoint_seq.checked_next() {
            Ok(next) => (next, None),
            Err(e) => (checkpoint_seq, Some(format!("{range_id}: no log slot after the checkpoint: {e}"))),
        };
        RangeCore {
            range_id,
            range,
            writer,
            epoch,
            data: std::sync::Arc::new(parking_lot::RwLock::new(data)),
            data_bytes,
            applied: checkpoint_seq,
            next_seq,
            pending: VecDeque::new(),
            in_flight: None,
            staged: None,
            fenced: false,
            dedup: Dedup { done: WriteIdTable::default(), followers: HashMap::default(), pending: Default::default() },
            batch_bytes_max,
            log_bytes_total: 0,
            checkpoint_seq,
            log_bytes_at_checkpoint: 0,
            split: None,
            merge_closed: None,
            txn_hold: None,
            now_unix_ms: 0,
            expired_due: Vec::new(),
            sweep_from: None,
            broken,
        }
    }

    /// Why the range stopped, when a safety invariant did not hold.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Checks a safety invariant (in release builds too: they are cheap). A violation
    /// stops the range: it is recorded, logged, and every later write is refused.
    fn invariant(&mut self, holds: bool, what: impl FnOnce() -> String) -> bool {
        if !holds && self.broken.is_none() {
            let why = format!("{}: safety invariant violated: {}", self.range_id, what());
            tracing::error!(reason = %why, "range stopped");
            self.broken = Some(why);
        }
        holds
    }

    /// `seq` is applied: the next entry goes to the slot after it. The last slot of a log
    /// (`u64::MAX`) has no next one; only a damaged stored seq gets there, and the range
    /// stops instead of panicking.
    fn advance_to(&mut self, seq: Seq) {
        self.applied = seq;
        match seq.checked_next() {
            Ok(next) => self.next_seq = next,
            Err(e) => {
                self.invariant(false, || format!("no log slot after {seq}: {e}"));
            }
        }
    }

    fn broken_error(&self) -> Error {
        Error::internal(self.broken.clone().unwrap_or_default())
    }

    /// The write ids this range remembers from before it was loaded (its snapshot's, or a
    /// split or merge parent's).
    pub fn with_write_ids(mut self, table: WriteIdTable) -> Self {
        self.dedup.done = table;
        self
    }

    /// Sets the clock (unix ms) that outcomes remembered from now on are stamped with, and
    /// drops those past their retention.
    pub fn set_clock(&mut self, now_unix_ms: u64) {
        self.now_unix_ms = now_unix_ms;
        self.dedup.done.expire(now_unix_ms);
    }

    /// The remembered outcomes (an O(1) clone).
    pub fn write_ids(&self) -> &WriteIdTable {
        &self.dedup.done
    }

    /// The outcome of transaction `txn_id` in this range, when it is remembered.
    pub fn txn_outcome(&self, txn_id: WriteId) -> Option<(bool, Option<Seq>)> {
        match self.dedup.done.get(&WriteKey::Txn(txn_id)) {
            Some(WriteOutcome::Txn { committed, seq }) => Some((committed, seq)),
            _ => None,
        }
    }

    /// Remembers a transaction's outcome here (with the slot of its entry when it wrote).
    pub fn remember_txn(&mut self, txn_id: WriteId, committed: bool, seq: Option<Seq>) {
        self.dedup.done.remember(WriteKey::Txn(txn_id), WriteOutcome::Txn { committed, seq }, None, self.now_unix_ms);
    }

    pub fn range_id(&self) -> RangeId {
        self.range_id
    }
    pub fn range(&self) -> &KeyRange {
        &self.range
    }
    pub fn applied(&self) -> Seq {
        self.applied
    }
    /// The slot the next append goes to.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
    pub fn keys(&self) -> u64 {
        self.data.read().len() as u64
    }
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }
    pub fn checkpoint_seq(&self) -> Seq {
        self.checkpoint_seq
    }
    pub fn log_bytes_since_checkpoint(&self) -> u64 {
        self.log_bytes_total - self.log_bytes_at_checkpoint
    }
    /// True when the log holds entries the checkpoint does not cover.
    pub fn is_dirty(&self) -> bool {
        self.applied > self.checkpoint_seq
    }
    pub fn has_work(&self) -> bool {
        self.in_flight.is_some() || self.staged.is_some() || !self.pending.is_empty() || !self.expired_due.is_empty()
    }

    /// A durable batch waits to be applied (`apply_staged`).
    pub fn has_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// The next queued write is decided without the range's data, so a batch made before
    /// the staged one is applied would start with it (`next_batch`).
    pub fn next_write_needs_no_data(&self) -> bool {
        self.pending.front().is_some_and(|p| p.write.condition.needs_no_data())
    }
    pub fn append_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    // ----- reads (served from applied data, also while an append is in flight) -----

    pub fn get(&self, key: &Key) -> Result<Option<Versioned>, Error> {
        super::memtable::get(&self.data.read(), &self.range, key, || self.now_unix_ms)
    }

    /// One page of `[start, end)` clipped to this range (see `Reply::ScanPage`). Readers
    /// scan the shared memtable (`range::view`); this is for the core's own tests.
    #[cfg(test)]
    pub fn scan(&self, start: &Key, end: Option<&Key>, limit: usize, reverse: bool) -> Result<Reply, Error> {
        super::memtable::scan(&self.data.read(), &self.range, start, end, (limit, reverse), self.now_unix_ms)
    }

    /// The applied data, as readers share it.
    pub fn shared_data(&self) -> &SharedMemtable {
        &self.data
    }

    fn check_key(&self, key: &Key) -> Result<(), Error> {
        if self.range.contains(key.as_bytes()) { Ok(()) } else { Err(Error::KeyOutOfRange) }
    }

    // ----- writes -----

    /// Queues a write. Returns the reply at once when the write is refused (outside the
    /// range, fenced, queue full) or is a retry of a write already applied.
    pub fn submit(&mut self, write: Write, waiter: W) -> Option<Outcome<W>> {
        let key_check = match &write.op {
            LoggedOp::Put { key, .. }
            | LoggedOp::Delete { key }
            | LoggedOp::PutExpiring { key, .. }
            | LoggedOp::SetExpiry { key, .. }
            | LoggedOp::Counter { key, .. } => self.check_key(key),
            LoggedOp::DeleteRange { start, end } => {
                let inside = self.range.contains(start.as_bytes())
                    && match (&self.range.end, end) {
                        (None, _) => true,
                        (Some(re), Some(e)) => e <= re,
                        (Some(_), None) => false,
                    };
                if inside { Ok(()) } else { Err(Error::KeyOutOfRange) }
            }
        };
        if let Err(e) = key_check {
            return Some((waiter, Err(e)));
        }
        if self.broken.is_some() {
            return Some((waiter, Err(self.broken_error())));
        }
        if self.fenced {
            return Some((waiter, Err(Error::Fenced)));
        }
        if let Some(id) = write.write_id {
            if let Some(done) = self.dedup.done.get(&id) {
                return Some((waiter, done.to_result()));
            }
            if let WriteKey::Write(w) = id
                && let Err(e) = self.take_floor(w)
            {
                return Some((waiter, Err(e)));
            }
            // One hash for "pending already?" and "now pending" (issue 16).
            if !self.dedup.pending.insert(id) {
                self.dedup.followers.entry(id).or_default().push(waiter);
                return None;
            }
        }
        if self.pending.len() >= RANGE_PENDING_WRITES_MAX {
            if let Some(id) = write.write_id {
                self.dedup.pending.remove(&id);
            }
            return Some((waiter, Err(Error::unavailable("range write queue is full"))));
        }
        self.pending.push_back(Pending { write, waiter });
        None
    }

    /// Applies the floor a plain write carries (`WriteId::floor`), after refusing the write
    /// if its client already promised never to send it (a duplicate that was delayed: its
    /// record is forgotten, so it would be applied twice) or if its floor is above its own
    /// number (the client cannot have finished with the write it is sending).
    fn take_floor(&mut self, id: WriteId) -> Result<(), Error> {
        let floor = self.dedup.done.floor_of(id.client);
        if id.n < floor {
            return Err(Error::invalid(format!(
                "write {}/{} is below its client's floor {floor}: the client promised never to send it again \
                 (a delayed duplicate); not applied",
                id.client, id.n
            )));
        }
        if id.floor > id.n {
            return Err(Error::invalid(format!(
                "write {}/{} carries floor {}, above its own number; not applied",
                id.client, id.n, id.floor
            )));
        }
        self.dedup.done.raise_floor_from(id.client, floor, id.floor, self.now_unix_ms);
        Ok(())
    }

    /// When no append is in flight: takes the pending writes (up to the batch byte limit)
    /// into the next log entry, deciding conditions against the applied data plus the
    /// earlier writes of the same batch.
    ///
    /// With a staged batch (durable, not applied yet: `stage_appended`) the data is not
    /// what the log says, so the batch takes only writes decided without it
    /// (`Condition::needs_no_data`) and stops before the first other one, and the expiry
    /// sweep's deletes wait (whether a key is still expired depends on the staged writes).
    pub fn next_batch(&mut self) -> BatchPlan<W> {
        let mut plan = BatchPlan { append: None, early: Vec::new() };
        let before_apply = self.staged.is_some();
        if self.fenced
            || self.broken.is_some()
            || self.in_flight.is_some()
            || (self.pending.is_empty() && self.expired_due.is_empty())
            || self.txn_hold.is_some()
        {
            return plan;
        }
        let seq = self.next_seq;
        // The batch's own writes by key, for conditions decided inside the batch. Built only
        // when a conditional write or a push comes (from the writes before it): most
        // batches have none, and hashing and copying every key cost ~700 instructions a
        // write (issue 16).
        let mut overlay: Option<HashMap<Key, Option<Version>>> = None;
        let mut cleared: Vec<(Key, Option<Key>)> = Vec::new();
        let mut writes = Vec::new();
        let mut waiters = Vec::new();
        // Sizes are upper bounds of the encoding, so the batch fits the store's entry limit
        // whatever the configured batch size (checked again after encoding).
        let bytes_max = self.batch_bytes_max.min(ampstore_common::limits::LOG_ENTRY_BYTES_MAX);
        let mut bytes = ampstore_common::limits::LOG_BATCH_HEADER_BYTES_MAX;
        while let Some(p) = self.pending.front() {
            // Sized from the queued write: the op is moved into the batch below, not copied.
            let push_id = matches!(p.write.write_id, Some(WriteKey::Push(_)));
            let size = LoggedWrite::encoded_bytes_max_of(&p.write.op, push_id);
            if !writes.is_empty() && bytes + size > bytes_max {
                break;
            }
            if before_apply && !p.write.condition.needs_no_data() {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else { break };
            if p.write.condition != Condition::None && overlay.is_none() {
                overlay = Some(overlay_of(&writes, seq));
            }
            if p.write.condition.reads_the_entry() {
                let key = p.write.op.routing_key();
                let in_batch = overlay.as_ref().is_some_and(|o| o.contains_key(key))
                    || cleared.iter().any(|(s, e)| key >= s && e.as_ref().is_none_or(|e| key < e));
                if in_batch {
                    self.pending.push_front(p);
                    break;
                }
            }
            if let Some(early) = self.resolve(&mut p.write) {
                self.finish_write_id(p.write.write_id, &p.write.op, &early, &mut plan.early);
                plan.early.push((p.waiter, early));
                continue;
            }
            if p.write.condition == Condition::ListTail
                && let LoggedOp::Put { key, .. } = &p.write.op
                && let Some(early) = self.list_tail_check(key, overlay.as_ref().unwrap_or(&HashMap::new()))
            {
                self.finish_write_id(p.write.write_id, &p.write.op, &early, &mut plan.early);
                plan.early.push((p.waiter, early));
                continue;
            }
            if let Condition::Version(expected) = &p.write.condition {
                let key = p.write.op.routing_key();
                let current = match overlay.as_ref().and_then(|o| o.get(key)) {
                    Some(v) => *v,
                    None if cleared.iter().any(|(s, e)| key >= s && e.as_ref().is_none_or(|e| key < e)) => None,
                    None => self.data.read().get_live(key.as_bytes(), self.now_unix_ms).map(Entry::version),
                };
                if current != *expected {
                    let why = match (expected, current) {
                        (None, Some(v)) => format!("key exists with version {v}"),
                        (Some(e), None) => format!("expected version {e}, the key is absent"),
                        (Some(e), Some(c)) => format!("expected version {e}, found {c}"),
                        (None, None) => String::from("condition failed"),
                    };
                    let result = Err(Error::conflict(why));
                    self.finish_write_id(p.write.write_id, &p.write.op, &result, &mut plan.early);
                    plan.early.push((p.waiter, result));
                    continue;
                }
            }
            let version = Version { seq, index: writes.len() as u32 };
            if let Some(overlay) = overlay.as_mut() {
                overlay_add(overlay, &p.write.op, version);
            }
            if let LoggedOp::DeleteRange { start, end } = &p.write.op {
                cleared.push((start.clone(), end.clone()));
            }
            bytes += size;
            writes.push(LoggedWrite::new(p.write.op, p.write.write_id));
            waiters.push(p.waiter);
        }
        if !self.expired_due.is_empty() && !before_apply {
            self.add_expiry_deletes(&mut writes, seq, &mut bytes, bytes_max);
        }
        if writes.is_empty() {
            return plan;
        }
        let payload = BatchPayload { writes };
        // `bytes` bounds the encoding from above: the buffer never grows.
        let encoded = batch::encode(&payload.writes, bytes).and_then(|b| {
            if b.len() > ampstore_common::limits::LOG_ENTRY_BYTES_MAX {
                // The size bounds above are wrong (a bug): the store would refuse this entry
                // forever. Fail the batch (nothing is written) rather than wedge the range.
                Err(Error::internal(format!(
                    "{}: a batch encoded to {} bytes, over the log entry limit; not written",
                    self.range_id,
                    b.len()
                )))
            } else {
                Ok(b)
            }
        });
        let encoded = match encoded {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(error = %err, "log batch not encoded");
                self.fail_writes(&payload.writes, waiters, &err, &mut plan.early);
                return plan;
            }
        };
        let entry =
            LogEntry { kind: EntryKind::Batch, writer: self.writer.clone(), epoch: self.epoch, payload: encoded };
        self.in_flight = Some(InFlight { seq, entry: entry.clone(), writes: payload.writes, waiters });
        plan.append = Some((seq, entry));
        plan
    }

    /// Looks for expired keys (part of the range per call, `EXPIRY_SWEEP_ENTRIES_MAX`
    /// entries from where the last call stopped) when some entries carry an expiry and the
    /// last ones found are deleted; the next batch deletes them. Returns whether it found any.
    pub fn sweep_expired(&mut self) -> bool {
        if !self.expired_due.is_empty() || self.split.is_some() || self.merge_closed.is_some() {
            return false;
        }
        let (found, next) = {
            let data = self.data.read();
            if data.expiring() == 0 {
                return false;
            }
            data.expired_from(
                self.sweep_from.as_deref(),
                self.now_unix_ms,
                ampstore_common::limits::EXPIRY_SWEEP_ENTRIES_MAX,
                ampstore_common::limits::EXPIRY_DELETES_PER_SWEEP_MAX,
            )
        };
        self.sweep_from = next;
        self.expired_due = found;
        !self.expired_due.is_empty()
    }

    /// Keys found expired and not deleted yet.
    #[cfg(test)]
    pub fn expired_due(&self) -> usize {
        self.expired_due.len()
    }

    /// Appends deletes of the keys the sweep found to the batch (after the callers' writes,
    /// which have waiters), as far as the batch has room: each only if the key is still
    /// expired and no write of this batch touches it (a put of it in this batch is newer).
    fn add_expiry_deletes(&mut self, writes: &mut Vec<LoggedWrite>, seq: Seq, bytes: &mut usize, bytes_max: usize) {
        let overlay = overlay_of(writes, seq);
        let now = self.now_unix_ms;
        let mut due = std::mem::take(&mut self.expired_due).into_iter();
        for key in due.by_ref() {
            let in_batch = overlay.contains_key(&key);
            let expired = self.data.read().get(key.as_bytes()).is_some_and(|e| e.expired_at(now));
            if in_batch || !expired {
                continue;
            }
            let op = LoggedOp::Delete { key };
            let size = LoggedWrite::encoded_bytes_max_of(&op, false);
            if !writes.is_empty() && *bytes + size > bytes_max {
                if let LoggedOp::Delete { key } = op {
                    self.expired_due.push(key);
                }
                break;
            }
            *bytes += size;
            writes.push(LoggedWrite::new(op, None));
        }
        self.expired_due.extend(due);
    }

    /// Fills in what a TTL or counter write decides when its batch is made (an expiry from
    /// the owner's clock, a counter's new value from the applied entry): `None` to log the
    /// write as completed here, or the answer at once when nothing is to be logged (an
    /// expire whose key is absent or whose condition does not hold; a counter that is not
    /// an integer or would overflow).
    fn resolve(&self, write: &mut Write) -> Option<Result<Reply, Error>> {
        let now = self.now_unix_ms;
        match (&write.condition, &mut write.op) {
            (Condition::ExpiresIn(ttl_ms), LoggedOp::PutExpiring { expires_at_ms, .. }) => {
                *expires_at_ms = now.saturating_add(*ttl_ms);
                None
            }
            (Condition::Expire { ttl_ms, when }, LoggedOp::SetExpiry { key, expires_at_ms }) => {
                let data = self.data.read();
                let Some(entry) = data.get_live(key.as_bytes(), now) else {
                    return Some(Ok(Reply::ExpiryChanged { changed: false }));
                };
                let at = now.saturating_add(*ttl_ms);
                let holds = match (when, entry.expires_at_ms()) {
                    (ExpireWhen::Always, _) => true,
                    (ExpireWhen::Nx, current) => current.is_none(),
                    (ExpireWhen::Xx, current) => current.is_some(),
                    // No expiry counts as infinitely late (Redis).
                    (ExpireWhen::Gt, current) => current.is_some_and(|c| at > c),
                    (ExpireWhen::Lt, current) => current.is_none_or(|c| at < c),
                };
                if !holds {
                    return Some(Ok(Reply::ExpiryChanged { changed: false }));
                }
                *expires_at_ms = Some(at);
                None
            }
            (Condition::Persist, LoggedOp::SetExpiry { key, expires_at_ms }) => {
                let has_expiry = self.data.read().get_live(key.as_bytes(), now).and_then(Entry::expires_at_ms);
                if has_expiry.is_none() {
                    return Some(Ok(Reply::ExpiryChanged { changed: false }));
                }
                *expires_at_ms = None;
                None
            }
            (Condition::Add(by), LoggedOp::Counter { key, value, expires_at_ms }) => {
                let data = self.data.read();
                let (current, at) = match data.get_live(key.as_bytes(), now) {
                    None => (0, None),
                    Some(e) => match counter::parse(e.value()) {
                        Some(n) => (n, e.expires_at_ms()),
                        None => return Some(Err(Error::invalid(counter::NOT_AN_INTEGER))),
                    },
                };
                match current.checked_add(*by) {
                    Some(n) => {
                        *value = n;
                        *expires_at_ms = at;
                        None
                    }
                    None => Some(Err(Error::invalid(counter::OVERFLOW))),
                }
            }
            (Condition::None | Condition::Version(_) | Condition::ListTail, _) => None,
            (condition, op) => Some(Err(Error::internal(format!("condition {condition:?} does not go with {op:?}")))),
        }
    }

    /// Decides a push before it is batched: `None` to write it, or the answer at once (a
    /// retry of a stored element, or a push behind the list's last element). Elements
    /// written earlier in the same batch (`overlay`) count as present.
    fn list_tail_check(&self, key: &Key, overlay: &HashMap<Key, Option<Version>>) -> Option<Result<Reply, Error>> {
        let family = ampstore_common::lists::family_of(key.as_bytes())?;
        if !overlay.contains_key(key)
            && let Some(version) = self.data.read().get(key.as_bytes()).map(Entry::version)
        {
            return Some(Ok(Reply::Written { version }));
        }
        let end = ampstore_common::lists::family_end(family);
        let data = self.data.read();
        let stored_above = data
            .range(Bound::Excluded(key.as_bytes()), Bound::Excluded(end.as_bytes()))
            .next_back()
            .map(|e| Key::from(e.key()));
        let batched_above = overlay
            .iter()
            .filter(|(k, v)| v.is_some() && *k > key && k.as_bytes().starts_with(family))
            .map(|(k, _)| k)
            .max();
        let last = stored_above.into_iter().chain(batched_above.cloned()).max()?;
        Some(Err(Error::conflict_on(
            &last,
            "the push id is behind the list's last element; push again with a later id",
        )))
    }

    /// The append in flight, to retry after a transient failure (same slot, same entry).
    pub fn in_flight_append(&self) -> Option<(Seq, LogEntry)> {
        self.in_flight.as_ref().map(|f| (f.seq, f.entry.clone()))
    }

    /// The writes of the append in flight (0 without one).
    pub fn in_flight_writes(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |f| f.writes.len())
    }

    /// The payload bytes of the append in flight (0 without one).
    pub fn in_flight_payload_bytes(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |f| f.entry.payload.len())
    }

    /// The append of `seq` is durable: apply it and answer its writers (the machine
    /// stages and applies in two steps; the core's tests in one).
    #[cfg(test)]
    pub fn on_appended(&mut self, seq: Seq) -> Vec<Outcome<W>> {
        match self.stage_appended(seq) {
            Ok(()) => self.apply_staged(),
            Err(out) => out,
        }
    }

    /// The append of `seq` is durable: the next slot opens now, and the batch waits,
    /// staged, until `apply_staged` (which the range runs before it handles anything
    /// else). In between, `next_batch` may send the next batch, made of writes decided
    /// without the data, so that the store commits it while this one is applied. Nothing
    /// is answered before it is applied, so no reader can miss an acknowledged write.
    /// `Err` carries the answers when an invariant failed (the range is broken then).
    pub fn stage_appended(&mut self, seq: Seq) -> Result<(), Vec<Outcome<W>>> {
        let Some(f) = self.in_flight.take() else {
            self.invariant(false, || format!("append of seq {seq} reported with no append in flight"));
            return Err(Vec::new());
        };
        let (in_flight, next, staged) = (f.seq, self.next_seq, self.staged.as_ref().map(|s| s.seq));
        if !self.invariant(in_flight == seq && seq == next && staged.is_none(), || {
            format!(
                "seq continuity: append of seq {seq} reported, {in_flight} in flight, next seq {next}, staged {staged:?}"
            )
        }) {
            // Nothing applied; whether the entry is in the log is not known here.
            let err = self.broken_error();
            let mut out = Vec::new();
            self.fail_writes(&f.writes, f.waiters, &err, &mut out);
            return Err(out);
        }
        match seq.checked_next() {
            Ok(next) => self.next_seq = next,
            Err(e) => {
                self.invariant(false, || format!("no log slot after {seq}: {e}"));
            }
        }
        self.staged = Some(f);
        Ok(())
    }

    /// Applies the staged batch (if any) and answers its writers.
    pub fn apply_staged(&mut self) -> Vec<Outcome<W>> {
        let Some(f) = self.staged.take() else { return Vec::new() };
        let seq = f.seq;
        let mut out = Vec::with_capacity(f.waiters.len());
        let payload_bytes = f.entry.payload.len() as u64;
        let mut waiters = f.waiters.into_iter();
        for (i, w) in f.writes.into_iter().enumerate() {
            let id = w.id();
            // The write's key and value move into the memtable; the remembered outcome keeps
            // a copy of the key only when there is an id to remember.
            let routed_by = id.map(|_| w.op.routing_key().clone());
            let reply = self.apply_owned(w.op, Version { seq, index: i as u32 });
            let result = Ok(reply);
            self.finish_write_id_routed(id, routed_by, &result, &mut out);
            // The expiry sweep's deletes, after the callers' writes, have no waiter.
            if let Some(waiter) = waiters.next() {
                out.push((waiter, result));
            }
        }
        self.log_bytes_total += payload_bytes;
        // The next slot opened when the batch was staged.
        self.applied = seq;
        out
    }

    /// The slot of the append in flight was taken by another owner: this range is fenced.
    /// Every waiting writer is answered `Fenced` (nothing of theirs was written).
    pub fn on_fenced(&mut self) -> Vec<Outcome<W>> {
        self.fenced = true;
        let mut out = Vec::new();
        if let Some(f) = self.in_flight.take() {
            out.extend(f.waiters.into_iter().map(|w| (w, Err(Error::Fenced))));
        }
        out.extend(self.pending.drain(..).map(|p| (p.waiter, Err(Error::Fenced))));
        for (_, followers) in self.dedup.followers.drain() {
            out.extend(followers.into_iter().map(|w| (w, Err(Error::Fenced))));
        }
        self.dedup.pending.clear();
        out
    }

    /// The store refused the append in flight for good (too large, invalid: a retry of the
    /// same entry would be refused again). Nothing was written: its writers (and callers
    /// following their ids) get `err`, and the slot stays free for the next batch.
    pub fn on_append_refused(&mut self, err: Error) -> Vec<Outcome<W>> {
        self.fail_in_flight(err)
    }

    /// The range stops with an append in flight (its node's epoch ended): the append may
    /// still land, so its writers (and callers following their write ids) are answered
    /// `Timeout`, "outcome unknown", never a "not written" error a caller would retry blindly.
    pub fn abandon_in_flight(&mut self) -> Vec<Outcome<W>> {
        self.fail_in_flight(Error::Timeout)
    }

    /// Answers the append in flight's writers (and followers of their ids) with `err`,
    /// remembering nothing.
    fn fail_in_flight(&mut self, err: Error) -> Vec<Outcome<W>> {
        let mut out = Vec::new();
        if let Some(f) = self.in_flight.take() {
            self.fail_writes(&f.writes, f.waiters, &err, &mut out);
        }
        out
    }

    /// Answers `writes` (with their `waiters`) and the followers of their ids with `err`,
    /// remembering nothing: a retry may try again.
    fn fail_writes(&mut self, writes: &[LoggedWrite], waiters: Vec<W>, err: &Error, out: &mut Vec<Outcome<W>>) {
        for (w, waiter) in writes.iter().zip(waiters) {
            self.finish_write_id_unremembered(w.id(), &Err(err.clone()), out);
            out.push((waiter, Err(err.clone())));
        }
    }

    /// Refuses every queued write with `err` (the range is being released or lost its
    /// liveness); an append in flight is left to finish.
    pub fn refuse_pending(&mut self, err: Error) -> Vec<Outcome<W>> {
        let mut out = Vec::new();
        for p in self.pending.drain(..) {
            if let Some(id) = p.write.write_id {
                self.dedup.pending.remove(&id);
                if let Some(f) = self.dedup.take_followers(&id) {
                    out.extend(f.into_iter().map(|w| (w, Err(err.clone()))));
                }
            }
            out.push((p.waiter, Err(err.clone())));
        }
        out
    }

    /// Like `finish_write_id` for a write that failed without effect: its followers get the
    /// same answer, nothing is remembered (a retry may try again).
    fn finish_write_id_unremembered(
        &mut self,
        id: Option<WriteKey>,
        result: &Result<Reply, Error>,
        out: &mut Vec<Outcome<W>>,
    ) {
        let Some(id) = id else { return };
        self.dedup.pending.remove(&id);
        if let Some(followers) = self.dedup.take_followers(&id) {
            out.extend(followers.into_iter().map(|w| (w, result.clone())));
        }
    }

    /// `op`: the write, whose routing key the remembered outcome keeps (for splits).
    fn finish_write_id(
        &mut self,
        id: Option<WriteKey>,
        op: &LoggedOp,
        result: &Result<Reply, Error>,
        out: &mut Vec<Outcome<W>>,
    ) {
        let routed_by = id.map(|_| op.routing_key().clone());
        self.finish_write_id_routed(id, routed_by, result, out);
    }

    fn remember(&mut self, id: WriteKey, op: &LoggedOp, result: Result<Reply, Error>) {
        self.remember_routed(id, Some(op.routing_key().clone()), result);
    }

    fn remember_routed(&mut self, id: WriteKey, routed_by: Option<Key>, result: Result<Reply, Error>) {
        if let Some(outcome) = WriteOutcome::of(&result) {
            self.dedup.done.remember(id, outcome, routed_by, self.now_unix_ms);
        }
    }

    /// [`Self::finish_write_id`] for a write whose op was moved into the memtable.
    fn finish_write_id_routed(
        &mut self,
        id: Option<WriteKey>,
        routed_by: Option<Key>,
        result: &Result<Reply, Error>,
        out: &mut Vec<Outcome<W>>,
    ) {
        let Some(id) = id else { return };
        self.dedup.pending.remove(&id);
        if let Some(followers) = self.dedup.take_followers(&id) {
            out.extend(followers.into_iter().map(|w| (w, result.clone())));
        }
        self.remember_routed(id, routed_by, result.clone());
    }

    /// [`Self::apply`] of a write the caller no longer needs: a put's key and value move
    /// into the memtable instead of being copied.
    fn apply_owned(&mut self, op: LoggedOp, version: Version) -> Reply {
        match op {
            LoggedOp::Put { key, value } => {
                // The entry is built (allocated and copied) before the write lock is taken.
                let entry = Entry::new(key.as_bytes(), &value, version);
                self.data_bytes += entry.data_bytes();
                if let Some(old) = self.data.write().insert(entry) {
                    self.data_bytes -= old.data_bytes();
                }
                Reply::Written { version }
            }
            other => self.apply(&other, version),
        }
    }

    fn apply(&mut self, op: &LoggedOp, version: Version) -> Reply {
        match op {
            LoggedOp::Put { key, value } => {
                let entry = Entry::new(key.as_bytes(), value, version);
                self.data_bytes += entry.data_bytes();
                if let Some(old) = self.data.write().insert(entry) {
                    self.data_bytes -= old.data_bytes();
                }
                Reply::Written { version }
            }
            LoggedOp::Delete { key } => {
                let removed = match self.data.write().remove(key.as_bytes()) {
                    Some(old) => {
                        self.data_bytes -= old.data_bytes();
                        1
                    }
                    None => 0,
                };
                Reply::Deleted { removed, version }
            }
            LoggedOp::PutExpiring { key, value, expires_at_ms } => {
                self.insert(Entry::with_expiry(key.as_bytes(), value, version, Some(*expires_at_ms)));
                Reply::Written { version }
            }
            LoggedOp::SetExpiry { key, expires_at_ms } => {
                // Logged only for a key that existed: the entry is rewritten with its value.
                let current = self.data.read().get(key.as_bytes()).cloned();
                let Some(current) = current else { return Reply::ExpiryChanged { changed: false } };
                self.insert(Entry::with_expiry(key.as_bytes(), current.value(), version, *expires_at_ms));
                Reply::ExpiryChanged { changed: true }
            }
            LoggedOp::Counter { key, value, expires_at_ms } => {
                let text = value.to_string();
                self.insert(Entry::with_expiry(key.as_bytes(), text.as_bytes(), version, *expires_at_ms));
                Reply::Counted { value: *value, version }
            }
            LoggedOp::DeleteRange { start, end } => {
                let upper = end.as_ref().map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_bytes()));
                let mut data = self.data.write();
                // Shared handles to the doomed entries (no copies of their keys).
                let doomed: Vec<Entry> = data.range(Bound::Included(start.as_bytes()), upper).cloned().collect();
                for e in &doomed {
                    if let Some(old) = data.remove(e.key()) {
                        self.data_bytes -= old.data_bytes();
                    }
                }
                Reply::Deleted { removed: doomed.len() as u64, version }
            }
        }
    }

    /// Puts `entry` in the memtable, counting its bytes in place of the entry it replaces.
    fn insert(&mut self, entry: Entry) {
        self.data_bytes += entry.data_bytes();
        if let Some(old) = self.data.write().insert(entry) {
            self.data_bytes -= old.data_bytes();
        }
    }

    /// Applies one log entry read back from the log during load. Entries must come in order,
    /// right after what is applied.
    pub fn replay(&mut self, seq: Seq, entry: &LogEntry) -> Result<(), Error> {
        if seq != self.next_seq {
            return Err(Error::internal(format!(
                "{}: log entry {seq} replayed out of order (expected {})",
                self.range_id, self.next_seq
            )));
        }
        if !self.invariant(self.in_flight.is_none() && self.staged.is_none() && self.pending.is_empty(), || {
            "replay only while loading".into()
        }) {
            return Err(Error::internal("replay while serving"));
        }
        match entry.kind {
            EntryKind::Batch | EntryKind::Split | EntryKind::Merge | EntryKind::Txn if self.split.is_some() => {
                return Err(Error::internal(format!("{}: log entry {seq} follows the split", self.range_id)));
            }
            EntryKind::Batch | EntryKind::Split | EntryKind::Merge | EntryKind::Txn if self.merge_closed.is_some() => {
                return Err(Error::internal(format!(
                    "{}: log entry {seq} follows a merge entry without a fence reopening the log",
                    self.range_id
                )));
            }
            EntryKind::Merge => {
                self.merge_closed = Some((seq, MergePlan::decode(&entry.payload)?));
            }
            // Whoever wrote the fence reopened the log (see `MergePlan`).
            EntryKind::Fence => self.merge_closed = None,
            EntryKind::Batch => {
                let payload = batch::decode(&entry.payload)?;
                for (i, w) in payload.writes.iter().enumerate() {
                    let reply = self.apply(&w.op, Version { seq, index: i as u32 });
                    if let Some(id) = w.write_id {
                        // As `submit` did: the write's floor forgets its client's older records.
                        self.dedup.done.raise_floor(id.client, id.floor.min(id.n), self.now_unix_ms);
                    }
                    if let Some(id) = w.id() {
                        self.remember(id, &w.op, Ok(reply));
                    }
                }
            }
            EntryKind::Abort => {}
            EntryKind::Txn => {
                let payload = batch::decode_txn(&entry.payload)?;
                for (i, w) in payload.writes.iter().enumerate() {
                    self.apply(&w.op, Version { seq, index: i as u32 });
                }
                self.remember_txn(payload.txn_id, true, Some(seq));
            }
            EntryKind::Split => {
                let plan = SplitPlan::decode(&entry.payload)?;
                if !self.range.contains(plan.split_key.as_bytes()) || plan.split_key == self.range.start {
                    return Err(Error::internal(format!(
                        "{}: split entry {seq} splits at {}, outside {}",
                        self.range_id, plan.split_key, self.range
                    )));
                }
                self.split = Some((seq, plan));
            }
        }
        self.log_bytes_total += entry.payload.len() as u64;
        self.advance_to(seq);
        Ok(())
    }

    // ----- transactions -----

    /// Prepares a transaction: checks its conditions against the applied data and holds the
    /// range for it, reserving the next slot when it writes. Call with no append in flight.
    /// Preparing the same transaction again answers the same slot.
    pub fn txn_prepare(
        &mut self,
        txn_id: WriteId,
        checks: &[TxnCheck],
        writes: &[TxnWrite],
    ) -> Result<Option<Seq>, Error> {
        if !self.invariant(self.in_flight.is_none() && self.staged.is_none(), || {
            "prepare with an append in flight or a batch not applied".into()
        }) {
            return Err(Error::internal("prepare with an append in flight"));
        }
        if let Some(h) = &self.txn_hold {
            if h.txn_id == txn_id {
                return Ok(h.seq);
            }
            return Err(Error::unavailable(format!("{} is held by another transaction", self.range_id)));
        }
        if self.fenced {
            return Err(Error::Fenced);
        }
        if self.split.is_some() || self.merge_closed.is_some() {
            return Err(Error::RangeLoading { retry_after_ms: 20 });
        }
        for key in checks.iter().map(|c| c.key.clone()).chain(writes.iter().map(TxnWrite::target)) {
            self.check_key(&key)?;
        }
        for c in checks {
            let current = self.data.read().get_live(c.key.as_bytes(), self.now_unix_ms).cloned();
            let holds = match &c.condition {
                TxnCondition::Absent => current.is_none(),
                TxnCondition::Version(v) => current.as_ref().is_some_and(|s| s.version() == *v),
                TxnCondition::Value(v) => current.as_ref().is_some_and(|s| s.value() == v.as_slice()),
            };
            if !holds {
                let found = current.map_or_else(|| "absent".to_string(), |s| format!("version {}", s.version()));
                return Err(Error::conflict_on(
                    &c.key,
                    format!("{}: expected {:?}, found {found}", c.key, c.condition),
                ));
            }
        }
        let no_overlay = HashMap::new();
        for w in writes {
            if let TxnWrite::Push { .. } = w
                && let Some(Err(e)) = self.list_tail_check(&w.target(), &no_overlay)
            {
                return Err(e);
            }
        }
        let seq = (!writes.is_empty()).then_some(self.next_seq);
        let now = self.now_unix_ms;
        self.txn_hold = Some(TxnHold { txn_id, seq, writes: writes.iter().map(|w| batch::logged(w, now)).collect() });
        Ok(seq)
    }

    pub fn txn_held(&self) -> Option<&TxnHold> {
        self.txn_hold.as_ref()
    }

    /// The entry of the held transaction as this range's writer would write it.
    pub fn txn_entry(&self) -> Option<(Seq, LogEntry)> {
        let h = self.txn_hold.as_ref()?;
        let payload = batch::TxnPayload { txn_id: h.txn_id, writes: h.writes.clone() };
        let entry = LogEntry {
            kind: EntryKind::Txn,
            writer: self.writer.clone(),
            epoch: self.epoch,
            payload: Bytes::from(batch::encode_txn(&payload)),
        };
        Some((h.seq?, entry))
    }

    /// The held transaction's entry is in the log at its slot: apply its writes. Returns
    /// their versions.
    pub fn txn_commit(&mut self) -> Result<Vec<Version>, Error> {
        let Some(h) = self.txn_hold.take() else { return Ok(Vec::new()) };
        let Some(seq) = h.seq else { return Ok(Vec::new()) };
        let (next, in_flight) = (self.next_seq, self.in_flight.is_some() || self.staged.is_some());
        if !self.invariant(seq == next && !in_flight, || {
            format!("reserved slot = next seq: transaction slot {seq}, next seq {next}, append in flight: {in_flight}")
        }) {
            return Err(self.broken_error());
        }
        let mut versions = Vec::with_capacity(h.writes.len());
        for (i, w) in h.writes.iter().enumerate() {
            let version = Version { seq, index: i as u32 };
            self.apply(&w.op, version);
            versions.push(version);
        }
        self.log_bytes_total += h.writes.iter().map(|w| w.encoded_bytes_max() as u64).sum::<u64>();
        self.advance_to(seq);
        Ok(versions)
    }

    /// The entry that gives up the held transaction's slot.
    pub fn txn_abort_entry(&self) -> Option<(Seq, LogEntry)> {
        let seq = self.txn_hold.as_ref()?.seq?;
        let entry =
            LogEntry { kind: EntryKind::Abort, writer: self.writer.clone(), epoch: self.epoch, payload: Bytes::new() };
        Some((seq, entry))
    }

    /// The abort entry is in the reserved slot: the transaction is over, writes continue.
    pub fn txn_aborted(&mut self) {
        if let Some(TxnHold { seq: Some(seq), .. }) = self.txn_hold.take() {
            let next = self.next_seq;
            if !self.invariant(seq == next, || format!("reserved slot = next seq: abort at {seq}, next seq {next}")) {
                return;
            }
            self.advance_to(seq);
        }
    }

    /// Ends a hold that reserved no slot (a transaction with no writes here).
    pub fn txn_release(&mut self) {
        let unresolved = self.txn_hold.as_ref().is_some_and(|h| h.seq.is_some());
        self.invariant(!unresolved, || "a held transaction's reserved slot released unresolved".into());
        if self.txn_hold.as_ref().is_some_and(|h| h.seq.is_none()) {
            self.txn_hold = None;
        }
    }

    /// The split that closed the log, if any.
    pub fn split_state(&self) -> Option<&(Seq, SplitPlan)> {
        self.split.as_ref()
    }

    /// The key that halves the range's data, when it holds at least two keys.
    fn split_key_anywhere(&self) -> Option<Key> {
        let half = self.data_bytes / 2;
        let mut acc = 0u64;
        let data = self.data.read();
        for (i, e) in data.iter().enumerate() {
            if i > 0 && acc >= half {
                return Some(Key::from(e.key()));
            }
            acc += e.data_bytes();
        }
        // The first keys hold most of the data: split before the last key.
        data.iter().nth(1).and_then(|_| data.last().map(|e| Key::from(e.key())))
    }

    /// [`Self::split_key_anywhere`], moved out of any list so that a list never straddles two
    /// ranges (the push order check needs to see the whole list). `None` when the range is
    /// one list and nothing else.
    pub fn split_key(&self) -> Option<Key> {
        let candidate = self.split_key_anywhere()?;
        let key = ampstore_common::lists::split_point_outside(&candidate, &self.range.start);
        let keeps_keys_on_both_sides = key > self.range.start
            && self.range.contains(key.as_bytes())
            && self.data.read().range(Bound::Unbounded, Bound::Excluded(key.as_bytes())).next().is_some()
            && self.data.read().range(Bound::Included(key.as_bytes()), Bound::Unbounded).next().is_some();
        keeps_keys_on_both_sides.then_some(key)
    }

    /// The log entry that closes the range for `plan`, at the next seq. Call with no append
    /// in flight and nothing pending (the driver refuses writes while splitting).
    pub fn split_entry(&mut self, plan: &SplitPlan) -> (Seq, LogEntry) {
        // Checked in release builds: a failure breaks the range, which stops after this step.
        let idle = self.in_flight.is_none() && self.staged.is_none() && self.pending.is_empty();
        self.invariant(idle, || "split entry with an append in flight or writes pending".into());
        let inside = self.range.contains(plan.split_key.as_bytes()) && plan.split_key != self.range.start;
        let range = self.range.clone();
        self.invariant(inside, || format!("split key {} not strictly inside {range}", plan.split_key));
        let entry =
            LogEntry { kind: EntryKind::Split, writer: self.writer.clone(), epoch: self.epoch, payload: plan.encode() };
        (self.next_seq, entry)
    }

    /// The split entry is durable at `seq`: the log is closed.
    pub fn on_split_appended(&mut self, seq: Seq, plan: SplitPlan) {
        let next = self.next_seq;
        if !self.invariant(seq == next, || format!("seq continuity: split entry at {seq}, next seq {next}")) {
            return;
        }
        self.split = Some((seq, plan));
        self.advance_to(seq);
    }

    /// The children's data: keys below the split key, and the rest.
    pub fn divide(&self, split_key: &Key) -> (Memtable, Memtable) {
        self.data.read().divide(split_key.as_bytes())
    }

    /// Records that a fence (ours) was written at `seq`, during load or to abandon a merge:
    /// a log closed by a merge entry is open again. Returns the abandoned merge, if any.
    pub fn fenced_at(&mut self, seq: Seq) -> Option<MergePlan> {
        let (next, applied) = (self.next_seq, self.applied);
        if !self.invariant(seq == next && seq > applied, || {
            format!("fence above applied: fence at {seq}, next seq {next}, applied {applied}")
        }) {
            return None;
        }
        self.advance_to(seq);
        self.merge_closed.take().map(|(_, plan)| plan)
    }

    /// The merge entry that closed the log, while no fence has reopened it.
    #[cfg(test)]
    pub fn merge_state(&self) -> Option<&(Seq, MergePlan)> {
        self.merge_closed.as_ref()
    }

    /// The log entry that closes the range for a merge, at the next seq. Call with no
    /// append in flight and nothing pending (the driver refuses writes while merging).
    pub fn merge_entry(&mut self, plan: &MergePlan) -> (Seq, LogEntry) {
        // Checked in release builds: a failure breaks the range, which stops after this step.
        let idle = self.in_flight.is_none() && self.staged.is_none() && self.pending.is_empty();
        self.invariant(idle, || "merge entry with an append in flight or writes pending".into());
        let open = self.split.is_none() && self.merge_closed.is_none();
        self.invariant(open, || "merge entry on a log closed by a split or merge".into());
        let entry =
            LogEntry { kind: EntryKind::Merge, writer: self.writer.clone(), epoch: self.epoch, payload: plan.encode() };
        (self.next_seq, entry)
    }

    /// The merge entry is durable at `seq`: the log is closed until a fence reopens it.
    pub fn on_merge_appended(&mut self, seq: Seq, plan: MergePlan) {
        let next = self.next_seq;
        if !self.invariant(seq == next, || format!("seq continuity: merge entry at {seq}, next seq {next}")) {
            return;
        }
        self.merge_closed = Some((seq, plan));
        self.advance_to(seq);
    }

    /// The fence that reopens a merge-closed log, at the next seq (as a loader's fence does
    /// after an abandoned merge).
    #[cfg(test)]
    pub fn reopen_entry(&self) -> (Seq, LogEntry) {
        debug_assert!(self.merge_closed.is_some() && self.in_flight.is_none());
        let entry =
            LogEntry { kind: EntryKind::Fence, writer: self.writer.clone(), epoch: self.epoch, payload: Bytes::new() };
        (self.next_seq, entry)
    }

    /// An O(1) frozen view for a snapshot: the applied seq, the data and the remembered
    /// write ids at it, and the log bytes so far.
    pub fn snapshot_view(&self) -> (Seq, Memtable, WriteIdTable, u64) {
        (self.applied, self.data.read().clone(), self.dedup.done.clone(), self.log_bytes_total)
    }

    /// A snapshot at `seq` (taken when `log_bytes_total` was `log_bytes`) is the checkpoint.
    pub fn on_checkpoint(&mut self, seq: Seq, log_bytes: u64) {
        let applied = self.applied;
        if !self.invariant(seq <= applied, || format!("checkpoint at {seq} beyond applied {applied}")) {
            return;
        }
        if seq > self.checkpoint_seq {
            self.checkpoint_seq = seq;
            self.log_bytes_at_checkpoint = log_bytes;
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

/// The batch overlay of `writes` (the batch so far, at `seq`): what each key they touch
/// holds after them.
fn overlay_of(writes: &[LoggedWrite], seq: Seq) -> HashMap<Key, Option<Version>> {
    let mut overlay = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        overlay_add(&mut overlay, &w.op, Version { seq, index: i as u32 });
    }
    overlay
}

/// Adds one write of the batch, at `version`, to its overlay.
fn overlay_add(overlay: &mut HashMap<Key, Option<Version>>, op: &LoggedOp, version: Version) {
    match op {
        LoggedOp::Put { key, .. }
        | LoggedOp::PutExpiring { key, .. }
        | LoggedOp::SetExpiry { key, .. }
        | LoggedOp::Counter { key, .. } => {
            overlay.insert(key.clone(), Some(version));
        }
        LoggedOp::Delete { key } => {
            overlay.insert(key.clone(), None);
        }
        LoggedOp::DeleteRange { start, end } => {
            overlay.retain(|k, _| !(k >= start && end.as_ref().is_none_or(|e| k < e)));
        }
    }
}
