//! Building and running `leaderboard serve`: the read API, the rate limit,
//! the notice follower and the admin routes on one listener.

use std::net::SocketAddr;
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
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await;
    shutdown.cancel();
    let _ = follower.await;
    served.context("http server failed")?;
    tracing::info!("leaderboard stopped");
    Ok(())
}
