//! The WebSocket gateway: live contest ranks for every player.
//!
//! Laid out like mini-redis: [`server`] accepts connections (a `Semaphore`
//! caps them) and upgrades `GET /v1/ws`; [`session`] runs one connection;
//! [`protocol`] is the wire; [`hub`] is the node's shared state (which
//! clients follow which contest) and builds each new contest state once;
//! [`outbox`] is a connection's bounded, conflating queue; [`wire`] its
//! socket, shared with the fan-out; [`subscriber`] is
//! the node's one Redis pub/sub connection; [`web`] serves the viewer page.
//!
//! Crates, and why: `tokio-tungstenite` is the WebSocket implementation the
//! tokio ecosystem relies on, and lets us size its buffers for many idle
//! connections; `hyper` (already serving the read API) does the HTTP/1.1
//! side and hands the upgraded connection over; `redis` provides the split
//! pub/sub connection; `governor` the per-connection token bucket; `hmac` and
//! `sha2` (RustCrypto) the entry tokens with constant-time verification.

pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod session;
pub mod subscriber;
pub mod token;
pub mod web;
pub mod wire;

pub use server::{run, GatewayOptions};
pub use token::TokenSecret;
