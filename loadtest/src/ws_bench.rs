//! WebSocket gateway scenarios: `ws-fanout` (idle connections and one
//! contest update fanned out to all of them) and `ws-watch` (one player's
//! view, a line per frame).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use leaderboard_core::ContestId;
use leaderboard_hot as hot;
use leaderboard_service::config::RedisArgs;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// The gateway's address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    gateway: SocketAddr,
    /// The gateway's process id, to read its resident memory and CPU time.
    #[arg(long)]
    gateway_pid: u32,
    /// Connections to open.
    #[arg(long, default_value_t = 20_000)]
    connections: usize,
    /// Source addresses 127.0.0.1 … 127.0.0.N the connections are spread over
    /// (each has its own ephemeral ports).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// The contest every connection follows (already in Redis, e.g. by `loadtest fill`).
    #[arg(long, default_value = "bench")]
    contest: ContestId,
    /// Rows of the top each connection asks for.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Contest updates to fan out, one after the other.
    #[arg(long, default_value_t = 5)]
    updates: usize,
    #[command(flatten)]
    redis: RedisArgs,
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// The `version` of a state frame, without parsing the whole frame.
/// The gateway's `ws_fanout_seconds` histogram: (sum, count), from its `/metrics`.
async fn gateway_fanout_seconds(gateway: SocketAddr) -> anyhow::Result<(f64, u64)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(gateway).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, gateway.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .with_context(|| format!("{name} is not in the gateway's /metrics"))
    };
    Ok((
        value("ws_fanout_seconds_sum")?,
        value("ws_fanout_seconds_count")? as u64,
    ))
}

fn frame_version(text: &str) -> Option<u64> {
    let rest = &text[text.find("\"version\":")? + 10..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let mut redis = hot::connect(&args.redis.url).await?;
    let meta_key = hot::contest_meta_key(&args.contest);
    let version: Option<u64> = redis::AsyncCommands::hget(&mut redis, &meta_key, "version").await?;
    let version = version
        .with_context(|| format!("contest `{}` is not in Redis (loadtest fill)", args.contest))?;

    let base_rss = rss(args.gateway_pid)?;
    println!("gateway RSS before: {:.1} MiB", base_rss as f64 / 1048576.0);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let url = format!("ws://{}/v1/ws", args.gateway);
    // Each client notes when it received the version under test in its own
    // slot (microseconds since `started`): no channel, no wake-up per frame.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let arrivals: Arc<[AtomicU64]> = (0..args.connections).map(|_| AtomicU64::new(0)).collect();
    let received = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let subscribe = Arc::new(tokio::sync::Notify::new());
    let subscribed = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for n in 0..args.connections {
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (n % args.sources.max(1) as usize) as u8,
        ));
        let (url, gateway, opened, failed, subscribe, subscribed, handshakes) = (
            url.clone(),
            args.gateway,
            opened.clone(),
            failed.clone(),
            subscribe.clone(),
            subscribed.clone(),
            handshakes.clone(),
        );
        let (expected, arrivals, received) = (expected.clone(), arrivals.clone(), received.clone());
        let request =
            serde_json::json!({"op":"subscribe","contest_id":args.contest.as_str(),"top":args.top})
                .to_string();
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire().await?;
            let connected = async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(source, 0))?;
                let stream = socket.connect(gateway).await?;
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
                anyhow::Ok(ws)
            };
            let mut ws = match connected.await {
                Ok(ws) => ws,
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("a connection failed: {error:#}");
                    }
                    return Err(error);
                }
            };
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            subscribe.notified().await;
            ws.send(Message::Text(request.into())).await?;
            let mut first = true;
            while let Some(frame) = ws.next().await {
                if let Message::Text(text) = frame? {
                    if first {
                        first = false;
                        subscribed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if frame_version(text.as_str()) == Some(expected.load(Ordering::Acquire)) {
                        let at = started.elapsed().as_micros() as u64;
                        arrivals[n].store(at, Ordering::Relaxed);
                        received.fetch_add(1, Ordering::Release);
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    let wait_for = |counter: Arc<AtomicUsize>, what: &'static str, total: usize| async move {
        let mut last = Instant::now();
        loop {
            let now = counter.load(Ordering::Relaxed);
            if now >= total {
                return;
            }
            if last.elapsed() > Duration::from_secs(2) {
                eprintln!("  {what}: {now}/{total}");
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    {
        let (opened, failed) = (opened.clone(), failed.clone());
        let total = args.connections;
        let mut last = Instant::now();
        while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < total {
            if last.elapsed() > Duration::from_secs(2) {
                eprintln!("  open: {}/{total}", opened.load(Ordering::Relaxed));
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let failures = failed.load(Ordering::Relaxed);
    anyhow::ensure!(
        failures * 100 < args.connections,
        "{failures} of {} connections failed",
        args.connections
    );
    let open = args.connections - failures;
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss(args.gateway_pid)?;
    let per_idle = (idle_rss.saturating_sub(base_rss)) as f64 / open as f64;
    println!(
        "{open} idle connections open in {open_seconds:.1} s ({failures} failed); gateway RSS {:.1} MiB: {per_idle:.0} bytes per idle connection",
        idle_rss as f64 / 1048576.0
    );

    subscribe.notify_waiters();
    wait_for(subscribed.clone(), "subscribed", open).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let subscribed_rss = rss(args.gateway_pid)?;
    println!(
        "all subscribed to `{}` (top {}); gateway RSS {:.1} MiB: {:.0} bytes per subscribed connection",
        args.contest,
        args.top,
        subscribed_rss as f64 / 1048576.0,
        (subscribed_rss.saturating_sub(base_rss)) as f64 / open as f64
    );

    let mut latency = Histogram::<u64>::new(3)?;
    let mut rates = Vec::new();
    let mut cpu_per_delivery = Vec::new();
    let mut written_ms = Vec::new();
    let (mut all_cpu, mut all_own_cpu, mut all_received) = (0.0, 0.0, 0);
    let mut current = version;
    for round in 1..=args.updates {
        current += 1;
        let fanout_before = gateway_fanout_seconds(args.gateway).await?;
        let cpu_before = cpu_seconds(args.gateway_pid)?;
        let own_cpu_before = cpu_seconds(std::process::id())?;
        // A new version of the contest and its notice, as `ingest run` writes them.
        let notice = serde_json::json!({"contest_id": args.contest.as_str(), "match_id": "bench",
            "version": current, "total": 0});
        received.store(0, Ordering::Release);
        expected.store(current, Ordering::Release);
        let sent = started.elapsed().as_micros() as u64;
        let mut pipe = redis::pipe();
        pipe.hset(&meta_key, "version", current).ignore();
        redis.notice(
            &mut pipe,
            &hot::contest_channel(&args.contest),
            &notice.to_string(),
        );
        pipe.query_async::<()>(&mut redis).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.load(Ordering::Acquire) < open && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let received = received.load(Ordering::Acquire);
        let mut last = sent;
        for arrival in arrivals.iter() {
            let at = arrival.swap(0, Ordering::Relaxed);
            if at >= sent {
                latency.record(at - sent)?;
                last = last.max(at);
            }
        }
        let spread = (last - sent) as f64 / 1e6;
        let fanout_after = gateway_fanout_seconds(args.gateway).await?;
        let loops = fanout_after.1.saturating_sub(fanout_before.1);
        let written = (fanout_after.0 - fanout_before.0) / loops.max(1) as f64;
        written_ms.push(written * 1000.0);
        let cpu = cpu_seconds(args.gateway_pid)? - cpu_before;
        all_own_cpu += cpu_seconds(std::process::id())? - own_cpu_before;
        rates.push(received as f64 / spread.max(1e-6));
        cpu_per_delivery.push(received as f64 / cpu.max(0.01));
        all_cpu += cpu;
        all_received += received;
        println!(
            "update {round}: {received}/{open} deliveries in {:.1} ms ({:.0}/s); gateway CPU {:.3} s = {:.0} deliveries per CPU-second; the gateway's {loops} event loops had written it to every client {:.1} ms after the notice (mean)",
            spread * 1000.0,
            received as f64 / spread.max(1e-6),
            cpu,
            received as f64 / cpu.max(0.01),
            written * 1000.0
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "delivery latency over {} deliveries: min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latency.len(),
        latency.min() as f64 / 1000.0,
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "median: {:.0} deliveries/s wall clock, {:.0} deliveries per gateway CPU-second",
        median(&mut rates),
        median(&mut cpu_per_delivery)
    );
    println!(
        "gateway side: every frame written into its client's socket {:.1} ms after the notice (median over updates, mean over event loops)",
        median(&mut written_ms)
    );
    println!(
        "all updates: {all_received} deliveries, gateway CPU {all_cpu:.2} s = {:.0} deliveries per CPU-second",
        all_received as f64 / all_cpu.max(0.01)
    );
    // Its clients share the gateway's cores: what they take is not the gateway's.
    println!(
        "load generator CPU over all updates: {all_own_cpu:.2} s = {:.0} deliveries per CPU-second",
        all_received as f64 / all_own_cpu.max(0.01)
    );
    for task in tasks {
        task.abort();
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8090/v1/ws")]
    url: String,
    /// The contest.
    #[arg(long)]
    contest: ContestId,
    /// An entry to follow.
    #[arg(long)]
    entry: Option<leaderboard_core::EntryId>,
    /// Its token, when the gateway has WS_TOKEN_SECRET.
    #[arg(long)]
    token: Option<String>,
    /// Rows of the top to print.
    #[arg(long, default_value_t = 3)]
    top: usize,
}

/// Follows a contest like a player and prints one line per frame.
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&args.url)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let mut request =
        serde_json::json!({"op":"subscribe","contest_id":args.contest.as_str(),"top":args.top});
    if let Some(entry) = &args.entry {
        request["entry_id"] = entry.as_str().into();
    }
    if let Some(token) = &args.token {
        request["token"] = token.as_str().into();
    }
    ws.send(Message::Text(request.to_string().into())).await?;
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(text.as_str())?;
        match frame["type"].as_str() {
            Some("snapshot") | Some("update") => {
                let top: Vec<String> = frame["top"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| {
                                format!(
                                    "#{} {} {}",
                                    r["rank"],
                                    r["entry_id"].as_str().unwrap_or(""),
                                    r["points"]
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let me = if frame["me"].is_object() {
                    format!(
                        " | me {} rank {} points {}",
                        frame["me"]["entry_id"].as_str().unwrap_or(""),
                        frame["me"]["rank"],
                        frame["me"]["points"]
                    )
                } else {
                    String::new()
                };
                println!(
                    "{} v{} of {} entries | {}{me}",
                    frame["type"].as_str().unwrap_or(""),
                    frame["version"],
                    frame["total"],
                    top.join(", ")
                );
            }
            _ => println!("{text}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_frames() {
        assert_eq!(
            frame_version(r#"{"type":"update","contest_id":"c","version":42,"ranks_version":41}"#),
            Some(42)
        );
        assert_eq!(frame_version(r#"{"type":"pong"}"#), None);
    }
}
