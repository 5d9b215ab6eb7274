//! `ampstore node`: run a node until SIGINT or SIGTERM, then release its ranges and exit.
//! The node also serves the Redis protocol on `node.resp_addr` (`ampstore_resp`, through
//! the node's own client: any key, forwarded to its owner).

use std::sync::Arc;
use std::time::Duration;

use ampstore_client::{Client, ClientConfig};
use ampstore_common::protocol::Role;
use ampstore_resp::{RespSettings, Shared};
use clap::Args;

use crate::settings::{ServeArgs, SettingsArgs};

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn run(settings: &SettingsArgs, args: NodeArgs) -> anyhow::Result<()> {
    let mut cfg = args.serve.load(settings, "node")?;
    ampstore_node::node::set_thread_upkeep(crate::allocator::thread_upkeep);
    // Bound before the node prints its ready line, which names the address it got.
    let resp_listener = if cfg.node.resp_addr.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&cfg.node.resp_addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the RESP listener on {}: {e}", cfg.node.resp_addr))?;
        cfg.node.resp_addr = listener.local_addr()?.to_string();
        Some(listener)
    };
    let (cluster_token, admin_token) = cfg.cluster.server_tokens()?;
    let resp_addr = cfg.node.resp_addr.clone();
    let mut resp_task = None;
    let on_serving = |serving: ampstore_node::node::Serving| {
        if let Some(listener) = resp_listener {
            let settings = RespSettings { cluster_token, admin_token, server_id: serving.node_id, addr: resp_addr };
            resp_task = Some(tokio::spawn(serve_resp(listener, settings, serving.masters, serving.local)));
        }
    };
    let result = ampstore_node::node::run_with(cfg, shutdown_signal(), on_serving).await;
    if let Some(task) = resp_task {
        task.abort();
    }
    result?;
    Ok(())
}

/// How long the RESP listener waits for gossip to name a master before it tries again.
const MASTERS_POLL: Duration = Duration::from_millis(100);

/// Finds the masters through gossip, connects the node's own client (the node's role and the
/// admin credential: the listener checks each connection's `AUTH` itself; requests for the
/// node's own ranges served in process) and serves RESP.
async fn serve_resp(
    listener: tokio::net::TcpListener,
    settings: RespSettings,
    masters: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    local: ampstore_common::wire::local::Local,
) {
    let client = loop {
        let found = masters();
        if !found.is_empty() {
            let mut client_cfg = ClientConfig::new(&found);
            client_cfg.role = Role::Node;
            client_cfg.token = settings.admin_token.clone();
            client_cfg.name = format!("resp {}", settings.server_id);
            // The keys this node serves skip the socket (the node's fast path).
            client_cfg.local = Some(local.clone());
            match Client::with_config(client_cfg).await {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "the RESP listener's client cannot connect yet"),
            }
        }
        tokio::time::sleep(MASTERS_POLL).await;
    };
    tracing::info!(addr = %settings.addr, "serving the Redis protocol");
    ampstore_resp::serve(listener, Arc::new(Shared::new(client, settings))).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
