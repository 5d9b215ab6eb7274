//! The master's driver: the one object that does I/O (meta writes, calls to nodes) on
//! behalf of the decisions in `state.rs`.
//!
//! The rule that keeps it free of lock-order bugs: the control state is reached only through
//! [`Master::with_state`], whose closure is synchronous and gets the state alone, so no
//! await, no call out and no second lock can happen while it is held. (A std mutex taken
//! twice on one thread once deadlocked the whole master: the chaos suite found it when a
//! master lost its lease during an assignment.) The loops are in `control.rs`, the request
//! handlers in `service.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ampstore_common::connection::Connection;
use ampstore_common::error::Error;
use ampstore_common::protocol::{MasterStatus, Role};
use ampstore_common::wire::Call;
use ampstore_common::wire::admin as node_ops;
use ampstore_common::wire::pool::Pool;
use ampstore_common::{Key, NodeId};
use ampstore_server::config::MasterConfig;
use ampstore_server::gossip::{Gossip, MemberView};
use ampstore_server::metrics::Metrics;
use ampstore_store::meta::{self, Owner, PK_RANGE, RangeDescriptor, TermRecord, Versioned};
use ampstore_store::{Backend, Expect, MetaOp, MetaStore, StoreError, own_write};
use tokio::sync::Notify;

use crate::state::ControlState;

/// How often a call to a node checks that the node's epoch is still live.
const EPOCH_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Deadline of an assign (the node loads the range before answering) or a release (it
/// snapshots first).
pub(crate) const HANDOFF_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Master {
    pub(crate) id: NodeId,
    pub(crate) rpc_addr: String,
    pub(crate) cfg: MasterConfig,
    backend: Backend,
    /// The decisions' state. Only ever replaced whole or updated field by field, so the
    /// master keeps going after a panic while it was held.
    state: Mutex<ControlState>,
    /// Connections to nodes (the master's role, the admin token).
    nodes_pool: Pool,
    pub(crate) writes_refused_on_term: AtomicU64,
    /// A client's hello must present it, when set (`cluster.token`).
    pub(crate) cluster_token: Option<String>,
    /// Every other role's hello must present it; the master presents it to nodes.
    pub(crate) admin_token: Option<String>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) gossip: OnceLock<Gossip>,
    /// Wakes the control loop early (a gossip report that a node is down, a merge done).
    pub(crate) wake: Notify,
}

impl Master {
    pub(crate) fn new(
        id: NodeId,
        rpc_addr: String,
        cfg: MasterConfig,
        backend: Backend,
        (cluster_token, admin_token): (Option<String>, Option<String>),
    ) -> Master {
        Master {
            id,
            rpc_addr,
            cfg,
            backend,
            state: Mutex::default(),
            nodes_pool: Pool::new(Role::Master, "master", admin_token.clone()),
            writes_refused_on_term: AtomicU64::new(0),
            cluster_token,
            admin_token,
            metrics: Metrics::new(),
            gossip: OnceLock::new(),
            wake: Notify::new(),
        }
    }

    /// Runs `f` on the control state under its lock. `f` is synchronous: nothing is
    /// awaited or called out while the lock is held.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut ControlState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The state lock itself, for tests that set up or inspect the state.
    #[cfg(test)]
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn meta(&self) -> &dyn MetaStore {
        self.backend.meta.as_ref()
    }

    /// The term record to check, if this master may act now.
    pub(crate) fn acting_term(&self) -> Option<TermRecord> {
        self.with_state(|st| st.acting_term(Instant::now()))
    }

    pub(crate) fn not_master(&self) -> Error {
        self.with_state(|st| st.not_master(&self.id))
    }

    /// Applies `ops` after the term check. A failed term check counts and reports
    /// `NotMaster`; another failed condition is `Conflict`. A retry after a lost response
    /// that finds every put of `ops` in place counts as applied (`own_write::transact`).
    pub(crate) async fn write(&self, term: &TermRecord, ops: Vec<MetaOp>) -> Result<(), Error> {
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(meta::term_check(term));
        all.extend(ops);
        match own_write::transact(self.meta(), &all).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { op_index: Some(0), .. }) => {
                self.writes_refused_on_term.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(term = term.term.0, "meta write refused: the term moved on (deposed)");
                Err(self.with_state(|st| {
                    st.deposed();
                    st.not_master(&self.id)
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records `owner` for the range, conditional on the descriptor version and the term.
    pub(crate) async fn set_owner(
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
        if let Ok(Some(now)) = meta::get_range(self.meta(), &next.range.start).await {
            self.with_state(|st| st.update_range(now));
        }
        written
    }

    /// Tells the owner to load the range (it answers once it serves it).
    pub(crate) async fn load_on(&self, owner: &Owner, start: &Key) -> Result<(), Error> {
        let Some((addr, range_id)) = self.with_state(|st| st.load_target(&owner.node_id, start)) else {
            return Err(Error::internal("assigned to a node or range the master does not know"));
        };
        let req = node_ops::Assign { range_id, start: start.clone(), claim: false };
        self.call_while_live(owner, &addr, req, HANDOFF_DEADLINE).await?;
        tracing::info!(%range_id, node = %owner.node_id, "range assigned and serving");
        Ok(())
    }

    /// Calls a node in its epoch `node.epoch`, and stops waiting as soon as that epoch is
    /// over by this master's clock: a paused or cut-off node must not keep a range busy
    /// (unplaceable) for the whole `deadline`. What the node does with the request after
    /// that no longer matters: its epoch is over, so it serves nothing, and whoever loads
    /// the range next fences the log.
    pub(crate) async fn call_while_live<C: Call>(
        &self,
        node: &Owner,
        addr: &str,
        req: C,
        deadline: Duration,
    ) -> Result<C::Reply, Error> {
        let call = async { self.conn(addr).await?.call_typed(req, deadline).await };
        let epoch_ends = async {
            loop {
                tokio::time::sleep(EPOCH_WATCH_INTERVAL).await;
                if !self.with_state(|st| st.still_live(Instant::now(), node)) {
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

    pub(crate) async fn conn(&self, addr: &str) -> Result<Arc<Connection>, Error> {
        self.nodes_pool.get(addr).await
    }

    // ---- what the admin port shows ------------------------------------------------------

    /// The member list as gossip sees it.
    pub(crate) fn members(&self) -> Vec<MemberView> {
        self.gossip.get().map(|g| g.members()).unwrap_or_default()
    }

    pub(crate) fn gossip_addr(&self) -> Option<String> {
        self.gossip.get().map(|g| g.local_addr().to_string())
    }

    pub(crate) fn master_status(&self) -> MasterStatus {
        let refused = self.writes_refused_on_term.load(Ordering::Relaxed);
        self.with_state(|st| st.status(Instant::now(), &self.id, refused))
    }

    pub(crate) fn gossip_drops(&self) -> u64 {
        self.metrics.gossip_drops_total()
    }
}
