//! Finding and calling the active master from the CLI: `--master ADDR` (repeatable), or
//! else the lease holder's address recorded in the configured backend's meta store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::protocol::Role;
use ampstore_common::wire::Call;
use ampstore_common::wire::masters::ActiveMaster;
use ampstore_common::wire::pool::Pool;
use ampstore_server::config::Config;
use ampstore_store::meta;

const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// The call as a whole may ask this many masters (given and hinted) for `CALL_DEADLINE` each.
const MASTERS_ASKED_MAX: u32 = 8;

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

/// Sends `req` to the active master, following `NotMaster` hints, connecting with `role`
/// and its `token`: each master is asked at most once, each attempt within `CALL_DEADLINE`.
pub async fn call_master<C: Call>(
    addrs: &[String],
    (role, token): (Role, Option<String>),
    req: C,
) -> anyhow::Result<C::Reply> {
    let pool = Arc::new(Pool::new(role, "ampstore-cli", token));
    let masters = ActiveMaster::new(addrs.to_vec(), pool)?.attempt_limit(CALL_DEADLINE).one_pass();
    let deadline = Instant::now() + CALL_DEADLINE * MASTERS_ASKED_MAX;
    match masters.call_typed(req, deadline).await {
        Ok(r) => Ok(r),
        Err(e @ (Error::NotMaster { .. } | Error::Unavailable { .. })) => {
            Err(anyhow::anyhow!("no active master reachable at {}: {e}", addrs.join(", ")))
        }
        Err(e) => Err(e.into()),
    }
}
