//! `ampstore node`: run a node until SIGINT or SIGTERM, then release its ranges and exit.

use clap::Args;

use crate::settings::{self, BackendArgs, SettingsArgs};

#[derive(Args)]
pub struct NodeArgs {
    /// Address for the RPC port (port 0 picks a free one; the ready line says which).
    #[arg(long, value_name = "ADDR")]
    rpc: Option<String>,
    /// Address for the admin HTTP port (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Address for gossip (UDP; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    gossip: Option<String>,
    /// Gossip addresses to join through (comma-separated).
    #[arg(long, value_name = "ADDRS")]
    seeds: Option<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn run(settings: &SettingsArgs, args: NodeArgs) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    if let Some(rpc) = args.rpc {
        settings.set.push(format!("node.rpc_addr={rpc}"));
    }
    if let Some(admin) = args.admin {
        settings.set.push(format!("node.admin_addr={admin}"));
    }
    if let Some(gossip) = args.gossip {
        settings.set.push(format!("node.gossip_addr={gossip}"));
    }
    if let Some(seeds) = args.seeds {
        settings.set.push(format!("gossip.seeds={seeds}"));
    }
    let cfg = settings::load(&settings, &args.backend)?;
    ampstore_node::node::run(cfg, shutdown_signal()).await?;
    Ok(())
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
