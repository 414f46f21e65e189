//! The embedded durable store: one redb file (`STORE=file://DIR` keeps
//! `DIR/leaderboard.redb`). redb is a pure-Rust, ACID, crash-safe B-tree
//! store: a committed batch survives kill -9, a half-written one never shows.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use super::{DurableStore, StoreBatch, StoreError, StoreSnapshot};
use crate::domain::contest::{ContestRecord, EntryRecord};
use crate::domain::event::MatchEvent;
use crate::domain::ids::ContestId;

const CONTESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("contests");
const CONTEST_VERSIONS: TableDefinition<&str, u64> = TableDefinition::new("contest_versions");
/// (contest, sequence of acceptance) → entry JSON; the sequence keeps arrival order.
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// (match, seq) → event JSON.
const MATCH_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("match_events");

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| {
            StoreError::backend("create directory", format!("{}: {error}", dir.display()))
        })?;
        let path = dir.join("leaderboard.redb");
        let db = Database::create(&path)
            .map_err(|error| StoreError::backend("open", format!("{}: {error}", path.display())))?;
        let txn = db
            .begin_write()
            .map_err(|e| StoreError::backend("open", e))?;
        {
            txn.open_table(CONTESTS)
                .map_err(|e| StoreError::backend("open", e))?;
            txn.open_table(CONTEST_VERSIONS)
                .map_err(|e| StoreError::backend("open", e))?;
            txn.open_table(ENTRIES)
                .map_err(|e| StoreError::backend("open", e))?;
            txn.open_table(MATCH_EVENTS)
                .map_err(|e| StoreError::backend("open", e))?;
        }
        txn.commit().map_err(|e| StoreError::backend("open", e))?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    fn apply_blocking(&self, batch: &StoreBatch) -> Result<(), StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::backend("write", e);
        let txn = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut contests = txn.open_table(CONTESTS).map_err(|e| fail(&e))?;
            for contest in &batch.contests {
                let json = serde_json::to_vec(contest).expect("records serialize");
                contests
                    .insert(contest.contest_id.as_str(), json.as_slice())
                    .map_err(|e| fail(&e))?;
            }
            let mut entries = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
            for entry in &batch.entries {
                let contest = entry.contest_id.as_str();
                let next = entries
                    .range((contest, 0)..=(contest, u64::MAX))
                    .map_err(|e| fail(&e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| fail(&e))?
                    .map_or(0, |(key, _)| key.value().1 + 1);
                let json = serde_json::to_vec(entry).expect("records serialize");
                entries
                    .insert((contest, next), json.as_slice())
                    .map_err(|e| fail(&e))?;
            }
            let mut events = txn.open_table(MATCH_EVENTS).map_err(|e| fail(&e))?;
            for event in &batch.match_events {
                events
                    .insert(
                        (event.match_id.as_str(), event.seq),
                        event.to_json().as_slice(),
                    )
                    .map_err(|e| fail(&e))?;
            }
            let mut versions = txn.open_table(CONTEST_VERSIONS).map_err(|e| fail(&e))?;
            for (contest, version) in &batch.contest_versions {
                versions
                    .insert(contest.as_str(), *version)
                    .map_err(|e| fail(&e))?;
            }
        }
        txn.commit().map_err(|e| fail(&e))
    }

    fn load_blocking(&self) -> Result<StoreSnapshot, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::backend("read", e);
        let corrupt = |what: String, e: serde_json::Error| StoreError::Corrupt {
            what,
            message: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let mut snapshot = StoreSnapshot::default();

        let versions = txn.open_table(CONTEST_VERSIONS).map_err(|e| fail(&e))?;
        let contests = txn.open_table(CONTESTS).map_err(|e| fail(&e))?;
        for row in contests.iter().map_err(|e| fail(&e))? {
            let (key, value) = row.map_err(|e| fail(&e))?;
            let record: ContestRecord = serde_json::from_slice(value.value())
                .map_err(|e| corrupt(format!("contest {}", key.value()), e))?;
            let version = versions
                .get(key.value())
                .map_err(|e| fail(&e))?
                .map_or(0, |v| v.value());
            snapshot.contests.push((record, version));
        }

        let entries = txn.open_table(ENTRIES).map_err(|e| fail(&e))?;
        for row in entries.iter().map_err(|e| fail(&e))? {
            let (key, value) = row.map_err(|e| fail(&e))?;
            let (contest, sequence) = key.value();
            let record: EntryRecord = serde_json::from_slice(value.value())
                .map_err(|e| corrupt(format!("entry {contest}/{sequence}"), e))?;
            let contest = ContestId::parse(contest).map_err(|e| StoreError::Corrupt {
                what: "entry key".into(),
                message: e.to_string(),
            })?;
            snapshot.entries.entry(contest).or_default().push(record);
        }

        let events = txn.open_table(MATCH_EVENTS).map_err(|e| fail(&e))?;
        for row in events.iter().map_err(|e| fail(&e))? {
            let (key, value) = row.map_err(|e| fail(&e))?;
            let (match_id, seq) = key.value();
            let event: MatchEvent = serde_json::from_slice(value.value())
                .map_err(|e| corrupt(format!("event {match_id}/{seq}"), e))?;
            snapshot
                .match_events
                .entry(event.match_id.clone())
                .or_default()
                .push(event);
        }
        Ok(snapshot)
    }
}

impl DurableStore for EmbeddedStore {
    async fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.apply_blocking(&batch))
            .await
            .map_err(|e| StoreError::backend("write", e))?
    }

    async fn load(&self) -> Result<StoreSnapshot, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load_blocking())
            .await
            .map_err(|e| StoreError::backend("read", e))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .begin_read()
            .map(|_| ())
            .map_err(|e| StoreError::backend("ping", e))
    }
}
