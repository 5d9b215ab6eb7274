//! `ampstore collector` (DESIGN section 9): takes non-transactional pushes and enqueues
//! from clients, batches them per range for `collector.window_ms` (or until
//! `collector.batch_bytes_max`), sends each batch to the range's node as one `Batch`
//! request (the node's group commit puts it in few log entries), and answers each client
//! only once its operation is durable. Operations of a batch the node refuses (the range
//! moved, the node died) are sent again one by one through the client's routing; they are
//! idempotent (push ids, task ids), so nothing is applied twice.
//!
//! Rules of this crate: it depends on `ampstore-common`, `ampstore-server` and the client
//! crate (whose routing it reuses), never on the node or the master; an operation is
//! answered only once it is durable; every queue it keeps is bounded by a named limit
//! (`common::limits`).
//!
//! It joins gossip with role `collector`, so clients find it (`Client::discover_collectors`),
//! and finds the masters through gossip unless `collector.masters` names them.

pub mod batcher;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ampstore_client::{Client, ClientConfig};
use ampstore_common::error::Error;
use ampstore_common::limits::{BATCH_OPS_MAX, COLLECTOR_WAITING_MAX};
use ampstore_common::protocol::{Op, PROTOCOL_VERSION, Reply, Role, ServerInfo};
use ampstore_common::wire::data::Batch;
use ampstore_common::{NodeId, lists, queue};
use ampstore_server::config::Config;
use ampstore_server::gossip::{Gossip, GossipSettings, MemberState};
use ampstore_server::identity;
use ampstore_server::metrics::Metrics;
use ampstore_server::rpc::{self, Service};
use tokio::sync::{Notify, oneshot, watch};

use batcher::{Batcher, Destination};

/// How long a collector waits for gossip to name a master at start.
const MASTERS_WAIT: Duration = Duration::from_secs(20);

struct Waiting {
    op: Op,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

pub struct Collector {
    id: NodeId,
    client: OnceLock<Client>,
    batcher: Mutex<Batcher<Waiting>>,
    wake: Notify,
    /// A client's hello must present it, when set (`cluster.token`).
    cluster_token: Option<String>,
    /// Every other role's hello must present it; the collector presents it to nodes.
    admin_token: Option<String>,
    metrics: Arc<Metrics>,
    gossip: OnceLock<Gossip>,
}

/// Runs a collector until `shutdown` resolves. Prints `ampstore collector ID ready: rpc ADDR
/// admin ADDR gossip ADDR` once it serves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let id = identity::load_or_create(&cfg.data_dir)?;
    let (listener, rpc_addr) = rpc::bind(&cfg.collector.rpc_addr).await?;
    let (admin_listener, admin_addr) = rpc::bind(&cfg.collector.admin_addr).await?;
    let c = &cfg.collector;
    let tokens = cfg.cluster.server_tokens()?;
    let collector = Arc::new(Collector {
        id: id.clone(),
        client: OnceLock::new(),
        batcher: Mutex::new(Batcher::new(
            Duration::from_millis(c.window_ms),
            c.batch_bytes_max as usize,
            BATCH_OPS_MAX,
        )),
        wake: Notify::new(),
        cluster_token: tokens.0.clone(),
        admin_token: tokens.1.clone(),
        metrics: Metrics::new(),
        gossip: OnceLock::new(),
    });
    let settings =
        GossipSettings::from_config(&cfg, id.clone(), Role::Collector, &c.gossip_addr, &rpc_addr, &admin_addr)?;
    let gossip = Gossip::start(settings, collector.metrics.clone()).await?;
    let gossip_addr = gossip.local_addr();
    let _ = collector.gossip.set(gossip);
    let masters = if c.masters.is_empty() { collector.masters_from_gossip().await? } else { c.masters.clone() };
    let mut client_cfg = ClientConfig::new(&masters);
    // Batches are an internal operation: the collector's role and the admin token (also for
    // locating, which any role may do).
    client_cfg.role = Role::Collector;
    client_cfg.token = tokens.1;
    client_cfg.name = format!("collector {id}");
    let client = Client::with_config(client_cfg).await?;
    let _ = collector.client.set(client);
    println!("ampstore collector {id} ready: rpc {rpc_addr} admin {admin_addr} gossip {gossip_addr}");
    tracing::info!(%id, %rpc_addr, %admin_addr, %gossip_addr, ?masters, "collector serving");
    let flusher = tokio::spawn(collector.clone().flush_loop());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(rpc::serve(listener, collector.clone(), stop_rx.clone()));
    let admin = tokio::spawn(admin_serve(admin_listener, collector.clone(), stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    // What is still waiting goes out before the process ends.
    let rest = collector.batcher.lock().unwrap_or_else(|p| p.into_inner()).drain();
    for (dest, items) in rest {
        collector.clone().send(dest, items).await;
    }
    flusher.abort();
    let _ = admin.await;
    if let Some(g) = collector.gossip.get() {
        g.leave().await;
    }
    Ok(())
}

impl Collector {
    async fn masters_from_gossip(&self) -> Result<Vec<String>, Error> {
        let deadline = Instant::now() + MASTERS_WAIT;
        loop {
            let masters: Vec<String> = self
                .gossip
                .get()
                .map(|g| g.members())
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.role == Some(Role::Master) && m.state == MemberState::Alive)
                .filter_map(|m| m.rpc)
                .collect();
            if !masters.is_empty() {
                return Ok(masters);
            }
            if Instant::now() >= deadline {
                return Err(Error::unavailable(
                    "no master found through gossip (set gossip.seeds, or collector.masters)",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn client(&self) -> Result<&Client, Error> {
        self.client.get().ok_or_else(|| Error::unavailable("the collector is starting"))
    }

    /// Queues an operation for its range's next batch; answers when it is durable.
    async fn collect(self: &Arc<Self>, op: Op) -> Result<Reply, Error> {
        op.validate()?;
        let (key, bytes) = match &op {
            Op::Push { key, element, push_id } => (lists::element_key(key, *push_id), element.len() + key.len()),
            Op::Enqueue { queue, shard, task_id, payload } => {
                (queue::task_key(queue, *shard, *task_id), payload.len() + queue.len())
            }
            _ => return Err(Error::invalid("a collector takes pushes and enqueues only")),
        };
        let loc = self.client()?.locate_cached(&key).await?;
        let dest = Destination { node_addr: loc.node_addr, range_id: loc.range_id };
        let (tx, rx) = oneshot::channel();
        let full = {
            let mut batcher = self.batcher.lock().unwrap_or_else(|p| p.into_inner());
            if batcher.is_full(COLLECTOR_WAITING_MAX) {
                return Err(Error::unavailable(format!(
                    "this collector holds {COLLECTOR_WAITING_MAX} operations already"
                )));
            }
            batcher.add(dest, Waiting { op, reply: tx }, bytes, Instant::now())
        };
        match full {
            Some((dest, items)) => {
                tokio::spawn(self.clone().send(dest, items));
            }
            None => self.wake.notify_one(),
        }
        rx.await.map_err(|_| Error::unavailable("the collector dropped the operation"))?
    }

    async fn flush_loop(self: Arc<Self>) {
        loop {
            let next = self.batcher.lock().unwrap_or_else(|p| p.into_inner()).next_due();
            match next {
                None => self.wake.notified().await,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = self.wake.notified() => continue,
                    }
                }
            }
            let due = self.batcher.lock().unwrap_or_else(|p| p.into_inner()).due(Instant::now());
            for (dest, items) in due {
                tokio::spawn(self.clone().send(dest, items));
            }
        }
    }

    /// Sends one batch; operations the node did not take go again one by one.
    async fn send(self: Arc<Self>, dest: Destination, items: Vec<Waiting>) {
        let Ok(client) = self.client() else { return };
        let ops: Vec<Op> = items.iter().map(|w| w.op.clone()).collect();
        let n = ops.len();
        let results = match client.call_node(&dest.node_addr, Batch { ops }).await {
            Ok(results) if results.len() == n => results.into_iter().map(Some).collect(),
            Ok(results) => {
                tracing::warn!(
                    results = results.len(),
                    ops = n,
                    "a batch got an answer of the wrong length; sending its operations one by one"
                );
                vec![None; n]
            }
            Err(e) => {
                tracing::info!(node = %dest.node_addr, error = %e, "a batch failed; sending its operations one by one");
                vec![None; n]
            }
        };
        for (w, result) in items.into_iter().zip(results) {
            match result {
                Some(Ok(reply)) => {
                    let _ = w.reply.send(Ok(reply));
                }
                Some(Err(e)) if !e.is_retryable() => {
                    let _ = w.reply.send(Err(e));
                }
                _ => {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let _ = w.reply.send(direct(&client, w.op).await);
                    });
                }
            }
        }
    }
}

/// One operation through the client's own routing and retries.
async fn direct(client: &Client, op: Op) -> Result<Reply, Error> {
    match op {
        Op::Push { key, element, push_id } => {
            client.push_with_id(key, element, push_id).await.map(|version| Reply::Written { version })
        }
        Op::Enqueue { queue, shard, task_id, payload } => client
            .enqueue_with_id(&queue, shard, task_id, payload)
            .await
            .map(|()| Reply::Written { version: ampstore_common::Version { seq: ampstore_common::Seq(0), index: 0 } }),
        other => Err(Error::invalid(format!("a collector cannot forward {}", other.name()))),
    }
}

impl Service for Collector {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.id.clone(), role: Role::Collector }
    }

    async fn handle(self: &Arc<Self>, op: Op) -> Result<Reply, Error> {
        match op {
            Op::Ping => Ok(Reply::Pong),
            op @ (Op::Push { .. } | Op::Enqueue { .. }) => self.collect(op).await,
            other => {
                Err(Error::invalid(format!("this is a collector: it takes pushes and enqueues, not {}", other.name())))
            }
        }
    }

    fn cluster_token(&self) -> Option<&str> {
        self.cluster_token.as_deref()
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }
}

impl ampstore_server::admin::AdminView for Collector {
    fn admin_metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn admin_gossip(&self) -> Option<&Gossip> {
        self.gossip.get()
    }
}

/// The collector's admin HTTP port: `/v1/status` as JSON, next to the routes every process
/// shares (`ampstore_server::admin`: `/metrics`, `/v1/members`).
async fn admin_serve(listener: tokio::net::TcpListener, collector: Arc<Collector>, shutdown: watch::Receiver<bool>) {
    use axum::Router;
    use axum::extract::State;
    use axum::routing::get;
    use serde_json::json;
    async fn status(State(c): State<Arc<Collector>>) -> axum::Json<serde_json::Value> {
        let waiting = c.batcher.lock().unwrap_or_else(|p| p.into_inner()).waiting();
        axum::Json(json!({"role": "collector", "id": c.id.to_string(), "waiting": waiting}))
    }
    let routes = Router::new().route("/v1/status", get(status));
    ampstore_server::admin::serve(listener, collector, routes, shutdown).await
}
