//! The Redis interface of an Ampstore node (DESIGN §13, `docs/redis.md`): a RESP2 and RESP3
//! listener that answers Redis commands with Ampstore's operations, so any Redis client,
//! `redis-cli` and `redis-benchmark` work against any node.
//!
//! Every command runs through the node's own [`ampstore_client::Client`], which sends it to
//! the node serving the key (this node or another: forwarding) and retries through moves
//! and failovers; multi-key commands map onto Ampstore's own operations (`MGET` ->
//! `get_many`, `MSET` -> one transaction, `MULTI`/`EXEC` with `WATCH` -> a transaction with
//! version checks).
//!
//! Rules of this crate: it depends on the client and common crates only; a connection never
//! panics on its input (a framing error is answered and closes that connection only); every
//! buffer and count is bounded by a `common::limits::RESP_*` constant.
//!
//! Modules, one way: `server` (the listener and connection loop) -> `exec` (dispatch, auth,
//! MULTI queueing) -> the command families (`connection`, `strings`, `keys`, `lists`,
//! `multi`) -> `session`, `shared`, `args`, `errors` -> `reply`, `request`, `glob`, `cursor`.

mod args;
mod connection;
mod cursor;
mod errors;
mod exec;
mod glob;
mod keys;
mod lists;
mod multi;
mod reply;
mod request;
mod server;
mod session;
mod shared;
mod strings;
mod table;

pub use server::serve;
pub use shared::{RespSettings, Shared};
