//! The WebSocket gateway against a real Redis written by the real pipeline:
//! snapshots and updates equal the read API's answers, resume, entry tokens,
//! error frames and limits, slow clients, a gateway restart and a Redis
//! restart. The live test replays a real match through Kafka (tansu) and
//! `ingest run`, and drives the web viewer in headless Chromium.

use leaderboard_testkit as support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use leaderboard_core::TeamPoints;
use serde_json::{json, Value};
use support::fixture::Fixture;
use support::ServeOptions;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use ws_gateway::GatewayOptions;

struct Gateway {
    port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    async fn start(redis_url: &str, options: GatewayOptions) -> Gateway {
        Gateway::start_on(redis_url, options, 0).await
    }

    async fn start_on(redis_url: &str, options: GatewayOptions, port: u16) -> Gateway {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let redis_url = redis_url.to_owned();
        let stop = shutdown.clone();
        let task =
            tokio::spawn(async move { ws_gateway::run(listener, &redis_url, options, stop).await });
        Gateway {
            port,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/ws"))
            .await
            .unwrap();
        Client { ws }
    }

    async fn send(&mut self, request: Value) {
        self.ws
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame (pings are answered by tungstenite and skipped).
    async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("a frame within 15 s")
                .expect("the connection is open")
                .expect("a valid frame");
            match frame {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(close) => panic!("closed: {close:?}"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame if one comes within `wait`.
    async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// Frames until one satisfies `done`; returns it.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no frame with {what}");
            let frame = self.next().await;
            if done(&frame) {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("closed within 15 s")
            {
                Some(Ok(Message::Close(close))) => return close.map(|c| c.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

async fn api_get(port: u16, path: &str) -> Value {
    let owned = path.to_owned();
    let (status, _, body) = tokio::task::spawn_blocking(move || support::http(port, &owned))
        .await
        .unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The frame's `top` and `me` equal the read API's leaderboard and entry at
/// the same version (waiting for the API's node to take the same notice).
async fn assert_equals_api(frame: &Value, api: u16, contest: &str, entry: Option<&str>) {
    let top = frame["top"].as_array().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (page, mine) = loop {
        let page = api_get(
            api,
            &format!(
                "/v1/contests/{contest}/leaderboard?limit={}",
                top.len().max(1)
            ),
        )
        .await;
        let mine = match entry {
            Some(entry) => {
                Some(api_get(api, &format!("/v1/contests/{contest}/entries/{entry}")).await)
            }
            None => None,
        };
        let same = page["version"] == frame["ranks_version"]
            && mine
                .as_ref()
                .is_none_or(|m| m["version"] == frame["version"]);
        if same {
            break (page, mine);
        }
        assert!(
            Instant::now() < deadline,
            "the API never reached version {}",
            frame["version"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(frame["total"], page["total"]);
    if !top.is_empty() {
        assert_eq!(&page["entries"], &frame["top"], "top equals the API's page");
    }
    if let (Some(entry), Some(mine)) = (entry, mine) {
        assert_eq!(frame["me"]["entry_id"], entry);
        assert_eq!(
            frame["me"]["rank"], mine["rank"],
            "my rank equals the API's"
        );
        assert_eq!(frame["me"]["points"], mine["points"]);
    }
}

fn version(frame: &Value) -> u64 {
    frame["version"].as_u64().unwrap_or(0)
}

/// The frame is the whole state at `target`: points and ranked rows.
fn settled_at(frame: &Value, target: u64) -> bool {
    version(frame) == target && frame["ranks_version"] == target
}

fn points_of(value: &Value) -> TeamPoints {
    TeamPoints::from_f64_exact(value.as_f64().unwrap()).unwrap()
}

fn no_rate_limit() -> ServeOptions {
    ServeOptions {
        rate_limit: 0,
        ..ServeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_get_a_snapshot_then_updates_equal_to_the_api_and_brute_force() {
    snapshots_then_updates(GatewayOptions::default()).await;
}

/// The same with every session on the gateway's multi-threaded main runtime
/// (`--threads 1`): a fan-out then writes into sockets whose sessions run
/// on other threads.
#[tokio::test(flavor = "multi_thread")]
async fn on_one_multi_threaded_runtime_clients_get_the_same_frames() {
    snapshots_then_updates(GatewayOptions {
        threads: 1,
        ..GatewayOptions::default()
    })
    .await;
}

async fn snapshots_then_updates(options: GatewayOptions) {
    let mut fixture = Fixture::new().await;
    let (api, _, api_stop) = fixture.serve(no_rate_limit()).await;
    let gateway = Gateway::start(&fixture.redis.url(), options).await;

    let mut follower = Client::connect(gateway.port).await;
    follower
        .send(json!({"op":"subscribe","contest_id":"c1","top":10,"entry_id":"e1"}))
        .await;
    let mut watcher = Client::connect(gateway.port).await;
    watcher
        .send(json!({"op":"subscribe","contest_id":"c1","top":3}))
        .await;
    let mut only_me = Client::connect(gateway.port).await;
    only_me
        .send(json!({"op":"subscribe","contest_id":"c1","top":0,"entry_id":"e5"}))
        .await;

    let first = follower.next().await;
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["contest_id"], "c1");
    assert_eq!(first["top"].as_array().unwrap().len(), 10);
    assert_equals_api(&first, api, "c1", Some("e1")).await;
    let watched = watcher.next().await;
    assert_eq!(watched["type"], "snapshot");
    assert_eq!(watched["me"], Value::Null);
    assert_eq!(
        watched["top"].as_array().unwrap()[..],
        first["top"].as_array().unwrap()[..3]
    );
    let mine = only_me.next().await;
    assert!(mine["top"].as_array().unwrap().is_empty());
    assert_equals_api(&mine, api, "c1", Some("e5")).await;

    // Balls move the contest: every client ends at the new version, with the
    // API's answers, which equal the domain core's brute force.
    let start = version(&first);
    for _ in 0..5 {
        let captain = fixture.entries[1].captain.clone();
        fixture.next_ball(&captain, "b3", 4).await;
    }
    let target = fixture.writer_version().await;
    assert!(target > start, "the balls moved the version");
    let mut seen = Vec::new();
    let last = follower
        .until("the latest version", |frame| {
            seen.push((frame["type"].clone(), version(frame)));
            settled_at(frame, target)
        })
        .await;
    assert!(seen
        .iter()
        .all(|(kind, _)| kind == "update" || kind == "snapshot"));
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "versions only move forward: {seen:?}"
    );
    assert_equals_api(&last, api, "c1", Some("e1")).await;
    let expected = fixture.expected();
    assert_eq!(points_of(&last["me"]["points"]), expected[1].0);
    assert_eq!(last["me"]["rank"], expected[1].1);
    let top = last["top"].as_array().unwrap();
    for row in top {
        let index: usize = row["entry_id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(
            row["rank"], expected[index].1,
            "top ranks equal brute force"
        );
        assert_eq!(points_of(&row["points"]), expected[index].0);
    }
    let watched = watcher
        .until("the latest version", |f| settled_at(f, target))
        .await;
    assert_eq!(watched["top"].as_array().unwrap()[..], top[..3]);
    let mine = only_me
        .until("the latest version", |f| settled_at(f, target))
        .await;
    assert_equals_api(&mine, api, "c1", Some("e5")).await;

    // Unsubscribing stops the updates; ping still answers.
    watcher
        .send(json!({"op":"unsubscribe","contest_id":"c1"}))
        .await;
    watcher
        .until("the unsubscribe ack", |f| f["type"] == "unsubscribed")
        .await;
    let captain = fixture.entries[2].captain.clone();
    fixture.next_ball(&captain, "b1", 6).await;
    follower
        .until("one more update", |f| version(f) > target)
        .await;
    watcher.send(json!({"op":"ping"})).await;
    assert_eq!(watcher.next().await, json!({"type":"pong"}));

    // Caught-up clients got their updates straight from the fan-out, and
    // each fan-out was timed.
    let metrics = support::http_get(gateway.port, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in /metrics"))
            .parse()
            .unwrap()
    };
    assert!(value("ws_states_written_directly_total") >= 1.0);
    assert!(value("ws_fanout_seconds_count") >= 1.0);

    gateway.stop().await;
    api_stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_with_since_version_sends_only_what_moved() {
    let mut fixture = Fixture::new().await;
    let gateway = Gateway::start(&fixture.redis.url(), GatewayOptions::default()).await;
    let mut first = Client::connect(gateway.port).await;
    first
        .send(json!({"op":"subscribe","contest_id":"c1","top":5}))
        .await;
    let snapshot = first.next().await;
    let current = version(&snapshot);

    // Up to date: an acknowledgement, no state.
    let mut resumed = Client::connect(gateway.port).await;
    resumed
        .send(json!({"op":"subscribe","contest_id":"c1","top":5,"since_version":current}))
        .await;
    assert_eq!(
        resumed.next().await,
        json!({"type":"subscribed","contest_id":"c1","version":current,"resumed":true})
    );
    // Behind: a snapshot.
    let mut behind = Client::connect(gateway.port).await;
    behind
        .send(json!({"op":"subscribe","contest_id":"c1","top":5,"since_version":current - 1}))
        .await;
    let caught_up = behind.next().await;
    assert_eq!(caught_up["type"], "snapshot");
    assert_eq!(caught_up["top"], snapshot["top"]);
    // The resumed client gets the next update like everyone else.
    let captain = fixture.entries[0].captain.clone();
    fixture.next_ball(&captain, "b2", 6).await;
    let update = resumed.next().await;
    assert_eq!(update["type"], "update");
    assert!(version(&update) > current);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn following_an_entry_needs_its_token_when_a_secret_is_set() {
    let fixture = Fixture::new().await;
    let secret = "test-secret";
    let gateway = Gateway::start(
        &fixture.redis.url(),
        GatewayOptions {
            token_secret: Some(secret.to_owned()),
            ..GatewayOptions::default()
        },
    )
    .await;
    let mut client = Client::connect(gateway.port).await;
    client
        .send(json!({"op":"subscribe","contest_id":"c1","entry_id":"e7"}))
        .await;
    let refused = client.next().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "unauthorized");
    let other_entry = ws_gateway::TokenSecret::new(secret).sign("c1", "e8");
    client
        .send(json!({"op":"subscribe","contest_id":"c1","entry_id":"e7","token":other_entry}))
        .await;
    assert_eq!(client.next().await["code"], "unauthorized");
    client
        .send(json!({"op":"subscribe","contest_id":"c1","entry_id":"e7","token":"not hex"}))
        .await;
    assert_eq!(client.next().await["code"], "unauthorized");
    // The token computed independently of the gateway's code.
    let token = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"c1:e7");
        hex::encode(mac.finalize().into_bytes())
    };
    client
        .send(json!({"op":"subscribe","contest_id":"c1","entry_id":"e7","token":token}))
        .await;
    let accepted = client.next().await;
    assert_eq!(accepted["type"], "snapshot");
    assert_eq!(accepted["me"]["entry_id"], "e7");
    // Top-N alone needs no token.
    let mut public = Client::connect(gateway.port).await;
    public
        .send(json!({"op":"subscribe","contest_id":"c1"}))
        .await;
    assert_eq!(public.next().await["type"], "snapshot");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_get_error_frames_and_limits_hold() {
    let fixture = Fixture::new().await;
    let gateway = Gateway::start(
        &fixture.redis.url(),
        GatewayOptions {
            max_connections: 3,
            max_subscriptions: 2,
            message_rate: 5.try_into().unwrap(),
            message_burst: 20.try_into().unwrap(),
            max_frame_bytes: 1024,
            ..GatewayOptions::default()
        },
    )
    .await;
    let mut client = Client::connect(gateway.port).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("{nope".into()), "bad_json"),
        (Message::Text(r#"{"op":"dance"}"#.into()), "unknown_op"),
        (
            Message::Text(r#"{"contest_id":"c1"}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"subscribe","contest_id":"c1","top":101}"#.into()),
            "bad_request",
        ),
        (
            Message::Text(r#"{"op":"subscribe","contest_id":"bad id"}"#.into()),
            "bad_request",
        ),
        (Message::Binary(vec![1, 2, 3].into()), "bad_frame"),
        (
            Message::Text(r#"{"op":"subscribe","contest_id":"nope"}"#.into()),
            "unknown_contest",
        ),
        (
            Message::Text(r#"{"op":"subscribe","contest_id":"c1","entry_id":"e999999"}"#.into()),
            "unknown_entry",
        ),
    ];
    for (frame, code) in cases {
        client.ws.send(frame.clone()).await.unwrap();
        let answer = client.next().await;
        assert_eq!(answer["type"], "error", "{frame:?}");
        assert_eq!(answer["code"], code, "{frame:?}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    // Two subscriptions at most.
    client
        .send(json!({"op":"subscribe","contest_id":"c1","top":1}))
        .await;
    assert_eq!(client.next().await["type"], "snapshot");
    client
        .send(json!({"op":"subscribe","contest_id":"c2"}))
        .await;
    assert_eq!(client.next().await["code"], "unknown_contest");
    // (a failed subscribe holds no slot; fill the second with c1 again: same contest, no new slot)
    client
        .send(json!({"op":"subscribe","contest_id":"c1","top":2}))
        .await;
    assert_eq!(client.next().await["type"], "snapshot");

    // Flooding: the token bucket refuses the excess, the connection stays up.
    for _ in 0..40 {
        client.send(json!({"op":"ping"})).await;
    }
    let mut limited = 0;
    let mut pongs = 0;
    while pongs + limited < 40 {
        let frame = client.next().await;
        match frame["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        limited > 0 && pongs >= 5,
        "{pongs} pongs, {limited} limited"
    );
    // The bucket refills: a ping is answered again (polled, not slept on).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        client.send(json!({"op":"ping"})).await;
        let frame = client.next().await;
        if frame["type"] == "pong" {
            break;
        }
        assert_eq!(frame["code"], "rate_limited", "{frame}");
        assert!(Instant::now() < deadline, "still limited after 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The connection cap: a third client is fine, a fourth gets 503.
    let _second = Client::connect(gateway.port).await;
    let _third = Client::connect(gateway.port).await;
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", gateway.port)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Plain HTTP to the WebSocket path: 426 with a JSON error.
    let (status, _, body) = support::http(gateway.port, "/v1/ws");
    assert_eq!(status, 426);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    // The page, and the admin routes on the same port.
    let (status, _, page) = support::http(gateway.port, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/v1/ws") && page.contains("me-rank"));
    let metrics = support::http_get(gateway.port, "/metrics");
    assert!(metrics.contains("\nws_connections "), "{metrics}");
    assert!(metrics.contains("ws_error_frames_total{code=\"unknown_op\"}"));
    assert_eq!(support::http(gateway.port, "/readyz").0, 200);

    // A frame over the limit closes with 1009 (Message Too Big).
    client
        .send(json!({"op":"ping","padding":"x".repeat(4096)}))
        .await;
    assert_eq!(client.closed().await, Some(CloseCode::Size));
    gateway.stop().await;
}

/// `ws-gateway serve` as a process of its own, so that its metrics are its
/// own and no parallel test moves them.
struct GatewayProcess {
    child: std::process::Child,
    port: u16,
}

impl GatewayProcess {
    fn start(redis_url: &str, extra: &[&str]) -> GatewayProcess {
        let port = support::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ws-gateway"))
            .arg("serve")
            .args(extra)
            .env("REDIS_URL", redis_url)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        support::wait_until(30, "ws-gateway serve to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        GatewayProcess { child, port }
    }

    /// A counter of this process's `/metrics`, 0 while it has no sample.
    fn counter(&self, series: &str) -> f64 {
        support::metric(self.port, series)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_never_delays_the_others_and_is_closed_when_stuck() {
    let mut fixture = Fixture::new().await;
    let gateway = GatewayProcess::start(&fixture.redis.url(), &["--stuck-timeout-ms", "500"]);
    // The slow client: a tiny receive buffer, and it stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", gateway.port).parse().unwrap())
        .await
        .unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{}/v1/ws", gateway.port), stream)
            .await
            .unwrap();
    slow.send(Message::Text(
        json!({"op":"subscribe","contest_id":"c1","top":100})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut fast = Client::connect(gateway.port).await;
    fast.send(json!({"op":"subscribe","contest_id":"c1","top":100}))
        .await;
    let mut latest = version(&fast.next().await);

    // Balls until this gateway gives up on the slow client; the fast one
    // gets every batch's newest version meanwhile.
    let slow_closes = r#"ws_closed_total{reason="slow"} "#;
    let mut balls = 0;
    while gateway.counter(slow_closes) == 0.0 {
        assert!(balls < 5_000, "the slow client was never closed");
        for _ in 0..10 {
            let batter = fixture.entries[balls % 50].captain.clone();
            fixture
                .next_ball(&batter, "b4", 1 + (balls % 6) as u32)
                .await;
            balls += 1;
        }
        let target = fixture.writer_version().await;
        let frame = fast
            .until("the newest ball", |f| version(f) >= target)
            .await;
        assert!(version(&frame) > latest);
        latest = version(&frame);
    }
    assert_eq!(gateway.counter(slow_closes), 1.0, "only the slow client");
    // The slow client's connection ends: after what was already in flight,
    // a 1008 close, or a dropped connection if even that could not be written.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(15), slow.next()).await {
            Ok(Some(Ok(Message::Close(close)))) => break close.map(|c| c.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("the slow client's connection is still open"),
        }
    };
    assert!(
        ended.is_none() || ended == Some(CloseCode::Policy),
        "closed with {ended:?}"
    );
    // And the fast client is still served.
    fixture.next_ball("a1", "b4", 2).await;
    let target = fixture.writer_version().await;
    fast.until("a ball after the close", |f| version(f) >= target)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_resume_across_a_gateway_restart_and_a_redis_restart() {
    let mut fixture = Fixture::new().await;
    let gateway = Gateway::start(
        &fixture.redis.url(),
        GatewayOptions {
            drain_timeout_ms: 2000,
            ..GatewayOptions::default()
        },
    )
    .await;
    let port = gateway.port;
    let mut client = Client::connect(port).await;
    client
        .send(json!({"op":"subscribe","contest_id":"c1","top":5,"entry_id":"e3"}))
        .await;
    let held = version(&client.next().await);

    // SIGTERM's path: every client is told to reconnect.
    gateway.stop().await;
    assert_eq!(client.closed().await, Some(CloseCode::Restart));

    let gateway = Gateway::start_on(&fixture.redis.url(), GatewayOptions::default(), port).await;
    let mut client = Client::connect(port).await;
    client
        .send(json!({"op":"subscribe","contest_id":"c1","top":5,"entry_id":"e3","since_version":held}))
        .await;
    assert_eq!(client.next().await["type"], "subscribed");

    // Redis goes away and comes back empty; the pipeline rebuilds it, the
    // gateway reconnects its pub/sub and the client sees the next ball.
    // (once the new node's pub/sub connection follows the contest)
    let channel =
        leaderboard_hot::contest_channel(&leaderboard_core::ContestId::parse("c1").unwrap());
    support::wait_until(10, "the gateway's subscription", || {
        fixture.redis.subscribers(&channel) == 1
    });
    fixture.redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fixture.redis.restart();
    fixture.rebuild().await;
    let captain = fixture.entries[3].captain.clone();
    fixture.next_ball(&captain, "b5", 6).await;
    let target = fixture.writer_version().await;
    let update = client
        .until("the ball after the restart", |f| version(f) >= target)
        .await;
    let expected = fixture.expected();
    assert_eq!(points_of(&update["me"]["points"]), expected[3].0);
    assert_eq!(update["me"]["rank"], expected[3].1);
    gateway.stop().await;
}

/// Headless Chromium (Debian's package) on a page, driven over the DevTools
/// protocol with the same WebSocket client the tests use.
struct Browser {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let binary = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "chromium".to_owned());
        let child = std::process::Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-allow-origins=*",
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} runs (scripts/test installs it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = loop {
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools never answered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let listing = tokio::task::spawn_blocking(move || devtools_targets(port))
                .await
                .unwrap();
            let Some(listing) = listing else { continue };
            let Ok(targets) = serde_json::from_str::<Vec<Value>>(&listing) else {
                continue;
            };
            if let Some(page) = targets.iter().find(|t| {
                t["type"] == "page"
                    && t["url"]
                        .as_str()
                        .is_some_and(|u| u.starts_with("http://127.0.0.1"))
            }) {
                break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
            }
        };
        let (devtools, _) = tokio_tungstenite::connect_async(target).await.unwrap();
        Browser {
            child,
            _profile: profile,
            devtools,
            next_id: 1,
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true}});
        self.devtools
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.devtools.next())
                .await
                .expect("DevTools answers")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                let answer: Value = serde_json::from_str(text.as_str()).unwrap();
                if answer["id"] == id {
                    return answer["result"]["result"]["value"].clone();
                }
            }
        }
    }

    /// What the page shows: (my rank, the version it rendered).
    async fn shown(&mut self) -> (String, u64) {
        let shown = self
            .eval("[document.getElementById('me-rank').textContent, document.body.dataset.version || '0']")
            .await;
        (
            shown[0].as_str().unwrap_or("").to_owned(),
            shown[1].as_str().unwrap_or("0").parse().unwrap_or(0),
        )
    }
}

/// DevTools' target list, or `None` while Chromium is starting (with a
/// read timeout: Chromium may keep the connection open).
fn devtools_targets(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // DevTools names its WebSocket URLs after the Host header.
    let request =
        format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.split("\r\n\r\n").nth(1).map(str::to_owned)
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_match_reaches_players_and_the_web_page_live() {
    use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
    use leaderboard_core::ContestId;
    use leaderboard_hot as hot;
    use redis::AsyncCommands;

    let redis = support::Redis::start();
    let broker = support::Broker::start();
    let work = tempfile::tempdir().unwrap();
    let ingest = support::Ingest::start(&broker, &redis, work.path(), &[]);
    let path = support::ipl_dir().join("1136561.json");
    let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let match_id = match_id_from_path(&path).unwrap();
    let contest_id = ContestId::parse("live").unwrap();
    let record = ingest::contests::contest(
        &contest_id,
        &match_id,
        parsed.info.players.clone(),
        1_000_000,
    );
    let entries = ingest::contests::entries(&record, 2_000, 9);
    ingest::contests::publish(&broker.brokers(), &record, &entries)
        .await
        .unwrap();
    let mut connection = hot::connect(&redis.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total: Option<u64> = connection
            .hget(hot::contest_meta_key(&contest_id), "total")
            .await
            .unwrap();
        if total == Some(2_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the contest's entries never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (api, _, api_stop) = support::serve_api(&redis.url(), None, no_rate_limit()).await;
    let gateway = Gateway::start(&redis.url(), GatewayOptions::default()).await;
    let entry = entries[7].entry_id.as_str().to_owned();
    let mut player = Client::connect(gateway.port).await;
    player
        .send(json!({"op":"subscribe","contest_id":"live","top":10,"entry_id":entry}))
        .await;
    assert_eq!(player.next().await["type"], "snapshot");
    let mut browser = Browser::open(&format!(
        "http://127.0.0.1:{}/?contest=live&entry={entry}",
        gateway.port
    ))
    .await;

    let args = ingest::replay::ReplayArgs {
        files: vec![path.clone()],
        speed: 1200.0,
        corrections: false,
        seed: 3,
        kafka: leaderboard_service::config::KafkaArgs {
            brokers: broker.brokers(),
        },
        partitions: 3,
    };
    let replay = tokio::spawn(async move { ingest::replay::run(&args).await });

    // While the match plays: frames keep coming, versions only move forward,
    // and the page re-renders with them.
    let mut frames = Vec::new();
    let mut page_versions = std::collections::BTreeSet::new();
    while !replay.is_finished() {
        let Some(frame) = player.try_next(Duration::from_millis(500)).await else {
            continue;
        };
        frames.push(frame);
        if frames.len() % 5 == 0 {
            page_versions.insert(browser.shown().await.1);
        }
    }
    replay.await.unwrap().unwrap();
    let last_seq = parsed.events(&match_id, None).len() as u64 - 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seq: Option<u64> = connection
            .hget(hot::match_meta_key(&match_id), "seq")
            .await
            .unwrap();
        if seq == Some(last_seq) {
            break;
        }
        assert!(Instant::now() < deadline, "the match never ended in Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (target, ranks): (u64, u64) = redis::cmd("HMGET")
        .arg(hot::contest_meta_key(&contest_id))
        .arg("version")
        .arg("ranks_version")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(target, ranks);
    let last = match frames.last() {
        Some(frame) if settled_at(frame, target) => frame.clone(),
        _ => {
            let last = player
                .until("the final state", |f| settled_at(f, target))
                .await;
            frames.push(last.clone());
            last
        }
    };
    let versions: Vec<u64> = frames.iter().map(version).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    let distinct: std::collections::BTreeSet<u64> = versions.iter().copied().collect();
    assert!(
        distinct.len() >= 20,
        "live: {} distinct versions reached the player",
        distinct.len()
    );
    assert!(
        page_versions.len() >= 3,
        "the page moved live: {page_versions:?}"
    );
    assert_equals_api(&last, api, "live", Some(&entry)).await;

    // The page ends on the rank the API returns.
    let expected = api_get(api, &format!("/v1/contests/live/entries/{entry}")).await;
    let expected_rank = expected["rank"].to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (rank, shown_version) = browser.shown().await;
        if shown_version == target && rank == expected_rank {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows rank {rank} at version {shown_version}, the API {} at {target}",
            expected["rank"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(browser);
    gateway.stop().await;
    api_stop.cancel();
    drop(ingest);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_do_not_starve_the_gateway_and_are_closed_after_the_header_timeout() {
    let redis = support::Redis::start();
    let gateway = Gateway::start(
        &redis.url(),
        GatewayOptions {
            header_timeout_ms: 2_000,
            ..GatewayOptions::default()
        },
    )
    .await;
    let port = gateway.port;
    let mut slow = tokio::task::spawn_blocking(move || support::slow_clients(port, 2_000))
        .await
        .unwrap();
    // A player still connects and is answered while the slow ones hang.
    let mut client = Client::connect(port).await;
    client.send(json!({"op":"ping"})).await;
    assert_eq!(client.next().await["type"], "pong");
    let (status, _, _) = tokio::task::spawn_blocking(move || support::http(port, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let closed = support::closed_by_server(&mut slow);
    assert!(closed < slow.len(), "every slow client was already closed");
    tokio::task::spawn_blocking(move || {
        support::wait_until(30, "every slow client closed by the gateway", || {
            support::closed_by_server(&mut slow) == slow.len()
        });
    })
    .await
    .unwrap();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_team_in_redis_never_stops_a_room_from_updating() {
    let mut fixture = Fixture::new().await;
    let gateway = Gateway::start(&fixture.redis.url(), GatewayOptions::default()).await;
    {
        let mut connection = fixture.redis.connect().await;
        // A team naming a player outside the 22-player squad.
        let _: () = redis::AsyncCommands::hset(
            &mut connection,
            "lb:c:{c1}:teams",
            "e5",
            "0,1,2,3,4,5,6,7,8,9,99;0;1",
        )
        .await
        .unwrap();
    }
    let mut follower = Client::connect(gateway.port).await;
    follower
        .send(json!({"op":"subscribe","contest_id":"c1","top":3,"entry_id":"e5"}))
        .await;
    let first = follower.next().await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert!(
        first.get("me").is_none_or(Value::is_null),
        "no rank from a corrupt team: {first}"
    );
    let mut watcher = Client::connect(gateway.port).await;
    watcher
        .send(json!({"op":"subscribe","contest_id":"c1","top":3}))
        .await;
    let mut seen = version(&watcher.next().await);
    // Ball after ball, the room keeps fanning out to both.
    for ball in 0..3 {
        fixture.next_ball("a1", "b1", 4).await;
        let target = fixture.writer_version().await;
        let update = watcher
            .until("the next version", |frame| version(frame) >= target)
            .await;
        assert!(version(&update) > seen, "ball {ball}: the room moved on");
        seen = version(&update);
        follower
            .until("the follower's next version", |frame| {
                version(frame) >= target
            })
            .await;
    }
    let corrupt = support::metric(gateway.port, "ws_corrupt_reads_total ");
    assert!(corrupt >= 1.0, "the corrupt team was counted");
    gateway.stop().await;
}

/// Scale-out: two read-API nodes and two gateways on one Redis (or cluster).
/// Any node answers any contest, and every node follows the same notices:
/// after each ball, both API nodes and both gateways' clients reach the new
/// version, all equal to the domain core's brute force.
#[tokio::test(flavor = "multi_thread")]
async fn two_api_nodes_and_two_gateways_follow_the_same_notices() {
    let mut fixture = Fixture::new().await;
    let (api_a, _, stop_a) = fixture.serve(no_rate_limit()).await;
    let (api_b, _, stop_b) = fixture.serve(no_rate_limit()).await;
    let gateway_a = Gateway::start(&fixture.redis.url(), GatewayOptions::default()).await;
    let gateway_b = Gateway::start(&fixture.redis.url(), GatewayOptions::default()).await;
    let mut clients = Vec::new();
    for gateway in [&gateway_a, &gateway_b] {
        let mut client = Client::connect(gateway.port).await;
        client
            .send(json!({"op":"subscribe","contest_id":"c1","top":5,"entry_id":"e1"}))
            .await;
        let snapshot = client.next().await;
        assert_eq!(snapshot["type"], "snapshot");
        clients.push(client);
    }
    // Both API nodes have the contest cached before the balls.
    for api in [api_a, api_b] {
        assert_eq!(
            api_get(api, "/v1/contests/c1/entries/e1").await["entry_id"],
            "e1"
        );
    }
    for ball in 0..3 {
        let captain = fixture.entries[1 + ball].captain.clone();
        fixture.next_ball(&captain, "b2", 4).await;
        let target = fixture.writer_version().await;
        let expected = fixture.expected();
        let started = Instant::now();
        for api in [api_a, api_b] {
            loop {
                let body = api_get(api, "/v1/contests/c1/entries/e1").await;
                if body["version"].as_u64() == Some(target) {
                    assert_eq!(points_of(&body["points"]), expected[1].0);
                    assert_eq!(body["rank"], expected[1].1);
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "API node on {api} still at {} after 5 s, not {target}",
                    body["version"]
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for client in &mut clients {
            let frame = client
                .until("the ball's version", |f| settled_at(f, target))
                .await;
            assert_eq!(points_of(&frame["me"]["points"]), expected[1].0);
            assert_eq!(frame["me"]["rank"], expected[1].1);
            assert_equals_api(&frame, api_b, "c1", Some("e1")).await;
        }
    }
    gateway_a.stop().await;
    gateway_b.stop().await;
    stop_a.cancel();
    stop_b.cancel();
}

/// Redis Cluster failover: three masters with one replica each; the master
/// serving the contest's slot is killed -9 mid-match and its replica takes
/// over. `ingest run`, the read API and the gateway recover by themselves
/// (writes the dead master had not passed on are noticed as gaps and
/// rewritten in full), and the final state is exact.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_redis_cluster_master_fails_over_and_every_service_recovers() {
    use leaderboard_core::cricsheet::{match_id_from_path, CricsheetMatch};
    use leaderboard_core::scoring::score_match;
    use leaderboard_core::{ContestId, Rules};
    use leaderboard_hot as hot;
    use redis::AsyncCommands;
    use std::sync::Arc;

    let mut redis = support::Redis::start_cluster(3, 1);
    let broker = support::Broker::start();
    let work = tempfile::tempdir().unwrap();
    let ingest = support::Ingest::start(&broker, &redis, work.path(), &[]);
    let path = support::ipl_dir().join("1136570.json");
    let parsed = CricsheetMatch::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let match_id = match_id_from_path(&path).unwrap();
    let contest_id = ContestId::parse("failover").unwrap();
    let record = ingest::contests::contest(
        &contest_id,
        &match_id,
        parsed.info.players.clone(),
        1_000_000,
    );
    let entries = ingest::contests::entries(&record, 1_000, 9);
    ingest::contests::publish(&broker.brokers(), &record, &entries)
        .await
        .unwrap();
    let (api, _, api_stop) = support::serve_api(&redis.url(), None, no_rate_limit()).await;
    let gateway = Gateway::start(&redis.url(), GatewayOptions::default()).await;
    let meta_key = hot::contest_meta_key(&contest_id);
    let seq_of = |redis: &support::Redis| -> u64 {
        let mut connection = redis.connection();
        redis::Commands::hget::<_, _, Option<u64>>(
            &mut connection,
            hot::match_meta_key(&match_id),
            "seq",
        )
        .ok()
        .flatten()
        .unwrap_or(0)
    };
    let entry = entries[3].entry_id.as_str().to_owned();
    let wait_total = Instant::now();
    let mut player = loop {
        let mut connection = redis.connection();
        let total: Option<u64> =
            redis::Commands::hget(&mut connection, &meta_key, "total").unwrap_or(None);
        if total == Some(1_000) {
            let mut player = Client::connect(gateway.port).await;
            player
                .send(json!({"op":"subscribe","contest_id":"failover","top":5,"entry_id":entry}))
                .await;
            assert_eq!(player.next().await["type"], "snapshot");
            break player;
        }
        assert!(
            wait_total.elapsed() < Duration::from_secs(60),
            "entries never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let args = ingest::replay::ReplayArgs {
        files: vec![path.clone()],
        speed: 2000.0,
        corrections: false,
        seed: 3,
        kafka: leaderboard_service::config::KafkaArgs {
            brokers: broker.brokers(),
        },
        partitions: 3,
    };
    let replay = tokio::spawn(async move { ingest::replay::run(&args).await });
    let started = Instant::now();
    while seq_of(&redis) < 80 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the match never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = redis.master_of(&meta_key);
    redis.kill_node(victim);
    eprintln!(
        "kill -9 of the master on {victim} at seq {}",
        seq_of(&redis)
    );
    let started = Instant::now();
    while redis.master_ports().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no replica was promoted: masters {:?}",
            redis.master_ports()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("a replica took over in {:?}", started.elapsed());
    replay.await.unwrap().unwrap();

    // The whole match, exactly: player points and every entry's points.
    let scorer = score_match(Arc::new(Rules::t20_classic()), &match_id, &parsed, None);
    let last_seq = parsed.events(&match_id, None).len() as u64 - 1;
    let started = Instant::now();
    while seq_of(&redis) < last_seq {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the match never finished in Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut connection = redis.connect().await;
    let points: std::collections::BTreeMap<String, i64> = connection
        .hgetall(hot::match_points_key(&match_id))
        .await
        .unwrap();
    let expected: std::collections::BTreeMap<String, i64> = scorer
        .points_by_name()
        .into_iter()
        .map(|(name, points)| (name, i64::from(points.0)))
        .collect();
    assert_eq!(points, expected, "player points after the failover");
    let squad = leaderboard_core::team::Squad::from_teams(&record.squad);
    let table = squad.points_table(|name| scorer.points_of(name));
    let team_points: Vec<TeamPoints> = entries
        .iter()
        .map(|e| {
            squad
                .team(&e.players, &e.captain, &e.vice_captain)
                .unwrap()
                .points(&table)
        })
        .collect();
    let ranks = leaderboard_core::rank::ranks_by_sort(&team_points);
    let final_version: u64 = connection.hget(&meta_key, "version").await.unwrap();
    let index = 3;
    // The API node answers the final version, equal to brute force…
    let started = Instant::now();
    loop {
        // 503 while the node's connection finds the promoted replica.
        let path = format!("/v1/contests/failover/entries/{entry}");
        let (status, _, body) = tokio::task::spawn_blocking(move || support::http(api, &path))
            .await
            .unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(status == 200 || status == 503, "{status} {body}");
        if body["version"].as_u64() == Some(final_version) {
            assert_eq!(points_of(&body["points"]), team_points[index]);
            assert_eq!(body["rank"], ranks[index]);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "API node stuck at {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …and so does the gateway's player, and a new subscriber.
    let frame = player
        .until("the final version", |f| settled_at(f, final_version))
        .await;
    assert_eq!(points_of(&frame["me"]["points"]), team_points[index]);
    assert_eq!(frame["me"]["rank"], ranks[index]);
    let mut late = Client::connect(gateway.port).await;
    late.send(json!({"op":"subscribe","contest_id":"failover","top":5,"entry_id":entry}))
        .await;
    let snapshot = late.next().await;
    assert_eq!(snapshot["version"].as_u64(), Some(final_version));
    // Every entry's points and rank in the sorted set, as a rebuild writes them.
    let stored: Vec<(String, f64)> = connection
        .zrange_withscores(hot::contest_ranks_key(&contest_id), 0, -1)
        .await
        .unwrap();
    assert_eq!(stored.len(), entries.len());
    let stored: std::collections::HashMap<String, f64> = stored.into_iter().collect();
    for (entry, points) in entries.iter().zip(&team_points) {
        assert_eq!(
            TeamPoints::from_f64_exact(stored[entry.entry_id.as_str()]),
            Some(*points),
            "points of {}",
            entry.entry_id
        );
    }
    assert_eq!(ingest.readiness().0, 200, "ingest is ready again");
    gateway.stop().await;
    api_stop.cancel();
}
