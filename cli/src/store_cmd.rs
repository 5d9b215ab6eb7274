//! `ampstore store`: the one process that opens the embedded store's SQLite file, serving
//! its commit log and meta to masters, nodes and collectors configured with
//! `backend.local.server` (see `ampstore_store::remote` for why). Runs until SIGINT
//! or SIGTERM.

use anyhow::Context;
use clap::Args;

use crate::node_cmd::shutdown_signal;
use crate::settings::{BackendArgs, SettingsArgs};

/// The store's listen address when `--listen` is not given.
pub const STORE_LISTEN_DEFAULT: &str = "127.0.0.1:7390";

#[derive(Args)]
pub struct StoreArgs {
    /// Address to listen on (port 0 picks a free one; the ready line says which).
    #[arg(long, value_name = "ADDR", default_value = STORE_LISTEN_DEFAULT)]
    listen: String,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn run(settings: &SettingsArgs, args: StoreArgs) -> anyhow::Result<()> {
    let mut cfg = crate::settings::load(settings, &args.backend)?;
    if cfg.backend.kind != ampstore_server::config::BackendKind::Local {
        anyhow::bail!(
            "ampstore store serves the embedded (local) backend only; with --backend aws, point every process at DynamoDB and S3 directly"
        );
    }
    if cfg.backend.local.server.take().is_some() {
        tracing::info!("ignoring backend.local.server: this process is the store");
    }
    let dir = cfg.local_dir();
    let store = ampstore_store::local::LocalStore::open(&dir, &cfg.backend.local)?;
    let (_, admin_token) = cfg.cluster.tokens()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the store", args.listen))?;
    let addr = listener.local_addr()?;
    println!("ampstore store ready: listen {addr} dir {}", dir.display());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(ampstore_store::remote::serve(listener, store.backend(), admin_token, stop_rx));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}
