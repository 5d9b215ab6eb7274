//! The vocabulary every Ampstore crate shares: identifiers, keys and ranges, limits, the wire
//! error type, the data models (lists, queue, transactions, meta records, member views), the
//! pure ownership rules and the wire (frame codec, protocol messages, one connection).
//!
//! Rules of this crate:
//! - it is the bottom of the workspace: it depends on no other Ampstore crate, and on no
//!   storage, gossip, configuration or metrics library (no rusqlite, aws, foca, figment,
//!   prometheus-client), so the client crate that depends on it alone stays small;
//! - nothing here panics on input from the network: decoding returns a typed [`Error`];
//! - every limit is a named constant in [`limits`] with a boundary test.
//!
//! See `docs/architecture.md` for how the crates fit together.

pub mod auth;
pub mod clock;
pub mod counter;
pub mod error;
pub mod expiry;
pub mod ids;
pub mod key;
pub mod limits;
pub mod lists;
pub mod member;
pub mod meta;
pub mod ownership;
pub mod queue;
pub mod txn;
pub mod value;
pub mod varint;
pub mod wire;
pub mod write_ids;

// The wire's modules keep their old paths (`common::protocol`, ...).
pub use wire::{connection, frame, protocol};

pub use error::{Error, ErrorCode};
pub use ids::{Epoch, NodeId, RangeId, RequestId, Seq, Term};
pub use key::{Key, KeyRange, Version};
