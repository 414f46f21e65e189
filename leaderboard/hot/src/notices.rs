//! Following contest notices on one server or on a cluster.
//!
//! On one server a node subscribes with `SUBSCRIBE` on a dedicated pub/sub
//! connection. On a cluster notices are sharded (`SPUBLISH`), so a node
//! subscribes with `SSUBSCRIBE` on redis-rs's async cluster connection over
//! RESP3: each channel's subscription goes to the shard that owns the
//! channel's slot, and messages come back through the connection's push
//! sender. Every channel is subscribed again every [`RENEW_EVERY`], which
//! moves it to the promoted replica after a failover; that confirmation is
//! reported as [`Event::Resubscribed`], since notices may have been missed
//! while the shard moved.

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use crate::connection::{cluster_builder, Topology};

/// What a subscription hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message on a channel.
    Notice { channel: String, payload: Vec<u8> },
    /// The channel was subscribed again after a reconnection: whatever it
    /// names may have moved unseen.
    Resubscribed { channel: String },
}

/// Subscribes and unsubscribes channels.
#[allow(missing_debug_implementations)]
pub enum Subscriptions {
    Single(PubSubSink),
    Cluster {
        connection: ClusterConnection,
        /// The channels subscribed, which [`renew`] subscribes again.
        channels: Arc<Mutex<HashSet<String>>>,
    },
}

/// How often a cluster subscription's channels are subscribed again.
///
/// When a master dies, the shard subscriptions it held die with it, and the
/// cluster client does not move them to the promoted replica by itself
/// until something else makes it refresh its slot map. Subscribing every
/// channel again moves each one to the node that owns its slot now (or is a
/// no-op on the same node); the confirmation is reported as
/// [`Event::Resubscribed`], so the follower re-reads what it names.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// Subscribes the tracked channels again every [`RENEW_EVERY`] until the
/// [`Subscriptions`] is dropped.
async fn renew(connection: ClusterConnection, channels: std::sync::Weak<Mutex<HashSet<String>>>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(channels) = channels.upgrade() else {
            return;
        };
        let list: Vec<String> = channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        drop(channels);
        for channel in list {
            let mut connection = connection.clone();
            if let Err(error) = connection.ssubscribe(&channel).await {
                tracing::warn!(%channel, %error, "cannot renew a shard subscription; trying again");
            }
        }
    }
}

/// The messages of a [`Subscriptions`]; `None` once the connection is gone.
#[allow(missing_debug_implementations)]
pub enum Messages {
    Single(PubSubStream),
    Cluster {
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        /// Channels whose first confirmation was already seen.
        confirmed: std::collections::HashSet<String>,
    },
}

/// Opens a subscription connection to `REDIS_URL`.
pub async fn subscribe_to(url: &str) -> RedisResult<(Subscriptions, Messages)> {
    match Topology::parse(url)? {
        Topology::Single(url) => {
            let (sink, stream) = redis::Client::open(url)?.get_async_pubsub().await?.split();
            Ok((Subscriptions::Single(sink), Messages::Single(stream)))
        }
        Topology::Cluster(seeds) => {
            let (sender, pushes) = mpsc::unbounded_channel();
            let connection = cluster_builder(seeds)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(sender)
                .build()?
                .get_async_connection()
                .await?;
            let channels = Arc::new(Mutex::new(HashSet::new()));
            tokio::spawn(renew(connection.clone(), Arc::downgrade(&channels)));
            Ok((
                Subscriptions::Cluster {
                    connection,
                    channels,
                },
                Messages::Cluster {
                    pushes,
                    confirmed: Default::default(),
                },
            ))
        }
    }
}

impl Subscriptions {
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Subscriptions::Single(sink) => sink.subscribe(channels).await,
            Subscriptions::Cluster {
                connection,
                channels: tracked,
            } => {
                // One SSUBSCRIBE per channel: channels of different slots
                // cannot share one command.
                for channel in channels {
                    connection.ssubscribe(channel).await?;
                    tracked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(channel.clone());
                }
                Ok(())
            }
        }
    }

    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Subscriptions::Single(sink) => sink.unsubscribe(channels).await,
            Subscriptions::Cluster {
                connection,
                channels: tracked,
            } => {
                for channel in channels {
                    tracked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(channel);
                    connection.sunsubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether the connection follows a cluster (sharded channels).
    pub fn sharded(&self) -> bool {
        matches!(self, Subscriptions::Cluster { .. })
    }
}

impl Messages {
    /// The next message, or `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Event> {
        match self {
            Messages::Single(stream) => {
                let message = stream.next().await?;
                Some(Event::Notice {
                    channel: message.get_channel_name().to_string(),
                    payload: message.get_payload_bytes().to_vec(),
                })
            }
            Messages::Cluster { pushes, confirmed } => loop {
                let push = pushes.recv().await?;
                if let Some(event) = cluster_event(push, confirmed) {
                    return Some(event);
                }
            },
        }
    }
}

/// A cluster push as an [`Event`]; `None` for pushes that say nothing new
/// (a first subscription's confirmation, unsubscriptions).
fn cluster_event(
    push: PushInfo,
    confirmed: &mut std::collections::HashSet<String>,
) -> Option<Event> {
    let text = |value: &Value| -> Option<Vec<u8>> {
        match value {
            Value::BulkString(bytes) => Some(bytes.clone()),
            Value::SimpleString(text) => Some(text.clone().into_bytes()),
            _ => None,
        }
    };
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            let channel = String::from_utf8(text(push.data.first()?)?).ok()?;
            let payload = text(push.data.get(1)?)?;
            Some(Event::Notice { channel, payload })
        }
        PushKind::SSubscribe | PushKind::Subscribe => {
            let channel = String::from_utf8(text(push.data.first()?)?).ok()?;
            if confirmed.insert(channel.clone()) {
                None
            } else {
                Some(Event::Resubscribed { channel })
            }
        }
        PushKind::SUnsubscribe | PushKind::Unsubscribe => {
            if let Some(channel) = push
                .data
                .first()
                .and_then(text)
                .and_then(|b| String::from_utf8(b).ok())
            {
                confirmed.remove(&channel);
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, data: &[&str]) -> PushInfo {
        PushInfo {
            kind,
            data: data
                .iter()
                .map(|d| Value::BulkString(d.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_second_confirmation_is_a_resubscription() {
        let mut confirmed = Default::default();
        let ch = "lb:c:{c1}:changed";
        assert_eq!(
            cluster_event(push(PushKind::SSubscribe, &[ch]), &mut confirmed),
            None
        );
        assert_eq!(
            cluster_event(push(PushKind::SMessage, &[ch, "{}"]), &mut confirmed),
            Some(Event::Notice {
                channel: ch.into(),
                payload: b"{}".to_vec()
            })
        );
        assert_eq!(
            cluster_event(push(PushKind::SSubscribe, &[ch]), &mut confirmed),
            Some(Event::Resubscribed { channel: ch.into() })
        );
        assert_eq!(
            cluster_event(push(PushKind::SUnsubscribe, &[ch]), &mut confirmed),
            None
        );
        assert_eq!(
            cluster_event(push(PushKind::SSubscribe, &[ch]), &mut confirmed),
            None,
            "subscribed anew after an unsubscription"
        );
        assert_eq!(
            cluster_event(push(PushKind::SMessage, &[ch]), &mut confirmed),
            None,
            "a message without payload is dropped"
        );
    }
}
