//! The Redis hot state: the key layout ([`keys`]), pipelined writes
//! ([`writer`]), atomic reads ([`reader`]), and the contest read model the
//! read API and the gateway share ([`read_model`]).
//!
//! Crate choices: `redis` (redis-rs) with its `ConnectionManager`, which
//! reconnects by itself; `quick_cache` for the entry teams a node keeps (a
//! sharded map with S3-FIFO eviction and no per-read bookkeeping queue).

pub mod jobs;
pub mod keys;
pub mod read_model;
pub mod reader;
pub mod reconcile;
pub mod writer;

pub use keys::*;
pub use read_model::{ContestSnapshot, EntryTeam, ReadError, Source, TeamCache};
pub use reader::*;
pub use writer::*;
