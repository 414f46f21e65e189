//! The ingest service's Prometheus metrics. Each counter moves where its log
//! line is written.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(metric: T) -> T {
    REGISTRY
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

pub static EVENTS_CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("ingest_events_consumed_total", "messages consumed"),
            &["topic"],
        )
        .unwrap(),
    )
});

pub static EVENTS_APPLIED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(IntCounter::new("ingest_events_applied_total", "events and entries applied").unwrap())
});

pub static EVENTS_DUPLICATE: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ingest_events_duplicate_total",
            "events and entries ignored as already applied",
        )
        .unwrap(),
    )
});

pub static EVENTS_DLQ: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "ingest_events_dlq_total",
                "messages sent to a dead-letter topic",
            ),
            &["topic"],
        )
        .unwrap(),
    )
});

pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "ingest_event_apply_seconds",
                "time from a batch's first message to its effects being written (store, Redis, DLQ)",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap()),
        )
        .unwrap(),
    )
});

/// Ball → notice: from a match event's produce time (its Kafka timestamp,
/// kept through the internal topic) to its batch's effects written, the
/// contests' notices published.
pub static EVENT_TO_NOTICE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "ingest_event_to_notice_seconds",
                "time from a match event's produce time to its contests' notices",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).unwrap()),
        )
        .unwrap(),
    )
});

pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "ingest_consumer_lag",
                "messages behind the partition's high watermark",
            ),
            &["topic", "partition"],
        )
        .unwrap(),
    )
});

pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new("ingest_retries_total", "writes retried after a failure"),
            &["target"],
        )
        .unwrap(),
    )
});

pub static REBUILDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ingest_redis_rebuilds_total",
            "full rewrites of the Redis hot state",
        )
        .unwrap(),
    )
});

pub static ROUTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ingest_messages_routed_total",
            "messages forwarded to the internal topic, to the replica that owns their match",
        )
        .unwrap(),
    )
});

pub static OWNED_PARTITIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "ingest_owned_partition",
                "1 for each partition of the internal topic (and so its matches) this replica owns",
            ),
            &["partition"],
        )
        .unwrap(),
    )
});

pub static ASSIGNED_PARTITIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register(
        IntGaugeVec::new(
            Opts::new(
                "ingest_assigned_partitions",
                "partitions of each topic this replica's consumers hold: the router's of \
                 match-events and contest-entries, the scorer's of ingest-by-match \
                 (a replica whose router holds none routes nothing)",
            ),
            &["topic"],
        )
        .unwrap(),
    )
});

pub static STALE_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "ingest_stale_writes_refused_total",
            "match and contest updates Redis refused because it held a newer version",
        )
        .unwrap(),
    )
});

/// Touches every metric so the first scrape lists them all.
pub fn init() {
    LazyLock::force(&EVENTS_CONSUMED);
    LazyLock::force(&EVENTS_APPLIED);
    LazyLock::force(&EVENTS_DUPLICATE);
    // Both dead-letter topics from the start, so a rate over them (and its
    // alert) has a series before the first malformed message.
    for topic in [
        crate::topics::MATCH_EVENTS_DLQ,
        crate::topics::CONTEST_ENTRIES_DLQ,
    ] {
        EVENTS_DLQ.with_label_values(&[topic]);
    }
    LazyLock::force(&EVENT_TO_NOTICE_SECONDS);
    LazyLock::force(&APPLY_SECONDS);
    LazyLock::force(&CONSUMER_LAG);
    LazyLock::force(&RETRIES);
    LazyLock::force(&REBUILDS);
    LazyLock::force(&ROUTED);
    LazyLock::force(&OWNED_PARTITIONS);
    for topic in [
        crate::topics::MATCH_EVENTS,
        crate::topics::CONTEST_ENTRIES,
        crate::topics::BY_MATCH,
    ] {
        ASSIGNED_PARTITIONS.with_label_values(&[topic]);
    }
    LazyLock::force(&STALE_REFUSED);
}
