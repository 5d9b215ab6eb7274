//! The admin HTTP port every server process has: its own routes (`/v1/status`, and the
//! node's `/v1/ranges`) plus the routes they all share, served here once:
//! - `/metrics`: the process's metrics in Prometheus (OpenMetrics) text;
//! - `/v1/members`: the cluster as this process's gossip sees it, as JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gossip::Gossip;
use crate::metrics::Metrics;

/// The content type of `/metrics` (what Prometheus asks for).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the shared routes read from a process.
pub trait AdminView: Send + Sync + 'static {
    fn admin_metrics(&self) -> &Metrics;
    /// `None` until gossip runs (it starts after the ports are bound).
    fn admin_gossip(&self) -> Option<&Gossip>;
}

/// The process's own `routes` with the shared ones added, over `state`.
pub fn router<S: AdminView>(state: Arc<S>, routes: Router<Arc<S>>) -> Router {
    routes.route("/metrics", get(metrics::<S>)).route("/v1/members", get(members::<S>)).with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` changes.
pub async fn serve<S: AdminView>(
    listener: TcpListener,
    state: Arc<S>,
    routes: Router<Arc<S>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, router(state, routes)).with_graceful_shutdown(stop).await {
        tracing::warn!(error = %e, "admin server stopped");
    }
}

async fn metrics<S: AdminView>(State(s): State<Arc<S>>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], s.admin_metrics().encode())
}

async fn members<S: AdminView>(State(s): State<Arc<S>>) -> axum::Json<serde_json::Value> {
    let list = s.admin_gossip().map(|g| g.members()).unwrap_or_default();
    axum::Json(serde_json::to_value(list).unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct Process {
        metrics: Arc<Metrics>,
    }

    impl AdminView for Process {
        fn admin_metrics(&self) -> &Metrics {
            &self.metrics
        }
        fn admin_gossip(&self) -> Option<&Gossip> {
            None
        }
    }

    async fn fetch(app: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = app.oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("served");
        let status = response.status();
        let content_type =
            response.headers().get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_string());
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, content_type, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn shared_routes_serve_metrics_and_members_next_to_the_process_routes() {
        let process = Arc::new(Process { metrics: Metrics::new() });
        process.metrics.log_append(3, 300);
        let own = Router::new().route("/v1/status", get(|| async { "own status" }));
        let app = router(process, own);

        let (status, content_type, body) = fetch(app.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(body.ends_with("# EOF\n"), "OpenMetrics text ends with EOF: {body}");
        let samples = crate::metrics_text::parse_text(&body).expect("the exposition parses");
        let sum = |name| crate::metrics_text::sum(&samples, name, &[]);
        assert_eq!(sum("ampstore_log_appends_total"), 1.0, "the process's own metrics");
        assert_eq!(sum("ampstore_log_batch_bytes_sum"), 300.0);

        let (status, _, body) = fetch(app.clone(), "/v1/members").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "[]", "no gossip yet: no members");

        let (status, _, body) = fetch(app.clone(), "/v1/status").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "own status"));

        let (status, _, _) = fetch(app, "/v1/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
