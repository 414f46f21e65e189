//! The process-wide Prometheus registry that `/metrics` serves; each crate
//! registers its own statics in it (`leaderboard`, `ws-gateway`, `ingest`).

use std::sync::LazyLock;

use prometheus::Registry;

/// The registry every metric of this process is registered in.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
