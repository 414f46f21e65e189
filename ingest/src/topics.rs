//! The contract's topics, and creating them when a bare broker lacks them.

use std::time::Duration;

use leaderboard_service::backoff::Failure;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka;

pub const MATCH_EVENTS: &str = "match-events";
pub const MATCH_EVENTS_DLQ: &str = "match-events-dlq";
pub const CONTEST_ENTRIES: &str = "contest-entries";
pub const CONTEST_ENTRIES_DLQ: &str = "contest-entries-dlq";

/// The internal topic keyed by match id on which replicas meet: each
/// partition carries some matches' events and their contests' entries (see
/// [`crate::routing`]). Not part of the contract: only `ingest run` uses it.
pub const BY_MATCH: &str = "ingest-by-match";

/// Every topic of the contract.
pub const ALL: [&str; 4] = [
    MATCH_EVENTS,
    MATCH_EVENTS_DLQ,
    CONTEST_ENTRIES,
    CONTEST_ENTRIES_DLQ,
];

/// Why topics could not be made, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TopicsError {
    pub message: String,
    pub failure: Failure,
}

/// Creates the missing ones among `topics`, with `partitions` partitions each.
/// A topic that already exists is left as it is.
pub async fn ensure(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), TopicsError> {
    let admin: AdminClient<DefaultClientContext> =
        kafka::base_config(brokers)
            .create()
            .map_err(|error| TopicsError {
                message: format!("cannot create the Kafka admin client: {error}"),
                failure: Failure::Permanent,
            })?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|error| TopicsError {
            message: format!("cannot create topics on {brokers}: {error}"),
            failure: kafka::failure(error.rdkafka_error_code()),
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicsError {
                    message: format!("cannot create topic {topic}: {code}"),
                    failure: kafka::failure(Some(code)),
                })
            }
        }
    }
    Ok(())
}
