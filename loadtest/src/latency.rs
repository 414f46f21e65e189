//! Pipeline measurements: produce-to-notice latency, Redis bulk writes, and
//! events per second through `ingest run`. Each prints one JSON line of results.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::{ContestId, EntryId, MatchId, TeamPoints};
use leaderboard_hot::{self as hot, ContestChanged, ContestUpdate, HotWriter};
use leaderboard_service::config::{KafkaArgs, RedisArgs};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct NoticeLatencyArgs {
    /// The contest to watch (already published and ingested).
    #[arg(long)]
    contest: ContestId,
    /// The Cricsheet match whose players the contest's squad holds: its
    /// lineup is published first (seq 0), then one ball at a time.
    #[arg(long, value_name = "FILE")]
    match_file: PathBuf,
    /// Balls to time.
    #[arg(long, default_value_t = 50)]
    balls: u32,
    /// After each ball's notice, also wait until the contest's deep pages
    /// (its sorted set readers read, `ranks_version`) are at the ball's
    /// version, and time that too. Without it the next ball is produced as
    /// soon as the notice arrives, while the previous ball's sorted-set
    /// refresh may still run.
    #[arg(long)]
    deep: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

/// Produces one ball at a time and waits for the contest's notice.
pub async fn notice_latency(args: NoticeLatencyArgs) -> anyhow::Result<()> {
    let mut connection = hot::connect(&args.redis.url).await?;
    let match_id: String = redis::cmd("HGET")
        .arg(hot::contest_meta_key(&args.contest))
        .arg("match_id")
        .query_async::<Option<String>>(&mut connection)
        .await?
        .with_context(|| format!("contest {} is not in Redis", args.contest))?;
    let match_id = MatchId::parse(&match_id)?;
    let total: u64 = redis::cmd("HGET")
        .arg(hot::contest_meta_key(&args.contest))
        .arg("total")
        .query_async(&mut connection)
        .await?;
    // One server or a cluster (sharded channels) alike.
    let (mut subscriptions, mut notices) = hot::notices::subscribe_to(&args.redis.url).await?;
    subscriptions
        .subscribe(&[hot::contest_channel(&args.contest)])
        .await?;
    let producer: FutureProducer = ingest::kafka::producer_config(&args.kafka.brokers).create()?;
    let cricsheet = CricsheetMatch::from_json(&std::fs::read_to_string(&args.match_file)?)?;
    let teams: Vec<&Vec<String>> = cricsheet.info.players.values().collect();
    anyhow::ensure!(teams.len() == 2, "the match file must name two teams");
    let lineup =
        json!({"v":1,"type":"lineup","match_id":match_id,"seq":0,"teams":cricsheet.info.players});
    // A match already under way (an earlier run) goes on from its last
    // ball: ingest skips a seq it has applied.
    let first = match last_seq(&mut connection, &match_id).await? {
        Some(seq) => seq + 1,
        None => 1,
    };
    let mut events = if first == 1 { vec![lineup] } else { Vec::new() };
    let scene = events.len();
    for ball in first - 1..first - 1 + u64::from(args.balls) {
        // Each ball moves one batter's and one bowler's points; the batters
        // rotate so that every ball moves a different share of the entries.
        let batter = &teams[0][ball as usize % teams[0].len()];
        let bowler = &teams[1][ball as usize % teams[1].len()];
        events.push(json!({"v":1,"type":"delivery","match_id":match_id,"seq":ball + 1,"innings":1,"over":(ball / 6) % 20,
            "delivery":{"batter":batter,"bowler":bowler,"non_striker":batter,
                        "runs":{"batter":4,"extras":0,"total":4}}}));
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut deep_latencies = Histogram::<u64>::new(3)?;
    let meta = hot::contest_meta_key(&args.contest);
    // A ball's notice is the first one past the version before it: a large
    // contest's refresh announces its switch too, possibly during the next
    // ball, at a version already noticed.
    let mut last_version: u64 = redis::cmd("HGET")
        .arg(&meta)
        .arg("version")
        .query_async::<Option<u64>>(&mut connection)
        .await?
        .unwrap_or(0);
    // Each ball's notice latency in order, so that a worst ball can be found.
    let mut per_ball: Vec<u64> = Vec::new();
    for (position, event) in events.iter().enumerate() {
        let payload = serde_json::to_vec(event)?;
        let started = Instant::now();
        producer
            .send(
                FutureRecord::to(ingest::topics::MATCH_EVENTS)
                    .key(match_id.as_str())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| anyhow::anyhow!("cannot produce: {error}"))?;
        let version = loop {
            let message = tokio::time::timeout(Duration::from_secs(60), notices.next())
                .await
                .context("no notice within 60 s")?
                .context("pub/sub closed")?;
            let hot::notices::Event::Notice { payload, .. } = message else {
                continue;
            };
            let notice: ContestChanged = serde_json::from_slice(&payload)?;
            if notice.version > last_version {
                break notice.version;
            }
        };
        last_version = version;
        // The lineup only sets the scene.
        if position >= scene {
            latencies.record(started.elapsed().as_micros() as u64)?;
            per_ball.push(started.elapsed().as_millis() as u64);
        }
        if args.deep {
            // The refresh's own notice comes with the switch; polling the
            // meta times it without telling the two notices apart.
            loop {
                let held: Option<u64> = redis::cmd("HGET")
                    .arg(&meta)
                    .arg("ranks_version")
                    .query_async(&mut connection)
                    .await?;
                if held.unwrap_or(0) >= version {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(600),
                    "deep pages not at version {version} after 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if position >= scene {
                deep_latencies.record(started.elapsed().as_micros() as u64)?;
            }
        }
    }
    let deep_ms = |q: f64| deep_latencies.value_at_quantile(q) as f64 / 1000.0;
    let deep = args.deep.then(|| {
        json!({"p50_ms": deep_ms(0.5), "p99_ms": deep_ms(0.99), "max_ms": deep_latencies.max() as f64 / 1000.0})
    });
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({"contest": args.contest, "entries": total, "balls": args.balls,
               "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": latencies.max() as f64 / 1000.0,
               "deep_pages": deep, "per_ball_ms": per_ball})
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RedisBulkArgs {
    /// Entries in the contest written.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    #[command(flatten)]
    redis: RedisArgs,
}

/// Writes a whole contest (sorted set, users, histogram) as a rebuild does.
pub async fn redis_bulk(args: RedisBulkArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let contest_id = ContestId::parse("bulk-bench")?;
    let ranks: Vec<(EntryId, TeamPoints)> = (0..args.entries)
        .map(|i| {
            Ok((
                EntryId::parse(&format!("e{i}"))?,
                TeamPoints(rng.random_range(0..4000)),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let update = ContestUpdate {
        contest_id,
        match_id: MatchId::parse("bench")?,
        name: "bench".into(),
        version: 1,
        total: args.entries as u64,
        users: Vec::new(),
        teams: Vec::new(),
        squad: Vec::new(),
        player_points: Vec::new(),
        histogram: Vec::new(),
        ranks: hot::RankBuffer::shared(ranks),
        top: None,
        full: true,
    };
    let mut writer = HotWriter::new(hot::connect(&args.redis.url).await?, 1);
    let started = Instant::now();
    writer.write(&[], std::slice::from_ref(&update)).await?;
    writer
        .ranks_caught_up(&update.contest_id, update.version)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"entries": args.entries, "seconds": seconds, "zadd_members_per_second": args.entries as f64 / seconds})
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Cricsheet match files to replay at full speed.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// What to time: `produce-and-apply` replays and waits for Redis (the
    /// replay producer included); `produce` only fills the topics (run it
    /// while `ingest run` is stopped); `backlog` produces nothing and times
    /// `ingest run` draining what is already there (start it, or resume it,
    /// as this starts).
    #[arg(long, value_enum, default_value_t = ThroughputMode::ProduceAndApply)]
    mode: ThroughputMode,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    partitions: i32,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThroughputMode {
    ProduceAndApply,
    Produce,
    Backlog,
}

/// The last seq Redis holds of a match, if any.
async fn last_seq(
    connection: &mut hot::HotConnection,
    match_id: &MatchId,
) -> redis::RedisResult<Option<u64>> {
    redis::cmd("HGET")
        .arg(hot::match_meta_key(match_id))
        .arg("seq")
        .query_async(connection)
        .await
}

/// Replays the matches at full speed and/or waits until Redis shows every
/// match's last seq (see [`ThroughputMode`]).
pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let mut expected = Vec::new();
    let mut events = 0;
    for file in &args.files {
        let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(file)?)?;
        let match_id = match_id_from_path(file)?;
        let count = parsed.events(&match_id, None).len();
        events += count;
        expected.push((match_id, count as u64 - 1));
    }
    let started = Instant::now();
    let mut produced = 0.0;
    if args.mode != ThroughputMode::Backlog {
        ingest::replay::run(&ingest::replay::ReplayArgs {
            files: args.files.clone(),
            speed: 0.0,
            corrections: false,
            seed: 0,
            kafka: args.kafka.clone(),
            partitions: args.partitions,
        })
        .await?;
        produced = started.elapsed().as_secs_f64();
    }
    if args.mode == ThroughputMode::Produce {
        println!(
            "{}",
            json!({"matches": expected.len(), "events": events, "produce_seconds": produced})
        );
        return Ok(());
    }
    let mut connection = hot::connect(&args.redis.url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    for (match_id, last) in &expected {
        while last_seq(&mut connection, match_id).await? != Some(*last) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "match {match_id} not applied within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"matches": expected.len(), "events": events, "produce_seconds": produced,
               "applied_seconds": seconds, "events_per_second": events as f64 / seconds})
    );
    Ok(())
}
