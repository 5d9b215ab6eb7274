//! Node liveness with epochs (DESIGN section 4).
//!
//! The node rewrites its `node` record every heartbeat with a fresh nonce, conditional on
//! the version it last wrote. It treats itself as live until `send time of the last
//! successful heartbeat + liveness_ms - margin_ms`, by its own monotonic clock, and serves
//! nothing after that. If a heartbeat's condition fails, the master bumped the epoch: every
//! range is dropped at once and the node registers again in a new epoch.
//!
//! Both writes go through [`own_write::put`]: a retry (ours or the store client's) that fails
//! its condition on the record this very call wrote (same fresh `rvn`) is a success, not an
//! ended epoch. The window still runs from the send time of the first attempt.
//!
//! [`Liveness`] is the clock (shared, lock-free, read on every request); [`register`] and
//! [`heartbeat_once`] are the storage steps; `node.rs` runs them on a timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ampstore_common::{Epoch, NodeId};
use ampstore_store::meta::{self, NodeRecord, PK_NODE};
use ampstore_store::{Expect, MetaStore, StoreError, own_write};

/// The node's view of its own liveness.
pub struct Liveness {
    base: Instant,
    /// Nanoseconds after `base` until which the node may serve; 0 = not live.
    valid_until_ns: AtomicU64,
    epoch: AtomicU64,
    liveness_ms: u64,
    margin_ms: u64,
}

impl Liveness {
    pub fn new(liveness_ms: u64, margin_ms: u64) -> Liveness {
        debug_assert!(margin_ms < liveness_ms);
        Liveness {
            base: Instant::now(),
            valid_until_ns: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            liveness_ms,
            margin_ms,
        }
    }

    fn ns_since_base(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    pub fn is_valid_at(&self, now: Instant) -> bool {
        self.ns_since_base(now) < self.valid_until_ns.load(Ordering::Acquire)
    }

    /// Whether the node may serve right now.
    pub fn is_valid(&self) -> bool {
        self.is_valid_at(Instant::now())
    }

    pub fn ms_left(&self) -> u64 {
        let now = self.ns_since_base(Instant::now());
        self.valid_until_ns.load(Ordering::Acquire).saturating_sub(now) / 1_000_000
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// A heartbeat sent at `sent_at` succeeded in `epoch`: live until sent_at + window.
    pub fn renewed(&self, epoch: Epoch, sent_at: Instant) {
        let window = Duration::from_millis(self.liveness_ms - self.margin_ms);
        let until = self.ns_since_base(sent_at + window);
        self.epoch.store(epoch.0, Ordering::Release);
        // Never move the deadline back because of a slow, older heartbeat finishing late.
        self.valid_until_ns.fetch_max(until, Ordering::AcqRel);
    }

    /// The epoch is over: stop serving at once.
    pub fn revoke(&self) {
        self.valid_until_ns.store(0, Ordering::Release);
    }

    pub fn liveness_ms(&self) -> u64 {
        self.liveness_ms
    }
}

/// The node's registration: its epoch and the version of its record to condition on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub epoch: Epoch,
    pub version: u64,
}

fn record(epoch: Epoch, rpc_addr: &str, liveness_ms: u64) -> Vec<u8> {
    meta::encode(&NodeRecord { epoch, rvn: rand::random(), rpc_addr: rpc_addr.to_string(), liveness_ms, ended: false })
}

/// Starts a new epoch for this node (one more than any before) and marks it live.
pub async fn register(
    meta_store: &dyn MetaStore,
    node: &NodeId,
    rpc_addr: &str,
    liveness: &Liveness,
) -> Result<Registration, StoreError> {
    for _ in 0..10 {
        let current = meta::get_node(meta_store, node).await?;
        let (epoch, expect) = match &current {
            None => (Epoch(1), Expect::Absent),
            Some(v) => {
                let epoch = v.record.epoch.next().map_err(|e| StoreError::Corrupt(format!("node {node}: {e}")))?;
                (epoch, Expect::Version(v.version))
            }
        };
        let sent_at = Instant::now();
        let value = record(epoch, rpc_addr, liveness.liveness_ms());
        match own_write::put(meta_store, PK_NODE, node.as_str().as_bytes(), &value, expect).await {
            Ok(version) => {
                liveness.renewed(epoch, sent_at);
                return Ok(Registration { epoch, version });
            }
            Err(StoreError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable("node record keeps changing under registration".into()))
}

/// Outcome of one heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Renewed; the record is now at this version.
    Renewed(u64),
    /// The record changed under us: the epoch is over.
    Lost,
    /// The store did not answer; liveness runs down on its own.
    Failed(String),
}

pub async fn heartbeat_once(
    meta_store: &dyn MetaStore,
    node: &NodeId,
    rpc_addr: &str,
    reg: &Registration,
    liveness: &Liveness,
) -> Beat {
    let sent_at = Instant::now();
    let value = record(reg.epoch, rpc_addr, liveness.liveness_ms());
    match own_write::put(meta_store, PK_NODE, node.as_str().as_bytes(), &value, Expect::Version(reg.version)).await {
        Ok(version) => {
            liveness.renewed(reg.epoch, sent_at);
            Beat::Renewed(version)
        }
        Err(StoreError::ConditionFailed { .. }) => {
            liveness.revoke();
            Beat::Lost
        }
        Err(e) => Beat::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_server::config::LocalConfig;
    use ampstore_store::local::LocalStore;
    use ampstore_store::lost_responses::ResponseLosingMeta;

    #[test]
    fn window_runs_from_send_time() {
        let l = Liveness::new(1000, 200);
        let t0 = Instant::now();
        assert!(!l.is_valid_at(t0), "not live before the first heartbeat");
        l.renewed(Epoch(1), t0);
        assert!(l.is_valid_at(t0 + Duration::from_millis(799)));
        assert!(!l.is_valid_at(t0 + Duration::from_millis(800)));
        // An older heartbeat finishing late does not shorten the window.
        l.renewed(Epoch(1), t0 - Duration::from_millis(500));
        assert!(l.is_valid_at(t0 + Duration::from_millis(799)));
        l.revoke();
        assert!(!l.is_valid_at(t0));
    }

    #[tokio::test]
    async fn epoch_bump_is_noticed_and_registration_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let node = NodeId::new("n1").unwrap();
        let l = Liveness::new(2000, 500);
        let reg = register(b.meta.as_ref(), &node, "127.0.0.1:1", &l).await.unwrap();
        assert_eq!(reg.epoch, Epoch(1));
        assert!(l.is_valid());
        let Beat::Renewed(v) = heartbeat_once(b.meta.as_ref(), &node, "127.0.0.1:1", &reg, &l).await else {
            panic!("heartbeat failed")
        };
        let reg = Registration { epoch: reg.epoch, version: v };
        // The master declares the node dead by bumping its epoch.
        let cur = meta::get_node(b.meta.as_ref(), &node).await.unwrap().unwrap();
        let bumped = NodeRecord { epoch: Epoch(cur.record.epoch.0 + 1), ..cur.record };
        b.meta.put(PK_NODE, b"n1", &meta::encode(&bumped), Expect::Version(cur.version)).await.unwrap();
        assert_eq!(heartbeat_once(b.meta.as_ref(), &node, "127.0.0.1:1", &reg, &l).await, Beat::Lost);
        assert!(!l.is_valid());
        let again = register(b.meta.as_ref(), &node, "127.0.0.1:1", &l).await.unwrap();
        assert_eq!(again.epoch, Epoch(3));
        assert!(l.is_valid());
        assert_eq!(l.epoch(), Epoch(3));
    }

    /// Registers `n1` through `meta_store` and returns its registration and liveness.
    async fn registered(meta_store: &dyn MetaStore) -> (NodeId, Registration, Liveness) {
        let node = NodeId::new("n1").unwrap();
        let l = Liveness::new(2000, 500);
        let reg = register(meta_store, &node, "127.0.0.1:1", &l).await.unwrap();
        (node, reg, l)
    }

    /// Beats once more after `first` and checks the node is still live in its epoch.
    async fn beats_on(meta_store: &dyn MetaStore, node: &NodeId, first: Beat, reg: &Registration, l: &Liveness) {
        let Beat::Renewed(version) = first else { panic!("the heartbeat's own write was read as {first:?}") };
        assert!(l.is_valid(), "liveness revoked");
        assert_eq!(l.epoch(), reg.epoch);
        let next = Registration { epoch: reg.epoch, version };
        let again = heartbeat_once(meta_store, node, "127.0.0.1:1", &next, l).await;
        assert!(matches!(again, Beat::Renewed(v) if v == version + 1), "the next heartbeat: {again:?}");
    }

    /// A node record damaged to the last epoch: registering is a corruption error, where
    /// `epoch + 1` used to panic in debug builds (or wrap to epoch 0 in release).
    #[tokio::test]
    async fn registering_past_the_last_epoch_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let node = NodeId::new("n1").unwrap();
        b.meta.put(PK_NODE, b"n1", &record(Epoch(u64::MAX), "a", 2000), Expect::Absent).await.unwrap();
        let l = Liveness::new(2000, 500);
        let err = register(b.meta.as_ref(), &node, "127.0.0.1:1", &l).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(!l.is_valid());
    }

    #[tokio::test]
    async fn heartbeat_whose_response_was_lost_keeps_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        let (node, reg, l) = registered(wrapped.meta.as_ref()).await;
        losing.answer_unavailable_after_next_commits(1);
        let beat = heartbeat_once(wrapped.meta.as_ref(), &node, "127.0.0.1:1", &reg, &l).await;
        assert_eq!(losing.responses_lost(), 1);
        beats_on(wrapped.meta.as_ref(), &node, beat, &reg, &l).await;
    }

    #[tokio::test]
    async fn heartbeat_retried_by_the_store_client_after_a_lost_response_keeps_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        let (node, reg, l) = registered(wrapped.meta.as_ref()).await;
        losing.resend_after_next_commits(1);
        let beat = heartbeat_once(wrapped.meta.as_ref(), &node, "127.0.0.1:1", &reg, &l).await;
        assert_eq!(losing.responses_lost(), 1);
        beats_on(wrapped.meta.as_ref(), &node, beat, &reg, &l).await;
    }

    #[tokio::test]
    async fn registration_whose_response_was_lost_keeps_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        losing.resend_after_next_commits(1);
        let (_, reg, l) = registered(wrapped.meta.as_ref()).await;
        assert_eq!(losing.responses_lost(), 1);
        assert_eq!(reg, Registration { epoch: Epoch(1), version: 1 }, "one registration, not two");
        assert!(l.is_valid());
    }
}
