//! `ws-gateway`: live ranks for every player over WebSockets, fed by Redis pub/sub.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leaderboard_service::shutdown;
use leaderboard_service::telemetry::TelemetryArgs;

#[derive(Debug, Parser)]
#[command(
    name = "ws-gateway",
    version,
    about = "WebSocket gateway: live contest ranks for players, fed by Redis pub/sub",
    long_about = "WebSocket gateway: live contest ranks for players, fed by Redis pub/sub.\n\n\
                  `serve` upgrades GET /v1/ws (subscribe / unsubscribe / ping; a snapshot, \
                  then an update whenever the contest's version moves), serves a web viewer \
                  at `/`, and /metrics, /healthz, /readyz on the same address."
)]
struct Cli {
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve WebSockets at /v1/ws, the viewer at /, and the admin routes.
    Serve(ServeArgs),
    /// Print the token that lets a client follow an entry (needs WS_TOKEN_SECRET).
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Listen address.
    #[arg(
        long = "http-addr",
        env = "HTTP_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    http_addr: SocketAddr,
    #[command(flatten)]
    redis: leaderboard_service::config::RedisArgs,
    #[command(flatten)]
    options: ws_gateway::GatewayOptions,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The contest.
    #[arg(long)]
    contest: leaderboard_core::ContestId,
    /// The entry.
    #[arg(long)]
    entry: leaderboard_core::EntryId,
    /// The node's secret.
    #[arg(long = "token-secret", env = "WS_TOKEN_SECRET", hide_env_values = true)]
    secret: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            cli.telemetry.init()?;
            let listener = tokio::net::TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("cannot listen on {}", args.http_addr))?;
            ws_gateway::run(
                listener,
                &args.redis.url,
                args.options,
                shutdown::on_signals(),
            )
            .await
        }
        Command::Token(args) => {
            let secret = ws_gateway::TokenSecret::new(&args.secret);
            println!(
                "{}",
                secret.sign(args.contest.as_str(), args.entry.as_str())
            );
            Ok(())
        }
    }
}
