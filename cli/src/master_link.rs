//! Finding and calling the active master from the CLI: `--master ADDR` (repeatable), or
//! else the lease holder's address recorded in the configured backend's meta store.

use std::time::Duration;

use ampstore_common::connection::Connection;
use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, Reply, Role};
use ampstore_server::config::Config;
use ampstore_store::meta;

const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The addresses to try, in order.
pub async fn master_addrs(explicit: &[String], cfg: &Config) -> anyhow::Result<Vec<String>> {
    let listed: Vec<String> =
        explicit.iter().flat_map(|a| a.split(',')).map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    if !listed.is_empty() {
        return Ok(listed);
    }
    let backend = ampstore_server::open_backend(cfg).await?;
    match meta::get_lease(backend.meta.as_ref()).await? {
        Some(lease) => Ok(vec![lease.record.rpc_addr]),
        None => anyhow::bail!("no master has ever run on this store; pass --master ADDR"),
    }
}

/// The role and credential an operator command connects with: the admin role and
/// `admin.token` where it is available (the cluster's own machines); else, on a machine that
/// holds only `cluster.token` (an app server), the client role with it, which allows the
/// data operations and status but not drain. With no tokens at all (development) the admin
/// role is taken as declared.
pub fn operator_credential(cfg: &Config) -> anyhow::Result<(Role, Option<String>)> {
    Ok(match cfg.cluster.tokens()? {
        (_, Some(admin)) => (Role::Admin, Some(admin)),
        (Some(cluster), None) => (Role::Client, Some(cluster)),
        (None, None) => (Role::Admin, None),
    })
}

/// Sends `op` to the active master, following `NotMaster` hints, connecting with `role` and
/// its `token`.
pub async fn call_master(addrs: &[String], (role, token): (Role, Option<String>), op: Op) -> anyhow::Result<Reply> {
    let mut queue: Vec<String> = addrs.to_vec();
    let mut last = None;
    let mut tried = 0;
    while let Some(addr) = queue.first().cloned() {
        queue.remove(0);
        tried += 1;
        if tried > 8 {
            break;
        }
        let conn = match Connection::connect(&addr, role, "ampstore-cli", token.clone()).await {
            Ok(c) => c,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match conn.call(op.clone(), CALL_DEADLINE).await {
            Err(Error::NotMaster { hint: Some(h) }) if !queue.contains(&h.rpc_addr) && h.rpc_addr != addr => {
                queue.insert(0, h.rpc_addr);
            }
            Err(e @ Error::NotMaster { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
            Ok(r) => return Ok(r),
        }
    }
    match last {
        Some(e) => Err(anyhow::anyhow!("no active master reachable at {}: {e}", addrs.join(", "))),
        None => Err(anyhow::anyhow!("no active master reachable at {}", addrs.join(", "))),
    }
}
