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
use leaderboard_hot::{self as hot, HotWriter};
use leaderboard_service::admin::{self, ReadyCheck};
use leaderboard_service::backoff::{self, Failure, Health, Stopped};
use leaderboard_service::config::{KafkaArgs, RedisArgs, RulesArgs, StoreArgs};
use leaderboard_service::shutdown::Supervisor;
use leaderboard_store::{self as store, SharedStore};
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
    /// Seconds a contest stays in memory after its final standings are
    /// stored (entries produced before the match ended may still arrive from
    /// another partition and are then taken); after that it is dropped, and
    /// later entries go to the dead-letter topic.
    #[arg(long, env = "KEEP_FINISHED_SECS", default_value_t = 600)]
    pub keep_finished_secs: u64,
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

/// Why the consumer loop stopped before its work was done.
#[derive(Debug)]
enum Stop {
    /// The service is shutting down: nothing more is committed, the batch
    /// in hand is read again after a restart.
    Shutdown,
    /// A permanent failure: retrying would only repeat it, so the service
    /// exits non-zero with the reason.
    Failed(anyhow::Error),
}

/// How a dependency's error is told transient from permanent.
trait Classify {
    fn failure(&self) -> Failure;
}

impl Classify for redis::RedisError {
    fn failure(&self) -> Failure {
        if hot::is_permanent(self) {
            Failure::Permanent
        } else {
            Failure::Transient
        }
    }
}

impl Classify for store::StoreError {
    fn failure(&self) -> Failure {
        match self {
            store::StoreError::Backend { .. } => Failure::Transient,
            store::StoreError::InvalidUri(_)
            | store::StoreError::Unsupported(_)
            | store::StoreError::Corrupt { .. } => Failure::Permanent,
        }
    }
}

impl Classify for rdkafka::error::KafkaError {
    fn failure(&self) -> Failure {
        kafka::failure(self.rdkafka_error_code())
    }
}

impl Classify for topics::TopicsError {
    fn failure(&self) -> Failure {
        self.failure
    }
}

/// What every retry loop of the service shares: the shutdown token and the
/// health `/readyz` reports.
#[derive(Debug, Clone)]
struct Retrier {
    shutdown: CancellationToken,
    health: Health,
}

impl Retrier {
    /// Retries `attempt` with the service's backoff while it fails
    /// transiently; a permanent failure stops the service. Never gives up on
    /// a transient one: losing a write would lose data, crashing would only
    /// repeat the same attempt.
    async fn retry<T, E, F, Fut>(&self, what: &'static str, attempt: F) -> Result<T, Stop>
    where
        E: Classify + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        backoff::retry(
            what,
            &self.shutdown,
            &self.health,
            E::failure,
            || metrics::RETRIES.with_label_values(&[what]).inc(),
            attempt,
        )
        .await
        .map_err(|stopped| match stopped {
            Stopped::Shutdown => Stop::Shutdown,
            Stopped::Permanent(error) => {
                Stop::Failed(anyhow::anyhow!("{what} failed permanently: {error}"))
            }
        })
    }
}

/// Runs the service until `shutdown`. Returns an error, and the process
/// exits non-zero with it, when a dependency fails permanently.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    metrics::init();
    let rules = Arc::new(args.rules.load()?);
    let store = store::open(&args.store.store)
        .await
        .context("cannot open the durable store")?;
    // What finished within the keep-finished window is loaded in full, as
    // if this node had not restarted; anything older only by id.
    let keep_finished_ms = args.keep_finished_secs.saturating_mul(1000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let snapshot = store
        .load(now_ms.saturating_sub(keep_finished_ms))
        .await
        .context("cannot read the durable store")?;
    let pipeline = tokio::task::spawn_blocking({
        let rules = Arc::clone(&rules);
        move || Pipeline::from_snapshot(rules, snapshot)
    })
    .await
    .context("rebuilding the state panicked")??;
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
    let retrier = Retrier {
        shutdown: shutdown.clone(),
        health: Health::new(),
    };
    let health = retrier.health.clone();
    let checks = vec![
        ReadyCheck::new("redis", hot::pinger(&redis_url)?),
        ReadyCheck::new("store", move || {
            let store = store_check.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        }),
        // Red while any write or connection keeps failing, even when Redis
        // and the store still answer a ping.
        ReadyCheck::new("pipeline", move || {
            let health = health.clone();
            async move { health.check() }
        }),
    ];
    // The first of the two to fail stops the other; the process exits
    // non-zero with its reason.
    let mut tasks = Supervisor::new(shutdown.clone());
    let admin_stop = shutdown.clone();
    tasks.spawn("the admin server", async move {
        admin::serve(
            listener,
            admin::router(metrics::REGISTRY.clone(), checks),
            admin_stop,
        )
        .await
        .context("cannot serve the admin routes")
    });
    tracing::info!(address = %admin_address, "ingest admin listening");
    tasks.spawn("the consumer", async move {
        let outcome = consume(args, store, pipeline, redis_url, &retrier).await;
        tracing::info!("ingest stopping");
        // The admin server ends with the consumer.
        retrier.shutdown.cancel();
        match outcome {
            Ok(()) | Err(Stop::Shutdown) => Ok(()),
            Err(Stop::Failed(error)) => Err(error),
        }
    });
    tasks.wait().await
}

/// Connects, rewrites Redis, and consumes until shutdown or a permanent failure.
async fn consume(
    args: RunArgs,
    store: SharedStore,
    mut pipeline: Pipeline,
    redis_url: String,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let connection = retrier
        .retry("redis-connect", || hot::connect(&redis_url))
        .await?;
    let mut hot = HotWriter::new(connection, args.large_contest);
    hot.retention = Duration::from_secs(args.hot_retention_secs);
    rewrite_hot_state(&pipeline, &mut hot, retrier).await?;

    let brokers = args.kafka.brokers.clone();
    retrier
        .retry("kafka-topics", || {
            topics::ensure(&brokers, &topics::ALL, args.partitions)
        })
        .await?;
    let failed = |what: &str| {
        let what = what.to_owned();
        move |error: rdkafka::error::KafkaError| Stop::Failed(anyhow::anyhow!("{what}: {error}"))
    };
    let mut consumer_config = kafka::consumer_config(&args.kafka.brokers, &args.group);
    if let Some(instance) = &args.instance_id {
        consumer_config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer<IngestContext> = consumer_config
        .create_with_context(IngestContext)
        .map_err(failed("cannot create the Kafka consumer"))?;
    consumer
        .subscribe(&[topics::MATCH_EVENTS, topics::CONTEST_ENTRIES])
        .map_err(failed("cannot subscribe"))?;
    let producer: FutureProducer = kafka::producer_config(&args.kafka.brokers)
        .create()
        .map_err(failed("cannot create the dead-letter producer"))?;
    tracing::info!(group = %args.group, "consuming match-events and contest-entries");

    let mut alive_check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let first = tokio::select! {
            _ = retrier.shutdown.cancelled() => break,
            _ = alive_check.tick() => {
                check_alive(&pipeline, &mut hot, retrier).await?;
                let grace = Duration::from_secs(args.keep_finished_secs);
                if let Some(before) = Instant::now().checked_sub(grace) {
                    let evicted = pipeline.evict_finished(before);
                    if evicted > 0 {
                        tracing::info!(contests = evicted, "finished contests left memory");
                    }
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
        }
        let (returned, batch, effects) =
            apply_batch(pipeline, batch).await.map_err(Stop::Failed)?;
        pipeline = returned;
        write_effects(&store, &pipeline, &mut hot, &producer, effects, retrier).await?;
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        commit(&consumer, &batch);
    }
    Ok(())
}

/// Applies a batch to the pipeline and returns the pipeline, the batch and
/// its effects. Scoring, re-ranking every entry of every touched contest and
/// sorting final standings is CPU work: it runs on a blocking thread, so the
/// admin routes and the consumer's I/O never wait behind it.
pub async fn apply_batch(
    mut pipeline: Pipeline,
    batch: Vec<Incoming>,
) -> anyhow::Result<(Pipeline, Vec<Incoming>, Effects)> {
    tokio::task::spawn_blocking(move || {
        for message in &batch {
            pipeline.handle(message);
        }
        let effects = pipeline.finish_batch();
        (pipeline, batch, effects)
    })
    .await
    .map_err(|error| anyhow::anyhow!("applying a batch panicked: {error}"))
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

/// Writes one batch's effects in order; stops when shutting down mid-way
/// (nothing is committed then, so the batch is consumed again).
async fn write_effects(
    store: &SharedStore,
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    producer: &FutureProducer,
    effects: Effects,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let Effects {
        store: batch,
        matches,
        contests,
        dead_letters,
        finished,
        counts,
    } = effects;
    if !batch.is_empty() {
        retrier
            .retry("store", || store.apply(batch.clone()))
            .await?;
    }
    if !(matches.is_empty() && contests.is_empty()) {
        check_alive(pipeline, hot, retrier).await?;
        retrier
            .retry("redis", || {
                let mut hot = hot.clone();
                let (matches, contests) = (&matches, &contests);
                async move { hot.write(matches, contests).await }
            })
            .await?;
    }
    if !finished.is_empty() {
        retire(hot, &finished, retrier).await?;
    }
    for letter in &dead_letters {
        let value = letter.to_json();
        retrier
            .retry("dlq", || {
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
            .await?;
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
    Ok(())
}

/// Rewrites all of Redis from the pipeline's state if Redis lost it.
async fn check_alive(
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let alive = retrier
        .retry("redis", || {
            let mut hot = hot.clone();
            async move { hot.still_alive().await }
        })
        .await?;
    if alive {
        return Ok(());
    }
    tracing::warn!("redis lost the hot state, rebuilding it");
    rewrite_hot_state(pipeline, hot, retrier).await
}

async fn rewrite_hot_state(
    pipeline: &Pipeline,
    hot: &mut HotWriter,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let started = Instant::now();
    let (matches, contests) = pipeline.full_refresh();
    retrier
        .retry("redis", || {
            let mut hot = hot.clone();
            let (matches, contests) = (&matches, &contests);
            async move {
                hot.still_alive().await?;
                hot.write(matches, contests).await
            }
        })
        .await?;
    retire(hot, &pipeline.finished_contests(), retrier).await?;
    metrics::REBUILDS.inc();
    tracing::info!(
        matches = matches.len(),
        contests = contests.len(),
        millis = started.elapsed().as_millis() as u64,
        "redis hot state rewritten"
    );
    Ok(())
}

/// Starts the hot-state retention clock of finished contests.
async fn retire(
    hot: &HotWriter,
    finished: &[(leaderboard_core::ContestId, leaderboard_core::MatchId)],
    retrier: &Retrier,
) -> Result<(), Stop> {
    let retention = hot.retention;
    retrier
        .retry("redis", || {
            let mut hot = hot.clone();
            async move { hot.retire(finished, retention).await }
        })
        .await?;
    if !retention.is_zero() && !finished.is_empty() {
        tracing::info!(
            contests = finished.len(),
            retention_secs = retention.as_secs(),
            "finished contests' final standings stored; their hot keys now expire"
        );
    }
    Ok(())
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
