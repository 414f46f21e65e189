//! Service plumbing every binary shares: configuration, telemetry, shutdown,
//! admin routes and the HTTP accept loop.

pub mod admin;
pub mod config;
pub mod http;
pub mod shutdown;
pub mod telemetry;
