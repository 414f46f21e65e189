//! `loadtest ws`: N WebSocket connections to the gateway, spread over the
//! contests (bigger contests get more viewers) with a share following an
//! entry, timing every update frame from the produce time of the ball it
//! carries (`ws.ball-to-client`) and each subscription's snapshot from its
//! connect (`ws.subscribe`).
//!
//! Alone, the scenario needs balls to time: it replays the setup's real match
//! at --speed, as `loadtest ingest` does, in the same process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use leaderboard_core::MatchId;
use leaderboard_service::config::{KafkaArgs, RedisArgs};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ws_gateway::token::TokenSecret;

use super::http::ContestTarget;
use super::setup::Setup;
use super::BallClock;
use crate::report::{Recorder, RunInfo};
use crate::BadInput;

#[derive(Debug, Clone, clap::Args)]
pub struct WsArgs {
    /// The gateway (`ws-gateway serve`), or a load balancer in front of it.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub gateway: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// The folder or `setup.json` of `loadtest setup`: its contests, and its
    /// match as the ball source.
    #[arg(long, value_name = "PATH")]
    pub setup: Option<PathBuf>,
    /// The share of connections that follow an entry (their own rank) besides the top.
    #[arg(long, default_value_t = 0.8)]
    pub follow: f64,
    /// Rows of the top each connection asks for.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Spread the connections over source addresses 127.0.0.1 … 127.0.0.N
    /// (a loopback gateway only): each has its own ephemeral ports.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// How long to stay connected (alone: at most the replay's length).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Times real speed of the ball source (the setup's match replayed).
    #[arg(long, default_value_t = 60.0, value_name = "X")]
    pub speed: f64,
    /// The gateway's entry-token secret, when it has one: followed entries get their token.
    #[arg(long, env = "WS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// The report folder (default `reports/ws-<unix time>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Partitions of topics created when missing.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// What the harness reads of a server frame.
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    code: Option<String>,
}

/// One viewer: which contest, which entry (if any).
#[derive(Debug, Clone)]
struct Viewer {
    contest: ContestTarget,
    match_id: MatchId,
    entry: Option<usize>,
}

async fn open(
    gateway: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(gateway).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{gateway}/v1/ws");
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(socket)
}

#[allow(clippy::too_many_arguments)]
async fn viewer(
    viewer: Viewer,
    gateway: SocketAddr,
    source: Option<IpAddr>,
    top: usize,
    secret: Option<Arc<TokenSecret>>,
    recorder: Arc<Recorder>,
    clock: Arc<BallClock>,
    connecting: Arc<Semaphore>,
    open_at_end: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let socket = {
        let _permit = connecting.acquire().await;
        tokio::time::timeout(Duration::from_secs(10), open(gateway, source)).await
    };
    let mut socket = match socket {
        Ok(Ok(socket)) => socket,
        Ok(Err(_)) => return recorder.error("ws.subscribe", "connect", Instant::now()),
        Err(_) => return recorder.error("ws.subscribe", "timeout", Instant::now()),
    };
    let contest = viewer.contest.contest_id.as_str();
    let mut subscribe = serde_json::json!({"op": "subscribe", "contest_id": contest, "top": top});
    if let Some(entry) = viewer.entry {
        let entry_id = format!("e{entry}");
        if let Some(secret) = &secret {
            subscribe["token"] = secret.sign(contest, &entry_id).into();
        }
        subscribe["entry_id"] = entry_id.into();
    }
    if socket
        .send(Message::text(subscribe.to_string()))
        .await
        .is_err()
    {
        return recorder.error("ws.subscribe", "io", Instant::now());
    }
    let mut version: Option<u64> = None;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => {
                // Still connected when the run ended.
                open_at_end.fetch_add(1, Ordering::Relaxed);
                break;
            }
            message = socket.next() => message,
        };
        let now = Instant::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                recorder.error("ws.ball-to-client", &format!("ws_close_{code}"), now);
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                recorder.error("ws.ball-to-client", "io", now);
                break;
            }
        };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            recorder.error("ws.ball-to-client", "bad_frame", now);
            continue;
        };
        match frame.kind.as_str() {
            "snapshot" | "update" => {
                if version.is_none() {
                    recorder.ok("ws.subscribe", now - started, now);
                } else if version.is_some_and(|v| frame.version > v) {
                    if let Some(ball) = clock.ball_before(&viewer.match_id, now) {
                        recorder.ok("ws.ball-to-client", now - ball, now);
                    }
                }
                version = Some(version.map_or(frame.version, |v| v.max(frame.version)));
            }
            "error" => {
                let code = frame.code.unwrap_or_else(|| "unknown".into());
                recorder.error("ws.subscribe", &format!("ws_error_{code}"), now);
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
}

/// Opens the connections and keeps them until `stop`; returns how many were
/// still open then (each viewer counts itself as it sees the stop).
pub async fn drive(
    args: &WsArgs,
    setup: &Setup,
    recorder: Arc<Recorder>,
    clock: Arc<BallClock>,
    stop: CancellationToken,
) -> anyhow::Result<(usize, Vec<String>)> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.follow),
        BadInput(format!(
            "--follow is a share from 0 to 1, not {}",
            args.follow
        ))
    );
    anyhow::ensure!(
        !setup.contests.is_empty(),
        BadInput("the setup names no contests".into())
    );
    let gateway: SocketAddr = tokio::net::lookup_host(&args.gateway)
        .await
        .map_err(|e| BadInput(format!("--gateway `{}`: {e}", args.gateway)))?
        .next()
        .ok_or_else(|| BadInput(format!("--gateway `{}` resolves to nothing", args.gateway)))?;
    let loopback = gateway.ip().is_loopback() && args.sources > 1;
    let secret = args
        .token_secret
        .as_deref()
        .map(|s| Arc::new(TokenSecret::new(s)));
    let by_size = WeightedIndex::new(setup.contests.iter().map(|c| c.entries as f64))?;
    let mut rng = StdRng::seed_from_u64(17);
    let connecting = Arc::new(Semaphore::new(256));
    let open_at_end = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(args.connections);
    for n in 0..args.connections {
        let contest = &setup.contests[by_size.sample(&mut rng)];
        let entry = rng
            .random_bool(args.follow)
            .then(|| rng.random_range(1..=contest.entries));
        let source = loopback.then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (n % usize::from(args.sources)) as u8,
            ))
        });
        tasks.push(tokio::spawn(viewer(
            Viewer {
                contest: ContestTarget {
                    contest_id: contest.contest_id.clone(),
                    entries: contest.entries,
                },
                match_id: setup.match_id.clone(),
                entry,
            },
            gateway,
            source,
            args.top,
            secret.clone(),
            recorder.clone(),
            clock.clone(),
            connecting.clone(),
            open_at_end.clone(),
            stop.clone(),
        )));
    }
    stop.cancelled().await;
    for task in tasks {
        let _ = task.await;
    }
    let at_end = open_at_end.load(Ordering::Relaxed);
    let notes = vec![format!(
        "{} connections to {} over {} contests ({}% following an entry, top {}): {at_end} open at the end",
        args.connections,
        args.gateway,
        setup.contests.len(),
        (args.follow * 100.0).round(),
        args.top
    )];
    Ok((at_end, notes))
}

/// The scenario alone: the connections, and the setup's match replayed as the ball source.
pub async fn run_alone(
    args: &WsArgs,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> anyhow::Result<RunInfo> {
    let path = args
        .setup
        .as_ref()
        .ok_or_else(|| BadInput("--setup PATH: the contests to watch and their match".into()))?;
    let setup = Setup::load(path).map_err(|e| BadInput(format!("--setup: {e:#}")))?;
    let clock = Arc::new(BallClock::default());
    let started_unix = crate::report::unix_now();
    let started = Instant::now();
    let cpu_before = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(0.0);
    let viewers_stop = stop.child_token();
    let viewers = {
        let (args, setup, recorder, clock, viewers_stop) = (
            args.clone(),
            setup.clone(),
            recorder.clone(),
            clock.clone(),
            viewers_stop.clone(),
        );
        tokio::spawn(async move { drive(&args, &setup, recorder, clock, viewers_stop).await })
    };
    // Let the connections open before the first ball.
    tokio::time::sleep(Duration::from_secs(2).min(args.duration)).await;
    let replay = super::ingest::IngestArgs {
        files: Vec::new(),
        setup: Some(path.clone()),
        speed: args.speed,
        events: None,
        partitions: args.partitions,
        out: None,
        kafka: args.kafka.clone(),
        redis: args.redis.clone(),
    };
    let replay_stop = stop.child_token();
    let deadline = {
        let replay_stop = replay_stop.clone();
        let rest = args.duration.saturating_sub(started.elapsed());
        tokio::spawn(async move {
            tokio::time::sleep(rest).await;
            replay_stop.cancel();
        })
    };
    let replayed = super::ingest::drive(&replay, recorder.clone(), clock, replay_stop).await;
    deadline.abort();
    viewers_stop.cancel();
    let (_, mut notes) = viewers.await??;
    notes.extend(replayed?.notes);
    let cpu_after = crate::report::process_cpu_seconds(std::process::id()).unwrap_or(cpu_before);
    Ok(RunInfo {
        scenario: "ws".into(),
        shards: vec!["1/1".into()],
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        target_rate: None,
        harness_cpu_s: cpu_after - cpu_before,
        notes,
    })
}
