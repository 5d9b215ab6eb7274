//! The cluster under test: masters and nodes as processes of the `ampstore` binary, each at
//! its own address (see `net`) on fixed ports so a restarted process comes back where it
//! was. Kill, pause and restart act on real pids.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::net::Network;
use crate::schedule::Proc;

pub const RPC_PORT: u16 = 7300;
pub const ADMIN_PORT: u16 = 7301;
pub const GOSSIP_PORT: u16 = 7302;
/// How long a process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The suite runs its processes at the default failure detection settings (it passes none
/// of them): these are those defaults, for the schedule and the availability rule. The test
/// `chaos_runs_at_the_default_failover_settings` (cli) checks they agree with the config.
pub const LIVENESS_MS: u64 = 1000;
pub const LIVENESS_MARGIN_MS: u64 = 300;
pub const LEASE_MS: u64 = 1000;

/// How the processes store data.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded store in this directory.
    Local(PathBuf),
    /// DynamoDB and S3 at this endpoint (as the processes reach it), tables `{prefix}-*`.
    Aws { endpoint: String, prefix: String, bucket: String },
}

pub struct Cluster {
    pub net: Network,
    exe: PathBuf,
    dir: PathBuf,
    backend: Backend,
    masters: usize,
    nodes: usize,
    children: Vec<(Proc, Option<Child>)>,
    /// The store process of the local backend (never faulted: it stands for DynamoDB), and
    /// the address the others reach it at.
    store: Option<(Child, String)>,
}

impl Cluster {
    pub fn start(
        net: Network,
        exe: &Path,
        dir: &Path,
        backend: Backend,
        masters: usize,
        nodes: usize,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let mut cluster = Cluster {
            net,
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            backend,
            masters,
            nodes,
            children: Vec::new(),
            store: None,
        };
        if let Backend::Local(store_dir) = &cluster.backend {
            let store_dir = store_dir.clone();
            cluster.store = Some(cluster.start_store(&store_dir)?);
        }
        let procs: Vec<Proc> = (0..masters).map(Proc::Master).chain((0..nodes).map(Proc::Node)).collect();
        for p in procs {
            cluster.children.push((p, None));
            cluster.spawn(p)?;
        }
        Ok(cluster)
    }

    pub fn procs(&self) -> Vec<Proc> {
        self.children.iter().map(|(p, _)| *p).collect()
    }

    pub fn rpc(&self, p: Proc) -> String {
        format!("{}:{RPC_PORT}", self.net.ip(p))
    }

    pub fn master_rpcs(&self) -> Vec<String> {
        (0..self.masters).map(|i| self.rpc(Proc::Master(i))).collect()
    }

    pub fn node_index_of_rpc(&self, rpc: &str) -> Option<usize> {
        (0..self.nodes).find(|i| self.rpc(Proc::Node(*i)) == rpc)
    }

    pub fn pid(&self, p: Proc) -> Option<u32> {
        self.children.iter().find(|(q, _)| *q == p).and_then(|(_, c)| c.as_ref()).map(Child::id)
    }

    /// Starts `ampstore store` on the embedded store in `store_dir`: the one process that
    /// opens its SQLite file, so a paused master or node never holds the file's write lock
    /// (which froze every other process for the length of the pause). It listens where
    /// every namespace reaches it and is never faulted, as DynamoDB would not be.
    fn start_store(&self, store_dir: &Path) -> anyhow::Result<(Child, String)> {
        let ip = self.net.gateway().map_or_else(|| "127.0.0.1".to_string(), |gw| gw.to_string());
        let log_path = self.dir.join("logs").join("store.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut child = std::process::Command::new(&self.exe)
            .arg("--data")
            .arg(self.dir.join("store-process"))
            .arg("--set")
            .arg(format!("backend.local.dir={}", store_dir.display()))
            .args(["store", "--listen", &format!("{ip}:0")])
            .env("RUST_LOG", "warn,ampstore_common=info")
            .env_remove("AMPSTORE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the store process")?;
        let line = first_line(&mut child);
        // "ampstore store ready: listen ADDR dir DIR"
        let addr = line.as_deref().and_then(|l| l.split("listen ").nth(1)).and_then(|r| r.split_whitespace().next());
        match addr {
            Some(addr) => {
                let addr = addr.to_string();
                Ok((child, addr))
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("the store process did not start; the end of {}:\n{}", log_path.display(), tail(&log, 10));
            }
        }
    }

    /// Starts `p` (again) and waits for its ready line.
    pub fn spawn(&mut self, p: Proc) -> anyhow::Result<()> {
        let (kind, name) = match p {
            Proc::Master(i) => ("master", format!("m{i}")),
            Proc::Node(i) => ("node", format!("n{i}")),
        };
        let ip = self.net.ip(p);
        let mut cmd = self.net.command(p, &self.exe);
        cmd.arg("--data").arg(self.dir.join(&name));
        if let Backend::Local(store) = &self.backend {
            cmd.arg("--set").arg(format!("backend.local.dir={}", store.display()));
        }
        if let Some((_, addr)) = &self.store {
            cmd.arg("--set").arg(format!("backend.local.server={addr}"));
        }
        let seeds: Vec<String> = (0..self.masters)
            .map(Proc::Master)
            .filter(|m| *m != p)
            .map(|m| format!("{}:{GOSSIP_PORT}", self.net.ip(m)))
            .collect();
        let mut settings = vec![format!("gossip.cluster_size={}", self.masters + self.nodes)];
        match p {
            Proc::Master(_) => {
                settings.extend(["master.stats_ms=300".into(), "master.rebalance_interval_ms=1000".into()])
            }
            // The Redis interface is not under test here: a free port, whatever the network.
            Proc::Node(_) => settings.push(format!("node.resp_addr={ip}:0")),
        }
        for kv in settings {
            cmd.arg("--set").arg(kv);
        }
        cmd.arg(kind);
        cmd.args(["--rpc", &format!("{ip}:{RPC_PORT}"), "--admin", &format!("{ip}:{ADMIN_PORT}")]);
        cmd.args(["--gossip", &format!("{ip}:{GOSSIP_PORT}")]);
        if !seeds.is_empty() {
            cmd.args(["--seeds", &seeds.join(",")]);
        }
        if let Backend::Aws { endpoint, prefix, bucket } = &self.backend {
            cmd.args(["--backend", "aws", "--endpoint", endpoint, "--prefix", prefix, "--bucket", bucket]);
        }
        let log_path = self.dir.join("logs").join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut child = cmd
            .env("RUST_LOG", "warn,ampstore_master=info,ampstore_node=info")
            .env_remove("AMPSTORE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {p}"))?;
        match first_line(&mut child) {
            Some(line) if line.contains("ready:") => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("{p} did not start; the end of {}:\n{}", log_path.display(), tail(&log, 10));
            }
        }
        if let Some(slot) = self.children.iter_mut().find(|(q, _)| *q == p) {
            slot.1 = Some(child);
        }
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, p: Proc) {
        if let Some((_, slot)) = self.children.iter_mut().find(|(q, _)| *q == p)
            && let Some(mut child) = slot.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self, p: Proc) {
        self.signal(p, libc::SIGSTOP);
    }

    pub fn resume(&self, p: Proc) {
        self.signal(p, libc::SIGCONT);
    }

    fn signal(&self, p: Proc, sig: i32) {
        if let Some(pid) = self.pid(p) {
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// Processes that exited on their own (a crash is a finding): their names and statuses.
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (p, slot) in &mut self.children {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push(format!("{p} exited on its own ({status})"));
                *slot = None;
            }
        }
        if let Some((child, _)) = &mut self.store
            && let Ok(Some(status)) = child.try_wait()
        {
            out.push(format!("the store process exited on its own ({status})"));
            self.store = None;
        }
        out
    }

    /// Stops everything: SIGCONT (in case), SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        for (_, slot) in &mut self.children {
            if let Some(child) = slot {
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGCONT);
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for (_, slot) in &mut self.children {
            if let Some(mut child) = slot.take() {
                while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Stops the store process last (the others may still be writing until they exit).
    fn stop_store(&mut self) {
        if let Some((mut child, _)) = self.store.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        self.stop_store();
    }
}

/// The child's first stdout line (its ready line), waiting at most `READY_TIMEOUT`; the
/// rest of its output is drained so the child never blocks on a full pipe.
fn first_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {} // keep the pipe drained
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Some(Ok(line))) => Some(line),
        _ => None,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
