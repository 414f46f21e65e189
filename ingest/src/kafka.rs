//! Kafka client settings shared by producers and consumers.

use leaderboard_service::backoff::Failure;
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

/// Whether a Kafka error code can pass by itself: refused permissions,
/// authentication and invalid settings cannot, anything else (a broker
/// restarting, a timeout, a leader moving) may.
pub fn failure(code: Option<rdkafka::types::RDKafkaErrorCode>) -> Failure {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match code {
        Some(
            Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::DelegationTokenAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::InvalidConfig
            | Code::InvalidPartitions
            | Code::InvalidReplicationFactor
            | Code::PolicyViolation
            | Code::InvalidArgument,
        ) => Failure::Permanent,
        _ => Failure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as Code;

    #[test]
    fn refused_permissions_are_permanent_and_outages_transient() {
        assert_eq!(
            failure(Some(Code::TopicAuthorizationFailed)),
            Failure::Permanent
        );
        assert_eq!(failure(Some(Code::InvalidConfig)), Failure::Permanent);
        assert_eq!(
            failure(Some(Code::BrokerTransportFailure)),
            Failure::Transient
        );
        assert_eq!(failure(Some(Code::RequestTimedOut)), Failure::Transient);
        assert_eq!(failure(None), Failure::Transient);
    }
}
