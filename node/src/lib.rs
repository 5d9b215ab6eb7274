//! The Ampstore node: range actors, liveness, and the RPC server.

pub mod admin;
pub mod directory;
pub mod dispatch;
pub mod identity;
pub mod liveness;
pub mod node;
pub mod range;
pub mod server;
pub mod shared;
