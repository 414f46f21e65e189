//! How several `ingest run` replicas share the work: every message of a
//! match, its events and its contests' entries, meets on one partition of an
//! internal topic keyed by match id, so one replica owns a match and all of
//! its contests.
//!
//! The contract keys `match-events` by match and `contest-entries` by
//! contest, so a contest's entries and its match's events would land on
//! different replicas. Each replica therefore runs two consumers:
//!
//! 1. the **router**, in the group `KAFKA_GROUP`, shares the partitions of
//!    both contract topics and forwards every message to [`topics::BY_MATCH`]
//!    on the partition of its match ([`partition_of`]), with where it came
//!    from in headers. An entry names only its contest: the router knows each
//!    contest's match from the contest messages it forwarded (stored in the
//!    durable store before they are forwarded, so another replica taking over
//!    the partition finds them there);
//! 2. the **scorer**, in the group `KAFKA_GROUP.by-match`, shares the
//!    partitions of the internal topic; it rebuilds from the store only the
//!    matches of the partitions it gains, drops those it loses, and applies
//!    messages exactly as a single replica would.
//!
//! Offsets are committed only after the forwarded messages are acknowledged
//! (router) or their effects written (scorer), so a crash anywhere repeats
//! messages, which the scorer recognises as duplicates, and loses none.
//! Messages the router cannot place (no match id can be read, an entry of an
//! unknown contest) go to the dead-letter topic with the same reason the
//! scorer would give.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use leaderboard_core::contest::ContestMessage;
use leaderboard_core::event::MatchEvent;
use leaderboard_core::ids::{ContestId, MatchId};
use leaderboard_store::{StoreBatch, StoreSnapshot};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::pipeline::{DeadLetter, Incoming};
use crate::topics;

/// Headers of a forwarded message: the contract topic, partition, offset and
/// key it was consumed from (dead letters and duplicates are told by them).
const SOURCE_TOPIC: &str = "lb-source-topic";
const SOURCE_PARTITION: &str = "lb-source-partition";
const SOURCE_OFFSET: &str = "lb-source-offset";
const SOURCE_KEY: &str = "lb-source-key";

/// The partition of [`topics::BY_MATCH`] that carries a match: FNV-1a of the
/// match id, modulo the partition count. A fixed function, so every replica
/// (and every version) agrees; the partition count of the internal topic must
/// therefore stay as it was created while matches are live.
pub fn partition_of(match_id: &MatchId, partitions: i32) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in match_id.as_str().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % partitions.max(1) as u32) as i32
}

/// Keeps of a store snapshot only what the matches `owns` accepts hold:
/// their events, their contests and those contests' entries.
pub fn retain_owned(snapshot: &mut StoreSnapshot, owns: impl Fn(&MatchId) -> bool) {
    snapshot.match_events.retain(|match_id, _| owns(match_id));
    let mut kept: BTreeSet<ContestId> = BTreeSet::new();
    snapshot.contests.retain(|(record, _)| {
        let keep = owns(&record.match_id);
        if keep {
            kept.insert(record.contest_id.clone());
        }
        keep
    });
    snapshot
        .entries
        .retain(|contest_id, _| kept.contains(contest_id));
}

/// Where one consumed message goes.
#[derive(Debug)]
enum Place {
    /// To the partition of this match.
    Match(MatchId),
    /// An entry: to the partition of its contest's match.
    Contest(ContestId),
    /// To the dead-letter topic, with the reason.
    Refused(&'static str, String),
}

/// What the router does with one batch.
#[derive(Debug, Default)]
pub struct Routed {
    /// (partition of the internal topic, match id, message) in consumed order.
    pub forward: Vec<(i32, MatchId, Incoming)>,
    /// Contests seen for the first time: stored before anything is forwarded.
    pub new_contests: StoreBatch,
    pub dead_letters: Vec<DeadLetter>,
}

/// Each contest's match, as the router learnt it.
#[derive(Debug, Default)]
pub struct Routes {
    matches: HashMap<ContestId, MatchId>,
}

impl Routes {
    /// Learns every contest's match from the store's listing (after a
    /// rebalance gave this replica partitions whose contests another replica
    /// forwarded).
    pub fn learn(&mut self, listings: Vec<leaderboard_store::ContestListing>) {
        for listing in listings {
            self.matches.insert(listing.contest_id, listing.match_id);
        }
    }

    /// Whether an entry of `batch` names a contest whose match is not known
    /// (nor told by a contest message earlier in the same batch).
    pub fn unknown(&self, batch: &[Incoming]) -> bool {
        let mut introduced: BTreeSet<ContestId> = BTreeSet::new();
        for message in batch {
            if message.topic != topics::CONTEST_ENTRIES {
                continue;
            }
            match ContestMessage::from_json(&message.payload) {
                Ok(ContestMessage::Contest(record)) => {
                    introduced.insert(record.contest_id);
                }
                Ok(ContestMessage::Entry(record)) => {
                    if !self.matches.contains_key(&record.contest_id)
                        && !introduced.contains(&record.contest_id)
                    {
                        return true;
                    }
                }
                Err(_) => {}
            }
        }
        false
    }

    /// Places every message of a batch; `partitions` is the internal topic's
    /// partition count.
    pub fn route(&mut self, batch: Vec<Incoming>, partitions: i32) -> Routed {
        let mut routed = Routed::default();
        for message in batch {
            let place = self.place(&message, &mut routed.new_contests);
            let match_id = match place {
                Place::Match(match_id) => match_id,
                Place::Contest(contest_id) => match self.matches.get(&contest_id) {
                    Some(match_id) => match_id.clone(),
                    None => {
                        let reason = leaderboard_core::team::EntryError::UnknownContest(
                            contest_id.to_string(),
                        );
                        routed.dead_letters.push(DeadLetter::of(
                            &message,
                            topics::CONTEST_ENTRIES_DLQ,
                            reason.to_string(),
                        ));
                        continue;
                    }
                },
                Place::Refused(topic, reason) => {
                    routed
                        .dead_letters
                        .push(DeadLetter::of(&message, topic, reason));
                    continue;
                }
            };
            routed
                .forward
                .push((partition_of(&match_id, partitions), match_id, message));
        }
        routed
    }

    fn place(&mut self, message: &Incoming, new_contests: &mut StoreBatch) -> Place {
        if message.topic == topics::MATCH_EVENTS {
            // The contract's key is the match id; the scorer checks that the
            // event agrees. Without a key, the event itself says.
            if let Some(key) = &message.key {
                if let Some(match_id) = std::str::from_utf8(key)
                    .ok()
                    .and_then(|key| MatchId::parse(key).ok())
                {
                    return Place::Match(match_id);
                }
            }
            return match MatchEvent::from_json(&message.payload) {
                Ok(event) => Place::Match(event.match_id),
                Err(error) => Place::Refused(topics::MATCH_EVENTS_DLQ, error.to_string()),
            };
        }
        if message.topic != topics::CONTEST_ENTRIES {
            return Place::Refused(
                topics::CONTEST_ENTRIES_DLQ,
                format!("message from an unexpected topic `{}`", message.topic),
            );
        }
        match ContestMessage::from_json(&message.payload) {
            Err(reason) => Place::Refused(topics::CONTEST_ENTRIES_DLQ, reason),
            Ok(ContestMessage::Entry(record)) => Place::Contest(record.contest_id),
            Ok(ContestMessage::Contest(record)) => {
                // A contest already known goes where it went before, whatever
                // it says now: its match's owner refuses a changed definition.
                if let Some(match_id) = self.matches.get(&record.contest_id) {
                    return Place::Match(match_id.clone());
                }
                let match_id = record.match_id.clone();
                self.matches
                    .insert(record.contest_id.clone(), match_id.clone());
                new_contests.contests.push(record);
                Place::Match(match_id)
            }
        }
    }
}

/// Forwards messages to the internal topic, all at once (the producer keeps
/// each partition's order: one request in flight per connection).
pub async fn forward(
    producer: &FutureProducer,
    messages: &[(i32, MatchId, Incoming)],
) -> Result<(), rdkafka::error::KafkaError> {
    let sends = messages.iter().map(|(partition, match_id, message)| {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: SOURCE_TOPIC,
                value: Some(message.topic.as_bytes()),
            })
            .insert(Header {
                key: SOURCE_PARTITION,
                value: Some(message.partition.to_string().as_bytes()),
            })
            .insert(Header {
                key: SOURCE_OFFSET,
                value: Some(message.offset.to_string().as_bytes()),
            });
        if let Some(key) = &message.key {
            headers = headers.insert(Header {
                key: SOURCE_KEY,
                value: Some(key.as_slice()),
            });
        }
        let mut record = FutureRecord::to(topics::BY_MATCH)
            .partition(*partition)
            .key(match_id.as_str())
            .payload(&message.payload)
            .headers(headers);
        // The original produce time travels on: ball → notice is timed from it.
        if let Some(produced) = message.produced_ms {
            record = record.timestamp(produced);
        }
        async move {
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(error, _)| error)
        }
    });
    futures::future::try_join_all(sends).await.map(|_| ())
}

/// The message as it was consumed from its contract topic, read back from a
/// forwarded one. A message without the headers (not written by a router)
/// keeps the internal topic's name, which the pipeline ignores with a warning.
pub fn unwrap_forwarded(message: &BorrowedMessage<'_>) -> Incoming {
    let mut incoming = Incoming {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: None,
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        produced_ms: message.timestamp().to_millis(),
    };
    let Some(headers) = message.headers() else {
        return incoming;
    };
    fn text(value: Option<&[u8]>) -> Option<&str> {
        value.and_then(|v| std::str::from_utf8(v).ok())
    }
    let (mut topic, mut partition, mut offset) = (None, None, None);
    for header in headers.iter() {
        match header.key {
            SOURCE_TOPIC => topic = text(header.value).map(str::to_owned),
            SOURCE_PARTITION => partition = text(header.value).and_then(|v| v.parse().ok()),
            SOURCE_OFFSET => offset = text(header.value).and_then(|v| v.parse().ok()),
            SOURCE_KEY => incoming.key = header.value.map(<[u8]>::to_vec),
            _ => {}
        }
    }
    if let (Some(topic), Some(partition), Some(offset)) = (topic, partition, offset) {
        incoming.topic = topic;
        incoming.partition = partition;
        incoming.offset = offset;
    }
    incoming
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaderboard_core::contest::{ContestRecord, EntryRecord};
    use leaderboard_core::event::EVENT_VERSION;

    fn contest(id: &str, match_id: &str) -> Vec<u8> {
        ContestMessage::Contest(ContestRecord {
            v: EVENT_VERSION,
            contest_id: ContestId::parse(id).unwrap(),
            match_id: MatchId::parse(match_id).unwrap(),
            name: "Mega".into(),
            max_entries: 10,
            squad: [
                ("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect()),
                ("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect()),
            ]
            .into_iter()
            .collect(),
        })
        .to_json()
    }

    fn entry(contest: &str, entry: &str) -> Vec<u8> {
        ContestMessage::Entry(EntryRecord {
            v: EVENT_VERSION,
            contest_id: ContestId::parse(contest).unwrap(),
            entry_id: leaderboard_core::EntryId::parse(entry).unwrap(),
            user_id: leaderboard_core::UserId::parse("u1").unwrap(),
            players: (0..11).map(|i| format!("a{i}")).collect(),
            captain: "a0".into(),
            vice_captain: "a1".into(),
        })
        .to_json()
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let m = |id: &str| MatchId::parse(id).unwrap();
        // Fixed values: every replica and every release must agree.
        assert_eq!(
            partition_of(&m("1136561"), 6),
            partition_of(&m("1136561"), 6)
        );
        let used: BTreeSet<i32> = (0..60)
            .map(|i| partition_of(&m(&format!("{}", 1_136_500 + i)), 6))
            .collect();
        assert_eq!(used.len(), 6, "sixty matches use every partition");
        assert!((0..100).all(|i| (0..6).contains(&partition_of(&m(&i.to_string()), 6))));
    }

    #[test]
    fn entries_follow_their_contest_s_match_and_strays_are_refused() {
        let mut routes = Routes::default();
        let batch = vec![
            Incoming::keyed(topics::CONTEST_ENTRIES, "c1", contest("c1", "m7")),
            Incoming::keyed(topics::CONTEST_ENTRIES, "c1", entry("c1", "e1")),
            Incoming::keyed(topics::CONTEST_ENTRIES, "c9", entry("c9", "e1")),
            Incoming::keyed(topics::CONTEST_ENTRIES, "c1", b"{oops".to_vec()),
            Incoming::keyed(topics::MATCH_EVENTS, "m7", b"{}".to_vec()),
            Incoming {
                key: None,
                ..Incoming::keyed(topics::MATCH_EVENTS, "", b"not json".to_vec())
            },
            // The same contest again with another match: it stays with m7.
            Incoming::keyed(topics::CONTEST_ENTRIES, "c1", contest("c1", "m8")),
        ];
        assert!(routes.unknown(&batch), "c9 is unknown");
        let routed = routes.route(batch, 6);
        let m7 = MatchId::parse("m7").unwrap();
        let forwarded: Vec<(i32, &str)> = routed
            .forward
            .iter()
            .map(|(p, m, _)| (*p, m.as_str()))
            .collect();
        let p = partition_of(&m7, 6);
        assert_eq!(forwarded, [(p, "m7"), (p, "m7"), (p, "m7"), (p, "m7")]);
        assert_eq!(routed.new_contests.contests.len(), 1, "stored once");
        let reasons: Vec<&str> = routed
            .dead_letters
            .iter()
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("`c9` is unknown"));
        assert_eq!(routed.dead_letters[2].topic, topics::MATCH_EVENTS_DLQ);
    }

    #[test]
    fn a_snapshot_keeps_only_the_owned_matches() {
        let mut snapshot = StoreSnapshot::default();
        for (c, m) in [("c1", "m1"), ("c2", "m2")] {
            let ContestMessage::Contest(record) =
                ContestMessage::from_json(&contest(c, m)).unwrap()
            else {
                unreachable!()
            };
            let ContestMessage::Entry(e) = ContestMessage::from_json(&entry(c, "e1")).unwrap()
            else {
                unreachable!()
            };
            snapshot.entries.insert(record.contest_id.clone(), vec![e]);
            snapshot.contests.push((record, 1));
            snapshot
                .match_events
                .insert(MatchId::parse(m).unwrap(), Vec::new());
        }
        retain_owned(&mut snapshot, |m| m.as_str() == "m2");
        assert_eq!(snapshot.contests.len(), 1);
        assert_eq!(snapshot.contests[0].0.contest_id.as_str(), "c2");
        assert_eq!(snapshot.entries.len(), 1);
        assert_eq!(snapshot.match_events.len(), 1);
    }
}
