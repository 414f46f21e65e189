//! The authoritative recompute: every contest's ranks re-derived from the
//! stored event log ([`recompute`]), ranked with DataFusion ([`compute`], the
//! SQL in `src/sql/`), written to the durable store as a versioned snapshot
//! and reconciled with the live hot ranks; the scheduler that runs it every
//! five minutes and on operators' requests ([`schedule`]).
//!
//! Crate choices: `datafusion` (Apache Arrow DataFusion) for the query
//! engine — SQL over Arrow, partitioned aggregation, and sorts that spill
//! under a memory pool — without its default file-format features, which a
//! job over in-memory tables never uses; `humantime` for `--every 5m`.

pub mod compute;
pub mod metrics;
pub mod recompute;
pub mod schedule;

use std::path::PathBuf;

/// The recompute's knobs, shared by every subcommand that recomputes.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Partitions (and threads) the query runs on; default: the cores.
    #[arg(long, env = "RECOMPUTE_PARTITIONS")]
    pub partitions: Option<usize>,
    /// The query's memory pool in MiB: past it, sorts spill to disk.
    #[arg(long, env = "RECOMPUTE_MEMORY_MB", default_value_t = 1024)]
    pub memory_mb: usize,
    /// Where sorts spill (default: the system's temporary directory).
    #[arg(long, env = "RECOMPUTE_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// How long a recompute waits for Redis to reach the stored version
    /// before it reports the live state `behind` instead of comparing; a
    /// mega contest's deep ranks trail its version by seconds (`30s`, `2m`, …).
    #[arg(long, env = "RECONCILE_WAIT", default_value_t = recompute::DEFAULT_CATCH_UP.into())]
    pub reconcile_wait: humantime::Duration,
}

impl EngineArgs {
    pub fn options(&self) -> compute::EngineOptions {
        let defaults = compute::EngineOptions::default();
        compute::EngineOptions {
            partitions: self.partitions.unwrap_or(defaults.partitions).max(1),
            memory_limit: self.memory_mb.max(16) << 20,
            spill_dir: self.spill_dir.clone(),
        }
    }
}
