//! `ampstore txn`: a transaction from a JSON list of operations on stdin, its outcome as
//! JSON on stdout.
//!
//! Operations: `{"op": "require_absent", "key"}`, `{"op": "require_version", "key",
//! "version": "SEQ.INDEX"}`, `{"op": "require_value", "key", "value"}`, `{"op": "put", "key",
//! "value"}` (with `"ttl": "30s"` the key expires), `{"op": "delete", "key"}`, `{"op": "push", "key", "value"}` (to the list at key),
//! `{"op": "read", "key"}`. Values are UTF-8 strings.
//! Committed: `{"committed": true, "versions": [{"key", "version"}], "values": [{"key",
//! "value", "version"} or {"key", "value": null}]}`, exit 0. A failed condition:
//! `{"committed": false, "conflict": {"key", "reason"}}`, exit 1.

use std::io::Read;

use ampstore_client::{Error, Key, PushId, Txn, Version};
use ampstore_common::Seq;
use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::data_cmd::{ClusterArgs, client};
use crate::settings::SettingsArgs;

/// Most bytes of JSON read from stdin.
const TXN_JSON_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// The transaction did not commit (a condition failed): exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("transaction not committed: {0}")]
pub struct NotCommitted(pub String);

#[derive(Args)]
pub struct TxnArgs {}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum JsonOp {
    RequireAbsent {
        key: String,
    },
    RequireVersion {
        key: String,
        version: String,
    },
    RequireValue {
        key: String,
        value: String,
    },
    Put {
        key: String,
        value: String,
        #[serde(default)]
        ttl: Option<String>,
    },
    Delete {
        key: String,
    },
    Push {
        key: String,
        value: String,
    },
    Read {
        key: String,
    },
}

fn parse_version(s: &str) -> anyhow::Result<Version> {
    let (seq, index) = s.split_once('.').with_context(|| format!("a version is SEQ.INDEX, got {s:?}"))?;
    Ok(Version { seq: Seq(seq.parse().context("version seq")?), index: index.parse().context("version index")? })
}

/// The transaction the JSON describes.
pub fn parse(text: &str) -> anyhow::Result<Txn> {
    let ops: Vec<JsonOp> = serde_json::from_str(text).context("the transaction is not a JSON list of operations")?;
    let mut txn = Txn::new();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let client: u64 = rand::random();
    let mut n = 0u64;
    for op in ops {
        txn = match op {
            JsonOp::RequireAbsent { key } => txn.require_absent(key),
            JsonOp::RequireVersion { key, version } => txn.require_version(key, parse_version(&version)?),
            JsonOp::RequireValue { key, value } => txn.require_value(key, value.into_bytes()),
            JsonOp::Put { key, value, ttl: None } => txn.put(key, value.into_bytes()),
            JsonOp::Put { key, value, ttl: Some(ttl) } => {
                let ttl =
                    crate::data_cmd::parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("put {key:?}: ttl {ttl:?}: {e}"))?;
                txn.put_with_ttl(key, value.into_bytes(), ttl)
            }
            JsonOp::Delete { key } => txn.delete(key),
            JsonOp::Push { key, value } => {
                n += 1;
                txn.push(key, value.into_bytes(), PushId { ms: now_ms, client, n })
            }
            JsonOp::Read { key } => txn.read(key),
        };
    }
    if txn.is_empty() {
        anyhow::bail!("the transaction has no operations");
    }
    Ok(txn)
}

pub async fn run(settings: &SettingsArgs, cluster: &ClusterArgs, _args: TxnArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .take(TXN_JSON_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .context("reading the transaction from stdin")?;
    if text.len() as u64 > TXN_JSON_BYTES_MAX {
        anyhow::bail!("the transaction JSON is over {TXN_JSON_BYTES_MAX} bytes");
    }
    let txn = parse(&text)?;
    let client = client(settings, cluster).await?;
    match client.commit(txn).await {
        Ok(out) => {
            let versions: Vec<_> =
                out.versions.iter().map(|(k, v)| json!({"key": key_text(k), "version": v.to_string()})).collect();
            let values: Vec<_> = out
                .values
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => json!({"key": key_text(k), "value": String::from_utf8_lossy(&v.value), "version": v.version.to_string()}),
                    None => json!({"key": key_text(k), "value": null}),
                })
                .collect();
            println!("{}", json!({"committed": true, "versions": versions, "values": values}));
            Ok(())
        }
        Err(Error::Conflict { reason, key }) => {
            let key = key.as_ref().map(key_text);
            println!("{}", json!({"committed": false, "conflict": {"key": key, "reason": reason}}));
            Err(NotCommitted(reason).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn key_text(k: &Key) -> String {
    String::from_utf8_lossy(k.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_parses_and_bad_input_is_refused() {
        let t = parse(
            r#"[{"op":"require_absent","key":"a"},{"op":"require_version","key":"b","version":"12.3"},
                {"op":"require_value","key":"c","value":"x"},{"op":"put","key":"a","value":"1"},
                {"op":"put","key":"t","value":"2","ttl":"1m"},{"op":"delete","key":"b"},{"op":"read","key":"c"}]"#,
        )
        .unwrap();
        let expected = Txn::new()
            .require_absent("a")
            .require_version("b", Version { seq: Seq(12), index: 3 })
            .require_value("c", "x")
            .put("a", "1")
            .put_with_ttl("t", "2", std::time::Duration::from_secs(60))
            .delete("b")
            .read("c");
        assert_eq!(t, expected);
        assert!(parse("[]").is_err());
        assert!(parse(r#"[{"op":"put","key":"a"}]"#).is_err(), "missing value");
        assert!(parse(r#"[{"op":"explode","key":"a"}]"#).is_err());
        assert!(parse(r#"[{"op":"put","key":"a","value":"1","ttl":"0s"}]"#).is_err(), "a zero TTL");
        assert!(parse(r#"[{"op":"put","key":"a","value":"1","ttl":"soon"}]"#).is_err());
        assert!(parse(r#"[{"op":"require_version","key":"a","version":"x"}]"#).is_err());
        assert!(parse("{").is_err());
    }
}
