//! The Ampstore node: range actors, liveness, and the RPC server.

pub mod range;
