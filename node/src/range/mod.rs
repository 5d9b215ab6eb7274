//! Range actors: one per loaded range (DESIGN section 5).
//!
//! Nothing in here reaches up into the node: a range sees the node only through
//! [`host::RangeEnv`] (settings, the store, liveness, metrics) and the [`host::RangeHost`]
//! trait the node's range directory implements (routing changes, split hand-off). The
//! lifecycle is the pure [`machine::RangeMachine`]; `actor` is its actix shell, private to
//! this module: the node reaches a range only through [`handle::RangeHandle`].

mod actor;
pub mod batch;
pub mod core;
pub mod handle;
pub mod host;
pub mod inbox;
pub mod load;
pub mod machine;
pub mod memtable;
pub mod snapshot;
pub mod view;
pub mod write_ids;
