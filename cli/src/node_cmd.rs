//! `ampstore node`: run a node until SIGINT or SIGTERM, then release its ranges and exit.

use clap::Args;

use crate::settings::{ServeArgs, SettingsArgs};

#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    serve: ServeArgs,
}

pub async fn run(settings: &SettingsArgs, args: NodeArgs) -> anyhow::Result<()> {
    let cfg = args.serve.load(settings, "node")?;
    ampstore_node::node::set_thread_upkeep(crate::allocator::thread_upkeep);
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
