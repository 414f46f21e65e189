//! The durable store port: contests, entries, the applied match-event log and
//! contest versions, written atomically per batch. The embedded default is
//! [`embedded::EmbeddedStore`] (redb); the Scylla adapter implements the same trait.

pub mod embedded;

use std::collections::BTreeMap;
use std::future::Future;

use crate::domain::contest::{ContestRecord, EntryRecord};
use crate::domain::event::MatchEvent;
use crate::domain::ids::{ContestId, MatchId};

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
}

impl StoreBatch {
    pub fn is_empty(&self) -> bool {
        self.contests.is_empty()
            && self.entries.is_empty()
            && self.match_events.is_empty()
            && self.contest_versions.is_empty()
    }
}

/// The whole durable state, as `ingest run` rebuilds from it.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub contests: Vec<(ContestRecord, u64)>,
    /// Entries per contest, in the order they were accepted.
    pub entries: BTreeMap<ContestId, Vec<EntryRecord>>,
    /// The applied events of every match, by `seq`.
    pub match_events: BTreeMap<MatchId, Vec<MatchEvent>>,
}

/// The durable store's port.
pub trait DurableStore: Send + Sync + 'static {
    /// Writes a batch atomically: all of it or none.
    fn apply(&self, batch: StoreBatch) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Reads everything back.
    fn load(&self) -> impl Future<Output = Result<StoreSnapshot, StoreError>> + Send;
    /// Answers when the store is usable (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
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

/// Opens the embedded store named by `STORE`; a Scylla URI is refused until
/// the Scylla adapter is part of the build.
pub fn open_embedded(uri: &str) -> Result<embedded::EmbeddedStore, StoreError> {
    match StoreUri::parse(uri)? {
        StoreUri::File(path) => embedded::EmbeddedStore::open(&path),
        StoreUri::Scylla { .. } => Err(StoreError::Unsupported(uri.to_owned())),
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
