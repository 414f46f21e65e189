//! The domain core of the leaderboard platform: ids, the event model, the
//! Cricsheet reader, the rules file, the scoring engine, teams, contests,
//! ranks, and the durable store's port. Pure functions and data: no I/O, no
//! async runtime, no database or network client (the build keeps it so:
//! this crate depends on serde, serde_json, toml and thiserror only).
//!
//! Crate choices: `serde`/`serde_json` for the wire formats, `toml` for the
//! human-edited rules file, `thiserror` for typed errors.

pub mod contest;
pub mod cricsheet;
pub mod event;
pub mod ids;
pub mod points;
pub mod rank;
pub mod rules;
pub mod scoring;
pub mod store;
pub mod team;

pub use cricsheet::CricsheetMatch;
pub use event::{Delivery, EventBody, MatchEvent};
pub use ids::{ContestId, EntryId, MatchId, PlayerName, UserId};
pub use points::{PlayerPoints, TeamPoints};
pub use rules::Rules;
pub use scoring::{score_match, Applied, MatchScorer};
