//! The Ampstore node: range actors, liveness, and the RPC server.

pub mod admin;
pub mod budget;
pub mod directory;
pub mod ranges;
pub mod reshape;
pub mod service;
pub mod liveness;
pub mod node;
pub mod peers;
pub mod queue;
pub mod range;
pub mod shared;
pub mod test_points;
pub mod txn;
