//! `ampstore queue enqueue|dequeue|ack|nack|extend`: the task queue from the shell.

use std::time::Duration;

use ampstore_client::TaskRef;
use clap::Subcommand;
use serde_json::json;

use crate::data_cmd::{ClusterArgs, client};
use crate::settings::SettingsArgs;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Add a task; prints its id.
    Enqueue { queue: String, payload: String },
    /// Lease up to N visible tasks for MS milliseconds; prints `ID<TAB>PAYLOAD` per task, or
    /// with --json one {"id","payload","deliveries"} per line.
    Dequeue {
        queue: String,
        #[arg(long, default_value_t = 1, value_name = "N")]
        max: u32,
        #[arg(long, default_value_t = 30_000, value_name = "MS")]
        visibility_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Remove a delivered task for good (ID as dequeue printed it).
    Ack { queue: String, id: String },
    /// Give a delivered task back: visible again at once.
    Nack { queue: String, id: String },
    /// Keep a delivered task invisible MS more milliseconds.
    Extend {
        queue: String,
        id: String,
        #[arg(long, value_name = "MS")]
        visibility_ms: u64,
    },
}

pub async fn run(settings: &SettingsArgs, cluster: &ClusterArgs, cmd: QueueCommand) -> anyhow::Result<()> {
    let client = client(settings, cluster).await?;
    match cmd {
        QueueCommand::Enqueue { queue, payload } => {
            let task = client.enqueue(&queue, payload.into_bytes()).await?;
            println!("{task}");
        }
        QueueCommand::Dequeue { queue, max, visibility_ms, json } => {
            for t in client.dequeue(&queue, max, Duration::from_millis(visibility_ms)).await? {
                let payload = String::from_utf8_lossy(&t.payload);
                if json {
                    println!("{}", json!({"id": t.task.to_string(), "payload": payload, "deliveries": t.deliveries}));
                } else {
                    println!("{}\t{payload}", t.task);
                }
            }
        }
        QueueCommand::Ack { queue, id } => {
            client.ack(&queue, id.parse::<TaskRef>()?).await?;
            println!("acked");
        }
        QueueCommand::Nack { queue, id } => {
            client.nack(&queue, id.parse::<TaskRef>()?).await?;
            println!("returned to the queue");
        }
        QueueCommand::Extend { queue, id, visibility_ms } => {
            client.extend(&queue, id.parse::<TaskRef>()?, Duration::from_millis(visibility_ms)).await?;
            println!("extended");
        }
    }
    Ok(())
}
