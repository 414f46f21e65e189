//! The gateway's listener: plain HTTP/1.1 (hyper) for the web page and the
//! admin routes, and `GET /v1/ws` upgraded to a WebSocket session.
//!
//! Shaped like mini-redis's `server.rs`: an accept loop, a `Semaphore` that
//! caps connections (an upgrade past the cap gets 503), one task per
//! connection, and a shutdown token passed in. Connections are handed to one
//! single-threaded event loop per core (`--threads`), and a connection's
//! session runs on the loop that accepted its upgrade. On shutdown the node stops
//! accepting, every session closes with 1012 ("reconnect"), and the node waits
//! for them up to the drain timeout.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use leaderboard_service::admin::{self, ReadyCheck};
use leaderboard_service::http::{self, idle::Watched, ConnectionArgs};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::hub::Hub;
use crate::session::{self, SessionContext, SessionLimits};
use crate::token::TokenSecret;
use crate::wire::{Wire, WireIo};
use crate::{metrics, subscriber, web};

/// Tuning and limits of `ws-gateway serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayOptions {
    /// Connections this node accepts at once; upgrades past it get 503.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Contests one connection may follow.
    #[arg(long, default_value_t = 16)]
    pub max_subscriptions: usize,
    /// Largest frame (and message) a client may send, in bytes; larger closes with 1009.
    #[arg(long, default_value_t = 4096)]
    pub max_frame_bytes: usize,
    /// Requests per second one connection may send (token bucket); excess gets an error frame.
    #[arg(long, default_value = "20")]
    pub message_rate: NonZeroU32,
    /// Burst of requests a connection may send at once.
    #[arg(long, default_value = "40")]
    pub message_burst: NonZeroU32,
    /// Seconds between the server's pings.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// Seconds without any frame from a client before it is closed (1001).
    #[arg(long, default_value_t = 90)]
    pub idle_timeout_secs: u64,
    /// Milliseconds one write may wait for a client before it is closed as stuck (1008).
    #[arg(long, default_value_t = 10_000)]
    pub stuck_timeout_ms: u64,
    /// Milliseconds to wait for sessions to close on shutdown.
    #[arg(long, default_value_t = 5_000)]
    pub drain_timeout_ms: u64,
    /// Read buffer of each connection, in bytes. Tungstenite's default (128 KiB,
    /// allocated eagerly) would cost 128 KiB per idle connection.
    #[arg(long, default_value_t = 2048)]
    pub read_buffer_bytes: usize,
    /// Longest a cached contest snapshot lives should a notice be lost, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub max_staleness_ms: u64,
    /// HMAC secret for following an entry; when set, `entry_id` needs `token`.
    #[arg(long, env = "WS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Connections still speaking plain HTTP at once (handshakes, pages,
    /// admin routes), on top of the sessions; more wait in the backlog.
    #[arg(long, env = "WS_MAX_PENDING", default_value_t = 4096)]
    pub max_pending: usize,
    /// Milliseconds a client may take to send its request's headers
    /// (the upgrade included); slower connections are closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Single-threaded event loops serving connections, each in a thread of
    /// its own: a connection and its session stay on one loop, and a fan-out
    /// hands each loop its members' states, so delivering a frame never wakes
    /// another core. 0 uses one per core; 1 serves on the main runtime.
    #[arg(long, env = "WS_THREADS", default_value_t = 0)]
    pub threads: usize,
}

impl Default for GatewayOptions {
    fn default() -> GatewayOptions {
        GatewayOptions {
            max_connections: 100_000,
            max_subscriptions: 16,
            max_frame_bytes: 4096,
            message_rate: NonZeroU32::new(20).expect("non-zero"),
            message_burst: NonZeroU32::new(40).expect("non-zero"),
            heartbeat_secs: 30,
            idle_timeout_secs: 90,
            stuck_timeout_ms: 10_000,
            drain_timeout_ms: 5_000,
            read_buffer_bytes: 2048,
            max_staleness_ms: 5_000,
            token_secret: None,
            max_pending: 4096,
            header_timeout_ms: 10_000,
            threads: 0,
        }
    }
}

impl GatewayOptions {
    fn http(&self) -> ConnectionArgs {
        ConnectionArgs {
            max_connections: self.max_pending,
            header_timeout_ms: self.header_timeout_ms,
            idle_timeout_secs: self.idle_timeout_secs,
        }
    }

    fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_subscriptions: self.max_subscriptions,
            rate: self.message_rate,
            burst: self.message_burst,
            heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            stuck_timeout: Duration::from_millis(self.stuck_timeout_ms.max(1)),
            ..SessionLimits::default()
        }
    }

    /// Small buffers for many idle connections; frames bounded by the limit.
    fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            // Frames go out one at a time and are flushed at once.
            .write_buffer_size(0)
            .max_write_buffer_size(1 << 20)
            .max_message_size(Some(self.max_frame_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }
}

struct Gateway {
    http: ConnectionArgs,
    context: Arc<SessionContext>,
    permits: Arc<Semaphore>,
    sessions: TaskTracker,
    websocket: WebSocketConfig,
    routes: Router,
}

/// Serves until `shutdown`, then drains.
pub async fn run(
    listener: TcpListener,
    redis_url: &str,
    options: GatewayOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    metrics::init();
    let connection = leaderboard_hot::connect(redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
    let (channels, channel_changes) = mpsc::unbounded_channel();
    let hub = Hub::new(
        connection,
        Duration::from_millis(options.max_staleness_ms),
        channels,
    );
    // Sessions close (1012, "reconnect") as soon as the node stops accepting.
    let sessions_stop = shutdown.child_token();
    let mut subscriber = tokio::spawn(subscriber::run(
        hub.clone(),
        redis_url.to_owned(),
        channel_changes,
        sessions_stop.clone(),
    ));
    let routes = web::router().merge(admin::router(
        leaderboard_service::metrics::REGISTRY.clone(),
        vec![ReadyCheck::new(
            "redis",
            leaderboard_hot::pinger(redis_url)?,
        )],
    ));
    let gateway = Arc::new(Gateway {
        http: options.http(),
        context: Arc::new(SessionContext {
            hub,
            limits: options.limits(),
            secret: options.token_secret.as_deref().map(TokenSecret::new),
            shutdown: sessions_stop.clone(),
        }),
        permits: Arc::new(Semaphore::new(options.max_connections)),
        sessions: TaskTracker::new(),
        websocket: options.websocket(),
        routes,
    });
    let address = listener.local_addr()?;
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    tracing::info!(%address, threads, max_connections = options.max_connections,
        tokens = options.token_secret.is_some(), "ws-gateway listening");
    let serving = serve(listener, gateway.clone(), threads, shutdown.clone());
    tokio::pin!(serving);
    let mut served = None;
    // The first of the node's tasks to fail stops the node, which exits
    // non-zero with the reason once its sessions have drained.
    let mut failure = None;
    let mut subscriber_done = false;
    tokio::select! {
        result = serving.as_mut() => served = Some(result),
        _ = shutdown.cancelled() => {}
        joined = &mut subscriber => {
            subscriber_done = true;
            // Ending because the node is stopping is no failure.
            if !(shutdown.is_cancelled() && joined.is_ok()) {
                failure = Some(subscriber_failure(joined));
            }
        }
    }
    if let Some(error) = &failure {
        tracing::error!(%error, "the pub/sub subscriber failed; stopping the node");
    }
    shutdown.cancel();

    tracing::info!(
        sessions = gateway.sessions.len(),
        "draining: telling every client to reconnect"
    );
    sessions_stop.cancel();
    gateway.sessions.close();
    let drained = tokio::time::timeout(Duration::from_millis(options.drain_timeout_ms), async {
        gateway.sessions.wait().await;
        // The event loops end once their connections and sessions have.
        match served {
            Some(result) => result,
            None => serving.await,
        }
    })
    .await;
    match drained {
        Ok(served) => served.context("the listener failed")?,
        Err(_) => tracing::warn!(
            left = gateway.sessions.len(),
            "drain timeout: dropping the rest"
        ),
    }
    if !subscriber_done {
        if let Err(error) = subscriber.await {
            failure.get_or_insert(subscriber_failure(Err(error)));
        }
    }
    tracing::info!("ws-gateway stopped");
    failure.map_or(Ok(()), Err)
}

/// Why the subscriber task ended before the node stopped.
fn subscriber_failure(joined: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    match joined {
        Ok(()) => anyhow::anyhow!("the pub/sub subscriber stopped before the node"),
        Err(error) if error.is_panic() => anyhow::anyhow!("the pub/sub subscriber panicked"),
        Err(error) => anyhow::anyhow!("the pub/sub subscriber was cancelled: {error}"),
    }
}

/// Accepts until `shutdown`: on the main runtime (`threads` 1), or handing
/// each connection to one of `threads` single-threaded event loops, where
/// its session runs too; then waits for those loops to end.
async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    threads: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Connections still speaking HTTP (before their upgrade, or plain page
    // and admin requests) are capped before they are accepted; sessions
    // have a cap of their own (503 at the upgrade).
    let permits = gateway.http.permits();
    if threads > 1 {
        let serve = move |stream, _peer, shutdown| connection(gateway.clone(), stream, shutdown);
        return leaderboard_service::http::serve_per_thread(
            listener, threads, permits, shutdown, serve,
        )
        .await;
    }
    let mut connections = tokio::task::JoinSet::new();
    while let Some((stream, _peer, permit)) = http::accept(&listener, &permits, &shutdown).await {
        // Its own child token: see `Session::serve`.
        let served = connection(gateway.clone(), stream, shutdown.child_token());
        connections.spawn(async move {
            served.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    Ok(())
}

/// One HTTP/1.1 connection, until it ends or is upgraded to a session.
async fn connection(gateway: Arc<Gateway>, stream: TcpStream, shutdown: CancellationToken) {
    let args = gateway.http.clone();
    let service = hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok::<_, std::convert::Infallible>(gateway.handle(request).await) }
    });
    http::serve_http1(&args, stream, service, shutdown).await;
}

impl Gateway {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Body> {
        if request.uri().path() == "/v1/ws" {
            return self.upgrade(request);
        }
        match self.routes.clone().oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Answers the WebSocket handshake and starts the session once hyper
    /// hands the connection over.
    fn upgrade(&self, mut request: Request<hyper::body::Incoming>) -> Response<Body> {
        let headers = request.headers();
        let has = |name: header::HeaderName, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case(token))
        };
        if request.method() != hyper::Method::GET
            || !has(header::UPGRADE, "websocket")
            || !has(header::CONNECTION, "upgrade")
        {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "GET /v1/ws upgrades to a WebSocket (Connection: Upgrade, Upgrade: websocket)",
            );
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
        };
        let accept = derive_accept_key(key.as_bytes());
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::REFUSED.inc();
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node is at its connection limit; try another",
            );
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let context = self.context.clone();
        let config = self.websocket;
        // On this connection's event loop, which waits for it on shutdown.
        http::spawn_on_this_loop(self.sessions.track_future(async move {
            match on_upgrade.await {
                // Served as a `TcpStream` (below), so it comes back as one:
                // the session and the fan-out share the socket itself.
                Ok(upgraded) => match upgraded.downcast::<TokioIo<Watched<TcpStream>>>() {
                    Ok(parts) => {
                        let wire = Wire::new(parts.io.into_inner().into_inner());
                        let ws = WebSocketStream::from_raw_socket(
                            WireIo::new(wire, parts.read_buf),
                            Role::Server,
                            Some(config),
                        )
                        .await;
                        session::run(ws, context).await;
                    }
                    Err(_) => tracing::warn!("an upgraded connection that is not a TCP stream"),
                },
                Err(error) => tracing::debug!(%error, "upgrade failed"),
            }
            drop(permit);
        }));
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a valid handshake response")
    }
}

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}
