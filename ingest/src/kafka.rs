//! Kafka client settings shared by producers and consumers.

use rdkafka::config::ClientConfig;

/// The settings every client shares.
pub fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        // The broker may be restarting: keep retrying rather than failing fast.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "5000");
    config
}

/// A producer that keeps each match's events in order: one request in flight
/// per connection, every replica acknowledging.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "2")
        .set("partitioner", "murmur2_random");
    config
}

/// A consumer-group member that commits by hand, only after effects are written.
pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = base_config(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("statistics.interval.ms", "5000")
        // Hand a fetched message over at once: this is a live feed, not a bulk load.
        .set("fetch.wait.max.ms", "10");
    config
}
