//! `ingest run`: the consumer service.
//!
//! Each batch of messages from `match-events` and `contest-entries` goes
//! through the pipeline, then its effects are written in this order:
//!
//! 1. the durable store (applied events, entries, contest versions), one transaction;
//! 2. Redis (player points, sorted sets, histograms, versions, pub/sub notices);
//! 3. dead letters, each awaited until the broker has it;
//! 4. only then the Kafka offsets are committed.
//!
//! State after a restart or rebalance is rebuilt from a snapshot in the store,
//! not from Kafka: the store already holds every applied event of every match
//! and every accepted entry, so a node rebuilds in one read, without replaying
//! topics from offset zero (which retention may have trimmed). A message
//! consumed again after a crash (its effects written, its offset not yet
//! committed) is recognised as a duplicate by `(match, seq)` or by entry id,
//! and Redis is rewritten from the rebuilt state at start-up, so every event
//! counts once in effect. A Redis that lost its keys (flush, restart) is
//! noticed through a marker key and rewritten the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard::hot::{self, HotWriter};
use leaderboard::service::admin::{self, ReadyCheck};
use leaderboard::service::config::{KafkaArgs, RedisArgs, RulesArgs, StoreArgs};
use leaderboard::store::{self, DurableStore};
use rand::Rng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::pipeline::{Effects, Incoming, Pipeline};
use crate::{kafka, topics};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    /// Admin listen address (/metrics, /healthz, /readyz).
    #[arg(
        long = "http-addr",
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub http_addr: SocketAddr,
    /// Seconds the hot keys of a finished contest stay in Redis after its
    /// match ends (0: forever); after that the read API answers it from its
    /// final standings in the durable store.
    #[arg(long, env = "HOT_RETENTION_SECS", default_value_t = 21_600)]
    pub hot_retention_secs: u64,
    /// Kafka consumer group.
    #[arg(long, env = "KAFKA_GROUP", default_value = "ingest")]
    pub group: String,
    /// Static group membership (`group.instance.id`): a restarted instance with
    /// the same id takes its partitions back at once instead of waiting for
    /// the broker to expire its old session. Give each replica a stable id.
    #[arg(long, env = "KAFKA_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Most messages applied in one batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_max: usize,
    /// Longest wait, in milliseconds, for a batch to fill once it has a message.
    #[arg(long, default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// From this many changed entries, a contest's sorted set is refreshed in
    /// chunks after its histogram, version and notice.
    #[arg(long, default_value_t = 50_000)]
    pub large_contest: usize,
}

/// Logs rebalances and turns librdkafka's statistics into the lag gauge.
struct IngestContext;

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, partition_stats) in &stats.partitions {
                if *partition >= 0 && partition_stats.consumer_lag >= 0 {
                    metrics::CONSUMER_LAG
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(partition_stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance starting");
    }

    // Nothing to reload here: this node holds every match and contest of the
    // store in memory, and uncommitted messages are re-read and deduplicated.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance done");
    }
}

/// Retries `attempt` with exponential backoff and jitter until it succeeds or
/// the service shuts down (then `None`). Never gives up on its own: losing a
/// write would lose data, crashing would only repeat the same attempt.
pub async fn retry<T, E, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                metrics::RETRIES.with_label_values(&[what]).inc();
                let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                let wait = delay + Duration::from_millis(jitter);
                tracing::warn!(target_name = what, %error, retry_in_ms = wait.as_millis() as u64, "write failed, retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the service until `shutdown`; `ready` is told the admin address once bound.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    metrics::init();
    let rules = Arc::new(args.rules.load()?);
    let store = store::open_embedded(&args.store.store).context("cannot open the durable store")?;
    let snapshot = store
        .load()
        .await
        .context("cannot read the durable store")?;
    let mut pipeline = Pipeline::from_snapshot(Arc::clone(&rules), snapshot)?;
    tracing::info!(
        contests = pipeline.contests().count(),
        rules = %rules.name,
        "state rebuilt from the durable store"
    );

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let admin_address = listener.local_addr()?;
    let redis_url = args.redis.url.clone();
    let store_check = store.clone();
    let checks = vec![
        ReadyCheck::redis(&redis_url)?,
        ReadyCheck::new("store", move || {
            let store = store_check.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }),
    ];
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin::router(metrics::REGISTRY.clone(), checks),
        shutdown.clone(),
    ));
    tracing::info!(address = %admin_address, "ingest admin listening");

    let Some(connection) = retry("redis-connect", &shutdown, || hot::connect(&redis_url)).await
    else {
        return Ok(());
    };
    let mut hot = HotWriter::new(connection, args.large_contest);
    hot.retention = Duration::from_secs(args.hot_retention_secs);
    if !rewrite_hot_state(&pipeline, &mut hot, &shutdown).await {
        return Ok(());
    }

    let brokers = args.kafka.brokers.clone();
    let created = retry("kafka-topics", &shutdown, || {
        topics::ensure(&brokers, &topics::ALL, args.partitions)
    })
    .await;
    if created.is_none() {
        return Ok(());
    }
    let mut consumer_config = kafka::consumer_config(&args.kafka.brokers, &args.group);
    if let Some(instance) = &args.instance_id {
        consumer_config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<IngestContext> = consumer_config
        .create_with_context(IngestContext)
        .context("cannot create the Kafka consumer")?;
    consumer
        .subscribe(&[topics::MATCH_EVENTS, topics::CONTEST_ENTRIES])
        .context("cannot subscribe")?;
    let producer: FutureProducer = kafka::producer_config(&args.kafka.brokers)
        .create()
        .context("cannot create the dead-letter producer")?;
    tracing::info!(group = %args.group, "consuming match-events and contest-entries");

    let mut alive_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = alive_check.tick() => {
                if !check_alive(&pipeline, &mut hot, &shutdown).await {
                    break;
                }
                continue;
            }
            received = consumer.recv() => received,
        };
        let first = match first {
            Ok(message) => owned(&message),
            Err(error) => {
                tracing::warn!(%error, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let started = Instant::now();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(args.batch_wait_ms);
        while batch.len() < args.batch_max {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(message)) => batch.push(owned(&message)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        for message in &batch {
            metrics::EVENTS_CONSUMED
                .with_label_values(&[message.topic.as_str()])
                .inc();
            pipeline.handle(message);
        }
        let effects = pipeline.finish_batch();
        if !write_effects(&store, &pipeline, &mut hot, &producer, effects, &shutdown).await {
            break;
        }
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        commit(&consumer, &batch);
    }
    tracing::info!("ingest stopping");
    drop(consumer);
    shutdown.cancel();
    admin_task
        .await
        .context("admin task panicked")?
        .context("admin server failed")?;
    Ok(())
}

fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Incoming {
    Incoming {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Writes one batch's effects in order; `false` when shutting down mid-way
/// (nothing is committed then, so the batch is consumed again).
async fn write_effects(
    store: &store::embedded::EmbeddedStore,
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    producer: &FutureProducer,
    effects: Effects,
    shutdown: &CancellationToken,
) -> bool {
    let Effects {
        store: batch,
        matches,
        contests,
        dead_letters,
        finished,
        counts,
    } = effects;
    if !batch.is_empty()
        && retry("store", shutdown, || store.apply(batch.clone()))
            .await
            .is_none()
    {
        return false;
    }
    if !(matches.is_empty() && contests.is_empty()) {
        if !check_alive(pipeline, hot, shutdown).await {
            return false;
        }
        let written = retry("redis", shutdown, || {
            let mut hot = hot.clone();
            let (matches, contests) = (&matches, &contests);
            async move { hot.write(matches, contests).await }
        })
        .await;
        if written.is_none() {
            return false;
        }
    }
    if !finished.is_empty() && !retire(hot, &finished, shutdown).await {
        return false;
    }
    for letter in &dead_letters {
        let value = letter.to_json();
        let sent = retry("dlq", shutdown, || {
            let mut record = FutureRecord::to(letter.topic).payload(&value);
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            async move {
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map_err(|(error, _)| error)
            }
        })
        .await;
        if sent.is_none() {
            return false;
        }
        metrics::EVENTS_DLQ.with_label_values(&[letter.topic]).inc();
        tracing::warn!(
            dlq = letter.topic,
            source_topic = %letter.source_topic,
            partition = letter.partition,
            offset = letter.offset,
            reason = %letter.reason,
            "message sent to the dead-letter topic"
        );
    }
    metrics::EVENTS_APPLIED.inc_by(counts.applied);
    metrics::EVENTS_DUPLICATE.inc_by(counts.duplicates);
    tracing::debug!(
        consumed = counts.consumed,
        applied = counts.applied,
        duplicates = counts.duplicates,
        dead_letters = counts.dead_letters,
        "batch written"
    );
    true
}

/// Rewrites all of Redis from the pipeline's state if Redis lost it.
async fn check_alive(
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    shutdown: &CancellationToken,
) -> bool {
    let alive = retry("redis", shutdown, || {
        let mut hot = hot.clone();
        async move { hot.still_alive().await }
    })
    .await;
    match alive {
        None => false,
        Some(true) => true,
        Some(false) => {
            tracing::warn!("redis lost the hot state, rebuilding it");
            rewrite_hot_state(pipeline, hot, shutdown).await
        }
    }
}

async fn rewrite_hot_state(
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    shutdown: &CancellationToken,
) -> bool {
    let started = Instant::now();
    let (matches, contests) = pipeline.full_refresh();
    let written = retry("redis", shutdown, || {
        let mut hot = hot.clone();
        let (matches, contests) = (&matches, &contests);
        async move {
            hot.still_alive().await?;
            hot.write(matches, contests).await
        }
    })
    .await;
    if written.is_some() && !retire(hot, &pipeline.finished_contests(), shutdown).await {
        return false;
    }
    if written.is_some() {
        metrics::REBUILDS.inc();
        tracing::info!(
            matches = matches.len(),
            contests = contests.len(),
            millis = started.elapsed().as_millis() as u64,
            "redis hot state rewritten"
        );
    }
    written.is_some()
}

/// Starts the hot-state retention clock of finished contests.
async fn retire(
    hot: &HotWriter,
    finished: &[(leaderboard::ContestId, leaderboard::MatchId)],
    shutdown: &CancellationToken,
) -> bool {
    let retention = hot.retention;
    let retired = retry("redis", shutdown, || {
        let mut hot = hot.clone();
        async move { hot.retire(finished, retention).await }
    })
    .await;
    if retired.is_some() && !retention.is_zero() {
        tracing::info!(
            contests = finished.len(),
            retention_secs = retention.as_secs(),
            "finished contests' final standings stored; their hot keys now expire"
        );
    }
    retired.is_some()
}

/// Commits the next offset of every partition in the batch. Asynchronous: a
/// lost commit only means the messages are read again and deduplicated.
fn commit(consumer: &StreamConsumer<IngestContext>, batch: &[Incoming]) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for message in batch {
        let offset = next
            .entry((message.topic.as_str(), message.partition))
            .or_insert(0);
        *offset = (*offset).max(message.offset + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(error) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(%error, topic, partition, "cannot build the commit");
            return;
        }
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Async) {
        tracing::warn!(%error, "offset commit failed; the batch will be deduplicated if read again");
    }
}
