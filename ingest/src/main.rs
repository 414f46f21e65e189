//! `ingest`: scores matches offline, replays them into Kafka, and runs the
//! consumer that moves match events and contest entries into Redis and the store.

mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ingest: {}", error.message());
            ExitCode::from(error.exit_code())
        }
    }
}

/// A failure at the binary edge: bad input exits 2, anything else 1.
#[derive(Debug)]
pub enum CliError {
    /// The user's input cannot be used (not a match, unreadable file, bad rules).
    Input(anyhow::Error),
    /// Anything else.
    Failure(anyhow::Error),
}

impl CliError {
    fn message(&self) -> String {
        let error = match self {
            CliError::Input(error) | CliError::Failure(error) => error,
        };
        // One line: the whole context chain, joined.
        format!("{error:#}").replace('\n', " ")
    }

    fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Failure(_) => 1,
        }
    }
}
