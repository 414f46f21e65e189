//! `jobs`: the authoritative DataFusion recompute of every contest's ranks.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "jobs",
    version,
    about = "Authoritative rank recomputes (DataFusion) into the durable store",
    long_about = "Authoritative rank recomputes (DataFusion) into the durable store.\n\n\
                  `jobs recompute [--contest ID]` and `jobs schedule [--every 5m]` arrive with the \
                  recompute work; this build only describes itself."
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "jobs {}: no command given; see --help",
        env!("CARGO_PKG_VERSION")
    );
}
