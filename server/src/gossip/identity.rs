//! A gossip member's identity: the process's node id, its gossip address and a bump.
//!
//! The bump starts at the process's start time (unix milliseconds), so a restarted process
//! always outranks its previous life, and `renew` adds one, so a process wrongly declared
//! down rejoins at once with an identity that wins.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use ampstore_common::ids::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub node_id: NodeId,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl MemberId {
    /// A fresh identity for a process starting now.
    pub fn starting_now(node_id: NodeId, addr: SocketAddr) -> MemberId {
        let bump =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
        MemberId { node_id, addr, bump }
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId { node_id: self.node_id.clone(), addr: self.addr, bump: self.bump.wrapping_add(1) })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewal_and_restarts_outrank_older_identities() {
        let addr: SocketAddr = "127.0.0.1:7402".parse().unwrap();
        let a = MemberId { node_id: NodeId::new("n1").unwrap(), addr, bump: 10 };
        let renewed = a.renew().unwrap();
        assert_eq!(renewed.bump, 11);
        assert!(renewed.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&renewed));
        let restarted = MemberId::starting_now(NodeId::new("n1").unwrap(), addr);
        assert!(restarted.win_addr_conflict(&a));
    }
}
