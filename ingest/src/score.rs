//! `ingest score`: one Cricsheet match scored offline with the same engine
//! the live pipeline uses.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::scoring::score_match;
use leaderboard_service::config::RulesArgs;
use serde_json::json;

use leaderboard_service::cli::CliError;

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// A Cricsheet JSON match file; its name (e.g. 1136561.json) is the match id.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Score only the first N deliveries in file order (super overs excluded).
    #[arg(long, value_name = "N")]
    upto: Option<usize>,
    #[command(flatten)]
    rules: RulesArgs,
}

pub fn run(args: &ScoreArgs) -> Result<(), CliError> {
    let rules = args.rules.load().map_err(CliError::Input)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))
        .map_err(CliError::Input)?;
    let cricsheet = CricsheetMatch::from_json(&text)
        .with_context(|| args.file.display().to_string())
        .map_err(CliError::Input)?;
    let match_id = match_id_from_path(&args.file).map_err(|error| CliError::Input(error.into()))?;
    let scorer = score_match(Arc::new(rules), &match_id, &cricsheet, args.upto);
    let output = json!({
        "match": match_id.as_str(),
        "players": scorer.points_by_name(),
    });
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &output)
        .context("cannot write the result")
        .map_err(CliError::Failure)?;
    writeln!(stdout)
        .context("cannot write the result")
        .map_err(CliError::Failure)?;
    Ok(())
}
