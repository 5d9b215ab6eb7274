//! `ampstore up`: a local cluster of child processes of this binary on 127.0.0.1 — masters
//! and nodes sharing one store under the data directory — until SIGINT or SIGTERM.
//!
//! Layout of DIR: `store/` (the embedded backend), `masters/mI/` and `nodes/nI/` (each
//! process's id), `logs/` (their stderr), the cluster secrets (`cluster.token` for app servers,
//! `admin.token` for the cluster's own processes and operators, `gossip.key`; mode 0600) and, while it runs, `cluster.json`. Running `up` again on the same DIR brings
//! back the same processes (same ids) and the same data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ampstore_client::connection::Connection;
use ampstore_common::Key;
use ampstore_common::protocol::{Op, Reply, Role};
use anyhow::Context;
use clap::Args;

use crate::cluster_file::{ClusterFile, ClusterProcess, FILE_NAME};
use crate::node_cmd::shutdown_signal;
use crate::settings::{self, BackendArg, BackendArgs, SettingsArgs};

/// Most processes `up` starts of each kind.
const PROCESSES_MAX: usize = 32;
/// How long the cluster may take to serve before `up` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Clone)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub nodes: usize,
    /// Number of masters (one is active, the others stand by).
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub masters: usize,
    /// Storage backend: local (default) or aws.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Endpoint URL of a DynamoDB/S3-compatible server (with --backend aws).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Split a range once its data exceeds this many bytes (default 1 MiB; node.split_bytes).
    #[arg(long, value_name = "BYTES")]
    pub split_bytes: Option<u64>,
    /// Number of collectors (they batch pushes and enqueues; clients find them through
    /// gossip).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub collectors: usize,
    /// Log filter of the masters and nodes (`RUST_LOG` syntax); their logs go to
    /// `DATA/logs/`.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log: String,
}

/// A running local cluster.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub file: ClusterFile,
    /// What app servers get (data operations only).
    pub token: Option<String>,
    /// What the cluster's processes and operator commands use.
    pub admin_token: Option<String>,
    children: Vec<(String, Child)>,
}

pub async fn run(settings: &SettingsArgs, args: UpArgs) -> anyhow::Result<()> {
    let cluster = start(settings, &args).await?;
    println!("cluster up: {} master(s), {} node(s); data in {}", args.masters, args.nodes, cluster.dir.display());
    for p in &cluster.file.masters {
        println!("  master {}  rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    for p in &cluster.file.nodes {
        println!("  node   {}  rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    for p in &cluster.file.collectors {
        println!("  collector {}  rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    println!("metrics at http://ADMIN/metrics, members at http://ADMIN/v1/members; stop with Ctrl-C");
    tokio::select! {
        _ = shutdown_signal() => {}
        name = watch_children(&cluster) => {
            eprintln!("ampstore: warning: {name} exited on its own; stopping the cluster");
        }
    }
    println!("stopping the cluster...");
    cluster.stop().await;
    println!("stopped");
    Ok(())
}

/// Starts the cluster and waits until it serves.
pub async fn start(settings: &SettingsArgs, args: &UpArgs) -> anyhow::Result<LocalCluster> {
    if !(1..=PROCESSES_MAX).contains(&args.nodes) || !(1..=PROCESSES_MAX).contains(&args.masters) {
        anyhow::bail!("--nodes and --masters must be 1 to {PROCESSES_MAX}");
    }
    let cfg = settings::load(settings, &BackendArgs::default())?;
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
    if let Ok(existing) = crate::cluster_file::read(&dir)
        && existing.masters.iter().chain(&existing.nodes).any(|p| process_alive(p.pid))
    {
        anyhow::bail!("a cluster is already running on {} (see {FILE_NAME}); stop it first", dir.display());
    }
    let secrets = ampstore_common::secrets::ensure(&dir)?;
    let token = std::fs::read_to_string(&secrets.token)?.trim().to_string();
    let admin_token = std::fs::read_to_string(&secrets.admin_token)?.trim().to_string();
    let exe = std::env::current_exe().context("finding the ampstore binary")?;

    let mut common: Vec<String> = Vec::new();
    let mut set = |kv: String| common.extend(["--set".to_string(), kv]);
    set(format!("cluster.token_file={}", secrets.token.display()));
    set(format!("cluster.admin_token_file={}", secrets.admin_token.display()));
    set(format!("cluster.gossip_key_file={}", secrets.gossip_key.display()));
    set(format!("gossip.cluster_size={}", args.nodes + args.masters));
    if let Some(bytes) = args.split_bytes {
        set(format!("node.split_bytes={bytes}"));
    }
    for kv in &settings.set {
        set(kv.clone());
    }
    if let Some(cfg_file) = &settings.config {
        common.extend(["--config".to_string(), cfg_file.display().to_string()]);
    }
    let mut backend: Vec<String> = Vec::new();
    match args.backend {
        Some(BackendArg::Aws) => {
            backend.extend(["--backend".into(), "aws".into()]);
            if let Some(ep) = &args.endpoint {
                backend.extend(["--endpoint".into(), ep.clone()]);
            }
        }
        _ => {
            if args.endpoint.is_some() {
                anyhow::bail!("--endpoint needs --backend aws");
            }
            common.extend(["--set".into(), format!("backend.local.dir={}", dir.join("store").display())]);
        }
    }

    let mut cluster = LocalCluster {
        dir: dir.clone(),
        file: ClusterFile { masters: vec![], nodes: vec![], collectors: vec![] },
        token: Some(token),
        admin_token: Some(admin_token),
        children: vec![],
    };
    let start = ChildStart { exe: &exe, common: &common, dir: &dir, log_filter: args.log.as_str() };
    let mut seeds: Vec<String> = Vec::new();
    for i in 0..args.masters {
        let mut extra = backend.clone();
        if !seeds.is_empty() {
            extra.extend(["--seeds".into(), seeds.join(",")]);
        }
        let (child, p) = start.child("master", &format!("m{i}"), &extra).map_err(|e| stop_on_error(&mut cluster, e))?;
        seeds.push(p.gossip.clone());
        cluster.children.push((format!("master {}", p.id), child));
        cluster.file.masters.push(p);
    }
    for i in 0..args.nodes {
        let mut extra = backend.clone();
        extra.extend(["--seeds".into(), seeds.join(",")]);
        let (child, p) = start.child("node", &format!("n{i}"), &extra).map_err(|e| stop_on_error(&mut cluster, e))?;
        cluster.children.push((format!("node {}", p.id), child));
        cluster.file.nodes.push(p);
    }
    if let Err(e) = wait_serving(&cluster, args.nodes).await {
        cluster.stop().await;
        return Err(e);
    }
    let masters: Vec<String> = cluster.file.masters.iter().map(|m| m.rpc.clone()).collect();
    for i in 0..args.collectors {
        let extra = ["--seeds".into(), seeds.join(","), "--masters".into(), masters.join(",")];
        let (child, p) = match start.child("collector", &format!("c{i}"), &extra) {
            Ok(started) => started,
            Err(e) => {
                cluster.stop().await;
                return Err(e);
            }
        };
        cluster.children.push((format!("collector {}", p.id), child));
        cluster.file.collectors.push(p);
    }
    let json = serde_json::to_string_pretty(&cluster.file)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, dir.join(FILE_NAME)))?;
    Ok(cluster)
}

fn stop_on_error(cluster: &mut LocalCluster, e: anyhow::Error) -> anyhow::Error {
    for (_, child) in &mut cluster.children {
        let _ = child.kill();
        let _ = child.wait();
    }
    e
}

/// What every child of `up` shares: the binary, the common flags, the cluster directory.
struct ChildStart<'a> {
    exe: &'a Path,
    common: &'a [String],
    dir: &'a Path,
    log_filter: &'a str,
}

impl ChildStart<'_> {
    /// Starts `ampstore ... KIND` (master, node, collector) named `name` on free loopback
    /// ports, with its data in `DIR/KINDs/NAME` and its log in `DIR/logs/KIND-NAME.log`,
    /// and reads its ready line.
    fn child(&self, kind: &str, name: &str, extra: &[String]) -> anyhow::Result<(Child, ClusterProcess)> {
        let mut args = self.common.to_vec();
        let data = self.dir.join(format!("{kind}s")).join(name);
        args.extend(["--data".into(), data.display().to_string(), kind.into()]);
        args.extend(["--rpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gossip", "127.0.0.1:0"].map(String::from));
        args.extend(extra.iter().cloned());
        let log = self.dir.join("logs").join(format!("{kind}-{name}.log"));
        spawn(self.exe, &args, &log, self.log_filter)
    }
}

/// Starts one child and reads its ready line: "ampstore KIND ID ready: rpc ADDR ... admin
/// ADDR gossip ADDR" (nodes also print their epoch).
fn spawn(exe: &Path, args: &[String], log: &Path, filter: &str) -> anyhow::Result<(Child, ClusterProcess)> {
    let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", filter)
        .env_remove("AMPSTORE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting a child process")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = match lines.next() {
        Some(Ok(l)) => l,
        _ => {
            let _ = child.wait();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("no output");
            anyhow::bail!("a child process failed to start ({}): {last}", log.display());
        }
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let after =
        |label: &str| words.iter().position(|w| *w == label).and_then(|i| words.get(i + 1)).map(|w| w.to_string());
    let process = match (words.get(2), words.get(3), after("rpc"), after("admin"), after("gossip")) {
        (Some(id), Some(&"ready:"), Some(rpc), Some(admin), Some(gossip)) => {
            ClusterProcess { id: id.to_string(), pid: child.id(), rpc, admin, gossip }
        }
        _ => {
            let _ = child.kill();
            anyhow::bail!("unexpected ready line from a child: {line}");
        }
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, process))
}

/// Waits until a master is active, sees every node live, and the first key is served.
async fn wait_serving(cluster: &LocalCluster, nodes: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::from("no master answered");
    while started.elapsed() < READY_TIMEOUT {
        for m in &cluster.file.masters {
            // An operator's check: the admin role sees the master's status like `ampstore status`.
            let Ok(conn) = Connection::connect(&m.rpc, Role::Admin, "ampstore-up", cluster.admin_token.clone()).await
            else {
                continue;
            };
            match conn.call(Op::MasterStatus, Duration::from_secs(5)).await {
                Ok(Reply::Master(s)) if s.active_term.is_some() => {
                    let live = s.nodes.iter().filter(|n| n.state == "live").count();
                    if live < nodes {
                        last = format!("{live} of {nodes} nodes live");
                        continue;
                    }
                    match conn.call(Op::Locate { key: Key::from("a") }, Duration::from_secs(5)).await {
                        Ok(Reply::Location(_)) => return Ok(()),
                        Ok(_) => last = "unexpected locate answer".into(),
                        Err(e) => last = format!("first range: {e}"),
                    }
                }
                Ok(_) => last = "no master active yet".into(),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the cluster did not serve within {READY_TIMEOUT:?}: {last} (logs in {})",
        cluster.dir.join("logs").display()
    )
}

/// Resolves when any child exits; returns its name.
async fn watch_children(cluster: &LocalCluster) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for p in cluster.file.masters.iter().chain(&cluster.file.nodes) {
            if !process_alive(p.pid) {
                return p.id.clone();
            }
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) still counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

impl LocalCluster {
    /// Stops every child gracefully (nodes first, so they release their ranges while a
    /// master runs), killing any that do not stop in time, and removes `cluster.json`.
    pub async fn stop(mut self) {
        let _ = std::fs::remove_file(self.dir.join(FILE_NAME));
        let mut order: Vec<(String, Child)> = std::mem::take(&mut self.children);
        order.sort_by_key(|(name, _)| !name.starts_with("node"));
        for (_, child) in &order {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (name, mut child) in order {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                    _ => {
                        eprintln!("ampstore: warning: {name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Kills one process with SIGKILL (the demo shows failover with it).
    pub fn kill_node(&mut self, id: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == &format!("node {id}")) else { return false };
        let (_, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Only reached without `stop` (an error path): leave nothing running.
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
