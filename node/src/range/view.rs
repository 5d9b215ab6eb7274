//! What readers see of a range without a turn through its actor (DESIGN section 5,
//! "Reads"): after each applied batch the actor publishes a [`RangeView`] (its applied data,
//! a cheap clone of the persistent map, and whether it still serves), and the connection
//! task serves gets and scans from it directly, checking the serving rule itself.
//!
//! Never stale: the actor publishes the view before it answers the writes of the batch, so a
//! read that starts after a write was acknowledged sees it; and a view stops serving (its
//! `serving` is false) before the range gives itself up (release, fence, split, stop).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ampstore_common::error::Error;
use ampstore_common::ownership;
use ampstore_common::protocol::{Reply, Versioned};
use ampstore_common::{Epoch, Key, KeyRange, Seq};
use arc_swap::ArcSwap;

use super::memtable::{self, Memtable};
use crate::liveness::Liveness;

/// A range's applied data and serving state at one moment.
pub struct RangeView {
    pub data: Memtable,
    pub range: KeyRange,
    /// The epoch the instance was loaded in: it serves only while the node is live in it.
    pub epoch: Epoch,
    /// The last applied log seq in `data`.
    pub applied: Seq,
    /// False once the range stopped serving reads (releasing, fenced, stopped).
    pub serving: bool,
}

/// Where a range's actor publishes its view and readers take it.
pub struct ViewCell {
    view: ArcSwap<RangeView>,
    /// Reads served from views since the range started: the actor counts a range that is
    /// only read as used (idle release).
    reads: AtomicU64,
}

impl ViewCell {
    pub fn new(first: RangeView) -> ViewCell {
        ViewCell { view: ArcSwap::from_pointee(first), reads: AtomicU64::new(0) }
    }

    /// Publishes `view` for every read that starts from now on.
    pub fn publish(&self, view: RangeView) {
        self.view.store(Arc::new(view));
    }

    /// The current view, when the serving rule lets it serve now: the range serves, and
    /// the node is live in the epoch the range was loaded in.
    pub fn serving_view(&self, liveness: &Liveness) -> Result<arc_swap::Guard<Arc<RangeView>>, Error> {
        let view = self.view.load();
        if !view.admits(liveness.epoch(), liveness.is_valid()) {
            return Err(Error::NotOwner { hint: None });
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(view)
    }

    /// Reads served from views so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// What the last published view says (the actor's own bookkeeping).
    pub fn published(&self) -> (Seq, bool) {
        let view = self.view.load();
        (view.applied, view.serving)
    }
}

impl RangeView {
    /// The serving rule for reads: the range serves, and the node is live (`live`) in the
    /// epoch the range was loaded in.
    pub fn admits(&self, node_epoch: Epoch, live: bool) -> bool {
        self.serving && ownership::instance_may_serve(self.epoch, node_epoch, live)
    }

    pub fn get(&self, key: &Key) -> Result<Option<Versioned>, Error> {
        memtable::get(&self.data, &self.range, key)
    }

    pub fn scan(&self, start: &Key, end: Option<&Key>, limit: usize, reverse: bool) -> Result<Reply, Error> {
        memtable::scan(&self.data, &self.range, start, end, limit, reverse)
    }
}
