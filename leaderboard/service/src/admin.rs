//! The admin routes every service exposes: `/metrics`, `/healthz`, `/readyz`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named dependency check for `/readyz` (Redis answers, the store answers, …).
#[derive(Clone)]
pub struct ReadyCheck {
    pub name: &'static str,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyCheck")
            .field("name", &self.name)
            .finish()
    }
}

impl ReadyCheck {
    pub fn new<F, Fut>(name: &'static str, check: F) -> ReadyCheck
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadyCheck {
            name,
            check: Arc::new(move || Box::pin(check())),
        }
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    registry: prometheus::Registry,
    checks: Arc<Vec<ReadyCheck>>,
}

/// The admin router: Prometheus text at `/metrics`, liveness, and readiness
/// that is green only when every check passes.
pub fn router(registry: prometheus::Registry, checks: Vec<ReadyCheck>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            registry,
            checks: Arc::new(checks),
        })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let families = state.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("cannot encode metrics: {error}") })),
        )
            .into_response(),
    }
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let mut failures = serde_json::Map::new();
    for check in state.checks.iter() {
        if let Err(reason) = (check.check)().await {
            failures.insert(check.name.to_owned(), reason.into());
        }
    }
    if failures.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "failing": failures })),
        )
            .into_response()
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
}
