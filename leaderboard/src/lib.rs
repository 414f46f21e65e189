//! The HTTP read API (`leaderboard serve`): routes, the per-node cache, the
//! rate limiter, the OpenAPI document, and this crate's metrics. The domain,
//! the hot state, the durable store and the service plumbing are crates of
//! their own beside it (`core/`, `hot/`, `store/`, `service/`).
//!
//! Crate choices: `hyper` for plain HTTP/1.1 connections and `axum` for the
//! router (the admin routes share it); `moka` for the caches that coalesce
//! concurrent misses; `governor` for the per-client token bucket; `utoipa`
//! for an OpenAPI document generated from the handlers' types; `mimalloc` as
//! the binary's allocator.

pub mod api;
pub mod metrics;
