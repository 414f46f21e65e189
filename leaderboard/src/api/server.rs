//! Building and running `leaderboard serve`: the read API, the rate limit,
//! the notice follower and the admin routes on one listener.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::cache::{follow_notices, NodeCache};
use super::ratelimit::{self, Proxies, RateLimit};
use super::{router, ApiState};
use crate::metrics;
use leaderboard_hot as hot;
use leaderboard_service::admin::{self, ReadyCheck};
use leaderboard_service::http;
use leaderboard_service::shutdown::Supervisor;
use leaderboard_store::SharedStore;

/// Tuning of the read API.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Requests per second allowed to one client (token bucket); 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// Burst a client may spend at once.
    #[arg(long, env = "RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
    /// Proxies (addresses or CIDR ranges, comma-separated) whose
    /// `X-Forwarded-For` is believed: a request from one of them is limited
    /// as the right-most forwarded address that is not a trusted proxy.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most client addresses the rate limiter tracks at once (idle ones are
    /// pruned every second; past this the table starts afresh).
    #[arg(long, env = "RATE_MAX_CLIENTS", default_value_t = 1_000_000)]
    pub rate_max_clients: usize,
    /// Longest a cached snapshot lives should a change notice be lost, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub max_staleness_ms: u64,
    /// Threads answering HTTP, each a single-threaded event loop: every
    /// accepted connection is handed to one of them (round robin) and stays
    /// there, so its requests never hop threads or wake another core; 0 uses
    /// one per core, 1 serves on the main runtime.
    #[arg(long, env = "HTTP_THREADS", default_value_t = 0)]
    pub http_threads: usize,
    /// From this many entries, a contest's first read on a node loads all
    /// of its teams in bulk in the background, so that a cold node answers
    /// my-rank as fast as a warm one; smaller contests are read entry by
    /// entry. 0 turns the bulk load off.
    #[arg(long, env = "PRELOAD_TEAMS_FROM", default_value_t = 1000)]
    pub preload_teams_from: u64,
    #[command(flatten)]
    pub connections: http::ConnectionArgs,
    #[command(flatten)]
    pub admin: leaderboard_service::config::AdminArgs,
    /// Benchmark baseline only: answer `GET …/entries/{id}` and leaderboard
    /// pages with one Redis round trip per request, bypassing the node cache.
    #[arg(long, hide = true)]
    pub per_request_redis: bool,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            rate_limit: 1000,
            rate_burst: 2000,
            trusted_proxies: Vec::new(),
            rate_max_clients: 1_000_000,
            max_staleness_ms: 5000,
            http_threads: 1,
            preload_teams_from: 1000,
            connections: http::ConnectionArgs::default(),
            admin: leaderboard_service::config::AdminArgs::default(),
            per_request_redis: false,
        }
    }
}

/// The whole application: API routes (rate-limited) and admin routes, and
/// the hottest route, an entry's rank, answered ahead of the router.
#[derive(Debug, Clone)]
pub struct App {
    router: Router,
    state: Arc<ApiState>,
    limit: Option<Arc<RateLimit>>,
    connections: http::ConnectionArgs,
}

impl App {
    /// Answers one request. The two hottest routes, an entry's rank and a
    /// leaderboard page, go straight to their handlers (same rate limit, same
    /// answers: at a hundred thousand requests per second per core the
    /// router's matching and middleware layers cost a third of a request);
    /// everything else goes through the router.
    async fn call(
        self,
        peer: SocketAddr,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<Response, std::convert::Infallible> {
        let started = std::time::Instant::now();
        let route = super::RouteLabel::of(request.uri().path());
        let response = self.answer(peer, request).await;
        // Every answer is counted here, whatever produced it: a handler, an
        // extractor's rejection, the rate limit, the fallback or an admin route.
        super::count_request(route, response.status(), started.elapsed());
        Ok(response)
    }

    async fn answer(
        self,
        peer: SocketAddr,
        mut request: hyper::Request<hyper::body::Incoming>,
    ) -> Response {
        if request.method() == Method::GET {
            if let Some(route) = HotRoute::of(request.uri()) {
                if let Some(limit) = &self.limit {
                    if let Some(refused) =
                        limit.refusal(limit.client(request.headers(), Some(peer)))
                    {
                        return refused;
                    }
                }
                let state = self.state;
                return match route {
                    HotRoute::Entry(contest, entry) => super::entry_rank_of(&state, contest, entry)
                        .await
                        .into_response(),
                    HotRoute::Page {
                        contest,
                        offset,
                        limit,
                    } => super::leaderboard_page(&state, contest, offset, limit)
                        .await
                        .into_response(),
                };
            }
        }
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        match self
            .router
            .oneshot(request.map(axum::body::Body::new))
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A request for one of the routes answered ahead of the router, recognised
/// only when neither its path nor its query needs percent-decoding (valid ids
/// and numbers never do); anything else is left to the router, which decides.
#[derive(Debug, PartialEq, Eq)]
enum HotRoute<'a> {
    /// `/v1/contests/{contest}/entries/{entry}`
    Entry(&'a str, &'a str),
    /// `/v1/contests/{contest}/leaderboard?offset=…&limit=…`
    Page {
        contest: &'a str,
        offset: Option<&'a str>,
        limit: Option<&'a str>,
    },
}

impl<'a> HotRoute<'a> {
    fn of(uri: &'a Uri) -> Option<HotRoute<'a>> {
        let plain = |segment: &str| !segment.is_empty() && !segment.contains(['/', '%']);
        let rest = uri.path().strip_prefix("/v1/contests/")?;
        if let Some(contest) = rest.strip_suffix("/leaderboard") {
            let (mut offset, mut limit) = (None, None);
            let query = uri.query().unwrap_or("");
            if query.contains(['%', '+']) {
                return None;
            }
            // As the router's query map: the last of a repeated name wins.
            for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                match pair.split_once('=').unwrap_or((pair, "")) {
                    ("offset", value) => offset = Some(value),
                    ("limit", value) => limit = Some(value),
                    _ => {}
                }
            }
            return plain(contest).then_some(HotRoute::Page {
                contest,
                offset,
                limit,
            });
        }
        let (contest, entry) = rest.split_once("/entries/")?;
        (plain(contest) && plain(entry)).then_some(HotRoute::Entry(contest, entry))
    }
}

/// Builds the application: API routes (rate-limited) and admin routes.
/// `/readyz` is ready when Redis and the durable store answer.
pub fn app(
    cache: NodeCache,
    redis_url: &str,
    store: Option<SharedStore>,
    options: &ServeOptions,
) -> anyhow::Result<App> {
    let checks = vec![
        ReadyCheck::new("redis", hot::pinger(redis_url)?),
        ReadyCheck::new("store", move || {
            let store = store.clone();
            async move {
                match store {
                    Some(store) => store.ping().await.map_err(|error| error.to_string()),
                    None => Err("no durable store is configured".to_owned()),
                }
            }
        }),
    ];
    let state = Arc::new(ApiState {
        cache,
        per_request_redis: options.per_request_redis,
    });
    let admin_api = super::admin::AdminApi::new(
        options.admin.admin_token.as_deref(),
        state.cache.connection(),
        state.cache.store(),
    );
    let mut api = router(state.clone()).merge(super::admin::router(admin_api));
    let limit = NonZeroU32::new(options.rate_limit)
        .zip(NonZeroU32::new(options.rate_burst))
        .map(|(per_second, burst)| {
            RateLimit::new(
                per_second,
                burst,
                options.rate_max_clients,
                Proxies::new(options.trusted_proxies.clone()),
            )
        });
    if let Some(limit) = &limit {
        api = api.layer(axum::middleware::from_fn_with_state(
            limit.clone(),
            ratelimit::limit,
        ));
    }
    Ok(App {
        router: admin::router(metrics::REGISTRY.clone(), checks).merge(api),
        state,
        limit,
        connections: options.connections.clone(),
    })
}

/// Serves until `shutdown`.
pub async fn run(
    listener: TcpListener,
    redis_url: &str,
    store: &str,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = &*metrics::HTTP_REQUESTS;
    let _ = &*super::ROUTE_SECONDS;
    let _ = &*metrics::BACKEND_READS;
    let connection = hot::connect(redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
    let store = leaderboard_store::open(store)
        .await
        .with_context(|| format!("cannot open the durable store `{store}`"))?;
    let cache = NodeCache::new(connection, Duration::from_millis(options.max_staleness_ms))
        .with_store(store.clone())
        .with_preload_from(options.preload_teams_from);
    let app = app(cache.clone(), redis_url, Some(store), &options)?;
    let address = listener.local_addr()?;
    let threads = match options.http_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    tracing::info!(%address, threads, rate_limit = options.rate_limit, "leaderboard listening");
    // The first task to fail stops the other and the process exits with it.
    let mut tasks = Supervisor::new(shutdown.clone());
    let (follower_stop, redis_url) = (shutdown.clone(), redis_url.to_owned());
    tasks.spawn("the notice follower", async move {
        follow_notices(cache, redis_url, follower_stop).await;
        Ok(())
    });
    let server_stop = shutdown.clone();
    tasks.spawn("the HTTP server", async move {
        if threads == 1 {
            serve_http1(listener, app, server_stop.clone()).await;
        } else {
            let serve =
                move |stream, peer, shutdown| serve_connection(stream, peer, app.clone(), shutdown);
            let permits = options.connections.permits();
            http::serve_per_thread(listener, threads, permits, server_stop.clone(), serve).await?;
        }
        // The server ends on shutdown; make sure the follower does too.
        server_stop.cancel();
        Ok(())
    });
    let outcome = tasks.wait().await;
    tracing::info!("leaderboard stopped");
    outcome
}

/// Serves one HTTP/1.1 connection until it ends, or, after `shutdown`, until
/// its request in flight is answered.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    shutdown: CancellationToken,
) {
    let connections = app.connections.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            app.clone().call(peer, request)
        });
    http::serve_http1(&connections, stream, service, shutdown).await;
}

/// Serves `app` over plain HTTP/1.1 connections (the API's clients and load
/// balancers speak HTTP/1.1; skipping the HTTP/2 preface detection of
/// `axum::serve` is measurably cheaper per request). Each request carries its
/// peer address for the rate limit. On `shutdown` it stops accepting and lets
/// every connection finish its request in flight.
pub async fn serve_http1(listener: TcpListener, app: App, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let permits = app.connections.permits();
    while let Some((stream, peer, permit)) = http::accept(&listener, &permits, &shutdown).await {
        // A child token per connection: polling a token locks its node, and
        // the connection's select polls it on every request; one node shared
        // by every connection would be one contended lock.
        let (app, shutdown) = (app.clone(), shutdown.child_token());
        connections.spawn(async move {
            serve_connection(stream, peer, app, shutdown).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(uri: &'static str) -> Option<String> {
        let uri: &'static Uri = Box::leak(Box::new(uri.parse().unwrap()));
        HotRoute::of(uri).map(|route| match route {
            HotRoute::Entry(contest, entry) => format!("entry {contest} {entry}"),
            HotRoute::Page {
                contest,
                offset,
                limit,
            } => format!("page {contest} {offset:?} {limit:?}"),
        })
    }

    #[test]
    fn hot_routes_are_recognised_and_everything_else_is_left_to_the_router() {
        assert_eq!(route("/v1/contests/c1/entries/e7").unwrap(), "entry c1 e7");
        assert_eq!(
            route("/v1/contests/c1/leaderboard?limit=5&offset=10").unwrap(),
            r#"page c1 Some("10") Some("5")"#
        );
        assert_eq!(
            route("/v1/contests/c1/leaderboard?limit=5&x=1&limit=7&offset").unwrap(),
            r#"page c1 Some("") Some("7")"#
        );
        assert_eq!(
            route("/v1/contests/c1/leaderboard").unwrap(),
            "page c1 None None"
        );
        for other in [
            "/v1/contests/c1/entries/e7/around",
            "/v1/contests/c1/entries/",
            "/v1/contests//entries/e7",
            "/v1/contests/c%31/entries/e7",
            "/v1/contests/c1/entries/e%37",
            "/v1/contests/a/b/leaderboard",
            "/v1/contests//leaderboard",
            "/v1/contests/c1/leaderboard?limit=%35",
            "/v1/contests/c1/leaderboard?limit=+5",
            "/v1/matches/m1/players",
            "/v1/openapi.json",
            "/metrics",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }
}
