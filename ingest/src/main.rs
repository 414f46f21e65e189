//! `ingest`: scores matches offline, replays them into Kafka, and runs the
//! consumer that moves match events and contest entries into Redis and the store.

mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leaderboard_service::cli::{self, CliError};
use leaderboard_service::shutdown;
use leaderboard_service::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(name = "ingest", version, about = "Match events and contest entries: scoring, replay and ingestion", long_about = None)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score one Cricsheet JSON match offline and print every player's points as JSON.
    Score(score::ScoreArgs),
    /// Publish Cricsheet matches to `match-events`, ball by ball.
    Replay(ingest::replay::ReplayArgs),
    /// Consume `match-events` and `contest-entries` into Redis and the durable store.
    Run(Box<ingest::run::RunArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Score(args) = &cli.command {
        return finish(score::run(args));
    }
    if let Err(error) = cli.telemetry.init() {
        return finish(Err(CliError::Input(error)));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return finish(Err(CliError::Failure(error.into()))),
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Score(_) => unreachable!("handled above"),
            Command::Replay(args) => ingest::replay::run(&args).await,
            Command::Run(args) => ingest::run::run(*args, shutdown::on_signals()).await,
        }
    });
    finish(outcome.map_err(CliError::Failure))
}

fn finish(outcome: Result<(), CliError>) -> ExitCode {
    cli::finish("ingest", outcome)
}
