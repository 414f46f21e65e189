//! The embedded durable store: one SQLite database (`STORE=file://DIR` keeps
//! `DIR/leaderboard.sqlite`), in WAL mode with full fsync on commit.
//!
//! Why SQLite (through `rusqlite`, the library bundled): it is ACID and
//! crash-safe (a committed batch survives kill -9, a half-written one never
//! shows), and, unlike single-process embedded stores, several processes can
//! open one database at once — `ingest run` writes every batch while
//! `leaderboard serve` reads rank snapshots and `jobs` writes them, each with
//! its own connection; WAL lets readers go on while a writer commits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::decode::{corrupt, id, now_ms};
use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::event::{EventBody, MatchEvent};
use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::{
    ContestListing, DurableStore, RankHistoryPoint, RankRow, RankSnapshot, RankSnapshotInfo,
    RankSnapshotWriter, RecomputeInput, StoreBatch, StoreError, StoreFuture, StoreSnapshot,
    KEEP_RANK_SNAPSHOTS,
};

/// The file inside the store's directory.
pub const FILE_NAME: &str = "leaderboard.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contests (
    contest_id TEXT PRIMARY KEY,
    record     BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contest_versions (
    contest_id TEXT PRIMARY KEY,
    version    INTEGER NOT NULL
) WITHOUT ROWID;
-- seq: order of acceptance within the contest.
CREATE TABLE IF NOT EXISTS entries (
    contest_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    record     BLOB NOT NULL,
    PRIMARY KEY (contest_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS match_events (
    match_id TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    event    BLOB NOT NULL,
    PRIMARY KEY (match_id, seq)
) WITHOUT ROWID;
-- A rank snapshot's rows are written first, under a snapshot id no reader
-- knows yet, in as many transactions as it takes; its head, written last in
-- one transaction, publishes it. Readers find the newest head and read rows
-- by its id, so they see the previous snapshot or the new one, never half.
CREATE TABLE IF NOT EXISTS rank_snapshot_heads (
    contest_id     TEXT NOT NULL,
    snapshot_id    INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    match_id       TEXT NOT NULL,
    total          INTEGER NOT NULL,
    computed_at_ms INTEGER NOT NULL,
    source         TEXT NOT NULL,
    PRIMARY KEY (contest_id, snapshot_id)
) WITHOUT ROWID;
-- position: 0-based place in page order; points in half-point units.
CREATE TABLE IF NOT EXISTS rank_snapshot_rows (
    contest_id  TEXT NOT NULL,
    snapshot_id INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    rank        INTEGER NOT NULL,
    entry_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    points      INTEGER NOT NULL,
    PRIMARY KEY (contest_id, snapshot_id, position)
) WITHOUT ROWID;
-- An entry's rank in any snapshot, and its history across snapshots.
CREATE INDEX IF NOT EXISTS rank_snapshot_rows_by_entry
    ON rank_snapshot_rows (contest_id, entry_id, snapshot_id);
-- Snapshot ids handed out per contest, and snapshots being written: rows of
-- one that never got its head (its writer died) are dropped once it is old.
CREATE TABLE IF NOT EXISTS rank_snapshot_ids (
    contest_id TEXT PRIMARY KEY,
    last_id    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rank_snapshot_pending (
    contest_id    TEXT NOT NULL,
    snapshot_id   INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL,
    PRIMARY KEY (contest_id, snapshot_id)
) WITHOUT ROWID;
-- What has finished is not loaded at start-up (only its id is).
-- finished_at_ms: when the store recorded it (0 for stores written before).
CREATE TABLE IF NOT EXISTS finished_matches (
    match_id       TEXT PRIMARY KEY,
    finished_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finished_contests (
    contest_id     TEXT PRIMARY KEY,
    finished_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Stores written before these tables existed.
INSERT OR IGNORE INTO finished_matches
    SELECT DISTINCT match_id, 0 FROM match_events
    WHERE CAST(event AS TEXT) LIKE '%\"type\":\"match_end\"%';
INSERT OR IGNORE INTO finished_contests
    SELECT DISTINCT contest_id, 0 FROM rank_snapshot_heads WHERE source = 'final';
";

/// Stores written before snapshot ids: their snapshots move over, each
/// version becoming the snapshot of that id.
const MIGRATE_VERSIONED_SNAPSHOTS: &str = "
INSERT OR IGNORE INTO rank_snapshot_heads
    SELECT contest_id, version, version, match_id, total, computed_at_ms, source FROM rank_snapshots;
INSERT OR IGNORE INTO rank_snapshot_rows
    SELECT contest_id, version, position, rank, entry_id, user_id, points FROM rank_rows;
INSERT OR REPLACE INTO rank_snapshot_ids
    SELECT contest_id, MAX(snapshot_id) FROM rank_snapshot_heads GROUP BY contest_id;
DROP TABLE rank_rows;
DROP TABLE rank_snapshots;
INSERT OR IGNORE INTO finished_contests
    SELECT DISTINCT contest_id, 0 FROM rank_snapshot_heads WHERE source = 'final';
";

/// A snapshot being written whose writer has not published it for this long
/// is taken as abandoned (its writer died) and its rows are dropped.
const ABANDONED_AFTER_MS: u64 = 60 * 60 * 1000;

/// Rows deleted per transaction when old snapshots are dropped, so that a
/// 10M-row snapshot never holds the write lock for long.
const DELETE_CHUNK: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    connection: Arc<Mutex<Connection>>,
}

/// A write transaction, holding the write lock from its first statement
/// (`BEGIN IMMEDIATE`). A deferred one that reads first and writes later
/// fails at once with "database is locked" when another process committed
/// in between (SQLite cannot upgrade a stale read snapshot, and no busy
/// timeout waits for it); an immediate one waits for the lock instead, up to
/// the busy timeout.
fn write_transaction(connection: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// How long opening the store waits for other processes setting it up.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// Whether SQLite refused for a lock another connection holds.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn fail(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(operation, error)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StoreError::backend("create directory", format!("{}: {error}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        // Nodes starting together may open a fresh store at once: setting it
        // up (WAL, schema, migration) can then meet a lock SQLite refuses to
        // wait for (two readers each wanting to write), so the whole set-up
        // is tried again until it passes or the wait is over.
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        let connection = loop {
            match Self::set_up(&path) {
                Err((_, error)) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((operation, error)) => {
                    return Err(StoreError::backend(
                        operation,
                        format!("{}: {error}", path.display()),
                    ))
                }
                Ok(connection) => break connection,
            }
        };
        Ok(EmbeddedStore {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Opens `path` and sets the store up in it: (the failing step, its error).
    fn set_up(path: &Path) -> Result<Connection, (&'static str, rusqlite::Error)> {
        let open = |error| ("open", error);
        let mut connection = Connection::open(path).map_err(open)?;
        // Another process may hold the write lock for a moment: wait for it.
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(open)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open)?;
        connection.execute_batch(SCHEMA).map_err(open)?;
        let versioned: bool = connection
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'rank_rows'",
                [],
                |row| row.get(0),
            )
            .map_err(open)?;
        if versioned {
            let migrate = |error| ("migrate", error);
            let txn = write_transaction(&mut connection).map_err(migrate)?;
            txn.execute_batch(MIGRATE_VERSIONED_SNAPSHOTS)
                .map_err(migrate)?;
            txn.commit().map_err(migrate)?;
        }
        Ok(connection)
    }

    /// Runs `work` on the connection, off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| StoreError::backend(operation, "a previous operation panicked"))?;
            work(&mut connection)
        })
        .await
        .map_err(|error| StoreError::backend(operation, error))?
    }

    fn apply_blocking(connection: &mut Connection, batch: &StoreBatch) -> Result<(), StoreError> {
        let write = fail("write");
        let txn = write_transaction(connection).map_err(&write)?;
        {
            let mut insert = txn
                .prepare_cached(
                    "INSERT OR REPLACE INTO contests (contest_id, record) VALUES (?1, ?2)",
                )
                .map_err(&write)?;
            for contest in &batch.contests {
                let json = serde_json::to_vec(contest).expect("records serialize");
                insert
                    .execute(params![contest.contest_id.as_str(), json])
                    .map_err(&write)?;
            }
            let mut insert = txn
                .prepare_cached(
                    "INSERT INTO entries (contest_id, seq, record)
                     SELECT ?1, COALESCE(MAX(seq) + 1, 0), ?2 FROM entries WHERE contest_id = ?1",
                )
                .map_err(&write)?;
            for entry in &batch.entries {
                let json = serde_json::to_vec(entry).expect("records serialize");
                insert
                    .execute(params![entry.contest_id.as_str(), json])
                    .map_err(&write)?;
            }
            let mut insert = txn
                .prepare_cached(
                    "INSERT OR REPLACE INTO match_events (match_id, seq, event) VALUES (?1, ?2, ?3)",
                )
                .map_err(&write)?;
            for event in &batch.match_events {
                insert
                    .execute(params![event.match_id.as_str(), event.seq, event.to_json()])
                    .map_err(&write)?;
            }
            let mut finish = txn
                .prepare_cached(
                    "INSERT OR IGNORE INTO finished_matches (match_id, finished_at_ms) VALUES (?1, ?2)",
                )
                .map_err(&write)?;
            for event in &batch.match_events {
                if matches!(event.body, EventBody::MatchEnd {}) {
                    finish
                        .execute(params![event.match_id.as_str(), now_ms()])
                        .map_err(&write)?;
                }
            }
            let mut upsert = txn
                .prepare_cached(
                    "INSERT INTO contest_versions (contest_id, version) VALUES (?1, ?2)
                     ON CONFLICT (contest_id) DO UPDATE SET version = excluded.version",
                )
                .map_err(&write)?;
            for (contest, version) in &batch.contest_versions {
                upsert
                    .execute(params![contest.as_str(), version])
                    .map_err(&write)?;
            }
        }
        for snapshot in &batch.rank_snapshots {
            Self::put_snapshot(&txn, snapshot)?;
            if snapshot.info.source == "final" {
                txn.prepare_cached(
                    "INSERT OR REPLACE INTO finished_contests (contest_id, finished_at_ms)
                     VALUES (?1, ?2)",
                )
                .map_err(&write)?
                .execute(params![snapshot.info.contest_id.as_str(), now_ms()])
                .map_err(&write)?;
            }
        }
        txn.commit().map_err(&write)
    }

    /// Writes one rank snapshot whole inside `txn` (ingest's final standings).
    fn put_snapshot(
        txn: &rusqlite::Transaction<'_>,
        snapshot: &RankSnapshot,
    ) -> Result<(), StoreError> {
        let contest = snapshot.info.contest_id.as_str();
        let snapshot_id = next_snapshot_id(txn, contest)?;
        insert_rows(txn, contest, snapshot_id, 0, &snapshot.rows)?;
        publish_head(txn, &snapshot.info, snapshot_id)?;
        let write = fail("write rank snapshot");
        for (old, _) in expired_snapshots(txn, contest)? {
            for statement in [
                "DELETE FROM rank_snapshot_rows WHERE contest_id = ?1 AND snapshot_id = ?2",
                "DELETE FROM rank_snapshot_heads WHERE contest_id = ?1 AND snapshot_id = ?2",
            ] {
                txn.execute(statement, params![contest, old])
                    .map_err(&write)?;
            }
        }
        // A snapshot this one replaced at the same version (marked dead by
        // `publish_head`): small enough here to go in the same transaction.
        for statement in [
            "DELETE FROM rank_snapshot_rows WHERE contest_id = ?1 AND snapshot_id IN
                 (SELECT snapshot_id FROM rank_snapshot_pending WHERE contest_id = ?1 AND started_at_ms = 0)",
            "DELETE FROM rank_snapshot_pending WHERE contest_id = ?1 AND started_at_ms = 0",
        ] {
            txn.execute(statement, params![contest]).map_err(&write)?;
        }
        Ok(())
    }

    fn load_blocking(connection: &mut Connection, since: u64) -> Result<StoreSnapshot, StoreError> {
        // SQLite integers are signed: a horizon past them means "now and later".
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let read = fail("read");
        // One read transaction: a consistent view while ingest may be writing.
        let txn = connection.transaction().map_err(&read)?;
        let mut snapshot = StoreSnapshot::default();
        {
            snapshot.finished_matches = finished_ids(
                &txn,
                "SELECT match_id FROM finished_matches WHERE finished_at_ms < ?1",
                since,
                "finished match",
                MatchId::parse,
            )?;
            snapshot.finished_contests = finished_ids(
                &txn,
                "SELECT contest_id FROM finished_contests WHERE finished_at_ms < ?1",
                since,
                "finished contest",
                ContestId::parse,
            )?;

            let mut contests = txn
                .prepare(
                    "SELECT c.contest_id, c.record, COALESCE(v.version, 0)
                     FROM contests c LEFT JOIN contest_versions v USING (contest_id)
                     WHERE c.contest_id NOT IN
                         (SELECT contest_id FROM finished_contests WHERE finished_at_ms < ?1)
                     ORDER BY c.contest_id",
                )
                .map_err(&read)?;
            let mut rows = contests.query(params![since]).map_err(&read)?;
            while let Some(row) = rows.next().map_err(&read)? {
                let contest: String = row.get(0).map_err(&read)?;
                let record: Vec<u8> = row.get(1).map_err(&read)?;
                let version: u64 = row.get(2).map_err(&read)?;
                let record: ContestRecord = serde_json::from_slice(&record)
                    .map_err(corrupt(format!("contest {contest}")))?;
                // A contest created after its match ended has no final
                // standings of its own; it is not live either.
                if !snapshot.finished_matches.contains(&record.match_id) {
                    snapshot.contests.push((record, version));
                }
            }

            let live: std::collections::HashSet<ContestId> = snapshot
                .contests
                .iter()
                .map(|(record, _)| record.contest_id.clone())
                .collect();
            let mut entries = txn
                .prepare(
                    "SELECT contest_id, seq, record FROM entries
                     WHERE contest_id NOT IN
                         (SELECT contest_id FROM finished_contests WHERE finished_at_ms < ?1)
                     ORDER BY contest_id, seq",
                )
                .map_err(&read)?;
            let mut rows = entries.query(params![since]).map_err(&read)?;
            while let Some(row) = rows.next().map_err(&read)? {
                let contest: String = row.get(0).map_err(&read)?;
                let seq: u64 = row.get(1).map_err(&read)?;
                let record: Vec<u8> = row.get(2).map_err(&read)?;
                let record: EntryRecord = serde_json::from_slice(&record)
                    .map_err(corrupt(format!("entry {contest}/{seq}")))?;
                let contest = id("entry key", ContestId::parse, &contest)?;
                if live.contains(&contest) {
                    snapshot.entries.entry(contest).or_default().push(record);
                }
            }

            let mut events = txn
                .prepare(
                    "SELECT match_id, seq, event FROM match_events
                     WHERE match_id NOT IN
                         (SELECT match_id FROM finished_matches WHERE finished_at_ms < ?1)
                     ORDER BY match_id, seq",
                )
                .map_err(&read)?;
            let mut rows = events.query(params![since]).map_err(&read)?;
            while let Some(row) = rows.next().map_err(&read)? {
                let match_id: String = row.get(0).map_err(&read)?;
                let seq: u64 = row.get(1).map_err(&read)?;
                let event: Vec<u8> = row.get(2).map_err(&read)?;
                let event: MatchEvent = serde_json::from_slice(&event)
                    .map_err(corrupt(format!("event {match_id}/{seq}")))?;
                snapshot
                    .match_events
                    .entry(event.match_id.clone())
                    .or_default()
                    .push(event);
            }
        }
        txn.commit().map_err(&read)?;
        Ok(snapshot)
    }
}

/// The ids one query over a `finished_*` table returns, parsed.
fn finished_ids<T: Ord>(
    txn: &rusqlite::Transaction<'_>,
    query: &str,
    since: i64,
    what: &'static str,
    parse: impl Fn(&str) -> Result<T, leaderboard_core::ids::IdError>,
) -> Result<std::collections::BTreeSet<T>, StoreError> {
    let read = fail("read");
    let mut statement = txn.prepare(query).map_err(&read)?;
    let mut rows = statement.query(params![since]).map_err(&read)?;
    let mut ids = std::collections::BTreeSet::new();
    while let Some(row) = rows.next().map_err(&read)? {
        let text: String = row.get(0).map_err(&read)?;
        ids.insert(id(what, &parse, &text)?);
    }
    Ok(ids)
}

/// Hands out the contest's next snapshot id.
fn next_snapshot_id(txn: &rusqlite::Transaction<'_>, contest: &str) -> Result<u64, StoreError> {
    txn.query_row(
        "INSERT INTO rank_snapshot_ids (contest_id, last_id) VALUES (?1, 1)
         ON CONFLICT (contest_id) DO UPDATE SET last_id = last_id + 1
         RETURNING last_id",
        params![contest],
        |row| row.get(0),
    )
    .map_err(fail("allocate a snapshot id"))
}

fn insert_rows(
    txn: &rusqlite::Transaction<'_>,
    contest: &str,
    snapshot_id: u64,
    first_position: u64,
    rows: &[RankRow],
) -> Result<(), StoreError> {
    let write = fail("write rank rows");
    let mut insert = txn
        .prepare_cached(
            "INSERT OR REPLACE INTO rank_snapshot_rows
                 (contest_id, snapshot_id, position, rank, entry_id, user_id, points)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(&write)?;
    for (offset, row) in rows.iter().enumerate() {
        insert
            .execute(params![
                contest,
                snapshot_id,
                first_position + offset as u64,
                row.rank,
                row.entry_id.as_str(),
                row.user_id,
                row.points.halves()
            ])
            .map_err(&write)?;
    }
    Ok(())
}

/// The one write that makes a snapshot visible: its head. A head of the same
/// version is replaced (the snapshot was rewritten whole).
fn publish_head(
    txn: &rusqlite::Transaction<'_>,
    info: &RankSnapshotInfo,
    snapshot_id: u64,
) -> Result<(), StoreError> {
    let write = fail("publish rank snapshot");
    let contest = info.contest_id.as_str();
    let replaced: Vec<u64> = {
        let mut same = txn
            .prepare_cached(
                "SELECT snapshot_id FROM rank_snapshot_heads WHERE contest_id = ?1 AND version = ?2",
            )
            .map_err(&write)?;
        let ids = same
            .query_map(params![contest, info.version], |row| row.get(0))
            .map_err(&write)?;
        ids.collect::<Result<_, _>>().map_err(&write)?
    };
    for old in replaced {
        txn.execute(
            "DELETE FROM rank_snapshot_heads WHERE contest_id = ?1 AND snapshot_id = ?2",
            params![contest, old],
        )
        .map_err(&write)?;
        txn.execute(
            "INSERT OR REPLACE INTO rank_snapshot_pending (contest_id, snapshot_id, started_at_ms)
             VALUES (?1, ?2, 0)",
            params![contest, old],
        )
        .map_err(&write)?;
    }
    txn.execute(
        "INSERT INTO rank_snapshot_heads
             (contest_id, snapshot_id, version, match_id, total, computed_at_ms, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            contest,
            snapshot_id,
            info.version,
            info.match_id.as_str(),
            info.total,
            info.computed_at_ms,
            info.source
        ],
    )
    .map_err(&write)?;
    txn.execute(
        "DELETE FROM rank_snapshot_pending WHERE contest_id = ?1 AND snapshot_id = ?2",
        params![contest, snapshot_id],
    )
    .map_err(&write)?;
    Ok(())
}

/// Heads beyond the newest [`KEEP_RANK_SNAPSHOTS`] (by version, then id):
/// (snapshot id, version).
fn expired_snapshots(
    txn: &rusqlite::Transaction<'_>,
    contest: &str,
) -> Result<Vec<(u64, u64)>, StoreError> {
    let read = fail("expire rank snapshots");
    let mut old = txn
        .prepare_cached(
            "SELECT snapshot_id, version FROM rank_snapshot_heads WHERE contest_id = ?1
             ORDER BY version DESC, snapshot_id DESC LIMIT -1 OFFSET ?2",
        )
        .map_err(&read)?;
    let rows = old
        .query_map(params![contest, KEEP_RANK_SNAPSHOTS as u64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(&read)?;
    rows.collect::<Result<_, _>>().map_err(&read)
}

fn rank_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, u64, String, String, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_rank_row(
    (_, rank, entry_id, user_id, points): (u64, u64, String, String, i64),
) -> Result<RankRow, StoreError> {
    Ok(RankRow {
        rank,
        entry_id: id("rank row", EntryId::parse, &entry_id)?,
        user_id,
        points: TeamPoints(points),
    })
}

impl DurableStore for EmbeddedStore {
    fn apply(&self, batch: StoreBatch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            self.with("write", move |connection| {
                Self::apply_blocking(connection, &batch)
            })
            .await
        })
    }

    fn load(&self, finished_since_ms: u64) -> StoreFuture<'_, StoreSnapshot> {
        Box::pin(async move {
            self.with("read", move |connection| {
                Self::load_blocking(connection, finished_since_ms)
            })
            .await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.with("ping", |connection| {
                connection
                    .query_row("SELECT COUNT(*) FROM rank_snapshot_ids", [], |row| {
                        row.get::<_, u64>(0)
                    })
                    .map(|_| ())
                    .map_err(fail("ping"))
            })
            .await
        })
    }

    fn latest_rank_snapshot<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RankSnapshotInfo>> {
        Box::pin(async move {
            let contest = contest.clone();
            self.with("read rank snapshot", move |connection| {
                let read = fail("read rank snapshot");
                let found: Option<(u64, u64, String, u64, u64, String)> = connection
                    .query_row(
                        "SELECT snapshot_id, version, match_id, total, computed_at_ms, source
                         FROM rank_snapshot_heads WHERE contest_id = ?1
                         ORDER BY version DESC, snapshot_id DESC LIMIT 1",
                        params![contest.as_str()],
                        |row| {
                            Ok((
                                row.get(0)?,
                                row.get(1)?,
                                row.get(2)?,
                                row.get(3)?,
                                row.get(4)?,
                                row.get(5)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(&read)?;
                found
                    .map(
                        |(snapshot_id, version, match_id, total, computed_at_ms, source)| {
                            Ok(RankSnapshotInfo {
                                contest_id: contest.clone(),
                                snapshot_id,
                                match_id: id("rank snapshot", MatchId::parse, &match_id)?,
                                version,
                                total,
                                computed_at_ms,
                                source,
                            })
                        },
                    )
                    .transpose()
            })
            .await
        })
    }

    fn rank_page<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        offset: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<RankRow>> {
        Box::pin(async move {
            let contest = contest.clone();
            self.with("read rank page", move |connection| {
                let read = fail("read rank page");
                let mut page = connection
                    .prepare_cached(
                        "SELECT r.position, r.rank, r.entry_id, r.user_id, r.points
                         FROM rank_snapshot_rows r JOIN rank_snapshot_heads h USING (contest_id, snapshot_id)
                         WHERE r.contest_id = ?1 AND r.snapshot_id = ?2 AND r.position >= ?3
                         ORDER BY r.position LIMIT ?4",
                    )
                    .map_err(&read)?;
                let rows = page
                    .query_map(
                        params![contest.as_str(), snapshot_id, offset, limit],
                        rank_row,
                    )
                    .map_err(&read)?;
                rows.map(|row| to_rank_row(row.map_err(&read)?)).collect()
            })
            .await
        })
    }

    fn rank_of_entry<'a>(
        &'a self,
        contest: &'a ContestId,
        snapshot_id: u64,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Option<(u64, RankRow)>> {
        Box::pin(async move {
            let (contest, entry) = (contest.clone(), entry.clone());
            self.with("read entry rank", move |connection| {
                let read = fail("read entry rank");
                let found = connection
                    .prepare_cached(
                        "SELECT r.position, r.rank, r.entry_id, r.user_id, r.points
                         FROM rank_snapshot_rows r JOIN rank_snapshot_heads h USING (contest_id, snapshot_id)
                         WHERE r.contest_id = ?1 AND r.entry_id = ?2 AND r.snapshot_id = ?3",
                    )
                    .map_err(&read)?
                    .query_row(
                        params![contest.as_str(), entry.as_str(), snapshot_id],
                        rank_row,
                    )
                    .optional()
                    .map_err(&read)?;
                found.map(|row| Ok((row.0, to_rank_row(row)?))).transpose()
            })
            .await
        })
    }

    fn rank_history<'a>(
        &'a self,
        contest: &'a ContestId,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Vec<RankHistoryPoint>> {
        Box::pin(async move {
            let (contest, entry) = (contest.clone(), entry.clone());
            self.with("read rank history", move |connection| {
                let read = fail("read rank history");
                let mut history = connection
                    .prepare_cached(
                        "SELECT h.snapshot_id, h.version, h.computed_at_ms, h.source, r.rank, r.points
                         FROM rank_snapshot_rows r JOIN rank_snapshot_heads h USING (contest_id, snapshot_id)
                         WHERE r.contest_id = ?1 AND r.entry_id = ?2
                         ORDER BY h.version, h.snapshot_id",
                    )
                    .map_err(&read)?;
                let points = history
                    .query_map(params![contest.as_str(), entry.as_str()], |row| {
                        Ok(RankHistoryPoint {
                            snapshot_id: row.get(0)?,
                            version: row.get(1)?,
                            computed_at_ms: row.get(2)?,
                            source: row.get(3)?,
                            rank: row.get(4)?,
                            points: TeamPoints(row.get(5)?),
                        })
                    })
                    .map_err(&read)?;
                points.collect::<Result<_, _>>().map_err(&read)
            })
            .await
        })
    }

    fn list_contests(&self) -> StoreFuture<'_, Vec<ContestListing>> {
        Box::pin(async move {
            self.with("list contests", move |connection| {
                let read = fail("list contests");
                let mut contests = connection
                    .prepare_cached(
                        "SELECT c.contest_id, c.record, COALESCE(v.version, 0)
                         FROM contests c LEFT JOIN contest_versions v USING (contest_id)
                         ORDER BY c.contest_id",
                    )
                    .map_err(&read)?;
                let mut rows = contests.query([]).map_err(&read)?;
                let mut listed = Vec::new();
                while let Some(row) = rows.next().map_err(&read)? {
                    let contest: String = row.get(0).map_err(&read)?;
                    let record: Vec<u8> = row.get(1).map_err(&read)?;
                    let version: u64 = row.get(2).map_err(&read)?;
                    let record: ContestRecord = serde_json::from_slice(&record)
                        .map_err(corrupt(format!("contest {contest}")))?;
                    listed.push(ContestListing {
                        contest_id: record.contest_id,
                        match_id: record.match_id,
                        version,
                        finished: false,
                    });
                }
                drop(rows);
                let mut finished = connection
                    .prepare_cached("SELECT 1 FROM finished_matches WHERE match_id = ?1")
                    .map_err(&read)?;
                for listing in &mut listed {
                    listing.finished = finished
                        .exists(params![listing.match_id.as_str()])
                        .map_err(&read)?;
                }
                Ok(listed)
            })
            .await
        })
    }

    fn recompute_input<'a>(
        &'a self,
        contest: &'a ContestId,
    ) -> StoreFuture<'a, Option<RecomputeInput>> {
        Box::pin(async move {
            let contest = contest.clone();
            self.with("read recompute input", move |connection| {
                let read = fail("read recompute input");
                // One read transaction: the version, the entry count and the
                // log are of one moment, as ingest wrote them in one batch.
                let txn = connection.transaction().map_err(&read)?;
                let found: Option<(Vec<u8>, u64)> = txn
                    .query_row(
                        "SELECT c.record, COALESCE(v.version, 0)
                         FROM contests c LEFT JOIN contest_versions v USING (contest_id)
                         WHERE c.contest_id = ?1",
                        params![contest.as_str()],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(&read)?;
                let Some((record, version)) = found else {
                    return Ok(None);
                };
                let record: ContestRecord = serde_json::from_slice(&record)
                    .map_err(corrupt(format!("contest {contest}")))?;
                let entry_count: u64 = txn
                    .query_row(
                        "SELECT COUNT(*) FROM entries WHERE contest_id = ?1",
                        params![contest.as_str()],
                        |row| row.get(0),
                    )
                    .map_err(&read)?;
                let mut log = txn
                    .prepare("SELECT seq, event FROM match_events WHERE match_id = ?1 ORDER BY seq")
                    .map_err(&read)?;
                let mut rows = log
                    .query(params![record.match_id.as_str()])
                    .map_err(&read)?;
                let mut events = Vec::new();
                while let Some(row) = rows.next().map_err(&read)? {
                    let seq: u64 = row.get(0).map_err(&read)?;
                    let event: Vec<u8> = row.get(1).map_err(&read)?;
                    let event: MatchEvent = serde_json::from_slice(&event)
                        .map_err(corrupt(format!("event {}/{seq}", record.match_id)))?;
                    events.push(event);
                }
                drop(rows);
                drop(log);
                txn.commit().map_err(&read)?;
                Ok(Some(RecomputeInput {
                    contest: record,
                    version,
                    entry_count,
                    events,
                }))
            })
            .await
        })
    }

    fn entries_page<'a>(
        &'a self,
        contest: &'a ContestId,
        from: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<EntryRecord>> {
        Box::pin(async move {
            let contest = contest.clone();
            self.with("read entries", move |connection| {
                let read = fail("read entries");
                let mut page = connection
                    .prepare_cached(
                        "SELECT seq, record FROM entries
                         WHERE contest_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(&read)?;
                let mut rows = page
                    .query(params![contest.as_str(), from, limit])
                    .map_err(&read)?;
                let mut entries = Vec::new();
                while let Some(row) = rows.next().map_err(&read)? {
                    let seq: u64 = row.get(0).map_err(&read)?;
                    let record: Vec<u8> = row.get(1).map_err(&read)?;
                    let record: EntryRecord = serde_json::from_slice(&record)
                        .map_err(corrupt(format!("entry {contest}/{seq}")))?;
                    entries.push(record);
                }
                Ok(entries)
            })
            .await
        })
    }

    fn begin_rank_snapshot(
        &self,
        info: RankSnapshotInfo,
    ) -> StoreFuture<'_, Box<dyn RankSnapshotWriter>> {
        Box::pin(async move {
            let contest = info.contest_id.clone();
            let abandoned = self
                .with("start rank snapshot", {
                    let contest = contest.clone();
                    move |connection| {
                        let write = fail("start rank snapshot");
                        let txn = write_transaction(connection).map_err(&write)?;
                        let snapshot_id = next_snapshot_id(&txn, contest.as_str())?;
                        txn.execute(
                            "INSERT INTO rank_snapshot_pending (contest_id, snapshot_id, started_at_ms)
                             VALUES (?1, ?2, ?3)",
                            params![contest.as_str(), snapshot_id, now_ms()],
                        )
                        .map_err(&write)?;
                        let abandoned: Vec<u64> = {
                            let mut old = txn
                                .prepare(
                                    "SELECT snapshot_id FROM rank_snapshot_pending
                                     WHERE contest_id = ?1 AND started_at_ms < ?2",
                                )
                                .map_err(&write)?;
                            let ids = old
                                .query_map(
                                    params![
                                        contest.as_str(),
                                        now_ms().saturating_sub(ABANDONED_AFTER_MS)
                                    ],
                                    |row| row.get(0),
                                )
                                .map_err(&write)?;
                            ids.collect::<Result<_, _>>().map_err(&write)?
                        };
                        txn.commit().map_err(&write)?;
                        Ok((snapshot_id, abandoned))
                    }
                })
                .await?;
            let (snapshot_id, abandoned) = abandoned;
            for old in abandoned {
                self.drop_snapshot_rows(&contest, old).await?;
            }
            Ok(Box::new(EmbeddedSnapshotWriter {
                store: self.clone(),
                info,
                snapshot_id,
                next_position: 0,
            }) as Box<dyn RankSnapshotWriter>)
        })
    }
}

impl EmbeddedStore {
    /// Deletes a dead snapshot's rows a chunk per transaction, then forgets it.
    async fn drop_snapshot_rows(
        &self,
        contest: &ContestId,
        snapshot_id: u64,
    ) -> Result<(), StoreError> {
        loop {
            let contest = contest.clone();
            let deleted = self
                .with("drop rank snapshot", move |connection| {
                    let write = fail("drop rank snapshot");
                    let deleted = connection
                        .prepare_cached(
                            "DELETE FROM rank_snapshot_rows WHERE contest_id = ?1 AND snapshot_id = ?2
                             AND position IN (SELECT position FROM rank_snapshot_rows
                                              WHERE contest_id = ?1 AND snapshot_id = ?2 LIMIT ?3)",
                        )
                        .map_err(&write)?
                        .execute(params![contest.as_str(), snapshot_id, DELETE_CHUNK])
                        .map_err(&write)?;
                    if deleted == 0 {
                        connection
                            .execute(
                                "DELETE FROM rank_snapshot_pending WHERE contest_id = ?1 AND snapshot_id = ?2",
                                params![contest.as_str(), snapshot_id],
                            )
                            .map_err(&write)?;
                    }
                    Ok(deleted)
                })
                .await?;
            if deleted == 0 {
                return Ok(());
            }
        }
    }
}

/// A snapshot being written: rows in transactions of their own, the head last.
#[derive(Debug)]
struct EmbeddedSnapshotWriter {
    store: EmbeddedStore,
    info: RankSnapshotInfo,
    snapshot_id: u64,
    next_position: u64,
}

impl RankSnapshotWriter for EmbeddedSnapshotWriter {
    fn write(&mut self, rows: Vec<RankRow>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let contest = self.info.contest_id.clone();
            let (snapshot_id, first) = (self.snapshot_id, self.next_position);
            self.next_position += rows.len() as u64;
            self.store
                .with("write rank rows", move |connection| {
                    let txn = write_transaction(connection).map_err(fail("write rank rows"))?;
                    insert_rows(&txn, contest.as_str(), snapshot_id, first, &rows)?;
                    txn.commit().map_err(fail("write rank rows"))
                })
                .await
        })
    }

    fn publish(self: Box<Self>) -> StoreFuture<'static, RankSnapshotInfo> {
        Box::pin(async move {
            let mut info = self.info.clone();
            info.snapshot_id = self.snapshot_id;
            info.total = self.next_position;
            let published = info.clone();
            let expired = self
                .store
                .with("publish rank snapshot", move |connection| {
                    let txn = write_transaction(connection)
                        .map_err(fail("publish rank snapshot"))?;
                    publish_head(&txn, &published, published.snapshot_id)?;
                    let expired = expired_snapshots(&txn, published.contest_id.as_str())?;
                    for &(old, _) in &expired {
                        txn.execute(
                            "DELETE FROM rank_snapshot_heads WHERE contest_id = ?1 AND snapshot_id = ?2",
                            params![published.contest_id.as_str(), old],
                        )
                        .map_err(fail("publish rank snapshot"))?;
                        txn.execute(
                            "INSERT OR REPLACE INTO rank_snapshot_pending (contest_id, snapshot_id, started_at_ms)
                             VALUES (?1, ?2, 0)",
                            params![published.contest_id.as_str(), old],
                        )
                        .map_err(fail("publish rank snapshot"))?;
                    }
                    txn.commit().map_err(fail("publish rank snapshot"))?;
                    Ok(expired)
                })
                .await?;
            // Unreadable now (no head): their rows go in small transactions.
            for (old, _) in expired {
                self.store.drop_snapshot_rows(&info.contest_id, old).await?;
            }
            Ok(info)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    /// Several processes (here: connections) opening one fresh store at
    /// once, as the nodes of one machine do at start: each waits its turn.
    #[test]
    fn a_fresh_store_opened_by_many_at_once_opens_for_all() {
        for _ in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                let openers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            EmbeddedStore::open(dir.path()).map(|_| ())
                        })
                    })
                    .collect();
                for opener in openers {
                    opener.join().unwrap().unwrap();
                }
            });
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn passes_the_conformance_suite() {
        let dirs = std::sync::Mutex::new(Vec::new());
        conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            std::future::ready(store)
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_second_handle_reads_what_the_first_wrote_and_data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EmbeddedStore::open(dir.path()).unwrap();
        // As `leaderboard serve` does beside `ingest run`: its own connection.
        let reader = EmbeddedStore::open(dir.path()).unwrap();
        conformance::rank_snapshots_page_rank_and_expire(&writer).await;
        let contest = ContestId::parse("c1").unwrap();
        let latest = reader
            .latest_rank_snapshot(&contest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.version, 5 + 2 * (KEEP_RANK_SNAPSHOTS as u64 - 1));
        drop((writer, reader));
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let page = reopened
            .rank_page(&contest, latest.snapshot_id, 0, 10)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].entry_id.as_str(), "e7");
    }
}
