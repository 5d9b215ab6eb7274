//! What every Ampstore server process (master, node, collector) runs on: the configuration
//! loader ([`config`]), the process identity ([`identity`]) and secrets ([`secrets`]), the RPC
//! accept loop and `Service` trait ([`rpc`]), metrics ([`metrics`]), SWIM gossip
//! ([`gossip`]) and the admin HTTP port's shared routes ([`admin`]: `/metrics`,
//! `/v1/members`).
//!
//! Rules of this crate:
//! - it depends on `ampstore-common` and `ampstore-store`, never on the client crate or on a
//!   server process crate (node, master, collector);
//! - it does I/O for its callers but makes no cluster decisions: those are in the process
//!   crates' pure state types and in `ampstore_common::ownership`.

pub mod admin;
pub mod completions;
pub mod config;
pub mod gossip;
pub mod identity;
pub mod metrics;
#[cfg(any(test, feature = "test-util"))]
pub mod metrics_text;
mod request_metrics;
pub mod rpc;
pub mod secrets;

use ampstore_common::Error;
use ampstore_store::Backend;

/// Opens the storage backend `cfg` selects (see [`Backend::open`]); the admin token is read
/// only when a store process must be reached with it.
pub async fn open_backend(cfg: &config::Config) -> Result<Backend, Error> {
    let admin_token = match (&cfg.backend.kind, &cfg.backend.local.server) {
        (config::BackendKind::Local, Some(_)) => cfg.cluster.tokens()?.1,
        _ => None,
    };
    Backend::open(&cfg.backend, &cfg.local_dir(), admin_token).await
}
