//! The leaderboard platform's core library.
//!
//! - [`domain`]: ids, the event model, the rules file, the scoring engine,
//!   teams and ranks. Pure functions and data, no I/O.
//! - [`service`]: the plumbing every binary shares (configuration, telemetry,
//!   shutdown, admin routes).
//! - [`metrics`]: this crate's Prometheus statics.
//!
//! Crate choices: `serde`/`serde_json` for the wire formats, `toml` for the
//! human-edited rules file, `thiserror` for typed library errors, `clap` (with
//! `env`) so that every setting is a flag and an environment variable,
//! `tracing` for structured logs, `axum` on `tokio` for HTTP (it is hyper with
//! routing, and the admin routes share one server with the API), and
//! `prometheus` for the text exposition format the deploy's scrapers expect.

pub mod api;
pub mod domain;
pub mod hot;
pub mod metrics;
pub mod service;
pub mod store;

pub use domain::cricsheet::CricsheetMatch;
pub use domain::event::{Delivery, EventBody, MatchEvent};
pub use domain::ids::{ContestId, EntryId, MatchId, PlayerName, UserId};
pub use domain::points::{PlayerPoints, TeamPoints};
pub use domain::rules::Rules;
pub use domain::scoring::{score_match, Applied, MatchScorer};
