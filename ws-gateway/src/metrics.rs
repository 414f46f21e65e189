//! The gateway's Prometheus metrics, in the process registry that `/metrics`
//! exports.

use std::sync::LazyLock;

use leaderboard_service::metrics::REGISTRY;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

fn register<M: prometheus::core::Collector + Clone + 'static>(metric: M) -> M {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// Open WebSocket connections.
pub static CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new("ws_connections", "Open WebSocket connections").expect("valid metric"))
});

/// Subscriptions held by local clients.
pub static SUBSCRIPTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new("ws_subscriptions", "Contest subscriptions of local clients")
            .expect("valid metric"),
    )
});

/// Contests with at least one local subscriber (= Redis channels subscribed).
pub static ROOMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(IntGauge::new("ws_contests", "Contests with local subscribers").expect("valid metric"))
});

/// Frames written to clients, by type.
pub static FRAMES_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("ws_frames_sent_total", "Frames written to clients"),
            &["type"],
        )
        .expect("valid metric"),
    )
});

/// Contest states read and serialized (once per contest and version, shared by its clients).
pub static STATES_BUILT: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_states_built_total",
            "Contest states read from Redis and serialized for fan-out",
        )
        .expect("valid metric"),
    )
});

/// States a fan-out wrote straight into a caught-up client's socket (no
/// session wake-up); also counted in `ws_frames_sent_total`.
pub static WRITTEN_DIRECTLY: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_states_written_directly_total",
            "States the fan-out wrote straight into a caught-up client's socket",
        )
        .expect("valid metric"),
    )
});

/// Unsent states replaced by newer ones (slow clients).
pub static CONFLATED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_conflated_total",
            "Unsent states replaced by a newer one for a slow client",
        )
        .expect("valid metric"),
    )
});

/// Connections closed by the gateway, by reason.
pub static CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("ws_closed_total", "Connections closed by the gateway"),
            &["reason"],
        )
        .expect("valid metric"),
    )
});

/// Error frames sent, by code.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("ws_error_frames_total", "Error frames sent to clients"),
            &["code"],
        )
        .expect("valid metric"),
    )
});

/// Upgrades refused because the node is at its connection limit.
pub static REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_refused_total",
            "Upgrades refused at the connection limit",
        )
        .expect("valid metric"),
    )
});

/// Reconnections of the node's Redis pub/sub connection.
pub static REDIS_RECONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_redis_reconnects_total",
            "Reconnections of the pub/sub connection to Redis",
        )
        .expect("valid metric"),
    )
});

/// From a version notice until one event loop has written the new state into
/// (or queued it for) each of its clients: observed once per loop and fan-out.
pub static FANOUT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "ws_fanout_seconds",
                "Time from a version notice until one event loop has written the new state into (or queued it for) each of its clients",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .expect("valid metric"),
    )
});

/// Touches every metric so `/metrics` lists them from the start.
pub fn init() {
    let _ = (
        &*CONNECTIONS,
        &*SUBSCRIPTIONS,
        &*ROOMS,
        &*FRAMES_SENT,
        &*STATES_BUILT,
        &*CONFLATED,
        &*WRITTEN_DIRECTLY,
        &*CLOSED,
        &*ERRORS,
        &*REFUSED,
        &*REDIS_RECONNECTS,
        &*FANOUT_SECONDS,
    );
    // The close reasons and frame types from the start: their rates (and the
    // slow-client alert) have series before the first close.
    for reason in ["slow", "idle", "shutdown", "too_large"] {
        CLOSED.with_label_values(&[reason]);
    }
}

/// Values read back from Redis that failed validation (not served, logged).
pub static CORRUPT_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_corrupt_reads_total",
            "Hot-state values that failed validation when read",
        )
        .expect("valid metric"),
    )
});

/// Room refreshes that panicked (the room is retried on its next notice).
pub static REFRESH_PANICS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ws_refresh_panics_total",
            "Room refreshes that panicked and were reset",
        )
        .expect("valid metric"),
    )
});
