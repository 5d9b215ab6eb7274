//! The Ampstore client (DESIGN section 8).
//!
//! [`Client`] finds the node serving a key through the masters, caches routes, keeps one
//! multiplexed connection per node ([`connection::Connection`]), and retries `NotOwner`,
//! `RangeLoading`, `NotMaster` and lost connections with bounded backoff under a per-call
//! deadline. Every write carries a write id, so a retried write is applied once.
//!
//! Rules of this crate: it depends on `ampstore-common` alone (an application server that
//! links it compiles no SQLite, AWS SDK, gossip or metrics library); every call has a
//! deadline; it talks to the cluster only through the typed requests of
//! `ampstore_common::wire`, the one `Pool` of connections and the one `ActiveMaster`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ampstore_client::Error> {
//! use ampstore_client::Client;
//! let client = Client::connect(&["127.0.0.1:7300"]).await?;
//! client.put("greeting", "hello").await?;
//! let page = client.scan("", None, 10, false).await?;
//! for item in page.items {
//!     println!("{} = {}", item.key, String::from_utf8_lossy(&item.value));
//! }
//! # Ok(()) }
//! ```

pub use ampstore_common as common;
pub use ampstore_common::protocol::{ExpireWhen, KeyTtl, RangeLocation, ScanItem, Versioned};
pub use ampstore_common::{Error, ErrorCode, Key, Version};

pub mod client;
pub mod collectors;
pub use ampstore_common::connection;
pub mod lists;
pub mod queue;
pub mod txn;

pub use ampstore_common::lists::PushId;
pub use ampstore_common::queue::{Task, TaskRef};
pub use client::{Client, ClientConfig, ScanPage, Scanner};
pub use lists::ListPage;
pub use txn::{Txn, TxnOutcome};
