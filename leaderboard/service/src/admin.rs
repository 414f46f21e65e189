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

/// `service_dependency_up{dependency}`: 1 when the readiness check of that
/// name passed at the last scrape or `/readyz`, 0 when it failed. The same
/// name in every service, so one alert rule covers them all.
static DEPENDENCY_UP: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(
    || {
        prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "service_dependency_up",
                "Whether the named dependency answered this service's readiness check (1) or not (0)",
            ),
            &["dependency"],
        )
        .expect("valid metric")
    },
);

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs every check, records each in `service_dependency_up`, and returns
/// the failures by name.
async fn run_checks(checks: &[ReadyCheck]) -> serde_json::Map<String, serde_json::Value> {
    let mut failures = serde_json::Map::new();
    for check in checks {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.check)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        };
        DEPENDENCY_UP
            .with_label_values(&[check.name])
            .set(i64::from(outcome.is_ok()));
        if let Err(reason) = outcome {
            failures.insert(check.name.to_owned(), reason.into());
        }
    }
    failures
}

/// The admin router: Prometheus text at `/metrics`, liveness, and readiness
/// that is green only when every check passes. Each scrape of `/metrics`
/// runs the readiness checks first, so `service_dependency_up` is current.
pub fn router(registry: prometheus::Registry, checks: Vec<ReadyCheck>) -> Router {
    // Registered once per registry; a second router on the same registry
    // (tests) shares the first one's.
    let _ = registry.register(Box::new(DEPENDENCY_UP.clone()));
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
    run_checks(&state.checks).await;
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
    let failures = run_checks(&state.checks).await;
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
