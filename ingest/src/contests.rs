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

/// Publishes contests and their entries to `contest-entries`, keyed by
/// contest id, in the order of the calls.
#[derive(Clone)]
pub struct ContestPublisher {
    producer: FutureProducer,
}

impl std::fmt::Debug for ContestPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContestPublisher").finish_non_exhaustive()
    }
}

impl ContestPublisher {
    pub fn new(brokers: &str) -> anyhow::Result<ContestPublisher> {
        let producer = kafka::producer_config(brokers)
            .set("linger.ms", "20")
            .set("max.in.flight.requests.per.connection", "5")
            .create()
            .context("cannot create the Kafka producer")?;
        Ok(ContestPublisher { producer })
    }

    async fn send(&self, key: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.producer
            .send(
                FutureRecord::to(topics::CONTEST_ENTRIES)
                    .key(key)
                    .payload(&payload),
                Duration::from_secs(60),
            )
            .await
            .map(|_| ())
            .map_err(|(error, _)| {
                anyhow::anyhow!("cannot publish to {}: {error}", topics::CONTEST_ENTRIES)
            })
    }

    /// The contest record: it must be in the log before any of its entries.
    pub async fn contest(&self, contest: &ContestRecord) -> anyhow::Result<()> {
        self.send(
            contest.contest_id.as_str(),
            ContestMessage::Contest(contest.clone()).to_json(),
        )
        .await
    }

    /// Entries, 5,000 in flight at a time; returns once all are acknowledged.
    pub async fn entries(&self, entries: &[EntryRecord]) -> anyhow::Result<()> {
        for chunk in entries.chunks(5_000) {
            let sends = chunk.iter().map(|entry| {
                self.send(
                    entry.contest_id.as_str(),
                    ContestMessage::Entry(entry.clone()).to_json(),
                )
            });
            for result in futures::future::join_all(sends).await {
                result?;
            }
        }
        Ok(())
    }
}

/// Publishes the contest and then its entries, keyed by contest id.
pub async fn publish(
    brokers: &str,
    contest: &ContestRecord,
    entries: &[EntryRecord],
) -> anyhow::Result<()> {
    let publisher = ContestPublisher::new(brokers)?;
    publisher.contest(contest).await?;
    let started = Instant::now();
    let mut published = 0;
    for chunk in entries.chunks(50_000) {
        publisher.entries(chunk).await?;
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
