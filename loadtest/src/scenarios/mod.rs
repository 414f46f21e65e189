//! The harness's scenarios, and what they share: the report folder, the
//! progress line and the clock of produced balls.

pub mod http;
pub mod ingest;
pub mod matchday;
pub mod setup;
pub mod ws;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use leaderboard_core::MatchId;
use tokio_util::sync::CancellationToken;

use crate::progress;
use crate::report::{Recorder, Report, RunInfo};

/// When each match's balls were produced, so that a notice or a frame can be
/// timed from the ball it carries: the latest ball of its match produced
/// before it arrived. Exact while balls are further apart than the
/// ball → frame latency (at 60× real speed a ball every 0.6 s).
#[derive(Debug, Default)]
pub struct BallClock {
    produced: RwLock<HashMap<MatchId, Vec<Instant>>>,
}

impl BallClock {
    pub fn produced(&self, match_id: &MatchId, at: Instant) {
        self.produced
            .write()
            .expect("ball clock lock")
            .entry(match_id.clone())
            .or_default()
            .push(at);
    }

    /// The produce time of the latest ball of `match_id` produced before `at`.
    pub fn ball_before(&self, match_id: &MatchId, at: Instant) -> Option<Instant> {
        let produced = self.produced.read().expect("ball clock lock");
        let balls = produced.get(match_id)?;
        let after = balls.partition_point(|&ball| ball <= at);
        after.checked_sub(1).map(|i| balls[i])
    }
}

/// The default report folder of a scenario: `reports/<scenario>-<unix time>`.
pub fn default_out(scenario: &str, out: &Option<PathBuf>) -> PathBuf {
    out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "reports/{scenario}-{}",
            crate::report::unix_now() as u64
        ))
    })
}

/// Writes the report, prints its table and where it is; fails when nothing
/// succeeded at all (a bad target), after the report is written.
pub fn publish(report: &Report, out: &Path) -> anyhow::Result<()> {
    report.write(out)?;
    print!("{}", report.table());
    println!("report: {}", out.join("report.html").display());
    let ok: u64 = report.summary.streams.iter().map(|s| s.ok).sum();
    let mut errors = std::collections::BTreeMap::<&str, u64>::new();
    for stream in &report.summary.streams {
        for (kind, count) in &stream.errors {
            *errors.entry(kind).or_default() += count;
        }
    }
    if ok == 0 {
        let kinds = errors
            .iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect::<Vec<_>>()
            .join(", ");
        anyhow::bail!(
            "nothing succeeded ({}); the report is in {}",
            if kinds.is_empty() {
                "nothing was measured".to_owned()
            } else {
                kinds
            },
            out.display()
        );
    }
    Ok(())
}

/// Cancelled on Ctrl-C: the run stops early and still writes its report.
pub fn interrupt() -> CancellationToken {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    stop
}

async fn run_one<F>(scenario: &'static str, out: PathBuf, drive: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(Arc<Recorder>, CancellationToken) -> anyhow::Result<RunInfo>,
{
    let recorder = Arc::new(Recorder::new());
    let stop = interrupt();
    let shown = CancellationToken::new();
    let progress = progress::spawn(recorder.clone(), scenario, shown.clone());
    let outcome = drive(recorder.clone(), stop).await;
    shown.cancel();
    let _ = progress.await;
    let info = outcome?;
    publish(&Report::new(info, recorder.snapshot()), &out)
}

pub async fn run_http(args: http::HttpArgs) -> anyhow::Result<()> {
    let out = default_out("http", &args.out);
    run_one("http", out, async |recorder, stop| {
        http::drive(&args, recorder, stop).await
    })
    .await
}

pub async fn run_ws(args: ws::WsArgs) -> anyhow::Result<()> {
    let out = default_out("ws", &args.out);
    run_one("ws", out, async |recorder, stop| {
        ws::run_alone(&args, recorder, stop).await
    })
    .await
}

pub async fn run_ingest(args: ingest::IngestArgs) -> anyhow::Result<()> {
    let out = default_out("ingest", &args.out);
    run_one("ingest", out, async |recorder, stop| {
        let clock = Arc::new(BallClock::default());
        ingest::drive(&args, recorder, clock, stop).await
    })
    .await
}
