//! Configuration: defaults, then a TOML file, then `AMPSTORE_*` environment variables, then
//! command-line flags (each later source overrides the earlier ones).
//!
//! Environment variables use `__` between nesting levels:
//! `AMPSTORE_BACKEND__KIND=aws`, `AMPSTORE_BACKEND__AWS__ENDPOINT=http://127.0.0.1:5000`,
//! `AMPSTORE_DATA_DIR=/var/lib/ampstore`. See `docs/operations.md` for every key.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use ampstore_common::error::Error;

pub use ampstore_store::config::{AwsConfig, BackendConfig, BackendKind, LocalConfig, SyncMode};

/// Environment prefix of every setting.
pub const ENV_PREFIX: &str = "AMPSTORE_";

/// Top-level sections that environment variables may set; other `AMPSTORE_*` variables
/// (such as the test suite's) are not configuration and are ignored.
const ENV_SECTIONS: &[&str] = &["data_dir", "backend", "node", "master", "gossip", "cluster", "collector"];

/// Settings that are lists: given as one comma-separated string in the environment or a flag.
const LIST_KEYS: &[&str] = &["gossip.seeds", "collector.masters"];

/// Whether a setting holds a number (by convention its name ends with its unit).
pub fn is_numeric_key(key: &str) -> bool {
    NUMERIC_SUFFIXES.iter().any(|s| key.ends_with(s))
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()
}

/// Suffixes of numeric setting names (units are in names).
const NUMERIC_SUFFIXES: &[&str] = &["_ms", "_bytes", "_count", "_max", "_pct", "_size", "_sec"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where a process keeps its own files (node id, keys, the embedded store by default).
    pub data_dir: PathBuf,
    pub backend: BackendConfig,
    pub node: NodeConfig,
    pub master: MasterConfig,
    pub gossip: GossipConfig,
    pub cluster: ClusterConfig,
    pub collector: CollectorConfig,
}

/// Settings of `ampstore collector` (DESIGN section 9): a process that batches pushes and
/// enqueues per range before they reach the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where clients send pushes and enqueues.
    pub rpc_addr: String,
    /// Admin HTTP (`/v1/status`, `/v1/members`, `/metrics`); port 0 picks a free one.
    pub admin_addr: String,
    /// Gossip UDP address; port 0 picks a free one.
    pub gossip_addr: String,
    /// Master RPC addresses (comma-separated); empty: the masters gossip reports.
    pub masters: Vec<String>,
    /// How long a batch for one range collects before it is sent.
    pub window_ms: u64,
    /// A batch is sent as soon as it holds this many bytes.
    pub batch_bytes_max: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            rpc_addr: "127.0.0.1:7500".into(),
            admin_addr: "127.0.0.1:7501".into(),
            gossip_addr: "127.0.0.1:7502".into(),
            masters: Vec::new(),
            window_ms: 2,
            batch_bytes_max: 256 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./ampstore-data"),
            backend: BackendConfig::default(),
            node: NodeConfig::default(),
            master: MasterConfig::default(),
            gossip: GossipConfig::default(),
            cluster: ClusterConfig::default(),
            collector: CollectorConfig::default(),
        }
    }
}

/// SWIM gossip (foca over UDP), in every process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Gossip addresses of processes to join through (any live member will do). In the
    /// environment or `--set`, a comma-separated list.
    pub seeds: Vec<String>,
    /// Expected number of processes: sizes how often updates are retransmitted.
    pub cluster_size: u64,
    /// A dead process is reported down by every member within about this long (probe
    /// period, indirect probes and the suspicion window are derived from it).
    pub suspicion_ms: u64,
    /// How often a process re-announces its role, addresses and load.
    pub refresh_ms: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        // Not lowered with node.liveness_ms: a gossip "down" keeps the master from placing
        // ranges on a node until it answers a stats poll, and a loaded 2-core machine misses
        // the short probe timeouts of a 1 s budget (62 ms round trips), so a fast budget
        // would hold up placement after a failover rather than speed it (benchmarks.md).
        GossipConfig { seeds: Vec::new(), cluster_size: 16, suspicion_ms: 5000, refresh_ms: 2000 }
    }
}

/// Cluster secrets: the RPC tokens and the gossip key. Each may be given directly or as a
/// file (which `ampstore up` writes with mode 0600); a direct value wins.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// What app servers get: a hello with role `client` must present it; it allows data
    /// operations only.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// What masters, nodes, collectors and operator commands present (every role but
    /// `client`); it allows the internal and admin operations. Required with `token`.
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    /// 32 bytes as 64 hex digits: gossip packets are sealed with XChaCha20-Poly1305 under it.
    pub gossip_key: Option<String>,
    pub gossip_key_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The cluster (data) token, if the cluster has one.
    pub fn token(&self) -> Result<Option<String>, Error> {
        token_from(&self.token, &self.token_file, "cluster token")
    }

    /// The admin token, if the cluster has one.
    pub fn admin_token(&self) -> Result<Option<String>, Error> {
        token_from(&self.admin_token, &self.admin_token_file, "admin token")
    }

    /// Both tokens, each checked; they must differ (else the data credential would open the
    /// internal operations).
    pub fn tokens(&self) -> Result<(Option<String>, Option<String>), Error> {
        let (cluster, admin) = (self.token()?, self.admin_token()?);
        if let (Some(c), Some(a)) = (&cluster, &admin)
            && c == a
        {
            return Err(Error::invalid(
                "cluster.admin_token must differ from cluster.token (app servers hold that one)",
            ));
        }
        Ok((cluster, admin))
    }

    /// The tokens a server (master, node, collector) checks hellos against and connects
    /// with. A server with a cluster token needs the admin token too: without it no master,
    /// node or collector could reach it. (An app server's CLI holds only the cluster token.)
    pub fn server_tokens(&self) -> Result<(Option<String>, Option<String>), Error> {
        match self.tokens()? {
            (Some(_), None) => Err(Error::invalid(
                "cluster.token is set but cluster.admin_token is not: masters, nodes and collectors need the \
                 admin token (ampstore up writes admin.token next to cluster.token)",
            )),
            tokens => Ok(tokens),
        }
    }

    /// The gossip key, if the cluster has one.
    pub fn gossip_key(&self) -> Result<Option<[u8; 32]>, Error> {
        let hex = match (&self.gossip_key, &self.gossip_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(path)) => read_secret(path)?,
            (None, None) => return Ok(None),
        };
        parse_key_hex(&hex).map(Some)
    }
}

fn token_from(value: &Option<String>, file: &Option<PathBuf>, what: &str) -> Result<Option<String>, Error> {
    let token = match (value, file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    if let Some(t) = &token
        && (t.is_empty() || t.len() > ampstore_common::limits::AUTH_TOKEN_BYTES_MAX)
    {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {} bytes",
            ampstore_common::limits::AUTH_TOKEN_BYTES_MAX
        )));
    }
    Ok(token)
}

fn read_secret(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read secret file {}: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// 64 hex digits to 32 bytes.
pub fn parse_key_hex(hex: &str) -> Result<[u8; 32], Error> {
    let hex = hex.trim();
    let bad = || Error::invalid("gossip key must be 64 hex digits (32 bytes)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// Settings of `ampstore master`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Where clients, tools and nodes reach the master.
    pub rpc_addr: String,
    /// Admin HTTP (`/v1/members`, `/v1/status`, `/metrics`); port 0 picks a free one.
    pub admin_addr: String,
    /// Gossip UDP address; port 0 picks a free one.
    pub gossip_addr: String,
    /// How long a standby waits, seeing the same lease nonce, before taking over.
    pub lease_ms: u64,
    /// How often the active master renews its lease (and a standby reads it).
    pub renew_ms: u64,
    /// Taken off the lease on the active master's own clock: it stops acting this long
    /// before a standby could take over.
    pub lease_margin_ms: u64,
    /// How often the active master reads node records (failure detection) and acts.
    pub poll_ms: u64,
    /// How often it asks nodes for their load.
    pub stats_ms: u64,
    /// Range moves (rebalance, drain) in progress at once.
    pub moves_in_flight_max: u64,
    /// Loads count as balanced when the most loaded node is at most this many percent above
    /// the least loaded one.
    pub balance_tolerance_pct: u64,
    /// How often balance moves are planned (drains are planned every `poll_ms`).
    pub rebalance_interval_ms: u64,
    /// Two adjacent ranges merge when their combined data is under a quarter of their
    /// nodes' split size and neither has served a request for this long (0: never merge).
    pub merge_idle_ms: u64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            rpc_addr: "127.0.0.1:7300".into(),
            admin_addr: "127.0.0.1:7301".into(),
            gossip_addr: "127.0.0.1:7302".into(),
            // Failover within 2 s (issue 16): a standby takes over about lease_ms + renew_ms
            // after the active master stops; scripts/bench-failover measures it.
            lease_ms: 1000,
            renew_ms: 200,
            lease_margin_ms: 300,
            poll_ms: 100,
            stats_ms: 1000,
            moves_in_flight_max: 2,
            balance_tolerance_pct: 10,
            rebalance_interval_ms: 250,
            merge_idle_ms: 30_000,
        }
    }
}

/// Settings of `ampstore node`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where clients and the master connect (MessagePack frames over TCP).
    pub rpc_addr: String,
    /// Admin HTTP (`/v1/status`, `/v1/ranges`, `/v1/members`, `/metrics`); port 0 picks a
    /// free one.
    pub admin_addr: String,
    /// Gossip UDP address; port 0 picks a free one.
    pub gossip_addr: String,
    /// How long a successful heartbeat keeps the node live by its own clock.
    pub liveness_ms: u64,
    /// How often the node renews its liveness record.
    pub heartbeat_ms: u64,
    /// Safety margin taken off the liveness window (clock rate differences, pauses).
    pub liveness_margin_ms: u64,
    /// A range snapshots once this many log bytes accumulated since its checkpoint.
    pub snapshot_log_bytes: u64,
    /// A range nobody used for this long is snapshotted and released.
    pub idle_release_ms: u64,
    /// Largest log entry a range writes (bounded by `LOG_ENTRY_BYTES_MAX`).
    pub batch_bytes: u64,
    /// Arbiter threads for range actors; 0 means one per core.
    pub arbiters_count: u64,
    /// Bytes of range data (keys and values) the node keeps in memory: above it, the least
    /// recently used ranges idle for `budget_idle_ms` are released, and the master places no
    /// new range here. 0: no budget.
    pub memory_budget_bytes: u64,
    /// How long a range must be unused before the memory budget may release it.
    pub budget_idle_ms: u64,
    /// A range splits at its middle key once its data exceeds this (0: no size splits).
    /// 16 MiB by default: a range's load time, and so a killed node's failover, grows with
    /// its size (a 46 MB range came back 1.4-1.5 s after its node was killed, against
    /// 1.1 s for a small one: `LOAD_KEYS=400000 scripts/bench-failover`), while fewer,
    /// larger ranges fill larger log appends (docs/benchmarks.md, "Ranges per node").
    pub split_bytes: u64,
    /// A range also splits when it takes more writes per second than this for
    /// `hot_split_ms`, while another node is registered to take a half (the master moves ranges
    /// to the least loaded nodes; alone, a node gains nothing from it); 0: never.
    pub hot_split_writes_per_sec: u64,
    pub hot_split_ms: u64,
    /// The Redis protocol (RESP2/RESP3) listener (`docs/redis.md`); port 0 picks a free one,
    /// an empty string turns it off.
    pub resp_addr: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            rpc_addr: "127.0.0.1:7400".into(),
            admin_addr: "127.0.0.1:7401".into(),
            gossip_addr: "127.0.0.1:7402".into(),
            // A killed node's ranges move about liveness_ms + poll_ms after its last
            // heartbeat. Five heartbeats per window: a healthy node loses its epoch only if
            // none of them commits for a whole second (heartbeats never wait behind appends:
            // the store's meta lane). scripts/bench-failover and bench-saturation measure it.
            liveness_ms: 1000,
            heartbeat_ms: 200,
            liveness_margin_ms: 300,
            snapshot_log_bytes: 8 * 1024 * 1024,
            idle_release_ms: 10 * 60 * 1000,
            batch_bytes: ampstore_common::limits::LOG_ENTRY_BYTES_MAX as u64,
            arbiters_count: 0,
            memory_budget_bytes: 0,
            budget_idle_ms: 30_000,
            split_bytes: 16 * 1024 * 1024,
            hot_split_writes_per_sec: 5000,
            hot_split_ms: 10_000,
            resp_addr: "127.0.0.1:7403".into(),
        }
    }
}

impl Config {
    /// Directory of the embedded store.
    pub fn local_dir(&self) -> PathBuf {
        self.backend.local.dir.clone().unwrap_or_else(|| self.data_dir.join("store"))
    }

    /// Checks values that deserialisation alone cannot.
    pub fn validate(&self) -> Result<(), Error> {
        let aws = &self.backend.aws;
        let prefix_ok = (1..=200).contains(&aws.prefix.len())
            && aws.prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !prefix_ok {
            return Err(Error::invalid(format!(
                "backend.aws.prefix {:?} must be 1 to 200 characters of [A-Za-z0-9_.-]",
                aws.prefix
            )));
        }
        let bucket_ok = (3..=63).contains(&aws.bucket.len())
            && aws.bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
            && !aws.bucket.starts_with(['-', '.'])
            && !aws.bucket.ends_with(['-', '.']);
        if !bucket_ok {
            return Err(Error::invalid(format!(
                "backend.aws.bucket {:?} must be 3 to 63 characters of [a-z0-9.-], starting and ending with a letter or digit",
                aws.bucket
            )));
        }
        if let Some(ep) = &aws.endpoint
            && !(ep.starts_with("http://") || ep.starts_with("https://"))
        {
            return Err(Error::invalid(format!("backend.aws.endpoint {ep:?} must start with http:// or https://")));
        }
        let n = &self.node;
        if n.heartbeat_ms == 0 || n.liveness_ms < 2 * n.heartbeat_ms || n.liveness_margin_ms >= n.liveness_ms {
            return Err(Error::invalid(format!(
                "node.liveness_ms ({}) must be at least twice node.heartbeat_ms ({}) and above node.liveness_margin_ms ({})",
                n.liveness_ms, n.heartbeat_ms, n.liveness_margin_ms
            )));
        }
        if n.batch_bytes == 0 || n.batch_bytes > ampstore_common::limits::LOG_ENTRY_BYTES_MAX as u64 {
            return Err(Error::invalid(format!(
                "node.batch_bytes must be 1 to {}",
                ampstore_common::limits::LOG_ENTRY_BYTES_MAX
            )));
        }
        if n.split_bytes != 0 && n.split_bytes < ampstore_common::limits::SPLIT_BYTES_MIN {
            return Err(Error::invalid(format!(
                "node.split_bytes must be 0 (no size splits) or at least {}",
                ampstore_common::limits::SPLIT_BYTES_MIN
            )));
        }
        if n.arbiters_count > ampstore_common::limits::NODE_ARBITERS_MAX {
            return Err(Error::invalid(format!(
                "node.arbiters_count must be 0 (one per core) to {}",
                ampstore_common::limits::NODE_ARBITERS_MAX
            )));
        }
        let m = &self.master;
        if m.renew_ms == 0 || m.lease_ms < 2 * m.renew_ms || m.lease_margin_ms >= m.lease_ms - m.renew_ms {
            return Err(Error::invalid(format!(
                "master.lease_ms ({}) must be at least twice master.renew_ms ({}), and master.lease_margin_ms ({}) below their difference",
                m.lease_ms, m.renew_ms, m.lease_margin_ms
            )));
        }
        let g = &self.gossip;
        if g.cluster_size == 0 || g.suspicion_ms < 500 || g.refresh_ms == 0 {
            return Err(Error::invalid(
                "gossip.cluster_size and gossip.refresh_ms must be above 0, gossip.suspicion_ms at least 500",
            ));
        }
        if g.seeds.len() > ampstore_common::limits::GOSSIP_SEEDS_MAX {
            return Err(Error::invalid(format!(
                "gossip.seeds lists more than {}",
                ampstore_common::limits::GOSSIP_SEEDS_MAX
            )));
        }
        self.cluster.tokens()?;
        self.cluster.gossip_key()?;
        if m.poll_ms == 0 || m.stats_ms == 0 || m.moves_in_flight_max == 0 {
            return Err(Error::invalid(
                "master.poll_ms, master.stats_ms and master.moves_in_flight_max must be above 0",
            ));
        }
        let c = &self.collector;
        if c.window_ms == 0 || c.window_ms > ampstore_common::limits::COLLECTOR_WINDOW_MS_MAX {
            return Err(Error::invalid(format!(
                "collector.window_ms must be 1 to {}",
                ampstore_common::limits::COLLECTOR_WINDOW_MS_MAX
            )));
        }
        if c.batch_bytes_max == 0 || c.batch_bytes_max > ampstore_common::limits::COLLECTOR_BATCH_BYTES_MAX as u64 {
            return Err(Error::invalid(format!(
                "collector.batch_bytes_max must be 1 to {}",
                ampstore_common::limits::COLLECTOR_BATCH_BYTES_MAX
            )));
        }
        if m.moves_in_flight_max > ampstore_common::limits::MASTER_MOVES_IN_FLIGHT_MAX {
            return Err(Error::invalid(format!(
                "master.moves_in_flight_max must be 1 to {}",
                ampstore_common::limits::MASTER_MOVES_IN_FLIGHT_MAX
            )));
        }
        if self.backend.local.busy_timeout_ms == 0 {
            return Err(Error::invalid("backend.local.busy_timeout_ms must be above 0"));
        }
        Ok(())
    }
}

/// Builds a [`Config`] from its sources in order of precedence.
///
/// ```
/// use ampstore_server::config::{ConfigLoader, BackendKind};
/// let cfg = ConfigLoader::new().flag("backend.kind", "aws").load().unwrap();
/// assert_eq!(cfg.backend.kind, BackendKind::Aws);
/// ```
#[derive(Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: Option<Vec<(String, String)>>,
    flags: Vec<(String, figment::value::Value)>,
}

impl ConfigLoader {
    pub fn new() -> ConfigLoader {
        ConfigLoader::default()
    }

    /// Reads this TOML file (it must exist).
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Uses these variables instead of the process environment (for tests).
    pub fn env_vars(mut self, vars: Vec<(String, String)>) -> Self {
        self.env = Some(vars);
        self
    }

    /// Sets one key (dotted path such as `backend.aws.endpoint`) from a command-line flag.
    pub fn flag(mut self, key: &str, value: impl Serialize) -> Self {
        match figment::value::Value::serialize(value) {
            Ok(v) => self.flags.push((key.to_string(), v)),
            Err(e) => tracing::warn!(key, error = %e, "flag value could not be read"),
        }
        self
    }

    pub fn load(self) -> Result<Config, Error> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &self.file {
            if !path.is_file() {
                return Err(Error::invalid(format!("config file {} does not exist", path.display())));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let vars: Vec<(String, String)> = match self.env {
            Some(v) => v,
            None => std::env::vars().collect(),
        };
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let section = key.split('.').next().unwrap_or("");
            if !ENV_SECTIONS.contains(&section) {
                continue;
            }
            // Env values stay strings (a bucket may be all digits) except for numeric fields,
            // which by convention carry their unit in the name.
            let numeric = NUMERIC_SUFFIXES.iter().any(|s| key.ends_with(s));
            let value: figment::value::Value = if LIST_KEYS.contains(&key.as_str()) {
                split_list(&value).into()
            } else {
                match value.parse::<u64>() {
                    Ok(n) if numeric => n.into(),
                    _ => value.into(),
                }
            };
            fig = fig.merge(Serialized::default(&key, value));
        }
        for (key, value) in self.flags {
            let value = match (LIST_KEYS.contains(&key.as_str()), value.as_str()) {
                (true, Some(s)) => split_list(s).into(),
                _ => value,
            };
            fig = fig.merge(Serialized::default(&key, value));
        }
        let cfg: Config = fig.extract().map_err(|e| Error::invalid(format!("configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Numbers in the environment and `--set` are recognised by the key's suffix: every
    /// numeric setting must carry one.
    #[test]
    fn every_numeric_setting_has_a_numeric_suffix() {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&path, v, out);
                    }
                }
                serde_json::Value::Number(_) => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let mut numeric = Vec::new();
        walk("", &serde_json::to_value(Config::default()).unwrap(), &mut numeric);
        assert!(numeric.len() > 20, "{numeric:?}");
        for key in numeric {
            assert!(is_numeric_key(&key), "{key} is numeric but its name has no unit suffix");
        }
    }

    #[test]
    fn defaults() {
        let cfg = ConfigLoader::new().env_vars(vec![]).load().unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.local_dir(), PathBuf::from("./ampstore-data/store"));
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "data_dir = \"/from/file\"\n[backend]\nkind = \"aws\"\n[backend.aws]\nprefix = \"file\"\nbucket = \"file-bucket\"\nregion = \"eu-west-1\""
        )
        .unwrap();
        let vars = env(&[
            ("AMPSTORE_BACKEND__AWS__PREFIX", "env"),
            ("AMPSTORE_BACKEND__AWS__BUCKET", "env-bucket"),
            ("AMPSTORE_BACKEND__LOCAL__BUSY_TIMEOUT_MS", "250"),
            ("AMPSTORE_TEST_SOMETHING", "ignored"),
            ("OTHER", "ignored"),
        ]);
        let cfg =
            ConfigLoader::new().file(f.path()).env_vars(vars).flag("backend.aws.bucket", "flag-bucket").load().unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.backend.kind, BackendKind::Aws);
        assert_eq!(cfg.backend.aws.region, "eu-west-1");
        assert_eq!(cfg.backend.aws.prefix, "env");
        assert_eq!(cfg.backend.aws.bucket, "flag-bucket");
        assert_eq!(cfg.backend.local.busy_timeout_ms, 250);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[backend]\nkidn = \"aws\"").unwrap();
        let err = ConfigLoader::new().file(f.path()).env_vars(vec![]).load().unwrap_err();
        assert!(err.to_string().contains("kidn"), "{err}");

        let err = ConfigLoader::new().env_vars(env(&[("AMPSTORE_BACKEND__KIND", "postgres")])).load().unwrap_err();
        assert!(err.to_string().contains("postgres"), "{err}");

        let err = ConfigLoader::new().env_vars(vec![]).flag("backend.aws.bucket", "UPPER").load().unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err}");

        let err = ConfigLoader::new().file("/nonexistent/ampstore.toml").env_vars(vec![]).load().unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let err =
            ConfigLoader::new().env_vars(vec![]).flag("backend.aws.endpoint", "127.0.0.1:5000").load().unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");

        let max = ampstore_common::limits::NODE_ARBITERS_MAX;
        assert!(ConfigLoader::new().env_vars(vec![]).flag("node.arbiters_count", max).load().is_ok());
        let err = ConfigLoader::new().env_vars(vec![]).flag("node.arbiters_count", max + 1).load().unwrap_err();
        assert!(err.to_string().contains("arbiters_count"), "{err}");
        let err = ConfigLoader::new().env_vars(vec![]).flag("node.heartbeat_ms", 5000).load().unwrap_err();
        assert!(err.to_string().contains("liveness_ms"), "{err}");

        let min = ampstore_common::limits::SPLIT_BYTES_MIN;
        assert!(ConfigLoader::new().env_vars(vec![]).flag("node.split_bytes", min).load().is_ok());
        assert!(ConfigLoader::new().env_vars(vec![]).flag("node.split_bytes", 0).load().is_ok());
        // Every numeric setting can come from the environment (numbers by name suffix).
        let cfg = ConfigLoader::new()
            .env_vars(env(&[
                ("AMPSTORE_NODE__HOT_SPLIT_WRITES_PER_SEC", "0"),
                ("AMPSTORE_GOSSIP__CLUSTER_SIZE", "5"),
                ("AMPSTORE_MASTER__BALANCE_TOLERANCE_PCT", "20"),
                ("AMPSTORE_MASTER__MOVES_IN_FLIGHT_MAX", "3"),
            ]))
            .load()
            .unwrap();
        assert_eq!(cfg.node.hot_split_writes_per_sec, 0);
        assert_eq!(cfg.gossip.cluster_size, 5);
        assert_eq!(cfg.master.balance_tolerance_pct, 20);
        let err = ConfigLoader::new().env_vars(vec![]).flag("node.split_bytes", min - 1).load().unwrap_err();
        assert!(err.to_string().contains("split_bytes"), "{err}");

        let max = ampstore_common::limits::MASTER_MOVES_IN_FLIGHT_MAX;
        assert!(ConfigLoader::new().env_vars(vec![]).flag("master.moves_in_flight_max", max).load().is_ok());
        let err = ConfigLoader::new().env_vars(vec![]).flag("master.moves_in_flight_max", max + 1).load().unwrap_err();
        assert!(err.to_string().contains("moves_in_flight_max"), "{err}");
        let err = ConfigLoader::new().env_vars(vec![]).flag("master.renew_ms", 3000).load().unwrap_err();
        assert!(err.to_string().contains("lease_ms"), "{err}");
        let cfg = ConfigLoader::new().env_vars(env(&[("AMPSTORE_MASTER__LEASE_MS", "9000")])).load().unwrap();
        assert_eq!(cfg.master.lease_ms, 9000);

        // Lists from the environment and from flags.
        let cfg = ConfigLoader::new()
            .env_vars(env(&[("AMPSTORE_GOSSIP__SEEDS", "127.0.0.1:1, 127.0.0.1:2")]))
            .load()
            .unwrap();
        assert_eq!(cfg.gossip.seeds, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let cfg = ConfigLoader::new().env_vars(vec![]).flag("gossip.seeds", "127.0.0.1:3").load().unwrap();
        assert_eq!(cfg.gossip.seeds, vec!["127.0.0.1:3"]);
        let many = vec!["127.0.0.1:1"; ampstore_common::limits::GOSSIP_SEEDS_MAX].join(",");
        assert!(ConfigLoader::new().env_vars(vec![]).flag("gossip.seeds", many.as_str()).load().is_ok());
        let too_many = vec!["127.0.0.1:1"; ampstore_common::limits::GOSSIP_SEEDS_MAX + 1].join(",");
        assert!(ConfigLoader::new().env_vars(vec![]).flag("gossip.seeds", too_many.as_str()).load().is_err());

        // Secrets: bad keys and tokens are refused at load.
        let err = ConfigLoader::new().env_vars(vec![]).flag("cluster.gossip_key", "abc").load().unwrap_err();
        assert!(err.to_string().contains("64 hex"), "{err}");
        let key = "0f".repeat(32);
        let cfg = ConfigLoader::new().env_vars(vec![]).flag("cluster.gossip_key", key.as_str()).load().unwrap();
        assert_eq!(cfg.cluster.gossip_key().unwrap(), Some([0x0f; 32]));
        let long = "t".repeat(ampstore_common::limits::AUTH_TOKEN_BYTES_MAX + 1);
        assert!(ConfigLoader::new().env_vars(vec![]).flag("cluster.token", long.as_str()).load().is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let cfg =
            ConfigLoader::new().env_vars(vec![]).flag("cluster.token_file", dir.path().join("token")).load().unwrap();
        assert_eq!(cfg.cluster.token().unwrap().as_deref(), Some("s3cret"));
    }

    /// The admin token is set like the cluster token (value, file, environment, flag),
    /// validated the same way, and required with it.
    #[test]
    fn admin_token_is_set_like_the_cluster_token_and_required_with_it() {
        let long = "t".repeat(ampstore_common::limits::AUTH_TOKEN_BYTES_MAX + 1);
        let err = ConfigLoader::new().env_vars(vec![]).flag("cluster.admin_token", long.as_str()).load().unwrap_err();
        assert!(err.to_string().contains("admin token"), "{err}");
        assert!(ConfigLoader::new().env_vars(vec![]).flag("cluster.admin_token", "").load().is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin"), "ops\n").unwrap();
        let cfg = ConfigLoader::new()
            .env_vars(vec![])
            .flag("cluster.token", "app")
            .flag("cluster.admin_token_file", dir.path().join("admin"))
            .load()
            .unwrap();
        assert_eq!(cfg.cluster.tokens().unwrap(), (Some("app".into()), Some("ops".into())));
        let cfg = ConfigLoader::new()
            .env_vars(env(&[("AMPSTORE_CLUSTER__ADMIN_TOKEN", "ops"), ("AMPSTORE_CLUSTER__TOKEN", "app")]))
            .load()
            .unwrap();
        assert_eq!(cfg.cluster.admin_token().unwrap().as_deref(), Some("ops"));
        // A cluster token alone is an app server's configuration, not a server's: there
        // would be no credential for the internal processes.
        let app = ConfigLoader::new().env_vars(vec![]).flag("cluster.token", "app").load().unwrap();
        assert_eq!(app.cluster.tokens().unwrap(), (Some("app".into()), None));
        let err = app.cluster.server_tokens().unwrap_err();
        assert!(err.to_string().contains("admin_token"), "{err}");
        let err = ConfigLoader::new()
            .env_vars(vec![])
            .flag("cluster.token", "same")
            .flag("cluster.admin_token", "same")
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
        // An admin token alone is fine: open data plane, closed control plane.
        let cfg = ConfigLoader::new().env_vars(vec![]).flag("cluster.admin_token", "ops").load().unwrap();
        assert_eq!(cfg.cluster.server_tokens().unwrap(), (None, Some("ops".into())));
    }
}

#[cfg(test)]
mod collector_tests {
    use super::*;

    #[test]
    fn collector_settings_hold_their_limits_and_lists_split() {
        let load = |k: &str, v: u64| ConfigLoader::new().env_vars(vec![]).flag(k, v).load();
        let window = ampstore_common::limits::COLLECTOR_WINDOW_MS_MAX;
        assert!(load("collector.window_ms", window).is_ok());
        assert!(load("collector.window_ms", window + 1).is_err());
        assert!(load("collector.window_ms", 0).is_err());
        let bytes = ampstore_common::limits::COLLECTOR_BATCH_BYTES_MAX as u64;
        assert!(load("collector.batch_bytes_max", bytes).is_ok());
        assert!(load("collector.batch_bytes_max", bytes + 1).is_err());
        let cfg = ConfigLoader::new()
            .env_vars(vec![("AMPSTORE_COLLECTOR__MASTERS".to_string(), "127.0.0.1:1,127.0.0.1:2".to_string())])
            .load()
            .unwrap();
        assert_eq!(cfg.collector.masters, vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()]);
    }
}
