//! The ScyllaDB/Cassandra store (`STORE=scylla://host:9042[,host…]/keyspace`),
//! on the `scylla` crate: ScyllaDB's own driver, async on tokio, token- and
//! shard-aware for prepared statements, and the driver the Rust ecosystem
//! runs Scylla with.
//!
//! The schema is `deploy/cql/tables.cql` (partitioning, compaction and TTL
//! are explained there); the adapter runs it, `IF NOT EXISTS`, when it opens.
//!
//! How the port's promises are kept without multi-partition transactions:
//! - Every data statement is prepared (token-aware routing applies only to
//!   those) and marked idempotent where it is: upserts keyed by the data's own
//!   ids, so a batch retried after a failure rewrites the same rows.
//! - Writes run concurrently, at most [`WRITE_CONCURRENCY`] in flight; no
//!   multi-partition `BATCH` is ever used as a speed-up.
//! - Reads are paged (`execute_iter`), never unpaged SELECTs.
//! - `apply` writes in an order that makes every prefix harmless: contests,
//!   events and entries first, then each contest's version row, which names
//!   how many entries and which events that version covers. A recompute reads
//!   that one row first, then exactly what it names, so its input is of one
//!   moment. A batch that fails half way is retried by ingest (its Kafka
//!   offsets are committed only after the store has the batch) and rewrites
//!   the same rows.
//! - A rank snapshot's rows are written under an id no reader knows; its head,
//!   one row written last, publishes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::statement::prepared::PreparedStatement;
use futures::{StreamExt, TryStreamExt};

use crate::decode::{corrupt, id, now_ms};
use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::event::{EventBody, MatchEvent};
use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::{
    ContestListing, DurableStore, RankHistoryPoint, RankRow, RankSnapshotInfo, RankSnapshotWriter,
    RecomputeInput, StoreBatch, StoreError, StoreFuture, StoreSnapshot, KEEP_RANK_SNAPSHOTS,
};

/// The schema, run statement by statement at open.
pub const TABLES_CQL: &str = include_str!("../../../deploy/cql/tables.cql");

/// Entries per partition of `entries`.
pub const ENTRY_BUCKET: u64 = 10_000;
/// Rank rows per partition of `rank_rows`.
pub const RANK_BUCKET: u64 = 10_000;
/// Writes in flight at once (the driver's own examples keep 256).
pub const WRITE_CONCURRENCY: usize = 256;
/// Rows per page of a paged read.
const PAGE_SIZE: i32 = 5_000;
/// Seconds a recompute snapshot's rows live (see `tables.cql`): a day.
pub const RECOMPUTE_ROWS_TTL: i32 = 24 * 60 * 60;
/// Attempts at a lightweight transaction that lost a race before giving up.
const LWT_ATTEMPTS: usize = 20;

/// The schema's statements, comments removed.
pub fn schema_statements(cql: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|statement| !statement.is_empty())
        .collect()
}

/// The partition of `entries` that holds entry position `seq`.
pub fn entry_bucket(seq: u64) -> i32 {
    (seq / ENTRY_BUCKET) as i32
}

/// The partition of `rank_rows` that holds row position `position`.
pub fn rank_bucket(position: u64) -> i32 {
    (position / RANK_BUCKET) as i32
}

/// The TTL a snapshot's rows are written with: none for final standings.
pub fn rows_ttl(source: &str) -> i32 {
    if source == "final" {
        0
    } else {
        RECOMPUTE_ROWS_TTL
    }
}

fn fail<E: std::fmt::Display>(operation: &'static str) -> impl Fn(E) -> StoreError {
    move |error| StoreError::backend(operation, error)
}

/// A count or id as CQL's `bigint`.
pub fn to_bigint(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::backend(what, format!("{value} exceeds bigint")))
}

/// A stored `bigint` that must be a count or id, validated like input.
pub fn from_bigint(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: what.to_owned(),
        message: format!("negative value {value}"),
    })
}

/// A `rank_rows` row (position, rank, entry, user, points) as the port's row.
pub type RankRowColumns = (i64, i64, String, String, i64);

/// Maps a `rank_rows` row, validating it.
pub fn rank_row(
    (position, rank, entry_id, user_id, points): RankRowColumns,
) -> Result<(u64, RankRow), StoreError> {
    let position = from_bigint("rank row position", position)?;
    Ok((
        position,
        RankRow {
            rank: from_bigint("rank row rank", rank)?,
            entry_id: id("rank row", EntryId::parse, &entry_id)?,
            user_id,
            points: TeamPoints(points),
        },
    ))
}

/// A `rank_snapshot_heads` row (id, version, match, total, computed at, source).
pub type HeadColumns = (i64, i64, String, i64, i64, String);

/// Maps a head row, validating it.
pub fn head(contest: &ContestId, columns: HeadColumns) -> Result<RankSnapshotInfo, StoreError> {
    let (snapshot_id, version, match_id, total, computed_at_ms, source) = columns;
    Ok(RankSnapshotInfo {
        contest_id: contest.clone(),
        snapshot_id: from_bigint("snapshot id", snapshot_id)?,
        match_id: id("rank snapshot", MatchId::parse, &match_id)?,
        version: from_bigint("snapshot version", version)?,
        total: from_bigint("snapshot total", total)?,
        computed_at_ms: from_bigint("snapshot time", computed_at_ms)?,
        source,
    })
}

/// The newest of a contest's heads: by version, then id.
pub fn newest(heads: &[RankSnapshotInfo]) -> Option<&RankSnapshotInfo> {
    heads
        .iter()
        .max_by_key(|head| (head.version, head.snapshot_id))
}

/// The heads a newly published `published` makes obsolete: the others of the
/// same version (it replaces them) and those beyond the newest
/// [`KEEP_RANK_SNAPSHOTS`].
pub fn obsolete(heads: &[RankSnapshotInfo], published: &RankSnapshotInfo) -> Vec<RankSnapshotInfo> {
    let mut kept: Vec<&RankSnapshotInfo> = heads
        .iter()
        .filter(|head| {
            head.snapshot_id == published.snapshot_id || head.version != published.version
        })
        .collect();
    kept.sort_by_key(|head| std::cmp::Reverse((head.version, head.snapshot_id)));
    let keep: HashSet<u64> = kept
        .iter()
        .take(KEEP_RANK_SNAPSHOTS)
        .map(|head| head.snapshot_id)
        .collect();
    heads
        .iter()
        .filter(|head| !keep.contains(&head.snapshot_id))
        .cloned()
        .collect()
}

/// Every statement the adapter runs, prepared once at open.
#[derive(Debug)]
struct Statements {
    put_contest: PreparedStatement,
    contest: PreparedStatement,
    contests: PreparedStatement,
    put_version: PreparedStatement,
    put_entry_count: PreparedStatement,
    version: PreparedStatement,
    versions: PreparedStatement,
    entry_next: PreparedStatement,
    claim_first_entries: PreparedStatement,
    claim_entries: PreparedStatement,
    put_entry: PreparedStatement,
    entries_from: PreparedStatement,
    put_event: PreparedStatement,
    events: PreparedStatement,
    events_through: PreparedStatement,
    last_event: PreparedStatement,
    event_matches: PreparedStatement,
    put_finished_match: PreparedStatement,
    finished_matches: PreparedStatement,
    put_finished_contest: PreparedStatement,
    finished_contests: PreparedStatement,
    snapshot_id: PreparedStatement,
    first_snapshot_id: PreparedStatement,
    next_snapshot_id: PreparedStatement,
    put_head: PreparedStatement,
    heads: PreparedStatement,
    head: PreparedStatement,
    delete_head: PreparedStatement,
    put_rank_row: PreparedStatement,
    put_rank_by_entry: PreparedStatement,
    rank_rows_from: PreparedStatement,
    delete_rank_bucket: PreparedStatement,
    rank_of_entry: PreparedStatement,
    rank_history: PreparedStatement,
    ping: PreparedStatement,
}

/// (name, CQL, idempotent): what [`Statements`] prepares.
pub const STATEMENTS: &[(&str, &str, bool)] = &[
    ("put_contest", "INSERT INTO contests (contest_id, match_id, record) VALUES (?, ?, ?)", true),
    ("contest", "SELECT match_id, record FROM contests WHERE contest_id = ?", true),
    ("contests", "SELECT contest_id, record FROM contests", true),
    ("put_version", "UPDATE contest_versions SET version = ?, events_through = ? WHERE contest_id = ?", true),
    ("put_entry_count", "UPDATE contest_versions SET entry_count = ? WHERE contest_id = ?", true),
    ("version", "SELECT version, entry_count, events_through FROM contest_versions WHERE contest_id = ?", true),
    ("versions", "SELECT contest_id, version FROM contest_versions", true),
    ("entry_next", "SELECT next FROM entry_positions WHERE contest_id = ?", true),
    ("claim_first_entries", "INSERT INTO entry_positions (contest_id, next) VALUES (?, ?) IF NOT EXISTS", false),
    ("claim_entries", "UPDATE entry_positions SET next = ? WHERE contest_id = ? IF next = ?", false),
    ("put_entry", "INSERT INTO contest_entries (contest_id, bucket, seq, record) VALUES (?, ?, ?, ?)", true),
    ("entries_from", "SELECT seq, record FROM contest_entries WHERE contest_id = ? AND bucket = ? AND seq >= ? LIMIT ?", true),
    ("put_event", "INSERT INTO match_events (match_id, seq, event) VALUES (?, ?, ?)", true),
    ("events", "SELECT seq, event FROM match_events WHERE match_id = ?", true),
    ("events_through", "SELECT seq, event FROM match_events WHERE match_id = ? AND seq <= ?", true),
    ("last_event", "SELECT seq FROM match_events WHERE match_id = ? ORDER BY seq DESC LIMIT 1", true),
    ("event_matches", "SELECT DISTINCT match_id FROM match_events", true),
    ("put_finished_match", "INSERT INTO finished_matches (match_id, finished_at_ms) VALUES (?, ?) IF NOT EXISTS", false),
    ("finished_matches", "SELECT match_id, finished_at_ms FROM finished_matches", true),
    ("put_finished_contest", "INSERT INTO finished_contests (contest_id, finished_at_ms) VALUES (?, ?)", true),
    ("finished_contests", "SELECT contest_id, finished_at_ms FROM finished_contests", true),
    ("snapshot_id", "SELECT last_id FROM rank_snapshot_ids WHERE contest_id = ?", true),
    ("first_snapshot_id", "INSERT INTO rank_snapshot_ids (contest_id, last_id) VALUES (?, 1) IF NOT EXISTS", false),
    ("next_snapshot_id", "UPDATE rank_snapshot_ids SET last_id = ? WHERE contest_id = ? IF last_id = ?", false),
    ("put_head", "INSERT INTO rank_snapshot_heads (contest_id, snapshot_id, version, match_id, total, computed_at_ms, source) VALUES (?, ?, ?, ?, ?, ?, ?)", true),
    ("heads", "SELECT snapshot_id, version, match_id, total, computed_at_ms, source FROM rank_snapshot_heads WHERE contest_id = ?", true),
    ("head", "SELECT snapshot_id, version, match_id, total, computed_at_ms, source FROM rank_snapshot_heads WHERE contest_id = ? AND snapshot_id = ?", true),
    ("delete_head", "DELETE FROM rank_snapshot_heads WHERE contest_id = ? AND snapshot_id = ?", true),
    ("put_rank_row", "INSERT INTO rank_rows (contest_id, snapshot_id, bucket, position, rank, entry_id, user_id, points) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?", true),
    ("put_rank_by_entry", "INSERT INTO rank_by_entry (contest_id, entry_id, snapshot_id, position, rank, user_id, points) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?", true),
    ("rank_rows_from", "SELECT position, rank, entry_id, user_id, points FROM rank_rows WHERE contest_id = ? AND snapshot_id = ? AND bucket = ? AND position >= ? LIMIT ?", true),
    ("delete_rank_bucket", "DELETE FROM rank_rows WHERE contest_id = ? AND snapshot_id = ? AND bucket = ?", true),
    ("rank_of_entry", "SELECT position, rank, entry_id, user_id, points FROM rank_by_entry WHERE contest_id = ? AND entry_id = ? AND snapshot_id = ?", true),
    ("rank_history", "SELECT snapshot_id, rank, points FROM rank_by_entry WHERE contest_id = ? AND entry_id = ?", true),
    ("ping", "SELECT last_id FROM rank_snapshot_ids LIMIT 1", true),
];

impl Statements {
    async fn prepare(session: &Session) -> Result<Statements, StoreError> {
        let mut prepared = HashMap::new();
        for &(name, cql, idempotent) in STATEMENTS {
            let mut statement = session
                .prepare(cql)
                .await
                .map_err(|error| StoreError::backend("prepare", format!("{name}: {error}")))?;
            statement.set_is_idempotent(idempotent);
            statement.set_page_size(PAGE_SIZE);
            prepared.insert(name, statement);
        }
        let mut take = |name: &str| prepared.remove(name).expect("every statement is prepared");
        Ok(Statements {
            put_contest: take("put_contest"),
            contest: take("contest"),
            contests: take("contests"),
            put_version: take("put_version"),
            put_entry_count: take("put_entry_count"),
            version: take("version"),
            versions: take("versions"),
            entry_next: take("entry_next"),
            claim_first_entries: take("claim_first_entries"),
            claim_entries: take("claim_entries"),
            put_entry: take("put_entry"),
            entries_from: take("entries_from"),
            put_event: take("put_event"),
            events: take("events"),
            events_through: take("events_through"),
            last_event: take("last_event"),
            event_matches: take("event_matches"),
            put_finished_match: take("put_finished_match"),
            finished_matches: take("finished_matches"),
            put_finished_contest: take("put_finished_contest"),
            finished_contests: take("finished_contests"),
            snapshot_id: take("snapshot_id"),
            first_snapshot_id: take("first_snapshot_id"),
            next_snapshot_id: take("next_snapshot_id"),
            put_head: take("put_head"),
            heads: take("heads"),
            head: take("head"),
            delete_head: take("delete_head"),
            put_rank_row: take("put_rank_row"),
            put_rank_by_entry: take("put_rank_by_entry"),
            rank_rows_from: take("rank_rows_from"),
            delete_rank_bucket: take("delete_rank_bucket"),
            rank_of_entry: take("rank_of_entry"),
            rank_history: take("rank_history"),
            ping: take("ping"),
        })
    }
}

#[derive(Debug)]
struct Inner {
    session: Session,
    statements: Statements,
    /// Contest → match: fixed once a contest exists, so remembered.
    matches: Mutex<HashMap<ContestId, MatchId>>,
}

/// The Scylla/Cassandra store.
#[derive(Debug, Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

/// One write: a prepared statement and its values.
type Write<'a> = futures::future::BoxFuture<'a, Result<(), StoreError>>;

impl Inner {
    /// Runs `writes` with at most [`WRITE_CONCURRENCY`] in flight; the first
    /// failure fails them all.
    async fn write_all<'a>(&'a self, writes: Vec<Write<'a>>) -> Result<(), StoreError> {
        futures::stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    fn write<'a, V>(
        &'a self,
        operation: &'static str,
        statement: &'a PreparedStatement,
        values: V,
    ) -> Write<'a>
    where
        V: ::scylla::serialize::row::SerializeRow + Send + 'a,
    {
        Box::pin(async move {
            self.session
                .execute_unpaged(statement, values)
                .await
                .map(|_| ())
                .map_err(fail(operation))
        })
    }

    /// Every row of a paged read.
    async fn read<R, V>(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: V,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> ::scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
        V: ::scylla::serialize::row::SerializeRow,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(fail(operation))?
            .rows_stream::<R>()
            .map_err(fail(operation))?
            .try_collect()
            .await
            .map_err(fail(operation))
    }

    /// Runs a lightweight transaction: whether it applied.
    async fn conditional<V>(
        &self,
        operation: &'static str,
        statement: &PreparedStatement,
        values: V,
    ) -> Result<bool, StoreError>
    where
        V: ::scylla::serialize::row::SerializeRow,
    {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(fail(operation))?
            .into_rows_result()
            .map_err(fail(operation))?;
        let row: ::scylla::value::Row = result.first_row().map_err(fail(operation))?;
        row.columns
            .first()
            .and_then(|column| column.as_ref())
            .and_then(|value| value.as_boolean())
            .ok_or_else(|| StoreError::backend(operation, "no [applied] column"))
    }

    async fn contest_match(&self, contest: &ContestId) -> Result<Option<MatchId>, StoreError> {
        if let Some(found) = self.matches.lock().expect("not poisoned").get(contest) {
            return Ok(Some(found.clone()));
        }
        let rows: Vec<(Option<String>, Option<String>)> = self
            .read(
                "read contest",
                &self.statements.contest,
                (contest.as_str(),),
            )
            .await?;
        let Some((Some(match_id), _)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let match_id = id("contest's match", MatchId::parse, &match_id)?;
        self.matches
            .lock()
            .expect("not poisoned")
            .insert(contest.clone(), match_id.clone());
        Ok(Some(match_id))
    }

    async fn last_event(&self, match_id: &MatchId) -> Result<Option<u64>, StoreError> {
        let rows: Vec<(i64,)> = self
            .read(
                "read match log",
                &self.statements.last_event,
                (match_id.as_str(),),
            )
            .await?;
        rows.first()
            .map(|&(seq,)| from_bigint("event seq", seq))
            .transpose()
    }

    async fn entry_next(&self, contest: &ContestId) -> Result<Option<u64>, StoreError> {
        let rows: Vec<(Option<i64>,)> = self
            .read(
                "read entry count",
                &self.statements.entry_next,
                (contest.as_str(),),
            )
            .await?;
        rows.into_iter()
            .next()
            .and_then(|(next,)| next)
            .map(|next| from_bigint("entry count", next))
            .transpose()
    }

    /// Appends a contest's entries of one batch; returns the contest's entry
    /// count after them.
    async fn append_entries(
        &self,
        contest: &ContestId,
        entries: &[&EntryRecord],
    ) -> Result<u64, StoreError> {
        let first = self.entry_next(contest).await?;
        let start = first.unwrap_or(0);
        let mut writes = Vec::with_capacity(entries.len());
        for (offset, entry) in entries.iter().enumerate() {
            let seq = start + offset as u64;
            let record = String::from_utf8(serde_json::to_vec(entry).expect("records serialize"))
                .expect("JSON is UTF-8");
            writes.push(self.write(
                "write entries",
                &self.statements.put_entry,
                (
                    contest.as_str().to_owned(),
                    entry_bucket(seq),
                    to_bigint("entry seq", seq)?,
                    record,
                ),
            ));
        }
        self.write_all(writes).await?;
        let end = start + entries.len() as u64;
        // The commit point: the count moves only from what this writer read,
        // so a second writer of the contest fails instead of interleaving.
        let applied = match first {
            None => {
                self.conditional(
                    "count entries",
                    &self.statements.claim_first_entries,
                    (contest.as_str(), to_bigint("entry count", end)?),
                )
                .await?
            }
            Some(first) => {
                self.conditional(
                    "count entries",
                    &self.statements.claim_entries,
                    (
                        to_bigint("entry count", end)?,
                        contest.as_str(),
                        to_bigint("entry count", first)?,
                    ),
                )
                .await?
            }
        };
        if !applied {
            return Err(StoreError::backend(
                "write entries",
                format!("contest {contest} was written by another writer at the same time"),
            ));
        }
        Ok(end)
    }

    async fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let now = to_bigint("time", now_ms())?;
        let mut writes = Vec::new();
        for contest in &batch.contests {
            let record = String::from_utf8(serde_json::to_vec(contest).expect("records serialize"))
                .expect("JSON is UTF-8");
            writes.push(self.write(
                "write contests",
                &self.statements.put_contest,
                (
                    contest.contest_id.as_str().to_owned(),
                    contest.match_id.as_str().to_owned(),
                    record,
                ),
            ));
        }
        let mut last_seq: HashMap<&MatchId, u64> = HashMap::new();
        for event in &batch.match_events {
            let seq = last_seq.entry(&event.match_id).or_default();
            *seq = (*seq).max(event.seq);
            let json = String::from_utf8(event.to_json()).expect("JSON is UTF-8");
            writes.push(self.write(
                "write match events",
                &self.statements.put_event,
                (
                    event.match_id.as_str().to_owned(),
                    to_bigint("event seq", event.seq)?,
                    json,
                ),
            ));
        }
        self.write_all(writes).await?;
        {
            let mut matches = self.matches.lock().expect("not poisoned");
            for contest in &batch.contests {
                matches.insert(contest.contest_id.clone(), contest.match_id.clone());
            }
        }
        for event in &batch.match_events {
            if matches!(event.body, EventBody::MatchEnd {}) {
                // IF NOT EXISTS: the first end is the time the match ended.
                self.conditional(
                    "record finished match",
                    &self.statements.put_finished_match,
                    (event.match_id.as_str(), now),
                )
                .await?;
            }
        }

        let mut by_contest: BTreeMap<&ContestId, Vec<&EntryRecord>> = BTreeMap::new();
        for entry in &batch.entries {
            by_contest.entry(&entry.contest_id).or_default().push(entry);
        }
        let mut counts = HashMap::new();
        for (contest, entries) in &by_contest {
            counts.insert(*contest, self.append_entries(contest, entries).await?);
        }

        // Last: the version rows, each naming what its version covers.
        let mut writes = Vec::new();
        for (contest, version) in &batch.contest_versions {
            let through = match self.contest_match(contest).await? {
                Some(match_id) => match last_seq.get(&match_id) {
                    Some(&seq) => Some(seq),
                    None => self.last_event(&match_id).await?,
                },
                None => None,
            };
            let through = through.map(|seq| to_bigint("event seq", seq)).transpose()?;
            writes.push(self.write(
                "write contest versions",
                &self.statements.put_version,
                (
                    to_bigint("version", *version)?,
                    through,
                    contest.as_str().to_owned(),
                ),
            ));
        }
        for (contest, count) in &counts {
            writes.push(self.write(
                "write contest versions",
                &self.statements.put_entry_count,
                (
                    to_bigint("entry count", *count)?,
                    contest.as_str().to_owned(),
                ),
            ));
        }
        self.write_all(writes).await?;

        for snapshot in batch.rank_snapshots {
            let contest = snapshot.info.contest_id.clone();
            let is_final = snapshot.info.source == "final";
            let mut writer = SnapshotWriter::begin(self, snapshot.info.clone()).await?;
            writer.write_rows(self, snapshot.rows).await?;
            writer.publish(self).await?;
            if is_final {
                self.write(
                    "record finished contest",
                    &self.statements.put_finished_contest,
                    (contest.as_str().to_owned(), now),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn heads(&self, contest: &ContestId) -> Result<Vec<RankSnapshotInfo>, StoreError> {
        let rows: Vec<HeadColumns> = self
            .read(
                "read rank snapshots",
                &self.statements.heads,
                (contest.as_str(),),
            )
            .await?;
        rows.into_iter()
            .map(|columns| head(contest, columns))
            .collect()
    }

    async fn head(
        &self,
        contest: &ContestId,
        snapshot_id: u64,
    ) -> Result<Option<RankSnapshotInfo>, StoreError> {
        let rows: Vec<HeadColumns> = self
            .read(
                "read rank snapshot",
                &self.statements.head,
                (contest.as_str(), to_bigint("snapshot id", snapshot_id)?),
            )
            .await?;
        rows.into_iter()
            .next()
            .map(|columns| head(contest, columns))
            .transpose()
    }

    async fn next_snapshot_id(&self, contest: &ContestId) -> Result<u64, StoreError> {
        for _ in 0..LWT_ATTEMPTS {
            let rows: Vec<(Option<i64>,)> = self
                .read(
                    "allocate a snapshot id",
                    &self.statements.snapshot_id,
                    (contest.as_str(),),
                )
                .await?;
            match rows.into_iter().next().and_then(|(last,)| last) {
                None => {
                    if self
                        .conditional(
                            "allocate a snapshot id",
                            &self.statements.first_snapshot_id,
                            (contest.as_str(),),
                        )
                        .await?
                    {
                        return Ok(1);
                    }
                }
                Some(last) => {
                    if self
                        .conditional(
                            "allocate a snapshot id",
                            &self.statements.next_snapshot_id,
                            (last + 1, contest.as_str(), last),
                        )
                        .await?
                    {
                        return from_bigint("snapshot id", last + 1);
                    }
                }
            }
        }
        Err(StoreError::backend(
            "allocate a snapshot id",
            format!("{LWT_ATTEMPTS} attempts lost to other writers of contest {contest}"),
        ))
    }

    /// Deletes a snapshot that no head names any more: its row partitions.
    async fn drop_rows(&self, snapshot: &RankSnapshotInfo) -> Result<(), StoreError> {
        let snapshot_id = to_bigint("snapshot id", snapshot.snapshot_id)?;
        let buckets = snapshot.total.div_ceil(RANK_BUCKET).max(1);
        let writes = (0..buckets)
            .map(|bucket| {
                self.write(
                    "drop rank snapshot",
                    &self.statements.delete_rank_bucket,
                    (
                        snapshot.contest_id.as_str().to_owned(),
                        snapshot_id,
                        bucket as i32,
                    ),
                )
            })
            .collect();
        self.write_all(writes).await
    }
}

/// A snapshot being written: rows under its id, the head last.
#[derive(Debug)]
struct SnapshotWriter {
    info: RankSnapshotInfo,
    next_position: u64,
    ttl: i32,
}

impl SnapshotWriter {
    async fn begin(
        inner: &Inner,
        mut info: RankSnapshotInfo,
    ) -> Result<SnapshotWriter, StoreError> {
        info.snapshot_id = inner.next_snapshot_id(&info.contest_id).await?;
        let ttl = rows_ttl(&info.source);
        Ok(SnapshotWriter {
            info,
            next_position: 0,
            ttl,
        })
    }

    async fn write_rows(&mut self, inner: &Inner, rows: Vec<RankRow>) -> Result<(), StoreError> {
        let contest = self.info.contest_id.as_str();
        let snapshot_id = to_bigint("snapshot id", self.info.snapshot_id)?;
        let mut writes = Vec::with_capacity(rows.len() * 2);
        for (offset, row) in rows.into_iter().enumerate() {
            let position = self.next_position + offset as u64;
            let (rank, points) = (to_bigint("rank", row.rank)?, row.points.halves());
            let at = to_bigint("position", position)?;
            writes.push(inner.write(
                "write rank rows",
                &inner.statements.put_rank_row,
                (
                    contest.to_owned(),
                    snapshot_id,
                    rank_bucket(position),
                    at,
                    rank,
                    row.entry_id.as_str().to_owned(),
                    row.user_id.clone(),
                    points,
                    self.ttl,
                ),
            ));
            writes.push(inner.write(
                "write rank rows",
                &inner.statements.put_rank_by_entry,
                (
                    contest.to_owned(),
                    row.entry_id.as_str().to_owned(),
                    snapshot_id,
                    at,
                    rank,
                    row.user_id,
                    points,
                    self.ttl,
                ),
            ));
        }
        let written = writes.len() as u64 / 2;
        inner.write_all(writes).await?;
        self.next_position += written;
        Ok(())
    }

    async fn publish(self, inner: &Inner) -> Result<RankSnapshotInfo, StoreError> {
        let mut info = self.info;
        info.total = self.next_position;
        inner
            .write(
                "publish rank snapshot",
                &inner.statements.put_head,
                (
                    info.contest_id.as_str().to_owned(),
                    to_bigint("snapshot id", info.snapshot_id)?,
                    to_bigint("version", info.version)?,
                    info.match_id.as_str().to_owned(),
                    to_bigint("total", info.total)?,
                    to_bigint("time", info.computed_at_ms)?,
                    info.source.clone(),
                ),
            )
            .await?;
        let heads = inner.heads(&info.contest_id).await?;
        for old in obsolete(&heads, &info) {
            inner
                .write(
                    "expire rank snapshot",
                    &inner.statements.delete_head,
                    (
                        old.contest_id.as_str().to_owned(),
                        to_bigint("snapshot id", old.snapshot_id)?,
                    ),
                )
                .await?;
            inner.drop_rows(&old).await?;
        }
        Ok(info)
    }
}

/// The port's writer over [`SnapshotWriter`].
#[derive(Debug)]
struct ScyllaSnapshotWriter {
    inner: Arc<Inner>,
    writer: SnapshotWriter,
}

impl RankSnapshotWriter for ScyllaSnapshotWriter {
    fn write(&mut self, rows: Vec<RankRow>) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.writer.write_rows(&self.inner, rows).await })
    }

    fn publish(self: Box<Self>) -> StoreFuture<'static, RankSnapshotInfo> {
        Box::pin(async move {
            let ScyllaSnapshotWriter { inner, writer } = *self;
            writer.publish(&inner).await
        })
    }
}

impl ScyllaStore {
    /// Connects to `hosts`, uses `keyspace` (which must exist: see
    /// `deploy/cql/keyspace.cql`) and creates the tables if they are missing.
    pub async fn connect(hosts: &[String], keyspace: &str) -> Result<ScyllaStore, StoreError> {
        Self::connect_with(SessionBuilder::new().known_nodes(hosts), keyspace).await
    }

    /// As [`ScyllaStore::connect`], from a session builder set up by the caller.
    pub async fn connect_with(
        builder: SessionBuilder,
        keyspace: &str,
    ) -> Result<ScyllaStore, StoreError> {
        let session = builder
            .use_keyspace(keyspace, false)
            .build()
            .await
            .map_err(|error| {
                StoreError::backend(
                    "connect",
                    format!(
                        "{error} (does keyspace `{keyspace}` exist? see deploy/cql/keyspace.cql)"
                    ),
                )
            })?;
        for statement in schema_statements(TABLES_CQL) {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .map_err(|error| {
                    StoreError::backend("create tables", format!("{error}: {statement}"))
                })?;
        }
        let statements = Statements::prepare(&session).await?;
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                statements,
                matches: Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn parse_contest(contest: &str, record: Option<String>) -> Result<ContestRecord, StoreError> {
    let record = record.ok_or_else(|| StoreError::Corrupt {
        what: format!("contest {contest}"),
        message: "no record".into(),
    })?;
    serde_json::from_str(&record).map_err(corrupt(format!("contest {contest}")))
}

fn parse_event(match_id: &str, seq: i64, event: &str) -> Result<MatchEvent, StoreError> {
    serde_json::from_str(event).map_err(corrupt(format!("event {match_id}/{seq}")))
}

impl Inner {
    async fn finished<T: Ord>(
        &self,
        statement: &PreparedStatement,
        what: &'static str,
        parse: impl Fn(&str) -> Result<T, leaderboard_core::ids::IdError>,
    ) -> Result<Vec<(T, u64)>, StoreError> {
        let rows: Vec<(String, Option<i64>)> = self.read("read", statement, ()).await?;
        rows.into_iter()
            .map(|(text, at)| {
                Ok((
                    id(what, &parse, &text)?,
                    from_bigint(what, at.unwrap_or(0))?,
                ))
            })
            .collect()
    }

    async fn all_contests(&self) -> Result<Vec<(ContestRecord, u64)>, StoreError> {
        let rows: Vec<(String, Option<String>)> = self
            .read("read contests", &self.statements.contests, ())
            .await?;
        let versions: Vec<(String, Option<i64>)> = self
            .read("read contests", &self.statements.versions, ())
            .await?;
        let versions: HashMap<String, i64> = versions
            .into_iter()
            .map(|(contest, version)| (contest, version.unwrap_or(0)))
            .collect();
        let mut contests = Vec::with_capacity(rows.len());
        for (contest, record) in rows {
            let version = versions.get(&contest).copied().unwrap_or(0);
            let record = parse_contest(&contest, record)?;
            contests.push((record, from_bigint("contest version", version)?));
        }
        contests.sort_by(|a, b| a.0.contest_id.cmp(&b.0.contest_id));
        Ok(contests)
    }

    async fn entries_page(
        &self,
        contest: &ContestId,
        from: u64,
        limit: u64,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let mut entries = Vec::new();
        let mut next = from;
        while (entries.len() as u64) < limit {
            let want = (limit - entries.len() as u64).min(i32::MAX as u64) as i32;
            let rows: Vec<(i64, Option<String>)> = self
                .read(
                    "read entries",
                    &self.statements.entries_from,
                    (
                        contest.as_str(),
                        entry_bucket(next),
                        to_bigint("entry seq", next)?,
                        want,
                    ),
                )
                .await?;
            let bucket_end = (next / ENTRY_BUCKET + 1) * ENTRY_BUCKET;
            let full = rows.len() as i32 == want;
            for (seq, record) in rows {
                let record = record.ok_or_else(|| StoreError::Corrupt {
                    what: format!("entry {contest}/{seq}"),
                    message: "no record".into(),
                })?;
                entries.push(
                    serde_json::from_str(&record)
                        .map_err(corrupt(format!("entry {contest}/{seq}")))?,
                );
                next = from_bigint("entry seq", seq)? + 1;
            }
            if full {
                break;
            }
            // The bucket ended: go on in the next one only if this one was full.
            if next < bucket_end {
                break;
            }
            next = bucket_end;
        }
        Ok(entries)
    }

    async fn events(
        &self,
        match_id: &MatchId,
        through: Option<i64>,
    ) -> Result<Vec<MatchEvent>, StoreError> {
        let rows: Vec<(i64, Option<String>)> = match through {
            None => {
                self.read(
                    "read match log",
                    &self.statements.events,
                    (match_id.as_str(),),
                )
                .await?
            }
            Some(through) => {
                self.read(
                    "read match log",
                    &self.statements.events_through,
                    (match_id.as_str(), through),
                )
                .await?
            }
        };
        rows.into_iter()
            .map(|(seq, event)| parse_event(match_id.as_str(), seq, event.as_deref().unwrap_or("")))
            .collect()
    }

    async fn load(&self, since: u64) -> Result<StoreSnapshot, StoreError> {
        let mut snapshot = StoreSnapshot::default();
        let finished_matches = self
            .finished(
                &self.statements.finished_matches,
                "finished match",
                MatchId::parse,
            )
            .await?;
        let finished_contests = self
            .finished(
                &self.statements.finished_contests,
                "finished contest",
                ContestId::parse,
            )
            .await?;
        snapshot.finished_matches = finished_matches
            .into_iter()
            .filter(|&(_, at)| at < since)
            .map(|(id, _)| id)
            .collect();
        snapshot.finished_contests = finished_contests
            .into_iter()
            .filter(|&(_, at)| at < since)
            .map(|(id, _)| id)
            .collect();
        for (record, version) in self.all_contests().await? {
            // A contest created after its match ended has no final standings
            // of its own; it is not live either.
            if !snapshot.finished_contests.contains(&record.contest_id)
                && !snapshot.finished_matches.contains(&record.match_id)
            {
                snapshot.contests.push((record, version));
            }
        }
        for (record, _) in &snapshot.contests {
            let contest = &record.contest_id;
            let mut entries = Vec::new();
            loop {
                let page = self
                    .entries_page(contest, entries.len() as u64, ENTRY_BUCKET)
                    .await?;
                let done = (page.len() as u64) < ENTRY_BUCKET;
                entries.extend(page);
                if done {
                    break;
                }
            }
            if !entries.is_empty() {
                snapshot.entries.insert(contest.clone(), entries);
            }
        }
        let matches: Vec<(String,)> = self
            .read("read match logs", &self.statements.event_matches, ())
            .await?;
        let matches: BTreeSet<MatchId> = matches
            .into_iter()
            .map(|(text,)| id("match log", MatchId::parse, &text))
            .collect::<Result<_, _>>()?;
        for match_id in matches {
            if !snapshot.finished_matches.contains(&match_id) {
                let events = self.events(&match_id, None).await?;
                snapshot.match_events.insert(match_id, events);
            }
        }
        Ok(snapshot)
    }

    async fn recompute_input(
        &self,
        contest: &ContestId,
    ) -> Result<Option<RecomputeInput>, StoreError> {
        let rows: Vec<(Option<String>, Option<String>)> = self
            .read(
                "read recompute input",
                &self.statements.contest,
                (contest.as_str(),),
            )
            .await?;
        let Some((_, record)) = rows.into_iter().next() else {
            return Ok(None);
        };
        let record = parse_contest(contest.as_str(), record)?;
        // The version row first: it names what the version covers.
        let rows: Vec<(Option<i64>, Option<i64>, Option<i64>)> = self
            .read(
                "read recompute input",
                &self.statements.version,
                (contest.as_str(),),
            )
            .await?;
        let (version, entry_count, through) = rows.into_iter().next().unwrap_or((None, None, None));
        let entry_count = match entry_count {
            Some(count) => from_bigint("entry count", count)?,
            None => self.entry_next(contest).await?.unwrap_or(0),
        };
        let events = self.events(&record.match_id, through).await?;
        Ok(Some(RecomputeInput {
            contest: record,
            version: from_bigint("contest version", version.unwrap_or(0))?,
            entry_count,
            events,
        }))
    }

    async fn list_contests(&self) -> Result<Vec<ContestListing>, StoreError> {
        let finished: HashSet<MatchId> = self
            .finished(
                &self.statements.finished_matches,
                "finished match",
                MatchId::parse,
            )
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(self
            .all_contests()
            .await?
            .into_iter()
            .map(|(record, version)| ContestListing {
                finished: finished.contains(&record.match_id),
                contest_id: record.contest_id,
                match_id: record.match_id,
                version,
            })
            .collect())
    }

    async fn rank_page(
        &self,
        contest: &ContestId,
        snapshot_id: u64,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<RankRow>, StoreError> {
        let Some(head) = self.head(contest, snapshot_id).await? else {
            return Ok(Vec::new());
        };
        let end = head.total.min(offset.saturating_add(limit));
        let mut rows = Vec::new();
        let mut next = offset;
        while next < end {
            // One bucket at a time: up to its end or the page's.
            let stop = end.min((next / RANK_BUCKET + 1) * RANK_BUCKET);
            let page: Vec<RankRowColumns> = self
                .read(
                    "read rank page",
                    &self.statements.rank_rows_from,
                    (
                        contest.as_str(),
                        to_bigint("snapshot id", snapshot_id)?,
                        rank_bucket(next),
                        to_bigint("position", next)?,
                        (stop - next) as i32,
                    ),
                )
                .await?;
            if page.len() as u64 != stop - next {
                return Err(StoreError::Corrupt {
                    what: format!("rank snapshot {contest}/{snapshot_id}"),
                    message: format!(
                        "rows {next}..{stop} of {} read back as {}",
                        head.total,
                        page.len()
                    ),
                });
            }
            for columns in page {
                rows.push(rank_row(columns)?.1);
            }
            next = stop;
        }
        Ok(rows)
    }

    async fn rank_of_entry(
        &self,
        contest: &ContestId,
        snapshot_id: u64,
        entry: &EntryId,
    ) -> Result<Option<(u64, RankRow)>, StoreError> {
        if self.head(contest, snapshot_id).await?.is_none() {
            return Ok(None);
        }
        let rows: Vec<RankRowColumns> = self
            .read(
                "read entry rank",
                &self.statements.rank_of_entry,
                (
                    contest.as_str(),
                    entry.as_str(),
                    to_bigint("snapshot id", snapshot_id)?,
                ),
            )
            .await?;
        rows.into_iter().next().map(rank_row).transpose()
    }

    async fn rank_history(
        &self,
        contest: &ContestId,
        entry: &EntryId,
    ) -> Result<Vec<RankHistoryPoint>, StoreError> {
        let heads: HashMap<u64, RankSnapshotInfo> = self
            .heads(contest)
            .await?
            .into_iter()
            .map(|head| (head.snapshot_id, head))
            .collect();
        let rows: Vec<(i64, i64, i64)> = self
            .read(
                "read rank history",
                &self.statements.rank_history,
                (contest.as_str(), entry.as_str()),
            )
            .await?;
        let mut points = Vec::new();
        for (snapshot_id, rank, halves) in rows {
            let snapshot_id = from_bigint("snapshot id", snapshot_id)?;
            // Rows of snapshots no head names (expired, replaced, unpublished) are not history.
            if let Some(head) = heads.get(&snapshot_id) {
                points.push(RankHistoryPoint {
                    snapshot_id,
                    version: head.version,
                    computed_at_ms: head.computed_at_ms,
                    source: head.source.clone(),
                    rank: from_bigint("rank", rank)?,
                    points: TeamPoints(halves),
                });
            }
        }
        points.sort_by_key(|point| (point.version, point.snapshot_id));
        Ok(points)
    }
}

impl DurableStore for ScyllaStore {
    fn apply(&self, batch: StoreBatch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            self.inner.apply(batch).await
        })
    }

    fn load(&self, finished_since_ms: u64) -> StoreFuture<'_, StoreSnapshot> {
        Box::pin(self.inner.load(finished_since_ms))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: Vec<(Option<i64>,)> = self
                .inner
                .read("ping", &self.inner.statements.ping, ())
                .await?;
            Ok(())
        })
    }

    fn latest_rank_snapshot<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RankSnapshotInfo>> {
        Box::pin(async move {
            let heads = self.inner.heads(contest).await?;
            Ok(newest(&heads).cloned())
        })
    }

    fn rank_page<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        offset: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<RankRow>> {
        Box::pin(self.inner.rank_page(contest, snapshot_id, offset, limit))
    }

    fn rank_of_entry<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Option<(u64, RankRow)>> {
        Box::pin(self.inner.rank_of_entry(contest, snapshot_id, entry))
    }

    fn rank_history<'a>(
        &'a self,
        contest: &'a ContestId,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Vec<RankHistoryPoint>> {
        Box::pin(self.inner.rank_history(contest, entry))
    }

    fn list_contests(&self) -> StoreFuture<'_, Vec<ContestListing>> {
        Box::pin(self.inner.list_contests())
    }

    fn recompute_input<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RecomputeInput>> {
        Box::pin(self.inner.recompute_input(contest))
    }

    fn entries_page<'a>(
        &'a self,
        contest: &'a ContestId,
        from: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<EntryRecord>> {
        Box::pin(self.inner.entries_page(contest, from, limit))
    }

    fn begin_rank_snapshot(
        &self,
        info: RankSnapshotInfo,
    ) -> StoreFuture<'_, Box<dyn RankSnapshotWriter>> {
        Box::pin(async move {
            let writer = SnapshotWriter::begin(&self.inner, info).await?;
            Ok(Box::new(ScyllaSnapshotWriter {
                inner: self.inner.clone(),
                writer,
            }) as Box<dyn RankSnapshotWriter>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_splits_into_its_statements() {
        let statements = schema_statements(TABLES_CQL);
        let tables: Vec<&str> = statements
            .iter()
            .map(|s| {
                assert!(s.starts_with("CREATE TABLE IF NOT EXISTS "), "{s}");
                assert!(!s.contains("--"), "comments are removed: {s}");
                s.split_whitespace().nth(5).unwrap()
            })
            .collect();
        assert_eq!(
            tables,
            [
                "contests",
                "contest_versions",
                "entry_positions",
                "contest_entries",
                "match_events",
                "finished_matches",
                "finished_contests",
                "rank_snapshot_ids",
                "rank_snapshot_heads",
                "rank_rows",
                "rank_by_entry"
            ]
        );
        let schema = statements.join("\n");
        for (name, cql, _) in STATEMENTS {
            let table = cql
                .split_whitespace()
                .skip_while(|word| !matches!(*word, "FROM" | "INTO" | "UPDATE"))
                .nth(1)
                .unwrap_or_else(|| cql.split_whitespace().nth(1).unwrap());
            assert!(
                schema.contains(&format!("EXISTS {table} (")),
                "{name} names table {table}, which the schema lacks"
            );
        }
    }

    #[test]
    fn statements_are_prepared_idempotent_unless_conditional_and_reads_are_bounded() {
        for (name, cql, idempotent) in STATEMENTS {
            // A lightweight transaction is not idempotent: retried, it may
            // see its own write and report that it lost.
            assert_eq!(*idempotent, !cql.contains(" IF "), "{name}: {cql}");
            if cql.starts_with("SELECT") {
                // Every SELECT names its partition, or is a paged scan of a
                // small table the adapter lists (contests, versions, finished ids).
                let scan = !cql.contains("WHERE");
                assert!(
                    !scan
                        || [
                            "contests",
                            "versions",
                            "event_matches",
                            "finished_matches",
                            "finished_contests",
                            "ping"
                        ]
                        .contains(name),
                    "{name} scans: {cql}"
                );
                assert!(!cql.contains("ALLOW FILTERING"), "{name}: {cql}");
            }
        }
        let names: HashSet<&str> = STATEMENTS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names.len(), STATEMENTS.len(), "names are unique");
    }

    /// CQL's reserved keywords (ScyllaDB's and Cassandra's lists together):
    /// none may name a table or a column unquoted.
    const RESERVED: &[&str] = &[
        "add",
        "allow",
        "alter",
        "and",
        "apply",
        "asc",
        "authorize",
        "batch",
        "begin",
        "by",
        "columnfamily",
        "create",
        "default",
        "delete",
        "desc",
        "describe",
        "drop",
        "entries",
        "execute",
        "for",
        "from",
        "full",
        "grant",
        "if",
        "in",
        "index",
        "infinity",
        "insert",
        "into",
        "is",
        "keyspace",
        "keyspaces",
        "limit",
        "materialized",
        "mbean",
        "mbeans",
        "modify",
        "nan",
        "norecursive",
        "not",
        "null",
        "of",
        "on",
        "or",
        "order",
        "primary",
        "rename",
        "replace",
        "revoke",
        "schema",
        "select",
        "set",
        "table",
        "to",
        "token",
        "truncate",
        "unlogged",
        "unset",
        "update",
        "use",
        "using",
        "view",
        "where",
        "with",
    ];

    #[test]
    fn no_table_or_column_is_a_reserved_word() {
        for statement in schema_statements(TABLES_CQL) {
            let body = &statement[statement.find('(').unwrap() + 1..];
            let table = statement.split_whitespace().nth(5).unwrap();
            let mut names = vec![table];
            for definition in body.split(',') {
                let first = definition.split_whitespace().next().unwrap_or("");
                if !first.starts_with("PRIMARY") && !first.starts_with('(') {
                    names.push(first);
                }
            }
            for name in names {
                assert!(
                    !RESERVED.contains(&name.to_lowercase().as_str()),
                    "`{name}` is a reserved word of CQL: {statement}"
                );
            }
        }
    }

    #[test]
    fn buckets_bound_partitions_and_ttls_spare_final_standings() {
        assert_eq!(entry_bucket(0), 0);
        assert_eq!(entry_bucket(ENTRY_BUCKET - 1), 0);
        assert_eq!(entry_bucket(ENTRY_BUCKET), 1);
        assert_eq!(
            rank_bucket(10_000_000 - 1),
            999,
            "a 10M snapshot: 1,000 partitions"
        );
        assert_eq!(rows_ttl("final"), 0);
        assert_eq!(rows_ttl("recompute"), RECOMPUTE_ROWS_TTL);
    }

    #[test]
    fn rows_map_and_bad_rows_are_corrupt() {
        let (position, row) = rank_row((4, 2, "e7".into(), "u7".into(), 31)).unwrap();
        assert_eq!(position, 4);
        assert_eq!(
            row,
            RankRow {
                rank: 2,
                entry_id: EntryId::parse("e7").unwrap(),
                user_id: "u7".into(),
                points: TeamPoints(31)
            }
        );
        assert!(matches!(
            rank_row((-1, 2, "e7".into(), "u7".into(), 31)),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            rank_row((1, 2, "bad id with spaces".into(), "u7".into(), 31)),
            Err(StoreError::Corrupt { .. })
        ));
        let contest = ContestId::parse("c1").unwrap();
        let info = head(
            &contest,
            (3, 9, "m1".into(), 100, 1_700, "recompute".into()),
        )
        .unwrap();
        assert_eq!((info.snapshot_id, info.version, info.total), (3, 9, 100));
        assert!(head(&contest, (3, -9, "m1".into(), 100, 1_700, "x".into())).is_err());
        assert!(to_bigint("x", u64::MAX).is_err());
    }

    fn info(snapshot_id: u64, version: u64) -> RankSnapshotInfo {
        RankSnapshotInfo {
            contest_id: ContestId::parse("c1").unwrap(),
            snapshot_id,
            match_id: MatchId::parse("m1").unwrap(),
            version,
            total: 1,
            computed_at_ms: 0,
            source: "recompute".into(),
        }
    }

    #[test]
    fn publishing_replaces_its_version_and_keeps_the_newest() {
        let heads: Vec<RankSnapshotInfo> = (1..=KEEP_RANK_SNAPSHOTS as u64 + 1)
            .map(|id| info(id, id * 10))
            .chain([info(20, 70)])
            .collect();
        let published = info(20, 70);
        assert_eq!(newest(&heads), Some(&published));
        let gone: Vec<u64> = obsolete(&heads, &published)
            .iter()
            .map(|h| h.snapshot_id)
            .collect();
        // Version 70 (id 7) is replaced by id 20; of the rest, the oldest go.
        assert_eq!(gone, [1, 7]);
    }
}

/// The conformance suite against a real node, whenever `SCYLLA_TEST_URI`
/// names one (`scylla://host:9042[,host…]/prefix` or `host:9042[,host…]`):
/// each check gets a keyspace of its own, dropped afterwards.
#[cfg(test)]
mod conformance_on_a_node {
    use super::*;
    use crate::conformance;

    fn hosts() -> Option<Vec<String>> {
        let uri = std::env::var("SCYLLA_TEST_URI").ok()?;
        let hosts = uri.strip_prefix("scylla://").unwrap_or(&uri);
        let hosts = hosts.split('/').next().unwrap_or_default();
        Some(
            hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn passes_the_conformance_suite_when_a_node_is_reachable() {
        let Some(hosts) = hosts() else {
            eprintln!(
                "SCYLLA_TEST_URI is not set: the Scylla adapter's conformance run is skipped"
            );
            return;
        };
        let admin = SessionBuilder::new()
            .known_nodes(&hosts)
            .build()
            .await
            .unwrap();
        let created = Mutex::new(Vec::new());
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| {
            let keyspace = format!(
                "lb_conformance_{}_{}",
                std::process::id(),
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            created.lock().unwrap().push(keyspace.clone());
            let (admin, hosts) = (&admin, &hosts);
            async move {
                admin
                    .query_unpaged(
                        format!(
                            "CREATE KEYSPACE {keyspace} WITH replication = \
                             {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                ScyllaStore::connect(hosts, &keyspace).await.unwrap()
            }
        })
        .await;
        for keyspace in created.into_inner().unwrap() {
            admin
                .query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[])
                .await
                .unwrap();
        }
    }
}
