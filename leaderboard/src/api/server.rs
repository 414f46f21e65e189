//! Building and running `leaderboard serve`: the read API, the rate limit,
//! the notice follower and the admin routes on one listener.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cache::{follow_notices, NodeCache};
use super::ratelimit::{self, RateLimit};
use super::{router, ApiState};
use crate::hot;
use crate::metrics;
use crate::service::admin::{self, ReadyCheck};
use crate::store::StoreUri;

/// Tuning of the read API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Requests per second allowed to one client (token bucket); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Burst a client may spend at once.
    #[arg(long, env = "RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
    /// Tell clients apart by the first X-Forwarded-For address (behind a trusted proxy).
    #[arg(long, env = "TRUST_FORWARDED")]
    pub trust_forwarded: bool,
    /// Longest a cached snapshot lives should a change notice be lost, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub max_staleness_ms: u64,
    /// Benchmark baseline only: answer `GET …/entries/{id}` and leaderboard
    /// pages with one Redis round trip per request, bypassing the node cache.
    #[arg(long, hide = true)]
    pub per_request_redis: bool,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            rate_limit: 1000,
            rate_burst: 2000,
            trust_forwarded: false,
            max_staleness_ms: 5000,
            per_request_redis: false,
        }
    }
}

/// The whole application: API routes (rate-limited) and admin routes.
pub fn app(
    cache: NodeCache,
    redis_url: &str,
    store: &str,
    options: &ServeOptions,
) -> anyhow::Result<Router> {
    let store_uri = StoreUri::parse(store)?;
    let checks = vec![
        ReadyCheck::redis(redis_url)?,
        ReadyCheck::new("store", move || {
            let uri = store_uri.clone();
            async move {
                match uri {
                    // The embedded database has one writer, `ingest run`; the API
                    // checks that it exists and can be read.
                    StoreUri::File(path) => std::fs::metadata(path.join("leaderboard.redb"))
                        .map(|_| ())
                        .map_err(|e| format!("{}: {e}", path.display())),
                    StoreUri::Scylla { .. } => {
                        Err("the Scylla store is not part of this build".to_owned())
                    }
                }
            }
        }),
    ];
    let mut api = router(ApiState {
        cache,
        per_request_redis: options.per_request_redis,
    });
    if let (Some(per_second), Some(burst)) = (
        NonZeroU32::new(options.rate_limit),
        NonZeroU32::new(options.rate_burst),
    ) {
        let limit = RateLimit::new(per_second, burst, options.trust_forwarded);
        api = api.layer(axum::middleware::from_fn_with_state(
            limit,
            ratelimit::limit,
        ));
    }
    Ok(admin::router(metrics::REGISTRY.clone(), checks).merge(api))
}

/// Serves until `shutdown`.
pub async fn run(
    listener: TcpListener,
    redis_url: &str,
    store: &str,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = &*metrics::HTTP_REQUESTS;
    let _ = &*metrics::BACKEND_READS;
    let connection = hot::connect(redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
    let cache = NodeCache::new(connection, Duration::from_millis(options.max_staleness_ms));
    let follower = tokio::spawn(follow_notices(
        cache.clone(),
        redis_url.to_owned(),
        shutdown.clone(),
    ));
    let app = app(cache, redis_url, store, &options)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, rate_limit = options.rate_limit, "leaderboard listening");
    serve_http1(listener, app, shutdown.clone()).await;
    shutdown.cancel();
    let _ = follower.await;
    tracing::info!("leaderboard stopped");
    Ok(())
}

/// Serves `app` over plain HTTP/1.1 connections (the API's clients and load
/// balancers speak HTTP/1.1; skipping the HTTP/2 preface detection of
/// `axum::serve` is measurably cheaper per request). Each request carries its
/// peer address for the rate limit. On `shutdown` it stops accepting and lets
/// every connection finish its request in flight.
pub async fn serve_http1(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;

    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}
