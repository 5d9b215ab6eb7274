//! Where ranges go: the least-loaded node for a new assignment, and the moves that bring
//! loads within tolerance after a node joins or while one drains. Pure functions over
//! load figures, so the policy is tested without processes.

use ampstore_common::{Key, NodeId, RangeId};

/// What one range weighs besides its data: an empty range still costs a log, an actor and
/// a share of the node's attention.
pub(crate) const RANGE_BASE_BYTES: u64 = 64 * 1024;

/// The weight of a range holding `data_bytes`.
pub(crate) fn range_score(data_bytes: u64) -> u64 {
    RANGE_BASE_BYTES + data_bytes
}

/// One node as placement sees it.
#[derive(Clone, Debug)]
pub(crate) struct NodeLoad {
    pub(crate) node_id: NodeId,
    /// May receive ranges (live, reachable, not draining, under its memory budget).
    pub(crate) accepts: bool,
    pub(crate) draining: bool,
    /// The ranges it owns that may move: start key, id, score.
    pub(crate) ranges: Vec<(Key, RangeId, u64)>,
    /// The score of the ranges it owns that stay put for now (just split): they count as
    /// load but do not move.
    pub(crate) pinned_score: u64,
}

impl NodeLoad {
    pub(crate) fn score(&self) -> u64 {
        self.ranges.iter().map(|r| r.2).sum::<u64>() + self.pinned_score
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) range_start: Key,
    pub(crate) range_id: RangeId,
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
}

/// The accepting node with the lowest score (ties by id, so the choice is deterministic).
pub(crate) fn least_loaded(nodes: &[NodeLoad]) -> Option<NodeId> {
    nodes.iter().filter(|n| n.accepts).min_by_key(|n| (n.score(), n.node_id.clone())).map(|n| n.node_id.clone())
}

/// Up to `moves_max` moves: first every range off draining nodes, then from the most to the
/// least loaded node while the most loaded one is more than `tolerance_pct` above the least
/// and a move narrows the gap.
pub(crate) fn plan_moves(nodes: &[NodeLoad], moves_max: usize, tolerance_pct: u64) -> Vec<Move> {
    let mut nodes: Vec<NodeLoad> = nodes.to_vec();
    let mut moves = Vec::new();
    // Drains.
    for from in 0..nodes.len() {
        if !nodes[from].draining {
            continue;
        }
        while moves.len() < moves_max && !nodes[from].ranges.is_empty() {
            let Some(to) = index_of_least(&nodes, from) else { return moves };
            let r = nodes[from].ranges.remove(0);
            moves.push(Move {
                range_start: r.0.clone(),
                range_id: r.1,
                from: nodes[from].node_id.clone(),
                to: nodes[to].node_id.clone(),
            });
            nodes[to].ranges.push(r);
        }
    }
    // Balance among the nodes that are not draining.
    while moves.len() < moves_max {
        let Some(hi) = (0..nodes.len())
            .filter(|&i| !nodes[i].draining)
            .max_by_key(|&i| (nodes[i].score(), std::cmp::Reverse(nodes[i].node_id.clone())))
        else {
            break;
        };
        let Some(lo) = index_of_least(&nodes, hi) else { break };
        let (hi_score, lo_score) = (nodes[hi].score(), nodes[lo].score());
        if hi_score * 100 <= lo_score * (100 + tolerance_pct) {
            break;
        }
        // The range whose move leaves the pair most even. A move must narrow the gap, and
        // one that overshoots the middle must close at least a quarter of it (moves of a
        // range that barely fits are churn, not balance). Many small ranges move one by one
        // (each closes its own size of the gap), so a node holding hundreds of them still
        // sheds them.
        let gap = hi_score - lo_score;
        let best = nodes[hi]
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                if lo_score + r.2 >= hi_score {
                    return false;
                }
                let gain = hi_score - (hi_score - r.2).max(lo_score + r.2);
                gain >= r.2.min(gap / 4).max(1)
            })
            .min_by_key(|(_, r)| ((hi_score - r.2).max(lo_score + r.2), r.1))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let r = nodes[hi].ranges.remove(i);
        moves.push(Move {
            range_start: r.0.clone(),
            range_id: r.1,
            from: nodes[hi].node_id.clone(),
            to: nodes[lo].node_id.clone(),
        });
        nodes[lo].ranges.push(r);
    }
    moves
}

fn index_of_least(nodes: &[NodeLoad], not: usize) -> Option<usize> {
    (0..nodes.len())
        .filter(|&i| i != not && nodes[i].accepts)
        .min_by_key(|&i| (nodes[i].score(), nodes[i].node_id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, accepts: bool, draining: bool, ranges: &[(u64, u64)]) -> NodeLoad {
        NodeLoad {
            node_id: NodeId::new(id).unwrap(),
            accepts,
            draining,
            ranges: ranges
                .iter()
                .map(|&(rid, bytes)| (Key::from(format!("k{rid:03}").as_str()), RangeId(rid), range_score(bytes)))
                .collect(),
            pinned_score: 0,
        }
    }

    /// Plans and applies moves (2 at a time) until there are none, in under `rounds_max`.
    fn settle(nodes: &mut [NodeLoad], rounds_max: usize) {
        for _ in 0..rounds_max {
            let moves = plan_moves(nodes, 2, 10);
            if moves.is_empty() {
                return;
            }
            apply(nodes, &moves);
        }
        panic!("no convergence in {rounds_max} rounds");
    }

    fn apply(nodes: &mut [NodeLoad], moves: &[Move]) {
        for m in moves {
            let from = nodes.iter_mut().find(|n| n.node_id == m.from).unwrap();
            let i = from.ranges.iter().position(|r| r.1 == m.range_id).unwrap();
            let r = from.ranges.remove(i);
            nodes.iter_mut().find(|n| n.node_id == m.to).unwrap().ranges.push(r);
        }
    }

    #[test]
    fn least_loaded_skips_nodes_that_do_not_accept() {
        let nodes = vec![
            node("a", true, false, &[(1, 0), (2, 0)]),
            node("b", false, false, &[]),
            node("c", true, false, &[(3, 0)]),
        ];
        assert_eq!(least_loaded(&nodes), Some(NodeId::new("c").unwrap()));
        assert_eq!(least_loaded(&[node("b", false, false, &[])]), None);
    }

    #[test]
    fn a_joining_node_receives_ranges_until_loads_are_within_tolerance() {
        let ids: Vec<(u64, u64)> = (1..=12).map(|i| (i, 1000)).collect();
        let mut nodes = vec![
            node("a", true, false, &ids[0..4]),
            node("b", true, false, &ids[4..8]),
            node("c", true, false, &ids[8..12]),
            node("d", true, false, &[]),
        ];
        // Bounded number of moves per round.
        let first = plan_moves(&nodes, 2, 10);
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|m| m.to.as_str() == "d"));
        apply(&mut nodes, &first);
        settle(&mut nodes, 10);
        let scores: Vec<u64> = nodes.iter().map(|n| n.score()).collect();
        let (max, min) = (*scores.iter().max().unwrap(), *scores.iter().min().unwrap());
        assert!(max * 100 <= min * 110, "{scores:?}");
        assert_eq!(nodes.iter().map(|n| n.ranges.len()).sum::<usize>(), 12);
    }

    #[test]
    fn no_move_when_it_cannot_narrow_the_gap() {
        // 2 ranges over 3 nodes cannot be within 10%, and moving one just shifts the gap.
        let nodes =
            vec![node("a", true, false, &[(1, 0)]), node("b", true, false, &[(2, 0)]), node("c", true, false, &[])];
        assert!(plan_moves(&nodes, 4, 10).is_empty());
        // A big range and a small one: moving the small one narrows the gap, the big one not.
        let nodes =
            vec![node("a", true, false, &[(1, 1_000_000), (2, 10_000)]), node("b", true, false, &[(3, 900_000)])];
        let moves = plan_moves(&nodes, 4, 10);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].range_id, RangeId(2));
    }

    #[test]
    fn small_data_differences_do_not_cause_moves() {
        // 4/3/3 equal ranges with a little more data on the lighter nodes: moving a range
        // would shift the imbalance around, not reduce it.
        let nodes = vec![
            node("a", true, false, &[(1, 100), (2, 100), (3, 100), (4, 100)]),
            node("b", true, false, &[(5, 0), (6, 0), (7, 0)]),
            node("c", true, false, &[(8, 0), (9, 0), (10, 0)]),
        ];
        assert!(plan_moves(&nodes, 4, 10).is_empty());
    }

    #[test]
    fn drain_moves_everything_off_and_places_nothing_on_the_drained_node() {
        let nodes = vec![
            node("a", false, true, &[(1, 0), (2, 0), (3, 0)]),
            node("b", true, false, &[(4, 0)]),
            node("c", true, false, &[]),
        ];
        let moves = plan_moves(&nodes, 10, 10);
        let off_a: Vec<_> = moves.iter().filter(|m| m.from.as_str() == "a").collect();
        assert_eq!(off_a.len(), 3);
        assert!(moves.iter().all(|m| m.to.as_str() != "a"));
        let mut after = nodes.clone();
        apply(&mut after, &moves);
        assert!(after[0].ranges.is_empty());
        assert_eq!(after[1].ranges.len() + after[2].ranges.len(), 4);
        // Bounded too.
        assert_eq!(plan_moves(&nodes, 2, 10).len(), 2);
        // Nowhere to go: nothing planned.
        assert!(plan_moves(&[node("a", false, true, &[(1, 0)])], 10, 10).is_empty());
    }

    #[test]
    fn pinned_ranges_count_as_load_but_do_not_move() {
        let mut a = node("a", true, false, &[(1, 0)]);
        a.pinned_score = 10 * range_score(0);
        let b = node("b", true, false, &[]);
        let moves = plan_moves(&[a.clone(), b.clone()], 4, 10);
        assert_eq!(moves.len(), 1, "only the movable range moves: {moves:?}");
        assert_eq!(moves[0].range_id, RangeId(1));
        a.ranges.clear();
        assert!(plan_moves(&[a.clone(), b.clone()], 4, 10).is_empty());
        // New ranges still go where the load (pinned included) is lowest.
        assert_eq!(least_loaded(&[a, b]), Some(NodeId::new("b").unwrap()));
    }

    #[test]
    fn hundreds_of_small_ranges_on_one_node_spread_out() {
        let ranges: Vec<(u64, u64)> = (0..261).map(|i| (i, 40_000)).collect();
        let mut nodes = vec![node("a", true, false, &ranges), node("b", true, false, &[]), node("c", true, false, &[])];
        settle(&mut nodes, 1000);
        let counts: Vec<usize> = nodes.iter().map(|n| n.ranges.len()).collect();
        assert!(counts.iter().all(|&c| (80..=95).contains(&c)), "{counts:?}");
    }
}
