//! Which neighbours merge: a pure policy over the routing table and the nodes' last stats,
//! so it is tested without processes.
//!
//! Two adjacent ranges merge when their combined data is under a quarter of their owners'
//! split size and neither has served a request for `merge_idle_ms`. A quarter keeps a merged
//! range far from splitting again. Both must be on one node: a pair on two nodes first moves
//! one range over, but only when the loads after the merge are balanced (no balance move
//! would follow), so merges and balancing never chase each other.

use ampstore_common::{Key, NodeId, RangeId};

use crate::placement::{self, Move, NodeLoad};

/// One range as the merge policy sees it.
#[derive(Clone, Debug)]
pub(crate) struct RangeFacts {
    pub(crate) start: Key,
    pub(crate) end: Option<Key>,
    pub(crate) range_id: RangeId,
    /// The live owner, when its last stats cover this range (otherwise it never merges).
    pub(crate) owner: Option<NodeId>,
    pub(crate) data_bytes: u64,
    pub(crate) idle_ms: u64,
    /// The owner's split size (0: splits and merges off there).
    pub(crate) split_bytes: u64,
}

/// A merge to run: the two ranges, the node that merges them, and the move that brings
/// them together first (if they are on two nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MergePick {
    pub(crate) left_start: Key,
    pub(crate) left_id: RangeId,
    pub(crate) right_start: Key,
    pub(crate) right_id: RangeId,
    pub(crate) node: NodeId,
    pub(crate) colocate: Option<Move>,
}

/// The smallest eligible pair (`ranges` in key order), or none.
pub(crate) fn pick_merge(
    ranges: &[RangeFacts],
    loads: &[NodeLoad],
    idle_ms_min: u64,
    tolerance_pct: u64,
) -> Option<MergePick> {
    if idle_ms_min == 0 {
        return None;
    }
    let draining = |id: &NodeId| loads.iter().any(|l| l.node_id == *id && l.draining);
    let mut pairs: Vec<(&RangeFacts, &RangeFacts)> = ranges
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .filter(|(a, b)| {
            debug_assert!(a.start < b.start, "ranges must come in key order");
            let (Some(oa), Some(ob)) = (&a.owner, &b.owner) else { return false };
            let split_bytes = a.split_bytes.min(b.split_bytes);
            a.end.as_ref() == Some(&b.start)
                && split_bytes > 0
                && a.data_bytes + b.data_bytes < split_bytes / 4
                && a.idle_ms >= idle_ms_min
                && b.idle_ms >= idle_ms_min
                && !draining(oa)
                && !draining(ob)
        })
        .collect();
    pairs.sort_by_key(|(a, b)| (a.data_bytes + b.data_bytes, a.start.clone()));
    for (a, b) in pairs {
        let (Some(oa), Some(ob)) = (&a.owner, &b.owner) else { continue };
        let pick = |node: &NodeId, colocate| MergePick {
            left_start: a.start.clone(),
            left_id: a.range_id,
            right_start: b.start.clone(),
            right_id: b.range_id,
            node: node.clone(),
            colocate,
        };
        if oa == ob {
            return Some(pick(oa, None));
        }
        // Move the smaller one first (less to copy), else the other.
        let (small, big) = if a.data_bytes <= b.data_bytes { (a, b) } else { (b, a) };
        for (moved, staying) in [(small, big), (big, small)] {
            let (Some(from), Some(to)) = (&moved.owner, &staying.owner) else { continue };
            if balanced_after(loads, moved, staying, from, to, tolerance_pct) {
                let m = Move {
                    range_start: moved.start.clone(),
                    range_id: moved.range_id,
                    from: from.clone(),
                    to: to.clone(),
                };
                return Some(pick(to, Some(m)));
            }
        }
    }
    None
}

/// Whether, after `moved` goes from `from` to `to` and merges with `staying` there, the
/// balancer would leave the loads alone.
fn balanced_after(
    loads: &[NodeLoad],
    moved: &RangeFacts,
    staying: &RangeFacts,
    from: &NodeId,
    to: &NodeId,
    tolerance_pct: u64,
) -> bool {
    if !loads.iter().any(|l| l.node_id == *to && l.accepts) {
        return false;
    }
    let mut sim = loads.to_vec();
    for l in &mut sim {
        if l.node_id == *from {
            l.ranges.retain(|r| r.1 != moved.range_id);
        }
        if l.node_id == *to {
            l.ranges.retain(|r| r.1 != staying.range_id);
            let merged = placement::range_score(moved.data_bytes + staying.data_bytes);
            l.ranges.push((staying.start.clone().min(moved.start.clone()), staying.range_id, merged));
        }
    }
    placement::plan_moves(&sim, 1, tolerance_pct).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: u64 = 1 << 20;

    fn n(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    /// Ranges at "a", "b", ... each `(owner, bytes, idle_ms)`.
    fn ranges(spec: &[(&str, u64, u64)]) -> Vec<RangeFacts> {
        let starts: Vec<String> = (0..spec.len()).map(|i| ((b'a' + i as u8) as char).to_string()).collect();
        spec.iter()
            .enumerate()
            .map(|(i, (owner, bytes, idle))| RangeFacts {
                start: Key::from(if i == 0 { String::new() } else { starts[i].clone() }),
                end: starts.get(i + 1).map(|s| Key::from(s.clone())),
                range_id: RangeId(i as u64 + 1),
                owner: (!owner.is_empty()).then(|| n(owner)),
                data_bytes: *bytes,
                idle_ms: *idle,
                split_bytes: SPLIT,
            })
            .collect()
    }

    fn loads(facts: &[RangeFacts], nodes: &[&str]) -> Vec<NodeLoad> {
        nodes
            .iter()
            .map(|id| NodeLoad {
                node_id: n(id),
                accepts: true,
                draining: false,
                ranges: facts
                    .iter()
                    .filter(|f| f.owner.as_ref() == Some(&n(id)))
                    .map(|f| (f.start.clone(), f.range_id, placement::range_score(f.data_bytes)))
                    .collect(),
                pinned_score: 0,
            })
            .collect()
    }

    #[test]
    fn the_smallest_idle_pair_on_one_node_merges() {
        let f = ranges(&[("n1", 100_000, 60_000), ("n1", 1000, 60_000), ("n1", 2000, 60_000), ("n1", 0, 10)]);
        let pick = pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).unwrap();
        assert_eq!((pick.left_id, pick.right_id, pick.colocate), (RangeId(2), RangeId(3), None));
        assert_eq!(pick.node, n("n1"));
    }

    #[test]
    fn busy_big_unowned_or_disabled_pairs_do_not_merge() {
        // Recently used.
        let f = ranges(&[("n1", 10, 60_000), ("n1", 10, 29_999)]);
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).is_none());
        // Combined size at a quarter of the split size: not under it.
        let f = ranges(&[("n1", SPLIT / 8, 60_000), ("n1", SPLIT / 8, 60_000)]);
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).is_none());
        let f = ranges(&[("n1", SPLIT / 8, 60_000), ("n1", SPLIT / 8 - 1, 60_000)]);
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).is_some());
        // No live owner (or no stats for it).
        let f = ranges(&[("", 10, 60_000), ("n1", 10, 60_000)]);
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).is_none());
        // Merges off.
        let f = ranges(&[("n1", 10, 60_000), ("n1", 10, 60_000)]);
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 0, 10).is_none());
        // Splits off on the owner.
        let mut f = ranges(&[("n1", 10, 60_000), ("n1", 10, 60_000)]);
        f[1].split_bytes = 0;
        assert!(pick_merge(&f, &loads(&f, &["n1"]), 30_000, 10).is_none());
        // A draining owner: its ranges move instead.
        let f = ranges(&[("n1", 10, 60_000), ("n1", 10, 60_000)]);
        let mut l = loads(&f, &["n1", "n2"]);
        l[0].draining = true;
        assert!(pick_merge(&f, &l, 30_000, 10).is_none());
    }

    #[test]
    fn a_pair_on_two_nodes_moves_together_only_when_balance_holds() {
        // Co-located pairs go before pairs that need a move.
        let f = ranges(&[("n1", 0, 60_000), ("n1", 10, 60_000), ("n2", 20, 60_000), ("n2", 0, 60_000)]);
        let pick = pick_merge(&f, &loads(&f, &["n1", "n2"]), 30_000, 10).unwrap();
        assert!(pick.colocate.is_none(), "{pick:?}");

        // n1: a (busy), b; n2: c, d (busy). Moving the smaller b to n2 leaves 1 against 2
        // equal ranges, which no balance move improves: b moves.
        let f = ranges(&[("n1", 0, 0), ("n1", 10, 60_000), ("n2", 20, 60_000), ("n2", 0, 0)]);
        let l = loads(&f, &["n1", "n2"]);
        let pick = pick_merge(&f, &l, 30_000, 10).unwrap();
        let m = pick.colocate.clone().unwrap();
        assert_eq!((m.range_id, m.from.clone(), m.to.clone()), (RangeId(2), n("n1"), n("n2")));
        assert_eq!((pick.node.clone(), pick.left_id, pick.right_id), (n("n2"), RangeId(2), RangeId(3)));

        // n1: a (busy), b; n2: c, d, e (busy). b to n2 would leave 1 against 3 (a balance
        // move would follow); c to n1 leaves 2 and 2: the bigger c moves.
        let f = ranges(&[("n1", 0, 0), ("n1", 10, 60_000), ("n2", 20, 60_000), ("n2", 0, 0), ("n2", 0, 0)]);
        let pick = pick_merge(&f, &loads(&f, &["n1", "n2"]), 30_000, 10).unwrap();
        let m = pick.colocate.clone().unwrap();
        assert_eq!((m.range_id, m.from.clone(), m.to.clone()), (RangeId(3), n("n2"), n("n1")));
        assert_eq!(pick.node, n("n1"));

        // An unbalanced cluster (n3 holds 4 busy ranges): no colocation until it is balanced.
        let f = ranges(&[
            ("n1", 0, 0),
            ("n1", 10, 60_000),
            ("n2", 20, 60_000),
            ("n3", 0, 0),
            ("n3", 0, 0),
            ("n3", 0, 0),
            ("n3", 0, 0),
        ]);
        let l = loads(&f, &["n1", "n2", "n3"]);
        assert!(!placement::plan_moves(&l, 1, 10).is_empty());
        assert!(pick_merge(&f, &l, 30_000, 10).is_none());
    }

    #[test]
    fn a_target_that_accepts_nothing_gets_no_colocation() {
        let f = ranges(&[("n1", 10, 60_000), ("n2", 20, 60_000)]);
        let mut l = loads(&f, &["n1", "n2"]);
        l[0].accepts = false;
        l[1].accepts = false;
        assert!(pick_merge(&f, &l, 30_000, 200).is_none());
        l[1].accepts = true;
        let pick = pick_merge(&f, &l, 30_000, 200).unwrap();
        assert_eq!(pick.node, n("n2"));
    }
}
