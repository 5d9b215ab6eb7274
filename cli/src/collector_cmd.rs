//! `ampstore collector`: batch pushes and enqueues per range for clients, until SIGINT or
//! SIGTERM.

use clap::Args;

use crate::node_cmd::shutdown_signal;
use crate::settings::{ServeArgs, SettingsArgs};

#[derive(Args)]
pub struct CollectorArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Master RPC addresses (comma-separated); default: the masters gossip reports
    /// (collector.masters).
    #[arg(long, value_name = "ADDRS")]
    masters: Option<String>,
}

pub async fn run(settings: &SettingsArgs, args: CollectorArgs) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    if let Some(m) = args.masters {
        settings.set.push(format!("collector.masters={m}"));
    }
    let cfg = args.serve.load(&settings, "collector")?;
    ampstore_collector::run(cfg, shutdown_signal()).await?;
    Ok(())
}
