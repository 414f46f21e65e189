//! The jobs service's Prometheus metrics. Each moves where its log line is written.

use std::sync::LazyLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// Recomputes by outcome: `done`, `failed`.
pub static RECOMPUTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("jobs_recomputes_total", "contest recomputes, by outcome"),
            &["outcome"],
        )
        .unwrap(),
    )
});

/// Seconds per stage of a recompute: load, score, compute, write, redis, total.
pub static STAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "jobs_recompute_stage_seconds",
                "seconds per recompute stage",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 18).unwrap()),
            &["stage"],
        )
        .unwrap(),
    )
});

/// Entries whose live rank differed from the recomputed one, summed.
pub static DIFFERENCES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "jobs_reconcile_differences_total",
                "entries whose live rank or points differed from the recompute",
            ),
            &["contest"],
        )
        .unwrap(),
    )
});

/// The last recompute's differences per contest (0 expected).
pub static LAST_DIFFERENCES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "jobs_reconcile_last_differences",
                "entries that differed in the contest's last recompute",
            ),
            &["contest"],
        )
        .unwrap(),
    )
});

/// When each contest's last snapshot was published (Unix seconds).
pub static LAST_SNAPSHOT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "jobs_last_snapshot_timestamp_seconds",
                "when the contest's last recompute snapshot was published",
            ),
            &["contest"],
        )
        .unwrap(),
    )
});

/// 1 while this node holds the scheduler lease.
pub static LEASE_HELD: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "jobs_scheduler_lease_held",
            "1 while this node is the active scheduler",
        )
        .unwrap(),
    )
});

/// Peak resident memory of the last recompute, in bytes.
pub static PEAK_RSS: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "jobs_recompute_peak_rss_bytes",
            "peak resident memory of the last recompute",
        )
        .unwrap(),
    )
});

/// Touches the metrics that must show from the start: the lease gauge (0
/// until this node holds it: the no-holder alert sums it over nodes) and both
/// recompute outcomes (the failure alert's series exists before any failure).
pub fn init() {
    LazyLock::force(&LEASE_HELD);
    for outcome in ["done", "failed"] {
        RECOMPUTES.with_label_values(&[outcome]);
    }
    LazyLock::force(&STAGE_SECONDS);
}
