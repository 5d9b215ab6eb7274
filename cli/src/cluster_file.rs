//! `DIR/cluster.json`: the processes of a local cluster started by `ampstore up`, and where
//! the ops commands look for admin ports when no `--admin ADDR` is given.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::settings::{self, BackendArgs, SettingsArgs};

pub const FILE_NAME: &str = "cluster.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    pub masters: Vec<ClusterProcess>,
    pub nodes: Vec<ClusterProcess>,
    #[serde(default)]
    pub collectors: Vec<ClusterProcess>,
}

/// One process of the local cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterProcess {
    pub id: String,
    pub pid: u32,
    pub rpc: String,
    pub admin: String,
    pub gossip: String,
    /// The Redis protocol listener (nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<String>,
}

pub fn read(data_dir: &Path) -> anyhow::Result<ClusterFile> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no {FILE_NAME} in {}: start a cluster with `ampstore up` or pass --admin ADDR",
            data_dir.display()
        ),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not a cluster file", path.display()))
}

/// The admin addresses of the local cluster in `data_dir`: masters first, then nodes.
pub fn admin_addrs(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let file = read(data_dir)?;
    let addrs: Vec<String> = file.masters.iter().chain(&file.nodes).map(|p| p.admin.clone()).collect();
    if addrs.is_empty() {
        anyhow::bail!("{} lists no processes; pass --admin ADDR", data_dir.join(FILE_NAME).display());
    }
    Ok(addrs)
}

/// The admin addresses to try, in order: `--admin` (repeatable, comma-separated), else
/// the local cluster's file under the configured data dir (default `./ampstore-data`).
pub fn resolve_admin_addrs(explicit: &[String], settings: &SettingsArgs) -> anyhow::Result<Vec<String>> {
    let listed: Vec<String> =
        explicit.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    if !listed.is_empty() {
        return Ok(listed);
    }
    let cfg = settings::load(settings, &BackendArgs::default())?;
    admin_addrs(&cfg.data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(id: &str, port: u16) -> ClusterProcess {
        ClusterProcess {
            id: id.into(),
            pid: 4000 + u32::from(port),
            rpc: format!("127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{}", port + 1),
            gossip: format!("127.0.0.1:{}", port + 2),
            resp: None,
        }
    }

    #[test]
    fn masters_first_then_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let file = ClusterFile {
            masters: vec![process("m-1", 100), process("m-2", 110)],
            nodes: vec![process("n-1", 200)],
            collectors: vec![],
        };
        std::fs::write(dir.path().join(FILE_NAME), serde_json::to_string(&file).unwrap()).unwrap();
        assert_eq!(admin_addrs(dir.path()).unwrap(), ["127.0.0.1:101", "127.0.0.1:111", "127.0.0.1:201"]);
        assert_eq!(read(dir.path()).unwrap(), file);
    }

    #[test]
    fn reads_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"masters": [{"id": "m-a", "pid": 12, "rpc": "127.0.0.1:7000", "admin": "127.0.0.1:7001",
            "gossip": "127.0.0.1:7002"}], "nodes": []}"#;
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        assert_eq!(admin_addrs(dir.path()).unwrap(), ["127.0.0.1:7001"]);
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = admin_addrs(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("no cluster.json in "), "{e}");
        assert!(e.contains("`ampstore up`") && e.contains("--admin ADDR"), "{e}");
    }

    #[test]
    fn bad_or_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{").unwrap();
        assert!(format!("{:#}", admin_addrs(dir.path()).unwrap_err()).contains("is not a cluster file"));
        std::fs::write(dir.path().join(FILE_NAME), r#"{"masters": [], "nodes": []}"#).unwrap();
        assert!(admin_addrs(dir.path()).unwrap_err().to_string().contains("lists no processes"));
    }

    #[test]
    fn explicit_addresses_win_and_split_on_commas() {
        let args = vec!["a:1, b:2".to_string(), "c:3".to_string(), " ,".to_string()];
        assert_eq!(resolve_admin_addrs(&args, &SettingsArgs::default()).unwrap(), ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn falls_back_to_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = ClusterFile { masters: vec![], nodes: vec![process("n-1", 300)], collectors: vec![] };
        std::fs::write(dir.path().join(FILE_NAME), serde_json::to_string(&file).unwrap()).unwrap();
        let settings = SettingsArgs { data_dir: Some(dir.path().to_path_buf()), ..SettingsArgs::default() };
        assert_eq!(resolve_admin_addrs(&[], &settings).unwrap(), ["127.0.0.1:301"]);
    }
}
