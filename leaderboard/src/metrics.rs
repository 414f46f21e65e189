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

/// Time to answer a request, by route: from its head read to its answer
/// built (the body's transfer excluded).
pub static HTTP_SECONDS: LazyLock<prometheus::HistogramVec> = LazyLock::new(|| {
    let histogram = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "leaderboard_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
        )
        .buckets(vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5,
        ]),
        &["route"],
    )
    .expect("valid metric");
    REGISTRY
        .register(Box::new(histogram.clone()))
        .expect("metric registered once");
    histogram
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
