//! `ingest replay`: publishes Cricsheet matches to `match-events` as a live
//! feed would: the lineup, every delivery, the match end, keyed by match id.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::event::{Delivery, EventBody, MatchEvent, Wicket, EVENT_VERSION};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{kafka, topics};

/// Cricsheet has no timestamps: real speed is taken as one delivery every
/// 36 seconds (a 20-over innings in 72 minutes).
pub const REAL_SECONDS_PER_DELIVERY: f64 = 36.0;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Cricsheet JSON match files; each file's name (e.g. 1136561.json) is its match id.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Times real speed (one delivery per 36 s at 1); 0 publishes as fast as possible.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// Inject a few wrong deliveries, each followed by its correction event.
    #[arg(long)]
    pub corrections: bool,
    /// Seed choosing which deliveries are corrupted.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub kafka: leaderboard_service::config::KafkaArgs,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
}

/// A wrong version of a delivery: a six, with a catch that never happened.
pub fn corrupt(delivery: &Delivery) -> Delivery {
    let mut wrong = delivery.clone();
    wrong.runs.batter = 6;
    wrong.runs.total = 6 + wrong.runs.extras;
    wrong.wickets = vec![Wicket {
        player_out: delivery.batter.clone(),
        kind: "caught".into(),
        fielders: vec![leaderboard_core::event::Fielder {
            name: Some(delivery.bowler.clone()),
            substitute: false,
        }],
    }];
    wrong
}

/// The events of one match as published: with `corrections`, three deliveries
/// are first sent wrong and corrected by the next event.
pub fn replay_events(
    cricsheet: &CricsheetMatch,
    match_id: &leaderboard_core::MatchId,
    corrections: Option<u64>,
) -> Vec<MatchEvent> {
    let clean = cricsheet.events(match_id, None);
    let Some(seed) = corrections else {
        return clean;
    };
    let deliveries = clean.len().saturating_sub(2);
    let mut rng = StdRng::seed_from_u64(
        seed ^ match_id
            .as_str()
            .bytes()
            .fold(0_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    );
    let corrupted: Vec<usize> = (0..3.min(deliveries))
        .map(|_| rng.random_range(1..=deliveries))
        .collect();
    let mut events = Vec::with_capacity(clean.len() + 3);
    for event in clean {
        let position = event.seq as usize;
        let seq = events.len() as u64;
        match (&event.body, corrupted.contains(&position)) {
            (
                EventBody::Delivery {
                    innings,
                    over,
                    super_over,
                    delivery,
                },
                true,
            ) => {
                events.push(MatchEvent {
                    v: EVENT_VERSION,
                    match_id: match_id.clone(),
                    seq,
                    body: EventBody::Delivery {
                        innings: *innings,
                        over: *over,
                        super_over: *super_over,
                        delivery: corrupt(delivery),
                    },
                });
                events.push(MatchEvent {
                    v: EVENT_VERSION,
                    match_id: match_id.clone(),
                    seq: seq + 1,
                    body: EventBody::Correction {
                        corrects: seq,
                        delivery: delivery.clone(),
                    },
                });
            }
            _ => events.push(MatchEvent { seq, ..event }),
        }
    }
    events
}

pub async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        anyhow::bail!("--speed must be 0 or a positive number, not {}", args.speed);
    }
    let mut matches = Vec::new();
    for file in &args.files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let cricsheet =
            CricsheetMatch::from_json(&text).with_context(|| file.display().to_string())?;
        let match_id = match_id_from_path(file)?;
        let events = replay_events(&cricsheet, &match_id, args.corrections.then_some(args.seed));
        matches.push((match_id, events));
    }
    topics::ensure(&args.kafka.brokers, &topics::ALL, args.partitions).await?;
    let producer: FutureProducer = kafka::producer_config(&args.kafka.brokers)
        .create()
        .context("cannot create the Kafka producer")?;
    let pause =
        (args.speed > 0.0).then(|| Duration::from_secs_f64(REAL_SECONDS_PER_DELIVERY / args.speed));
    let started = Instant::now();
    let total: usize = matches.iter().map(|(_, events)| events.len()).sum();
    let mut published = 0;
    // Matches are interleaved ball by ball, as simultaneous matches would be.
    let longest = matches
        .iter()
        .map(|(_, events)| events.len())
        .max()
        .unwrap_or(0);
    for step in 0..longest {
        let payloads: Vec<(&str, Vec<u8>)> = matches
            .iter()
            .filter_map(|(match_id, events)| {
                events
                    .get(step)
                    .map(|event| (match_id.as_str(), event.to_json()))
            })
            .collect();
        let mut pending = Vec::new();
        for (key, payload) in &payloads {
            let record = FutureRecord::to(topics::MATCH_EVENTS)
                .key(*key)
                .payload(payload);
            pending.push(producer.send(record, Duration::from_secs(30)));
            published += 1;
        }
        for delivery in futures::future::join_all(pending).await {
            delivery.map_err(|(error, _)| {
                anyhow::anyhow!("cannot publish to {}: {error}", topics::MATCH_EVENTS)
            })?;
        }
        if published % 50 == 0 || published == total {
            tracing::info!(published, total, "replay progress");
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    tracing::info!(
        matches = matches.len(),
        events = published,
        seconds = started.elapsed().as_secs_f64(),
        "replay done"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaderboard_core::MatchId;

    fn shared_match() -> CricsheetMatch {
        let dir = match std::env::var("CRICSHEET_DIR") {
            Ok(dir) if std::path::Path::new(&dir).join("ipl").is_dir() => {
                std::path::PathBuf::from(dir).join("ipl")
            }
            Ok(dir) => std::path::PathBuf::from(dir),
            Err(_) => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/cricsheet/ipl"),
        };
        let text = std::fs::read_to_string(dir.join("1136561.json")).expect("shared match");
        CricsheetMatch::from_json(&text).unwrap()
    }

    #[test]
    fn corrections_take_any_valid_match_id_even_the_longest() {
        let cricsheet = shared_match();
        // The id parser takes up to 64 bytes; the seed's hash must not overflow.
        for id in ["1136561", "a-match-id-of-13b", &"x".repeat(64)] {
            let match_id = MatchId::parse(id).unwrap();
            let events = replay_events(&cricsheet, &match_id, Some(7));
            let clean = replay_events(&cricsheet, &match_id, None);
            assert_eq!(events.len(), clean.len() + 3, "three corrections for {id}");
        }
    }
}
