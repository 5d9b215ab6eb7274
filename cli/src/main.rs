//! `ampstore`: the one binary of Ampstore.
//!
//! Exit codes: 0 on success, 1 when `get` finds no key, 2 on any error (a one-line message
//! on stderr).
//!
//! Rules of this crate: it is the top of the workspace (it may use every crate); each
//! command is a thin layer over a library crate (`*_cmd.rs` parses and prints, the work is
//! in node, master, collector, store or the client); operator commands that change the
//! cluster (drain, assign, split) go to the active master or the node with the admin token.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod admin_http;
mod allocator;
mod bench_cmd;
mod chaos_cmd;
mod cluster_file;
mod collector_cmd;
mod data_cmd;
mod demo_cmd;
mod drain_cmd;
mod init;
mod list_cmd;
mod master_cmd;
mod master_link;
mod members_cmd;
mod node_cmd;
mod queue_cmd;
mod resp_addr_cmd;
mod settings;
mod snapshot_cmd;
mod status_cmd;
mod store_cmd;
mod txn_cmd;
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
    #[command(flatten)]
    cluster: data_cmd::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the value at KEY (exit 1 when there is none).
    Get(data_cmd::GetArgs),
    /// Write VALUE at KEY (`-` reads the value from stdin).
    Put(data_cmd::PutArgs),
    /// Delete KEY.
    Delete(data_cmd::DeleteArgs),
    /// Make KEY expire after TTL (`30s`, `5m`; --nx, --xx, --gt, --lt as Redis's EXPIRE);
    /// exit 1 when nothing changed.
    Expire(data_cmd::ExpireArgs),
    /// Remove KEY's expiry; exit 1 when it had none.
    Persist(data_cmd::PersistArgs),
    /// Print how long KEY has to live ("no expiry"; exit 1 when there is no such key).
    Ttl(data_cmd::TtlArgs),
    /// Add BY (default 1) to the integer at KEY (absent: 0); print the new value.
    Incr(data_cmd::IncrArgs),
    /// Subtract BY (default 1) from the integer at KEY (absent: 0); print the new value.
    Decr(data_cmd::IncrArgs),
    /// Append VALUE to the list at KEY; prints the push id.
    Push(list_cmd::PushArgs),
    /// Print the elements of the list at KEY in order.
    List(list_cmd::ListArgs),
    /// The task queue: enqueue, dequeue (lease), ack, nack, extend.
    #[command(subcommand)]
    Queue(queue_cmd::QueueCommand),
    /// Run a transaction: a JSON list of operations on stdin, the outcome as JSON (exit 1 if
    /// a condition failed).
    Txn(txn_cmd::TxnArgs),
    /// Print the keys in [START, END) in order (END "" = no upper bound).
    Scan(data_cmd::ScanArgs),
    /// Write every {"key","value"} line of a JSON-lines file, with a progress bar.
    Import(data_cmd::ImportArgs),
    /// Where KEY lives: range, node, address, lease time left.
    Locate(data_cmd::LocateArgs),
    /// Every range: bounds, generation, owner, size, log length.
    Ranges(data_cmd::RangesArgs),
    /// Measure throughput and latency against a running cluster.
    Bench(bench_cmd::BenchArgs),
    /// Create the storage backend's tables and bucket (AWS) or files (local). Safe to run twice.
    Init(init::InitArgs),
    /// Run a node: serve ranges over the RPC port.
    Node(node_cmd::NodeArgs),
    /// Run a collector: batch clients' pushes and enqueues per range.
    Collector(collector_cmd::CollectorArgs),
    /// Run a master: active while it holds the lease, standby otherwise.
    Master(master_cmd::MasterArgs),
    /// Run the embedded store's process: the one process that opens its SQLite file, for
    /// masters, nodes and collectors set to `backend.local.server`.
    Store(store_cmd::StoreArgs),
    /// Move every range off a node (before a rolling restart).
    Drain(drain_cmd::DrainArgs),
    /// Show the cluster's members as gossip sees them.
    Members(members_cmd::MembersArgs),
    /// Summarize the cluster: active master, members by state, ranges.
    Status(status_cmd::StatusArgs),
    /// Print each node's Redis protocol (RESP) address of the local cluster.
    RespAddr(resp_addr_cmd::RespAddrArgs),
    /// Work with snapshot files.
    #[command(subcommand)]
    Snapshot(snapshot_cmd::SnapshotCommand),
    /// Start a local cluster (masters and nodes as child processes) until Ctrl-C.
    Up(up_cmd::UpArgs),
    /// A guided tour on a temporary local cluster: writes, reads, scans, a node killed.
    Demo,
    /// Fault-test a local cluster under checked workloads (kill, pause, partition,
    /// master failover, splits); exit 1 on a violation. `--replay FILE` checks a history.
    Chaos(chaos_cmd::ChaosArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt =
        match tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_park(allocator::thread_upkeep).build()
        {
            Ok(rt) => rt,
            Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
        };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Get(args) => data_cmd::get(&cli.settings, &cli.cluster, args).await,
            Command::Put(args) => data_cmd::put(&cli.settings, &cli.cluster, args).await,
            Command::Delete(args) => data_cmd::delete(&cli.settings, &cli.cluster, args).await,
            Command::Expire(args) => data_cmd::expire(&cli.settings, &cli.cluster, args).await,
            Command::Persist(args) => data_cmd::persist(&cli.settings, &cli.cluster, args).await,
            Command::Ttl(args) => data_cmd::ttl(&cli.settings, &cli.cluster, args).await,
            Command::Incr(args) => data_cmd::incr(&cli.settings, &cli.cluster, args).await,
            Command::Decr(args) => data_cmd::decr(&cli.settings, &cli.cluster, args).await,
            Command::Push(args) => list_cmd::push(&cli.settings, &cli.cluster, args).await,
            Command::List(args) => list_cmd::list(&cli.settings, &cli.cluster, args).await,
            Command::Txn(args) => txn_cmd::run(&cli.settings, &cli.cluster, args).await,
            Command::Queue(cmd) => queue_cmd::run(&cli.settings, &cli.cluster, cmd).await,
            Command::Scan(args) => data_cmd::scan(&cli.settings, &cli.cluster, args).await,
            Command::Import(args) => data_cmd::import(&cli.settings, &cli.cluster, args).await,
            Command::Locate(args) => data_cmd::locate(&cli.settings, &cli.cluster, args).await,
            Command::Ranges(args) => data_cmd::ranges(&cli.settings, &cli.cluster, args).await,
            Command::Bench(args) => bench_cmd::run(&cli.settings, &cli.cluster, args).await,
            Command::Init(args) => init::run(&cli.settings, args).await,
            Command::Node(args) => node_cmd::run(&cli.settings, args).await,
            Command::Master(args) => master_cmd::run(&cli.settings, args).await,
            Command::Collector(args) => collector_cmd::run(&cli.settings, args).await,
            Command::Store(args) => store_cmd::run(&cli.settings, args).await,
            Command::Drain(args) => drain_cmd::run(&cli.settings, args).await,
            Command::Members(args) => members_cmd::run(&cli.settings, args).await,
            Command::Status(args) => status_cmd::run(&cli.settings, args).await,
            Command::RespAddr(args) => resp_addr_cmd::run(&cli.settings, args),
            Command::Snapshot(cmd) => snapshot_cmd::run(cmd),
            Command::Up(args) => up_cmd::run(&cli.settings, args).await,
            Command::Demo => demo_cmd::run().await,
            Command::Chaos(args) => chaos_cmd::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<data_cmd::KeyNotFound>().is_some()
                || e.downcast_ref::<data_cmd::NotChanged>().is_some()
                || e.downcast_ref::<txn_cmd::NotCommitted>().is_some()
                || e.downcast_ref::<chaos_cmd::Violation>().is_some() =>
        {
            eprintln!("ampstore: {e}");
            ExitCode::from(1)
        }
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    let one_line = msg.replace('\n', " ");
    eprintln!("ampstore: error: {one_line}");
    ExitCode::from(2)
}
