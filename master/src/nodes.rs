//! What the master knows of each node: its meta record, watched on the master's own
//! monotonic clock (DESIGN section 4), and its load as last reported.
//!
//! A node is declared dead only after its record's nonce (`rvn`) has stayed the same for the
//! node's full liveness duration as this master measured it; nothing else (a missed stats
//! poll, a gossip report) shortens that wait.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ampstore_common::protocol::{NodeState, NodeStats, RangeState};
use ampstore_common::{Epoch, NodeId, RangeId};
use ampstore_store::meta::{NodeRecord, Versioned};

/// A stats answer older than this makes a node unreachable for placement.
pub(crate) const STATS_STALE: Duration = Duration::from_secs(3);

/// A node's load as it last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Load {
    pub(crate) ranges: u64,
    pub(crate) data_bytes: u64,
    /// What the node's memory budget counts (`node::budget`): its ranges' data and their
    /// remembered write ids (right after a load, about as many bytes as the data).
    pub(crate) budgeted_bytes: u64,
    pub(crate) resident_bytes: u64,
    pub(crate) memory_budget_bytes: u64,
    pub(crate) ops_per_sec: u64,
    /// Data bytes of each range the node serves.
    pub(crate) range_bytes: BTreeMap<RangeId, u64>,
    /// Log bytes since the checkpoint of each range the node serves.
    pub(crate) range_log_bytes: BTreeMap<RangeId, u64>,
    /// How long each range the node serves (state `serving`) has been without requests.
    pub(crate) range_idle_ms: BTreeMap<RangeId, u64>,
    /// The node's split size (0: splits and merges off).
    pub(crate) split_bytes: u64,
}

pub(crate) struct Watched {
    pub(crate) record: Versioned<NodeRecord>,
    /// When this master first saw the record's current nonce.
    rvn_since: Instant,
    pub(crate) load: Load,
    stats_at: Option<Instant>,
    ops_total: Option<(u64, Instant)>,
    /// The epoch a drain was requested in (a drain ends with the epoch).
    pub(crate) drain_epoch: Option<Epoch>,
    /// When gossip last reported the node down. Only a hint: the node gets no new ranges
    /// until it answers a stats poll after the report (or gossip sees it up again), so a
    /// report that is never followed by an `Up` (a partition that healed before gossip
    /// noticed) cannot keep the node unplaceable.
    gossip_down_at: Option<Instant>,
}

impl Watched {
    pub(crate) fn is_draining(&self) -> bool {
        self.drain_epoch == Some(self.record.record.epoch)
    }
}

#[derive(Default)]
pub(crate) struct NodeWatch {
    nodes: BTreeMap<NodeId, Watched>,
}

impl NodeWatch {
    /// Records a node record as read from meta at `now`.
    pub(crate) fn observe(&mut self, now: Instant, id: &NodeId, record: Versioned<NodeRecord>) {
        match self.nodes.get_mut(id) {
            None => {
                let w = Watched {
                    record,
                    rvn_since: now,
                    load: Load::default(),
                    stats_at: None,
                    ops_total: None,
                    drain_epoch: None,
                    gossip_down_at: None,
                };
                self.nodes.insert(id.clone(), w);
            }
            Some(w) => {
                let cur = &w.record.record;
                // Epochs never go back: a newer record version with an older epoch is damage
                // (or a bug), and believing it could resurrect an ended owner. Checked in
                // release builds: the record is ignored and the fault logged.
                if record.version >= w.record.version && record.record.epoch < cur.epoch {
                    tracing::error!(node = %id, seen = cur.epoch.0, read = record.record.epoch.0, "a node record went back in epoch: ignored");
                    return;
                }
                if cur.rvn != record.record.rvn || cur.epoch != record.record.epoch || cur.ended != record.record.ended
                {
                    w.rvn_since = now;
                }
                if record.version >= w.record.version {
                    w.record = record;
                }
            }
        }
    }

    pub(crate) fn set_drain(&mut self, id: &NodeId, epoch: Option<Epoch>) {
        if let Some(w) = self.nodes.get_mut(id) {
            w.drain_epoch = epoch;
        }
    }

    /// Gossip reports the node down (`up == false`) or up again.
    pub(crate) fn gossip_report(&mut self, now: Instant, id: &NodeId, up: bool) {
        if let Some(w) = self.nodes.get_mut(id) {
            w.gossip_down_at = if up { None } else { Some(now) };
        }
    }

    /// Nodes whose live epoch has shown no heartbeat for their full liveness duration.
    pub(crate) fn expired(&self, now: Instant) -> Vec<(NodeId, Versioned<NodeRecord>)> {
        self.nodes
            .iter()
            .filter(|(_, w)| !w.record.record.ended && now.saturating_duration_since(w.rvn_since) >= liveness(w))
            .map(|(id, w)| (id.clone(), w.record.clone()))
            .collect()
    }

    /// Whether `id` is live in `epoch` by this master's clock.
    pub(crate) fn is_live(&self, now: Instant, id: &NodeId, epoch: Epoch) -> bool {
        self.nodes.get(id).is_some_and(|w| {
            let r = &w.record.record;
            !r.ended && r.epoch == epoch && now.saturating_duration_since(w.rvn_since) < liveness(w)
        })
    }

    /// How long `id`'s current epoch has left by this master's clock.
    pub(crate) fn lease_ms_left(&self, now: Instant, id: &NodeId) -> u64 {
        self.nodes
            .get(id)
            .map_or(0, |w| liveness(w).saturating_sub(now.saturating_duration_since(w.rvn_since)).as_millis() as u64)
    }

    /// Live, reachable (recent stats, and none of them older than a gossip report of the
    /// node down) nodes: the ones ranges may be placed on or moved off.
    pub(crate) fn reachable(&self, now: Instant) -> impl Iterator<Item = (&NodeId, &Watched)> {
        self.nodes.iter().filter(move |(id, w)| {
            self.is_live(now, id, w.record.record.epoch)
                && w.stats_at.is_some_and(|t| {
                    now.saturating_duration_since(t) < STATS_STALE && w.gossip_down_at.is_none_or(|d| t > d)
                })
        })
    }

    /// Whether new ranges may go to this node: reachable, not draining, and (unless
    /// `ignore_budget`) under its memory budget.
    pub(crate) fn accepts(&self, now: Instant, id: &NodeId, ignore_budget: bool) -> bool {
        self.reachable(now).any(|(i, w)| {
            i == id
                && !w.is_draining()
                && (ignore_budget
                    || w.load.memory_budget_bytes == 0
                    || w.load.budgeted_bytes < w.load.memory_budget_bytes)
        })
    }

    pub(crate) fn set_stats(&mut self, now: Instant, id: &NodeId, stats: &NodeStats) {
        let Some(w) = self.nodes.get_mut(id) else { return };
        let mut load = Load {
            ranges: stats.ranges.len() as u64,
            data_bytes: stats.ranges.iter().map(|r| r.data_bytes).sum(),
            budgeted_bytes: stats.ranges.iter().map(|r| r.data_bytes + r.write_id_bytes).sum(),
            resident_bytes: stats.resident_bytes,
            memory_budget_bytes: stats.memory_budget_bytes,
            ops_per_sec: w.load.ops_per_sec,
            range_bytes: stats.ranges.iter().map(|r| (r.range_id, r.data_bytes)).collect(),
            range_log_bytes: stats.ranges.iter().map(|r| (r.range_id, r.log_bytes_since_checkpoint)).collect(),
            range_idle_ms: stats
                .ranges
                .iter()
                .filter(|r| r.state == RangeState::Serving)
                .map(|r| (r.range_id, r.idle_ms))
                .collect(),
            split_bytes: stats.split_bytes,
        };
        if let Some((before, at)) = w.ops_total {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 && stats.ops_total >= before {
                load.ops_per_sec = ((stats.ops_total - before) as f64 / secs) as u64;
            }
        }
        w.ops_total = Some((stats.ops_total, now));
        w.load = load;
        w.stats_at = Some(now);
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Watched> {
        self.nodes.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Watched)> {
        self.nodes.iter()
    }

    /// `live`, `dead` (epoch ended or no heartbeat) or `unreachable` (no recent stats).
    pub(crate) fn state(&self, now: Instant, id: &NodeId) -> NodeState {
        let Some(w) = self.nodes.get(id) else { return NodeState::Unknown };
        if !self.is_live(now, id, w.record.record.epoch) {
            NodeState::Dead
        } else if self.reachable(now).any(|(i, _)| i == id) {
            NodeState::Live
        } else {
            NodeState::Unreachable
        }
    }
}

fn liveness(w: &Watched) -> Duration {
    Duration::from_millis(w.record.record.liveness_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: u64, rvn: u64, version: u64, ended: bool) -> Versioned<NodeRecord> {
        Versioned {
            version,
            record: NodeRecord { epoch: Epoch(epoch), rvn, rpc_addr: "a:1".into(), liveness_ms: 1000, ended },
        }
    }

    #[test]
    fn a_node_expires_only_after_a_full_liveness_without_a_new_nonce() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let n = NodeId::new("n1").unwrap();
        let mut w = NodeWatch::default();
        w.observe(ms(0), &n, rec(1, 10, 1, false));
        assert!(w.is_live(ms(0), &n, Epoch(1)));
        // Heartbeats keep coming: never expires.
        for (i, t) in [300u64, 600, 900, 1200, 1500].into_iter().enumerate() {
            w.observe(ms(t), &n, rec(1, 11 + i as u64, 2 + i as u64, false));
            assert!(w.expired(ms(t)).is_empty());
        }
        // Heartbeats stop at 1500 (last new nonce seen then).
        w.observe(ms(2000), &n, rec(1, 15, 6, false));
        assert!(w.expired(ms(2499)).is_empty());
        assert!(w.is_live(ms(2499), &n, Epoch(1)));
        assert_eq!(w.lease_ms_left(ms(2000), &n), 500);
        assert_eq!(w.expired(ms(2500)).len(), 1);
        assert!(!w.is_live(ms(2500), &n, Epoch(1)));
        // The master ends the epoch: the ended record is not expired again.
        w.observe(ms(2600), &n, rec(2, 15, 7, true));
        assert!(w.expired(ms(9000)).is_empty());
        assert!(!w.is_live(ms(2600), &n, Epoch(2)));
        // The node registers a new epoch: live again.
        w.observe(ms(3000), &n, rec(3, 16, 8, false));
        assert!(w.is_live(ms(3000), &n, Epoch(3)));
        assert!(!w.is_live(ms(3000), &n, Epoch(1)), "an older epoch is never live");
    }

    /// Checked in release builds too (it was a debug assertion): a newer record version
    /// with an older epoch is ignored, so an ended owner is never believed live again.
    #[test]
    fn a_record_that_goes_back_in_epoch_is_ignored() {
        let t0 = Instant::now();
        let n = NodeId::new("n1").unwrap();
        let mut w = NodeWatch::default();
        w.observe(t0, &n, rec(3, 1, 5, false));
        w.observe(t0, &n, rec(2, 2, 6, false));
        assert!(w.is_live(t0, &n, Epoch(3)));
        assert!(!w.is_live(t0, &n, Epoch(2)), "the older epoch must not come back");
    }

    #[test]
    fn placement_needs_recent_stats_no_drain_and_room_in_the_budget() {
        let t0 = Instant::now();
        let n = NodeId::new("n1").unwrap();
        let mut w = NodeWatch::default();
        w.observe(t0, &n, rec(1, 1, 1, false));
        assert!(!w.accepts(t0, &n, false), "no stats yet");
        let mut stats = NodeStats {
            node_id: n.clone(),
            epoch: Epoch(1),
            liveness_ms_left: 500,
            ranges: vec![],
            resident_bytes: 1,
            ops_total: 100,
            memory_budget_bytes: 0,
            split_bytes: 0,
        };
        w.set_stats(t0, &n, &stats);
        assert!(w.accepts(t0, &n, false));
        assert_eq!(w.state(t0, &n), NodeState::Live);
        stats.ops_total = 600;
        w.set_stats(t0 + Duration::from_millis(500), &n, &stats);
        assert_eq!(w.get(&n).unwrap().load.ops_per_sec, 1000);
        w.set_drain(&n, Some(Epoch(1)));
        assert!(!w.accepts(t0, &n, true));
        w.set_drain(&n, Some(Epoch(0)));
        assert!(w.accepts(t0, &n, false), "a drain of an earlier epoch is over");
        stats.memory_budget_bytes = 100;
        stats.ranges = vec![ampstore_common::protocol::RangeStats {
            range_id: RangeId(1),
            range: ampstore_common::KeyRange::full(),
            state: RangeState::Serving,
            keys: 1,
            data_bytes: 100,
            applied_seq: ampstore_common::Seq(1),
            checkpoint_seq: ampstore_common::Seq(0),
            log_bytes_since_checkpoint: 0,
            error: None,
            idle_ms: 0,
            write_id_bytes: 0,
        }];
        w.set_stats(t0, &n, &stats);
        assert!(!w.accepts(t0, &n, false), "at its memory budget");
        // Remembered write ids count with the data (as in the node's own budget).
        stats.ranges[0].data_bytes = 60;
        w.set_stats(t0, &n, &stats);
        assert!(w.accepts(t0, &n, false), "under its budget");
        stats.ranges[0].write_id_bytes = 40;
        w.set_stats(t0, &n, &stats);
        assert!(!w.accepts(t0, &n, false), "data and write ids at its memory budget");
        assert!(w.accepts(t0, &n, true), "...unless every node is");
        assert!(!w.accepts(t0 + STATS_STALE + Duration::from_millis(600), &n, true), "stats too old");
    }

    #[test]
    fn a_gossip_report_of_a_node_down_holds_only_until_the_node_answers_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let n = NodeId::new("n1").unwrap();
        let mut w = NodeWatch::default();
        let stats = NodeStats {
            node_id: n.clone(),
            epoch: Epoch(1),
            liveness_ms_left: 500,
            ranges: vec![],
            resident_bytes: 1,
            ops_total: 0,
            memory_budget_bytes: 0,
            split_bytes: 0,
        };
        w.observe(ms(0), &n, rec(1, 1, 1, false));
        w.set_stats(ms(0), &n, &stats);
        assert!(w.accepts(ms(10), &n, false));
        w.gossip_report(ms(100), &n, false);
        assert!(!w.accepts(ms(100), &n, false), "reported down: no new ranges");
        assert_eq!(w.state(ms(100), &n), NodeState::Unreachable);
        // No `Up` ever comes (the partition healed before gossip noticed): the node's own
        // answer is enough.
        w.observe(ms(400), &n, rec(1, 2, 2, false));
        w.set_stats(ms(400), &n, &stats);
        assert!(w.accepts(ms(400), &n, false), "answered after the report");
        w.gossip_report(ms(500), &n, false);
        w.gossip_report(ms(600), &n, true);
        assert!(w.accepts(ms(600), &n, false), "gossip sees it up again");
    }
}
