//! What the jobs tests share: a generated contest written through the real
//! pipeline to a store of its own (and to a real Redis when given).
#![allow(dead_code)]

use std::sync::Arc;

use ingest::pipeline::Pipeline;
use ingest::topics;
use jobs::compute::EngineOptions;
use jobs::recompute::Recomputer;
use leaderboard_core::contest::{ContestMessage, EntryRecord};
use leaderboard_core::store::{RankRow, RankSnapshot, RankSnapshotInfo};
use leaderboard_core::{ContestId, EntryId, MatchId, Rules, UserId};
use leaderboard_hot::{self as hot, HotWriter};
use leaderboard_store::SharedStore;
use leaderboard_testkit::fixture::{ball, contest_messages, message, squad};
use leaderboard_testkit::Redis;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A contest of `entries` entries over 13 of the 22 squad players (many
/// ties), its lineup and `balls` balls, written through the real pipeline to
/// the store (and to Redis when given).
pub struct Contest {
    pub pipeline: Pipeline,
    pub store: SharedStore,
    pub writer: Option<HotWriter>,
    seq: u64,
    pub dir: tempfile::TempDir,
}

impl Contest {
    pub async fn new(entries: usize, redis: Option<&Redis>) -> Contest {
        let dir = tempfile::tempdir().unwrap();
        let store = leaderboard_store::open(&format!("file://{}", dir.path().display()))
            .await
            .unwrap();
        let writer = match redis {
            Some(redis) => Some(HotWriter::new(
                hot::connect(&redis.url()).await.unwrap(),
                10_000,
            )),
            None => None,
        };
        let mut contest = Contest {
            pipeline: Pipeline::new(Arc::new(Rules::t20_classic())),
            store,
            writer,
            seq: 0,
            dir,
        };
        let (record, _) = contest_messages();
        contest
            .contest_message(ContestMessage::Contest(record))
            .await;
        let pool: Vec<String> = (0..7)
            .map(|i| format!("a{i}"))
            .chain((0..6).map(|i| format!("b{i}")))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(entries as u64);
        for chunk in (0..entries).collect::<Vec<_>>().chunks(20_000) {
            for &n in chunk {
                let mut pick = pool.clone();
                pick.shuffle(&mut rng);
                pick.truncate(11);
                let entry = EntryRecord {
                    v: 1,
                    contest_id: ContestId::parse("c1").unwrap(),
                    entry_id: EntryId::parse(&format!("e{n}")).unwrap(),
                    user_id: UserId::parse(&format!("u{}", n % 997)).unwrap(),
                    captain: pick[0].clone(),
                    vice_captain: pick[1].clone(),
                    players: pick,
                };
                contest.pipeline.handle(&message(
                    topics::CONTEST_ENTRIES,
                    0,
                    "c1",
                    ContestMessage::Entry(entry).to_json(),
                ));
            }
            contest.flush().await;
        }
        let lineup = serde_json::to_vec(
            &serde_json::json!({"v":1,"type":"lineup","match_id":"m1","seq":0,"teams":squad()}),
        )
        .unwrap();
        contest.event(lineup).await;
        for _ in 0..12 {
            let batter = format!("a{}", rng.random_range(0..7));
            let bowler = format!("b{}", rng.random_range(0..6));
            contest.ball(&batter, &bowler, rng.random_range(0..7)).await;
        }
        contest
    }

    pub async fn contest_message(&mut self, message_body: ContestMessage) {
        self.pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            message_body.to_json(),
        ));
        self.flush().await;
    }

    pub async fn event(&mut self, payload: Vec<u8>) {
        self.pipeline
            .handle(&message(topics::MATCH_EVENTS, 0, "m1", payload));
        self.flush().await;
    }

    pub async fn ball(&mut self, batter: &str, bowler: &str, runs: u32) {
        self.seq += 1;
        self.event(ball(self.seq, batter, bowler, runs)).await;
    }

    /// As `ingest run` does: the store first, then Redis.
    pub async fn flush(&mut self) {
        let effects = self.pipeline.finish_batch();
        self.store.apply(effects.store).await.unwrap();
        if let Some(writer) = &mut self.writer {
            writer
                .write(&effects.matches, &effects.contests)
                .await
                .unwrap();
        }
    }

    /// Every entry's row by brute force from the domain core's state.
    pub fn brute_force(&self) -> Vec<RankRow> {
        let state = self
            .pipeline
            .contest(&ContestId::parse("c1").unwrap())
            .unwrap();
        RankSnapshot::rank(
            RankSnapshotInfo {
                contest_id: ContestId::parse("c1").unwrap(),
                snapshot_id: 0,
                match_id: MatchId::parse("m1").unwrap(),
                version: state.version,
                total: 0,
                computed_at_ms: 0,
                source: "brute force".into(),
            },
            state
                .entries
                .iter()
                .zip(&state.points)
                .map(|(entry, points)| {
                    (entry.entry_id.clone(), entry.user_id.to_string(), *points)
                }),
        )
        .rows
    }

    pub fn recomputer(&self) -> Recomputer {
        Recomputer {
            store: self.store.clone(),
            redis: self.writer.as_ref().map(HotWriter::connection),
            rules: Arc::new(Rules::t20_classic()),
            engine: EngineOptions {
                memory_limit: 256 << 20,
                ..EngineOptions::default()
            },
            catch_up: jobs::recompute::DEFAULT_CATCH_UP,
        }
    }

    pub async fn stored_rows(&self, snapshot_id: u64) -> Vec<RankRow> {
        self.store
            .rank_page(
                &ContestId::parse("c1").unwrap(),
                snapshot_id,
                0,
                u64::MAX >> 1,
            )
            .await
            .unwrap()
    }
}

impl Contest {
    /// `STORE` for a process that shares this contest's store.
    pub fn store_uri(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}
