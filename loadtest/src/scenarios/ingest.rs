//! `loadtest ingest`: replays real Cricsheet matches at X times real speed
//! into `match-events`, against the contests `setup` made, and times each
//! ball from its produce call to the broker's acknowledgement
//! (`ingest.produce`) and to each contest's "contest changed" notice
//! (`ingest.ball-to-notice`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::event::MatchEvent;
use leaderboard_core::{ContestId, MatchId};
use leaderboard_hot::{self as hot, ContestChanged};
use leaderboard_service::config::{KafkaArgs, RedisArgs};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::setup::Setup;
use super::BallClock;
use crate::report::{Recorder, RunInfo};
use crate::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Cricsheet match files to replay, each under its own id (the file
    /// name). With --setup, its match is replayed under the setup's match id.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The folder or `setup.json` of `loadtest setup`: replay its match and
    /// time its contests.
    #[arg(long, value_name = "PATH")]
    pub setup: Option<PathBuf>,
    /// Times real speed (a delivery every 36 s at 1).
    #[arg(long, default_value_t = 60.0, value_name = "X")]
    pub speed: f64,
    /// Replay only the first N events of each match.
    #[arg(long)]
    pub events: Option<usize>,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// The report folder (default `reports/ingest-<unix time>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// The matches to replay, each with its events, and the contests to time
/// with the match each is on.
pub struct Plan {
    pub matches: Vec<(MatchId, Vec<MatchEvent>)>,
    pub contests: Vec<(ContestId, MatchId)>,
}

/// The matches to replay, with their events, and the contests to time.
pub fn plan(args: &IngestArgs) -> anyhow::Result<Plan> {
    let mut matches = Vec::new();
    let mut contests = Vec::new();
    let load = |file: &PathBuf| -> anyhow::Result<CricsheetMatch> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| BadInput(format!("cannot read {}: {e}", file.display())))?;
        CricsheetMatch::from_json(&text)
            .map_err(|e| BadInput(format!("{}: {e}", file.display())).into())
    };
    if let Some(path) = &args.setup {
        let setup = Setup::load(path).map_err(|e| BadInput(format!("--setup: {e:#}")))?;
        let cricsheet = load(&setup.match_file)?;
        matches.push((
            setup.match_id.clone(),
            ingest::replay::replay_events(&cricsheet, &setup.match_id, None),
        ));
        contests.extend(
            setup
                .contests
                .iter()
                .map(|c| (c.contest_id.clone(), setup.match_id.clone())),
        );
    }
    for file in &args.files {
        let cricsheet = load(file)?;
        let match_id = match_id_from_path(file).map_err(|e| BadInput(format!("{e:#}")))?;
        matches.push((
            match_id.clone(),
            ingest::replay::replay_events(&cricsheet, &match_id, None),
        ));
    }
    anyhow::ensure!(
        !matches.is_empty(),
        BadInput("name the matches to replay: FILE… or --setup PATH".into())
    );
    if let Some(limit) = args.events {
        for (_, events) in &mut matches {
            events.truncate(limit);
        }
    }
    Ok(Plan { matches, contests })
}

/// Replays the matches, recording into `recorder` and the ball clock.
pub async fn drive(
    args: &IngestArgs,
    recorder: Arc<Recorder>,
    clock: Arc<BallClock>,
    stop: CancellationToken,
) -> anyhow::Result<RunInfo> {
    anyhow::ensure!(
        args.speed > 0.0 && args.speed.is_finite(),
        BadInput(format!("--speed must be a number > 0, not {}", args.speed))
    );
    let Plan {
        matches,
        mut contests,
    } = plan(args)?;
    let mut connection = hot::connect(&args.redis.url).await?;
    // Contests of matches named by file: those Redis lists for the match.
    for (match_id, _) in &matches {
        if contests.iter().any(|(_, m)| m == match_id) {
            continue;
        }
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(hot::match_contests_key(match_id))
            .query_async(&mut connection)
            .await?;
        for contest in listed {
            contests.push((ContestId::parse(&contest)?, match_id.clone()));
        }
    }
    let mut notes = Vec::new();
    for (match_id, events) in &matches {
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(hot::match_meta_key(match_id))
            .arg("seq")
            .query_async(&mut connection)
            .await?;
        if let Some(seq) = seq.filter(|&seq| seq + 1 >= events.len() as u64) {
            let note = format!(
                "match {match_id} was already played here (seq {seq}): ingest skips its events, so nothing moves; \
                 set up the contests on a fresh match id (`loadtest setup --match-id …`)"
            );
            tracing::warn!("{note}");
            notes.push(note);
        }
    }
    ingest::topics::ensure(&args.kafka.brokers, &ingest::topics::ALL, args.partitions).await?;
    let producer: FutureProducer = ingest::kafka::producer_config(&args.kafka.brokers)
        .create()
        .context("cannot create the Kafka producer")?;

    // The notices of every timed contest.
    let of_match: HashMap<ContestId, MatchId> = contests.iter().cloned().collect();
    let (mut subscriptions, mut notices) = hot::notices::subscribe_to(&args.redis.url).await?;
    let channels: Vec<String> = of_match.keys().map(hot::contest_channel).collect();
    subscriptions.subscribe(&channels).await?;
    let listening = CancellationToken::new();
    let listener = {
        let (recorder, clock, listening) = (recorder.clone(), clock.clone(), listening.clone());
        tokio::spawn(async move {
            let _subscriptions = subscriptions;
            let mut versions: HashMap<ContestId, u64> = HashMap::new();
            loop {
                let event = tokio::select! {
                    _ = listening.cancelled() => break,
                    event = notices.next() => event,
                };
                let Some(hot::notices::Event::Notice { payload, .. }) = event else {
                    if event.is_none() {
                        break;
                    }
                    continue;
                };
                let now = Instant::now();
                let Ok(notice) = serde_json::from_slice::<ContestChanged>(&payload) else {
                    recorder.error("ingest.ball-to-notice", "bad_notice", now);
                    continue;
                };
                let last = versions.entry(notice.contest_id.clone()).or_insert(0);
                if notice.version <= *last {
                    continue;
                }
                *last = notice.version;
                if let Some(ball) = clock.ball_before(&notice.match_id, now) {
                    recorder.ok("ingest.ball-to-notice", now - ball, now);
                }
            }
        })
    };

    let cpu_before = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started_unix = crate::report::unix_now();
    let started = Instant::now();
    let pause = Duration::from_secs_f64(ingest::replay::REAL_SECONDS_PER_DELIVERY / args.speed);
    let longest = matches.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
    let mut published = 0u64;
    'steps: for step in 0..longest {
        let due = started + pause.mul_f64(step as f64);
        if due > Instant::now() {
            tokio::select! {
                _ = stop.cancelled() => break 'steps,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
        }
        let mut sends = Vec::new();
        for (match_id, events) in &matches {
            let Some(event) = events.get(step) else {
                continue;
            };
            let payload = event.to_json();
            let producer = producer.clone();
            let (recorder, clock) = (recorder.clone(), clock.clone());
            let match_id = match_id.clone();
            sends.push(async move {
                let at = Instant::now();
                clock.produced(&match_id, at);
                let sent = producer
                    .send(
                        FutureRecord::to(ingest::topics::MATCH_EVENTS)
                            .key(match_id.as_str())
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await;
                let now = Instant::now();
                match sent {
                    Ok(_) => recorder.ok("ingest.produce", now - at, now),
                    Err(_) => recorder.error("ingest.produce", "produce", now),
                }
            });
            published += 1;
        }
        futures::future::join_all(sends).await;
    }
    // The last ball's notices.
    tokio::time::sleep(Duration::from_secs(2)).await;
    listening.cancel();
    let _ = listener.await;
    let cpu_after = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(cpu_before);
    notes.push(format!(
        "{published} events of {} matches replayed at {}× real speed, {} contests timed",
        matches.len(),
        args.speed,
        of_match.len()
    ));
    Ok(RunInfo {
        scenario: "ingest".into(),
        shards: vec!["1/1".into()],
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        target_rate: None,
        harness_cpu_s: cpu_after - cpu_before,
        notes,
    })
}
