//! `ampstore resp-addr`: the Redis protocol address of every node of the local cluster
//! (from `cluster.json`), one per line, for `redis-cli -h HOST -p PORT`.

use clap::Args;

use crate::settings::{self, BackendArgs, SettingsArgs};

#[derive(Args)]
pub struct RespAddrArgs {
    /// Print only the port of the first node (`redis-cli -p "$(ampstore resp-addr --port)"`).
    #[arg(long)]
    port: bool,
}

pub fn run(settings: &SettingsArgs, args: RespAddrArgs) -> anyhow::Result<()> {
    let cfg = settings::load(settings, &BackendArgs::default())?;
    let file = crate::cluster_file::read(&cfg.data_dir)?;
    let addrs: Vec<(String, String)> =
        file.nodes.iter().filter_map(|n| Some((n.id.clone(), n.resp.clone()?))).collect();
    let Some((_, first)) = addrs.first() else {
        anyhow::bail!("no node of the cluster in {} has a RESP listener (node.resp_addr)", cfg.data_dir.display());
    };
    if args.port {
        println!("{}", first.rsplit(':').next().unwrap_or_default());
        return Ok(());
    }
    for (id, addr) in addrs {
        println!("{addr} {id}");
    }
    Ok(())
}
