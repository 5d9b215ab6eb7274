//! The storage backend's settings: which backend, and each backend's own section
//! (`[backend.local]`, `[backend.aws]`). The whole configuration (loading, the other
//! sections) is `ampstore_server::config`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// SQLite file plus a blob directory: one machine, no AWS account needed.
    #[default]
    Local,
    /// DynamoDB tables plus an S3 bucket.
    Aws,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub local: LocalConfig,
    pub aws: AwsConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives a process crash, not a power loss.
    Normal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Directory of the embedded store (`store.db` and `blobs/`); default `{data_dir}/store`.
    pub dir: Option<PathBuf>,
    pub synchronous: SyncMode,
    /// How long a writer waits for another process's SQLite write lock.
    pub busy_timeout_ms: u64,
    /// The address of the store process (`ampstore store`) that alone opens the SQLite
    /// file; this process then reaches the commit log and meta over TCP (blobs stay files
    /// in `dir`). Unset: this process opens the file itself (see docs/operations.md for why
    /// several processes sharing the file is for tests only).
    pub server: Option<String>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig { dir: None, synchronous: SyncMode::Full, busy_timeout_ms: 10_000, server: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Endpoint URL for both DynamoDB and S3 (a local test server); with an endpoint, static
    /// test credentials are used. Without one, the standard AWS credential chain and endpoints.
    pub endpoint: Option<String>,
    pub region: String,
    /// Table name prefix: tables are `{prefix}-log` and `{prefix}-meta`.
    pub prefix: String,
    pub bucket: String,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig { endpoint: None, region: "us-east-1".into(), prefix: "ampstore".into(), bucket: "ampstore".into() }
    }
}
