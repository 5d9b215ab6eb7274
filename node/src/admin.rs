//! The node's admin HTTP port: `/v1/status`, `/v1/ranges` and `/v1/members` as JSON,
//! `/metrics` in Prometheus text.

use std::sync::Arc;

use ampstore_common::protocol::{RangeState, RangeStats};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ranges;
use crate::shared::NodeShared;

pub async fn serve(listener: TcpListener, shared: Arc<NodeShared>, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/ranges", get(ranges))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(error = %e, "admin server stopped");
    }
}

fn range_json(r: &RangeStats) -> Value {
    json!({
        "range_id": r.range_id.0,
        "start": r.range.start.to_string(),
        "end": r.range.end.as_ref().map(|e| e.to_string()),
        "state": r.state.as_str(),
        "keys": r.keys,
        "data_bytes": r.data_bytes,
        "applied_seq": r.applied_seq.0,
        "checkpoint_seq": r.checkpoint_seq.0,
        "log_bytes_since_checkpoint": r.log_bytes_since_checkpoint,
        "error": r.error,
    })
}

async fn status(State(shared): State<Arc<NodeShared>>) -> axum::Json<Value> {
    let stats = ranges::stats(&shared).await;
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
    }))
}

async fn ranges(State(shared): State<Arc<NodeShared>>) -> axum::Json<Value> {
    let stats = ranges::stats(&shared).await;
    axum::Json(Value::Array(stats.ranges.iter().map(range_json).collect()))
}

async fn members(State(shared): State<Arc<NodeShared>>) -> axum::Json<Value> {
    let list = shared.gossip.get().map(|g| g.members()).unwrap_or_default();
    axum::Json(serde_json::to_value(list).unwrap_or(Value::Null))
}

async fn metrics(State(shared): State<Arc<NodeShared>>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        shared.metrics.encode(),
    )
}
