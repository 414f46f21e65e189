//! `ingest`: scores matches offline and (with the live pipeline) moves match
//! events and contest entries from Kafka into the hot and durable stores.

mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ingest", version, about = "Match events and contest entries: scoring and ingestion", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score one Cricsheet JSON match offline and print every player's points as JSON.
    Score(score::ScoreArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Score(args) => score::run(&args),
    };
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
