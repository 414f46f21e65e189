//! The durable store port: contests, entries, the applied match-event log,
//! contest versions and rank snapshots, written atomically per batch. The
//! adapters (the embedded SQLite store, the Scylla store) live in the
//! `leaderboard-store` crate; every caller holds a `dyn DurableStore`, so a
//! new adapter is a new file there and nothing else changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::contest::{ContestRecord, EntryRecord};
use crate::event::MatchEvent;
use crate::ids::{ContestId, EntryId, MatchId};
use crate::points::TeamPoints;
use crate::rank::CompetitionRanks;

/// Rank snapshots kept per contest (older ones are dropped when a new one is
/// published): an entry's rank history over the last half hour of five-minute
/// recomputes, bounded in size.
pub const KEEP_RANK_SNAPSHOTS: usize = 6;

/// Why the store failed; always says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid STORE `{0}`: expected file://PATH or scylla://host:9042[,host…]/keyspace")]
    InvalidUri(String),
    #[error("the store `{0}` is not available in this build")]
    Unsupported(String),
    #[error("store {operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
    },
    #[error("stored record is corrupt ({what}): {message}")]
    Corrupt { what: String, message: String },
}

impl StoreError {
    pub fn backend(operation: &'static str, error: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            operation,
            message: error.to_string(),
        }
    }
}

/// Everything one consumer batch changes, applied in one transaction.
#[derive(Debug, Clone, Default)]
pub struct StoreBatch {
    pub contests: Vec<ContestRecord>,
    pub entries: Vec<EntryRecord>,
    pub match_events: Vec<MatchEvent>,
    pub contest_versions: Vec<(ContestId, u64)>,
    pub rank_snapshots: Vec<RankSnapshot>,
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.contests.is_empty()
            && self.entries.is_empty()
            && self.match_events.is_empty()
            && self.contest_versions.is_empty()
            && self.rank_snapshots.is_empty()
    }
}

/// One row of a rank snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankRow {
    pub rank: u64,
    pub entry_id: EntryId,
    pub user_id: String,
    pub points: TeamPoints,
}

/// What a rank snapshot is: whose, as of which contest version, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankSnapshotInfo {
    pub contest_id: ContestId,
    /// The store's id of the snapshot, rising per contest with every one
    /// published (0 until it is): pages are read by it, so a snapshot
    /// rewritten at the same version never mixes with the one it replaces.
    pub snapshot_id: u64,
    pub match_id: MatchId,
    /// The contest version the ranks were computed at.
    pub version: u64,
    pub total: u64,
    /// Milliseconds since the Unix epoch.
    pub computed_at_ms: u64,
    /// `final` (written by ingest when the match ended) or `recompute` (jobs).
    pub source: String,
}

/// A contest's complete standings as of one version, in page order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankSnapshot {
    pub info: RankSnapshotInfo,
    pub rows: Vec<RankRow>,
}

impl RankSnapshot {
    /// Ranks `entries` (entry, user, points): competition ranks (1, 2, 2, 4),
    /// in the hot sorted set's page order — points descending, ties by entry
    /// id descending — so a page reads the same from either store.
    pub fn rank(
        mut info: RankSnapshotInfo,
        entries: impl IntoIterator<Item = (EntryId, String, TeamPoints)>,
    ) -> RankSnapshot {
        let mut rows: Vec<RankRow> = entries
            .into_iter()
            .map(|(entry_id, user_id, points)| RankRow {
                rank: 0,
                entry_id,
                user_id,
                points,
            })
            .collect();
        rows.sort_unstable_by(|a, b| {
            b.points
                .cmp(&a.points)
                .then_with(|| b.entry_id.as_str().cmp(a.entry_id.as_str()))
        });
        let mut ranks = CompetitionRanks::new();
        for row in &mut rows {
            row.rank = ranks.next(row.points);
        }
        info.total = rows.len() as u64;
        RankSnapshot { info, rows }
    }
}

/// An entry's place in one kept snapshot: a point of "my rank over time".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankHistoryPoint {
    pub snapshot_id: u64,
    pub version: u64,
    pub computed_at_ms: u64,
    pub source: String,
    pub rank: u64,
    pub points: TeamPoints,
}

/// A contest as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContestListing {
    pub contest_id: ContestId,
    pub match_id: MatchId,
    pub version: u64,
    /// Its match has ended.
    pub finished: bool,
}

/// What a recompute of one contest reads, in one consistent read: the
/// contest at `version`, the `entry_count` entries it had then, and its
/// match's event log.
#[derive(Debug, Clone)]
pub struct RecomputeInput {
    pub contest: ContestRecord,
    pub version: u64,
    pub entry_count: u64,
    pub events: Vec<MatchEvent>,
}

/// Streams the rows of one new rank snapshot into the store in chunks (a
/// 10M-entry contest never sits whole in memory or in one write), then
/// publishes it with one final write: until [`RankSnapshotWriter::publish`]
/// returns, readers see the previous snapshot, and a writer dropped or killed
/// before it leaves that one in place.
pub trait RankSnapshotWriter: Send {
    /// Appends rows in page order (positions continue from the last chunk).
    fn write(&mut self, rows: Vec<RankRow>) -> StoreFuture<'_, ()>;
    /// Makes the snapshot the contest's newest; returns it as stored.
    fn publish(self: Box<Self>) -> StoreFuture<'static, RankSnapshotInfo>;
}

/// The live durable state, as `ingest run` rebuilds from it: everything of
/// the matches that have not ended, and only the ids of those that have (their
/// final standings are rank snapshots; nothing of them is live any more).
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub contests: Vec<(ContestRecord, u64)>,
    /// Entries per contest, in the order they were accepted.
    pub entries: BTreeMap<ContestId, Vec<EntryRecord>>,
    /// The applied events of every unfinished match, by `seq`.
    pub match_events: BTreeMap<MatchId, Vec<MatchEvent>>,
    /// Matches that ended before the `load` horizon (nothing else of them is loaded).
    pub finished_matches: std::collections::BTreeSet<MatchId>,
    /// Contests whose final standings were stored before the horizon.
    pub finished_contests: std::collections::BTreeSet<ContestId>,
}

/// What a store operation returns: a boxed future, so that the port is
/// object safe and callers hold an `Arc<dyn DurableStore>` whichever adapter
/// `STORE` names (one allocation per call, nothing next to a database round trip).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The durable store's port.
pub trait DurableStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes a batch atomically: all of it or none.
    fn apply(&self, batch: StoreBatch) -> StoreFuture<'_, ()>;
    /// Reads back the live state: the events, contests and entries of every
    /// match that has not ended or ended at or after `finished_since_ms`
    /// (milliseconds since the Unix epoch: what a restarted node still keeps
    /// in memory), and only the ids of what finished before it.
    fn load(&self, finished_since_ms: u64) -> StoreFuture<'_, StoreSnapshot>;
    /// Answers when the store is usable (for `/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// The newest rank snapshot of a contest, if any.
    fn latest_rank_snapshot<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RankSnapshotInfo>>;
    /// Rows `offset..offset + limit` (0-based positions) of the snapshot
    /// `snapshot_id` (from [`DurableStore::latest_rank_snapshot`]).
    fn rank_page<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        offset: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<RankRow>>;
    /// An entry's 0-based position and row in a snapshot.
    fn rank_of_entry<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Option<(u64, RankRow)>>;
    /// An entry's rank in every kept snapshot, oldest first.
    fn rank_history<'a>(
        &'a self,
        contest: &'a ContestId,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Vec<RankHistoryPoint>>;
    /// Every contest, in id order.
    fn list_contests(&self) -> StoreFuture<'_, Vec<ContestListing>>;
    /// The contest, its version, entry count and match log, read together;
    /// `None` for an unknown contest.
    fn recompute_input<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RecomputeInput>>;
    /// Entries `from..from + limit` of a contest in acceptance order
    /// (0-based), for reading a large contest page by page.
    fn entries_page<'a>(
        &'a self,
        contest: &'a ContestId,
        from: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<EntryRecord>>;
    /// Starts a new rank snapshot of `info.contest_id` (see [`RankSnapshotWriter`]).
    fn begin_rank_snapshot(
        &self,
        info: RankSnapshotInfo,
    ) -> StoreFuture<'_, Box<dyn RankSnapshotWriter>>;
}

/// Where the store is, parsed from `STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUri {
    File(std::path::PathBuf),
    Scylla {
        hosts: Vec<String>,
        keyspace: String,
    },
}

impl StoreUri {
    pub fn parse(uri: &str) -> Result<StoreUri, StoreError> {
        let invalid = || StoreError::InvalidUri(uri.to_owned());
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid());
            }
            return Ok(StoreUri::File(path.into()));
        }
        if let Some(rest) = uri.strip_prefix("scylla://") {
            let (hosts, keyspace) = rest.split_once('/').ok_or_else(invalid)?;
            let hosts: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect();
            if hosts.is_empty() || keyspace.is_empty() {
                return Err(invalid());
            }
            return Ok(StoreUri::Scylla {
                hosts,
                keyspace: keyspace.to_owned(),
            });
        }
        Err(invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_uris_parse() {
        assert_eq!(
            StoreUri::parse("file://./data").unwrap(),
            StoreUri::File("./data".into())
        );
        assert_eq!(
            StoreUri::parse("scylla://a:9042,b:9042/lb").unwrap(),
            StoreUri::Scylla {
                hosts: vec!["a:9042".into(), "b:9042".into()],
                keyspace: "lb".into()
            }
        );
        assert!(StoreUri::parse("postgres://x").is_err());
        assert!(StoreUri::parse("scylla://host").is_err());
        assert!(StoreUri::parse("file://").is_err());
    }
}
