//! What every connection of one RESP listener shares: the client, the credentials, counters.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use ampstore_client::Client;

/// The listener's settings.
#[derive(Clone, Debug)]
pub struct RespSettings {
    /// The cluster (data) credential: `AUTH` with it allows the data commands.
    pub cluster_token: Option<String>,
    /// The admin credential: `AUTH` with it also allows `FLUSHDB` / `FLUSHALL`.
    pub admin_token: Option<String>,
    /// Shown by `INFO` and `HELLO` (the node's id).
    pub server_id: String,
    /// The address the listener is bound to (for `INFO`).
    pub addr: String,
}

pub struct Shared {
    pub client: Client,
    pub settings: RespSettings,
    pub started: Instant,
    pub connected: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub commands_total: AtomicU64,
}

impl Shared {
    pub fn new(client: Client, settings: RespSettings) -> Shared {
        Shared {
            client,
            settings,
            started: Instant::now(),
            connected: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            commands_total: AtomicU64::new(0),
        }
    }

    /// Whether connections must `AUTH` before anything else: the cluster has a credential.
    pub fn needs_auth(&self) -> bool {
        self.settings.cluster_token.is_some() || self.settings.admin_token.is_some()
    }
}
