//! Ingest: Kafka consumers and producers of the platform.
//!
//! - [`replay`]: Cricsheet matches → `match-events` (`ingest replay`);
//! - [`pipeline`]: the I/O-free state machine from messages to effects;
//! - [`run`]: the consumer service (`ingest run`);
//! - [`routing`]: how replicas share matches (the internal topic keyed by match);
//! - [`topics`], [`kafka`]: topic names, creation and client settings;
//! - [`contests`]: generated contests and entries (for demos and load tests).
//!
//! Kafka is reached through `rdkafka` with its bundled librdkafka (the one
//! Debian ships is too old for some brokers), Redis through `redis` with its
//! reconnecting `HotConnection`.

pub mod contests;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod routing;
pub mod run;
pub mod topics;
