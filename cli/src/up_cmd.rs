//! `ampstore up`: a local cluster of child processes of this binary on 127.0.0.1 — masters
//! and nodes sharing one store under the data directory, which `up` itself opens and serves
//! to them (`backend.local.server`) — until SIGINT or SIGTERM. A child
//! that dies is restarted on its addresses (unless `--no-restart`), so `up` outlives any one
//! of its processes.
//!
//! Layout of DIR: `store/` (the embedded backend), `masters/mI/` and `nodes/nI/` (each
//! process's id), `logs/` (their stderr), the cluster secrets (`cluster.token` for app servers,
//! `admin.token` for the cluster's own processes and operators, `gossip.key`; mode 0600) and, while it runs, `cluster.json`. Running `up` again on the same DIR brings
//! back the same processes (same ids) and the same data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ampstore_common::Key;
use ampstore_common::connection::Connection;
use ampstore_common::protocol::Role;
use ampstore_common::wire::routing::{self, Locate};
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
/// How often `up` looks for children that died.
const WATCH_PERIOD: Duration = Duration::from_millis(200);
/// The wait before restarting a child that died after running a while: long enough not to
/// spin on a crash, short enough that a killed node is back before clients notice much.
const RESTART_DELAY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between restarts of a child that keeps dying.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before dying is treated as healthy: its next restart waits
/// [`RESTART_DELAY_FIRST`] again instead of the doubled delay.
const STABLE_RUN: Duration = Duration::from_secs(10);

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
    /// Split a range once its data exceeds this many bytes (default 16 MiB; node.split_bytes).
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
    /// Leave a process that dies down instead of restarting it (for failover
    /// experiments); `up` keeps running until Ctrl-C either way.
    #[arg(long)]
    pub no_restart: bool,
}

/// What a child of `up` is; its flags and its place in `cluster.json` follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcessKind {
    Master,
    Node,
    Collector,
}

impl ProcessKind {
    /// The subcommand, and the word in messages and file names.
    fn command(self) -> &'static str {
        match self {
            ProcessKind::Master => "master",
            ProcessKind::Node => "node",
            ProcessKind::Collector => "collector",
        }
    }

    fn list(self, file: &ClusterFile) -> &Vec<ClusterProcess> {
        match self {
            ProcessKind::Master => &file.masters,
            ProcessKind::Node => &file.nodes,
            ProcessKind::Collector => &file.collectors,
        }
    }

    fn list_mut(self, file: &mut ClusterFile) -> &mut Vec<ClusterProcess> {
        match self {
            ProcessKind::Master => &mut file.masters,
            ProcessKind::Node => &mut file.nodes,
            ProcessKind::Collector => &mut file.collectors,
        }
    }
}

/// One child of `up`, watched and restarted when it dies.
struct Supervised {
    kind: ProcessKind,
    /// Its position in the `cluster.json` list of its kind, which holds its id, pid and
    /// addresses.
    index: usize,
    /// Its directory under `DIR/KINDs/` (`m0`, `n1`, `c0`): a restart reuses it, so a node
    /// keeps its node id.
    dir_name: String,
    /// Flags of its own beyond its addresses and seeds (backend, a collector's masters).
    extra: Vec<String>,
    /// `None` once it died (reaped) and until it is started again.
    child: Option<Child>,
    phase: Phase,
    /// The wait before its next restart; doubles while it keeps dying quickly.
    restart_delay: Duration,
}

enum Phase {
    /// Started again (after being down since `down_since`); its ready line has not come yet.
    Starting {
        since: Instant,
        down_since: Instant,
        ready: mpsc::Receiver<String>,
    },
    Running {
        since: Instant,
    },
    /// Dead since `since`; started again at `restart_at` (`None`: left down).
    Down {
        since: Instant,
        restart_at: Option<Instant>,
    },
}

/// A running local cluster.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub file: ClusterFile,
    /// What app servers get (data operations only).
    pub token: Option<String>,
    /// What the cluster's processes and operator commands use.
    pub admin_token: Option<String>,
    children: Vec<Supervised>,
    launcher: Launcher,
    /// Whether a child that dies is started again (`up` without `--no-restart`).
    restart: bool,
    /// The embedded store, served from this process (see [`serve_store`]).
    store: Option<StoreTask>,
}

/// The embedded store served by `up` itself.
struct StoreTask {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Opens the embedded store in `store_dir` in this process and serves it on a loopback port:
/// `up`'s masters and nodes reach it there (`backend.local.server`) instead of each opening
/// the SQLite file, so a stopped or slow process never holds the file's write lock over the
/// others (see `ampstore_store::remote`). Returns the address.
async fn serve_store(
    cfg: &ampstore_server::config::Config,
    store_dir: &Path,
    admin_token: &str,
) -> anyhow::Result<(StoreTask, String)> {
    let store = ampstore_store::local::LocalStore::open(store_dir, &cfg.backend.local)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening for the store")?;
    let addr = listener.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(ampstore_store::remote::serve(listener, store.backend(), Some(admin_token.to_string()), stopped));
    Ok((StoreTask { stop, task }, addr))
}

pub async fn run(settings: &SettingsArgs, args: UpArgs) -> anyhow::Result<()> {
    let mut cluster = start(settings, &args).await?;
    println!("cluster up: {} master(s), {} node(s); data in {}", args.masters, args.nodes, cluster.dir.display());
    for p in &cluster.file.masters {
        println!("  master {}  rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    for p in &cluster.file.nodes {
        let resp = p.resp.as_deref().map(|r| format!("  resp (Redis protocol) {r}")).unwrap_or_default();
        println!("  node   {}  rpc {}  admin http://{}/v1/status{resp}", p.id, p.rpc, p.admin);
    }
    if let Some(port) = cluster.file.nodes.iter().find_map(|p| p.resp.as_deref()?.rsplit(':').next()) {
        println!(
            "redis-cli: redis-cli -p {port} -a \"$(cat {})\" (any node's resp port)",
            cluster.dir.join("cluster.token").display()
        );
    }
    for p in &cluster.file.collectors {
        println!("  collector {}  rpc {}  admin http://{}/v1/status", p.id, p.rpc, p.admin);
    }
    println!("metrics at http://ADMIN/metrics, members at http://ADMIN/v1/members; stop with Ctrl-C");
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(WATCH_PERIOD) => cluster.supervise(),
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
    let secrets = ampstore_server::secrets::ensure(&dir)?;
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
    let mut store = None;
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
            if cfg.backend.local.server.is_none() {
                let (task, addr) = serve_store(&cfg, &dir.join("store"), &admin_token).await?;
                common.extend(["--set".into(), format!("backend.local.server={addr}")]);
                store = Some(task);
            }
        }
    }

    let mut cluster = LocalCluster {
        dir: dir.clone(),
        file: ClusterFile { masters: vec![], nodes: vec![], collectors: vec![] },
        token: Some(token),
        admin_token: Some(admin_token),
        children: vec![],
        launcher: Launcher { exe, common, dir: dir.clone(), log_filter: args.log.clone() },
        restart: !args.no_restart,
        store,
    };
    let mut seeds: Vec<String> = Vec::new();
    for i in 0..args.masters {
        cluster.start_child(ProcessKind::Master, format!("m{i}"), backend.clone(), &seeds)?;
        seeds.push(cluster.file.masters[i].gossip.clone());
    }
    for i in 0..args.nodes {
        cluster.start_child(ProcessKind::Node, format!("n{i}"), backend.clone(), &seeds)?;
    }
    if let Err(e) = wait_serving(&cluster, args.nodes).await {
        cluster.stop().await;
        return Err(e);
    }
    let masters: Vec<String> = cluster.file.masters.iter().map(|m| m.rpc.clone()).collect();
    for i in 0..args.collectors {
        let extra = vec!["--masters".into(), masters.join(",")];
        if let Err(e) = cluster.start_child(ProcessKind::Collector, format!("c{i}"), extra, &seeds) {
            cluster.stop().await;
            return Err(e);
        }
    }
    cluster.write_file()?;
    Ok(cluster)
}

/// How every child of `up` is started: the binary, the flags they share, the cluster
/// directory, the log filter.
struct Launcher {
    exe: PathBuf,
    common: Vec<String>,
    dir: PathBuf,
    log_filter: String,
}

/// Where a child listens: port 0 everywhere at first (the system picks), and at a restart
/// the addresses it got then, so clients, peers and `cluster.json` stay right.
#[derive(Clone, Copy)]
enum Listen<'a> {
    AnyPort,
    Same(&'a ClusterProcess),
}

impl Launcher {
    /// Starts `ampstore ... KIND` with its data in `DIR/KINDs/NAME` and its log in
    /// `DIR/logs/KIND-NAME.log` (appended to at a restart, so the log of the run that died
    /// stays). Returns at once: the receiver gets the child's first stdout line, its ready
    /// line, and is disconnected if the child closes stdout first (it is dying).
    fn launch(
        &self,
        kind: ProcessKind,
        name: &str,
        listen: Listen,
        seeds: &[String],
        extra: &[String],
    ) -> anyhow::Result<(Child, mpsc::Receiver<String>)> {
        let kind_word = kind.command();
        let mut args = self.common.clone();
        if kind == ProcessKind::Node {
            let resp = match listen {
                Listen::Same(ClusterProcess { resp: Some(addr), .. }) => addr.as_str(),
                _ => "127.0.0.1:0",
            };
            args.extend(["--set".into(), format!("node.resp_addr={resp}")]);
        }
        let data = self.dir.join(format!("{kind_word}s")).join(name);
        args.extend(["--data".into(), data.display().to_string(), kind_word.into()]);
        let (rpc, admin, gossip) = match listen {
            Listen::AnyPort => ("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
            Listen::Same(p) => (p.rpc.as_str(), p.admin.as_str(), p.gossip.as_str()),
        };
        args.extend(["--rpc", rpc, "--admin", admin, "--gossip", gossip].map(String::from));
        if !seeds.is_empty() {
            args.extend(["--seeds".into(), seeds.join(",")]);
        }
        args.extend(extra.iter().cloned());
        let log = self.dir.join("logs").join(format!("{kind_word}-{name}.log"));
        let log_file = match listen {
            Listen::AnyPort => std::fs::File::create(&log),
            Listen::Same(_) => std::fs::OpenOptions::new().create(true).append(true).open(&log),
        }
        .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(&self.exe)
            .args(&args)
            .env("RUST_LOG", &self.log_filter)
            .env_remove("AMPSTORE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting a child process")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the ready line, then keeps reading so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = ready_tx.send(line);
            }
            drop(ready_tx);
            for _ in lines {}
        });
        Ok((child, ready_rx))
    }
}

/// Parses a ready line: "ampstore KIND ID ready: rpc ADDR ... admin ADDR gossip ADDR" (nodes
/// also print their epoch).
fn parse_ready(line: &str, pid: u32) -> Option<ClusterProcess> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after =
        |label: &str| words.iter().position(|w| *w == label).and_then(|i| words.get(i + 1)).map(|w| w.to_string());
    match (words.get(2), words.get(3), after("rpc"), after("admin"), after("gossip")) {
        (Some(id), Some(&"ready:"), Some(rpc), Some(admin), Some(gossip)) => {
            Some(ClusterProcess { id: id.to_string(), pid, rpc, admin, gossip, resp: after("resp") })
        }
        _ => None,
    }
}

/// The last line of a child's log, to say why it did not start.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().last().unwrap_or("no output").to_string()
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
            match conn.call_typed(routing::MasterStatus, Duration::from_secs(5)).await {
                Ok(s) if s.active_term.is_some() => {
                    let live = s.nodes.iter().filter(|n| n.state == ampstore_common::protocol::NodeState::Live).count();
                    if live < nodes {
                        last = format!("{live} of {nodes} nodes live");
                        continue;
                    }
                    match conn.call_typed(Locate { key: Key::from("a") }, Duration::from_secs(5)).await {
                        Ok(_) => return Ok(()),
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

/// How a child ended, for the operator: its exit code or the signal that killed it.
fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "unnamed",
    }
}

/// The next wait before a restart, given the one just used: doubled, at most
/// [`RESTART_DELAY_MAX`].
fn next_restart_delay(delay: Duration) -> Duration {
    (delay * 2).min(RESTART_DELAY_MAX)
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) still counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

impl LocalCluster {
    /// Starts one child on free ports, waits for its ready line and records it; on failure
    /// stops the children started so far.
    fn start_child(
        &mut self,
        kind: ProcessKind,
        dir_name: String,
        extra: Vec<String>,
        seeds: &[String],
    ) -> anyhow::Result<()> {
        let log = self.dir.join("logs").join(format!("{}-{dir_name}.log", kind.command()));
        let started = self
            .launcher
            .launch(kind, &dir_name, Listen::AnyPort, seeds, &extra)
            .and_then(|(child, ready)| Self::await_ready(child, &ready, &log));
        let (child, process) = match started {
            Ok(started) => started,
            Err(e) => {
                self.kill_all();
                return Err(e);
            }
        };
        let list = kind.list_mut(&mut self.file);
        list.push(process);
        let index = list.len() - 1;
        self.children.push(Supervised {
            kind,
            index,
            dir_name,
            extra,
            child: Some(child),
            phase: Phase::Running { since: Instant::now() },
            restart_delay: RESTART_DELAY_FIRST,
        });
        Ok(())
    }

    /// Blocks until a child just launched prints its ready line (at the first start, before
    /// anything is served, so there is nothing else to do meanwhile).
    fn await_ready(
        mut child: Child,
        ready: &mpsc::Receiver<String>,
        log: &Path,
    ) -> anyhow::Result<(Child, ClusterProcess)> {
        let line = match ready.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                anyhow::bail!("a child process failed to start ({}): {}", log.display(), log_tail(log));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("a child process printed no ready line within {READY_TIMEOUT:?} ({})", log.display());
            }
        };
        match parse_ready(&line, child.id()) {
            Some(process) => Ok((child, process)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("unexpected ready line from a child: {line}")
            }
        }
    }

    fn process(&self, i: usize) -> &ClusterProcess {
        let s = &self.children[i];
        &s.kind.list(&self.file)[s.index]
    }

    /// Writes `cluster.json` (atomically: readers never see half a file).
    fn write_file(&self) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.file)?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, self.dir.join(FILE_NAME)))?;
        Ok(())
    }

    /// One look at every child: reaps and reports the ones that died, notes the ones that
    /// came back, starts the ones whose restart is due. Never blocks.
    fn supervise(&mut self) {
        let mut file_changed = false;
        for i in 0..self.children.len() {
            file_changed |= self.supervise_one(i, Instant::now());
        }
        if file_changed && let Err(e) = self.write_file() {
            eprintln!("ampstore: warning: cannot update {FILE_NAME}: {e:#}");
        }
    }

    /// [`Self::supervise`] for child `i`; returns whether its entry in `cluster.json` changed.
    fn supervise_one(&mut self, i: usize, now: Instant) -> bool {
        let (kind_name, id, pid) = {
            let p = self.process(i);
            (self.children[i].kind.command(), p.id.clone(), p.pid)
        };
        let log = self.dir.join("logs").join(format!("{kind_name}-{}.log", self.children[i].dir_name));
        let restart = self.restart;
        let s = &mut self.children[i];

        // Came back: its ready line arrived.
        if let Phase::Starting { since, down_since, ready } = &s.phase {
            let (since, down_since) = (*since, *down_since);
            match ready.try_recv() {
                Ok(line) => {
                    s.phase = Phase::Running { since };
                    match parse_ready(&line, pid) {
                        Some(got) => {
                            println!(
                                "{kind_name} {id} restarted: pid {pid}, rpc {} (down {:.1} s)",
                                got.rpc,
                                now.saturating_duration_since(down_since).as_secs_f64()
                            );
                            let p = &mut s.kind.list_mut(&mut self.file)[s.index];
                            if *p != got {
                                // Not expected (it was given its addresses), but the file
                                // must say where it really is.
                                *p = got;
                                return true;
                            }
                        }
                        None => {
                            eprintln!(
                                "ampstore: warning: unexpected ready line from {kind_name} {id}: {line}; stopping it"
                            );
                            if let Some(child) = &mut s.child {
                                let _ = child.kill();
                            }
                        }
                    }
                }
                Err(mpsc::TryRecvError::Empty) if now.saturating_duration_since(since) > READY_TIMEOUT => {
                    eprintln!(
                        "ampstore: warning: {kind_name} {id} (pid {pid}) printed no ready line within {READY_TIMEOUT:?}; \
                         killing it (log: {})",
                        log.display()
                    );
                    if let Some(child) = &mut s.child {
                        let _ = child.kill();
                    }
                }
                // Still starting; or it closed stdout and is exiting, which the next check sees.
                Err(_) => {}
            }
        }

        // Died: reap it, say how, and schedule its restart.
        if let Some(child) = &mut s.child {
            let status = match child.try_wait() {
                Ok(None) => return false,
                Ok(Some(status)) => describe_exit(status),
                Err(e) => format!("could not be waited for ({e})"),
            };
            s.child = None;
            // A process that never became ready counts from its start (`Down` has no child).
            let (ran, ready) = match s.phase {
                Phase::Starting { since, .. } => (now.saturating_duration_since(since), false),
                Phase::Running { since } => (now.saturating_duration_since(since), true),
                Phase::Down { .. } => (Duration::ZERO, false),
            };
            if ran >= STABLE_RUN {
                s.restart_delay = RESTART_DELAY_FIRST;
            }
            let wait = s.restart_delay;
            let when = if ready { format!("after {:.1} s", ran.as_secs_f64()) } else { "before it was ready".into() };
            let why = if ready { String::new() } else { format!(" (log: {})", log.display()) };
            if restart {
                s.restart_delay = next_restart_delay(wait);
                s.phase = Phase::Down { since: now, restart_at: Some(now + wait) };
                eprintln!(
                    "ampstore: warning: {kind_name} {id} (pid {pid}) {status} {when}{why}; restarting it in {:.1} s",
                    wait.as_secs_f64()
                );
            } else {
                s.phase = Phase::Down { since: now, restart_at: None };
                eprintln!(
                    "ampstore: warning: {kind_name} {id} (pid {pid}) {status} {when}{why}; left down (--no-restart)"
                );
            }
            return false;
        }

        // Down and due: start it again on the same addresses, joining gossip through every
        // other master and node (the first master was started with no seeds at all).
        let Phase::Down { since: down_since, restart_at: Some(at) } = s.phase else { return false };
        if now < at {
            return false;
        }
        let (kind, index) = (s.kind, s.index);
        let seeds: Vec<String> =
            self.file.masters.iter().chain(&self.file.nodes).filter(|p| p.id != id).map(|p| p.gossip.clone()).collect();
        let process = kind.list(&self.file)[index].clone();
        let s = &self.children[i];
        match self.launcher.launch(kind, &s.dir_name, Listen::Same(&process), &seeds, &s.extra) {
            Ok((child, ready)) => {
                let new_pid = child.id();
                let s = &mut self.children[i];
                s.child = Some(child);
                s.phase = Phase::Starting { since: now, down_since, ready };
                kind.list_mut(&mut self.file)[index].pid = new_pid;
                true
            }
            Err(e) => {
                let s = &mut self.children[i];
                let wait = s.restart_delay;
                s.restart_delay = next_restart_delay(wait);
                s.phase = Phase::Down { since: down_since, restart_at: Some(now + wait) };
                eprintln!(
                    "ampstore: warning: cannot restart {kind_name} {id}: {e:#}; trying again in {:.1} s",
                    wait.as_secs_f64()
                );
                false
            }
        }
    }

    fn kill_all(&mut self) {
        for s in &mut self.children {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Stops every child gracefully (nodes first, so they release their ranges while a
    /// master runs), killing any that do not stop in time, and removes `cluster.json`.
    pub async fn stop(mut self) {
        let _ = std::fs::remove_file(self.dir.join(FILE_NAME));
        let mut order: Vec<(String, Child)> = Vec::new();
        for i in 0..self.children.len() {
            let name = format!("{} {}", self.children[i].kind.command(), self.process(i).id);
            if let Some(child) = self.children[i].child.take() {
                order.push((name, child));
            }
        }
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
        // Last: the processes above may write until they exit.
        if let Some(store) = self.store.take() {
            let _ = store.stop.send(true);
            let _ = store.task.await;
        }
    }

    /// Kills one node with SIGKILL and leaves it down (the demo shows failover with it).
    pub fn kill_node(&mut self, id: &str) -> bool {
        let Some(i) = (0..self.children.len()).find(|&i| {
            self.children[i].kind == ProcessKind::Node && self.process(i).id == id && self.children[i].child.is_some()
        }) else {
            return false;
        };
        let s = &mut self.children[i];
        if let Some(mut child) = s.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        s.phase = Phase::Down { since: Instant::now(), restart_at: None };
        true
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Only reached without `stop` (an error path): leave nothing running.
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_up_to_the_cap() {
        let mut delay = RESTART_DELAY_FIRST;
        let mut seen = vec![];
        for _ in 0..8 {
            seen.push(delay.as_secs());
            delay = next_restart_delay(delay);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    /// A cluster of one "node" that is `sh -c 'exit 3'`: it dies at once at every start.
    fn crashing_cluster(dir: &Path) -> LocalCluster {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let launcher = Launcher {
            exe: PathBuf::from("/bin/sh"),
            common: vec!["-c".into(), "exit 3".into()],
            dir: dir.to_path_buf(),
            log_filter: "warn".into(),
        };
        let process = ClusterProcess {
            id: "n-crash".into(),
            pid: 0,
            rpc: "127.0.0.1:1".into(),
            admin: "127.0.0.1:2".into(),
            gossip: "127.0.0.1:3".into(),
            resp: None,
        };
        let (child, _) = launcher.launch(ProcessKind::Node, "n0", Listen::AnyPort, &[], &[]).unwrap();
        LocalCluster {
            dir: dir.to_path_buf(),
            file: ClusterFile {
                masters: vec![],
                nodes: vec![ClusterProcess { pid: child.id(), ..process }],
                collectors: vec![],
            },
            token: None,
            admin_token: None,
            children: vec![Supervised {
                kind: ProcessKind::Node,
                index: 0,
                dir_name: "n0".into(),
                extra: vec![],
                child: Some(child),
                phase: Phase::Running { since: Instant::now() },
                restart_delay: RESTART_DELAY_FIRST,
            }],
            launcher,
            restart: true,
            store: None,
        }
    }

    /// Waits until the child has exited (without reaping it: `try_wait` keeps the status).
    fn until_exited(cluster: &mut LocalCluster) {
        let child = cluster.children[0].child.as_mut().expect("a running child");
        while child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The restart the supervisor scheduled, as a wait from `now`.
    fn scheduled_wait(cluster: &LocalCluster, now: Instant) -> Option<Duration> {
        match cluster.children[0].phase {
            Phase::Down { restart_at, .. } => restart_at.map(|at| at - now),
            _ => None,
        }
    }

    #[test]
    fn a_process_that_keeps_dying_waits_longer_each_time_until_it_runs_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = crashing_cluster(dir.path());
        let first_pid = cluster.file.nodes[0].pid;
        // Time is passed in, so the test steps through the schedule without sleeping it.
        let mut now = Instant::now() + STABLE_RUN;
        until_exited(&mut cluster);
        assert!(!cluster.supervise_one(0, now));
        assert_eq!(scheduled_wait(&cluster, now), Some(RESTART_DELAY_FIRST), "it had run a while: 1 s");
        assert!(!cluster.supervise_one(0, now + Duration::from_millis(500)), "not due yet");
        let log = dir.path().join("logs/node-n0.log");
        std::fs::write(&log, "the run that died\n").unwrap();
        let mut waits = vec![];
        for _ in 0..6 {
            now += scheduled_wait(&cluster, now).unwrap();
            assert!(cluster.supervise_one(0, now), "a restart changes the pid in cluster.json");
            assert!(matches!(cluster.children[0].phase, Phase::Starting { .. }));
            assert_ne!(cluster.file.nodes[0].pid, first_pid);
            until_exited(&mut cluster);
            now += Duration::from_millis(100);
            cluster.supervise_one(0, now);
            waits.push(scheduled_wait(&cluster, now).unwrap().as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30], "doubling while it dies before it is ready");
        // Run long enough, then die: back to the first delay.
        now += scheduled_wait(&cluster, now).unwrap();
        cluster.supervise_one(0, now);
        cluster.children[0].phase = Phase::Running { since: now };
        until_exited(&mut cluster);
        now += STABLE_RUN;
        cluster.supervise_one(0, now);
        assert_eq!(scheduled_wait(&cluster, now), Some(RESTART_DELAY_FIRST));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "the run that died\n", "a restart appends to the log of the run before");
    }

    #[test]
    fn no_restart_leaves_it_down() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = crashing_cluster(dir.path());
        cluster.restart = false;
        until_exited(&mut cluster);
        let now = Instant::now();
        cluster.supervise_one(0, now);
        assert!(matches!(cluster.children[0].phase, Phase::Down { restart_at: None, .. }));
        assert!(!cluster.supervise_one(0, now + RESTART_DELAY_MAX * 2));
        assert!(cluster.children[0].child.is_none());
    }

    #[test]
    fn ready_lines_of_every_kind_parse() {
        let node =
            "ampstore node n-1 ready: rpc 127.0.0.1:1 epoch 3 admin 127.0.0.1:2 gossip 127.0.0.1:3 resp 127.0.0.1:4";
        let p = parse_ready(node, 7).unwrap();
        assert_eq!((p.id.as_str(), p.pid, p.rpc.as_str(), p.admin.as_str()), ("n-1", 7, "127.0.0.1:1", "127.0.0.1:2"));
        assert_eq!(p.gossip, "127.0.0.1:3");
        assert_eq!(p.resp.as_deref(), Some("127.0.0.1:4"));
        assert!(parse_ready("ampstore master m-1 ready: rpc 127.0.0.1:1 admin 127.0.0.1:2 gossip a:3", 1).is_some());
        assert!(parse_ready("ampstore node n-1 ready: rpc 127.0.0.1:1", 1).is_none(), "no admin or gossip");
        assert!(parse_ready("", 1).is_none());
    }

    #[test]
    fn exits_name_their_code_or_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exited with status 3");
    }
}
