//! Per-client rate limit: a token bucket per client address (`governor`,
//! GCRA), answering 429 with `Retry-After` when a client runs dry.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use crate::metrics;

/// The limiter and how to tell clients apart.
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    per_second: u32,
    trust_forwarded: bool,
}

impl RateLimit {
    /// `per_second` sustained requests per client, bursts of `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, trust_forwarded: bool) -> Arc<RateLimit> {
        Arc::new(RateLimit {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
            trust_forwarded,
        })
    }

    /// Who is asking: the peer address, or the first X-Forwarded-For address
    /// when the proxy in front is trusted.
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        if self.trust_forwarded {
            let forwarded = headers
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.split(',').next())
                .and_then(|first| first.trim().parse().ok());
            if let Some(address) = forwarded {
                return address;
            }
        }
        peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
    }

    /// Spends one token of `client`'s bucket; when it is dry, the 429 answer
    /// (with `Retry-After`) to send instead.
    pub fn refusal(&self, client: IpAddr) -> Option<Response> {
        let Err(not_until) = self.limiter.check_key(&client) else {
            return None;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        metrics::HTTP_REQUESTS
            .with_label_values(&["rate_limited", "429"])
            .inc();
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": format!("rate limit exceeded: {} requests per second per client", self.per_second) })),
        )
            .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.max(1).to_string()).expect("digits are a valid header"),
        );
        Some(response)
    }
}

/// The middleware: passes the request on, or answers 429.
pub async fn limit(State(limit): State<Arc<RateLimit>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    match limit.refusal(limit.client(request.headers(), peer)) {
        None => next.run(request).await,
        Some(refused) => refused,
    }
}
