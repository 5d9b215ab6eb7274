//! The master process: the lease loop, the control loop (failure detection, load polling,
//! rebalancing, drains) and the RPC service (locate, drain, status).
//!
//! The master keeps no state that is not in meta: at takeover it reads the routing table and
//! node records, and every write it makes to meta carries a check of its term (the term
//! item, changed only by a takeover), so a deposed master's writes fail.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ampstore_common::connection::Connection;
use ampstore_common::error::{Error, OwnerHint};
use ampstore_common::limits::LOCATE_RANGES_MAX;
use ampstore_common::protocol::{
    MasterStatus, NodeView, Op, PROTOCOL_VERSION, RangeLocation, RangeView, Reply, Role, ServerInfo,
};
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId};
use ampstore_server::config::{Config, MasterConfig};
use ampstore_server::gossip::{Gossip, GossipSettings, MemberEvent};
use ampstore_server::identity;
use ampstore_server::metrics::Metrics;
use ampstore_server::rpc::{self, Service};
use ampstore_store::meta::{
    self, Checkpoint, DrainRecord, NodeRecord, Owner, PK_DRAIN, PK_NODE, PK_RANGE, RangeDescriptor, TermRecord,
    Versioned,
};
use ampstore_store::{Backend, Expect, MetaOp, StoreError, own_write};
use tokio::sync::{Notify, watch};

use crate::lease::{self, LeaseCore};
use crate::merges;
use crate::nodes::NodeWatch;
use crate::placement::{self, NodeLoad};
use crate::routing::RoutingTable;

/// How soon a client should ask again about a range being assigned or moved.
const ASSIGNING_RETRY_MS: u64 = 100;
/// Deadline of a stats request to a node.
const STATS_DEADLINE: Duration = Duration::from_secs(3);
/// Deadline of an assign (the node loads the range before answering) or a release (it
/// snapshots first).
const HANDOFF_DEADLINE: Duration = Duration::from_secs(30);
/// Unavailable assignments are logged at most this often.
const UNPLACEABLE_WARN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a call to a node checks that the node's epoch is still live.
const EPOCH_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long balance moves leave the children of a split where they are (a range still
/// growing splits again within seconds; moving it in between costs a snapshot, a release
/// and a load each time).
const FRESH_SPLIT_HOLD: Duration = Duration::from_secs(3);
/// How long merges pause after one failed (the node may be dying, or the pair busy).
const MERGE_BACKOFF: Duration = Duration::from_secs(2);
/// How often the active master re-reads every range descriptor (nodes change owners on
/// release; splits change bounds).
const ROUTING_REFRESH: Duration = Duration::from_secs(1);

/// The term the master acts in, with the routing it loaded for it.
struct Active {
    term: TermRecord,
    valid_until: Instant,
    routing: RoutingTable,
    /// Splits and merges applied to `routing` in memory (a refresh that read meta before
    /// one of them must not undo it).
    routing_changes: u64,
}

#[derive(Default)]
struct State {
    active: Option<Active>,
    nodes: NodeWatch,
    /// Ranges (by start key) being assigned or moved: locates answer `RangeLoading`.
    busy: HashSet<Key>,
    moves_in_flight: usize,
    holder: Option<(NodeId, String)>,
    /// When an assignment that found no node to take the range was last logged.
    unplaceable_warned_at: Option<Instant>,
    /// Nodes whose stats poll is under way (one per node at a time).
    stats_polling: HashSet<NodeId>,
    /// No merge starts before this (set after a failed merge).
    merges_paused_until: Option<Instant>,
    /// Ranges (by start) that just came out of a split, and until when balance moves leave
    /// them where they are.
    fresh: HashMap<Key, Instant>,
}

impl State {
    fn active(&self, now: Instant) -> Option<&Active> {
        self.active.as_ref().filter(|a| now < a.valid_until)
    }
}

pub struct Master {
    id: NodeId,
    rpc_addr: String,
    cfg: MasterConfig,
    backend: Backend,
    state: Mutex<State>,
    conns: Mutex<HashMap<String, Arc<Connection>>>,
    writes_refused_on_term: AtomicU64,
    /// A client's hello must present it, when set (`cluster.token`).
    cluster_token: Option<String>,
    /// Every other role's hello must present it; the master presents it to nodes.
    admin_token: Option<String>,
    metrics: Arc<Metrics>,
    gossip: OnceLock<Gossip>,
    /// Wakes the control loop early (a gossip report that a node is down).
    wake: Notify,
}

/// Runs a master until `shutdown` resolves. Prints `ampstore master ID ready: rpc ADDR` to
/// stdout once it listens (as a standby until it holds the lease).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let id = identity::load_or_create(&cfg.data_dir)?;
    let backend = ampstore_server::open_backend(&cfg).await?;
    let (listener, rpc_addr) = rpc::bind(&cfg.master.rpc_addr).await?;
    let (admin_listener, admin_addr) = rpc::bind(&cfg.master.admin_addr).await?;
    let tokens = cfg.cluster.server_tokens()?;
    let master = Arc::new(Master {
        id: id.clone(),
        rpc_addr: rpc_addr.clone(),
        cfg: cfg.master.clone(),
        backend,
        state: Mutex::default(),
        conns: Mutex::default(),
        writes_refused_on_term: AtomicU64::new(0),
        cluster_token: tokens.0,
        admin_token: tokens.1,
        metrics: Metrics::new(),
        gossip: OnceLock::new(),
        wake: Notify::new(),
    });
    let settings =
        GossipSettings::from_config(&cfg, id.clone(), Role::Master, &cfg.master.gossip_addr, &rpc_addr, &admin_addr)?;
    let gossip = Gossip::start(settings, master.metrics.clone()).await?;
    let gossip_addr = gossip.local_addr();
    let events = gossip.subscribe();
    let _ = master.gossip.set(gossip);
    println!("ampstore master {id} ready: rpc {rpc_addr} admin {admin_addr} gossip {gossip_addr}");
    tracing::info!(%id, %rpc_addr, %admin_addr, %gossip_addr, "master started (standby until it holds the lease)");
    let lease_task = tokio::spawn(master.clone().lease_loop());
    let control_task = tokio::spawn(master.clone().control_loop());
    let hints_task = tokio::spawn(master.clone().gossip_hints(events));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(rpc::serve(listener, master.clone(), stop_rx.clone()));
    let admin = tokio::spawn(crate::admin::serve(admin_listener, master.clone(), stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    lease_task.abort();
    control_task.abort();
    hints_task.abort();
    let _ = server.await;
    let _ = admin.await;
    if let Some(g) = master.gossip.get() {
        g.leave().await;
    }
    Ok(())
}

impl Master {
    fn lock(&self) -> MutexGuard<'_, State> {
        // State is only ever replaced whole or updated field by field: keep going after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meta(&self) -> &dyn ampstore_store::MetaStore {
        self.backend.meta.as_ref()
    }

    /// The term record to check, if this master may act now.
    fn acting_term(&self) -> Option<TermRecord> {
        self.lock().active(Instant::now()).map(|a| a.term.clone())
    }

    fn not_master(&self) -> Error {
        let hint = self.lock().holder.clone().filter(|(id, _)| id != &self.id);
        Error::NotMaster { hint: hint.map(|(node_id, rpc_addr)| OwnerHint { node_id, rpc_addr }) }
    }

    // ---- the lease --------------------------------------------------------------------

    async fn lease_loop(self: Arc<Self>) {
        let mut core = LeaseCore::new(self.id.clone(), self.cfg.lease_ms, self.cfg.lease_margin_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.renew_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = lease::tick(self.meta(), &mut core, &self.rpc_addr).await {
                tracing::warn!(error = %e, "lease round failed");
            }
            let held = core.active_until();
            let loaded_term = self.lock().active.as_ref().map(|a| a.term.term);
            match held {
                Some((term, valid_until)) if loaded_term == Some(term) => {
                    let mut st = self.lock();
                    st.holder = core.holder().cloned();
                    if let Some(a) = st.active.as_mut() {
                        a.valid_until = valid_until;
                    }
                }
                Some((term, valid_until)) => {
                    let term = TermRecord { term, holder: self.id.clone() };
                    match self.take_over(&term).await {
                        Ok((routing, nodes)) => {
                            tracing::info!(term = term.term.0, ranges = routing.len(), "active master");
                            let mut st = self.lock();
                            st.active = Some(Active { term, valid_until, routing, routing_changes: 0 });
                            st.nodes = nodes;
                            st.busy.clear();
                            st.holder = core.holder().cloned();
                        }
                        Err(e) => tracing::warn!(error = %e, "could not load routing at takeover; retrying"),
                    }
                }
                None => {
                    let mut st = self.lock();
                    if st.active.take().is_some() {
                        tracing::warn!("lost the lease: standby now");
                    }
                    st.holder = core.holder().cloned();
                }
            }
        }
    }

    /// Loads what an active master needs: the routing table (creating the first range on an
    /// empty store) and the node records (watched from now on).
    async fn take_over(&self, term: &TermRecord) -> Result<(RoutingTable, NodeWatch), Error> {
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

    /// Applies `ops` after the term check. A failed term check counts and reports
    /// `NotMaster`; another failed condition is `Conflict`. A retry after a lost response
    /// that finds every put of `ops` in place counts as applied (`own_write::transact`).
    async fn write(&self, term: &TermRecord, ops: Vec<MetaOp>) -> Result<(), Error> {
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(meta::term_check(term));
        all.extend(ops);
        match own_write::transact(self.meta(), &all).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { op_index: Some(0), .. }) => {
                self.writes_refused_on_term.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(term = term.term.0, "meta write refused: the term moved on (deposed)");
                let mut st = self.lock();
                st.active = None;
                drop(st);
                Err(self.not_master())
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- gossip hints ------------------------------------------------------------------

    /// A member reported down makes the control loop look at once, and the node gets no
    /// new ranges while gossip says so; neither shortens the liveness wait before its epoch
    /// is ended (only meta decides that).
    async fn gossip_hints(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<MemberEvent>) {
        loop {
            match events.recv().await {
                Ok(MemberEvent::Down(id)) => {
                    tracing::info!(node = %id, "gossip reports a member down: looking now");
                    self.lock().nodes.gossip_report(Instant::now(), &id, false);
                    self.wake.notify_one();
                }
                Ok(MemberEvent::Up(id)) => {
                    self.lock().nodes.gossip_report(Instant::now(), &id, true);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The member list as gossip sees it (for the admin port).
    pub fn members(&self) -> Vec<ampstore_server::gossip::MemberView> {
        self.gossip.get().map(|g| g.members()).unwrap_or_default()
    }

    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    pub fn gossip_addr(&self) -> Option<String> {
        self.gossip.get().map(|g| g.local_addr().to_string())
    }

    pub fn master_status(&self) -> MasterStatus {
        self.status()
    }

    pub fn gossip_drops(&self) -> u64 {
        self.metrics.gossip_drops_total()
    }

    // ---- the control loop --------------------------------------------------------------

    async fn control_loop(self: Arc<Self>) {
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
            self.reassign_orphans();
            // Drains every round; balance moves at most once per interval, so ranges that
            // are still splitting are not chased around the cluster.
            let balance_due = last_balance.elapsed() >= Duration::from_millis(self.cfg.rebalance_interval_ms);
            if self.rebalance(balance_due) && balance_due {
                last_balance = Instant::now();
            }
            self.start_merge();
        }
    }

    /// Reads node records and drains; ends the epoch of every node silent for its liveness.
    async fn watch_nodes(self: &Arc<Self>, term: &TermRecord) -> Result<(), Error> {
        let records = meta::list_nodes(self.meta()).await?;
        let drains = meta::list_drains(self.meta()).await?;
        let now = Instant::now();
        let expired = {
            let mut st = self.lock();
            for (id, rec) in records {
                st.nodes.observe(now, &id, rec);
            }
            let drained: HashMap<NodeId, Epoch> = drains.into_iter().map(|(id, d)| (id, d.record.epoch)).collect();
            let ids: Vec<NodeId> = st.nodes.iter().map(|(id, _)| id.clone()).collect();
            for id in ids {
                st.nodes.set_drain(&id, drained.get(&id).copied());
            }
            st.nodes.expired(now)
        };
        for (id, rec) in expired {
            // A damaged record at the last epoch cannot be ended; it must not stop the others.
            let epoch = match rec.record.epoch.next() {
                Ok(epoch) => epoch,
                Err(e) => {
                    tracing::error!(node = %id, error = %e, "cannot end the node's epoch");
                    continue;
                }
            };
            let ended = NodeRecord { epoch, ended: true, ..rec.record.clone() };
            let put = MetaOp::Put {
                pk: PK_NODE.into(),
                sk: id.as_str().as_bytes().to_vec(),
                value: meta::encode(&ended),
                expect: Expect::Version(rec.version),
            };
            match self.write(term, vec![put]).await {
                Ok(()) => {
                    tracing::warn!(node = %id, epoch = rec.record.epoch.0, "node silent for its liveness duration: epoch ended");
                    // The store just wrote the next version, so it exists; if it did not, the
                    // next read of the records observes the node instead.
                    if let Ok(version) = ampstore_common::ids::checked_increment("node record version", rec.version) {
                        self.lock().nodes.observe(Instant::now(), &id, Versioned { version, record: ended });
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
    fn poll_stats(self: &Arc<Self>) {
        let targets: Vec<(NodeId, String)> = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let live = st.nodes.iter().filter(|(_, w)| !w.record.record.ended);
            let all: Vec<(NodeId, String)> =
                live.map(|(id, w)| (id.clone(), w.record.record.rpc_addr.clone())).collect();
            all.into_iter().filter(|(id, _)| st.stats_polling.insert(id.clone())).collect()
        };
        for (id, addr) in targets {
            let me = self.clone();
            tokio::spawn(async move {
                // The deadline covers the connect too (a cut-off node's connect hangs).
                let reply = tokio::time::timeout(STATS_DEADLINE, async {
                    me.conn(&addr).await?.call(Op::RangeStats, STATS_DEADLINE).await
                })
                .await;
                let mut st = me.lock();
                if let Ok(Ok(Reply::Stats(stats))) = reply
                    && stats.node_id == id
                {
                    st.nodes.set_stats(Instant::now(), &id, &stats);
                }
                st.stats_polling.remove(&id);
            });
        }
    }

    async fn refresh_routing(&self) -> Result<(), Error> {
        let changes_before = self.lock().active.as_ref().map(|a| a.routing_changes);
        let descs = meta::list_ranges(self.meta()).await?;
        let mut st = self.lock();
        let Some(active) = st.active.as_mut() else { return Ok(()) };
        if Some(active.routing_changes) != changes_before {
            return Ok(()); // a split or merge landed meanwhile: the next refresh reads it
        }
        // Keep what this master wrote after the read started (a higher version).
        let merged: Vec<Versioned<RangeDescriptor>> = descs
            .into_iter()
            .map(|d| match active.routing.get(&d.record.range.start) {
                Some(cur) if cur.version > d.version && cur.record.range == d.record.range => cur.clone(),
                _ => d,
            })
            .collect();
        match RoutingTable::load(merged) {
            Ok(t) => active.routing = t,
            Err(e) => tracing::error!(error = %e, "routing in meta is inconsistent; keeping the previous table"),
        }
        Ok(())
    }

    /// Ranges whose owner's epoch is over (the node was declared dead or restarted) go to
    /// live nodes at once.
    fn reassign_orphans(self: &Arc<Self>) {
        let orphans: Vec<Key> = {
            let st = self.lock();
            let Some(a) = st.active(Instant::now()) else { return };
            a.routing
                .iter()
                .filter(|d| {
                    d.record.owner.as_ref().is_some_and(|o| epoch_over(&st.nodes, o))
                        && !st.busy.contains(&d.record.range.start)
                })
                .map(|d| d.record.range.start.clone())
                .collect()
        };
        for start in orphans {
            tokio::spawn(self.clone().assign(start));
        }
    }

    /// Plans and starts moves (drains first, then balance) when none are in flight.
    /// Returns whether loads were looked at (false when moves or assignments were still
    /// running, so the look is due again at the next round).
    fn rebalance(self: &Arc<Self>, balance_due: bool) -> bool {
        let moves = {
            let st = self.lock();
            let now = Instant::now();
            let Some(a) = st.active(now) else { return false };
            if st.moves_in_flight > 0 || !st.busy.is_empty() {
                return false;
            }
            let loads = node_loads(&st, a, now, false);
            let draining = loads.iter().any(|l| l.draining && !l.ranges.is_empty());
            if !balance_due && !draining {
                return false;
            }
            placement::plan_moves(&loads, self.cfg.moves_in_flight_max as usize, self.cfg.balance_tolerance_pct)
        };
        for m in moves {
            self.lock().moves_in_flight += 1;
            let me = self.clone();
            tokio::spawn(async move {
                let (range_id, from, to) = (m.range_id, m.from.clone(), m.to.clone());
                match me.move_range(m).await {
                    Ok(()) => tracing::info!(%range_id, %from, %to, "range moved"),
                    Err(e) => tracing::warn!(%range_id, %from, %to, error = %e, "range move failed"),
                }
                me.lock().moves_in_flight -= 1;
            });
        }
        true
    }

    /// Starts one merge (see `merges.rs`) when nothing else moves ranges.
    fn start_merge(self: &Arc<Self>) {
        let pick = {
            let st = self.lock();
            let now = Instant::now();
            let Some(a) = st.active(now) else { return };
            if self.cfg.merge_idle_ms == 0
                || st.moves_in_flight > 0
                || !st.busy.is_empty()
                || st.merges_paused_until.is_some_and(|t| now < t)
            {
                return;
            }
            let facts: Vec<merges::RangeFacts> = a
                .routing
                .iter()
                .map(|d| {
                    let r = &d.record;
                    let live = r.owner.as_ref().filter(|o| st.nodes.is_live(now, &o.node_id, o.epoch));
                    let load = live.and_then(|o| st.nodes.get(&o.node_id)).map(|w| &w.load);
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
                })
                .collect();
            let loads = node_loads(&st, a, now, false);
            merges::pick_merge(&facts, &loads, self.cfg.merge_idle_ms, self.cfg.balance_tolerance_pct)
        };
        let Some(pick) = pick else { return };
        {
            let mut st = self.lock();
            st.busy.insert(pick.left_start.clone());
            st.busy.insert(pick.right_start.clone());
            st.moves_in_flight += 1;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.merge_pair(&pick).await;
            {
                let mut st = me.lock();
                st.busy.remove(&pick.left_start);
                st.busy.remove(&pick.right_start);
                st.moves_in_flight -= 1;
            }
            match result {
                Ok(merged) => {
                    tracing::info!(left = %pick.left_id, right = %pick.right_id, %merged, node = %pick.node, "ranges merged");
                    // The next merge may follow at once (it plans on the stats it has; the
                    // merged range has none yet, so it waits for the next poll).
                    me.wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(left = %pick.left_id, right = %pick.right_id, node = %pick.node, error = %e, "merge failed");
                    me.lock().merges_paused_until = Some(Instant::now() + MERGE_BACKOFF);
                    // Whatever is unowned now is placed at once rather than on demand.
                    for start in [pick.left_start.clone(), pick.right_start.clone()] {
                        tokio::spawn(me.clone().assign(start));
                    }
                }
            }
        });
    }

    /// Brings the pair onto one node if needed, then has that node merge it.
    async fn merge_pair(self: &Arc<Self>, pick: &merges::MergePick) -> Result<RangeId, Error> {
        if let Some(m) = &pick.colocate {
            self.move_inner(m).await?;
        }
        let node = self.lock().nodes.get(&pick.node).map(|w| (w.record.record.rpc_addr.clone(), w.record.record.epoch));
        let (addr, epoch) = node.ok_or_else(|| Error::internal("merging on an unknown node"))?;
        let op = Op::Merge { left_id: pick.left_id, right_id: pick.right_id };
        let owner = Owner { node_id: pick.node.clone(), epoch };
        match self.call_while_live(&owner, &addr, op, HANDOFF_DEADLINE).await? {
            // The commit updated the routing table already.
            Reply::MergeDone { merged_id } => Ok(merged_id),
            other => Err(Error::internal(format!("merge answered {other:?}"))),
        }
    }

    // ---- assignment and moves ----------------------------------------------------------

    /// Assigns the range at `start` to the least-loaded node that accepts ranges, unless
    /// it has a live owner. Locates answer `RangeLoading` until the new owner serves it.
    async fn assign(self: Arc<Self>, start: Key) {
        if !self.lock().busy.insert(start.clone()) {
            return;
        }
        if let Err(e) = self.assign_inner(&start).await {
            // The orphan sweep retries every round: with no node to take it, say so once a
            // second, not once a round per range.
            let quiet = matches!(&e, Error::Unavailable { .. }) && {
                let mut st = self.lock();
                let now = Instant::now();
                let recent = st
                    .unplaceable_warned_at
                    .is_some_and(|t| now.saturating_duration_since(t) < UNPLACEABLE_WARN_INTERVAL);
                if !recent {
                    st.unplaceable_warned_at = Some(now);
                }
                recent
            };
            if !quiet {
                tracing::warn!(range_start = ?start, error = %e, "assignment failed (retried every round)");
            }
        }
        self.lock().busy.remove(&start);
    }

    async fn assign_inner(self: &Arc<Self>, start: &Key) -> Result<(), Error> {
        let (term, desc, target) = {
            let st = self.lock();
            let now = Instant::now();
            // `not_master` takes the lock itself: never call it while holding `st` (a std
            // mutex taken twice on one thread deadlocks the whole master; the chaos suite
            // found this when a master lost its lease during an assignment).
            let Some(a) = st.active(now) else {
                drop(st);
                return Err(self.not_master());
            };
            let desc = a.routing.get(start).cloned().ok_or_else(|| Error::invalid(format!("no range at {start}")))?;
            if let Some(o) = &desc.record.owner
                && !epoch_over(&st.nodes, o)
            {
                return Ok(()); // has an owner whose epoch is still current
            }
            // Nodes under their memory budget first; when every node is at its budget, the
            // least loaded one anyway (it releases idle ranges to make room).
            let target = placement::least_loaded(&node_loads(&st, a, now, false))
                .or_else(|| placement::least_loaded(&node_loads(&st, a, now, true)))
                .ok_or_else(|| Error::unavailable("no live node accepts ranges"))?;
            let epoch = st.nodes.get(&target).map_or(Epoch(0), |w| w.record.record.epoch);
            (a.term.clone(), desc, Owner { node_id: target, epoch })
        };
        self.set_owner(&term, desc, Some(target.clone())).await?;
        self.load_on(&target, start).await
    }

    /// Records `owner` for the range, conditional on the descriptor version and the term.
    async fn set_owner(
        &self,
        term: &TermRecord,
        desc: Versioned<RangeDescriptor>,
        owner: Option<Owner>,
    ) -> Result<(), Error> {
        let mut next = desc.record.clone();
        next.owner = owner;
        let put = MetaOp::Put {
            pk: PK_RANGE.into(),
            sk: next.range.start.as_bytes().to_vec(),
            value: meta::encode(&next),
            expect: Expect::Version(desc.version),
        };
        let written = self.write(term, vec![put]).await;
        // Whatever happened, take the descriptor as it now is.
        if let Ok(Some(now)) = meta::get_range(self.meta(), &next.range.start).await
            && let Some(a) = self.lock().active.as_mut()
        {
            a.routing.update(now);
        }
        written
    }

    /// Tells the owner to load the range (it answers once it serves it).
    async fn load_on(&self, owner: &Owner, start: &Key) -> Result<(), Error> {
        let (addr, range_id) = {
            let st = self.lock();
            let addr = st.nodes.get(&owner.node_id).map(|w| w.record.record.rpc_addr.clone());
            let range_id = st.active.as_ref().and_then(|a| a.routing.get(start)).map(|d| d.record.range_id);
            (addr, range_id)
        };
        let (Some(addr), Some(range_id)) = (addr, range_id) else {
            return Err(Error::internal("assigned to a node or range the master does not know"));
        };
        let op = Op::Assign { range_id, start: start.clone(), claim: false };
        match self.call_while_live(owner, &addr, op, HANDOFF_DEADLINE).await {
            Ok(_) => {
                tracing::info!(%range_id, node = %owner.node_id, "range assigned and serving");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A graceful handoff: the owner snapshots and releases, then the target loads.
    async fn move_range(self: &Arc<Self>, m: placement::Move) -> Result<(), Error> {
        if !self.lock().busy.insert(m.range_start.clone()) {
            return Ok(());
        }
        let result = self.move_inner(&m).await;
        self.lock().busy.remove(&m.range_start);
        if result.is_err() {
            // The owner may have released it already: place it now rather than on demand.
            tokio::spawn(self.clone().assign(m.range_start.clone()));
        }
        result
    }

    async fn move_inner(self: &Arc<Self>, m: &placement::Move) -> Result<(), Error> {
        let from = self.lock().nodes.get(&m.from).map(|w| (w.record.record.rpc_addr.clone(), w.record.record.epoch));
        let (from_addr, from_epoch) = from.ok_or_else(|| Error::internal("moving off an unknown node"))?;
        let from_owner = Owner { node_id: m.from.clone(), epoch: from_epoch };
        match self
            .call_while_live(&from_owner, &from_addr, Op::Release { range_id: m.range_id }, HANDOFF_DEADLINE)
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
        let (target, ok) = {
            let st = self.lock();
            let epoch = st.nodes.get(&m.to).map_or(Epoch(0), |w| w.record.record.epoch);
            let still_ok = match &desc.record.owner {
                None => true,
                Some(o) => o.node_id == m.from || epoch_over(&st.nodes, o),
            };
            (Owner { node_id: m.to.clone(), epoch }, still_ok && st.nodes.accepts(Instant::now(), &m.to, false))
        };
        if !ok {
            // Someone else owns it now, or the target went away: the range is released and
            // the next locate (or the orphan sweep) places it.
            return Err(Error::conflict("the move's target is no longer suitable"));
        }
        self.set_owner(&term, desc, Some(target.clone())).await?;
        self.load_on(&target, &m.range_start).await
    }

    /// Calls a node in its epoch `node.epoch`, and stops waiting as soon as that epoch is
    /// over by this master's clock: a paused or cut-off node must not keep a range busy
    /// (unplaceable) for the whole `deadline`. What the node does with the request after
    /// that no longer matters: its epoch is over, so it serves nothing, and whoever loads
    /// the range next fences the log.
    async fn call_while_live(&self, node: &Owner, addr: &str, op: Op, deadline: Duration) -> Result<Reply, Error> {
        let call = async { self.conn(addr).await?.call(op, deadline).await };
        let epoch_ends = async {
            loop {
                tokio::time::sleep(EPOCH_WATCH_INTERVAL).await;
                let st = self.lock();
                if epoch_over(&st.nodes, node) || !st.nodes.is_live(Instant::now(), &node.node_id, node.epoch) {
                    return;
                }
            }
        };
        tokio::select! {
            reply = call => reply,
            () = epoch_ends => Err(Error::unavailable(format!(
                "node {} is no longer live in epoch {}: stopped waiting for its answer",
                node.node_id, node.epoch.0
            ))),
        }
    }

    async fn conn(&self, addr: &str) -> Result<Arc<Connection>, Error> {
        if let Some(c) = self.conns.lock().unwrap_or_else(|p| p.into_inner()).get(addr)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(Connection::connect(addr, Role::Master, "master", self.admin_token.clone()).await?);
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), c.clone());
        Ok(c)
    }

    // ---- requests ----------------------------------------------------------------------

    async fn locate_many(self: &Arc<Self>, start: Key, end: Option<Key>, one: bool) -> Result<Reply, Error> {
        let now = Instant::now();
        let mut nudge = Vec::new();
        let mut out = Vec::new();
        let mut loading_ms = None;
        {
            let st = self.lock();
            let Some(a) = st.active(now) else {
                drop(st);
                return Err(self.not_master());
            };
            let descs = if one {
                a.routing.find(&start).into_iter().collect()
            } else {
                a.routing.covering(&start, end.as_ref(), LOCATE_RANGES_MAX)
            };
            if descs.is_empty() {
                return Err(Error::unavailable("the routing table does not cover this key"));
            }
            for d in descs {
                let r = &d.record;
                match &r.owner {
                    Some(o) if st.nodes.is_live(now, &o.node_id, o.epoch) => {
                        let w = st.nodes.get(&o.node_id);
                        out.push(RangeLocation {
                            range_id: r.range_id,
                            start: r.range.start.clone(),
                            end: r.range.end.clone(),
                            node_id: o.node_id.clone(),
                            node_addr: w.map(|w| w.record.record.rpc_addr.clone()).unwrap_or_default(),
                            lease_ms_left: st.nodes.lease_ms_left(now, &o.node_id),
                        });
                    }
                    // The owner stopped heartbeating but its epoch is not over yet: wait for it.
                    Some(o) if !epoch_over(&st.nodes, o) => {
                        let left = st.nodes.lease_ms_left(now, &o.node_id);
                        loading_ms = Some(loading_ms.unwrap_or(0).max(left.clamp(ASSIGNING_RETRY_MS, 500)));
                    }
                    _ => {
                        if !st.busy.contains(&r.range.start) {
                            nudge.push(r.range.start.clone());
                        }
                        loading_ms = Some(loading_ms.unwrap_or(ASSIGNING_RETRY_MS).max(ASSIGNING_RETRY_MS));
                    }
                }
            }
        }
        for start in nudge {
            tokio::spawn(self.clone().assign(start));
        }
        if let Some(ms) = loading_ms {
            return Err(Error::RangeLoading { retry_after_ms: ms });
        }
        if one {
            out.pop().map(Reply::Location).ok_or_else(|| Error::internal("locate found no range"))
        } else {
            Ok(Reply::Locations(out))
        }
    }

    /// Replaces a split parent by its two children (owned by the parent's owner) in one
    /// transactional, term-checked update. Repeating a committed split answers the same.
    async fn commit_split(
        &self,
        parent_id: RangeId,
        parent_start: Key,
        split_key: Key,
        owner: Owner,
        left: (RangeId, Checkpoint),
        right: (RangeId, Checkpoint),
    ) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let done = Reply::SplitDone { left_id: left.0, right_id: right.0 };
        let parent = meta::get_range(self.meta(), &parent_start)
            .await?
            .ok_or_else(|| Error::invalid(format!("no range starts at {parent_start}")))?;
        if parent.record.range_id == left.0 {
            // Committed already (an earlier attempt whose answer was lost).
            return match meta::get_range(self.meta(), &split_key).await? {
                Some(r) if r.record.range_id == right.0 => Ok(done),
                _ => Err(Error::internal(format!("split of {parent_id}: left child recorded without the right one"))),
            };
        }
        let p = &parent.record;
        if p.range_id != parent_id {
            return Err(Error::conflict(format!("the range at {parent_start} is {}, not {parent_id}", p.range_id)));
        }
        if p.owner.as_ref() != Some(&owner) {
            return Err(Error::conflict(format!(
                "{parent_id} is not owned by {} in epoch {}",
                owner.node_id, owner.epoch
            )));
        }
        if !p.range.contains(split_key.as_bytes()) || split_key == p.range.start {
            return Err(Error::invalid(format!("split key {split_key} is not inside {}", p.range)));
        }
        let generation = ampstore_common::ids::checked_increment("range generation", p.generation)?;
        let child = |id: RangeId, range: KeyRange, cp: Checkpoint| RangeDescriptor {
            range_id: id,
            range,
            generation,
            owner: Some(owner.clone()),
            checkpoint: Some(cp),
        };
        let left_desc = child(left.0, KeyRange::new(p.range.start.clone(), Some(split_key.clone()))?, left.1);
        let right_desc = child(right.0, KeyRange::new(split_key.clone(), p.range.end.clone())?, right.1);
        let ops = vec![
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: parent_start.as_bytes().to_vec(),
                value: meta::encode(&left_desc),
                expect: Expect::Version(parent.version),
            },
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: split_key.as_bytes().to_vec(),
                value: meta::encode(&right_desc),
                expect: Expect::Absent,
            },
        ];
        self.write(&term, ops).await?;
        tracing::info!(parent = %parent_id, left = %left.0, right = %right.0, %split_key, "split committed");
        {
            let mut st = self.lock();
            let now = Instant::now();
            st.fresh.retain(|_, until| now < *until);
            st.fresh.insert(parent_start.clone(), now + FRESH_SPLIT_HOLD);
            st.fresh.insert(split_key.clone(), now + FRESH_SPLIT_HOLD);
        }
        self.reshape_routing(std::slice::from_ref(&parent_start), &[parent_start.clone(), split_key]).await?;
        Ok(done)
    }

    /// Replaces two merged neighbours by the merged range (owned by the same node) in one
    /// transactional, term-checked update that requires both to be owned by that node in
    /// that epoch. Repeating a committed merge answers the same.
    async fn commit_merge(
        &self,
        (left_id, left_start): (RangeId, Key),
        (right_id, right_start): (RangeId, Key),
        owner: Owner,
        (merged_id, checkpoint): (RangeId, Checkpoint),
    ) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let done = Reply::MergeDone { merged_id };
        let left = meta::get_range(self.meta(), &left_start)
            .await?
            .ok_or_else(|| Error::invalid(format!("no range starts at {left_start}")))?;
        let right = meta::get_range(self.meta(), &right_start).await?;
        if left.record.range_id == merged_id {
            // Committed already (an earlier attempt whose answer was lost).
            return match right {
                None => Ok(done),
                Some(_) => {
                    Err(Error::internal(format!("merge into {merged_id}: recorded with {right_id} still there")))
                }
            };
        }
        let right = right.ok_or_else(|| Error::invalid(format!("no range starts at {right_start}")))?;
        let (l, r) = (&left.record, &right.record);
        if l.range_id != left_id || r.range_id != right_id {
            return Err(Error::conflict(format!(
                "the ranges at {left_start} and {right_start} are {} and {}, not {left_id} and {right_id}",
                l.range_id, r.range_id
            )));
        }
        if l.range.end.as_ref() != Some(&r.range.start) {
            return Err(Error::invalid(format!("{} and {} are not adjacent", l.range, r.range)));
        }
        if l.owner.as_ref() != Some(&owner) || r.owner.as_ref() != Some(&owner) {
            return Err(Error::conflict(format!(
                "{left_id} and {right_id} are not both owned by {} in epoch {}",
                owner.node_id, owner.epoch
            )));
        }
        let merged = RangeDescriptor {
            range_id: merged_id,
            range: KeyRange::new(l.range.start.clone(), r.range.end.clone())?,
            generation: ampstore_common::ids::checked_increment("range generation", l.generation.max(r.generation))?,
            owner: Some(owner),
            checkpoint: Some(checkpoint),
        };
        let ops = vec![
            MetaOp::Put {
                pk: PK_RANGE.into(),
                sk: left_start.as_bytes().to_vec(),
                value: meta::encode(&merged),
                expect: Expect::Version(left.version),
            },
            MetaOp::Delete {
                pk: PK_RANGE.into(),
                sk: right_start.as_bytes().to_vec(),
                expect: Expect::Version(right.version),
            },
        ];
        self.write(&term, ops).await?;
        tracing::info!(left = %left_id, right = %right_id, merged = %merged_id, range = %merged.range, "merge committed");
        self.reshape_routing(&[left_start.clone(), right_start], &[left_start]).await?;
        Ok(done)
    }

    /// Applies a committed split or merge to the routing table in memory: the descriptors
    /// at `removed` go, the ones now at `added` are read back (for their versions). Much
    /// cheaper than re-reading every descriptor, which a burst of splits would do hundreds
    /// of times.
    async fn reshape_routing(&self, removed: &[Key], added: &[Key]) -> Result<(), Error> {
        let mut fresh = Vec::with_capacity(added.len());
        for start in added {
            let d = meta::get_range(self.meta(), start)
                .await?
                .ok_or_else(|| Error::internal(format!("the range just recorded at {start} is missing")))?;
            fresh.push(d);
        }
        let applied = {
            let mut st = self.lock();
            let Some(a) = st.active.as_mut() else { return Ok(()) };
            a.routing_changes += 1;
            a.routing.replace(removed, fresh)
        };
        if let Err(e) = applied {
            tracing::warn!(error = %e, "routing change does not apply in memory; re-reading every range");
            self.refresh_routing().await?;
        }
        Ok(())
    }

    async fn drain(&self, node_id: NodeId, undo: bool) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let epoch = {
            let st = self.lock();
            st.nodes.get(&node_id).map(|w| w.record.record.epoch)
        };
        let epoch = epoch.ok_or_else(|| Error::invalid(format!("no node {node_id} is known to the master")))?;
        let sk = node_id.as_str().as_bytes().to_vec();
        let op = if undo {
            MetaOp::Delete { pk: PK_DRAIN.into(), sk, expect: Expect::Any }
        } else {
            MetaOp::Put { pk: PK_DRAIN.into(), sk, value: meta::encode(&DrainRecord { epoch }), expect: Expect::Any }
        };
        self.write(&term, vec![op]).await?;
        let mut st = self.lock();
        st.nodes.set_drain(&node_id, (!undo).then_some(epoch));
        let ranges_left = st.active.as_ref().map_or(0, |a| {
            a.routing
                .owned_by(&node_id)
                .filter(|d| d.record.owner.as_ref().is_some_and(|o| !epoch_over(&st.nodes, o)))
                .count()
        });
        if !undo {
            tracing::info!(node = %node_id, ranges_left, "draining");
        }
        Ok(Reply::Draining { node_id, ranges_left: ranges_left as u64 })
    }

    fn status(&self) -> MasterStatus {
        let now = Instant::now();
        let st = self.lock();
        let active = st.active(now);
        let mut owned: HashMap<&NodeId, u64> = HashMap::new();
        let mut ranges = Vec::new();
        if let Some(a) = active {
            for d in a.routing.iter() {
                let r = &d.record;
                if let Some(o) = &r.owner {
                    *owned.entry(&o.node_id).or_default() += 1;
                }
                let load = r.owner.as_ref().and_then(|o| st.nodes.get(&o.node_id)).map(|w| &w.load);
                let data_bytes = load.and_then(|l| l.range_bytes.get(&r.range_id).copied()).unwrap_or(0);
                let log_bytes = load.and_then(|l| l.range_log_bytes.get(&r.range_id).copied()).unwrap_or(0);
                ranges.push(RangeView {
                    range_id: r.range_id,
                    range: r.range.clone(),
                    generation: r.generation,
                    owner: r.owner.as_ref().map(|o| o.node_id.clone()),
                    owner_epoch: r.owner.as_ref().map(|o| o.epoch),
                    data_bytes,
                    log_bytes,
                });
            }
        }
        let nodes = st
            .nodes
            .iter()
            .map(|(id, w)| NodeView {
                node_id: id.clone(),
                rpc_addr: w.record.record.rpc_addr.clone(),
                epoch: w.record.record.epoch,
                state: st.nodes.state(now, id),
                draining: w.is_draining(),
                ranges: owned.get(id).copied().unwrap_or(0),
                data_bytes: w.load.data_bytes,
                resident_bytes: w.load.resident_bytes,
                memory_budget_bytes: w.load.memory_budget_bytes,
                ops_per_sec: w.load.ops_per_sec,
                lease_ms_left: st.nodes.lease_ms_left(now, id),
            })
            .collect();
        MasterStatus {
            master_id: self.id.clone(),
            active_term: active.map(|a| a.term.term),
            lease_holder: st.holder.as_ref().map(|h| h.0.clone()),
            lease_holder_rpc: st.holder.as_ref().map(|h| h.1.clone()),
            nodes,
            ranges,
            writes_refused_on_term: self.writes_refused_on_term.load(Ordering::Relaxed),
        }
    }
}

/// Whether `owner`'s epoch is over by this master's view of its node record (the rule is
/// `common::ownership::owner_epoch_over`).
fn epoch_over(nodes: &NodeWatch, owner: &Owner) -> bool {
    ampstore_common::ownership::owner_epoch_over(nodes.get(&owner.node_id).map(|w| &w.record.record), owner)
}

/// Load figures of the nodes placement may use: reachable ones, and any node that owns
/// ranges and is draining (so its ranges can move off).
fn node_loads(st: &State, a: &Active, now: Instant, ignore_budget: bool) -> Vec<NodeLoad> {
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

impl Service for Master {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.id.clone(), role: Role::Master }
    }

    async fn handle(self: &Arc<Self>, op: Op) -> Result<Reply, Error> {
        op.validate()?;
        match op {
            Op::Ping => Ok(Reply::Pong),
            Op::Locate { key } => self.locate_many(key, None, true).await,
            Op::LocateRange { start, end } => self.locate_many(start, end, false).await,
            Op::Drain { node_id, undo } => self.drain(node_id, undo).await,
            Op::MasterStatus => Ok(Reply::Master(self.status())),
            Op::Members => Ok(Reply::Members(self.members())),
            Op::SplitRange {
                parent_id,
                parent_start,
                split_key,
                owner_node,
                owner_epoch,
                left_id,
                left_checkpoint,
                right_id,
                right_checkpoint,
            } => {
                let owner = Owner { node_id: owner_node, epoch: owner_epoch };
                let left = (left_id, left_checkpoint);
                let right = (right_id, right_checkpoint);
                self.commit_split(parent_id, parent_start, split_key, owner, left, right).await
            }
            Op::CommitMerge {
                left_id,
                left_start,
                right_id,
                right_start,
                owner_node,
                owner_epoch,
                merged_id,
                merged_checkpoint,
            } => {
                let owner = Owner { node_id: owner_node, epoch: owner_epoch };
                self.commit_merge((left_id, left_start), (right_id, right_start), owner, (merged_id, merged_checkpoint))
                    .await
            }
            _ => Err(Error::invalid(
                "this is a master: send data requests to the node that serves the key (locate it first)",
            )),
        }
    }

    fn cluster_token(&self) -> Option<&str> {
        self.cluster_token.as_deref()
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_server::config::LocalConfig;
    use ampstore_store::local::LocalStore;
    use ampstore_store::meta::{LeaseRecord, PK_MASTER, SK_LEASE, SK_TERM};

    fn master(backend: Backend, id: &str) -> Arc<Master> {
        Arc::new(Master {
            id: NodeId::new(id).unwrap(),
            rpc_addr: "127.0.0.1:1".into(),
            cfg: MasterConfig::default(),
            backend,
            state: Mutex::default(),
            conns: Mutex::default(),
            writes_refused_on_term: AtomicU64::new(0),
            cluster_token: None,
            admin_token: None,
            metrics: Metrics::new(),
            gossip: OnceLock::new(),
            wake: Notify::new(),
        })
    }

    /// A master that believes it is active (as one paused mid-action would, before it looks
    /// at its clock again) writes nothing once another master took the term.
    #[tokio::test]
    async fn a_deposed_master_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let meta_store = backend.meta.clone();
        let a = master(backend, "a");
        let term_a = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
        let lease = |holder: &str, term| LeaseRecord {
            holder: NodeId::new(holder).unwrap(),
            term: ampstore_common::Term(term),
            rvn: 1,
            rpc_addr: String::new(),
            lease_ms: 1000,
        };
        meta_store.put(PK_MASTER, SK_LEASE, &meta::encode(&lease("a", 1)), Expect::Absent).await.unwrap();
        meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_a), Expect::Absent).await.unwrap();
        let (routing, nodes) = a.take_over(&term_a).await.unwrap();
        assert_eq!(routing.len(), 1, "the first range is created on an empty store");
        let node = NodeId::new("n1").unwrap();
        let rec =
            NodeRecord { epoch: Epoch(1), rvn: 5, rpc_addr: "127.0.0.1:2".into(), liveness_ms: 1000, ended: false };
        meta_store.put(PK_NODE, b"n1", &meta::encode(&rec), Expect::Absent).await.unwrap();
        {
            let mut st = a.lock();
            st.active = Some(Active {
                term: term_a.clone(),
                valid_until: Instant::now() + Duration::from_secs(3600),
                routing,
                routing_changes: 0,
            });
            st.nodes = nodes;
            st.nodes.observe(Instant::now(), &node, Versioned { version: 1, record: rec });
        }
        // While A holds the term, its writes land.
        a.drain(node.clone(), false).await.unwrap();
        assert!(meta_store.get(PK_DRAIN, b"n1").await.unwrap().is_some());

        // B takes over (the term item changes with the lease).
        let term_b = TermRecord { term: ampstore_common::Term(2), holder: NodeId::new("b").unwrap() };
        meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_b), Expect::Any).await.unwrap();
        let before = meta::list_ranges(meta_store.as_ref()).await.unwrap();

        // A still thinks it is active: a drain undo and an assignment are both refused.
        let err = a.drain(node.clone(), true).await.unwrap_err();
        assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
        assert!(meta_store.get(PK_DRAIN, b"n1").await.unwrap().is_some(), "the drain record is unchanged");
        {
            let mut st = a.lock();
            st.active = Some(Active {
                term: term_a.clone(),
                valid_until: Instant::now() + Duration::from_secs(3600),
                routing: RoutingTable::load(before.clone()).unwrap(),
                routing_changes: 0,
            });
        }
        let desc = before[0].clone();
        let owner = Owner { node_id: node.clone(), epoch: Epoch(1) };
        let err = a.set_owner(&term_a, desc, Some(owner)).await.unwrap_err();
        assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
        assert_eq!(meta::list_ranges(meta_store.as_ref()).await.unwrap(), before, "routing unchanged");
        assert_eq!(a.writes_refused_on_term.load(Ordering::Relaxed), 2);
        assert!(a.acting_term().is_none(), "a refused write makes the master step down");
    }

    /// A master whose lease ran out by its own clock (renewals stalled) refuses an
    /// assignment with `NotMaster`, and stays responsive: it used to take its state lock
    /// twice on that path and hang for good.
    #[tokio::test]
    async fn an_assignment_after_the_lease_ran_out_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let meta_store = backend.meta.clone();
        let a = master(backend, "a");
        let term_a = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
        meta_store.put(PK_MASTER, SK_TERM, &meta::encode(&term_a), Expect::Absent).await.unwrap();
        let (routing, nodes) = a.take_over(&term_a).await.unwrap();
        let start = routing.iter().next().unwrap().record.range.start.clone();
        {
            let mut st = a.lock();
            st.active = Some(Active { term: term_a, valid_until: Instant::now(), routing, routing_changes: 0 });
            st.nodes = nodes;
        }
        // On its own thread: a deadlock blocks the runtime it happens on, timers included.
        let (tx, rx) = std::sync::mpsc::channel();
        let m = a.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = tx.send(rt.block_on(m.assign_inner(&start)));
        });
        let err = rx.recv_timeout(Duration::from_secs(10)).expect("the assignment hung").unwrap_err();
        assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
        assert!(a.acting_term().is_none());
    }

    /// A node that accepts requests and never answers them (a stopped process whose
    /// connection is already open).
    struct Stuck;

    impl Service for Stuck {
        fn server_info(&self) -> ServerInfo {
            ServerInfo {
                protocol_version: PROTOCOL_VERSION,
                server_id: NodeId::new("stuck").unwrap(),
                role: Role::Node,
            }
        }

        async fn handle(self: &Arc<Self>, _op: Op) -> Result<Reply, Error> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn an_assignment_to_a_node_that_stops_answering_ends_with_its_epoch_not_the_handoff_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let a = master(backend, "a");
        let (listener, addr) = rpc::bind("127.0.0.1:0").await.unwrap();
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(rpc::serve(listener, Arc::new(Stuck), stopped));
        let node = NodeId::new("n1").unwrap();
        let record = |epoch: u64, ended: bool| Versioned {
            version: epoch,
            record: ampstore_store::meta::NodeRecord {
                epoch: Epoch(epoch),
                rvn: 1,
                rpc_addr: addr.clone(),
                liveness_ms: 60_000,
                ended,
            },
        };
        let routing = RoutingTable::load(vec![Versioned {
            version: 1,
            record: RangeDescriptor {
                range_id: RangeId(7),
                range: KeyRange::full(),
                generation: 1,
                owner: Some(Owner { node_id: node.clone(), epoch: Epoch(1) }),
                checkpoint: None,
            },
        }])
        .unwrap();
        {
            let mut st = a.lock();
            st.nodes.observe(Instant::now(), &node, record(1, false));
            let term = TermRecord { term: ampstore_common::Term(1), holder: a.id.clone() };
            st.active = Some(Active {
                term,
                valid_until: Instant::now() + Duration::from_secs(60),
                routing,
                routing_changes: 0,
            });
        }
        let owner = Owner { node_id: node.clone(), epoch: Epoch(1) };
        let m = a.clone();
        let started = Instant::now();
        let load = tokio::spawn(async move { m.load_on(&owner, &Key::default()).await });
        // Live: the master keeps waiting for the answer.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!load.is_finished(), "gave up on a live node");
        // The node's epoch is ended (what `watch_nodes` does once it stays silent).
        a.lock().nodes.observe(Instant::now(), &node, record(2, true));
        let result =
            tokio::time::timeout(Duration::from_secs(5), load).await.expect("still waiting on a dead node").unwrap();
        let err = result.unwrap_err();
        assert!(matches!(&err, Error::Unavailable { reason } if reason.contains("no longer live")), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    /// A node that answers stats polls at once.
    struct Answers(NodeId);

    impl Service for Answers {
        fn server_info(&self) -> ServerInfo {
            ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.0.clone(), role: Role::Node }
        }

        async fn handle(self: &Arc<Self>, _op: Op) -> Result<Reply, Error> {
            Ok(Reply::Stats(ampstore_common::protocol::NodeStats {
                node_id: self.0.clone(),
                epoch: Epoch(1),
                liveness_ms_left: 60_000,
                ranges: vec![],
                resident_bytes: 0,
                ops_total: 0,
                memory_budget_bytes: 0,
                split_bytes: 0,
            }))
        }
    }

    #[tokio::test]
    async fn a_node_that_never_answers_its_stats_poll_does_not_make_the_others_unplaceable() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let a = master(backend, "a");
        let (_stop, stopped) = watch::channel(false);
        let (stuck_listener, stuck_addr) = rpc::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(rpc::serve(stuck_listener, Arc::new(Stuck), stopped.clone()));
        let healthy = NodeId::new("healthy").unwrap();
        let (listener, healthy_addr) = rpc::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(rpc::serve(listener, Arc::new(Answers(healthy.clone())), stopped));
        let stuck = NodeId::new("stuck").unwrap();
        for (id, addr) in [(&stuck, &stuck_addr), (&healthy, &healthy_addr)] {
            let record = ampstore_store::meta::NodeRecord {
                epoch: Epoch(1),
                rvn: 1,
                rpc_addr: addr.clone(),
                liveness_ms: 60_000,
                ended: false,
            };
            a.lock().nodes.observe(Instant::now(), id, Versioned { version: 1, record });
        }
        // The control loop's rhythm: a poll round every 300 ms, for longer than STATS_STALE.
        let until = Instant::now() + crate::nodes::STATS_STALE + Duration::from_secs(2);
        let mut stale_at = None;
        while Instant::now() < until {
            a.poll_stats();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = Instant::now();
            if stale_at.is_none()
                && now > until - Duration::from_secs(3)
                && !a.lock().nodes.accepts(now, &healthy, false)
            {
                stale_at = Some(now);
            }
        }
        assert_eq!(stale_at, None, "the healthy node's stats went stale behind the stuck node's poll");
        assert!(!a.lock().nodes.accepts(Instant::now(), &stuck, false), "the stuck node never answered");
        assert_eq!(a.lock().stats_polling.len(), 1, "one poll of the stuck node at a time");
    }
}
