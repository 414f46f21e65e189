//! The conformance suite every [`DurableStore`] adapter passes: the embedded
//! store in `cargo test`, the Scylla adapter wherever a node is reachable.
//! Each check takes an empty store and panics with what went wrong.

use std::collections::BTreeMap;

use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::event::{EventBody, MatchEvent, EVENT_VERSION};
use leaderboard_core::ids::{ContestId, EntryId, MatchId, UserId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::{
    DurableStore, RankSnapshot, RankSnapshotInfo, StoreBatch, KEEP_RANK_SNAPSHOTS,
};

/// Runs every check, each on a fresh store from `open`.
pub async fn run_all<S: DurableStore, F: Fn() -> S>(open: F) {
    an_empty_store_is_empty(&open()).await;
    batches_load_back_in_order(&open()).await;
    rank_snapshots_page_rank_and_expire(&open()).await;
    finished_matches_load_only_their_ids(&open()).await;
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

    assert_eq!(
        store.latest_rank_snapshot(&c1).await.expect("latest"),
        Some(first.info.clone())
    );
    assert_eq!(
        store.rank_page(&c1, 3, 0, 100).await.expect("page"),
        first.rows
    );
    assert_eq!(
        store.rank_page(&c1, 3, 2, 3).await.expect("page"),
        first.rows[2..5]
    );
    assert!(store
        .rank_page(&c1, 3, 7, 3)
        .await
        .expect("page")
        .is_empty());
    let e6 = EntryId::parse("e6").unwrap();
    assert_eq!(
        store.rank_of_entry(&c1, 3, &e6).await.expect("entry"),
        Some((3, first.rows[3].clone()))
    );
    let nobody = EntryId::parse("e99").unwrap();
    assert_eq!(
        store.rank_of_entry(&c1, 3, &nobody).await.expect("entry"),
        None
    );
    assert_eq!(
        store.rank_of_entry(&c1, 4, &e6).await.expect("entry"),
        None,
        "no snapshot at version 4"
    );

    // Newer snapshots replace older ones beyond KEEP_RANK_SNAPSHOTS.
    let mut versions = vec![3];
    for version in [5, 7, 9] {
        let newer = snapshot(version, &[("e1", 40 + version as i64), ("e2", 20)]);
        store
            .apply(StoreBatch {
                rank_snapshots: vec![newer.clone()],
                ..StoreBatch::default()
            })
            .await
            .expect("newer snapshot");
        versions.push(version);
        let latest = store.latest_rank_snapshot(&c1).await.expect("latest");
        assert_eq!(latest, Some(newer.info.clone()));
        assert_eq!(
            store.rank_page(&c1, version, 0, 10).await.expect("page"),
            newer.rows
        );
    }
    let kept = &versions[versions.len() - KEEP_RANK_SNAPSHOTS..];
    for &version in &versions {
        let page = store.rank_page(&c1, version, 0, 10).await.expect("page");
        assert_eq!(
            !page.is_empty(),
            kept.contains(&version),
            "snapshot {version} kept or dropped"
        );
    }
    // Rewriting a version replaces it whole.
    let again = snapshot(9, &[("e7", 1)]);
    store
        .apply(StoreBatch {
            rank_snapshots: vec![again.clone()],
            ..StoreBatch::default()
        })
        .await
        .expect("rewrite");
    assert_eq!(
        store.rank_page(&c1, 9, 0, 10).await.expect("page"),
        again.rows
    );
}
