//! The WebSocket gateway against a real Redis written by the real pipeline:
//! snapshots and updates equal the read API's answers, resume, entry tokens,
//! error frames and limits, slow clients, a gateway restart and a Redis
//! restart. The live test replays a real match through Kafka (tansu) and
//! `ingest run`, and drives the web viewer in headless Chromium.

mod support;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use leaderboard::api::server::ServeOptions;
use leaderboard::TeamPoints;
use serde_json::{json, Value};
use support::hot::Fixture;
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
    let mut fixture = Fixture::new().await;
    let (api, _, api_stop) = fixture.serve(no_rate_limit()).await;
    let gateway = Gateway::start(&fixture.redis.url(), GatewayOptions::default()).await;

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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.send(json!({"op":"ping"})).await;
    client
        .until("a pong after the flood", |f| f["type"] == "pong")
        .await;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_never_delays_the_others_and_is_closed_when_stuck() {
    let mut fixture = Fixture::new().await;
    let gateway = Gateway::start(
        &fixture.redis.url(),
        GatewayOptions {
            stuck_timeout_ms: 500,
            ..GatewayOptions::default()
        },
    )
    .await;
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

    // Balls until the gateway gives up on the slow client; the fast one
    // keeps up with every ball meanwhile.
    let closed = || {
        ws_gateway::metrics::CLOSED
            .with_label_values(&["slow"])
            .get()
    };
    let before = closed();
    let started = Instant::now();
    let mut balls = 0;
    let mut worst = Duration::ZERO;
    while closed() == before {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the slow client was never closed"
        );
        for _ in 0..10 {
            let batter = fixture.entries[balls % 50].captain.clone();
            fixture
                .next_ball(&batter, "b4", 1 + (balls % 6) as u32)
                .await;
            balls += 1;
        }
        let target = fixture.writer_version().await;
        let sent = Instant::now();
        let frame = fast
            .until("the newest ball", |f| version(f) >= target)
            .await;
        worst = worst.max(sent.elapsed());
        assert!(version(&frame) > latest);
        latest = version(&frame);
    }
    assert!(
        worst < Duration::from_secs(2),
        "the fast client waited {worst:?} for a ball"
    );
    // The slow client finds, after what was already in flight, a 1008 close
    // (or a dropped connection if even that could not be written).
    let mut code = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
        match frame {
            Ok(Message::Close(close)) => {
                code = close.map(|c| c.code);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    if let Some(code) = code {
        assert_eq!(code, CloseCode::Policy);
    }
    gateway.stop().await;
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
    let mut probe = fixture.redis.client().get_connection().unwrap();
    support::wait_until(10, "the gateway's subscription", || {
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(leaderboard::hot::contest_channel(
                &leaderboard::ContestId::parse("c1").unwrap(),
            ))
            .query(&mut probe)
            .unwrap();
        count == 1
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
