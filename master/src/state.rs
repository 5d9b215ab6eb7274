//! The master's control state and every decision taken on it: pure, with time passed in.
//!
//! `ControlState` holds what the active master knows (the term, the routing table, the
//! nodes as watched, the ranges being assigned or moved) and answers the questions the
//! driver asks: what a locate answers, which ranges to place now (unowned, or owned by a
//! node whose epoch is over), which moves and merges to start, which node epochs to end,
//! what the status shows. No method awaits or does I/O: the driver (`driver.rs`,
//! `control.rs`, `service.rs`) takes what it needs under the state lock, drops the lock,
//! does the I/O, and takes the lock again to apply the result.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ampstore_common::error::{Error, OwnerHint};
use ampstore_common::limits::LOCATE_RANGES_MAX;
use ampstore_common::protocol::{NodeStats, RangeLocation, Reply};
use ampstore_common::{Epoch, Key, NodeId, RangeId, Term};
use ampstore_server::config::MasterConfig;
use ampstore_store::meta::{self, NodeRecord, Owner, PK_NODE, RangeDescriptor, TermRecord, Versioned};
use ampstore_store::{Expect, MetaOp};

use crate::merges::{self, MergePick};
use crate::nodes::NodeWatch;
use crate::placement::{self, Move, NodeLoad};
use crate::routing::{RoutingError, RoutingTable};

/// How soon a client should ask again about a range being assigned or moved.
pub(crate) const ASSIGNING_RETRY_MS: u64 = 100;
/// Unavailable assignments are logged at most this often.
const UNPLACEABLE_WARN_INTERVAL: Duration = Duration::from_secs(1);
/// How long balance moves leave the children of a split where they are (a range still
/// growing splits again within seconds; moving it in between costs a snapshot, a release
/// and a load each time).
pub(crate) const FRESH_SPLIT_HOLD: Duration = Duration::from_secs(3);
/// How long merges pause after one failed (the node may be dying, or the pair busy).
pub(crate) const MERGE_BACKOFF: Duration = Duration::from_secs(2);

/// The term the master acts in, with the routing it loaded for it.
pub(crate) struct Active {
    pub(crate) term: TermRecord,
    pub(crate) valid_until: Instant,
    pub(crate) routing: RoutingTable,
    /// Splits and merges applied to `routing` in memory (a refresh that read meta before
    /// one of them must not undo it).
    pub(crate) routing_changes: u64,
}

#[derive(Default)]
pub(crate) struct ControlState {
    pub(crate) active: Option<Active>,
    pub(crate) nodes: NodeWatch,
    /// Ranges (by start key) being assigned or moved: locates answer `RangeLoading`.
    busy: HashSet<Key>,
    moves_in_flight: usize,
    holder: Option<(NodeId, String)>,
    /// When an assignment that found no node to take the range was last logged.
    unplaceable_warned_at: Option<Instant>,
    /// Nodes whose stats poll is under way (one per node at a time).
    pub(crate) stats_polling: HashSet<NodeId>,
    /// No merge starts before this (set after a failed merge).
    merges_paused_until: Option<Instant>,
    /// Ranges (by start) that just came out of a split, and until when balance moves leave
    /// them where they are.
    fresh: HashMap<Key, Instant>,
}

/// What the control loop starts in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Place the range at this start on the least-loaded node (it has no owner, or its
    /// owner's epoch is over). The assignment claims the range itself.
    Assign(Key),
    /// Move a range (a drain or balance). Counted in flight until `move_done`.
    Move(Move),
    /// Merge a pair. Both ranges are busy and it counts in flight until `merge_done`.
    Merge(MergePick),
}

/// The decisions of one control round.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Round {
    pub(crate) actions: Vec<Action>,
    /// Whether node loads were looked at for moves (false while moves or assignments were
    /// still running, so the look is due again at the next round).
    pub(crate) balance_looked: bool,
}

/// The write that ends a silent node's epoch.
#[derive(Debug)]
pub(crate) struct EndEpoch {
    pub(crate) node: NodeId,
    /// The epoch that ends.
    pub(crate) epoch: Epoch,
    /// The conditional put of the ended record.
    pub(crate) op: MetaOp,
    /// The record as it is once the put lands (`None` if its version cannot be counted).
    pub(crate) written: Option<Versioned<NodeRecord>>,
}

/// An assignment to make: record `owner` on `desc` in `term`, then have it load.
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    pub(crate) term: TermRecord,
    pub(crate) desc: Versioned<RangeDescriptor>,
    pub(crate) owner: Owner,
}

/// What a locate answers, and the ranges it found with no live owner (placed now).
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) answer: Result<Reply, Error>,
    pub(crate) place: Vec<Key>,
}

impl ControlState {
    /// The term and routing, if this master may act at `now`.
    pub(crate) fn active(&self, now: Instant) -> Option<&Active> {
        self.active.as_ref().filter(|a| now < a.valid_until)
    }

    /// The term record to check, if this master may act at `now`.
    pub(crate) fn acting_term(&self, now: Instant) -> Option<TermRecord> {
        self.active(now).map(|a| a.term.clone())
    }

    /// The answer to a request only the active master serves, naming the holder (unless it
    /// is `me`).
    pub(crate) fn not_master(&self, me: &NodeId) -> Error {
        let hint = self.holder.clone().filter(|(id, _)| id != me);
        Error::NotMaster { hint: hint.map(|(node_id, rpc_addr)| OwnerHint { node_id, rpc_addr }) }
    }

    // ---- the lease --------------------------------------------------------------------

    /// The term whose routing is loaded, valid or not.
    pub(crate) fn loaded_term(&self) -> Option<Term> {
        self.active.as_ref().map(|a| a.term.term)
    }

    /// The lease was renewed in the loaded term.
    pub(crate) fn lease_renewed(&mut self, valid_until: Instant, holder: Option<(NodeId, String)>) {
        self.holder = holder;
        if let Some(a) = self.active.as_mut() {
            a.valid_until = valid_until;
        }
    }

    /// This master took over: it acts in `active.term` with what it loaded.
    pub(crate) fn took_over(&mut self, active: Active, nodes: NodeWatch, holder: Option<(NodeId, String)>) {
        self.active = Some(active);
        self.nodes = nodes;
        self.busy.clear();
        self.holder = holder;
    }

    /// Someone else holds the lease (or nobody). Returns whether this master was active.
    pub(crate) fn lease_lost(&mut self, holder: Option<(NodeId, String)>) -> bool {
        let was = self.active.take().is_some();
        self.holder = holder;
        was
    }

    /// A write was refused on the term: another master took over.
    pub(crate) fn deposed(&mut self) {
        self.active = None;
    }

    // ---- nodes -------------------------------------------------------------------------

    /// Records the node records and drains read from meta at `now`, and returns the epochs
    /// to end: nodes silent for their full liveness duration.
    pub(crate) fn observe_nodes(
        &mut self,
        now: Instant,
        records: Vec<(NodeId, Versioned<NodeRecord>)>,
        drained: &HashMap<NodeId, Epoch>,
    ) -> Vec<(NodeId, Versioned<NodeRecord>)> {
        for (id, rec) in records {
            self.nodes.observe(now, &id, rec);
        }
        let ids: Vec<NodeId> = self.nodes.iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.nodes.set_drain(&id, drained.get(&id).copied());
        }
        self.nodes.expired(now)
    }

    /// The write of `EndEpoch` landed: `written` is the node's record now.
    pub(crate) fn epoch_ended(&mut self, now: Instant, id: &NodeId, written: Versioned<NodeRecord>) {
        self.nodes.observe(now, id, written);
    }

    /// Gossip reports `id` down (`up == false`) or up again: a hint for placement only.
    pub(crate) fn gossip_report(&mut self, now: Instant, id: &NodeId, up: bool) {
        self.nodes.gossip_report(now, id, up);
    }

    /// The nodes (id, RPC address) to poll for stats now; each stays marked as polled
    /// until `stats_done`.
    pub(crate) fn stats_targets(&mut self) -> Vec<(NodeId, String)> {
        let live = self.nodes.iter().filter(|(_, w)| !w.record.record.ended);
        let all: Vec<(NodeId, String)> = live.map(|(id, w)| (id.clone(), w.record.record.rpc_addr.clone())).collect();
        all.into_iter().filter(|(id, _)| self.stats_polling.insert(id.clone())).collect()
    }

    /// A stats poll of `id` ended, with the node's answer if it gave one.
    pub(crate) fn stats_done(&mut self, now: Instant, id: &NodeId, stats: Option<&NodeStats>) {
        if let Some(stats) = stats.filter(|s| &s.node_id == id) {
            self.nodes.set_stats(now, id, stats);
        }
        self.stats_polling.remove(id);
    }

    /// The address and current epoch of a node.
    pub(crate) fn node_addr(&self, id: &NodeId) -> Option<(String, Epoch)> {
        self.nodes.get(id).map(|w| (w.record.record.rpc_addr.clone(), w.record.record.epoch))
    }

    /// Whether a call to `owner` is still worth waiting for: its epoch is live at `now`.
    pub(crate) fn still_live(&self, now: Instant, owner: &Owner) -> bool {
        !epoch_over(&self.nodes, owner) && self.nodes.is_live(now, &owner.node_id, owner.epoch)
    }

    // ---- routing -----------------------------------------------------------------------

    /// How many splits and merges were applied in memory (to tell whether a refresh that
    /// read meta before now may still apply).
    pub(crate) fn routing_changes(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.routing_changes)
    }

    /// Applies a full re-read of the descriptors, unless a split or merge landed since the
    /// read started (then the next refresh reads it). Descriptors this master wrote after
    /// the read started (a higher version, same bounds) are kept.
    pub(crate) fn apply_refresh(
        &mut self,
        changes_before: Option<u64>,
        descs: Vec<Versioned<RangeDescriptor>>,
    ) -> Result<(), RoutingError> {
        let Some(active) = self.active.as_mut() else { return Ok(()) };
        if Some(active.routing_changes) != changes_before {
            return Ok(());
        }
        let merged: Vec<Versioned<RangeDescriptor>> = descs
            .into_iter()
            .map(|d| match active.routing.get(&d.record.range.start) {
                Some(cur) if cur.version > d.version && cur.record.range == d.record.range => cur.clone(),
                _ => d,
            })
            .collect();
        active.routing = RoutingTable::load(merged)?;
        Ok(())
    }

    /// Applies a committed split or merge: the descriptors at `removed` go, `added` come.
    pub(crate) fn apply_reshape(
        &mut self,
        removed: &[Key],
        added: Vec<Versioned<RangeDescriptor>>,
    ) -> Result<(), RoutingError> {
        let Some(a) = self.active.as_mut() else { return Ok(()) };
        a.routing_changes += 1;
        a.routing.replace(removed, added)
    }

    /// Takes a descriptor as read back from meta.
    pub(crate) fn update_range(&mut self, desc: Versioned<RangeDescriptor>) {
        if let Some(a) = self.active.as_mut() {
            a.routing.update(desc);
        }
    }

    /// The children of a split at `starts` stay where they are for `FRESH_SPLIT_HOLD`.
    pub(crate) fn note_split(&mut self, now: Instant, starts: &[Key]) {
        self.fresh.retain(|_, until| now < *until);
        for s in starts {
            self.fresh.insert(s.clone(), now + FRESH_SPLIT_HOLD);
        }
    }

    // ---- the control round -------------------------------------------------------------

    /// What to start at `now`: ranges to place (their owner's epoch is over), then moves
    /// (drains every round, balance only when `balance_due`) when none are in flight, then
    /// one merge when nothing else moves ranges. Moves and the merge count as in flight
    /// from here on.
    pub(crate) fn next_actions(&mut self, now: Instant, balance_due: bool, cfg: &MasterConfig) -> Round {
        let mut round = Round::default();
        if self.active(now).is_none() {
            return round;
        }
        round.actions.extend(self.orphans(now).into_iter().map(Action::Assign));
        if let Some(moves) = self.plan_moves(now, balance_due, cfg) {
            round.balance_looked = true;
            self.moves_in_flight += moves.len();
            round.actions.extend(moves.into_iter().map(Action::Move));
        }
        if let Some(pick) = self.pick_merge(now, cfg) {
            self.busy.insert(pick.left_start.clone());
            self.busy.insert(pick.right_start.clone());
            self.moves_in_flight += 1;
            round.actions.push(Action::Merge(pick));
        }
        round
    }

    /// Ranges whose owner's epoch is over (declared dead or restarted), not being placed.
    fn orphans(&self, now: Instant) -> Vec<Key> {
        let Some(a) = self.active(now) else { return Vec::new() };
        a.routing
            .iter()
            .filter(|d| {
                d.record.owner.as_ref().is_some_and(|o| epoch_over(&self.nodes, o))
                    && !self.busy.contains(&d.record.range.start)
            })
            .map(|d| d.record.range.start.clone())
            .collect()
    }

    /// The moves to start (drains first, then balance), or `None` when loads were not
    /// looked at.
    fn plan_moves(&self, now: Instant, balance_due: bool, cfg: &MasterConfig) -> Option<Vec<Move>> {
        let a = self.active(now)?;
        if self.moves_in_flight > 0 || !self.busy.is_empty() {
            return None;
        }
        let loads = node_loads(self, a, now, false);
        let draining = loads.iter().any(|l| l.draining && !l.ranges.is_empty());
        if !balance_due && !draining {
            return None;
        }
        Some(placement::plan_moves(&loads, cfg.moves_in_flight_max as usize, cfg.balance_tolerance_pct))
    }

    fn pick_merge(&self, now: Instant, cfg: &MasterConfig) -> Option<MergePick> {
        let a = self.active(now)?;
        if cfg.merge_idle_ms == 0
            || self.moves_in_flight > 0
            || !self.busy.is_empty()
            || self.merges_paused_until.is_some_and(|t| now < t)
        {
            return None;
        }
        let facts: Vec<merges::RangeFacts> = a.routing.iter().map(|d| self.merge_facts(now, &d.record)).collect();
        let loads = node_loads(self, a, now, false);
        merges::pick_merge(&facts, &loads, cfg.merge_idle_ms, cfg.balance_tolerance_pct)
    }

    fn merge_facts(&self, now: Instant, r: &RangeDescriptor) -> merges::RangeFacts {
        let live = r.owner.as_ref().filter(|o| self.nodes.is_live(now, &o.node_id, o.epoch));
        let load = live.and_then(|o| self.nodes.get(&o.node_id)).map(|w| &w.load);
        let idle_ms = load.and_then(|l| l.range_idle_ms.get(&r.range_id).copied());
        merges::RangeFacts {
            start: r.range.start.clone(),
            end: r.range.end.clone(),
            range_id: r.range_id,
            // Only a range its owner reported as serving is a candidate.
            owner: live.filter(|_| idle_ms.is_some()).map(|o| o.node_id.clone()),
            data_bytes: load.and_then(|l| l.range_bytes.get(&r.range_id).copied()).unwrap_or(0),
            idle_ms: idle_ms.unwrap_or(0),
            split_bytes: load.map_or(0, |l| l.split_bytes),
        }
    }

    /// A move started by `next_actions` ended.
    pub(crate) fn move_done(&mut self) {
        self.moves_in_flight = self.moves_in_flight.saturating_sub(1);
    }

    /// A merge started by `next_actions` ended. After a failure merges pause, and the
    /// returned ranges (whatever is unowned now) are to be placed at once.
    pub(crate) fn merge_done(&mut self, now: Instant, pick: &MergePick, ok: bool) -> Vec<Key> {
        self.busy.remove(&pick.left_start);
        self.busy.remove(&pick.right_start);
        self.move_done();
        if ok {
            return Vec::new();
        }
        self.merges_paused_until = Some(now + MERGE_BACKOFF);
        vec![pick.left_start.clone(), pick.right_start.clone()]
    }

    // ---- assignment and moves ----------------------------------------------------------

    /// Marks the range at `start` as being assigned or moved; false if it already is.
    pub(crate) fn claim(&mut self, start: &Key) -> bool {
        self.busy.insert(start.clone())
    }

    pub(crate) fn unclaim(&mut self, start: &Key) {
        self.busy.remove(start);
    }

    /// Where the range at `start` goes: `Ok(None)` if it has an owner whose epoch is
    /// current, else the least-loaded node that accepts ranges (under its memory budget
    /// first; when every node is at its budget, the least loaded anyway: it releases idle
    /// ranges to make room).
    pub(crate) fn plan_assign(&self, now: Instant, me: &NodeId, start: &Key) -> Result<Option<Assignment>, Error> {
        let Some(a) = self.active(now) else { return Err(self.not_master(me)) };
        let desc = a.routing.get(start).cloned().ok_or_else(|| Error::invalid(format!("no range at {start}")))?;
        if let Some(o) = &desc.record.owner
            && !epoch_over(&self.nodes, o)
        {
            return Ok(None);
        }
        let target = placement::least_loaded(&node_loads(self, a, now, false))
            .or_else(|| placement::least_loaded(&node_loads(self, a, now, true)))
            .ok_or_else(|| Error::unavailable("no live node accepts ranges"))?;
        let epoch = self.nodes.get(&target).map_or(Epoch(0), |w| w.record.record.epoch);
        Ok(Some(Assignment { term: a.term.clone(), desc, owner: Owner { node_id: target, epoch } }))
    }

    /// An assignment found no node: whether to stay quiet about it (one was logged less
    /// than `UNPLACEABLE_WARN_INTERVAL` ago; the orphan sweep retries every round).
    pub(crate) fn unplaceable_quiet(&mut self, now: Instant) -> bool {
        let recent =
            self.unplaceable_warned_at.is_some_and(|t| now.saturating_duration_since(t) < UNPLACEABLE_WARN_INTERVAL);
        if !recent {
            self.unplaceable_warned_at = Some(now);
        }
        recent
    }

    /// Where to send the load of the range at `start` to `node`: its address and the
    /// range's id.
    pub(crate) fn load_target(&self, node: &NodeId, start: &Key) -> Option<(String, RangeId)> {
        let addr = self.nodes.get(node).map(|w| w.record.record.rpc_addr.clone())?;
        let range_id = self.active.as_ref().and_then(|a| a.routing.get(start)).map(|d| d.record.range_id)?;
        Some((addr, range_id))
    }

    /// The new owner of a moved range, once the old owner released it and `desc` was read
    /// back: `None` if someone else owns it now or the target no longer accepts ranges.
    pub(crate) fn move_target(&self, now: Instant, m: &Move, desc: &RangeDescriptor) -> Option<Owner> {
        let epoch = self.nodes.get(&m.to).map_or(Epoch(0), |w| w.record.record.epoch);
        let still_ok = match &desc.owner {
            None => true,
            Some(o) => o.node_id == m.from || epoch_over(&self.nodes, o),
        };
        (still_ok && self.nodes.accepts(now, &m.to, false)).then(|| Owner { node_id: m.to.clone(), epoch })
    }

    // ---- requests ----------------------------------------------------------------------

    /// The owner of the range holding `start` (`one`), or of the ranges overlapping
    /// `[start, end)`. A range with no live owner makes the answer `RangeLoading`; the
    /// ones whose owner's epoch is over (or that have none) are to be placed now.
    pub(crate) fn locate(&self, now: Instant, me: &NodeId, start: &Key, end: Option<&Key>, one: bool) -> Located {
        let mut place = Vec::new();
        let Some(a) = self.active(now) else { return Located { answer: Err(self.not_master(me)), place } };
        let descs = if one {
            a.routing.find(start).into_iter().collect()
        } else {
            a.routing.covering(start, end, LOCATE_RANGES_MAX)
        };
        if descs.is_empty() {
            return Located { answer: Err(Error::unavailable("the routing table does not cover this key")), place };
        }
        let mut out = Vec::new();
        let mut loading_ms = None;
        for d in descs {
            let r = &d.record;
            match &r.owner {
                Some(o) if self.nodes.is_live(now, &o.node_id, o.epoch) => out.push(RangeLocation {
                    range_id: r.range_id,
                    start: r.range.start.clone(),
                    end: r.range.end.clone(),
                    node_id: o.node_id.clone(),
                    node_addr: self.nodes.get(&o.node_id).map(|w| w.record.record.rpc_addr.clone()).unwrap_or_default(),
                    lease_ms_left: self.nodes.lease_ms_left(now, &o.node_id),
                }),
                // The owner stopped heartbeating but its epoch is not over yet: wait for it.
                Some(o) if !epoch_over(&self.nodes, o) => {
                    let left = self.nodes.lease_ms_left(now, &o.node_id);
                    loading_ms = Some(loading_ms.unwrap_or(0).max(left.clamp(ASSIGNING_RETRY_MS, 500)));
                }
                _ => {
                    if !self.busy.contains(&r.range.start) {
                        place.push(r.range.start.clone());
                    }
                    loading_ms = Some(loading_ms.unwrap_or(ASSIGNING_RETRY_MS).max(ASSIGNING_RETRY_MS));
                }
            }
        }
        let answer = match loading_ms {
            Some(ms) => Err(Error::RangeLoading { retry_after_ms: ms }),
            None if one => out.pop().map(Reply::Location).ok_or_else(|| Error::internal("locate found no range")),
            None => Ok(Reply::Locations(out)),
        };
        Located { answer, place }
    }

    /// The epoch a drain of `node` is recorded in.
    pub(crate) fn drain_epoch(&self, node: &NodeId) -> Result<Epoch, Error> {
        self.nodes
            .get(node)
            .map(|w| w.record.record.epoch)
            .ok_or_else(|| Error::invalid(format!("no node {node} is known to the master")))
    }

    /// A drain of `node` in `epoch` was recorded (or removed, `undo`). Returns how many
    /// ranges it still owns in a current epoch.
    pub(crate) fn drained(&mut self, node: &NodeId, epoch: Epoch, undo: bool) -> u64 {
        self.nodes.set_drain(node, (!undo).then_some(epoch));
        self.active.as_ref().map_or(0, |a| {
            a.routing
                .owned_by(node)
                .filter(|d| d.record.owner.as_ref().is_some_and(|o| !epoch_over(&self.nodes, o)))
                .count()
        }) as u64
    }
}

/// The write that ends the epoch of the silent node `id` (record `rec` as last read).
pub(crate) fn end_epoch(id: &NodeId, rec: &Versioned<NodeRecord>) -> Result<EndEpoch, Error> {
    let epoch = rec.record.epoch.next()?;
    let ended = NodeRecord { epoch, ended: true, ..rec.record.clone() };
    let op = MetaOp::Put {
        pk: PK_NODE.into(),
        sk: id.as_str().as_bytes().to_vec(),
        value: meta::encode(&ended),
        expect: Expect::Version(rec.version),
    };
    // The store writes the next version, so it exists once the put lands.
    let written = ampstore_common::ids::checked_increment("node record version", rec.version)
        .ok()
        .map(|version| Versioned { version, record: ended });
    Ok(EndEpoch { node: id.clone(), epoch: rec.record.epoch, op, written })
}

/// Whether `owner`'s epoch is over by this master's view of its node record (the rule is
/// `common::ownership::owner_epoch_over`).
fn epoch_over(nodes: &NodeWatch, owner: &Owner) -> bool {
    ampstore_common::ownership::owner_epoch_over(nodes.get(&owner.node_id).map(|w| &w.record.record), owner)
}

/// Load figures of the nodes placement may use: reachable ones, and any node that owns
/// ranges and is draining (so its ranges can move off).
fn node_loads(st: &ControlState, a: &Active, now: Instant, ignore_budget: bool) -> Vec<NodeLoad> {
    let reachable: Vec<NodeId> = st.nodes.reachable(now).map(|(id, _)| id.clone()).collect();
    reachable
        .into_iter()
        .map(|id| {
            let w = st.nodes.get(&id);
            let draining = w.is_some_and(|w| w.is_draining());
            let mut ranges = Vec::new();
            let mut pinned_score = 0;
            for d in
                a.routing.owned_by(&id).filter(|d| d.record.owner.as_ref().is_some_and(|o| !epoch_over(&st.nodes, o)))
            {
                let bytes = w.and_then(|w| w.load.range_bytes.get(&d.record.range_id).copied()).unwrap_or(0);
                let score = placement::range_score(bytes);
                // A range that just split may split again at once: moving it now would be
                // wasted work (a drain moves it anyway).
                if !draining && st.fresh.get(&d.record.range.start).is_some_and(|until| now < *until) {
                    pinned_score += score;
                } else {
                    ranges.push((d.record.range.start.clone(), d.record.range_id, score));
                }
            }
            NodeLoad { accepts: st.nodes.accepts(now, &id, ignore_budget), draining, node_id: id, ranges, pinned_score }
        })
        .collect()
}

mod status;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
