//! The member list as the ops view shows it: one entry per node id (the newest identity
//! wins, so a restarted process never shows twice), with its state, since when, and the
//! metadata it gossiped.

use std::collections::BTreeMap;

use ampstore_common::ids::NodeId;
pub use ampstore_common::member::{GossipLoad, MemberState, MemberView};

use super::identity::MemberId;
use super::meta::MemberMeta;

#[derive(Default)]
pub struct MembersView {
    by_id: BTreeMap<NodeId, MemberView>,
}

impl MembersView {
    /// Rebuilds the view from foca's membership (including `me`, always alive) and the
    /// metadata table, keeping `since` for members whose identity and state did not change.
    pub fn refresh<'a>(
        &mut self,
        now_unix_ms: u64,
        me: &MemberId,
        members: impl Iterator<Item = (&'a MemberId, foca::State)>,
        metas: &std::collections::HashMap<NodeId, MemberMeta>,
    ) {
        let mut next: BTreeMap<NodeId, (MemberId, MemberState)> = BTreeMap::new();
        let all = members.map(|(id, s)| (id.clone(), s)).chain(std::iter::once((me.clone(), foca::State::Alive)));
        for (id, state) in all {
            let meta = metas.get(&id.node_id).filter(|m| m.bump == id.bump);
            let state = match state {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down if meta.is_some_and(|m| m.leaving) => MemberState::Left,
                foca::State::Down => MemberState::Down,
            };
            match next.get(&id.node_id) {
                Some((cur, _)) if cur.bump >= id.bump => {}
                _ => {
                    next.insert(id.node_id.clone(), (id, state));
                }
            }
        }
        let mut by_id = BTreeMap::new();
        for (node_id, (id, state)) in next {
            let meta = metas.get(&node_id).filter(|m| m.bump == id.bump);
            let since = match self.by_id.get(&node_id) {
                Some(prev) if prev.bump == id.bump && prev.state == state => prev.since_unix_ms,
                _ => now_unix_ms,
            };
            by_id.insert(
                node_id.clone(),
                MemberView {
                    id: node_id,
                    role: meta.map(|m| m.role),
                    gossip: id.addr,
                    rpc: meta.map(|m| m.rpc_addr.clone()),
                    admin: meta.map(|m| m.admin_addr.clone()),
                    state,
                    bump: id.bump,
                    since_unix_ms: since,
                    load: meta.map(|m| m.load),
                },
            );
        }
        self.by_id = by_id;
    }

    pub fn members(&self) -> Vec<MemberView> {
        self.by_id.values().cloned().collect()
    }

    pub fn count(&self, state: MemberState) -> usize {
        self.by_id.values().filter(|m| m.state == state).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::protocol::Role;
    use std::collections::HashMap;

    fn id(node: &str, port: u16, bump: u64) -> MemberId {
        MemberId { node_id: NodeId::new(node).unwrap(), addr: format!("127.0.0.1:{port}").parse().unwrap(), bump }
    }

    #[test]
    fn a_restarted_member_shows_once_with_its_newest_identity() {
        let me = id("m", 1, 1);
        let (old, new) = (id("n1", 2, 10), id("n1", 3, 20));
        let mut v = MembersView::default();
        let members = [(old.clone(), foca::State::Down), (new.clone(), foca::State::Alive)];
        v.refresh(100, &me, members.iter().map(|(i, s)| (i, *s)), &HashMap::new());
        let list = v.members();
        assert_eq!(list.len(), 2);
        let n1 = list.iter().find(|m| m.id.as_str() == "n1").unwrap();
        assert_eq!((n1.bump, n1.state, n1.gossip.port()), (20, MemberState::Alive, 3));
        assert_eq!(v.count(MemberState::Alive), 2);
    }

    #[test]
    fn since_moves_only_on_change_and_leaving_members_are_left() {
        let me = id("m", 1, 1);
        let n1 = id("n1", 2, 10);
        let mut metas = HashMap::new();
        let mut v = MembersView::default();
        v.refresh(100, &me, [(&n1, foca::State::Alive)].into_iter(), &metas);
        v.refresh(200, &me, [(&n1, foca::State::Alive)].into_iter(), &metas);
        let get = |v: &MembersView| v.members().into_iter().find(|m| m.id.as_str() == "n1").unwrap();
        assert_eq!(get(&v).since_unix_ms, 100);
        assert_eq!(get(&v).role, None, "no metadata yet");
        v.refresh(300, &me, [(&n1, foca::State::Suspect)].into_iter(), &metas);
        assert_eq!((get(&v).state, get(&v).since_unix_ms), (MemberState::Suspect, 300));
        metas.insert(
            n1.node_id.clone(),
            MemberMeta {
                node_id: n1.node_id.clone(),
                bump: 10,
                version: 3,
                role: Role::Node,
                rpc_addr: "r".into(),
                admin_addr: "a".into(),
                load: GossipLoad::default(),
                leaving: true,
            },
        );
        v.refresh(400, &me, [(&n1, foca::State::Down)].into_iter(), &metas);
        assert_eq!(get(&v).state, MemberState::Left);
        assert_eq!(get(&v).role, Some(Role::Node));
    }
}
