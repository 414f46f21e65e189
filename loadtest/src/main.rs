//! `loadtest`: scenarios and open-loop load against the platform's services.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load harness: scenarios, open-loop load, latency histograms and reports",
    long_about = "Load harness: scenarios, open-loop load, latency histograms and reports.\n\n\
                  Scenarios arrive with the read API and gateway work; this build only describes itself."
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "loadtest {}: no command given; see --help",
        env!("CARGO_PKG_VERSION")
    );
}
