//! `ampstore drain NODE_ID`: move every range off a node (for a rolling restart), showing
//! progress until it holds none. `--undo` stops a drain.

use std::time::{Duration, Instant};

use ampstore_common::NodeId;
use ampstore_common::wire::routing::Drain;
use clap::Args;

use crate::master_link::{call_master, master_addrs, operator_credential};
use crate::settings::{self, BackendArgs, SettingsArgs};

#[derive(Args)]
pub struct DrainArgs {
    /// The node to drain.
    node_id: String,
    /// Master RPC address (repeatable or comma-separated); default: the lease holder
    /// recorded in the configured backend.
    #[arg(long, value_name = "ADDR")]
    master: Vec<String>,
    /// Stop draining the node (ranges may be placed on it again).
    #[arg(long)]
    undo: bool,
    /// Return once the drain is recorded instead of waiting for the node to be empty.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn run(settings: &SettingsArgs, args: DrainArgs) -> anyhow::Result<()> {
    let node_id = NodeId::new(&args.node_id).map_err(|e| anyhow::anyhow!("node id {:?}: {e}", args.node_id))?;
    let cfg = settings::load(settings, &args.backend)?;
    let addrs = master_addrs(&args.master, &cfg).await?;
    let credential = operator_credential(&cfg)?;
    let req = Drain { node_id: node_id.clone(), undo: args.undo };
    let ranges_left = call_master(&addrs, credential.clone(), req.clone()).await?;
    if args.undo {
        println!("{node_id}: drain stopped");
        return Ok(());
    }
    if args.no_wait || ranges_left == 0 {
        println!("{node_id}: draining, {ranges_left} ranges left");
        return Ok(());
    }
    let total = ranges_left;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("draining {msg} [{bar:30}] {pos}/{len} ranges moved ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(node_id.to_string());
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ranges_left = call_master(&addrs, credential.clone(), req.clone()).await?;
        bar.set_position(total.saturating_sub(ranges_left));
        if ranges_left == 0 {
            bar.finish_and_clear();
            println!("{node_id}: drained ({total} ranges moved in {:.1} s)", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(args.timeout) {
            bar.abandon();
            anyhow::bail!("{node_id} still holds {ranges_left} ranges after {} s", args.timeout);
        }
    }
}
