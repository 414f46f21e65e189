//! The domain core, free of I/O: ids, events, rules, scoring, teams and ranks.

pub mod contest;
pub mod cricsheet;
pub mod event;
pub mod ids;
pub mod points;
pub mod rank;
pub mod rules;
pub mod scoring;
pub mod team;
