//! `ampstore master`: run a master (active or standby) until SIGINT or SIGTERM.

use clap::Args;

use crate::node_cmd::shutdown_signal;
use crate::settings::{ServeArgs, SettingsArgs};

#[derive(Args)]
pub struct MasterArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn run(settings: &SettingsArgs, args: MasterArgs) -> anyhow::Result<()> {
    let cfg = args.serve.load(settings, "master")?;
    ampstore_master::master::run(cfg, shutdown_signal()).await?;
    Ok(())
}
