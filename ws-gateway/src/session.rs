//! One WebSocket connection: reads requests, writes what its outbox holds,
//! keeps the heartbeat, and enforces the per-connection limits.
//!
//! One task per connection, one `select!` loop: the outbox is drained before
//! waiting, and a write that the client does not take within the stuck limit
//! ends the connection (close code 1008), so a stuck client costs one outbox
//! and one socket, never a growing queue or a delay for anyone else. States
//! for a caught-up client usually never pass through here: the fan-out writes
//! them straight into the socket (see [`crate::wire`]), and the session only
//! finishes a frame the socket took in part.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use leaderboard_core::ContestId;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics;
use crate::outbox::Outbox;
use crate::protocol::{self, ProtocolError, Request};
use crate::token::TokenSecret;
use crate::wire::WireIo;

/// Close code sent on SIGTERM: the client should reconnect (to another node).
pub const CLOSE_RESTART: CloseCode = CloseCode::Restart;
/// Close code for a client that stopped taking frames, or flooded its outbox.
pub const CLOSE_SLOW: CloseCode = CloseCode::Policy;
/// Close code for a client silent past the idle timeout.
pub const CLOSE_IDLE: CloseCode = CloseCode::Away;

/// Per-connection limits and timers.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_subscriptions: usize,
    /// Requests per second (token bucket), and the burst.
    pub rate: NonZeroU32,
    pub burst: NonZeroU32,
    /// A ping goes out this often; a client silent for `idle_timeout` is closed.
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    /// Longest a single write may wait for the client.
    pub stuck_timeout: Duration,
    /// Control frames (pongs, errors) that may wait in the outbox.
    pub control_limit: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            max_subscriptions: 16,
            rate: NonZeroU32::new(20).expect("non-zero"),
            burst: NonZeroU32::new(40).expect("non-zero"),
            heartbeat: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            stuck_timeout: Duration::from_secs(10),
            control_limit: 64,
        }
    }
}

/// What every session of a node shares.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub hub: Hub,
    pub limits: SessionLimits,
    pub secret: Option<TokenSecret>,
    pub shutdown: CancellationToken,
}

/// How a session ended.
enum End {
    /// The client closed or vanished.
    Gone,
    /// The gateway closes with this code and reason.
    Close(CloseCode, &'static str, &'static str),
}

/// Runs one connection to its end.
pub async fn run(mut ws: WebSocketStream<WireIo>, context: Arc<SessionContext>) {
    metrics::CONNECTIONS.inc();
    let wire = ws.get_ref().wire().clone();
    let mut session = Session {
        id: context.hub.session_id(),
        outbox: Arc::new(Outbox::with_wire(
            context.limits.control_limit,
            wire.clone(),
        )),
        subscriptions: Vec::new(),
        limiter: RateLimiter::direct(
            Quota::per_second(context.limits.rate).allow_burst(context.limits.burst),
        ),
        context: context.clone(),
    };
    let end = session.serve(&mut ws).await;
    // Nothing more straight into the socket: a close frame may follow.
    wire.close();
    for contest_id in std::mem::take(&mut session.subscriptions) {
        context.hub.leave(session.id, &contest_id);
    }
    if let End::Close(code, reason, label) = end {
        metrics::CLOSED.with_label_values(&[label]).inc();
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        // A stuck client may not take even this; it is dropped either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    }
    metrics::CONNECTIONS.dec();
}

struct Session {
    id: u64,
    outbox: Arc<Outbox>,
    subscriptions: Vec<ContestId>,
    limiter: DefaultDirectRateLimiter,
    context: Arc<SessionContext>,
}

impl Session {
    async fn serve(&mut self, ws: &mut WebSocketStream<WireIo>) -> End {
        let limits = self.context.limits.clone();
        let wire = ws.get_ref().wire().clone();
        // A child token per session: polling a token locks its node, and one
        // node shared by every session would be one lock contended by all of
        // them on every wake-up (a fan-out wakes thousands at once).
        let shutdown = self.context.shutdown.child_token();
        // Both waits live across iterations: re-creating them per frame
        // would register and unregister a waiter each time.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let outbox = self.outbox.clone();
        let ready = outbox.ready();
        tokio::pin!(ready);
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + limits.heartbeat,
            limits.heartbeat,
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            // Finish a frame the fan-out wrote only in part.
            if wire.has_rest() {
                match tokio::time::timeout(limits.stuck_timeout, ws.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Gone,
                    Err(_) => {
                        return End::Close(
                            CLOSE_SLOW,
                            "slow consumer: a frame waited too long",
                            "slow",
                        )
                    }
                }
            }
            // Write whatever waits, one frame at a time.
            while let Some(frame) = self.outbox.pop() {
                let sent = &FRAMES_SENT[frame_type_index(&frame)];
                // (Polling the write once before arming the timer was tried:
                // no faster here, and the session's future grew by 1 KB.)
                let done =
                    tokio::time::timeout(limits.stuck_timeout, ws.send(Message::Text(frame))).await;
                match done {
                    Ok(Ok(())) => sent.inc(),
                    Ok(Err(_)) => return End::Gone,
                    Err(_) => {
                        return End::Close(
                            CLOSE_SLOW,
                            "slow consumer: a frame waited too long",
                            "slow",
                        )
                    }
                }
            }
            if self.outbox.overflowed() {
                return End::Close(
                    CLOSE_SLOW,
                    "slow consumer: too many frames waiting",
                    "flood",
                );
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    return End::Close(CLOSE_RESTART, "gateway restarting: reconnect", "shutdown");
                }
                _ = &mut ready => ready.set(outbox.ready()),
                incoming = ws.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        None => return End::Gone,
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                        Some(Ok(Message::Binary(_))) => self.error(&ProtocolError::new(
                            "bad_frame",
                            "binary frames are not part of the protocol; send JSON text",
                        ), None),
                        Some(Ok(Message::Close(_))) => return End::Gone,
                        // Pings are answered by tungstenite; pongs only prove life.
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => {
                            return End::Close(CloseCode::Size, "frame too large", "too_large");
                        }
                        Some(Err(_)) => return End::Gone,
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() >= limits.idle_timeout {
                        return End::Close(CLOSE_IDLE, "idle timeout", "idle");
                    }
                    match tokio::time::timeout(limits.stuck_timeout, ws.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Gone,
                        Err(_) => return End::Close(CLOSE_SLOW, "slow consumer: ping waited too long", "slow"),
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) {
        if self.limiter.check().is_err() {
            self.error(
                &ProtocolError::new(
                    "rate_limited",
                    format!(
                        "more than {} requests per second; this one was dropped",
                        self.context.limits.rate
                    ),
                ),
                None,
            );
            return;
        }
        let request = match protocol::parse(text) {
            Ok(request) => request,
            Err(error) => return self.error(&error, None),
        };
        match request {
            Request::Ping => self.outbox.push_control(protocol::pong()),
            Request::Unsubscribe { contest_id } => {
                if let Some(at) = self.subscriptions.iter().position(|c| c == &contest_id) {
                    self.subscriptions.swap_remove(at);
                    self.context.hub.leave(self.id, &contest_id);
                    self.outbox.remove(&contest_id);
                }
                self.outbox
                    .push_control(protocol::unsubscribed(contest_id.as_str()));
            }
            Request::Subscribe(request) => {
                let contest = request.contest_id.as_str();
                let known = self.subscriptions.contains(&request.contest_id);
                if !known && self.subscriptions.len() >= self.context.limits.max_subscriptions {
                    let error = ProtocolError::new(
                        "too_many_subscriptions",
                        format!(
                            "at most {} contests per connection",
                            self.context.limits.max_subscriptions
                        ),
                    );
                    return self.error(&error, Some(contest));
                }
                if let (Some(secret), Some(entry)) = (&self.context.secret, &request.entry_id) {
                    let valid = request
                        .token
                        .as_deref()
                        .is_some_and(|token| secret.verify(contest, entry.as_str(), token));
                    if !valid {
                        let error = ProtocolError::new(
                            "unauthorized",
                            "following an entry needs its token: hex HMAC-SHA256(secret, \"contest_id:entry_id\")",
                        );
                        return self.error(&error, Some(contest));
                    }
                }
                match self
                    .context
                    .hub
                    .subscribe(self.id, &self.outbox, &request)
                    .await
                {
                    Ok(()) => {
                        if !known {
                            self.subscriptions.push(request.contest_id.clone());
                        }
                    }
                    Err(error) => {
                        if known {
                            self.subscriptions.retain(|c| c != &request.contest_id);
                        }
                        self.outbox.remove(&request.contest_id);
                        self.error(&error, Some(contest));
                    }
                }
            }
        }
    }

    fn error(&self, error: &ProtocolError, contest_id: Option<&str>) {
        metrics::ERRORS.with_label_values(&[error.code]).inc();
        self.outbox
            .push_control(protocol::error(error.code, &error.message, contest_id));
    }
}

/// The frame types we build, as the metrics label names them.
const FRAME_TYPES: [&str; 7] = [
    "update",
    "snapshot",
    "pong",
    "error",
    "subscribed",
    "unsubscribed",
    "other",
];

/// `ws_frames_sent_total` per frame type, resolved once: no label lookup per frame.
static FRAMES_SENT: std::sync::LazyLock<[prometheus::IntCounter; 7]> =
    std::sync::LazyLock::new(|| {
        FRAME_TYPES.map(|kind| metrics::FRAMES_SENT.with_label_values(&[kind]))
    });

/// Index in [`FRAME_TYPES`] of a frame we built (its `type` is its first field).
fn frame_type_index(frame: &Utf8Bytes) -> usize {
    let text = frame.as_str();
    FRAME_TYPES[..6]
        .iter()
        .position(|kind| {
            text.get(9..9 + kind.len())
                .is_some_and(|found| found == *kind)
                && text.as_bytes().get(9 + kind.len()) == Some(&b'"')
        })
        .unwrap_or(6)
}

/// The `type` of a frame we built, for the metrics label.
#[cfg(test)]
fn frame_type(frame: &Utf8Bytes) -> &'static str {
    FRAME_TYPES[frame_type_index(frame)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_labelled_by_type() {
        assert_eq!(frame_type(&protocol::pong()), "pong");
        assert_eq!(frame_type(&protocol::error("x", "y", None)), "error");
        assert_eq!(frame_type(&protocol::unsubscribed("c1")), "unsubscribed");
        let body = protocol::StateBody::render("c1", 1, 1, 0, &[]);
        assert_eq!(frame_type(&body.update), "update");
        assert_eq!(frame_type(&body.snapshot), "snapshot");
    }
}
