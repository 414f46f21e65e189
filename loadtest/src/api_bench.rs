//! Read API benchmark helpers: a contest of N entries written to Redis through
//! the real pipeline, and a bare hyper server that answers fixed bytes (the
//! per-node ceiling the API is compared with).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ingest::pipeline::{Incoming, Pipeline};
use ingest::topics;
use leaderboard_core::contest::ContestMessage;
use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
use leaderboard_core::{ContestId, Rules};
use leaderboard_hot::{self as hot, HotWriter};
use leaderboard_service::config::RedisArgs;
use leaderboard_service::http;

#[derive(Debug, clap::Args)]
pub struct FillArgs {
    /// The Cricsheet match: its players form the squad and its events are applied.
    #[arg(long, value_name = "FILE")]
    match_file: PathBuf,
    /// Contest id.
    #[arg(long, default_value = "bench")]
    contest: ContestId,
    /// Entries.
    #[arg(long, default_value_t = 1_000_000)]
    entries: usize,
    #[command(flatten)]
    redis: RedisArgs,
}

/// Builds the contest and the whole match in the pipeline, in process, and
/// writes the result to Redis as a rebuild does.
pub async fn fill(args: FillArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.match_file)
        .with_context(|| args.match_file.display().to_string())?;
    let cricsheet = CricsheetMatch::from_json(&text)?;
    let match_id = match_id_from_path(&args.match_file)?;
    let record = ingest::contests::contest(
        &args.contest,
        &match_id,
        cricsheet.info.players.clone(),
        u64::MAX,
    );
    let entries = ingest::contests::entries(&record, args.entries, 42);
    let started = Instant::now();
    let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
    let incoming = |topic: &str, payload: Vec<u8>| Incoming {
        topic: topic.to_owned(),
        partition: 0,
        offset: 0,
        key: None,
        payload,
        produced_ms: None,
    };
    pipeline.handle(&incoming(
        topics::CONTEST_ENTRIES,
        ContestMessage::Contest(record).to_json(),
    ));
    for entry in entries {
        pipeline.handle(&incoming(
            topics::CONTEST_ENTRIES,
            ContestMessage::Entry(entry).to_json(),
        ));
    }
    for event in cricsheet.events(&match_id, None) {
        pipeline.handle(&incoming(topics::MATCH_EVENTS, event.to_json()));
    }
    let _ = pipeline.finish_batch();
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "contest built");
    let (matches, contests) = pipeline.full_refresh();
    let mut writer = HotWriter::new(hot::connect(&args.redis.url).await?, 1);
    writer.write(&matches, &contests).await?;
    // The sorted sets are written in the background: wait for them.
    writer.settled().await;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        entries = args.entries,
        "contest written to Redis"
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BareArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// The bytes every response carries (e.g. a saved API answer).
    #[arg(long, value_name = "FILE")]
    body: PathBuf,
    /// 1: the plain hyper server (connections spawned on the multi-threaded
    /// runtime, the baseline); N > 1: served the way
    /// `leaderboard serve` serves, one single-threaded event loop per thread.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The status every response carries (e.g. 500: a failing target for the
    /// harness's own tests).
    #[arg(long, default_value_t = 200)]
    status: u16,
}

/// A hyper HTTP/1.1 server answering every request with the same bytes.
pub async fn bare_server(args: BareArgs) -> anyhow::Result<()> {
    let body =
        Bytes::from(std::fs::read(&args.body).with_context(|| args.body.display().to_string())?);
    let status = hyper::StatusCode::from_u16(args.status)
        .map_err(|_| crate::BadInput(format!("--status {}: not an HTTP status", args.status)))?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(address = %args.addr, bytes = body.len(), threads = args.threads, "bare server listening");
    let answer = move |stream: tokio::net::TcpStream| {
        let body = body.clone();
        async move {
            let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    };
    if args.threads > 1 {
        let never = tokio_util::sync::CancellationToken::new();
        let serve = move |stream, _peer, _shutdown| answer(stream);
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(100_000));
        http::serve_per_thread(listener, args.threads, permits, never, serve).await?;
        return Ok(());
    }
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(answer(stream));
    }
}
