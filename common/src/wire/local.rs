//! A node's requests served in its own process: a client that runs inside a node (the node's
//! RESP listener, `ampstore-resp`) sends what is routed to that node straight to its service
//! instead of through a socket to itself. Everything else about the call (routing, retries,
//! write ids, deadlines) stays the client's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Error;
use crate::wire::protocol::{Op, Reply};

/// What a local call answers.
pub type LocalReply = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send>>;

/// A node that serves requests in process.
pub trait LocalNode: Send + Sync {
    /// The RPC address the node serves: a route naming it is served in process.
    fn rpc_addr(&self) -> &str;
    /// Serves `op` as the node's RPC service would (validated, routed to its range).
    fn call(&self, op: Op) -> LocalReply;
}

/// A shared [`LocalNode`] (cloned with the client's configuration).
#[derive(Clone)]
pub struct Local(pub Arc<dyn LocalNode>);

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Local({})", self.0.rpc_addr())
    }
}
