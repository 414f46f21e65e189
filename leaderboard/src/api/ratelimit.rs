//! Per-client rate limit: a token bucket per client address (`governor`,
//! GCRA), answering 429 with `Retry-After` when a client runs dry.
//!
//! The table of buckets is bounded: a thread prunes buckets that are full
//! again (idle clients) every second, and should more than `max_clients`
//! addresses still be tracked (a flood of distinct addresses), the table is
//! replaced by an empty one (`arc-swap`, so a request never waits for it).
//!
//! Behind proxies the client is the right-most `X-Forwarded-For` address
//! that is not one of the trusted proxies: the hop the nearest trusted proxy
//! appended. Addresses to its left are the client's own claims and are never
//! believed.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde_json::json;

use crate::metrics;

/// How often idle buckets are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Checks between two looks at the table's size on one thread.
const SIZE_CHECK_EVERY: u32 = 256;

thread_local! {
    static CHECKS: Cell<u32> = const { Cell::new(0) };
}

/// Who the limiter trusts to say who the client is.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    trusted: Vec<IpNet>,
}

impl Proxies {
    pub fn new(trusted: Vec<IpNet>) -> Proxies {
        Proxies { trusted }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// The client of a request from `peer`: the peer itself, unless it is a
    /// trusted proxy; then the right-most `X-Forwarded-For` hop that is not a
    /// trusted proxy (every header line, in order). Malformed hops stop the
    /// walk: nothing left of them can be believed, so the last good hop (or
    /// the proxy) is the client.
    pub fn client(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(address) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// The limiter and how to tell clients apart.
#[derive(Debug)]
pub struct RateLimit {
    limiter: ArcSwap<Limiter>,
    quota: Quota,
    per_second: u32,
    max_clients: usize,
    proxies: Proxies,
}

impl RateLimit {
    /// `per_second` sustained requests per client, bursts of `burst`, at most
    /// `max_clients` addresses tracked at once.
    pub fn new(
        per_second: NonZeroU32,
        burst: NonZeroU32,
        max_clients: usize,
        proxies: Proxies,
    ) -> Arc<RateLimit> {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let limit = Arc::new(RateLimit {
            limiter: ArcSwap::from_pointee(RateLimiter::keyed(quota)),
            quota,
            per_second: per_second.get(),
            max_clients: max_clients.max(1),
            proxies,
        });
        let weak = Arc::downgrade(&limit);
        let pruner = std::thread::Builder::new()
            .name("rate-limit-prune".into())
            .spawn(move || prune_until_dropped(weak));
        if let Err(error) = pruner {
            tracing::warn!(%error, "cannot start the rate limiter's pruner; the size bound still holds");
        }
        limit
    }

    /// Who is asking (see [`Proxies::client`]).
    pub fn client(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip());
        self.proxies.client(headers, peer)
    }

    /// Client addresses tracked right now.
    pub fn tracked_clients(&self) -> usize {
        self.limiter.load().len()
    }

    /// Drops the buckets of idle clients; forgets every bucket when more
    /// than `max_clients` are still tracked.
    pub fn prune(&self) {
        let limiter = self.limiter.load();
        limiter.retain_recent();
        limiter.shrink_to_fit();
        self.bound();
    }

    fn bound(&self) {
        let tracked = self.limiter.load().len();
        if tracked > self.max_clients {
            self.limiter.store(Arc::new(RateLimiter::keyed(self.quota)));
            metrics::RATE_LIMIT_RESETS.inc();
            tracing::warn!(
                tracked,
                max_clients = self.max_clients,
                "rate limiter tracked too many client addresses; started afresh"
            );
        }
    }

    /// Spends one token of `client`'s bucket; when it is dry, the 429 answer
    /// (with `Retry-After`) to send instead.
    pub fn refusal(&self, client: IpAddr) -> Option<Response> {
        let checks = CHECKS.with(|checks| {
            let next = checks.get().wrapping_add(1);
            checks.set(next);
            next
        });
        if checks % SIZE_CHECK_EVERY == 0 {
            self.bound();
        }
        let Err(not_until) = self.limiter.load().check_key(&client) else {
            return None;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
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

fn prune_until_dropped(limit: Weak<RateLimit>) {
    loop {
        std::thread::sleep(PRUNE_EVERY);
        let Some(limit) = limit.upgrade() else {
            return;
        };
        limit.prune();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_hop_the_trusted_proxy_appended_never_its_own_claim() {
        let proxies = Proxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy = ip("10.0.0.2");
        // The proxy appended the real peer (203.0.113.9) after the client's claim.
        let spoofed = headers(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(proxies.client(&spoofed, proxy), ip("203.0.113.9"));
        // Two trusted proxies: skip both.
        let chained = headers(&["6.6.6.6", "203.0.113.9, 10.1.1.1"]);
        assert_eq!(proxies.client(&chained, proxy), ip("203.0.113.9"));
        // Not from a trusted proxy: the header is the client's own claim.
        assert_eq!(
            proxies.client(&spoofed, ip("198.51.100.1")),
            ip("198.51.100.1")
        );
        // A garbled hop ends the walk at the last good one.
        assert_eq!(
            proxies.client(&headers(&["garbage, 203.0.113.9"]), proxy),
            ip("203.0.113.9")
        );
        assert_eq!(proxies.client(&headers(&["garbage"]), proxy), proxy);
        assert_eq!(proxies.client(&HeaderMap::new(), proxy), proxy);
    }

    #[test]
    fn a_spoofed_header_does_not_escape_the_limit() {
        let limit = RateLimit::new(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(5).unwrap(),
            1_000,
            Proxies::new(vec!["127.0.0.1/32".parse().unwrap()]),
        );
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut refused = 0;
        for attempt in 0..50 {
            // A new claimed address every time; the proxy appends the same peer.
            let claim = format!("192.0.2.{attempt}, 203.0.113.9");
            let client = limit.client(&headers(&[&claim]), Some(proxy));
            refused += usize::from(limit.refusal(client).is_some());
        }
        assert_eq!(refused, 45, "the burst of 5, then every request refused");
    }

    #[test]
    fn a_million_distinct_addresses_keep_the_table_bounded() {
        let max_clients = 10_000;
        let limit = RateLimit::new(
            NonZeroU32::new(10).unwrap(),
            NonZeroU32::new(10).unwrap(),
            max_clients,
            Proxies::default(),
        );
        let mut largest = 0;
        for n in 0..1_000_000_u32 {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert!(limit.refusal(client).is_none(), "a first request passes");
            if n % 1_000 == 0 {
                largest = largest.max(limit.tracked_clients());
            }
        }
        largest = largest.max(limit.tracked_clients());
        assert!(
            largest <= max_clients + SIZE_CHECK_EVERY as usize,
            "tracked {largest} addresses, bound {max_clients}"
        );
    }
}
