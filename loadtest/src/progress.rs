//! The live progress line of a running scenario: per stream, the last
//! second's rate, errors and p99 (indicatif on a terminal; a log line every
//! five seconds otherwise, so that CI and files see progress too).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::report::Recorder;

/// Shows progress until `stop` is cancelled.
pub fn spawn(
    recorder: Arc<Recorder>,
    scenario: &'static str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {wide_msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(scenario);
        let terminal = !bar.is_hidden();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seconds = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            seconds += 1;
            let line = recorder
                .last_second()
                .into_iter()
                .map(|(stream, rate, errors, p99)| {
                    format!("{stream} {rate}/s err {errors} p99 {p99:.1} ms")
                })
                .collect::<Vec<_>>()
                .join(" | ");
            if terminal {
                bar.set_message(line);
                bar.tick();
            } else if seconds % 5 == 0 {
                tracing::info!(scenario, seconds, progress = %line, "running");
            }
        }
        bar.finish_and_clear();
    })
}

/// A bar over a known count (entries published, …).
pub fn counter(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("a valid template"),
    );
    bar
}
