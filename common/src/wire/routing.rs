//! Routing requests: what clients and operators ask the active master.

use crate::ids::NodeId;
use crate::key::Key;
use crate::member::MemberView;
use crate::wire::protocol::RangeLocation;
use crate::wire::request;
use crate::wire::span::validate_span;

request! {
    /// Where the range holding `key` is served (`RangeLoading` while it is being placed).
    Locate { key: Key } as "locate" -> RangeLocation { Reply::Location(loc) => loc }
    // Any bound may be located, including the empty key (the start of the key space).
    validate { Ok(Key::validate_bound(key.as_bytes())?) }
}

request! {
    /// The ranges covering `[start, end)` in key order, at most `LOCATE_RANGES_MAX`.
    LocateRange { start: Key, end: Option<Key> }
    as "locate_range" -> Vec<RangeLocation> { Reply::Locations(locs) => locs }
    validate { validate_span(start, end.as_ref()) }
}

request! {
    /// Drain `node_id` (or, with `undo`, stop draining it); answers the ranges it still holds.
    Drain { node_id: NodeId, undo: bool }
    as "drain" -> u64 { Reply::Draining { ranges_left, .. } => ranges_left }
}

request! {
    /// The master's role, term and view (a standby answers too, with no active term).
    MasterStatus as "master_status" -> crate::wire::protocol::MasterStatus { Reply::Master(s) => s }
}

request! {
    /// The cluster's members as the master's gossip sees them.
    Members as "members" -> Vec<MemberView> { Reply::Members(m) => m }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::{Op, Reply};
    use crate::wire::test_util::check;

    #[test]
    fn each_request_sends_the_old_op_and_checks_its_reply() {
        let loc = RangeLocation {
            range_id: crate::RangeId(1),
            start: Key::default(),
            end: None,
            node_id: NodeId::new("n1").expect("id"),
            node_addr: "127.0.0.1:1".into(),
            lease_ms_left: 5,
        };
        let k = Key::from("k");
        assert_eq!(check(Locate { key: k.clone() }, Op::Locate { key: k.clone() }, Reply::Location(loc.clone())), loc);
        check(
            LocateRange { start: k.clone(), end: None },
            Op::LocateRange { start: k, end: None },
            Reply::Locations(vec![loc]),
        );
        let n = NodeId::new("n2").expect("id");
        let left = check(
            Drain { node_id: n.clone(), undo: true },
            Op::Drain { node_id: n.clone(), undo: true },
            Reply::Draining { node_id: n, ranges_left: 3 },
        );
        assert_eq!(left, 3);
        check(Members, Op::Members, Reply::Members(Vec::new()));
        let status = crate::wire::protocol::MasterStatus {
            master_id: NodeId::new("m").expect("id"),
            active_term: None,
            lease_holder: None,
            lease_holder_rpc: None,
            nodes: Vec::new(),
            ranges: Vec::new(),
            writes_refused_on_term: 0,
        };
        check(MasterStatus, Op::MasterStatus, Reply::Master(status));
    }
}
