//! The recompute end to end on real components: the golden SQL cases, the
//! ranks against the domain core's brute force on generated contests with
//! many ties (1K to 100K entries), and reconciliation with a real Redis —
//! 0 differences when the live ranks are right, and a repair when they are not.

use std::path::Path;
use std::sync::Arc;

use ingest::pipeline::Pipeline;
use ingest::topics;
use jobs::compute::{self, ContestTables, EngineOptions, EntriesBuilder};
use jobs::recompute::{Recomputer, Reconciled};
use leaderboard_core::contest::{ContestMessage, EntryRecord};
use leaderboard_core::points::{PlayerPoints, TeamPoints};
use leaderboard_core::store::{RankRow, RankSnapshot, RankSnapshotInfo};
use leaderboard_core::team::Team;
use leaderboard_core::{ContestId, EntryId, MatchId, Rules, UserId};
use leaderboard_hot::{self as hot, HotWriter};
use leaderboard_store::SharedStore;
use leaderboard_testkit::fixture::{ball, contest_messages, message, squad};
use leaderboard_testkit::Redis;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

async fn run_sql(sql: &str, case: &Path, partitions: usize) -> Vec<Vec<String>> {
    let players = csv(&case.join("players.csv"));
    let names: Vec<String> = players.iter().map(|row| row[1].clone()).collect();
    let points: Vec<PlayerPoints> = players
        .iter()
        .map(|row| PlayerPoints(row[2].parse().unwrap()))
        .collect();
    let mut builder = EntriesBuilder::new();
    for row in csv(&case.join("entries.csv")) {
        let slots: Vec<u32> = row[2..13].iter().map(|v| v.parse().unwrap()).collect();
        let team = Team {
            players: slots.try_into().unwrap(),
            captain: row[13].parse().unwrap(),
            vice_captain: row[14].parse().unwrap(),
        };
        builder.push(&row[0], &row[1], &team);
    }
    let options = EngineOptions {
        partitions,
        ..EngineOptions::default()
    };
    let tables = ContestTables::new(&options, builder.finish(), &names, &points).unwrap();
    let mut stream = tables.stream(sql).await.unwrap();
    let mut out = Vec::new();
    while let Some(batch) = futures::StreamExt::next(&mut stream).await {
        let batch = batch.unwrap();
        for row in compute::ranked_rows(&batch).unwrap() {
            out.push(vec![
                row.entry_id.to_owned(),
                row.user_id.to_owned(),
                row.points.halves().to_string(),
                row.rank.to_string(),
            ]);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_sql_cases() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = 0;
    for case in std::fs::read_dir(&golden).unwrap() {
        let case = case.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        cases += 1;
        let expected = csv(&case.join("expected.csv"));
        for partitions in [1, 2, 4] {
            assert_eq!(
                run_sql(compute::RANKS_SQL, &case, partitions).await,
                expected,
                "ranks.sql on {} with {partitions} partitions",
                case.display()
            );
        }
        assert_eq!(
            run_sql(compute::WINDOW_SQL, &case, 2).await,
            expected,
            "window.sql agrees on {}",
            case.display()
        );
    }
    assert!(cases >= 1, "no golden cases found in {}", golden.display());
}

/// A contest of `entries` entries over 13 of the 22 squad players (many
/// ties), its lineup and `balls` balls, written through the real pipeline to
/// the store (and to Redis when given).
struct Contest {
    pipeline: Pipeline,
    store: SharedStore,
    writer: Option<HotWriter>,
    seq: u64,
    _dir: tempfile::TempDir,
}

impl Contest {
    async fn new(entries: usize, redis: Option<&Redis>) -> Contest {
        let dir = tempfile::tempdir().unwrap();
        let store = leaderboard_store::open(&format!("file://{}", dir.path().display())).unwrap();
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
            _dir: dir,
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

    async fn contest_message(&mut self, message_body: ContestMessage) {
        self.pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            message_body.to_json(),
        ));
        self.flush().await;
    }

    async fn event(&mut self, payload: Vec<u8>) {
        self.pipeline
            .handle(&message(topics::MATCH_EVENTS, 0, "m1", payload));
        self.flush().await;
    }

    async fn ball(&mut self, batter: &str, bowler: &str, runs: u32) {
        self.seq += 1;
        self.event(ball(self.seq, batter, bowler, runs)).await;
    }

    /// As `ingest run` does: the store first, then Redis.
    async fn flush(&mut self) {
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
    fn brute_force(&self) -> Vec<RankRow> {
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

    fn recomputer(&self) -> Recomputer {
        Recomputer {
            store: self.store.clone(),
            redis: self.writer.as_ref().map(HotWriter::connection),
            rules: Arc::new(Rules::t20_classic()),
            engine: EngineOptions {
                memory_limit: 256 << 20,
                ..EngineOptions::default()
            },
        }
    }

    async fn stored_rows(&self, snapshot_id: u64) -> Vec<RankRow> {
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

#[tokio::test(flavor = "multi_thread")]
async fn recompute_equals_brute_force_on_generated_contests_with_ties() {
    let c1 = ContestId::parse("c1").unwrap();
    for entries in [1_000, 10_000, 100_000] {
        let contest = Contest::new(entries, None).await;
        let report = contest.recomputer().contest(&c1, &|_| {}).await.unwrap();
        let expected = contest.brute_force();
        assert_eq!(report.rows, entries as u64);
        assert_eq!(report.reconcile, Reconciled::Skipped, "no Redis given");
        let distinct: std::collections::BTreeSet<TeamPoints> =
            expected.iter().map(|row| row.points).collect();
        assert!(
            distinct.len() * 10 < entries,
            "{entries} entries should tie a lot: {} distinct points",
            distinct.len()
        );
        assert_eq!(report.distinct_points, distinct.len() as u64);
        let stored = contest.stored_rows(report.snapshot_id).await;
        assert_eq!(stored.len(), expected.len());
        assert!(
            stored == expected,
            "{entries} entries: the recompute differs from brute force"
        );
        let head = contest
            .store
            .latest_rank_snapshot(&c1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.snapshot_id, head.version, head.source.as_str()),
            (report.snapshot_id, report.version, "recompute")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_counts_zero_on_right_live_ranks_and_repairs_wrong_ones() {
    let redis = Redis::start();
    let c1 = ContestId::parse("c1").unwrap();
    let contest = Contest::new(5_000, Some(&redis)).await;
    let recomputer = contest.recomputer();
    let report = recomputer.contest(&c1, &|_| {}).await.unwrap();
    assert_eq!(
        report.reconcile,
        Reconciled::Compared {
            differences: 0,
            repaired: false
        }
    );
    assert_eq!(report.differences, Some(0));

    // Someone (or a bug) moves one entry's live points: the recompute finds
    // it, the ranks it shifted, and rewrites Redis.
    let mut connection = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let expected = contest.brute_force();
    let victim = &expected[expected.len() - 1];
    let _: () = redis::AsyncCommands::zadd(
        &mut connection,
        hot::contest_ranks_key(&c1),
        victim.entry_id.as_str(),
        10_000.0,
    )
    .await
    .unwrap();
    let mut notices = redis.client().get_async_pubsub().await.unwrap();
    notices.subscribe(hot::contest_channel(&c1)).await.unwrap();
    let report = recomputer.contest(&c1, &|_| {}).await.unwrap();
    let Reconciled::Compared {
        differences,
        repaired,
    } = report.reconcile
    else {
        panic!("not compared: {:?}", report.reconcile);
    };
    assert!(repaired);
    // The victim itself, and every entry it jumped over lost a place.
    let jumped = expected.len() as u64; // it went from last to first
    assert!(differences >= 1 && differences <= jumped, "{differences}");
    let notice = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures::StreamExt::next(&mut notices.on_message()),
    )
    .await
    .expect("a notice after the repair")
    .unwrap();
    let notice: hot::ContestChanged =
        serde_json::from_str(&notice.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(notice.version, report.version);
    let score: f64 = redis::AsyncCommands::zscore(
        &mut connection,
        hot::contest_ranks_key(&c1),
        victim.entry_id.as_str(),
    )
    .await
    .unwrap();
    assert_eq!(
        score,
        victim.points.as_f64(),
        "Redis holds the recompute's points again"
    );
    let again = recomputer.contest(&c1, &|_| {}).await.unwrap();
    assert_eq!(again.differences, Some(0), "repaired for good");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_contest_is_a_clear_error() {
    let contest = Contest::new(100, None).await;
    let error = contest
        .recomputer()
        .contest(&ContestId::parse("nope").unwrap(), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "contest `nope` is unknown");
}
