//! Shared foundation of Ampstore: identifiers, keys and ranges, limits, the wire error type,
//! the frame codec and protocol envelope, configuration, the snapshot file format and the
//! storage traits with their backends (`store::local`, and `store::aws` behind feature `aws`).
//!
//! See `docs/architecture.md` for how the pieces fit together.

pub mod config;
pub mod error;
pub mod frame;
pub mod gossip;
pub mod identity;
pub mod ids;
pub mod key;
pub mod limits;
pub mod lists;
pub mod meta;
pub mod metrics;
#[cfg(any(test, feature = "test-util"))]
pub mod metrics_text;
pub mod ownership;
pub mod protocol;
pub mod queue;
pub mod rpc_server;
pub mod secrets;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod varint;
pub mod write_ids;

pub use error::{Error, ErrorCode};
pub use ids::{Epoch, NodeId, RangeId, RequestId, Seq, Term};
pub use key::{Key, KeyRange, Version};
