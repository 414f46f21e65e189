//! The Redis hot-state writer and reader against a real `redis-server`: small
//! and large contests, pages with competition ranks, notices after the data.

use leaderboard_testkit as support;

use std::time::Duration;

use leaderboard_core::rank::ranks_by_sort;
use leaderboard_core::{ContestId, EntryId, MatchId, TeamPoints, UserId};
use leaderboard_hot::{self as hot, ContestChanged, ContestUpdate, HotWriter};
use rand::{Rng, SeedableRng};
use support::Redis;

fn contest_update(contest: &str, points: &[TeamPoints], version: u64) -> ContestUpdate {
    let contest_id = ContestId::parse(contest).unwrap();
    let ranks: Vec<(EntryId, TeamPoints)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (EntryId::parse(&format!("e{i}")).unwrap(), *p))
        .collect();
    let mut histogram = std::collections::BTreeMap::new();
    for p in points {
        *histogram.entry(*p).or_insert(0_u64) += 1;
    }
    ContestUpdate {
        contest_id,
        match_id: MatchId::parse("m1").unwrap(),
        name: "Mega".into(),
        version,
        total: points.len() as u64,
        users: ranks
            .iter()
            .map(|(e, _)| (e.clone(), UserId::parse(&format!("u-{e}")).unwrap()))
            .collect(),
        ranks: hot::RankBuffer::shared(ranks),
        histogram: histogram.into_iter().collect(),
        teams: Vec::new(),
        squad: Vec::new(),
        player_points: Vec::new(),
        top: None,
        full: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_competition_ranks_in_small_and_large_mode() {
    let redis = Redis::start();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // Many ties and halves.
    let points: Vec<TeamPoints> = (0..5_000)
        .map(|_| TeamPoints(rng.random_range(0..300)))
        .collect();
    let expected = ranks_by_sort(&points);
    for (contest, large_from) in [("small", usize::MAX), ("large", 1)] {
        let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), large_from);
        let update = contest_update(contest, &points, 7);
        writer.write(&[], &[update]).await.unwrap();
        let contest_id = ContestId::parse(contest).unwrap();
        // A large contest's sorted set is refreshed in the background.
        writer.ranks_caught_up(&contest_id, 7).await;
        let mut connection = writer.connection();
        let mut seen = 0;
        for offset in (0..points.len()).step_by(200) {
            let page = hot::read_page(&mut connection, &contest_id, offset, 200)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((page.version, page.total), (7, 5_000));
            for row in &page.entries {
                let index: usize = row.entry_id[1..].parse().unwrap();
                assert_eq!(row.points, points[index], "{contest} {}", row.entry_id);
                assert_eq!(
                    row.rank,
                    u64::from(expected[index]),
                    "{contest} {}",
                    row.entry_id
                );
                assert_eq!(row.user_id, format!("u-{}", row.entry_id));
                seen += 1;
            }
        }
        assert_eq!(seen, points.len());
        assert!(
            hot::read_page(&mut connection, &ContestId::parse("nope").unwrap(), 0, 10)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notice_follows_the_data_and_the_marker_detects_a_flush() {
    let redis = Redis::start();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), usize::MAX);
    // `TEST_REDIS=cluster` really runs these tests on a cluster.
    assert_eq!(
        writer.connection().is_cluster(),
        support::cluster_requested()
    );
    assert_eq!(redis.is_cluster(), support::cluster_requested());
    let contest_id = ContestId::parse("c1").unwrap();
    let (mut subscriptions, mut messages) = hot::notices::subscribe_to(&redis.url()).await.unwrap();
    subscriptions
        .subscribe(&[hot::contest_channel(&contest_id)])
        .await
        .unwrap();

    assert!(
        !writer.still_alive().await.unwrap(),
        "a fresh Redis has no marker"
    );
    assert!(writer.still_alive().await.unwrap());
    writer
        .write(
            &[],
            &[contest_update("c1", &[TeamPoints(3), TeamPoints(5)], 1)],
        )
        .await
        .unwrap();

    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    let hot::notices::Event::Notice { payload, .. } = message else {
        panic!("{message:?}");
    };
    let notice: ContestChanged = serde_json::from_slice(&payload).unwrap();
    assert_eq!((notice.version, notice.total), (1, 2));
    // The data was there before the notice went out.
    let mut connection = writer.connection();
    let page = hot::read_page(&mut connection, &contest_id, 0, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.version, notice.version);
    assert_eq!(page.entries[0].points, TeamPoints(5));

    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!writer.still_alive().await.unwrap(), "the flush is noticed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_older_than_redis_holds_changes_nothing_in_small_and_large_mode() {
    let redis = Redis::start();
    for (contest, large_from) in [("guard-small", usize::MAX), ("guard-large", 1)] {
        let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), large_from);
        let contest_id = ContestId::parse(contest).unwrap();
        let newer = contest_update(contest, &[TeamPoints(9), TeamPoints(4), TeamPoints(4)], 5);
        let written = writer.write(&[], &[newer]).await.unwrap();
        assert_eq!(written.refused_stale, 0);
        writer.ranks_caught_up(&contest_id, 5).await;
        // A replica rebuilding from an older snapshot writes version 3, in full.
        let older = contest_update(contest, &[TeamPoints(1)], 3);
        let written = writer.write(&[], &[older]).await.unwrap();
        assert_eq!(
            written.refused_stale, 1,
            "{contest}: the older update is refused"
        );
        let mut connection = writer.connection();
        let page = hot::read_page(&mut connection, &contest_id, 0, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((page.version, page.total), (5, 3), "{contest}");
        let points: Vec<TeamPoints> = page.entries.iter().map(|row| row.points).collect();
        assert_eq!(points, [TeamPoints(9), TeamPoints(4), TeamPoints(4)]);
        // The same version again is written (a rebuild repairing a refresh).
        let again = contest_update(contest, &[TeamPoints(2), TeamPoints(2)], 5);
        assert_eq!(writer.write(&[], &[again]).await.unwrap().refused_stale, 0);
        writer.ranks_caught_up(&contest_id, 5).await;
        let page = hot::read_page(&mut connection, &contest_id, 0, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((page.version, page.total), (5, 2), "{contest}");

        // A change on top of version 6 finds 5 (Redis lost a write, as in a
        // failover): nothing is written and the caller hears of the gap.
        let mut change = contest_update(contest, &[TeamPoints(7), TeamPoints(2)], 7);
        change.full = false;
        let written = writer.write(&[], &[change.clone()]).await.unwrap();
        assert_eq!(written.gaps, std::slice::from_ref(&contest_id), "{contest}");
        let page = hot::read_page(&mut connection, &contest_id, 0, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.version, 5, "{contest}");
        // On top of the version it builds on, the change is written.
        change.version = 6;
        let written = writer.write(&[], &[change.clone()]).await.unwrap();
        assert_eq!(written, hot::Written::default(), "{contest}");
        // And once more (a retried batch) is a repeat, not a gap.
        let written = writer.write(&[], &[change]).await.unwrap();
        assert_eq!((written.refused_stale, written.gaps.len()), (1, 0));
    }

    // Match points: the same guard on the match's version.
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), usize::MAX);
    let match_id = MatchId::parse("guard-m").unwrap();
    let update = |version: u64, points: i32| hot::MatchUpdate {
        match_id: match_id.clone(),
        version,
        last_seq: version,
        points: vec![(
            "RG Sharma".to_owned(),
            leaderboard_core::PlayerPoints(points),
        )],
        full: true,
    };
    writer.write(&[update(8, 40)], &[]).await.unwrap();
    let written = writer.write(&[update(6, 10)], &[]).await.unwrap();
    assert_eq!(written.refused_stale, 1);
    let mut connection = redis.connection();
    let points: Option<i32> = redis::Commands::hget(
        &mut connection,
        hot::match_points_key(&match_id),
        "RG Sharma",
    )
    .unwrap();
    assert_eq!(points, Some(40));
}

/// A change of some entries of `all` (the contest's points after it):
/// `changed` are their indexes, `total` the entries held after it, and the
/// histogram has every bucket of `before` and `all` (0 for an emptied one).
fn change_update(
    contest: &str,
    version: u64,
    before: &[TeamPoints],
    all: &[TeamPoints],
    changed: std::ops::Range<usize>,
) -> ContestUpdate {
    let mut update = contest_update(contest, all, version);
    update.full = false;
    let ranks: Vec<(EntryId, TeamPoints)> = update.ranks[changed.clone()].to_vec();
    update.ranks = hot::RankBuffer::shared(ranks);
    update.users.retain(|(entry, _)| {
        let index: usize = entry.as_str()[1..].parse().unwrap();
        index >= before.len() && changed.contains(&index)
    });
    let mut histogram: std::collections::BTreeMap<TeamPoints, u64> =
        before.iter().map(|p| (*p, 0)).collect();
    for p in all {
        *histogram.entry(*p).or_insert(0) += 1;
    }
    update.histogram = histogram.into_iter().collect();
    update
}

/// Every row of the deep pages, at one `ranks_version`.
async fn deep_rows(
    connection: &mut hot::HotConnection,
    contest_id: &ContestId,
    total: usize,
) -> (u64, Vec<TeamPoints>) {
    let mut versions = std::collections::BTreeSet::new();
    let mut points = Vec::new();
    for offset in (0..total).step_by(1_000) {
        let page = hot::read_page(connection, contest_id, offset, 1_000)
            .await
            .unwrap()
            .unwrap();
        versions.insert(page.ranks_version);
        points.extend(page.entries.iter().map(|row| row.points));
    }
    assert_eq!(versions.len(), 1, "one version throughout: {versions:?}");
    (versions.pop_first().unwrap(), points)
}

fn descending(points: &[TeamPoints]) -> Vec<TeamPoints> {
    let mut sorted = points.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted
}

/// A ball that moves every entry of a large contest to `(i * step) % modulo`:
/// written as one change, its refresh waited for, its deep pages checked.
async fn move_everyone(
    writer: &mut HotWriter,
    contest_id: &ContestId,
    version: u64,
    points: &mut Vec<TeamPoints>,
    (step, modulo): (i64, i64),
) {
    let before = std::mem::take(points);
    *points = (0..before.len() as i64)
        .map(|i| TeamPoints((i * step) % modulo))
        .collect();
    let ball = change_update(
        contest_id.as_str(),
        version,
        &before,
        points,
        0..before.len(),
    );
    assert_eq!(
        writer.write(&[], &[ball]).await.unwrap(),
        hot::Written::default()
    );
    writer.ranks_caught_up(contest_id, version).await;
    let mut connection = writer.connection();
    assert_eq!(
        deep_rows(&mut connection, contest_id, before.len()).await,
        (version, descending(points))
    );
}

/// A mega contest is written whole into both sorted sets while its entries
/// arrive (each batch is small); its first ball then starts the background
/// refresh. That refresh must not `COPY` one set into the other: they are
/// equal already, and Redis copies a 10M-member set in one blocking command
/// of seconds, which the next ball's write waits behind. After a refresh
/// has written one set alone, a new writer (a restart) must still copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_contest_written_whole_into_both_sets_starts_its_refresh_without_a_copy() {
    let redis = Redis::start();
    let contest = "twin";
    let contest_id = ContestId::parse(contest).unwrap();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 3_000);
    // Entries arrive in batches of 1,000, tied at 0: small writes.
    let mut points: Vec<TeamPoints> = vec![TeamPoints(0); 1_000];
    writer
        .write(&[], &[contest_update(contest, &points, 1)])
        .await
        .unwrap();
    for version in 2..=5 {
        let before = points.clone();
        points.extend(std::iter::repeat_n(TeamPoints(0), 1_000));
        let update = change_update(
            contest,
            version,
            &before,
            &points,
            before.len()..points.len(),
        );
        assert_eq!(
            writer.write(&[], &[update]).await.unwrap(),
            hot::Written::default()
        );
    }
    let copies = redis.calls_of("COPY");
    // The first ball moves every entry: a large write, then the refresh.
    move_everyone(&mut writer, &contest_id, 6, &mut points, (7, 300)).await;
    assert_eq!(
        redis.calls_of("COPY"),
        copies,
        "the refresh copied a sorted set that equals the other"
    );

    // A restarted writer's first ball: the sets differ now (the refresh
    // wrote one of them alone), so its refresh copies the one readers read.
    let mut restarted = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 3_000);
    move_everyone(&mut restarted, &contest_id, 7, &mut points, (11, 400)).await;
    assert_eq!(
        redis.calls_of("COPY"),
        copies + 1,
        "the restart's refresh copies"
    );
    // And the next ball, on the set it did not copy into.
    move_everyone(&mut restarted, &contest_id, 8, &mut points, (13, 350)).await;
}

/// While a ball is scored and written, the background refresh of deep pages
/// sends nothing (the ball's writes never wait behind it); it catches up
/// once the ball is out.
#[tokio::test(flavor = "multi_thread")]
async fn a_ball_in_flight_holds_back_the_refresh_until_it_is_written() {
    let redis = Redis::start();
    let contest_id = ContestId::parse("held").unwrap();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 1_000);
    let before: Vec<TeamPoints> = (0..5_000).map(|i| TeamPoints(i % 300)).collect();
    writer
        .write(&[], &[contest_update("held", &before, 1)])
        .await
        .unwrap();
    writer.ranks_caught_up(&contest_id, 1).await;
    let mut connection = writer.connection();

    let ball = writer.yield_to_ball();
    let points: Vec<TeamPoints> = (0..5_000).map(|i| TeamPoints((i * 7) % 300)).collect();
    let update = change_update("held", 2, &before, &points, 0..5_000);
    assert_eq!(
        writer.write(&[], &[update]).await.unwrap(),
        hot::Written::default()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        deep_rows(&mut connection, &contest_id, 5_000).await,
        (1, descending(&before)),
        "no refresh while the ball is in flight"
    );
    drop(ball);
    writer.ranks_caught_up(&contest_id, 2).await;
    assert_eq!(
        deep_rows(&mut connection, &contest_id, 5_000).await,
        (2, descending(&points))
    );
}

/// A rebuild of a large contest (a full write, as a restarted replica makes)
/// keeps its deep pages at the version they were ranked at until the refresh
/// has rewritten the other sorted set: their version never goes back, and
/// their rows always agree with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_never_moves_deep_pages_back() {
    let redis = Redis::start();
    let contest_id = ContestId::parse("rebuilt").unwrap();
    let before: Vec<TeamPoints> = (0..20_000).map(|i| TeamPoints(i % 500)).collect();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 1);
    writer
        .write(&[], &[contest_update("rebuilt", &before, 5)])
        .await
        .unwrap();
    writer.ranks_caught_up(&contest_id, 5).await;

    let rebuilt: Vec<TeamPoints> = (0..20_000).map(|i| TeamPoints((i * 7) % 300)).collect();
    let mut restarted = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 1);
    restarted
        .write(&[], &[contest_update("rebuilt", &rebuilt, 6)])
        .await
        .unwrap();
    let mut connection = restarted.connection();
    let page = hot::read_page(&mut connection, &contest_id, 12_000, 50)
        .await
        .unwrap()
        .unwrap();
    let at = match page.ranks_version {
        5 => &before,
        6 => &rebuilt,
        other => panic!("deep pages went back to version {other} during the rebuild"),
    };
    assert_eq!(page.entries.len(), 50);
    for row in &page.entries {
        let index: usize = row.entry_id[1..].parse().unwrap();
        assert_eq!(
            row.points, at[index],
            "{} at {}",
            row.entry_id, page.ranks_version
        );
    }

    restarted.ranks_caught_up(&contest_id, 6).await;
    let sorted = descending(&rebuilt);
    assert_eq!(
        deep_rows(&mut connection, &contest_id, 20_000).await,
        (6, sorted.clone())
    );
    // The next ball moves readers to the other set, rewritten in full too.
    let mut change = contest_update("rebuilt", &rebuilt, 7);
    change.full = false;
    restarted.write(&[], &[change]).await.unwrap();
    restarted.ranks_caught_up(&contest_id, 7).await;
    assert_eq!(
        deep_rows(&mut connection, &contest_id, 20_000).await,
        (7, sorted)
    );
}

/// The recompute reads the live version alone with an empty chunk: that must
/// not read the whole sorted set (at 10M members it timed out the connection).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_chunk_holds_exactly_the_positions_asked_for() {
    let redis = Redis::start();
    let points: Vec<TeamPoints> = (0..3_000).map(|i| TeamPoints(i % 40)).collect();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), 1);
    writer
        .write(&[], &[contest_update("chunks", &points, 3)])
        .await
        .unwrap();
    let contest = ContestId::parse("chunks").unwrap();
    writer.ranks_caught_up(&contest, 3).await;
    let mut connection = writer.connection();
    let chunk = |start, count| {
        let mut connection = connection.clone();
        let contest = contest.clone();
        async move {
            hot::reconcile::read_live_chunk(&mut connection, &contest, start, count)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let versions_only = chunk(0, 0).await;
    assert_eq!((versions_only.version, versions_only.total), (3, 3_000));
    assert!(
        versions_only.rows.is_empty(),
        "{} rows",
        versions_only.rows.len()
    );
    let whole = chunk(0, 3_000).await.rows;
    assert_eq!(whole.len(), 3_000);
    assert_eq!(chunk(10, 5).await.rows, whole[10..15].to_vec());
    assert!(chunk(2_999, 0).await.rows.is_empty());
    assert_eq!(chunk(2_999, 10).await.rows, whole[2_999..].to_vec());
    assert!(chunk(3_000, 10).await.rows.is_empty());
    let missing = ContestId::parse("missing").unwrap();
    assert!(
        hot::reconcile::read_live_chunk(&mut connection, &missing, 0, 0)
            .await
            .unwrap()
            .is_none()
    );
}

/// Every entry's roster record, from all shards: (entry, user, team) text.
async fn roster(connection: &mut hot::HotConnection, contest_id: &ContestId) -> Vec<String> {
    let mut records = Vec::new();
    for key in hot::contest_roster_keys(contest_id) {
        let text: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(connection)
            .await
            .unwrap();
        let text = text.unwrap_or_default();
        assert!(text.is_empty() || text.ends_with('\n'), "{key}");
        for record in text.lines() {
            let (entry, _, _) = hot::split_roster_record(record).unwrap();
            assert_eq!(
                hot::contest_roster_keys(contest_id)[hot::roster_shard(entry)],
                key,
                "{record} is in its own shard"
            );
            records.push(record.to_owned());
        }
    }
    records.sort();
    records
}

/// The roster holds every entry once, with its user and team: after a full
/// write, after entries added by a change, and after a rebuild rewrites the
/// contest whole (not appended to what was there).
#[tokio::test(flavor = "multi_thread")]
async fn the_roster_lists_every_entry_once_through_changes_and_rebuilds() {
    let redis = Redis::start();
    let mut writer = HotWriter::new(hot::connect(&redis.url()).await.unwrap(), usize::MAX);
    let contest_id = ContestId::parse("rostered").unwrap();
    let with_teams = |mut update: ContestUpdate| {
        update.teams = update
            .users
            .iter()
            .map(|(entry, _)| {
                (
                    entry.clone(),
                    format!("0,1,2,3,4,5,6,7,8,9,{};0;1", entry.as_str().len()),
                )
            })
            .collect();
        update
    };
    let expected = |count: usize| -> Vec<String> {
        let mut records: Vec<String> = (0..count)
            .map(|i| {
                let entry = format!("e{i}");
                format!("{entry} u-{entry} 0,1,2,3,4,5,6,7,8,9,{};0;1", entry.len())
            })
            .collect();
        records.sort();
        records
    };
    let before = vec![TeamPoints(10); 2_500];
    writer
        .write(&[], &[with_teams(contest_update("rostered", &before, 1))])
        .await
        .unwrap();
    let mut connection = writer.connection();
    assert_eq!(roster(&mut connection, &contest_id).await, expected(2_500));

    let mut all = before.clone();
    all.extend(vec![TeamPoints(12); 1_700]);
    let added = with_teams(change_update("rostered", 2, &before, &all, 2_500..4_200));
    assert_eq!(added.users.len(), 1_700);
    writer.write(&[], &[added]).await.unwrap();
    assert_eq!(roster(&mut connection, &contest_id).await, expected(4_200));

    writer
        .write(&[], &[with_teams(contest_update("rostered", &all, 3))])
        .await
        .unwrap();
    assert_eq!(roster(&mut connection, &contest_id).await, expected(4_200));
}
