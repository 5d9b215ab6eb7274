//! The master's admin HTTP port: `/v1/status` (the master's view: term, nodes, ranges),
//! `/v1/members` (gossip) as JSON, and `/metrics` in Prometheus text.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::driver::Master;

pub(crate) async fn serve(listener: TcpListener, master: Arc<Master>, mut shutdown: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics))
        .with_state(master);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(error = %e, "admin server stopped");
    }
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

async fn members(State(master): State<Arc<Master>>) -> axum::Json<Value> {
    axum::Json(serde_json::to_value(master.members()).unwrap_or(Value::Null))
}

async fn metrics(State(master): State<Arc<Master>>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        master.metrics_text(),
    )
}
