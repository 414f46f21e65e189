//! The durable store's adapters behind the core's [`DurableStore`] port: the
//! embedded SQLite store ([`embedded`]), the ScyllaDB/Cassandra store
//! ([`scylla`]), and the [`conformance`] suite every adapter passes (behind
//! the `conformance` feature, for the adapters' own tests).
//!
//! Callers name no adapter: [`open`] reads `STORE` and hands back an
//! `Arc<dyn DurableStore>`, so adding an adapter is a new file here and one
//! arm in [`open`].

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod decode;
pub mod embedded;
pub mod scylla;

use std::sync::Arc;

pub use leaderboard_core::store::*;

/// The store every caller holds, whichever adapter `STORE` names.
pub type SharedStore = Arc<dyn DurableStore>;

/// Opens the store named by `STORE`: `file://DIR` (embedded) or
/// `scylla://host:9042[,host…]/keyspace`.
pub async fn open(uri: &str) -> Result<SharedStore, StoreError> {
    match StoreUri::parse(uri)? {
        StoreUri::File(path) => Ok(Arc::new(embedded::EmbeddedStore::open(&path)?)),
        StoreUri::Scylla { hosts, keyspace } => Ok(Arc::new(
            scylla::ScyllaStore::connect(&hosts, &keyspace).await?,
        )),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_unreachable_scylla_node_is_a_clear_error() {
        // Port 9 (discard) on loopback: nothing listens.
        let error = super::open("scylla://127.0.0.1:9/lb").await.unwrap_err();
        assert!(
            error.to_string().contains("store connect failed"),
            "{error}"
        );
    }
}
