//! `loadtest`: the load harness load testers run against the platform, and
//! the developer benchmarks behind `docs/benchmarks.md`.
//!
//! The scenarios (`setup`, `http`, `ws`, `ingest`, `matchday`, and `merge`
//! of sharded runs) each show a live progress line, print a summary table and
//! write a report folder (`report/`: HDR interval log, `summary.json`,
//! `report.html` with SVG plots). Crates: hdrhistogram (HdrHistogram's
//! format, exact merges), indicatif (progress), plotters (SVG plots),
//! async-channel (one queue of due requests for all connections).

mod api_bench;
mod latency;
mod memory;
mod progress;
mod report;
mod scenarios;
mod ws_bench;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::ContestId;
use leaderboard_service::config::KafkaArgs;
use leaderboard_service::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load harness: contests of generated entries, scenarios and reports",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Contests of generated entries at scale (1K to 10M each), with realistic
    /// teams (popular players and captains, many identical teams), published
    /// through `contest-entries`; writes `setup.json` for the other scenarios.
    Setup(scenarios::setup::SetupArgs),
    /// Open-loop HTTP load at a target rate (ramps, steps, shards): a weighted
    /// mix of my-rank, leaderboard pages and around-me; latency counts from
    /// each request's scheduled time.
    Http(scenarios::http::HttpArgs),
    /// N WebSocket connections over the contests (followed entries too),
    /// timing ball → client frame from each ball's produce time.
    Ws(scenarios::ws::WsArgs),
    /// Replays real matches at X speed against the contests, timing ball →
    /// contest notice.
    Ingest(scenarios::ingest::IngestArgs),
    /// A live match day in one command: setup, then ingest, http and ws
    /// together during the replayed matches; one report.
    Matchday(scenarios::matchday::MatchdayArgs),
    /// Merge the report folders of the shards of one run into one report.
    Merge(MergeArgs),
    /// Publish a contest over a Cricsheet match's players, with N random valid entries.
    Contest(ContestArgs),
    /// Time from producing a ball to the contest's pub/sub notice (needs `ingest run`).
    NoticeLatency(latency::NoticeLatencyArgs),
    /// Bulk-write a contest of N entries into Redis with the hot-state writer.
    RedisBulk(latency::RedisBulkArgs),
    /// Events per second through `ingest run`: replay matches, wait for the last seq in Redis.
    Throughput(latency::ThroughputArgs),
    /// Write a contest of N entries and a whole real match straight into Redis (no Kafka).
    Fill(api_bench::FillArgs),
    /// A bare hyper server answering fixed bytes: the per-node HTTP ceiling.
    BareServer(api_bench::BareArgs),
    /// WebSocket gateway benchmark: N idle connections from several source
    /// addresses (gateway RSS per connection), then contest updates fanned out
    /// to all of them (delivery latency, deliveries per second and per CPU-second).
    WsFanout(ws_bench::FanoutArgs),
    /// Follow a contest through the gateway like a player; one line per frame.
    WsWatch(ws_bench::WatchArgs),
    /// Resident memory of ingest's live state per entry (a contest of N entries, balls applied).
    IngestMemory(memory::IngestMemoryArgs),
}

#[derive(Debug, clap::Args)]
struct ContestArgs {
    /// The Cricsheet match whose players form the squad (its file name is the match id).
    #[arg(long, value_name = "FILE")]
    match_file: PathBuf,
    /// Contest id.
    #[arg(long, default_value = "c1")]
    contest: ContestId,
    /// Attach the contest to this match id instead of the file's (a synthetic
    /// match for `notice-latency`).
    #[arg(long)]
    match_id: Option<leaderboard_core::MatchId>,
    /// Entries to generate.
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// Seed of the generated teams.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    partitions: i32,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Debug, clap::Args)]
struct MergeArgs {
    /// The shards' report folders.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Where the merged report goes.
    #[arg(long, default_value = "reports/merged")]
    out: PathBuf,
}

/// Input the user must change (exit 2, as the contract fixes).
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadtest: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli)).map_err(|error| {
        if error.downcast_ref::<BadInput>().is_some() {
            leaderboard_service::cli::CliError::Input(error)
        } else {
            leaderboard_service::cli::CliError::Failure(error)
        }
    });
    leaderboard_service::cli::finish("loadtest", outcome)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cli.telemetry.init()?;
    match cli.command {
        Command::Setup(args) => scenarios::setup::setup(args).await.map(|_| ()),
        Command::Http(args) => scenarios::run_http(args).await,
        Command::Ws(args) => scenarios::run_ws(args).await,
        Command::Ingest(args) => scenarios::run_ingest(args).await,
        Command::Matchday(args) => scenarios::matchday::matchday(args).await,
        Command::Merge(args) => {
            let report = report::merge(&args.dirs)?;
            scenarios::publish(&report, &args.out)
        }
        Command::Contest(args) => contest(args).await,
        Command::NoticeLatency(args) => latency::notice_latency(args).await,
        Command::RedisBulk(args) => latency::redis_bulk(args).await,
        Command::Throughput(args) => latency::throughput(args).await,
        Command::Fill(args) => api_bench::fill(args).await,
        Command::BareServer(args) => api_bench::bare_server(args).await,
        Command::WsFanout(args) => ws_bench::fanout(args).await,
        Command::WsWatch(args) => ws_bench::watch(args).await,
        Command::IngestMemory(args) => {
            tokio::task::spawn_blocking(move || memory::ingest_memory(args)).await?
        }
    }
}

async fn contest(args: ContestArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.match_file)
        .with_context(|| format!("cannot read {}", args.match_file.display()))?;
    let cricsheet =
        CricsheetMatch::from_json(&text).with_context(|| args.match_file.display().to_string())?;
    let match_id = match_id_from_path(&args.match_file)?;
    let match_id = args.match_id.clone().unwrap_or(match_id);
    let record = ingest::contests::contest(
        &args.contest,
        &match_id,
        cricsheet.info.players.clone(),
        10_000_000,
    );
    let entries = ingest::contests::entries(&record, args.entries, args.seed);
    ingest::topics::ensure(&args.kafka.brokers, &ingest::topics::ALL, args.partitions).await?;
    ingest::contests::publish(&args.kafka.brokers, &record, &entries).await
}
