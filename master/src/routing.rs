//! The routing table: every range descriptor, by start key, held in memory by the active
//! master (loaded from meta at takeover, refreshed from it, updated after each write).

use std::collections::BTreeMap;
use std::ops::Bound;

use ampstore_common::{Key, NodeId, RangeId};
use ampstore_store::meta::{RangeDescriptor, Versioned};

#[derive(Default)]
pub(crate) struct RoutingTable {
    by_start: BTreeMap<Key, Versioned<RangeDescriptor>>,
}

/// Why a set of descriptors is not a valid routing table.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoutingError {
    #[error("no range starts at the beginning of the key space")]
    NoFirstRange,
    #[error("ranges {left} and {right} leave a gap or overlap at {at}")]
    NotContiguous { left: RangeId, right: RangeId, at: Key },
    #[error("the last range {0} has an upper bound: keys above it belong to no range")]
    BoundedEnd(RangeId),
    #[error("range {0} is stored under a sort key other than its start")]
    Misfiled(RangeId),
}

impl RoutingTable {
    /// Builds the table from every descriptor in meta, checking that the ranges cover the
    /// key space with no gap and no overlap.
    pub(crate) fn load(descs: Vec<Versioned<RangeDescriptor>>) -> Result<RoutingTable, RoutingError> {
        let by_start: BTreeMap<Key, Versioned<RangeDescriptor>> =
            descs.into_iter().map(|d| (d.record.range.start.clone(), d)).collect();
        let table = RoutingTable { by_start };
        table.check()?;
        Ok(table)
    }

    pub(crate) fn check(&self) -> Result<(), RoutingError> {
        let mut prev: Option<&RangeDescriptor> = None;
        for (start, d) in &self.by_start {
            let d = &d.record;
            if &d.range.start != start {
                return Err(RoutingError::Misfiled(d.range_id));
            }
            match prev {
                None if !start.is_empty() => return Err(RoutingError::NoFirstRange),
                Some(p) if p.range.end.as_ref() != Some(start) => {
                    return Err(RoutingError::NotContiguous { left: p.range_id, right: d.range_id, at: start.clone() });
                }
                _ => {}
            }
            prev = Some(d);
        }
        match prev {
            None => Err(RoutingError::NoFirstRange),
            Some(p) if p.range.end.is_some() => Err(RoutingError::BoundedEnd(p.range_id)),
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_start.len()
    }

    /// The range holding `key`.
    pub(crate) fn find(&self, key: &Key) -> Option<&Versioned<RangeDescriptor>> {
        let (_, d) = self.by_start.range::<Key, _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        d.record.range.contains(key.as_bytes()).then_some(d)
    }

    /// The ranges overlapping `[start, end)`, in key order, at most `max`.
    pub(crate) fn covering(&self, start: &Key, end: Option<&Key>, max: usize) -> Vec<&Versioned<RangeDescriptor>> {
        let first = self.find(start).map(|d| d.record.range.start.clone()).unwrap_or_else(|| start.clone());
        self.by_start
            .range::<Key, _>((Bound::Included(&first), Bound::Unbounded))
            .map(|(_, d)| d)
            .take_while(|d| end.is_none_or(|e| &d.record.range.start < e))
            .take(max)
            .collect()
    }

    pub(crate) fn get(&self, start: &Key) -> Option<&Versioned<RangeDescriptor>> {
        self.by_start.get(start)
    }

    /// Replaces one descriptor with a newer version of itself (bounds unchanged).
    pub(crate) fn update(&mut self, desc: Versioned<RangeDescriptor>) {
        let start = desc.record.range.start.clone();
        match self.by_start.get(&start) {
            Some(cur) if cur.version > desc.version => {} // a newer read already landed
            Some(cur) => {
                debug_assert_eq!(cur.record.range, desc.record.range, "update must not change bounds");
                self.by_start.insert(start, desc);
            }
            None => debug_assert!(false, "update of a range the table does not hold: {start}"),
        }
    }

    /// Replaces the descriptors at `removed` by `added` (a split or a merge), if the result
    /// still covers the key space once; otherwise leaves the table as it was.
    pub(crate) fn replace(
        &mut self,
        removed: &[Key],
        added: Vec<Versioned<RangeDescriptor>>,
    ) -> Result<(), RoutingError> {
        let mut next = self.by_start.clone();
        for start in removed {
            next.remove(start);
        }
        for d in added {
            next.insert(d.record.range.start.clone(), d);
        }
        let next = RoutingTable { by_start: next };
        next.check()?;
        *self = next;
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Versioned<RangeDescriptor>> {
        self.by_start.values()
    }

    /// The ranges whose recorded owner is `node` (in any epoch).
    pub(crate) fn owned_by<'a>(
        &'a self,
        node: &'a NodeId,
    ) -> impl Iterator<Item = &'a Versioned<RangeDescriptor>> + 'a {
        self.by_start.values().filter(move |d| d.record.owner.as_ref().is_some_and(|o| &o.node_id == node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::KeyRange;
    use ampstore_common::limits::LOCATE_RANGES_MAX;

    fn desc(id: u64, start: &str, end: Option<&str>) -> Versioned<RangeDescriptor> {
        Versioned {
            version: 1,
            record: RangeDescriptor {
                range_id: RangeId(id),
                range: KeyRange::new(Key::from(start), end.map(Key::from)).unwrap(),
                generation: 1,
                owner: None,
                checkpoint: None,
            },
        }
    }

    fn three() -> RoutingTable {
        RoutingTable::load(vec![desc(2, "g", Some("p")), desc(1, "", Some("g")), desc(3, "p", None)]).unwrap()
    }

    #[test]
    fn find_and_covering() {
        let t = three();
        assert_eq!(t.find(&Key::from("a")).unwrap().record.range_id, RangeId(1));
        assert_eq!(t.find(&Key::from("g")).unwrap().record.range_id, RangeId(2));
        assert_eq!(t.find(&Key::from("f\u{ff}")).unwrap().record.range_id, RangeId(1));
        assert_eq!(t.find(&Key::from("zzz")).unwrap().record.range_id, RangeId(3));
        let ids = |v: Vec<&Versioned<RangeDescriptor>>| v.iter().map(|d| d.record.range_id.0).collect::<Vec<_>>();
        assert_eq!(ids(t.covering(&Key::from("b"), Some(&Key::from("h")), 10)), vec![1, 2]);
        assert_eq!(ids(t.covering(&Key::from("b"), Some(&Key::from("g")), 10)), vec![1], "end is exclusive");
        assert_eq!(ids(t.covering(&Key::from("h"), None, 10)), vec![2, 3]);
        assert_eq!(ids(t.covering(&Key::from(""), None, 2)), vec![1, 2]);
    }

    #[test]
    fn covering_stops_at_the_answer_limit() {
        let mut descs = vec![desc(0, "", Some("k00000"))];
        for i in 0..LOCATE_RANGES_MAX + 5 {
            let end = format!("k{:05}", i + 1);
            let last = i == LOCATE_RANGES_MAX + 4;
            descs.push(desc(i as u64 + 1, &format!("k{i:05}"), (!last).then_some(end.as_str())));
        }
        let t = RoutingTable::load(descs).unwrap();
        assert_eq!(t.covering(&Key::from(""), None, LOCATE_RANGES_MAX).len(), LOCATE_RANGES_MAX);
        assert_eq!(t.covering(&Key::from(""), None, LOCATE_RANGES_MAX + 100).len(), LOCATE_RANGES_MAX + 6);
    }

    #[test]
    fn gaps_overlaps_and_open_ends_are_refused() {
        assert_eq!(RoutingTable::load(vec![]).err(), Some(RoutingError::NoFirstRange));
        assert!(matches!(
            RoutingTable::load(vec![desc(1, "", Some("g")), desc(3, "p", None)]),
            Err(RoutingError::NotContiguous { .. })
        ));
        assert!(matches!(
            RoutingTable::load(vec![desc(1, "", Some("p")), desc(3, "g", None)]),
            Err(RoutingError::NotContiguous { .. })
        ));
        assert_eq!(RoutingTable::load(vec![desc(1, "", Some("g"))]).err(), Some(RoutingError::BoundedEnd(RangeId(1))));
        assert_eq!(RoutingTable::load(vec![desc(1, "a", None)]).err(), Some(RoutingError::NoFirstRange));
    }

    #[test]
    fn splits_and_merges_replace_descriptors_only_when_the_result_is_whole() {
        let mut t = three();
        // Split g..p at k.
        t.replace(&[Key::from("g")], vec![desc(4, "g", Some("k")), desc(5, "k", Some("p"))]).unwrap();
        let ids = |t: &RoutingTable| t.iter().map(|d| d.record.range_id.0).collect::<Vec<_>>();
        assert_eq!(ids(&t), vec![1, 4, 5, 3]);
        // Merge k..p and p..: one range from k.
        t.replace(&[Key::from("k"), Key::from("p")], vec![desc(6, "k", None)]).unwrap();
        assert_eq!(ids(&t), vec![1, 4, 6]);
        // A change that would leave a gap is refused and changes nothing.
        assert!(t.replace(&[Key::from("g")], vec![desc(7, "g", Some("h"))]).is_err());
        assert_eq!(ids(&t), vec![1, 4, 6]);
    }

    #[test]
    fn older_versions_do_not_replace_newer_ones() {
        let mut t = three();
        let mut newer = desc(2, "g", Some("p"));
        newer.version = 5;
        newer.record.generation = 9;
        t.update(newer);
        t.update(desc(2, "g", Some("p")));
        assert_eq!(t.get(&Key::from("g")).unwrap().record.generation, 9);
    }
}
