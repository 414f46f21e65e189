//! The node's one Redis pub/sub connection.
//!
//! It subscribes to a contest's channel when the hub opens a room and
//! unsubscribes when the room empties, and hands every version notice to the
//! hub. When the connection drops it reconnects with backoff and jitter,
//! subscribes every open room again and resynchronizes them, since notices
//! may have been missed in the gap. On a Redis Cluster the channels are
//! sharded (`SSUBSCRIBE`, see `leaderboard_hot::notices`): each contest's
//! subscription lives on the shard that owns the contest, and a shard that
//! failed over resubscribes by itself, which resynchronizes its contest.

use leaderboard_core::ContestId;
use leaderboard_hot::notices::{self, Event, Messages, Subscriptions};
use leaderboard_hot::{self as hot, ContestChanged};
use leaderboard_service::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::{Channel, Hub};
use crate::metrics;

/// Follows the hub's rooms until `shutdown`.
pub async fn run(
    hub: Hub,
    redis_url: String,
    mut channels: mpsc::UnboundedReceiver<Channel>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    let mut first = true;
    loop {
        match connect(&redis_url, &hub).await {
            Ok((mut sink, mut messages)) => {
                backoff.reset();
                if !first {
                    metrics::REDIS_RECONNECTS.inc();
                    tracing::info!("pub/sub connection back; resynchronizing every contest");
                }
                first = false;
                hub.resync();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        change = channels.recv() => match change {
                            Some(change) => {
                                if let Err(error) = apply(&mut sink, &hub, change).await {
                                    tracing::warn!(%error, "pub/sub subscription failed");
                                    break;
                                }
                            }
                            None => return,
                        },
                        message = messages.next() => match message {
                            Some(message) => on_event(&hub, message),
                            None => break,
                        },
                    }
                }
                tracing::warn!("pub/sub connection lost, reconnecting");
            }
            Err(error) => tracing::warn!(%error, "cannot reach Redis for pub/sub, retrying"),
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// A fresh pub/sub connection subscribed to every open room.
async fn connect(redis_url: &str, hub: &Hub) -> redis::RedisResult<(Subscriptions, Messages)> {
    let (mut sink, stream) = notices::subscribe_to(redis_url).await?;
    let channels: Vec<String> = hub.contests().iter().map(hot::contest_channel).collect();
    sink.subscribe(&channels).await?;
    Ok((sink, stream))
}

async fn apply(sink: &mut Subscriptions, hub: &Hub, change: Channel) -> redis::RedisResult<()> {
    match change {
        Channel::Subscribe(contest_id) => {
            sink.subscribe(&[hot::contest_channel(&contest_id)]).await?;
            // A notice may have gone out between the first read and now.
            hub.force(&contest_id);
        }
        Channel::Unsubscribe(contest_id) => {
            // The room may have been opened again meanwhile.
            if !hub.contests().contains(&contest_id) {
                sink.unsubscribe(&[hot::contest_channel(&contest_id)])
                    .await?;
            }
        }
    }
    Ok(())
}

fn on_event(hub: &Hub, event: Event) {
    let (channel, payload) = match event {
        Event::Notice { channel, payload } => (channel, payload),
        Event::Resubscribed { channel } => {
            // The shard moved (a failover): notices may have been missed.
            tracing::info!(%channel, "subscription restored; resynchronizing its contest");
            if let Some(contest_id) = contest_of(&channel) {
                hub.force(&contest_id);
            }
            return;
        }
    };
    match serde_json::from_slice::<ContestChanged>(&payload) {
        Ok(notice) => hub.notice(&notice.contest_id),
        Err(error) => {
            // Not a notice we know: re-read the contest the channel names.
            tracing::warn!(%channel, %error, "unreadable notice");
            if let Some(contest_id) = contest_of(&channel) {
                hub.force(&contest_id);
            }
        }
    }
}

/// `lb:c:{c1}:changed` → `c1`.
fn contest_of(channel: &str) -> Option<ContestId> {
    let tagged = channel.strip_prefix("lb:c:")?.strip_suffix(":changed")?;
    ContestId::parse(tagged.trim_start_matches('{').trim_end_matches('}')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_contest() {
        let contest = ContestId::parse("c-9").unwrap();
        assert_eq!(
            contest_of(&hot::contest_channel(&contest)),
            Some(contest.clone())
        );
        assert_eq!(contest_of("lb:m:{1}:changed"), None);
        assert_eq!(contest_of("other"), None);
    }
}
