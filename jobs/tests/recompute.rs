//! The recompute end to end on real components: the golden SQL cases, the
//! ranks against the domain core's brute force on generated contests with
//! many ties (1K to 100K entries), and reconciliation with a real Redis —
//! 0 differences when the live ranks are right, and a repair when they are not.

mod support;

use std::path::Path;

use jobs::compute::{self, ContestTables, EngineOptions, EntriesBuilder};
use jobs::recompute::Reconciled;
use leaderboard_core::points::{PlayerPoints, TeamPoints};
use leaderboard_core::team::Team;
use leaderboard_core::ContestId;
use leaderboard_hot as hot;
use leaderboard_testkit::Redis;
use support::Contest;

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
    let mut connection = redis.connect().await;
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
    let (mut subscriptions, mut notices) = hot::notices::subscribe_to(&redis.url()).await.unwrap();
    subscriptions
        .subscribe(&[hot::contest_channel(&c1)])
        .await
        .unwrap();
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
    let notice = tokio::time::timeout(std::time::Duration::from_secs(5), notices.next())
        .await
        .expect("a notice after the repair")
        .unwrap();
    let hot::notices::Event::Notice { payload, .. } = notice else {
        panic!("{notice:?}");
    };
    let notice: hot::ContestChanged = serde_json::from_slice(&payload).unwrap();
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

/// A mega contest's deep ranks lag its version while their background refresh
/// runs (several seconds at 1M entries). A recompute at that version waits for
/// them rather than calling the live state "moved on", and compares.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_waits_for_deep_ranks_still_refreshing_at_the_same_version() {
    let redis = Redis::start();
    let c1 = ContestId::parse("c1").unwrap();
    let contest = Contest::new(5_000, Some(&redis)).await;
    let meta = hot::contest_meta_key(&c1);
    let mut connection = redis.connect().await;
    let version: u64 = redis::AsyncCommands::hget(&mut connection, &meta, "version")
        .await
        .unwrap();
    // As the refresh leaves it: the meta at the ball's version, the sorted
    // set readers read still at the previous one, for 8 s.
    let _: () = redis::AsyncCommands::hset(&mut connection, &meta, "ranks_version", version - 1)
        .await
        .unwrap();
    let refreshed = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        let _: () = redis::AsyncCommands::hset(&mut connection, &meta, "ranks_version", version)
            .await
            .unwrap();
    });
    let report = contest.recomputer().contest(&c1, &|_| {}).await.unwrap();
    refreshed.await.unwrap();
    assert_eq!(report.version, version);
    assert_eq!(
        report.reconcile,
        Reconciled::Compared {
            differences: 0,
            repaired: false
        }
    );

    // Deep ranks that do not catch up within the wait (a refresh that died
    // with its replica) are reported as behind, with both versions.
    let mut connection = redis.connect().await;
    let meta = hot::contest_meta_key(&c1);
    let _: () = redis::AsyncCommands::hset(&mut connection, &meta, "ranks_version", version - 1)
        .await
        .unwrap();
    let mut recomputer = contest.recomputer();
    recomputer.catch_up = std::time::Duration::from_millis(500);
    let report = recomputer.contest(&c1, &|_| {}).await.unwrap();
    assert_eq!(
        report.reconcile,
        Reconciled::Behind {
            live_version: version,
            ranks_version: version - 1
        }
    );
    assert_eq!(report.differences, None);
    let fields = report.fields();
    assert!(
        fields.contains(&("reconcile", "behind".to_owned())),
        "{fields:?}"
    );
}

/// A contest retired from Redis while its recompute runs (its hot keys
/// expire some time after its match) is reported not live, not "moved on".
#[tokio::test(flavor = "multi_thread")]
async fn a_contest_retired_from_redis_during_its_recompute_is_not_live() {
    let redis = Redis::start();
    let c1 = ContestId::parse("c1").unwrap();
    let contest = Contest::new(5_000, Some(&redis)).await;
    let url = redis.url();
    let keys: Vec<String> = hot::contest_ranks_keys(&c1)
        .into_iter()
        .chain([hot::contest_meta_key(&c1), hot::contest_histogram_key(&c1)])
        .collect();
    // Once the live version was checked and scoring begins, the keys expire.
    let retire = move |stage: jobs::recompute::Stage| {
        if stage == jobs::recompute::Stage::Score {
            let mut connection = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let _: () = redis::Commands::del(&mut connection, &keys).unwrap();
        }
    };
    let report = contest.recomputer().contest(&c1, &retire).await.unwrap();
    assert_eq!(report.reconcile, Reconciled::NotLive);
    assert_eq!(report.differences, None);
}
