//! `loadtest matchday`: a live match day in one command, one report.
//!
//! 1. `setup`: the contests, on a fresh match id (so that the real match can
//!    be replayed again on a platform that has played it), waited for until
//!    ingest holds every entry;
//! 2. `ws`: the viewers connect;
//! 3. `ingest` replays the real match at --speed while `http` reads at
//!    --rate (open loop) for the match's length; the viewers time every frame.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leaderboard_core::cricsheet::match_id_from_path;
use leaderboard_core::MatchId;
use leaderboard_service::config::{KafkaArgs, RedisArgs};
use tokio_util::sync::CancellationToken;

use super::http::{HttpArgs, Mix, Shard};
use super::ingest::IngestArgs;
use super::setup::{Setup, SetupArgs};
use super::ws::WsArgs;
use super::BallClock;
use crate::progress;
use crate::report::{Recorder, Report, RunInfo};
use crate::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct MatchdayArgs {
    /// The real Cricsheet match the day replays.
    #[arg(long, value_name = "FILE")]
    pub match_file: PathBuf,
    /// Reuse the contests of an earlier `loadtest setup` instead of making new ones.
    #[arg(long, value_name = "PATH")]
    pub setup: Option<PathBuf>,
    /// Contests to create.
    #[arg(long, default_value_t = 10)]
    pub contests: usize,
    /// Entries per contest, a comma list cycled over the contests.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub entries: Vec<usize>,
    /// Times real speed of the replay (a delivery every 36 s at 1).
    #[arg(long, default_value_t = 60.0, value_name = "X")]
    pub speed: f64,
    /// Replay only the first N events of the match.
    #[arg(long)]
    pub events: Option<usize>,
    /// HTTP reads per second during the match (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// The weighted mix of HTTP routes.
    #[arg(long, default_value = "my-rank=70,page=20,around=10")]
    pub mix: Mix,
    /// HTTP keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub http_connections: usize,
    /// WebSocket viewers.
    #[arg(long, default_value_t = 500)]
    pub ws_connections: usize,
    /// The read API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// The gateway.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub gateway: String,
    /// The gateway's entry-token secret, when it has one.
    #[arg(long, env = "WS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// The report folder (default `reports/matchday-<unix time>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn matchday(args: MatchdayArgs) -> anyhow::Result<()> {
    let out = super::default_out("matchday", &args.out);
    let setup_path = match &args.setup {
        Some(path) => path.clone(),
        None => {
            // A fresh match id: the real match replayed as a new one.
            let file_id = match_id_from_path(&args.match_file)
                .map_err(|e| BadInput(format!("--match-file: {e:#}")))?;
            let match_id =
                MatchId::parse(&format!("{file_id}-md{}", crate::report::unix_now() as u64))?;
            let setup_out = out.join("setup");
            super::setup::setup(SetupArgs {
                match_file: args.match_file.clone(),
                match_id: Some(match_id),
                contests: args.contests,
                entries: args.entries.clone(),
                prefix: format!("md{}-", crate::report::unix_now() as u64 % 1_000_000),
                seed: 42,
                wait: true,
                partitions: args.partitions,
                out: setup_out.clone(),
                kafka: args.kafka.clone(),
                redis: args.redis.clone(),
            })
            .await?;
            setup_out
        }
    };
    let setup = Setup::load(&setup_path)?;
    let events = {
        let ingest = IngestArgs {
            files: Vec::new(),
            setup: Some(setup_path.clone()),
            speed: args.speed,
            events: args.events,
            partitions: args.partitions,
            out: None,
            kafka: args.kafka.clone(),
            redis: args.redis.clone(),
        };
        let plan = super::ingest::plan(&ingest)?;
        (ingest, plan.matches[0].1.len())
    };
    let (ingest_args, event_count) = events;
    anyhow::ensure!(
        args.speed > 0.0 && args.speed.is_finite(),
        BadInput(format!("--speed must be a number > 0, not {}", args.speed))
    );
    let match_seconds = event_count as f64 * ingest::replay::REAL_SECONDS_PER_DELIVERY / args.speed;

    let recorder = Arc::new(Recorder::new());
    let clock = Arc::new(BallClock::default());
    let stop = super::interrupt();
    let shown = CancellationToken::new();
    let progress = progress::spawn(recorder.clone(), "matchday", shown.clone());
    let started_unix = crate::report::unix_now();
    let started = Instant::now();
    let cpu_before = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(0.0);

    let ws_args = WsArgs {
        gateway: args.gateway.clone(),
        connections: args.ws_connections,
        setup: Some(setup_path.clone()),
        follow: 0.8,
        top: 10,
        sources: 8,
        duration: Duration::from_secs_f64(match_seconds),
        speed: args.speed,
        token_secret: args.token_secret.clone(),
        out: None,
        partitions: args.partitions,
        kafka: args.kafka.clone(),
        redis: args.redis.clone(),
    };
    let viewers_stop = stop.child_token();
    let viewers = {
        let (setup, recorder, clock, viewers_stop) = (
            setup.clone(),
            recorder.clone(),
            clock.clone(),
            viewers_stop.clone(),
        );
        tokio::spawn(async move {
            super::ws::drive(&ws_args, &setup, recorder, clock, viewers_stop).await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let http_args = HttpArgs {
        target: args.api.clone(),
        contests: Vec::new(),
        setup: Some(setup_path.clone()),
        rate: args.rate,
        duration: Duration::from_secs_f64(match_seconds.max(1.0)),
        ramp: Duration::ZERO,
        steps: None,
        mix: args.mix.clone(),
        connections: args.http_connections,
        timeout: Duration::from_secs(5),
        shard: Shard { index: 1, count: 1 },
        seed: 7,
        out: None,
    };
    let readers_stop = stop.child_token();
    let readers = {
        let (recorder, readers_stop) = (recorder.clone(), readers_stop.clone());
        tokio::spawn(async move { super::http::drive(&http_args, recorder, readers_stop).await })
    };
    let replayed = super::ingest::drive(&ingest_args, recorder.clone(), clock, stop.clone()).await;
    readers_stop.cancel();
    viewers_stop.cancel();
    let read = readers.await?;
    let viewed = viewers.await?;
    shown.cancel();
    let _ = progress.await;
    let mut notes = vec![format!(
        "match day: {} contests ({} entries) of match {}, {event_count} events at {}× ({match_seconds:.0} s)",
        setup.contests.len(),
        setup.contests.iter().map(|c| c.entries).sum::<usize>(),
        setup.match_id,
        args.speed
    )];
    notes.extend(replayed?.notes);
    notes.extend(read?.notes);
    notes.extend(viewed?.1);
    let cpu_after = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(cpu_before);
    let report = Report::new(
        RunInfo {
            scenario: "matchday".into(),
            shards: vec!["1/1".into()],
            started_unix,
            duration_s: started.elapsed().as_secs_f64(),
            target_rate: Some(args.rate),
            harness_cpu_s: cpu_after - cpu_before,
            notes,
        },
        recorder.snapshot(),
    );
    super::publish(&report, &out)
}
