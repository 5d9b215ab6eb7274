//! What readers see of a range without a turn through its actor (DESIGN section 5,
//! "Reads"): the range's memtable, shared with its actor (readers take a read lock, the
//! actor a write lock per applied operation), and whether the range serves reads. The
//! connection task serves gets and scans from it directly, checking the serving rule itself.
//!
//! Why a shared memtable and not an immutable view published after each batch: the
//! memtable is a persistent map, and a published clone makes the next batch copy every
//! B-tree node it touches (measured: a durable put went from 32,000 to 59,000 node
//! instructions; `docs/benchmarks.md`). A read lock costs a get one uncontended atomic.
//!
//! Never stale: the actor applies a batch (under the write lock) before it answers its
//! writes, so a read that starts after a write was acknowledged sees it; and the range stops
//! serving reads (`set_serving(false)`) before it gives itself up (release, fence, split,
//! stop), before that step's effects run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{KeyTtl, Reply, Versioned};
use ampstore_common::{Epoch, Key, KeyRange};

use super::memtable::{self, SharedMemtable};
use crate::liveness::Liveness;

/// The serving rule for reads: the range serves (`serving`), and the node is live (`live`)
/// in the epoch the range was loaded in (`instance_epoch`).
pub fn admits(serving: bool, instance_epoch: Epoch, node_epoch: Epoch, live: bool) -> bool {
    serving && ownership::instance_may_serve(instance_epoch, node_epoch, live)
}

/// A range as its readers share it (see the module doc).
pub struct ViewCell {
    data: SharedMemtable,
    range: KeyRange,
    /// The epoch the instance was loaded in.
    epoch: Epoch,
    /// False once the range stopped serving reads (releasing, fenced, stopped).
    serving: AtomicBool,
    /// Reads served so far: the actor counts a range that is only read as used (idle
    /// release).
    reads: AtomicU64,
}

impl ViewCell {
    pub fn new(data: SharedMemtable, range: KeyRange, epoch: Epoch, serving: bool) -> ViewCell {
        ViewCell { data, range, epoch, serving: AtomicBool::new(serving), reads: AtomicU64::new(0) }
    }

    /// The actor's side: whether reads may be served from now on.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    fn check(&self, liveness: &Liveness) -> Result<(), Error> {
        if !admits(self.serving.load(Ordering::Acquire), self.epoch, liveness.epoch(), liveness.is_valid()) {
            return Err(Error::NotOwner { hint: None });
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The value and version at `key`, when the serving rule allows.
    pub fn get(&self, liveness: &Liveness, key: &Key) -> Result<Option<Versioned>, Error> {
        self.check(liveness)?;
        memtable::get(&self.data.read(), &self.range, key, memtable::unix_now_ms)
    }

    /// How long `key` has to live, when the serving rule allows.
    pub fn ttl(&self, liveness: &Liveness, key: &Key) -> Result<KeyTtl, Error> {
        self.check(liveness)?;
        memtable::ttl(&self.data.read(), &self.range, key, memtable::unix_now_ms())
    }

    /// One page of `[start, end)` within the range, when the serving rule allows.
    pub fn scan(
        &self,
        liveness: &Liveness,
        start: &Key,
        end: Option<&Key>,
        limit: usize,
        reverse: bool,
    ) -> Result<Reply, Error> {
        self.check(liveness)?;
        memtable::scan(&self.data.read(), &self.range, start, end, (limit, reverse), memtable::unix_now_ms())
    }

    /// Reads served so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}
