//! `loadtest ingest-memory`: the resident memory of ingest's live state per
//! entry. Builds the pipeline `ingest run` keeps (a contest over a real
//! match's squad, N generated entries, a few balls applied) in this process
//! and reads the process's resident set size before and after.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ingest::pipeline::{Incoming, Pipeline};
use ingest::topics;
use leaderboard_core::contest::ContestMessage;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::{ContestId, EntryId, Rules};

#[derive(Debug, clap::Args)]
pub struct IngestMemoryArgs {
    /// The Cricsheet match whose players form the squad and whose balls are applied.
    #[arg(long, value_name = "FILE")]
    match_file: PathBuf,
    /// Live entries in the contest.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    /// Balls applied after the entries (each re-ranks the contest).
    #[arg(long, default_value_t = 20)]
    balls: usize,
}

/// Resident set size of this process, in bytes (`VmRSS` of /proc/self/status).
fn resident_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

pub fn ingest_memory(args: IngestMemoryArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.match_file)
        .with_context(|| format!("cannot read {}", args.match_file.display()))?;
    let cricsheet = CricsheetMatch::from_json(&text)?;
    let match_id = match_id_from_path(&args.match_file)?;
    let contest_id = ContestId::parse("memory")?;
    let record = ingest::contests::contest(
        &contest_id,
        &match_id,
        cricsheet.info.players.clone(),
        args.entries as u64,
    );
    let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
    pipeline.handle(&Incoming::keyed(
        topics::CONTEST_ENTRIES,
        "memory",
        ContestMessage::Contest(record.clone()).to_json(),
    ));
    drop(pipeline.finish_batch());
    let before = resident_bytes()?;
    // Entries arrive in chunks, each chunk's effects dropped as `ingest run`
    // drops them once written.
    let chunk = 10_000;
    let mut added = 0;
    while added < args.entries {
        let count = chunk.min(args.entries - added);
        for (n, mut entry) in ingest::contests::entries(&record, count, added as u64)
            .into_iter()
            .enumerate()
        {
            entry.entry_id = EntryId::parse(&format!("e{}", added + n + 1))?;
            pipeline.handle(&Incoming::keyed(
                topics::CONTEST_ENTRIES,
                "memory",
                ContestMessage::Entry(entry).to_json(),
            ));
        }
        drop(pipeline.finish_batch());
        added += count;
        if added % 200_000 == 0 || added == args.entries {
            eprintln!("{added} entries");
        }
    }
    for event in cricsheet.events(&match_id, None).iter().take(args.balls) {
        pipeline.handle(&Incoming::keyed(
            topics::MATCH_EVENTS,
            match_id.as_str(),
            event.to_json(),
        ));
        drop(pipeline.finish_batch());
    }
    let after = resident_bytes()?;
    let live = pipeline
        .contest(&contest_id)
        .map_or(0, |state| state.total());
    let per_entry = (after.saturating_sub(before)) as f64 / live.max(1) as f64;
    println!(
        "{{\"entries\":{live},\"rss_before\":{before},\"rss_after\":{after},\"bytes_per_entry\":{per_entry:.1}}}"
    );
    Ok(())
}
