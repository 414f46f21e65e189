//! `ws-gateway`: live ranks for every player over WebSockets, fed by Redis pub/sub.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "ws-gateway",
    version,
    about = "WebSocket gateway: live contest ranks for players, fed by Redis pub/sub",
    long_about = "WebSocket gateway: live contest ranks for players, fed by Redis pub/sub.\n\n\
                  The `serve` command (GET /v1/ws and the web viewer) arrives with the gateway work; \
                  this build only describes itself."
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "ws-gateway {}: no command given; see --help",
        env!("CARGO_PKG_VERSION")
    );
}
