//! `ampstore snapshot verify FILE`: check a snapshot file and summarise it.

use ampstore_store::snapshot::Snapshot;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Verify every checksum of a snapshot file and print what it holds.
    Verify {
        file: PathBuf,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Verify { file, json } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let snap = Snapshot::decode(&bytes).with_context(|| format!("{}", file.display()))?;
            let root: String = snap.merkle_root.iter().map(|b| format!("{b:02x}")).collect();
            let value_bytes: usize = snap.entries.iter().map(|e| e.key.len() + e.value.len()).sum();
            if json {
                let obj = serde_json::json!({
                    "file": file.display().to_string(),
                    "range_id": snap.header.range_id.0,
                    "range": snap.header.range.to_string(),
                    "seq": snap.header.seq.0,
                    "created_unix_ms": snap.header.created_unix_ms,
                    "entries": snap.entries.len(),
                    "data_bytes": value_bytes,
                    "file_bytes": bytes.len(),
                    "merkle_root": root,
                });
                println!("{obj}");
            } else {
                println!("{}: ok", file.display());
                println!("  range     {} {}", snap.header.range_id, snap.header.range);
                println!("  seq       {}", snap.header.seq);
                println!(
                    "  entries   {} ({} bytes of keys and values, {} bytes on file)",
                    snap.entries.len(),
                    value_bytes,
                    bytes.len()
                );
                println!("  merkle    {root}");
            }
            Ok(())
        }
    }
}
