//! The conformance suite every [`DurableStore`] adapter passes: the embedded
//! store in `cargo test`, the Scylla adapter wherever a node is reachable.
//! Each check takes an empty store and panics with what went wrong.

use std::collections::BTreeMap;

use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::event::{EventBody, MatchEvent, EVENT_VERSION};
use leaderboard_core::ids::{ContestId, EntryId, MatchId, UserId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::{
    DurableStore, RankRow, RankSnapshot, RankSnapshotInfo, StoreBatch, KEEP_RANK_SNAPSHOTS,
};

/// Runs every check, each on a fresh store from `open`.
pub async fn run_all<S, F, Fut>(open: F)
where
    S: DurableStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    an_empty_store_is_empty(&open().await).await;
    batches_load_back_in_order(&open().await).await;
    rank_snapshots_page_rank_and_expire(&open().await).await;
    finished_matches_load_only_their_ids(&open().await).await;
    recompute_input_is_one_moment_and_entries_page(&open().await).await;
    streamed_snapshots_publish_atomically(&open().await).await;
    rank_history_follows_kept_snapshots(&open().await).await;
    large_snapshots_page_across_partitions(&open().await).await;
}

/// A snapshot and a contest larger than one partition of the Scylla schema
/// (10,000 rows): pages that cross a partition's end read whole, entries
/// page across buckets.
pub async fn large_snapshots_page_across_partitions<S: DurableStore>(store: &S) {
    let c1 = ContestId::parse("c1").unwrap();
    let count = 25_000u64;
    let entries: Vec<EntryRecord> = (0..count)
        .map(|i| entry("c1", &format!("e{i:05}")))
        .collect();
    store
        .apply(StoreBatch {
            contests: vec![contest("c1")],
            entries: entries.clone(),
            contest_versions: vec![(c1.clone(), 1)],
            ..StoreBatch::default()
        })
        .await
        .expect("entries");
    let page = store
        .entries_page(&c1, 9_995, 20)
        .await
        .expect("entries page");
    assert_eq!(page, entries[9_995..10_015]);
    let tail = store
        .entries_page(&c1, 24_990, 100)
        .await
        .expect("last page");
    assert_eq!(tail, entries[24_990..]);

    let points: Vec<(String, i64)> = (0..count)
        .map(|i| (format!("e{i:05}"), (i % 997) as i64))
        .collect();
    let borrowed: Vec<(&str, i64)> = points.iter().map(|(e, p)| (e.as_str(), *p)).collect();
    let all = rows(&borrowed);
    let mut info = snapshot(1, &[]).info;
    info.source = "recompute".into();
    let mut writer = store.begin_rank_snapshot(info).await.expect("begin");
    for chunk in all.chunks(7_000) {
        writer.write(chunk.to_vec()).await.expect("chunk");
    }
    let head = writer.publish().await.expect("publish");
    assert_eq!(head.total, count);
    let page = store
        .rank_page(&c1, head.snapshot_id, 19_990, 30)
        .await
        .expect("page across a partition's end");
    assert_eq!(page, all[19_990..20_020]);
    let last = store
        .rank_page(&c1, head.snapshot_id, 24_995, 100)
        .await
        .expect("last page");
    assert_eq!(last, all[24_995..]);
    let deep = &all[17_321];
    assert_eq!(
        store
            .rank_of_entry(&c1, head.snapshot_id, &deep.entry_id)
            .await
            .expect("entry"),
        Some((17_321, deep.clone()))
    );
}

fn contest(id: &str) -> ContestRecord {
    let squad = BTreeMap::from([
        ("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect()),
        ("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect()),
    ]);
    ContestRecord {
        v: 1,
        contest_id: ContestId::parse(id).unwrap(),
        match_id: MatchId::parse("m1").unwrap(),
        name: format!("contest {id}"),
        max_entries: 100,
        squad,
    }
}

fn entry(contest: &str, id: &str) -> EntryRecord {
    EntryRecord {
        v: 1,
        contest_id: ContestId::parse(contest).unwrap(),
        entry_id: EntryId::parse(id).unwrap(),
        user_id: UserId::parse(&format!("u-{id}")).unwrap(),
        players: (0..11).map(|i| format!("a{i}")).collect(),
        captain: "a0".into(),
        vice_captain: "a1".into(),
    }
}

fn event(seq: u64, body: EventBody) -> MatchEvent {
    MatchEvent {
        v: EVENT_VERSION,
        match_id: MatchId::parse("m1").unwrap(),
        seq,
        body,
    }
}

pub async fn an_empty_store_is_empty<S: DurableStore>(store: &S) {
    store.ping().await.expect("ping");
    let loaded = store.load(u64::MAX).await.expect("load");
    assert!(loaded.contests.is_empty() && loaded.entries.is_empty());
    assert!(loaded.match_events.is_empty());
    let c1 = ContestId::parse("c1").unwrap();
    assert_eq!(store.latest_rank_snapshot(&c1).await.expect("latest"), None);
    assert!(store
        .rank_page(&c1, 1, 0, 10)
        .await
        .expect("page")
        .is_empty());
    store
        .apply(StoreBatch::default())
        .await
        .expect("empty batch");
}

pub async fn batches_load_back_in_order<S: DurableStore>(store: &S) {
    let lineup = event(
        0,
        EventBody::Lineup {
            teams: BTreeMap::from([("A".to_owned(), vec!["a0".to_owned()])]),
        },
    );
    store
        .apply(StoreBatch {
            contests: vec![contest("c2"), contest("c1")],
            entries: vec![entry("c1", "e9"), entry("c2", "e1"), entry("c1", "e3")],
            match_events: vec![lineup.clone()],
            contest_versions: vec![(ContestId::parse("c1").unwrap(), 1)],
            rank_snapshots: Vec::new(),
        })
        .await
        .expect("first batch");
    let correction = event(
        1,
        EventBody::Lineup {
            teams: BTreeMap::from([("A".to_owned(), vec!["a1".to_owned()])]),
        },
    );
    store
        .apply(StoreBatch {
            entries: vec![entry("c1", "e1")],
            match_events: vec![correction.clone()],
            contest_versions: vec![
                (ContestId::parse("c1").unwrap(), 2),
                (ContestId::parse("c2").unwrap(), 1),
            ],
            ..StoreBatch::default()
        })
        .await
        .expect("second batch");

    let loaded = store.load(u64::MAX).await.expect("load");
    let contests: Vec<(String, u64)> = loaded
        .contests
        .iter()
        .map(|(record, version)| (record.contest_id.to_string(), *version))
        .collect();
    assert_eq!(contests, [("c1".into(), 2), ("c2".into(), 1)]);
    assert_eq!(loaded.contests[0].0, contest("c1"));
    let order = |id: &str| -> Vec<String> {
        loaded.entries[&ContestId::parse(id).unwrap()]
            .iter()
            .map(|e| e.entry_id.to_string())
            .collect()
    };
    assert_eq!(
        order("c1"),
        ["e9", "e3", "e1"],
        "entries keep arrival order"
    );
    assert_eq!(order("c2"), ["e1"]);
    assert_eq!(
        loaded.match_events[&MatchId::parse("m1").unwrap()],
        [lineup, correction]
    );
    assert!(loaded.finished_matches.is_empty() && loaded.finished_contests.is_empty());
}

/// A finished match is not loaded again (start-up reads only what is live),
/// but its id and its contests' ids are, and its final standings stay.
pub async fn finished_matches_load_only_their_ids<S: DurableStore>(store: &S) {
    let other = MatchEvent {
        match_id: MatchId::parse("m2").unwrap(),
        ..event(0, EventBody::MatchEnd {})
    };
    let mut live = contest("c9");
    live.match_id = MatchId::parse("m3").unwrap();
    store
        .apply(StoreBatch {
            contests: vec![contest("c1"), contest("c2"), live],
            entries: vec![entry("c1", "e1"), entry("c2", "e2"), entry("c9", "e9")],
            match_events: vec![
                event(
                    0,
                    EventBody::Lineup {
                        teams: BTreeMap::from([("A".to_owned(), vec!["a0".to_owned()])]),
                    },
                ),
                other,
            ],
            ..StoreBatch::default()
        })
        .await
        .expect("live batch");
    // m1 ends; c1's final standings are written in the same batch.
    store
        .apply(StoreBatch {
            match_events: vec![event(1, EventBody::MatchEnd {})],
            rank_snapshots: vec![snapshot(4, &[("e1", 10)])],
            ..StoreBatch::default()
        })
        .await
        .expect("end batch");
    let loaded = store.load(u64::MAX).await.expect("load");
    let ids: Vec<String> = loaded
        .contests
        .iter()
        .map(|(record, _)| record.contest_id.to_string())
        .collect();
    assert_eq!(ids, ["c9"], "only the contest of the unfinished match");
    assert_eq!(
        loaded
            .entries
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["c9"]
    );
    assert!(loaded.match_events.is_empty(), "m1 and m2 have ended");
    let finished: Vec<String> = loaded
        .finished_matches
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(finished, ["m1", "m2"]);
    let finished: Vec<String> = loaded
        .finished_contests
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(finished, ["c1"]);
    let c1 = ContestId::parse("c1").unwrap();
    let latest = store.latest_rank_snapshot(&c1).await.expect("latest");
    assert_eq!(
        latest.map(|info| info.version),
        Some(4),
        "final standings kept"
    );
}

fn snapshot(version: u64, points: &[(&str, i64)]) -> RankSnapshot {
    RankSnapshot::rank(
        RankSnapshotInfo {
            contest_id: ContestId::parse("c1").unwrap(),
            snapshot_id: 0,
            match_id: MatchId::parse("m1").unwrap(),
            version,
            total: 0,
            computed_at_ms: 1_700_000_000_000 + version,
            source: "final".into(),
        },
        points.iter().map(|&(entry, halves)| {
            (
                EntryId::parse(entry).unwrap(),
                format!("u-{entry}"),
                TeamPoints(halves),
            )
        }),
    )
}

/// The newest snapshot's head, which must exist.
async fn latest<S: DurableStore>(store: &S, contest: &ContestId) -> RankSnapshotInfo {
    store
        .latest_rank_snapshot(contest)
        .await
        .expect("latest")
        .expect("a snapshot")
}

/// `info` as the store answers it: with the id it was given.
fn stored(info: &RankSnapshotInfo, snapshot_id: u64) -> RankSnapshotInfo {
    RankSnapshotInfo {
        snapshot_id,
        ..info.clone()
    }
}

pub async fn rank_snapshots_page_rank_and_expire<S: DurableStore>(store: &S) {
    let c1 = ContestId::parse("c1").unwrap();
    // Ties on 20 and on 10: ranks 1, 2, 2, 4, 5, 5, 5.
    let first = snapshot(
        3,
        &[
            ("e1", 10),
            ("e2", 20),
            ("e3", 30),
            ("e4", 20),
            ("e5", 10),
            ("e6", 15),
            ("e7", 10),
        ],
    );
    let ranks: Vec<(String, u64)> = first
        .rows
        .iter()
        .map(|row| (row.entry_id.to_string(), row.rank))
        .collect();
    let expected = [
        ("e3", 1),
        ("e4", 2),
        ("e2", 2),
        ("e6", 4),
        ("e7", 5),
        ("e5", 5),
        ("e1", 5),
    ];
    assert_eq!(
        ranks,
        expected.map(|(e, r)| (e.to_owned(), r)),
        "competition ranks in page order"
    );
    assert_eq!(first.info.total, 7);
    store
        .apply(StoreBatch {
            rank_snapshots: vec![first.clone()],
            ..StoreBatch::default()
        })
        .await
        .expect("snapshot");

    let head = latest(store, &c1).await;
    assert!(head.snapshot_id > 0, "the store gives the snapshot an id");
    assert_eq!(head, stored(&first.info, head.snapshot_id));
    let id = head.snapshot_id;
    assert_eq!(
        store.rank_page(&c1, id, 0, 100).await.expect("page"),
        first.rows
    );
    assert_eq!(
        store.rank_page(&c1, id, 2, 3).await.expect("page"),
        first.rows[2..5]
    );
    assert!(store
        .rank_page(&c1, id, 7, 3)
        .await
        .expect("page")
        .is_empty());
    let e6 = EntryId::parse("e6").unwrap();
    assert_eq!(
        store.rank_of_entry(&c1, id, &e6).await.expect("entry"),
        Some((3, first.rows[3].clone()))
    );
    let nobody = EntryId::parse("e99").unwrap();
    assert_eq!(
        store.rank_of_entry(&c1, id, &nobody).await.expect("entry"),
        None
    );
    assert_eq!(
        store
            .rank_of_entry(&c1, id + 1000, &e6)
            .await
            .expect("entry"),
        None,
        "no such snapshot"
    );

    // Newer snapshots replace older ones beyond KEEP_RANK_SNAPSHOTS.
    let mut ids = vec![id];
    for version in (5..).step_by(2).take(KEEP_RANK_SNAPSHOTS) {
        let newer = snapshot(version, &[("e1", 40 + version as i64), ("e2", 20)]);
        store
            .apply(StoreBatch {
                rank_snapshots: vec![newer.clone()],
                ..StoreBatch::default()
            })
            .await
            .expect("newer snapshot");
        let head = latest(store, &c1).await;
        assert!(head.snapshot_id > *ids.last().unwrap(), "ids rise");
        assert_eq!(head, stored(&newer.info, head.snapshot_id));
        assert_eq!(
            store
                .rank_page(&c1, head.snapshot_id, 0, 10)
                .await
                .expect("page"),
            newer.rows
        );
        ids.push(head.snapshot_id);
    }
    let kept = &ids[ids.len() - KEEP_RANK_SNAPSHOTS..];
    for &id in &ids {
        let page = store.rank_page(&c1, id, 0, 10).await.expect("page");
        assert_eq!(
            !page.is_empty(),
            kept.contains(&id),
            "snapshot {id} kept or dropped"
        );
    }
    // Rewriting a version replaces it whole, under a new id.
    let newest = latest(store, &c1).await;
    let again = snapshot(newest.version, &[("e7", 1)]);
    store
        .apply(StoreBatch {
            rank_snapshots: vec![again.clone()],
            ..StoreBatch::default()
        })
        .await
        .expect("rewrite");
    let rewritten = latest(store, &c1).await;
    assert_eq!(rewritten.version, newest.version);
    assert!(rewritten.snapshot_id > newest.snapshot_id);
    assert_eq!(
        store
            .rank_page(&c1, rewritten.snapshot_id, 0, 10)
            .await
            .expect("page"),
        again.rows
    );
    assert!(
        store
            .rank_page(&c1, newest.snapshot_id, 0, 10)
            .await
            .expect("page")
            .is_empty(),
        "the replaced snapshot is gone"
    );
}

/// What a recompute reads: the contest, its version, how many entries it had
/// and its match's log, of one moment; entries page by page in arrival order.
pub async fn recompute_input_is_one_moment_and_entries_page<S: DurableStore>(store: &S) {
    let c1 = ContestId::parse("c1").unwrap();
    assert!(store.recompute_input(&c1).await.expect("input").is_none());
    let lineup = event(
        0,
        EventBody::Lineup {
            teams: BTreeMap::from([("A".to_owned(), vec!["a0".to_owned()])]),
        },
    );
    let entries: Vec<EntryRecord> = (0..25).map(|i| entry("c1", &format!("e{i}"))).collect();
    store
        .apply(StoreBatch {
            contests: vec![contest("c1"), contest("c2")],
            entries: entries.clone(),
            match_events: vec![lineup.clone(), event(1, EventBody::MatchEnd {})],
            contest_versions: vec![(c1.clone(), 7)],
            ..StoreBatch::default()
        })
        .await
        .expect("batch");
    let input = store
        .recompute_input(&c1)
        .await
        .expect("input")
        .expect("known contest");
    assert_eq!(input.contest, contest("c1"));
    assert_eq!((input.version, input.entry_count), (7, 25));
    assert_eq!(input.events, [lineup, event(1, EventBody::MatchEnd {})]);
    let mut read = Vec::new();
    while (read.len() as u64) < input.entry_count {
        let page = store
            .entries_page(&c1, read.len() as u64, 10)
            .await
            .expect("page");
        assert!(!page.is_empty() && page.len() <= 10);
        read.extend(page);
    }
    assert_eq!(read, entries);
    assert!(store
        .entries_page(&c1, 25, 10)
        .await
        .expect("past the end")
        .is_empty());
    let listed: Vec<(String, u64, bool)> = store
        .list_contests()
        .await
        .expect("list")
        .into_iter()
        .map(|c| (c.contest_id.to_string(), c.version, c.finished))
        .collect();
    assert_eq!(
        listed,
        [("c1".into(), 7, true), ("c2".into(), 0, true)],
        "m1 has ended"
    );
}

fn rows(points: &[(&str, i64)]) -> Vec<RankRow> {
    snapshot(0, points).rows
}

/// A streamed snapshot is invisible until published; a writer dropped before
/// publishing (its job failed or died) leaves the previous snapshot served.
pub async fn streamed_snapshots_publish_atomically<S: DurableStore>(store: &S) {
    let c1 = ContestId::parse("c1").unwrap();
    let before = snapshot(4, &[("e1", 10), ("e2", 8)]);
    store
        .apply(StoreBatch {
            rank_snapshots: vec![before.clone()],
            ..StoreBatch::default()
        })
        .await
        .expect("first snapshot");
    let old = latest(store, &c1).await;

    let all = rows(&[("e1", 30), ("e2", 20), ("e3", 20), ("e4", 5), ("e5", 1)]);
    let mut info = snapshot(5, &[]).info;
    info.source = "recompute".into();
    let mut abandoned = store
        .begin_rank_snapshot(info.clone())
        .await
        .expect("begin");
    abandoned.write(all[..2].to_vec()).await.expect("chunk");
    drop(abandoned);
    assert_eq!(
        latest(store, &c1).await,
        old,
        "an abandoned write is unseen"
    );

    let mut writer = store
        .begin_rank_snapshot(info.clone())
        .await
        .expect("begin");
    writer.write(all[..2].to_vec()).await.expect("chunk");
    assert_eq!(latest(store, &c1).await, old, "unpublished rows are unseen");
    assert_eq!(
        store
            .rank_page(&c1, old.snapshot_id, 0, 10)
            .await
            .expect("old page"),
        before.rows
    );
    writer.write(all[2..].to_vec()).await.expect("chunk");
    let published = writer.publish().await.expect("publish");
    assert_eq!(published.total, 5, "the total is the rows written");
    assert_eq!(published.source, "recompute");
    let head = latest(store, &c1).await;
    assert_eq!(head, published);
    assert!(head.snapshot_id > old.snapshot_id);
    assert_eq!(
        store
            .rank_page(&c1, head.snapshot_id, 0, 10)
            .await
            .expect("page"),
        all
    );
    assert_eq!(
        store
            .rank_page(&c1, head.snapshot_id, 3, 10)
            .await
            .expect("page"),
        all[3..],
        "positions continue across chunks"
    );
    let third = all[2].entry_id.clone();
    assert_eq!(
        store
            .rank_of_entry(&c1, head.snapshot_id, &third)
            .await
            .expect("entry"),
        Some((2, all[2].clone()))
    );
}

/// "My rank over time": an entry's rank in every kept snapshot, oldest first.
pub async fn rank_history_follows_kept_snapshots<S: DurableStore>(store: &S) {
    let c1 = ContestId::parse("c1").unwrap();
    let e1 = EntryId::parse("e1").unwrap();
    assert!(store
        .rank_history(&c1, &e1)
        .await
        .expect("history")
        .is_empty());
    let total = KEEP_RANK_SNAPSHOTS as u64 + 2;
    for version in 1..=total {
        // e1 climbs one place per snapshot.
        let mut points = vec![("e1", version as i64)];
        let others: Vec<String> = (0..total).map(|i| format!("x{i}")).collect();
        for (i, other) in others.iter().enumerate() {
            points.push((other.as_str(), i as i64 + 1));
        }
        store
            .apply(StoreBatch {
                rank_snapshots: vec![snapshot(version, &points)],
                ..StoreBatch::default()
            })
            .await
            .expect("snapshot");
    }
    let history = store.rank_history(&c1, &e1).await.expect("history");
    let versions: Vec<u64> = history.iter().map(|point| point.version).collect();
    let expected: Vec<u64> = (total + 1 - KEEP_RANK_SNAPSHOTS as u64..=total).collect();
    assert_eq!(versions, expected, "the kept snapshots, oldest first");
    for point in &history {
        assert_eq!(point.points, TeamPoints(point.version as i64));
        let head = store
            .rank_of_entry(&c1, point.snapshot_id, &e1)
            .await
            .expect("entry")
            .expect("in the snapshot");
        assert_eq!(head.1.rank, point.rank, "history agrees with the snapshot");
    }
    let ranks: Vec<u64> = history.iter().map(|point| point.rank).collect();
    assert!(
        ranks.windows(2).all(|pair| pair[1] <= pair[0]),
        "e1 climbs: {ranks:?}"
    );
}
