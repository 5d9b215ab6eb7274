//! The master's loops: the lease (and takeover), gossip hints, and the control loop
//! (failure detection, stats polling, routing refresh, and the actions `state.rs` decides:
//! assignments, moves, merges). Only I/O here; every decision is a `ControlState` method
//! called under the state lock, which is never held across an await.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::wire::admin as node_ops;
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId};
use ampstore_server::gossip::MemberEvent;
use ampstore_store::meta::{self, Owner, PK_RANGE, RangeDescriptor, TermRecord};
use ampstore_store::{Expect, MetaOp, StoreError, own_write};

use crate::driver::{HANDOFF_DEADLINE, Master};
use crate::lease::{self, LeaseCore};
use crate::merges::MergePick;
use crate::nodes::NodeWatch;
use crate::placement::Move;
use crate::routing::RoutingTable;
use crate::state::{self, Action, Active};

/// Deadline of a stats request to a node.
const STATS_DEADLINE: Duration = Duration::from_secs(3);
/// How often the active master re-reads every range descriptor (nodes change owners on
/// release; splits change bounds).
const ROUTING_REFRESH: Duration = Duration::from_secs(1);

impl Master {
    // ---- the lease --------------------------------------------------------------------

    pub(crate) async fn lease_loop(self: Arc<Self>) {
        let mut core = LeaseCore::new(self.id.clone(), self.cfg.lease_ms, self.cfg.lease_margin_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.renew_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = lease::tick(self.meta(), &mut core, &self.rpc_addr).await {
                tracing::warn!(error = %e, "lease round failed");
            }
            let held = core.active_until();
            let loaded_term = self.with_state(|st| st.loaded_term());
            let holder = core.holder().cloned();
            match held {
                Some((term, valid_until)) if loaded_term == Some(term) => {
                    self.with_state(|st| st.lease_renewed(valid_until, holder));
                }
                Some((term, valid_until)) => {
                    let term = TermRecord { term, holder: self.id.clone() };
                    match self.take_over(&term).await {
                        Ok((routing, nodes)) => {
                            tracing::info!(term = term.term.0, ranges = routing.len(), "active master");
                            let active = Active { term, valid_until, routing, routing_changes: 0 };
                            self.with_state(|st| st.took_over(active, nodes, holder));
                        }
                        Err(e) => tracing::warn!(error = %e, "could not load routing at takeover; retrying"),
                    }
                }
                None => {
                    if self.with_state(|st| st.lease_lost(holder)) {
                        tracing::warn!("lost the lease: standby now");
                    }
                }
            }
        }
    }

    /// Loads what an active master needs: the routing table (creating the first range on an
    /// empty store) and the node records (watched from now on).
    pub(crate) async fn take_over(&self, term: &TermRecord) -> Result<(RoutingTable, NodeWatch), Error> {
        let mut descs = meta::list_ranges(self.meta()).await?;
        if descs.is_empty() {
            let first = RangeDescriptor {
                range_id: meta::FIRST_RANGE_ID,
                range: KeyRange::full(),
                generation: 1,
                owner: None,
                checkpoint: None,
            };
            let put = MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: Vec::new(),
                value: meta::encode(&first),
                expect: Expect::Absent,
            };
            match own_write::transact(self.meta(), &[meta::term_check(term), put]).await {
                Ok(()) => tracing::info!("empty store: created the first range"),
                Err(StoreError::ConditionFailed { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            descs = meta::list_ranges(self.meta()).await?;
        }
        let routing = RoutingTable::load(descs).map_err(|e| Error::internal(format!("routing table in meta: {e}")))?;
        let mut nodes = NodeWatch::default();
        let now = Instant::now();
        for (id, rec) in meta::list_nodes(self.meta()).await? {
            nodes.observe(now, &id, rec);
        }
        for (id, drain) in meta::list_drains(self.meta()).await? {
            nodes.set_drain(&id, Some(drain.record.epoch));
        }
        Ok((routing, nodes))
    }

    // ---- gossip hints ------------------------------------------------------------------

    /// A member reported down makes the control loop look at once, and the node gets no
    /// new ranges while gossip says so; neither shortens the liveness wait before its epoch
    /// is ended (only meta decides that).
    pub(crate) async fn gossip_hints(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<MemberEvent>) {
        loop {
            match events.recv().await {
                Ok(MemberEvent::Down(id)) => {
                    tracing::info!(node = %id, "gossip reports a member down: looking now");
                    self.with_state(|st| st.gossip_report(Instant::now(), &id, false));
                    self.wake.notify_one();
                }
                Ok(MemberEvent::Up(id)) => {
                    self.with_state(|st| st.gossip_report(Instant::now(), &id, true));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    // ---- the control loop --------------------------------------------------------------

    pub(crate) async fn control_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stats = Instant::now() - Duration::from_secs(3600);
        let mut last_refresh = Instant::now();
        let mut last_balance = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let Some(term) = self.acting_term() else { continue };
            if let Err(e) = self.watch_nodes(&term).await {
                tracing::warn!(error = %e, "reading node records failed");
                continue;
            }
            // Stats are polled beside the loop, each node on its own: a paused or cut-off
            // node holds its own poll for up to STATS_DEADLINE, and neither the loop (ending
            // epochs, placing ranges) nor the other nodes' polls may wait for it (the chaos
            // suite found failovers waiting on it, then healthy nodes whose stats went stale
            // behind one paused node's poll, so that no node accepted ranges).
            if last_stats.elapsed() >= Duration::from_millis(self.cfg.stats_ms) {
                last_stats = Instant::now();
                self.poll_stats();
            }
            if last_refresh.elapsed() >= ROUTING_REFRESH {
                last_refresh = Instant::now();
                if let Err(e) = self.refresh_routing().await {
                    tracing::warn!(error = %e, "refreshing routing failed");
                }
            }
            // Drains every round; balance moves at most once per interval, so ranges that
            // are still splitting are not chased around the cluster.
            let balance_due = last_balance.elapsed() >= Duration::from_millis(self.cfg.rebalance_interval_ms);
            let round = self.with_state(|st| st.next_actions(Instant::now(), balance_due, &self.cfg));
            if round.balance_looked && balance_due {
                last_balance = Instant::now();
            }
            for action in round.actions {
                self.start(action);
            }
        }
    }

    /// Starts one action decided by `ControlState::next_actions` on its own task.
    fn start(self: &Arc<Self>, action: Action) {
        let me = self.clone();
        match action {
            Action::Assign(start) => {
                tokio::spawn(me.assign(start));
            }
            Action::Move(m) => {
                tokio::spawn(async move {
                    let (range_id, from, to) = (m.range_id, m.from.clone(), m.to.clone());
                    match me.move_range(m).await {
                        Ok(()) => tracing::info!(%range_id, %from, %to, "range moved"),
                        Err(e) => tracing::warn!(%range_id, %from, %to, error = %e, "range move failed"),
                    }
                    me.with_state(|st| st.move_done());
                });
            }
            Action::Merge(pick) => {
                tokio::spawn(me.merge(pick));
            }
        }
    }

    /// Reads node records and drains; ends the epoch of every node silent for its liveness.
    async fn watch_nodes(self: &Arc<Self>, term: &TermRecord) -> Result<(), Error> {
        let records = meta::list_nodes(self.meta()).await?;
        let drains = meta::list_drains(self.meta()).await?;
        let drained: HashMap<NodeId, Epoch> = drains.into_iter().map(|(id, d)| (id, d.record.epoch)).collect();
        let expired = self.with_state(|st| st.observe_nodes(Instant::now(), records, &drained));
        for (id, rec) in expired {
            // A damaged record at the last epoch cannot be ended; it must not stop the others.
            let end = match state::end_epoch(&id, &rec) {
                Ok(end) => end,
                Err(e) => {
                    tracing::error!(node = %id, error = %e, "cannot end the node's epoch");
                    continue;
                }
            };
            match self.write(term, vec![end.op]).await {
                Ok(()) => {
                    tracing::warn!(node = %id, epoch = end.epoch.0, "node silent for its liveness duration: epoch ended");
                    // If the version cannot be counted, the next read of the records
                    // observes the node instead.
                    if let Some(written) = end.written {
                        self.with_state(|st| st.epoch_ended(Instant::now(), &end.node, written));
                    }
                }
                // It heartbeated just now: alive after all.
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Starts a stats poll of every node whose last one has ended.
    pub(crate) fn poll_stats(self: &Arc<Self>) {
        let targets = self.with_state(|st| st.stats_targets());
        for (id, addr) in targets {
            let me = self.clone();
            tokio::spawn(async move {
                // The deadline covers the connect too (a cut-off node's connect hangs).
                let reply = tokio::time::timeout(STATS_DEADLINE, async {
                    me.conn(&addr).await?.call_typed(node_ops::RangeStats, STATS_DEADLINE).await
                })
                .await;
                let stats = match &reply {
                    Ok(Ok(stats)) => Some(stats),
                    _ => None,
                };
                me.with_state(|st| st.stats_done(Instant::now(), &id, stats));
            });
        }
    }

    pub(crate) async fn refresh_routing(&self) -> Result<(), Error> {
        let changes_before = self.with_state(|st| st.routing_changes());
        let descs = meta::list_ranges(self.meta()).await?;
        if let Err(e) = self.with_state(|st| st.apply_refresh(changes_before, descs)) {
            tracing::error!(error = %e, "routing in meta is inconsistent; keeping the previous table");
        }
        Ok(())
    }

    // ---- merges ------------------------------------------------------------------------

    /// Runs a merge `next_actions` started, and reports its end to the state.
    async fn merge(self: Arc<Self>, pick: MergePick) {
        let result = self.merge_pair(&pick).await;
        let place = self.with_state(|st| st.merge_done(Instant::now(), &pick, result.is_ok()));
        match result {
            Ok(merged) => {
                tracing::info!(left = %pick.left_id, right = %pick.right_id, %merged, node = %pick.node, "ranges merged");
                // The next merge may follow at once (it plans on the stats it has; the
                // merged range has none yet, so it waits for the next poll).
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::warn!(left = %pick.left_id, right = %pick.right_id, node = %pick.node, error = %e, "merge failed");
                // Whatever is unowned now is placed at once rather than on demand.
                for start in place {
                    tokio::spawn(self.clone().assign(start));
                }
            }
        }
    }

    /// Brings the pair onto one node if needed, then has that node merge it.
    async fn merge_pair(self: &Arc<Self>, pick: &MergePick) -> Result<RangeId, Error> {
        if let Some(m) = &pick.colocate {
            self.move_inner(m).await?;
        }
        let node = self.with_state(|st| st.node_addr(&pick.node));
        let (addr, epoch) = node.ok_or_else(|| Error::internal("merging on an unknown node"))?;
        let req = node_ops::Merge { left_id: pick.left_id, right_id: pick.right_id };
        let owner = Owner { node_id: pick.node.clone(), epoch };
        // The commit updated the routing table already.
        self.call_while_live(&owner, &addr, req, HANDOFF_DEADLINE).await
    }

    // ---- assignment and moves ----------------------------------------------------------

    /// Assigns the range at `start` to the least-loaded node that accepts ranges, unless
    /// it has a live owner. Locates answer `RangeLoading` until the new owner serves it.
    pub(crate) async fn assign(self: Arc<Self>, start: Key) {
        if !self.with_state(|st| st.claim(&start)) {
            return;
        }
        if let Err(e) = self.assign_inner(&start).await {
            // The orphan sweep retries every round: with no node to take it, say so once a
            // second, not once a round per range.
            let quiet =
                matches!(&e, Error::Unavailable { .. }) && self.with_state(|st| st.unplaceable_quiet(Instant::now()));
            if !quiet {
                tracing::warn!(range_start = ?start, error = %e, "assignment failed (retried every round)");
            }
        }
        self.with_state(|st| st.unclaim(&start));
    }

    pub(crate) async fn assign_inner(self: &Arc<Self>, start: &Key) -> Result<(), Error> {
        let plan = self.with_state(|st| st.plan_assign(Instant::now(), &self.id, start))?;
        let Some(a) = plan else { return Ok(()) }; // has an owner whose epoch is still current
        self.set_owner(&a.term, a.desc, Some(a.owner.clone())).await?;
        self.load_on(&a.owner, start).await
    }

    /// A graceful handoff: the owner snapshots and releases, then the target loads.
    async fn move_range(self: &Arc<Self>, m: Move) -> Result<(), Error> {
        if !self.with_state(|st| st.claim(&m.range_start)) {
            return Ok(());
        }
        let result = self.move_inner(&m).await;
        self.with_state(|st| st.unclaim(&m.range_start));
        if result.is_err() {
            // The owner may have released it already: place it now rather than on demand.
            tokio::spawn(self.clone().assign(m.range_start.clone()));
        }
        result
    }

    async fn move_inner(self: &Arc<Self>, m: &Move) -> Result<(), Error> {
        let from = self.with_state(|st| st.node_addr(&m.from));
        let (from_addr, from_epoch) = from.ok_or_else(|| Error::internal("moving off an unknown node"))?;
        let from_owner = Owner { node_id: m.from.clone(), epoch: from_epoch };
        match self
            .call_while_live(&from_owner, &from_addr, node_ops::Release { range_id: m.range_id }, HANDOFF_DEADLINE)
            .await
        {
            Ok(_) | Err(Error::NotOwner { .. }) => {}
            Err(e) => return Err(e),
        }
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let desc = meta::get_range(self.meta(), &m.range_start)
            .await?
            .ok_or_else(|| Error::internal(format!("range at {} vanished", m.range_start)))?;
        if desc.record.range_id != m.range_id {
            return Err(Error::conflict("the range changed bounds while moving"));
        }
        // Someone else owns it now, or the target went away: the range is released and
        // the next locate (or the orphan sweep) places it.
        let target = self
            .with_state(|st| st.move_target(Instant::now(), m, &desc.record))
            .ok_or_else(|| Error::conflict("the move's target is no longer suitable"))?;
        self.set_owner(&term, desc, Some(target.clone())).await?;
        self.load_on(&target, &m.range_start).await
    }
}
