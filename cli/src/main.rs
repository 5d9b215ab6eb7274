//! `ampstore`: the one binary of Ampstore.
//!
//! Exit codes: 0 on success, 2 on any error (a one-line message on stderr).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod admin_http;
mod cluster_file;
mod drain_cmd;
mod init;
mod master_cmd;
mod master_link;
mod members_cmd;
mod node_cmd;
mod settings;
mod snapshot_cmd;
mod status_cmd;
mod up_cmd;

#[derive(Parser)]
#[command(
    name = "ampstore",
    version,
    about = "Ampstore: an in-memory, durably logged, range-partitioned key-value store"
)]
struct Cli {
    #[command(flatten)]
    settings: settings::SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the storage backend's tables and bucket (AWS) or files (local). Safe to run twice.
    Init(init::InitArgs),
    /// Run a node: serve ranges over the RPC port.
    Node(node_cmd::NodeArgs),
    /// Run a master: active while it holds the lease, standby otherwise.
    Master(master_cmd::MasterArgs),
    /// Move every range off a node (before a rolling restart).
    Drain(drain_cmd::DrainArgs),
    /// Show the cluster's members as gossip sees them.
    Members(members_cmd::MembersArgs),
    /// Summarize the cluster: active master, members by state, ranges.
    Status(status_cmd::StatusArgs),
    /// Work with snapshot files.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Start a local cluster (masters and nodes as child processes) until Ctrl-C.
    Up(up_cmd::UpArgs),
    /// A guided tour on a temporary local cluster (not built yet: arrives with the client crate).
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Init(args) => init::run(&cli.settings, args).await,
            Command::Node(args) => node_cmd::run(&cli.settings, args).await,
            Command::Master(args) => master_cmd::run(&cli.settings, args).await,
            Command::Drain(args) => drain_cmd::run(&cli.settings, args).await,
            Command::Members(args) => members_cmd::run(&cli.settings, args).await,
            Command::Status(args) => status_cmd::run(&cli.settings, args).await,
            Command::Snapshot(cmd) => snapshot_cmd::run(cmd),
            Command::Up(args) => up_cmd::run(&cli.settings, args).await,
            Command::Demo => Err(anyhow::anyhow!(
                "the guided tour is not built yet: it arrives with the client crate (see README, \"Status\"); `ampstore up` starts a cluster"
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    let one_line = msg.replace('\n', " ");
    eprintln!("ampstore: error: {one_line}");
    ExitCode::from(2)
}
