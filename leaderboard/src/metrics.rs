//! The leaderboard service's Prometheus metrics.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, Opts};

pub use leaderboard_service::metrics::REGISTRY;

/// Requests answered, by route and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new("leaderboard_http_requests_total", "HTTP requests answered"),
        &["route", "status"],
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
});

/// Reads of the hot store by the API's cache, by kind (each coalesced miss once).
pub static BACKEND_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        Opts::new(
            "leaderboard_backend_reads_total",
            "Redis reads made by the read API's cache",
        ),
        &["kind"],
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
});

/// Values read back from Redis that failed validation (answered 503, logged).
pub static CORRUPT_READS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let counter = prometheus::IntCounter::new(
        "leaderboard_corrupt_reads_total",
        "Hot-state values that failed validation when read",
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
});

/// Times the rate limiter's table was emptied because it tracked too many addresses.
pub static RATE_LIMIT_RESETS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    let counter = prometheus::IntCounter::new(
        "leaderboard_rate_limit_resets_total",
        "Rate-limiter tables emptied for tracking more than --rate-max-clients addresses",
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(counter.clone()))
        .expect("metric registered once");
    counter
});
