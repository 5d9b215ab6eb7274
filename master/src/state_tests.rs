//! The control decisions with a fake clock: `t0` plus the milliseconds a test advances.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::{NodeStats, RangeState, RangeStats, Reply};
use ampstore_common::{Epoch, Key, KeyRange, NodeId, RangeId, Seq, Term};
use ampstore_server::config::MasterConfig;
use ampstore_store::meta::{NodeRecord, Owner, RangeDescriptor, TermRecord, Versioned};
use ampstore_store::{Expect, MetaOp};

use super::*;
use crate::nodes::{NodeWatch, STATS_STALE};
use crate::routing::RoutingTable;

/// Liveness duration of every node record here.
const LIVENESS_MS: u64 = 1000;

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn owner(node: &str, epoch: u64) -> Owner {
    Owner { node_id: id(node), epoch: Epoch(epoch) }
}

fn rec(epoch: u64, rvn: u64, version: u64, ended: bool) -> Versioned<NodeRecord> {
    Versioned {
        version,
        record: NodeRecord {
            epoch: Epoch(epoch),
            rvn,
            rpc_addr: format!("n:{epoch}{rvn}"),
            liveness_ms: LIVENESS_MS,
            ended,
        },
    }
}

fn desc(id_: u64, start: &str, end: Option<&str>, o: Option<Owner>) -> Versioned<RangeDescriptor> {
    Versioned {
        version: 1,
        record: RangeDescriptor {
            range_id: RangeId(id_),
            range: KeyRange::new(Key::from(start), end.map(Key::from)).unwrap(),
            generation: 1,
            owner: o,
            checkpoint: None,
        },
    }
}

/// `(range id, data bytes, idle ms)` of each range a node reports as serving.
fn stats(node: &str, ranges: &[(u64, u64, u64)], split_bytes: u64) -> NodeStats {
    NodeStats {
        node_id: id(node),
        epoch: Epoch(1),
        liveness_ms_left: LIVENESS_MS,
        ranges: ranges
            .iter()
            .map(|&(r, bytes, idle_ms)| RangeStats {
                range_id: RangeId(r),
                range: KeyRange::full(),
                state: RangeState::Serving,
                keys: 1,
                data_bytes: bytes,
                applied_seq: Seq(1),
                checkpoint_seq: Seq(0),
                log_bytes_since_checkpoint: 0,
                error: None,
                idle_ms,
                write_id_bytes: 0,
            })
            .collect(),
        resident_bytes: 0,
        ops_total: 0,
        memory_budget_bytes: 0,
        split_bytes,
    }
}

/// An active master (term 1, lease valid for a minute) over `ranges`, with nodes n1..=n3
/// live in epoch 1 at `t0`, each with fresh (empty) stats.
fn active(clock: &Clock, ranges: Vec<Versioned<RangeDescriptor>>) -> ControlState {
    let mut st = ControlState::default();
    let active = Active {
        term: TermRecord { term: Term(1), holder: id("m") },
        valid_until: clock.at(60_000),
        routing: RoutingTable::load(ranges).unwrap(),
        routing_changes: 0,
    };
    st.took_over(active, NodeWatch::default(), None);
    for n in ["n1", "n2", "n3"] {
        st.nodes.observe(clock.at(0), &id(n), rec(1, 1, 1, false));
        st.stats_done(clock.at(0), &id(n), Some(&stats(n, &[], 0)));
    }
    st
}

/// Keeps every node heartbeating and reporting at `now`, except `silent`.
fn heartbeat(st: &mut ControlState, now: Instant, rvn: u64, silent: &[&str]) {
    for n in ["n1", "n2", "n3"] {
        if !silent.contains(&n) {
            st.nodes.observe(now, &id(n), rec(1, rvn, rvn, false));
        }
    }
}

fn assigns(round: &Round) -> Vec<Key> {
    round.actions.iter().filter_map(|a| if let Action::Assign(k) = a { Some(k.clone()) } else { None }).collect()
}

fn two_ranges_on(node: &str) -> Vec<Versioned<RangeDescriptor>> {
    vec![desc(1, "", Some("m"), Some(owner(node, 1))), desc(2, "m", None, Some(owner(node, 1)))]
}

#[test]
fn locate_returns_the_live_owner() {
    let c = Clock(Instant::now());
    let st = active(&c, vec![desc(1, "", Some("m"), Some(owner("n1", 1))), desc(2, "m", None, Some(owner("n2", 1)))]);
    let located = st.locate(c.at(200), &id("m"), &Key::from("x"), None, true);
    assert!(located.place.is_empty());
    let Ok(Reply::Location(loc)) = located.answer else { panic!("{:?}", located.answer) };
    assert_eq!((loc.range_id, loc.node_id.as_str(), loc.node_addr.as_str()), (RangeId(2), "n2", "n:11"));
    assert_eq!(loc.lease_ms_left, 800);
    let all = st.locate(c.at(200), &id("m"), &Key::from("a"), None, false);
    let Ok(Reply::Locations(locs)) = all.answer else { panic!("{:?}", all.answer) };
    assert_eq!(locs.iter().map(|l| l.range_id).collect::<Vec<_>>(), vec![RangeId(1), RangeId(2)]);
}

#[test]
fn locate_of_an_unowned_range_answers_loading_and_places_it_once() {
    let c = Clock(Instant::now());
    let mut st = active(&c, vec![desc(1, "", None, None)]);
    let located = st.locate(c.at(10), &id("m"), &Key::from("k"), None, true);
    assert!(matches!(located.answer, Err(Error::RangeLoading { retry_after_ms: ASSIGNING_RETRY_MS })));
    assert_eq!(located.place, vec![Key::from("")]);
    // Being assigned already: not placed again.
    assert!(st.claim(&Key::from("")));
    assert!(!st.claim(&Key::from("")), "a range is claimed once");
    let located = st.locate(c.at(20), &id("m"), &Key::from("k"), None, true);
    assert!(matches!(located.answer, Err(Error::RangeLoading { .. })));
    assert!(located.place.is_empty());
}

#[test]
fn locate_waits_for_a_silent_owner_whose_epoch_is_not_over_and_does_not_place_it() {
    let c = Clock(Instant::now());
    let st = active(&c, vec![desc(1, "", None, Some(owner("n1", 1)))]);
    // n1 is past its liveness by this clock, but its epoch has not been ended in meta.
    let located = st.locate(c.at(LIVENESS_MS + 5), &id("m"), &Key::from("k"), None, true);
    assert!(matches!(located.answer, Err(Error::RangeLoading { retry_after_ms: ASSIGNING_RETRY_MS })));
    assert!(located.place.is_empty(), "a range whose owner may still be live is never placed");
}

#[test]
fn a_master_whose_lease_ran_out_answers_not_master_naming_the_holder() {
    let c = Clock(Instant::now());
    let mut st = active(&c, vec![desc(1, "", None, Some(owner("n1", 1)))]);
    st.lease_renewed(c.at(100), Some((id("other"), "o:1".into())));
    assert!(st.acting_term(c.at(99)).is_some());
    assert!(st.acting_term(c.at(100)).is_none());
    let located = st.locate(c.at(100), &id("m"), &Key::from("k"), None, true);
    let Err(Error::NotMaster { hint: Some(hint) }) = located.answer else { panic!("{:?}", located.answer) };
    assert_eq!((hint.node_id.as_str(), hint.rpc_addr.as_str()), ("other", "o:1"));
    assert!(matches!(st.plan_assign(c.at(100), &id("m"), &Key::from("")), Err(Error::NotMaster { .. })));
    assert_eq!(st.next_actions(c.at(100), true, &MasterConfig::default()), Round::default());
    // The holder's own hint is not given to its clients.
    assert!(matches!(st.not_master(&id("other")), Error::NotMaster { hint: None }));
}

#[test]
fn a_node_whose_epoch_ended_has_its_ranges_reassigned() {
    let c = Clock(Instant::now());
    let mut st = active(&c, two_ranges_on("n1"));
    let cfg = MasterConfig::default();
    // n1 goes silent at t0; the others keep heartbeating.
    heartbeat(&mut st, c.at(500), 2, &["n1"]);
    let now = c.at(LIVENESS_MS - 1);
    assert!(st.observe_nodes(now, vec![], &HashMap::new()).is_empty(), "not silent for a full liveness yet");
    assert!(assigns(&st.next_actions(now, false, &cfg)).is_empty());
    let now = c.at(LIVENESS_MS);
    let expired = st.observe_nodes(now, vec![], &HashMap::new());
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, id("n1"));
    // Until the ended epoch is written, its ranges stay where they are.
    assert!(assigns(&st.next_actions(now, false, &cfg)).is_empty());
    let end = end_epoch(&expired[0].0, &expired[0].1).unwrap();
    assert_eq!(end.epoch, Epoch(1));
    let MetaOp::Put { expect, .. } = &end.op else { panic!("{:?}", end.op) };
    assert_eq!(*expect, Expect::Version(1), "conditional on the record as read");
    let written = end.written.unwrap();
    assert_eq!((written.version, written.record.epoch, written.record.ended), (2, Epoch(2), true));
    st.epoch_ended(now, &id("n1"), written);
    let round = st.next_actions(now, false, &cfg);
    assert_eq!(assigns(&round), vec![Key::from(""), Key::from("m")]);
    // Each goes to a live node that accepts ranges, never to n1.
    heartbeat(&mut st, now, 3, &["n1"]);
    for n in ["n2", "n3"] {
        st.stats_done(now, &id(n), Some(&stats(n, &[], 0)));
    }
    let a = st.plan_assign(now, &id("m"), &Key::from("m")).unwrap().expect("an orphan is placed");
    assert_eq!(a.owner, owner("n2", 1));
    // A range being assigned is not swept again.
    assert!(st.claim(&Key::from("")));
    assert_eq!(assigns(&st.next_actions(now, false, &cfg)), vec![Key::from("m")]);
}

#[test]
fn a_range_with_a_current_owner_is_left_alone() {
    let c = Clock(Instant::now());
    let st = active(&c, vec![desc(1, "", None, Some(owner("n1", 1)))]);
    assert!(st.plan_assign(c.at(10), &id("m"), &Key::from("")).unwrap().is_none());
    assert!(matches!(st.plan_assign(c.at(10), &id("m"), &Key::from("zz")), Err(Error::Invalid { .. })));
}

#[test]
fn a_range_is_not_placed_on_a_draining_or_gossip_down_node() {
    let c = Clock(Instant::now());
    // n3 owns a range, so it is the most loaded; n1 and n2 are empty.
    let mut st = active(&c, vec![desc(1, "", Some("m"), None), desc(2, "m", None, Some(owner("n3", 1)))]);
    let now = c.at(100);
    let target = |st: &ControlState| st.plan_assign(now, &id("m"), &Key::from("")).map(|a| a.unwrap().owner.node_id);
    assert_eq!(target(&st).unwrap(), id("n1"), "the least loaded, ties by id");
    let drained: HashMap<NodeId, Epoch> = [(id("n1"), Epoch(1))].into();
    st.observe_nodes(now, vec![], &drained);
    assert_eq!(target(&st).unwrap(), id("n2"), "n1 is draining");
    st.gossip_report(now, &id("n2"), false);
    assert_eq!(target(&st).unwrap(), id("n3"), "gossip reports n2 down");
    let drained: HashMap<NodeId, Epoch> = [(id("n1"), Epoch(1)), (id("n3"), Epoch(1))].into();
    st.observe_nodes(now, vec![], &drained);
    assert!(matches!(target(&st), Err(Error::Unavailable { .. })), "no node accepts ranges");
    // n2 answers a stats poll after the report: placeable again.
    st.stats_done(c.at(200), &id("n2"), Some(&stats("n2", &[], 0)));
    assert_eq!(target(&st).unwrap(), id("n2"));
}

#[test]
fn nodes_without_recent_stats_take_no_ranges() {
    let c = Clock(Instant::now());
    let mut st = active(&c, vec![desc(1, "", None, None)]);
    let later = c.at(STATS_STALE.as_millis() as u64 + 10);
    heartbeat(&mut st, c.at(STATS_STALE.as_millis() as u64), 2, &[]);
    assert!(matches!(st.plan_assign(later, &id("m"), &Key::from("")), Err(Error::Unavailable { .. })));
    st.stats_done(later, &id("n3"), Some(&stats("n3", &[], 0)));
    let a = st.plan_assign(later, &id("m"), &Key::from("")).unwrap().unwrap();
    assert_eq!(a.owner.node_id, id("n3"));
}

#[test]
fn a_drain_moves_ranges_off_the_node_and_counts_the_moves_in_flight() {
    let c = Clock(Instant::now());
    let mut st = active(&c, two_ranges_on("n1"));
    let cfg = MasterConfig { moves_in_flight_max: 1, ..MasterConfig::default() };
    let now = c.at(100);
    let drained: HashMap<NodeId, Epoch> = [(id("n1"), Epoch(1))].into();
    st.observe_nodes(now, vec![], &drained);
    assert_eq!(st.drained(&id("n1"), Epoch(1), false), 2, "ranges left on the draining node");
    let round = st.next_actions(now, false, &cfg);
    assert!(round.balance_looked, "a drain is looked at every round");
    let [Action::Move(m)] = round.actions.as_slice() else { panic!("{round:?}") };
    assert_eq!((m.from.as_str(), m.range_id), ("n1", RangeId(1)));
    assert_ne!(m.to, id("n1"));
    // One move in flight (the maximum): nothing else starts until it ends.
    let round = st.next_actions(now, true, &cfg);
    assert_eq!(round, Round::default());
    st.move_done();
    assert!(matches!(st.next_actions(now, false, &cfg).actions.as_slice(), [Action::Move(_)]));
}

#[test]
fn balance_waits_for_its_interval_and_for_running_assignments() {
    let c = Clock(Instant::now());
    let ranges: Vec<_> = (0..4u64)
        .map(|i| {
            let (start, end) = (format!("k{i}"), format!("k{}", i + 1));
            let start = if i == 0 { String::new() } else { start };
            desc(i + 1, &start, (i < 3).then_some(end.as_str()), Some(owner("n1", 1)))
        })
        .collect();
    let mut st = active(&c, ranges);
    let cfg = MasterConfig::default();
    let now = c.at(100);
    assert_eq!(st.next_actions(now, false, &cfg), Round::default(), "balance not due");
    assert!(st.claim(&Key::from("k9")));
    assert_eq!(st.next_actions(now, true, &cfg), Round::default(), "an assignment is running");
    st.unclaim(&Key::from("k9"));
    let round = st.next_actions(now, true, &cfg);
    assert!(round.balance_looked);
    let moves = round.actions.iter().filter(|a| matches!(a, Action::Move(m) if m.from == id("n1"))).count();
    assert_eq!(moves, 2, "up to moves_in_flight_max ranges leave the loaded node");
}

#[test]
fn the_children_of_a_split_stay_put_for_a_while() {
    let c = Clock(Instant::now());
    let mut st = active(&c, two_ranges_on("n1"));
    let cfg = MasterConfig::default();
    st.note_split(c.at(0), &[Key::from(""), Key::from("m")]);
    heartbeat(&mut st, c.at(500), 2, &[]);
    assert_eq!(st.next_actions(c.at(500), true, &cfg).actions, vec![], "both are fresh from a split");
    let later = c.at(FRESH_SPLIT_HOLD.as_millis() as u64);
    heartbeat(&mut st, later, 3, &[]);
    for n in ["n1", "n2", "n3"] {
        st.stats_done(later, &id(n), Some(&stats(n, &[], 0)));
    }
    assert!(!st.next_actions(later, true, &cfg).actions.is_empty(), "balance moves them once the hold is over");
}

#[test]
fn a_failed_merge_pauses_merges_and_places_both_ranges() {
    let c = Clock(Instant::now());
    let mut st = active(&c, two_ranges_on("n1"));
    let cfg = MasterConfig { merge_idle_ms: 1000, ..MasterConfig::default() };
    let idle = |st: &mut ControlState, at: Instant| {
        st.stats_done(at, &id("n1"), Some(&stats("n1", &[(1, 10, 5000), (2, 10, 5000)], 1 << 20)));
    };
    idle(&mut st, c.at(0));
    let round = st.next_actions(c.at(10), false, &cfg);
    let [Action::Merge(pick)] = round.actions.as_slice() else { panic!("{round:?}") };
    assert_eq!((pick.left_id, pick.right_id, pick.node.as_str()), (RangeId(1), RangeId(2), "n1"));
    assert_eq!(pick.colocate, None);
    // Both ranges are busy while it runs: no second merge, no moves, no placement.
    assert!(!st.claim(&Key::from("m")));
    assert_eq!(st.next_actions(c.at(20), true, &cfg), Round::default());
    let place = st.merge_done(c.at(30), &pick.clone(), false);
    assert_eq!(place, vec![Key::from(""), Key::from("m")]);
    let paused_until = 30 + MERGE_BACKOFF.as_millis() as u64;
    heartbeat(&mut st, c.at(paused_until - 100), 2, &[]);
    idle(&mut st, c.at(paused_until - 100));
    assert!(st.next_actions(c.at(paused_until - 1), false, &cfg).actions.is_empty(), "merges pause");
    heartbeat(&mut st, c.at(paused_until), 3, &[]);
    idle(&mut st, c.at(paused_until));
    assert!(matches!(st.next_actions(c.at(paused_until), false, &cfg).actions.as_slice(), [Action::Merge(_)]));
    // A merge that succeeds frees the pair and places nothing.
    let mut ok = active(&c, two_ranges_on("n1"));
    idle(&mut ok, c.at(0));
    let round = ok.next_actions(c.at(10), false, &cfg);
    let [Action::Merge(pick)] = round.actions.as_slice() else { panic!("{round:?}") };
    assert!(ok.merge_done(c.at(20), &pick.clone(), true).is_empty());
    assert!(ok.claim(&Key::from("m")));
}

#[test]
fn one_stats_poll_per_node_at_a_time_and_only_its_own_answer_counts() {
    let c = Clock(Instant::now());
    let mut st = active(&c, vec![desc(1, "", None, None)]);
    let mut polled: Vec<NodeId> = st.stats_targets().into_iter().map(|(n, _)| n).collect();
    polled.sort();
    assert_eq!(polled, vec![id("n1"), id("n2"), id("n3")]);
    assert!(st.stats_targets().is_empty(), "every poll is still under way");
    // n2 answers with another node's stats: ignored, but its poll is over.
    st.stats_done(c.at(50), &id("n2"), Some(&stats("n1", &[(1, 99, 0)], 0)));
    assert_eq!(st.nodes.get(&id("n2")).unwrap().load.data_bytes, 0);
    assert_eq!(st.stats_targets(), vec![(id("n2"), "n:11".to_string())]);
}

#[test]
fn a_refresh_read_before_a_split_landed_is_dropped() {
    let c = Clock(Instant::now());
    let mut st = active(&c, vec![desc(1, "", None, Some(owner("n1", 1)))]);
    let before = st.routing_changes();
    let split = vec![desc(2, "", Some("m"), Some(owner("n1", 1))), desc(3, "m", None, Some(owner("n1", 1)))];
    st.apply_reshape(&[Key::from("")], split).unwrap();
    // A refresh that read meta before the split must not undo it.
    st.apply_refresh(before, vec![desc(1, "", None, Some(owner("n1", 1)))]).unwrap();
    assert_eq!(st.active.as_ref().unwrap().routing.len(), 2);
    // One that read after applies, keeping a newer version this master wrote.
    let mut newer = desc(3, "m", None, Some(owner("n2", 1)));
    newer.version = 5;
    st.update_range(newer);
    let now = st.routing_changes();
    st.apply_refresh(now, vec![desc(2, "", Some("m"), None), desc(3, "m", None, Some(owner("n1", 1)))]).unwrap();
    let routing = &st.active.as_ref().unwrap().routing;
    assert_eq!(routing.get(&Key::from("")).unwrap().record.owner, None);
    assert_eq!(routing.get(&Key::from("m")).unwrap().record.owner, Some(owner("n2", 1)));
    // An inconsistent read is refused and changes nothing.
    assert!(st.apply_refresh(now, vec![desc(2, "", Some("m"), None)]).is_err());
    assert_eq!(st.active.as_ref().unwrap().routing.len(), 2);
}

#[test]
fn a_move_lands_only_on_a_target_that_still_accepts_ranges() {
    let c = Clock(Instant::now());
    let mut st = active(&c, two_ranges_on("n1"));
    let m = Move { range_start: Key::from("m"), range_id: RangeId(2), from: id("n1"), to: id("n2") };
    let released = desc(2, "m", None, None).record;
    let now = c.at(100);
    assert_eq!(st.move_target(now, &m, &released), Some(owner("n2", 1)));
    assert_eq!(st.move_target(now, &m, &desc(2, "m", None, Some(owner("n1", 1))).record), Some(owner("n2", 1)));
    let taken = desc(2, "m", None, Some(owner("n3", 1))).record;
    assert_eq!(st.move_target(now, &m, &taken), None, "someone else owns it now");
    st.gossip_report(now, &id("n2"), false);
    assert_eq!(st.move_target(now, &m, &released), None, "the target went away");
}

#[test]
fn status_counts_each_nodes_ranges() {
    let c = Clock(Instant::now());
    let st = active(&c, vec![desc(1, "", Some("m"), Some(owner("n1", 1))), desc(2, "m", None, Some(owner("n1", 1)))]);
    let s = st.status(c.at(10), &id("m"), 3);
    assert_eq!(s.active_term, Some(Term(1)));
    assert_eq!(s.writes_refused_on_term, 3);
    assert_eq!(s.ranges.len(), 2);
    let ranges: Vec<u64> = s.nodes.iter().map(|n| n.ranges).collect();
    assert_eq!(ranges, vec![2, 0, 0]);
    let standby = st.status(c.at(60_000), &id("m"), 0);
    assert_eq!((standby.active_term, standby.ranges.len()), (None, 0));
}
