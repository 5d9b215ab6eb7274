//! A cluster member as the ops view shows it (`/v1/members`, `ampstore members`, the
//! `Members` reply): its state, since when, and the load it gossiped.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// What kind of process a peer is. In a hello it also says which credential the peer
/// presents: `Client` the cluster token, every other role the admin token (DESIGN §4,
/// "Authorization"); [`Op::allowed_for`] says which operations each role may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Node,
    Collector,
    Client,
    /// An operator's command (`ampstore drain`, `status`, tools): never gossips.
    Admin,
}

impl Role {
    /// The role's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Node => "node",
            Role::Collector => "collector",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// True for the roles that must present the admin token (every role but `Client`).
    pub fn needs_admin_token(self) -> bool {
        self != Role::Client
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Load figures a process reports (the master uses them for placement hints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipLoad {
    pub resident_bytes: u64,
    pub ranges: u64,
    pub ops_per_sec: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
    /// Down after announcing it was leaving (a graceful shutdown).
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }

    pub const ALL: [MemberState; 4] = [MemberState::Alive, MemberState::Suspect, MemberState::Down, MemberState::Left];
}

/// One member as `/v1/members` and `ampstore members` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: NodeId,
    pub role: Option<Role>,
    pub gossip: SocketAddr,
    pub rpc: Option<String>,
    pub admin: Option<String>,
    pub state: MemberState,
    pub bump: u64,
    /// When this member entered its state, as this process saw it (unix ms).
    pub since_unix_ms: u64,
    pub load: Option<GossipLoad>,
}
