//! The custom broadcast every process gossips about itself: its role, RPC and admin
//! addresses and load, versioned so that only news spreads (foca retires a broadcast once
//! `receive_item` stops reporting it as new).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::identity::MemberId;
use ampstore_common::ids::NodeId;
use ampstore_common::protocol::Role;

/// Largest encoded member metadata (it must fit a gossip packet with room to spare).
pub const MEMBER_META_BYTES_MAX: usize = 512;

pub use ampstore_common::member::GossipLoad;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub node_id: NodeId,
    /// The identity bump this metadata belongs to.
    pub bump: u64,
    /// Grows with every publication by that identity.
    pub version: u64,
    pub role: Role,
    pub rpc_addr: String,
    pub admin_addr: String,
    pub load: GossipLoad,
    /// Set when the process is shutting down on purpose.
    pub leaving: bool,
}

impl MemberMeta {
    fn key(&self) -> MetaKey {
        MetaKey { node_id: self.node_id.clone(), bump: self.bump, version: self.version }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaKey {
    node_id: NodeId,
    bump: u64,
    version: u64,
}

impl foca::Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_id == other.node_id && (self.bump, self.version) > (other.bump, other.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("member metadata of {0} bytes is over the {MEMBER_META_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("member metadata does not decode: {0}")]
    Decode(String),
}

/// The newest metadata of every member, shared with the view.
pub type MetaTable = Arc<Mutex<HashMap<NodeId, MemberMeta>>>;

pub struct MetaHandler {
    pub table: MetaTable,
}

impl foca::BroadcastHandler<MemberId> for MetaHandler {
    type Key = MetaKey;
    type Error = MetaError;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&MemberId>) -> Result<Option<MetaKey>, MetaError> {
        if data.len() > MEMBER_META_BYTES_MAX {
            return Err(MetaError::TooLarge(data.len()));
        }
        let meta: MemberMeta = postcard::from_bytes(data).map_err(|e| MetaError::Decode(e.to_string()))?;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let newer = table.get(&meta.node_id).is_none_or(|cur| (meta.bump, meta.version) > (cur.bump, cur.version));
        if !newer {
            return Ok(None);
        }
        if table.len() >= ampstore_common::limits::GOSSIP_MEMBERS_MAX && !table.contains_key(&meta.node_id) {
            return Ok(None);
        }
        let key = meta.key();
        table.insert(meta.node_id.clone(), meta);
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};

    fn meta(bump: u64, version: u64) -> MemberMeta {
        MemberMeta {
            node_id: NodeId::new("n1").unwrap(),
            bump,
            version,
            role: Role::Node,
            rpc_addr: "127.0.0.1:7400".into(),
            admin_addr: "127.0.0.1:7401".into(),
            load: GossipLoad { resident_bytes: 1, ranges: 2, ops_per_sec: 3 },
            leaving: false,
        }
    }

    #[test]
    fn only_news_is_disseminated() {
        let mut h = MetaHandler { table: MetaTable::default() };
        assert!(h.receive_item(&meta(5, 1).encode(), None).unwrap().is_some());
        assert!(h.receive_item(&meta(5, 1).encode(), None).unwrap().is_none(), "seen already");
        assert!(h.receive_item(&meta(5, 0).encode(), None).unwrap().is_none(), "older");
        assert!(h.receive_item(&meta(5, 2).encode(), None).unwrap().is_some());
        assert!(h.receive_item(&meta(6, 0).encode(), None).unwrap().is_some(), "a restart outranks any version");
        assert_eq!(h.table.lock().unwrap()[&NodeId::new("n1").unwrap()].bump, 6);
        assert!(meta(6, 0).key().invalidates(&meta(5, 9).key()));
        assert!(!meta(5, 9).key().invalidates(&meta(6, 0).key()));
    }

    #[test]
    fn garbage_and_oversize_items_are_errors() {
        let mut h = MetaHandler { table: MetaTable::default() };
        assert!(h.receive_item(b"\xff\xff\xff", None).is_err());
        assert!(h.receive_item(&vec![0u8; MEMBER_META_BYTES_MAX + 1], None).is_err());
        assert!(meta(1, 1).encode().len() <= MEMBER_META_BYTES_MAX);
    }
}
