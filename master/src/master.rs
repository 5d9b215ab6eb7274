//! The master process (DESIGN section 6): `run` starts the lease loop, the control loop,
//! the gossip hints, the RPC service and the admin port around one [`Master`] driver.
//!
//! The master keeps no state that is not in meta: at takeover it reads the routing table and
//! node records, and every write it makes to meta carries a check of its term (the term
//! item, changed only by a takeover), so a deposed master's writes fail.
//!
//! Where things are: decisions in `state.rs` (control) and `commits.rs` (split and merge
//! checks), pure and tested with a fake clock; I/O in `driver.rs` (meta writes, calls to
//! nodes), `control.rs` (the loops) and `service.rs` (requests).

use std::future::Future;
use std::sync::Arc;

use ampstore_common::error::Error;
use ampstore_common::protocol::Role;
use ampstore_server::config::Config;
use ampstore_server::gossip::{Gossip, GossipSettings};
use ampstore_server::identity;
use ampstore_server::rpc;
use tokio::sync::watch;

use crate::driver::Master;

/// Runs a master until `shutdown` resolves. Prints `ampstore master ID ready: rpc ADDR` to
/// stdout once it listens (as a standby until it holds the lease).
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let id = identity::load_or_create(&cfg.data_dir)?;
    let backend = ampstore_server::open_backend(&cfg).await?;
    let (listener, rpc_addr) = rpc::bind(&cfg.master.rpc_addr).await?;
    let (admin_listener, admin_addr) = rpc::bind(&cfg.master.admin_addr).await?;
    let tokens = cfg.cluster.server_tokens()?;
    let master = Arc::new(Master::new(id.clone(), rpc_addr.clone(), cfg.master.clone(), backend, tokens));
    let settings =
        GossipSettings::from_config(&cfg, id.clone(), Role::Master, &cfg.master.gossip_addr, &rpc_addr, &admin_addr)?;
    let gossip = Gossip::start(settings, master.metrics.clone()).await?;
    let gossip_addr = gossip.local_addr();
    let events = gossip.subscribe();
    let _ = master.gossip.set(gossip);
    println!("ampstore master {id} ready: rpc {rpc_addr} admin {admin_addr} gossip {gossip_addr}");
    tracing::info!(%id, %rpc_addr, %admin_addr, %gossip_addr, "master started (standby until it holds the lease)");
    let lease_task = tokio::spawn(master.clone().lease_loop());
    let control_task = tokio::spawn(master.clone().control_loop());
    let hints_task = tokio::spawn(master.clone().gossip_hints(events));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(rpc::serve(listener, master.clone(), stop_rx.clone()));
    let admin = tokio::spawn(crate::admin::serve(admin_listener, master.clone(), stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    lease_task.abort();
    control_task.abort();
    hints_task.abort();
    let _ = server.await;
    let _ = admin.await;
    if let Some(g) = master.gossip.get() {
        g.leave().await;
    }
    Ok(())
}
