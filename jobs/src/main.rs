//! `jobs`: the authoritative DataFusion recompute of every contest's ranks.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use jobs::recompute::{JobError, Recomputer, Stage};
use jobs::schedule::ScheduleArgs;
use jobs::EngineArgs;
use leaderboard_core::ids::{ContestId, MatchId};
use leaderboard_hot::jobs as queue;
use leaderboard_service::cli::{self, CliError};
use leaderboard_service::config::{RedisArgs, RulesArgs, StoreArgs};
use leaderboard_service::shutdown;
use leaderboard_service::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(
    name = "jobs",
    version,
    about = "Authoritative rank recomputes (DataFusion) into the durable store",
    long_about = "Authoritative rank recomputes (DataFusion) into the durable store.\n\n\
                  A recompute re-derives a contest's player points from the stored event log, \
                  ranks every entry with DataFusion, publishes a new rank snapshot atomically, \
                  and reconciles it with the live ranks in Redis (rewriting them where they differ).\n\n\
                  `jobs recompute` runs one now; `jobs schedule` runs them every --every and on \
                  operators' requests (`jobs trigger`, or POST /v1/admin/contests/{contest}/recompute)."
)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute contests now, in this process; prints one JSON report per contest.
    Recompute(RecomputeArgs),
    /// Recompute every live contest on a schedule and run operators' requests
    /// (one active scheduler across nodes, through a lease in Redis).
    Schedule(Box<ScheduleArgs>),
    /// Ask the active scheduler to recompute a contest; prints the job id.
    Trigger(TriggerArgs),
    /// Show a job's state as JSON.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
#[group(id = "which", required = true, multiple = false)]
struct Which {
    /// One contest.
    #[arg(long, group = "which")]
    contest: Option<String>,
    /// Every contest of one match.
    #[arg(long = "match", group = "which")]
    match_id: Option<String>,
    /// Every contest whose match has not ended.
    #[arg(long, group = "which")]
    all_live: bool,
}

#[derive(Debug, clap::Args)]
struct RecomputeArgs {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    rules: RulesArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Do not compare with (or repair) the live ranks in Redis.
    #[arg(long)]
    no_reconcile: bool,
}

#[derive(Debug, clap::Args)]
struct TriggerArgs {
    /// The contest to recompute.
    #[arg(long)]
    contest: String,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Wait until the job is done or failed, then print it.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The job id (`jobs trigger` printed it).
    job_id: String,
    #[command(flatten)]
    redis: RedisArgs,
    /// Wait until the job is done or failed.
    #[arg(long)]
    wait: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = cli.telemetry.init() {
        return finish(Err(CliError::Input(error)));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return finish(Err(CliError::Failure(error.into()))),
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Recompute(args) => recompute(args).await,
            Command::Schedule(args) => jobs::schedule::run(*args, shutdown::on_signals())
                .await
                .map_err(CliError::Failure),
            Command::Trigger(args) => trigger(args).await,
            Command::Status(args) => status(args).await,
        }
    });
    finish(outcome)
}

async fn recompute(args: RecomputeArgs) -> Result<(), CliError> {
    let rules = Arc::new(args.rules.load().map_err(CliError::Input)?);
    let store = leaderboard_store::open(&args.store.store)
        .await
        .with_context(|| format!("cannot open the store {}", args.store.store))
        .map_err(CliError::Input)?;
    let contests: Vec<ContestId> = match (&args.which.contest, &args.which.match_id) {
        (Some(contest), _) => vec![ContestId::parse(contest)
            .with_context(|| format!("invalid --contest `{contest}`"))
            .map_err(CliError::Input)?],
        (None, Some(match_id)) => {
            let match_id = MatchId::parse(match_id)
                .with_context(|| format!("invalid --match `{match_id}`"))
                .map_err(CliError::Input)?;
            let listed = store.list_contests().await.map_err(failure)?;
            let of_match: Vec<ContestId> = listed
                .into_iter()
                .filter(|c| c.match_id == match_id)
                .map(|c| c.contest_id)
                .collect();
            if of_match.is_empty() {
                return Err(CliError::Input(anyhow::anyhow!(
                    "match `{match_id}` has no contests in the store"
                )));
            }
            of_match
        }
        (None, None) => {
            let listed = store.list_contests().await.map_err(failure)?;
            listed
                .into_iter()
                .filter(|c| !c.finished)
                .map(|c| c.contest_id)
                .collect()
        }
    };
    let redis = if args.no_reconcile {
        None
    } else {
        Some(
            leaderboard_hot::connect(&args.redis.url)
                .await
                .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))
                .map_err(CliError::Failure)?,
        )
    };
    let recomputer = Recomputer {
        store,
        redis,
        rules,
        engine: args.engine.options(),
        catch_up: args.engine.reconcile_wait.into(),
    };
    let terminal = std::io::stderr().is_terminal();
    let count = contests.len();
    let mut failed = 0;
    for (index, contest) in contests.iter().enumerate() {
        let label = format!("[{}/{count}] {contest}", index + 1);
        let progress = |stage: Stage| show_progress(&label, stage, terminal);
        match recomputer.contest(contest, &progress).await {
            Ok(report) => {
                if terminal {
                    eprint!("\r\x1b[2K");
                }
                eprintln!(
                    "{label}: {} rows at version {}, {} differences, {} ms (load {}, score {}, compute {}, write {}, redis {})",
                    report.rows,
                    report.version,
                    report
                        .differences
                        .map_or_else(|| "no".to_owned(), |d| d.to_string()),
                    report.timings.total_ms,
                    report.timings.load_ms,
                    report.timings.score_ms,
                    report.timings.compute_ms,
                    report.timings.write_ms,
                    report.timings.redis_ms,
                );
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("reports serialize")
                );
            }
            Err(JobError::UnknownContest(contest)) if count == 1 => {
                return Err(CliError::Input(anyhow::anyhow!(
                    "contest `{contest}` is unknown to the store"
                )));
            }
            Err(error) => {
                failed += 1;
                eprintln!("{label}: failed: {error}; the previous snapshot stays");
            }
        }
    }
    if count == 0 {
        eprintln!("no live contests to recompute");
    }
    if failed > 0 {
        return Err(CliError::Failure(anyhow::anyhow!(
            "{failed} of {count} recomputes failed"
        )));
    }
    Ok(())
}

fn show_progress(label: &str, stage: Stage, terminal: bool) {
    if !terminal {
        return;
    }
    let line = match stage {
        Stage::Load { done, total } => format!("load {done}/{total} entries"),
        Stage::Score => "score the event log".to_owned(),
        Stage::Rank { done, total } => format!("rank and write {done}/{total}"),
        Stage::Reconcile => "reconcile with Redis".to_owned(),
    };
    eprint!("\r\x1b[2K{label}: {line}");
}

async fn trigger(args: TriggerArgs) -> Result<(), CliError> {
    let contest = ContestId::parse(&args.contest)
        .with_context(|| format!("invalid --contest `{}`", args.contest))
        .map_err(CliError::Input)?;
    let store = leaderboard_store::open(&args.store.store)
        .await
        .with_context(|| format!("cannot open the store {}", args.store.store))
        .map_err(CliError::Input)?;
    let known = store
        .list_contests()
        .await
        .map_err(failure)?
        .iter()
        .any(|c| c.contest_id == contest);
    if !known {
        return Err(CliError::Input(anyhow::anyhow!(
            "contest `{contest}` is unknown to the store"
        )));
    }
    let mut connection = leaderboard_hot::connect(&args.redis.url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))
        .map_err(CliError::Failure)?;
    let (job_id, new) = queue::request_recompute(&mut connection, &contest, "cli")
        .await
        .context("cannot queue the recompute")
        .map_err(CliError::Failure)?;
    if !args.wait {
        println!("{}", serde_json::json!({ "job_id": job_id, "new": new }));
        return Ok(());
    }
    wait_for(&mut connection, &job_id).await
}

async fn status(args: StatusArgs) -> Result<(), CliError> {
    if !queue::valid_job_id(&args.job_id) {
        return Err(CliError::Input(anyhow::anyhow!(
            "`{}` is not a job id (they look like j42)",
            args.job_id
        )));
    }
    let mut connection = leaderboard_hot::connect(&args.redis.url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))
        .map_err(CliError::Failure)?;
    if args.wait {
        return wait_for(&mut connection, &args.job_id).await;
    }
    let job = queue::read_job(&mut connection, &args.job_id)
        .await
        .context("cannot read the job")
        .map_err(CliError::Failure)?
        .ok_or_else(|| CliError::Input(anyhow::anyhow!("job `{}` is unknown", args.job_id)))?;
    println!("{}", job.to_json());
    Ok(())
}

/// Polls the job until it is done or failed, showing its state.
async fn wait_for(
    connection: &mut leaderboard_hot::HotConnection,
    job_id: &str,
) -> Result<(), CliError> {
    let terminal = std::io::stderr().is_terminal();
    loop {
        let job = queue::read_job(connection, job_id)
            .await
            .context("cannot read the job")
            .map_err(CliError::Failure)?
            .ok_or_else(|| CliError::Input(anyhow::anyhow!("job `{job_id}` is unknown")))?;
        if !job.state.is_active() {
            if terminal {
                eprint!("\r\x1b[2K");
            }
            println!("{}", job.to_json());
            return match job.state {
                queue::JobState::Failed => Err(CliError::Failure(anyhow::anyhow!(
                    "job {job_id} failed: {}",
                    job.fields.get("error").map_or("", String::as_str)
                ))),
                _ => Ok(()),
            };
        }
        if terminal {
            eprint!("\r\x1b[2Kjob {job_id}: {}", job.state.as_str());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn failure(error: impl std::error::Error + Send + Sync + 'static) -> CliError {
    CliError::Failure(error.into())
}

fn finish(outcome: Result<(), CliError>) -> ExitCode {
    cli::finish("jobs", outcome)
}
