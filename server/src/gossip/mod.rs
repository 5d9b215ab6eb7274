//! SWIM membership with foca over UDP, in every process (DESIGN section 7): who is alive,
//! their role, addresses and load. Gossip is a hint (faster detection, discovery, load
//! figures), never a safety mechanism: ownership rests on leases and epochs in meta.

pub mod agent;
pub mod identity;
pub mod meta;
pub mod seal;
pub mod view;

pub use agent::{Gossip, GossipSettings, MemberEvent};
pub use meta::GossipLoad;
pub use view::{MemberState, MemberView};
