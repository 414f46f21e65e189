//! `leaderboard`: the HTTP read API of the platform, and a CLI view of a
//! contest's live leaderboard.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leaderboard_service::shutdown;
use leaderboard_service::telemetry::TelemetryArgs;

/// mimalloc: per-thread free lists instead of glibc's arena locks, which a
/// request-per-allocation HTTP server otherwise contends on (measured in
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "leaderboard", version, about = "Leaderboard HTTP API: top pages, my rank, around me, match players", long_about = None)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP read API (leaderboards, my rank, around me, match
    /// players, /v1/openapi.json) and /metrics, /healthz, /readyz.
    Serve(ServeArgs),
    /// Print a contest's live leaderboard from the Redis hot state.
    Top(TopArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Listen address.
    #[arg(
        long = "http-addr",
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http_addr: SocketAddr,
    #[command(flatten)]
    redis: leaderboard_service::config::RedisArgs,
    #[command(flatten)]
    store: leaderboard_service::config::StoreArgs,
    #[command(flatten)]
    options: leaderboard::api::server::ServeOptions,
}

#[derive(Debug, clap::Args)]
struct TopArgs {
    /// The contest.
    #[arg(long)]
    contest: leaderboard_core::ContestId,
    /// Rows to skip.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Rows to print (1-200).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=200))]
    limit: u16,
    /// Print JSON (the read API's leaderboard shape) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    redis: leaderboard_service::config::RedisArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.telemetry.init()?;
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Top(args) => top(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let shutdown = shutdown::on_signals();
    leaderboard::api::server::run(
        listener,
        &args.redis.url,
        &args.store.store,
        args.options,
        shutdown,
    )
    .await
}

async fn top(args: TopArgs) -> anyhow::Result<()> {
    let mut connection = leaderboard_hot::connect(&args.redis.url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", args.redis.url))?;
    let page = leaderboard_hot::read_page(
        &mut connection,
        &args.contest,
        args.offset,
        usize::from(args.limit),
    )
    .await
    .context("cannot read the contest from Redis")?
    .ok_or_else(|| anyhow::anyhow!("contest `{}` is not in the hot state", args.contest))?;
    if args.json {
        println!("{}", serde_json::to_string(&page)?);
        return Ok(());
    }
    println!(
        "contest {} (match {}) version {} entries {}",
        page.contest_id, page.match_id, page.version, page.total
    );
    for row in &page.entries {
        println!(
            "{:>8}  {:<12} {:<10} {:>8}",
            row.rank,
            row.entry_id,
            row.user_id,
            row.points.to_string()
        );
    }
    Ok(())
}
