//! The Ampstore node: range actors, liveness, and the RPC service.
//!
//! Rules of this crate:
//! - modules depend one way (`scripts/check-cycles`): `node` (the process) -> `service`,
//!   `admin`, `budget` -> {`txn`, `queue`, `reshape`} -> `shared` (the node's context, which
//!   holds its `Ranges`) -> `ranges` -> `directory` -> `range`, with `liveness`, `peers` and
//!   `test_points` below; a range actor sees the node only through `range::host`
//!   (`RangeEnv`, the `RangeHost` trait);
//! - the node reaches a range only through `Ranges` (which owns the directory) and the
//!   `range::handle::RangeHandle` it routes to: the actor's messages are private to `range`;
//! - it depends on `ampstore-common`, `ampstore-store` and `ampstore-server`, never on the
//!   client crate;
//! - only [`node::run`] is public: everything else is the crate's own;
//! - a request that reaches the node never panics it: bad input gets a typed error, a
//!   broken invariant stops the one range with an error.
//!
//! A put, step by step: `service::handle` validates the `Op::Put` and routes its key
//! (`Ranges::route_key`, one ordered lookup in the `directory`) to the range's
//! `RangeHandle`; `RangeHandle::write` puts the write in the range's inbox and wakes the
//! actor (one message for all the writes waiting there); the actor
//! (`range::actor`) checks the serving rule,
//! queues the write in its `RangeCore`, and appends the next batch to the commit log (one
//! append in flight: group commit); when the append lands, the core applies the batch to the
//! memtable and answers `Written { version }`.

mod admin;
mod budget;
mod directory;
mod liveness;
mod local;
pub mod node;
mod other_nodes;
mod peers;
mod queue;
mod range;
mod ranges;
mod reshape;
mod service;
mod shared;
#[cfg(test)]
mod test_alloc;
mod test_points;
mod txn;
