//! Service plumbing every binary shares: configuration, telemetry, shutdown and admin routes.

pub mod admin;
pub mod config;
pub mod shutdown;
pub mod telemetry;
