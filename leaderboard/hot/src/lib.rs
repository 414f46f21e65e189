//! The Redis hot state: the key layout ([`keys`]), pipelined writes
//! ([`writer`]), atomic reads ([`reader`]), and the contest read model the
//! read API and the gateway share ([`read_model`]).
//!
//! Crate choices: `redis` (redis-rs): its `HotConnection` for one server
//! and its async cluster client for a Redis Cluster, both reconnecting by
//! themselves, behind one [`HotConnection`] ([`connection`]); `quick_cache` for the entry teams a node keeps (a
//! sharded map with S3-FIFO eviction and no per-read bookkeeping queue),
//! beside a lock-free table per bulk-loaded contest ([`team_table`]);
//! `arc-swap` to replace those tables under readers that never wait.

pub mod connection;
pub mod jobs;
pub mod keys;
pub mod notices;
pub mod read_model;
pub mod reader;
pub mod reconcile;
pub mod refresh;
pub mod team_table;
pub mod writer;

pub use connection::{connect, HotConnection, Topology};
pub use keys::*;
pub use read_model::{ContestSnapshot, EntryTeam, ReadError, Source, TeamCache};
pub use reader::*;
pub use team_table::ContestTeams;
pub use writer::*;
