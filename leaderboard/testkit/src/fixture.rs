//! A contest in a real Redis, written by the real pipeline without Kafka:
//! 3,000 entries (or as many as asked) over 13 players (many ties) and balls
//! played on demand, each moving the contest's version and publishing its
//! notice.

use std::collections::BTreeMap;
use std::sync::Arc;

use ingest::pipeline::{Incoming, Pipeline};
use ingest::topics;
use leaderboard::api::cache::NodeCache;
use leaderboard::api::server::ServeOptions;
use leaderboard_core::contest::{ContestMessage, ContestRecord, EntryRecord};
use leaderboard_core::rank::ranks_by_sort;
use leaderboard_core::{ContestId, EntryId, MatchId, Rules, TeamPoints, UserId};
use leaderboard_hot::{self as hot, HotWriter};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Redis;

pub const ENTRIES: usize = 3_000;

pub fn squad() -> BTreeMap<String, Vec<String>> {
    let mut squad = BTreeMap::new();
    squad.insert("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect());
    squad.insert("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect());
    squad
}

pub fn message(topic: &str, offset: i64, key: &str, payload: Vec<u8>) -> Incoming {
    Incoming {
        offset,
        ..Incoming::keyed(topic, key, payload)
    }
}

/// A contest over a 22-player squad, entries drawn from 13 players only so
/// that many teams tie.
pub fn contest_messages() -> (ContestRecord, Vec<EntryRecord>) {
    contest_messages_of(ENTRIES)
}

/// [`contest_messages`] with `count` entries.
pub fn contest_messages_of(count: usize) -> (ContestRecord, Vec<EntryRecord>) {
    let record = ContestRecord {
        v: 1,
        contest_id: ContestId::parse("c1").unwrap(),
        match_id: MatchId::parse("m1").unwrap(),
        name: "Mega".into(),
        max_entries: count.max(1_000_000) as u64,
        squad: squad(),
    };
    let pool: Vec<String> = (0..7)
        .map(|i| format!("a{i}"))
        .chain((0..6).map(|i| format!("b{i}")))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let entries = (0..count)
        .map(|n| {
            let mut pick = pool.clone();
            pick.shuffle(&mut rng);
            pick.truncate(11);
            EntryRecord {
                v: 1,
                contest_id: record.contest_id.clone(),
                entry_id: EntryId::parse(&format!("e{n}")).unwrap(),
                user_id: UserId::parse(&format!("u{}", n % 97)).unwrap(),
                captain: pick[0].clone(),
                vice_captain: pick[1].clone(),
                players: pick,
            }
        })
        .collect();
    (record, entries)
}

pub fn ball(seq: u64, batter: &str, bowler: &str, runs: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"v":1,"type":"delivery","match_id":"m1","seq":seq,"innings":1,"over":seq / 6,
        "delivery":{"batter":batter,"bowler":bowler,"non_striker":"a1","runs":{"batter":runs,"extras":0,"total":runs}}}))
    .unwrap()
}

pub struct Fixture {
    pub redis: Redis,
    pub pipeline: Pipeline,
    pub writer: HotWriter,
    pub entries: Vec<EntryRecord>,
    pub seq: u64,
    /// Whether each write waits for the background refresh of the sorted
    /// sets (so that deep pages are at the version just written).
    pub wait_for_ranks: bool,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::of(ENTRIES).await
    }

    /// The fixture's contest with `count` entries, its sorted sets refreshed
    /// in the background from 1,000 entries (as ingest does from 50,000).
    pub async fn of(count: usize) -> Fixture {
        let redis = Redis::start();
        let writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 1_000);
        let mut fixture = Fixture {
            redis,
            pipeline: Pipeline::new(Arc::new(Rules::t20_classic())),
            writer,
            entries: Vec::new(),
            seq: 0,
            wait_for_ranks: true,
        };
        let (record, entries) = contest_messages_of(count);
        fixture
            .handle(
                topics::CONTEST_ENTRIES,
                ContestMessage::Contest(record).to_json(),
            )
            .await;
        for entry in &entries {
            fixture.pipeline.handle(&message(
                topics::CONTEST_ENTRIES,
                0,
                "c1",
                ContestMessage::Entry(entry.clone()).to_json(),
            ));
        }
        fixture.entries = entries;
        let lineup = serde_json::to_vec(
            &json!({"v":1,"type":"lineup","match_id":"m1","seq":0,"teams":squad()}),
        )
        .unwrap();
        fixture.handle(topics::MATCH_EVENTS, lineup).await;
        // Thirty balls, the sorted sets waited for once at the end.
        fixture.wait_for_ranks = false;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for _ in 0..30 {
            let batter = format!("a{}", rng.random_range(0..7));
            let bowler = format!("b{}", rng.random_range(0..6));
            fixture
                .next_ball(&batter, &bowler, rng.random_range(0..7))
                .await;
        }
        fixture
            .writer
            .ranks_caught_up(
                &ContestId::parse("c1").unwrap(),
                fixture.writer_version().await,
            )
            .await;
        fixture.wait_for_ranks = true;
        fixture
    }

    pub async fn handle(&mut self, topic: &str, payload: Vec<u8>) {
        self.pipeline.handle(&message(topic, 0, "c1", payload));
        self.flush().await;
    }

    pub async fn flush(&mut self) {
        let effects = self.pipeline.finish_batch();
        self.writer
            .write(&effects.matches, &effects.contests)
            .await
            .unwrap();
        if self.wait_for_ranks {
            self.caught_up(&effects.contests).await;
        }
    }

    /// Waits for the background refresh of the contests' sorted sets, so that
    /// deep pages are at the version just written.
    pub async fn caught_up(&self, contests: &[hot::ContestUpdate]) {
        for contest in contests {
            self.writer
                .ranks_caught_up(&contest.contest_id, contest.version)
                .await;
        }
    }

    pub async fn next_ball(&mut self, batter: &str, bowler: &str, runs: u32) {
        self.seq += 1;
        let payload = ball(self.seq, batter, bowler, runs);
        self.pipeline
            .handle(&message(topics::MATCH_EVENTS, 0, "m1", payload));
        self.flush().await;
    }

    /// The contest's version in Redis.
    pub async fn writer_version(&self) -> u64 {
        let mut connection = self.writer.connection();
        redis::AsyncCommands::hget::<_, _, Option<u64>>(
            &mut connection,
            hot::contest_meta_key(&ContestId::parse("c1").unwrap()),
            "version",
        )
        .await
        .unwrap()
        .unwrap_or(0)
    }

    /// Writes the whole state again (Redis came back empty), retrying while
    /// the connection recovers.
    pub async fn rebuild(&mut self) {
        let (matches, contests) = self.pipeline.full_refresh();
        for _ in 0..100 {
            if self.writer.write(&matches, &contests).await.is_ok() {
                self.caught_up(&contests).await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("Redis did not come back");
    }

    /// Every entry's index in page order, by brute force: points descending,
    /// ties by entry id descending (as the sorted sets order them).
    pub fn page_order(&self) -> Vec<usize> {
        let contest = self
            .pipeline
            .contest(&ContestId::parse("c1").unwrap())
            .unwrap();
        let mut order: Vec<usize> = (0..contest.points.len()).collect();
        order.sort_unstable_by(|a, b| {
            (contest.points[*b], &contest.entries[*b].entry_id)
                .cmp(&(contest.points[*a], &contest.entries[*a].entry_id))
        });
        order
    }

    /// (points, rank) of every entry by brute force from the domain core.
    pub fn expected(&self) -> Vec<(TeamPoints, u32)> {
        let contest = self
            .pipeline
            .contest(&ContestId::parse("c1").unwrap())
            .unwrap();
        let points = contest.points.clone();
        let ranks = ranks_by_sort(&points);
        points.into_iter().zip(ranks).collect()
    }

    pub async fn serve(&self, options: ServeOptions) -> (u16, NodeCache, CancellationToken) {
        super::serve_api(&self.redis.url(), None, options).await
    }
}
