//! Generated contests: a contest over a real match's squad and random valid
//! entries, published to `contest-entries` (the demo and load tests use it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use leaderboard_core::contest::{ContestMessage, ContestRecord, EntryRecord};
use leaderboard_core::event::EVENT_VERSION;
use leaderboard_core::{ContestId, EntryId, MatchId, UserId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{kafka, topics};

/// A contest record over `squad`.
pub fn contest(
    contest_id: &ContestId,
    match_id: &MatchId,
    squad: BTreeMap<String, Vec<String>>,
    max_entries: u64,
) -> ContestRecord {
    ContestRecord {
        v: EVENT_VERSION,
        contest_id: contest_id.clone(),
        match_id: match_id.clone(),
        name: format!("Contest {contest_id}"),
        max_entries,
        squad,
    }
}

/// `count` random valid entries (`e1`, `e2`, … owned by users `u1`…), the same
/// for the same seed.
pub fn entries(contest: &ContestRecord, count: usize, seed: u64) -> Vec<EntryRecord> {
    let names: Vec<String> = contest.squad.values().flatten().cloned().collect();
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=count)
        .map(|n| {
            let mut pick = names.clone();
            pick.shuffle(&mut rng);
            pick.truncate(11);
            EntryRecord {
                v: EVENT_VERSION,
                contest_id: contest.contest_id.clone(),
                entry_id: EntryId::parse(&format!("e{n}")).expect("valid id"),
                user_id: UserId::parse(&format!("u{}", n % 100_000 + 1)).expect("valid id"),
                captain: pick[0].clone(),
                vice_captain: pick[1].clone(),
                players: pick,
            }
        })
        .collect()
}

/// Publishes the contest and then its entries, keyed by contest id.
pub async fn publish(
    brokers: &str,
    contest: &ContestRecord,
    entries: &[EntryRecord],
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka::producer_config(brokers)
        .set("linger.ms", "20")
        .set("max.in.flight.requests.per.connection", "5")
        .create()
        .context("cannot create the Kafka producer")?;
    let key = contest.contest_id.as_str();
    let send = |payload: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(topics::CONTEST_ENTRIES)
                        .key(key)
                        .payload(&payload),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(error, _)| {
                    anyhow::anyhow!("cannot publish to {}: {error}", topics::CONTEST_ENTRIES)
                })
        }
    };
    // The contest must be in the log before any of its entries.
    send(ContestMessage::Contest(contest.clone()).to_json()).await?;
    let started = Instant::now();
    let mut published = 0;
    for chunk in entries.chunks(5_000) {
        let sends = chunk
            .iter()
            .map(|entry| send(ContestMessage::Entry(entry.clone()).to_json()));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        published += chunk.len();
        tracing::info!(published, total = entries.len(), "entries published");
    }
    tracing::info!(
        contest = %contest.contest_id,
        entries = entries.len(),
        seconds = started.elapsed().as_secs_f64(),
        "contest published"
    );
    Ok(())
}
