//! `leaderboard`: the HTTP read API of the platform.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leaderboard::service::telemetry::TelemetryArgs;
use leaderboard::service::{admin, shutdown};

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
    /// Serve HTTP. Today: the admin routes (/metrics, /healthz, /readyz); the
    /// contest read routes arrive with the read API.
    Serve(ServeArgs),
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.telemetry.init()?;
    match cli.command {
        Command::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let address = listener.local_addr()?;
    // Touch the statics so /metrics lists them from the first scrape.
    let _ = &*leaderboard::metrics::HTTP_REQUESTS;
    let app = admin::router(leaderboard::metrics::REGISTRY.clone(), Vec::new());
    tracing::info!(%address, "leaderboard listening");
    admin::serve(listener, app, shutdown::on_signals())
        .await
        .context("http server failed")?;
    tracing::info!("leaderboard stopped");
    Ok(())
}
