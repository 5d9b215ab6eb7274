//! The master's admin HTTP port: `/v1/status` (the master's view: term, nodes, ranges) as
//! JSON, next to the routes every process shares (`ampstore_server::admin`: `/metrics`,
//! `/v1/members`).

use std::sync::Arc;

use ampstore_server::admin::{self, AdminView};
use ampstore_server::gossip::Gossip;
use ampstore_server::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::driver::Master;

impl AdminView for Master {
    fn admin_metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn admin_gossip(&self) -> Option<&Gossip> {
        self.gossip.get()
    }
}

pub(crate) async fn serve(listener: TcpListener, master: Arc<Master>, shutdown: watch::Receiver<bool>) {
    admin::serve(listener, master, Router::new().route("/v1/status", get(status)), shutdown).await
}

async fn status(State(master): State<Arc<Master>>) -> axum::Json<Value> {
    let s = master.master_status();
    let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("role".into(), json!("master"));
        map.insert("id".into(), json!(s.master_id.to_string()));
        map.insert("gossip".into(), json!(master.gossip_addr()));
        map.insert("gossip_dropped_packets".into(), json!(master.gossip_drops()));
    }
    axum::Json(v)
}
