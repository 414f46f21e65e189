//! `ingest run`: the consumer service.
//!
//! Each replica routes messages of the contract topics to the internal topic
//! keyed by match (see [`crate::routing`]), and scores the matches of the
//! internal partitions it owns. Each batch of those goes through the
//! pipeline, then its effects are written in this order:
//!
//! 1. the durable store (applied events, entries, contest versions), one transaction;
//! 2. Redis (player points, sorted sets, histograms, versions, pub/sub
//!    notices), each write refused when Redis already holds a newer version;
//! 3. dead letters, each awaited until the broker has it;
//! 4. only then the Kafka offsets are committed.
//!
//! The state of the partitions a replica gains in a rebalance (or at
//! start-up) is rebuilt from the store, not from Kafka: the store already
//! holds every applied event of every match and every accepted entry, so a
//! replica rebuilds in one read, without replaying topics from offset zero
//! (which retention may have trimmed). A message consumed again after a crash
//! (its effects written, its offset not yet committed) is recognised as a
//! duplicate by `(match, seq)` or by entry id, and Redis is rewritten from the
//! rebuilt state, so every event counts once in effect. A Redis that lost its
//! keys (flush, restart) is noticed through a marker key per replica and
//! rewritten the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::pipeline::{Effects, Incoming, Pipeline};
use crate::routing::{self, Routes};
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
    /// From this many changed entries, a contest's sorted sets are refreshed
    /// in the background, conflated, after its histogram, version, top rows
    /// and notice (and from then on every change of that contest).
    #[arg(long, default_value_t = 50_000)]
    pub large_contest: usize,
}

/// Logs rebalances, remembers which partitions were revoked (the scorer
/// drops their matches before its next batch), and turns librdkafka's
/// statistics into the lag gauge.
#[derive(Default)]
struct IngestContext {
    revoked: Arc<Mutex<BTreeSet<(String, i32)>>>,
}

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
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            for element in partitions.elements() {
                revoked.insert((element.topic().to_owned(), element.partition()));
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance done");
        let (partitions, step) = match rebalance {
            Rebalance::Assign(partitions) => (partitions, 1),
            Rebalance::Revoke(partitions) => (partitions, -1),
            Rebalance::Error(_) => return,
        };
        for element in partitions.elements() {
            metrics::ASSIGNED_PARTITIONS
                .with_label_values(&[element.topic()])
                .add(step);
        }
    }
}

/// Why the consumer loop stopped before its work was done.
#[derive(Debug)]
pub(crate) enum Stop {
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
    tracing::info!(rules = %rules.name, "durable store open");

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
        let outcome = consume(args, store, Pipeline::new(rules), redis_url, &retrier).await;
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

/// The Kafka clients of one replica.
struct Clients {
    router: StreamConsumer<IngestContext>,
    scorer: StreamConsumer<IngestContext>,
    revoked: Arc<Mutex<BTreeSet<(String, i32)>>>,
    producer: FutureProducer,
    /// Partitions of the internal topic.
    partitions: i32,
}

/// Creates the topics when missing, then the router, the scorer and the producer.
async fn clients(args: &RunArgs, retrier: &Retrier) -> Result<Clients, Stop> {
    let brokers = args.kafka.brokers.clone();
    let mut all: Vec<&str> = topics::ALL.to_vec();
    all.push(topics::BY_MATCH);
    retrier
        .retry("kafka-topics", || {
            topics::ensure(&brokers, &all, args.partitions)
        })
        .await?;
    let failed = |what: &str| {
        let what = what.to_owned();
        move |error: rdkafka::error::KafkaError| Stop::Failed(anyhow::anyhow!("{what}: {error}"))
    };
    let consumer = |group: &str, context: IngestContext| {
        let mut config = kafka::consumer_config(&args.kafka.brokers, group);
        if let Some(instance) = &args.instance_id {
            // One id per group: the same replica is the same member of both.
            config.set("group.instance.id", instance);
        }
        config
            .create_with_context::<_, StreamConsumer<IngestContext>>(context)
            .map_err(failed("cannot create a Kafka consumer"))
    };
    let router = consumer(&args.group, IngestContext::default())?;
    router
        .subscribe(&[topics::MATCH_EVENTS, topics::CONTEST_ENTRIES])
        .map_err(failed("cannot subscribe"))?;
    let scoring = IngestContext::default();
    let revoked = Arc::clone(&scoring.revoked);
    let scorer = consumer(&format!("{}.by-match", args.group), scoring)?;
    scorer
        .subscribe(&[topics::BY_MATCH])
        .map_err(failed("cannot subscribe"))?;
    let producer: FutureProducer = kafka::producer_config(&args.kafka.brokers)
        .create()
        .map_err(failed("cannot create the producer"))?;
    let partitions = retrier
        .retry("kafka-metadata", || {
            let producer = producer.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(Some(topics::BY_MATCH), Duration::from_secs(10))
                        .map(|metadata| {
                            metadata
                                .topics()
                                .iter()
                                .map(|topic| topic.partitions().len() as i32)
                                .sum::<i32>()
                        })
                })
                .await
                .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
                .and_then(|count| {
                    if count > 0 {
                        Ok(count)
                    } else {
                        Err(rdkafka::error::KafkaError::MetadataFetch(
                            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                        ))
                    }
                })
            }
        })
        .await?;
    tracing::info!(
        group = %args.group,
        partitions,
        internal = topics::BY_MATCH,
        "routing match-events and contest-entries by match, scoring the owned partitions"
    );
    Ok(Clients {
        router,
        scorer,
        revoked,
        producer,
        partitions,
    })
}

/// Connects, then routes and scores until shutdown or a permanent failure.
async fn consume(
    args: RunArgs,
    store: SharedStore,
    pipeline: Pipeline,
    redis_url: String,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let connection = retrier
        .retry("redis-connect", || hot::connect(&redis_url))
        .await?;
    let mut hot = HotWriter::new(connection, args.large_contest);
    hot.retention = Duration::from_secs(args.hot_retention_secs);
    let node = args
        .instance_id
        .clone()
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    hot.marker = format!("{}:{node}", hot::ALIVE_KEY);
    retrier
        .retry("redis", || {
            let mut hot = hot.clone();
            async move { hot.still_alive().await }
        })
        .await?;
    let clients = clients(&args, retrier).await?;
    tokio::try_join!(
        route(&args, &store, &clients, retrier),
        score(&args, &store, pipeline, &mut hot, &clients, retrier),
    )
    .map(|_| ())
}

/// Receives a batch: the first message (or `None` at shutdown or when the
/// tick fires first), then whatever comes within `batch_wait_ms`.
async fn receive<'a>(
    consumer: &'a StreamConsumer<IngestContext>,
    args: &RunArgs,
    retrier: &Retrier,
    tick: &mut tokio::time::Interval,
) -> Option<Vec<rdkafka::message::BorrowedMessage<'a>>> {
    let first = tokio::select! {
        _ = retrier.shutdown.cancelled() => return None,
        _ = tick.tick() => return Some(Vec::new()),
        received = consumer.recv() => received,
    };
    let first = match first {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%error, "kafka receive failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Some(Vec::new());
        }
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(args.batch_wait_ms);
    while batch.len() < args.batch_max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message),
            Ok(Err(error)) => {
                tracing::warn!(%error, "kafka receive failed");
                break;
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The router: contract topics → the internal topic, on each match's partition.
async fn route(
    args: &RunArgs,
    store: &SharedStore,
    clients: &Clients,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let mut routes = Routes::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while let Some(batch) = receive(&clients.router, args, retrier, &mut tick).await {
        if batch.is_empty() {
            if retrier.shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        let batch: Vec<Incoming> = batch.iter().map(owned).collect();
        for message in &batch {
            metrics::EVENTS_CONSUMED
                .with_label_values(&[message.topic.as_str()])
                .inc();
        }
        if routes.unknown(&batch) {
            // Contests another replica forwarded before a rebalance.
            let listings = retrier.retry("store", || store.list_contests()).await?;
            routes.learn(listings);
        }
        let positions: Vec<(String, i32, i64)> = batch
            .iter()
            .map(|m| (m.topic.clone(), m.partition, m.offset))
            .collect();
        let routed = routes.route(batch, clients.partitions);
        if !routed.new_contests.is_empty() {
            retrier
                .retry("store", || store.apply(routed.new_contests.clone()))
                .await?;
        }
        retrier
            .retry("route", || {
                routing::forward(&clients.producer, &routed.forward)
            })
            .await?;
        metrics::ROUTED.inc_by(routed.forward.len() as u64);
        send_dead_letters(&clients.producer, &routed.dead_letters, retrier).await?;
        commit(
            &clients.router,
            positions.iter().map(|(t, p, o)| (t.as_str(), *p, *o)),
        );
    }
    Ok(())
}

/// The scorer: the owned partitions of the internal topic → store and Redis.
async fn score(
    args: &RunArgs,
    store: &SharedStore,
    mut pipeline: Pipeline,
    hot: &mut HotWriter,
    clients: &Clients,
    retrier: &Retrier,
) -> Result<(), Stop> {
    let mut owned: BTreeSet<i32> = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while let Some(received) = receive(&clients.scorer, args, retrier, &mut tick).await {
        let started = Instant::now();
        // (internal partition, offset) of each message, for the commit.
        let mut batch: Vec<((i32, i64), Incoming)> = received
            .iter()
            .map(|m| ((m.partition(), m.offset()), routing::unwrap_forwarded(m)))
            .collect();
        drop(received);
        pipeline =
            follow_assignment(args, store, pipeline, hot, clients, &mut owned, retrier).await?;
        if batch.is_empty() {
            if retrier.shutdown.is_cancelled() {
                break;
            }
            check_alive(&pipeline, hot, retrier).await?;
            let grace = Duration::from_secs(args.keep_finished_secs);
            if let Some(before) = Instant::now().checked_sub(grace) {
                let evicted = pipeline.evict_finished(before);
                if evicted > 0 {
                    tracing::info!(contests = evicted, "finished contests left memory");
                }
            }
            continue;
        }
        // Messages of partitions lost while the batch filled belong to
        // their new owner now.
        batch.retain(|((partition, _), _)| owned.contains(partition));
        let (positions, batch): (Vec<(i32, i64)>, Vec<Incoming>) = batch.into_iter().unzip();
        // When each ball of the batch was produced: timed to its notice below.
        let balls: Vec<i64> = batch
            .iter()
            .filter(|m| m.topic == topics::MATCH_EVENTS)
            .filter_map(|m| m.produced_ms)
            .collect();
        // A ball goes first: the background refreshes of deep pages wait
        // until it is scored and written.
        let _ball = batch
            .iter()
            .any(|m| m.topic == topics::MATCH_EVENTS)
            .then(|| hot.yield_to_ball());
        let (returned, _, effects) = apply_batch(pipeline, batch).await.map_err(Stop::Failed)?;
        pipeline = returned;
        write_effects(store, &pipeline, hot, &clients.producer, effects, retrier).await?;
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        // The batch's notices are published: ball → notice, from the
        // producer's clock to ours (the same clock on one host; NTP-close
        // across hosts).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for produced in balls {
            metrics::EVENT_TO_NOTICE_SECONDS.observe((now_ms - produced).max(0) as f64 / 1000.0);
        }
        commit(
            &clients.scorer,
            positions.iter().map(|(p, o)| (topics::BY_MATCH, *p, *o)),
        );
    }
    Ok(())
}

/// Brings the pipeline in line with the scorer's assignment: drops the
/// matches of partitions it lost, rebuilds those of partitions it gained
/// from the store (rewriting their hot state, never over a newer version).
async fn follow_assignment(
    args: &RunArgs,
    store: &SharedStore,
    mut pipeline: Pipeline,
    hot: &mut HotWriter,
    clients: &Clients,
    owned: &mut BTreeSet<i32>,
    retrier: &Retrier,
) -> Result<Pipeline, Stop> {
    let current: BTreeSet<i32> = match clients.scorer.assignment() {
        Ok(list) => list
            .elements_for_topic(topics::BY_MATCH)
            .iter()
            .map(|element| element.partition())
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the assignment");
            return Ok(pipeline);
        }
    };
    let revoked: BTreeSet<i32> =
        std::mem::take(&mut *clients.revoked.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .filter(|(topic, _)| topic == topics::BY_MATCH)
            .map(|(_, partition)| partition)
            .collect();
    let lost: BTreeSet<i32> = owned
        .iter()
        .filter(|p| revoked.contains(p) || !current.contains(p))
        .copied()
        .collect();
    let gained: BTreeSet<i32> = current
        .iter()
        .filter(|p| lost.contains(p) || !owned.contains(p))
        .copied()
        .collect();
    if lost.is_empty() && gained.is_empty() {
        return Ok(pipeline);
    }
    let partitions = clients.partitions;
    if !lost.is_empty() {
        let dropped =
            pipeline.retain_matches(|m| !lost.contains(&routing::partition_of(m, partitions)));
        owned.retain(|p| !lost.contains(p));
        for partition in &lost {
            metrics::OWNED_PARTITIONS
                .with_label_values(&[&partition.to_string()])
                .set(0);
        }
        tracing::info!(
            ?lost,
            contests = dropped,
            "partitions lost: their matches left memory"
        );
    }
    if !gained.is_empty() {
        let started = Instant::now();
        // What finished within the keep-finished window is loaded in full,
        // as if this node had always held it; anything older only by id.
        let keep_finished_ms = args.keep_finished_secs.saturating_mul(1000);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut snapshot = retrier
            .retry("store", || {
                store.load(now_ms.saturating_sub(keep_finished_ms))
            })
            .await?;
        routing::retain_owned(&mut snapshot, |m| {
            gained.contains(&routing::partition_of(m, partitions))
        });
        let rules = pipeline.rules();
        let part = tokio::task::spawn_blocking(move || Pipeline::from_snapshot(rules, snapshot))
            .await
            .map_err(|error| {
                Stop::Failed(anyhow::anyhow!("rebuilding the state panicked: {error}"))
            })?
            .map_err(Stop::Failed)?;
        tracing::info!(
            ?gained,
            contests = part.contests().count(),
            millis = started.elapsed().as_millis() as u64,
            "partitions gained: their matches rebuilt from the durable store"
        );
        rewrite_hot_state(&part, hot, retrier).await?;
        pipeline.absorb(part);
        for partition in &gained {
            metrics::OWNED_PARTITIONS
                .with_label_values(&[&partition.to_string()])
                .set(1);
        }
        owned.extend(gained);
    }
    Ok(pipeline)
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
        produced_ms: message.timestamp().to_millis(),
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
        let gaps = retrier
            .retry("redis", || {
                let mut hot = hot.clone();
                let (matches, contests) = (&matches, &contests);
                async move { hot.write(matches, contests).await }
            })
            .await
            .map(count_refused)?;
        if !gaps.is_empty() {
            // Redis lost writes these changes build on (a failover promoted
            // a replica that had not received them): rewrite them in full.
            tracing::warn!(
                contests = gaps.len(),
                "Redis did not hold the versions these changes build on: rewriting them in full"
            );
            metrics::REBUILDS.inc();
            let full = pipeline.full_updates(&gaps);
            retrier
                .retry("redis", || {
                    let mut hot = hot.clone();
                    let full = &full;
                    async move { hot.write(&[], full).await }
                })
                .await
                .map(count_refused)?;
        }
    }
    if !finished.is_empty() {
        retire(hot, &finished, retrier).await?;
    }
    send_dead_letters(producer, &dead_letters, retrier).await?;
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

/// Sends dead letters, each awaited until the broker has it.
async fn send_dead_letters(
    producer: &FutureProducer,
    dead_letters: &[crate::pipeline::DeadLetter],
    retrier: &Retrier,
) -> Result<(), Stop> {
    for letter in dead_letters {
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
    Ok(())
}

/// Counts the updates Redis refused as older than what it holds; returns
/// the contests whose change found a gap.
fn count_refused(written: hot::Written) -> Vec<leaderboard_core::ContestId> {
    if written.refused_stale > 0 {
        metrics::STALE_REFUSED.inc_by(written.refused_stale as u64);
        tracing::info!(
            updates = written.refused_stale,
            "Redis held newer versions: older updates not written"
        );
    }
    written.gaps
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
        .await
        .map(count_refused)?;
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
fn commit<'a>(
    consumer: &StreamConsumer<IngestContext>,
    batch: impl IntoIterator<Item = (&'a str, i32, i64)>,
) {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for (topic, partition, offset) in batch {
        let next = next.entry((topic, partition)).or_insert(0);
        *next = (*next).max(offset + 1);
    }
    if next.is_empty() {
        return;
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
