//! Flags shared by every command, turned into a [`Config`] with the precedence
//! defaults < config file < `AMPSTORE_*` environment < flags.

use ampstore_server::config::{BackendKind, Config, ConfigLoader, is_numeric_key};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Local,
    Aws,
}

#[derive(Args, Clone, Default)]
pub struct SettingsArgs {
    /// A TOML config file (see docs/operations.md).
    #[arg(long, global = true, env = "AMPSTORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./ampstore-data).
    #[arg(long = "data", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Set any config key, e.g. `--set node.liveness_ms=3000` (repeatable; beats the file
    /// and the environment).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Backend flags, for the commands that take them.
#[derive(Args, Clone, Default)]
pub struct BackendArgs {
    /// Storage backend: local (SQLite file and blob directory) or aws (DynamoDB and S3).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Endpoint URL of a DynamoDB/S3-compatible server (uses static test credentials).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// DynamoDB table name prefix (tables PREFIX-log and PREFIX-meta).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// S3 bucket for snapshots.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// AWS region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

pub fn load(settings: &SettingsArgs, backend: &BackendArgs) -> anyhow::Result<Config> {
    let mut loader = ConfigLoader::new();
    if let Some(file) = &settings.config {
        loader = loader.file(file);
    }
    if let Some(dir) = &settings.data_dir {
        loader = loader.flag("data_dir", dir);
    }
    if let Some(kind) = backend.backend {
        loader = loader.flag(
            "backend.kind",
            match kind {
                BackendArg::Local => BackendKind::Local,
                BackendArg::Aws => BackendKind::Aws,
            },
        );
    }
    for (key, value) in [
        ("backend.aws.endpoint", &backend.endpoint),
        ("backend.aws.prefix", &backend.prefix),
        ("backend.aws.bucket", &backend.bucket),
        ("backend.aws.region", &backend.region),
    ] {
        if let Some(v) = value {
            loader = loader.flag(key, v);
        }
    }
    for kv in &settings.set {
        let Some((key, value)) = kv.split_once('=') else {
            anyhow::bail!("--set takes KEY=VALUE, got {kv:?}");
        };
        // Numbers only for numeric settings: a token or key may be all digits.
        loader = match value.parse::<u64>() {
            Ok(n) if is_numeric_key(key.trim()) => loader.flag(key.trim(), n),
            _ => loader.flag(key.trim(), value),
        };
    }
    let mut cfg = loader.load()?;
    // The secrets `ampstore up` keeps in its data directory apply unless set otherwise.
    // On an app server the directory holds only `cluster.token`; `admin.token` is there only
    // where the cluster's own processes and operators run.
    let found = ampstore_server::secrets::find(&cfg.data_dir);
    if cfg.cluster.token.is_none() && cfg.cluster.token_file.is_none() {
        cfg.cluster.token_file = found.token;
    }
    if cfg.cluster.admin_token.is_none() && cfg.cluster.admin_token_file.is_none() {
        cfg.cluster.admin_token_file = found.admin_token;
    }
    if cfg.cluster.gossip_key.is_none() && cfg.cluster.gossip_key_file.is_none() {
        cfg.cluster.gossip_key_file = found.gossip_key;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The listening addresses of a server process (`node`, `master`), given as flags.
#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// Address for the RPC port (port 0 picks a free one; the ready line says which).
    #[arg(long, value_name = "ADDR")]
    pub rpc: Option<String>,
    /// Address for the admin HTTP port (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Address for gossip (UDP; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub gossip: Option<String>,
    /// Gossip addresses to join through (comma-separated).
    #[arg(long, value_name = "ADDRS")]
    pub seeds: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl ServeArgs {
    /// The configuration of a process whose addresses live in config section `section`.
    pub fn load(&self, settings: &SettingsArgs, section: &str) -> anyhow::Result<Config> {
        let mut settings = settings.clone();
        for (key, value) in [("rpc_addr", &self.rpc), ("admin_addr", &self.admin), ("gossip_addr", &self.gossip)] {
            if let Some(v) = value {
                settings.set.push(format!("{section}.{key}={v}"));
            }
        }
        if let Some(seeds) = &self.seeds {
            settings.set.push(format!("gossip.seeds={seeds}"));
        }
        load(&settings, &self.backend)
    }
}
