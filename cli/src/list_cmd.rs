//! `ampstore push KEY VALUE` and `ampstore list KEY [--json]`: lists at a key.

use ampstore_client::PushId;
use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::data_cmd::{ClusterArgs, client};
use crate::settings::SettingsArgs;

#[derive(Args)]
pub struct PushArgs {
    key: String,
    /// The element.
    value: String,
    /// Push with this id (48 hex digits, as `push` printed it) instead of a fresh one:
    /// pushing the same id again leaves one element (the first). An id below the list's
    /// last element is refused (lists keep the order pushes took effect).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
}

pub async fn push(settings: &SettingsArgs, cluster: &ClusterArgs, args: PushArgs) -> anyhow::Result<()> {
    let client = client(settings, cluster).await?;
    let id = match args.id {
        Some(s) => {
            let id: PushId = s.parse()?;
            client.push_with_id(args.key.as_str(), args.value.into_bytes(), id).await?;
            id
        }
        None => client.push(args.key.as_str(), args.value.into_bytes()).await?,
    };
    println!("{id}");
    Ok(())
}

#[derive(Args)]
pub struct ListArgs {
    key: String,
    /// One {"id","value"} JSON object per line (values as UTF-8, lossy) instead of values.
    #[arg(long)]
    json: bool,
    /// Stop after this many elements (default: all).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

pub async fn list(settings: &SettingsArgs, cluster: &ClusterArgs, args: ListArgs) -> anyhow::Result<()> {
    let client = client(settings, cluster).await?;
    let mut after = None;
    let mut left = args.limit.unwrap_or(usize::MAX);
    while left > 0 {
        let page = client.list(args.key.as_str(), after, left.min(1000)).await.context("reading the list")?;
        for (id, value) in &page.elements {
            let text = String::from_utf8_lossy(value);
            if args.json {
                println!("{}", json!({"id": id.to_string(), "value": text}));
            } else {
                println!("{text}");
            }
        }
        left = left.saturating_sub(page.elements.len());
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}
