//! The node's admin HTTP port: `/v1/status` and `/v1/ranges` as JSON, next to the routes
//! every process shares (`ampstore_server::admin`: `/metrics`, `/v1/members`).

use std::sync::Arc;

use ampstore_common::protocol::{RangeState, RangeStats};
use ampstore_server::admin::{self, AdminView};
use ampstore_server::gossip::Gossip;
use ampstore_server::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::NodeShared;

impl AdminView for NodeShared {
    fn admin_metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn admin_gossip(&self) -> Option<&Gossip> {
        self.gossip.get()
    }
}

pub async fn serve(listener: TcpListener, shared: Arc<NodeShared>, shutdown: watch::Receiver<bool>) {
    let routes = Router::new().route("/v1/status", get(status)).route("/v1/ranges", get(ranges));
    admin::serve(listener, shared, routes, shutdown).await
}

fn range_json(r: &RangeStats) -> Value {
    json!({
        "range_id": r.range_id.0,
        "start": r.range.start.to_string(),
        "end": r.range.end.as_ref().map(|e| e.to_string()),
        "state": r.state.as_str(),
        "keys": r.keys,
        "data_bytes": r.data_bytes,
        "write_id_bytes": r.write_id_bytes,
        "applied_seq": r.applied_seq.0,
        "checkpoint_seq": r.checkpoint_seq.0,
        "log_bytes_since_checkpoint": r.log_bytes_since_checkpoint,
        "error": r.error,
    })
}

async fn status(State(shared): State<Arc<NodeShared>>) -> axum::Json<Value> {
    let stats = shared.stats().await;
    let count = |state: RangeState| stats.ranges.iter().filter(|r| r.state == state).count();
    axum::Json(json!({
        "role": "node",
        "id": stats.node_id.to_string(),
        "rpc": shared.rpc_addr,
        "epoch": stats.epoch.0,
        "live": shared.liveness.is_valid(),
        "liveness_ms_left": stats.liveness_ms_left,
        "ranges": {
            "serving": count(RangeState::Serving),
            "loading": count(RangeState::Loading),
            "failed": count(RangeState::Failed),
            "releasing": count(RangeState::Releasing),
        },
        "gossip": shared.gossip.get().map(|g| g.local_addr().to_string()),
        "gossip_dropped_packets": shared.metrics.gossip_drops_total(),
        "keys": stats.ranges.iter().map(|r| r.keys).sum::<u64>(),
        "data_bytes": stats.ranges.iter().map(|r| r.data_bytes).sum::<u64>(),
        "write_id_bytes": stats.ranges.iter().map(|r| r.write_id_bytes).sum::<u64>(),
    }))
}

async fn ranges(State(shared): State<Arc<NodeShared>>) -> axum::Json<Value> {
    let stats = shared.stats().await;
    axum::Json(Value::Array(stats.ranges.iter().map(range_json).collect()))
}
