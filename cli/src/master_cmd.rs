//! `ampstore master`: run a master (active or standby) until SIGINT or SIGTERM.

use clap::Args;

use crate::node_cmd::shutdown_signal;
use crate::settings::{self, BackendArgs, SettingsArgs};

#[derive(Args)]
pub struct MasterArgs {
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

pub async fn run(settings: &SettingsArgs, args: MasterArgs) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    if let Some(rpc) = args.rpc {
        settings.set.push(format!("master.rpc_addr={rpc}"));
    }
    if let Some(admin) = args.admin {
        settings.set.push(format!("master.admin_addr={admin}"));
    }
    if let Some(gossip) = args.gossip {
        settings.set.push(format!("master.gossip_addr={gossip}"));
    }
    if let Some(seeds) = args.seeds {
        settings.set.push(format!("gossip.seeds={seeds}"));
    }
    let cfg = settings::load(&settings, &args.backend)?;
    ampstore_master::master::run(cfg, shutdown_signal()).await?;
    Ok(())
}
