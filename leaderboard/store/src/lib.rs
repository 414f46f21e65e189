//! The durable store's adapters behind the core's [`DurableStore`] port: the
//! embedded SQLite store ([`embedded`]) today, the Scylla adapter next, and the
//! [`conformance`] suite every adapter passes (behind the `conformance`
//! feature, for the adapters' own tests).
//!
//! Callers name no adapter: [`open`] reads `STORE` and hands back an
//! `Arc<dyn DurableStore>`, so adding an adapter is a new file here and one
//! arm in [`open`].

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;

use std::sync::Arc;

pub use leaderboard_core::store::*;

/// The store every caller holds, whichever adapter `STORE` names.
pub type SharedStore = Arc<dyn DurableStore>;

/// Opens the store named by `STORE` (`file://DIR`, or `scylla://…`, refused
/// until the Scylla adapter is part of the build).
pub fn open(uri: &str) -> Result<SharedStore, StoreError> {
    match StoreUri::parse(uri)? {
        StoreUri::File(path) => Ok(Arc::new(embedded::EmbeddedStore::open(&path)?)),
        StoreUri::Scylla { .. } => Err(StoreError::Unsupported(uri.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_scylla_uri_is_refused_until_the_adapter_is_built() {
        let error = super::open("scylla://127.0.0.1:9042/lb").unwrap_err();
        assert!(
            error.to_string().contains("not available in this build"),
            "{error}"
        );
    }
}
