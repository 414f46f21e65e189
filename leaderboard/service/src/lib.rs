//! Service plumbing every binary shares: configuration ([`config`]),
//! telemetry ([`telemetry`]), shutdown and task supervision ([`shutdown`]),
//! the admin routes ([`admin`]), the HTTP accept loop with its connection
//! cap and per-core event loops ([`http`]), the one retry/backoff helper
//! ([`backoff`]), and the process's metrics registry ([`metrics`]).
//!
//! Crate choices: `clap` (with `env`) so that every setting is a flag and an
//! environment variable; `tracing` for structured logs; `axum` on `tokio`
//! for the admin routes (hyper with routing); `prometheus` for the text
//! exposition format the deploy's scrapers expect; `rand` for jitter.

pub mod admin;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
