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

use leaderboard_core::contest::{ContestRecord, EntryRecord};
use leaderboard_core::event::{EventBody, MatchEvent};
use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::{
    DurableStore, RankRow, RankSnapshot, RankSnapshotInfo, StoreBatch, StoreError, StoreFuture,
    StoreSnapshot, KEEP_RANK_SNAPSHOTS,
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
CREATE TABLE IF NOT EXISTS rank_snapshots (
    contest_id     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    match_id       TEXT NOT NULL,
    total          INTEGER NOT NULL,
    computed_at_ms INTEGER NOT NULL,
    source         TEXT NOT NULL,
    PRIMARY KEY (contest_id, version)
) WITHOUT ROWID;
-- position: 0-based place in page order; points in half-point units.
CREATE TABLE IF NOT EXISTS rank_rows (
    contest_id TEXT NOT NULL,
    version    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    rank       INTEGER NOT NULL,
    entry_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    points     INTEGER NOT NULL,
    PRIMARY KEY (contest_id, version, position)
) WITHOUT ROWID;
-- An entry's rank in any snapshot, and its history across snapshots.
CREATE INDEX IF NOT EXISTS rank_rows_by_entry ON rank_rows (contest_id, entry_id, version);
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
    SELECT DISTINCT contest_id, 0 FROM rank_snapshots WHERE source = 'final';
";

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    connection: Arc<Mutex<Connection>>,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn fail(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(operation, error)
}

fn corrupt(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |error| StoreError::Corrupt {
        what,
        message: error.to_string(),
    }
}

fn id<T>(
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, leaderboard_core::ids::IdError>,
    text: &str,
) -> Result<T, StoreError> {
    parse(text).map_err(|error| StoreError::Corrupt {
        what: what.to_owned(),
        message: error.to_string(),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StoreError::backend("create directory", format!("{}: {error}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let connection = Connection::open(&path)
            .map_err(|error| StoreError::backend("open", format!("{}: {error}", path.display())))?;
        // Another process may hold the write lock for a moment: wait for it.
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(fail("open"))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(fail("open"))?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(fail("open"))?;
        connection.execute_batch(SCHEMA).map_err(fail("open"))?;
        Ok(EmbeddedStore {
            connection: Arc::new(Mutex::new(connection)),
        })
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
        let txn = connection.transaction().map_err(&write)?;
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

    /// Writes one rank snapshot and drops the contest's snapshots older than
    /// the newest [`KEEP_RANK_SNAPSHOTS`].
    fn put_snapshot(
        txn: &rusqlite::Transaction<'_>,
        snapshot: &RankSnapshot,
    ) -> Result<(), StoreError> {
        let write = fail("write rank snapshot");
        let contest = snapshot.info.contest_id.as_str();
        let version = snapshot.info.version;
        txn.execute(
            "DELETE FROM rank_rows WHERE contest_id = ?1 AND version = ?2",
            params![contest, version],
        )
        .map_err(&write)?;
        txn.execute(
            "INSERT OR REPLACE INTO rank_snapshots
                 (contest_id, version, match_id, total, computed_at_ms, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                contest,
                version,
                snapshot.info.match_id.as_str(),
                snapshot.info.total,
                snapshot.info.computed_at_ms,
                snapshot.info.source
            ],
        )
        .map_err(&write)?;
        let mut insert = txn
            .prepare_cached(
                "INSERT INTO rank_rows (contest_id, version, position, rank, entry_id, user_id, points)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(&write)?;
        for (position, row) in snapshot.rows.iter().enumerate() {
            insert
                .execute(params![
                    contest,
                    version,
                    position as u64,
                    row.rank,
                    row.entry_id.as_str(),
                    row.user_id,
                    row.points.halves()
                ])
                .map_err(&write)?;
        }
        let keep_from: Option<u64> = txn
            .query_row(
                "SELECT version FROM rank_snapshots WHERE contest_id = ?1
                 ORDER BY version DESC LIMIT 1 OFFSET ?2",
                params![contest, KEEP_RANK_SNAPSHOTS as u64 - 1],
                |row| row.get(0),
            )
            .optional()
            .map_err(&write)?;
        if let Some(oldest_kept) = keep_from {
            txn.execute(
                "DELETE FROM rank_rows WHERE contest_id = ?1 AND version < ?2",
                params![contest, oldest_kept],
            )
            .map_err(&write)?;
            txn.execute(
                "DELETE FROM rank_snapshots WHERE contest_id = ?1 AND version < ?2",
                params![contest, oldest_kept],
            )
            .map_err(&write)?;
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
                    .query_row("SELECT COUNT(*) FROM rank_snapshots", [], |row| {
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
                let found: Option<(u64, String, u64, u64, String)> = connection
                .query_row(
                    "SELECT version, match_id, total, computed_at_ms, source FROM rank_snapshots
                     WHERE contest_id = ?1 ORDER BY version DESC LIMIT 1",
                    params![contest.as_str()],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(&read)?;
                found
                    .map(|(version, match_id, total, computed_at_ms, source)| {
                        Ok(RankSnapshotInfo {
                            contest_id: contest.clone(),
                            match_id: id("rank snapshot", MatchId::parse, &match_id)?,
                            version,
                            total,
                            computed_at_ms,
                            source,
                        })
                    })
                    .transpose()
            })
            .await
        })
    }

    fn rank_page<'a>(
        &'a self,
        contest: &'a ContestId,
        version: u64,
        offset: u64,
        limit: u64,
    ) -> StoreFuture<'a, Vec<RankRow>> {
        Box::pin(async move {
            let contest = contest.clone();
            self.with("read rank page", move |connection| {
                let read = fail("read rank page");
                let mut page = connection
                    .prepare_cached(
                        "SELECT position, rank, entry_id, user_id, points FROM rank_rows
                     WHERE contest_id = ?1 AND version = ?2 AND position >= ?3
                     ORDER BY position LIMIT ?4",
                    )
                    .map_err(&read)?;
                let rows = page
                    .query_map(params![contest.as_str(), version, offset, limit], rank_row)
                    .map_err(&read)?;
                rows.map(|row| to_rank_row(row.map_err(&read)?)).collect()
            })
            .await
        })
    }

    fn rank_of_entry<'a>(
        &'a self,
        contest: &'a ContestId,
        version: u64,
        entry: &'a EntryId,
    ) -> StoreFuture<'a, Option<(u64, RankRow)>> {
        Box::pin(async move {
            let (contest, entry) = (contest.clone(), entry.clone());
            self.with("read entry rank", move |connection| {
                let read = fail("read entry rank");
                let found = connection
                    .prepare_cached(
                        "SELECT position, rank, entry_id, user_id, points FROM rank_rows
                     WHERE contest_id = ?1 AND entry_id = ?2 AND version = ?3",
                    )
                    .map_err(&read)?
                    .query_row(params![contest.as_str(), entry.as_str(), version], rank_row)
                    .optional()
                    .map_err(&read)?;
                found.map(|row| Ok((row.0, to_rank_row(row)?))).transpose()
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test(flavor = "multi_thread")]
    async fn passes_the_conformance_suite() {
        let dirs = std::sync::Mutex::new(Vec::new());
        conformance::run_all(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path()).unwrap();
            dirs.lock().unwrap().push(dir);
            store
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
        assert_eq!(latest.version, 9);
        drop((writer, reader));
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let page = reopened.rank_page(&contest, 9, 0, 10).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].entry_id.as_str(), "e7");
    }
}
