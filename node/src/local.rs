//! The node's service called in process (`ampstore_common::wire::local`): the client of the
//! node's RESP listener sends what is routed here straight to [`Service::handle`], as the RPC
//! server would after decoding a frame (the same validation, routing and serving rule).

use std::sync::Arc;

use ampstore_common::protocol::Op;
use ampstore_common::wire::local::{LocalNode, LocalReply};
use ampstore_server::rpc::Service;

use crate::shared::NodeShared;

pub struct InProcess(pub Arc<NodeShared>);

impl LocalNode for InProcess {
    fn rpc_addr(&self) -> &str {
        &self.0.rpc_addr
    }

    fn call(&self, op: Op) -> LocalReply {
        let shared = self.0.clone();
        Box::pin(async move {
            // Data operations only: the listener's client sends nothing else, and this keeps
            // it so (the RPC server checks the same for a hello's role).
            op.allowed_for(ampstore_common::protocol::Role::Client)?;
            op.validate()?;
            shared.handle(op).await
        })
    }
}
