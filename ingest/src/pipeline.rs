//! The ingest state machine, without I/O: match scorers and contest states,
//! fed raw Kafka payloads, producing the store batch, the Redis updates and the
//! dead letters of one consumer batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use leaderboard_core::contest::{Added, ContestMessage, ContestState, Moved};
use leaderboard_core::event::{EventBody, MatchEvent};
use leaderboard_core::ids::{ContestId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::scoring::{Applied, MatchScorer};
use leaderboard_core::Rules;
use leaderboard_hot::{self as hot, encode_team, ContestUpdate, MatchUpdate, TopRow, TOP_ROWS};
use leaderboard_store::{RankSnapshot, RankSnapshotInfo, StoreBatch, StoreSnapshot};

use crate::topics;

/// A message refused to a dead-letter topic, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: &'static str,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
}

impl DeadLetter {
    /// `message` refused to the dead-letter `topic`, with where it came from.
    pub fn of(message: &Incoming, topic: &'static str, reason: String) -> DeadLetter {
        DeadLetter {
            topic,
            source_topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            key: message.key.clone(),
            payload: message.payload.clone(),
            reason,
        }
    }

    /// The DLQ value: the reason, where the message came from, and the
    /// original payload (as text when it is UTF-8).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "reason": self.reason,
            "topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "payload": String::from_utf8_lossy(&self.payload),
        }))
        .expect("dead letters serialize")
    }
}

/// One consumed message, owned.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The producer's timestamp of the original message (Unix milliseconds),
    /// kept through the internal topic: when the ball was sent.
    pub produced_ms: Option<i64>,
}

impl Incoming {
    /// A keyed message at partition 0, offset 0 (for feeding the pipeline
    /// without a broker: tests and measurements).
    pub fn keyed(topic: &str, key: &str, payload: Vec<u8>) -> Incoming {
        Incoming {
            topic: topic.to_owned(),
            partition: 0,
            offset: 0,
            key: Some(key.as_bytes().to_vec()),
            payload,
            produced_ms: None,
        }
    }
}

/// What a batch did, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub consumed: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
}

/// Everything to write after a batch, in order: store, Redis, DLQ, then commit.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: StoreBatch,
    pub matches: Vec<MatchUpdate>,
    pub contests: Vec<ContestUpdate>,
    pub dead_letters: Vec<DeadLetter>,
    /// Contests whose final standings were stored in this batch: their hot
    /// keys may now expire.
    pub finished: Vec<(ContestId, MatchId)>,
    pub counts: Counts,
}

#[derive(Debug, Default)]
struct ContestDelta {
    /// Entries whose points moved, by index ascending, each once with its
    /// points before the batch. A contest follows one match, whose new
    /// player points it takes once per batch: one ball moves half a mega
    /// contest, so this is a vector, not a map.
    moved: Vec<Moved>,
    new_entries: Vec<u32>,
    created: bool,
}

/// Live state of every match and contest this ingest owns.
#[derive(Debug)]
pub struct Pipeline {
    rules: Arc<Rules>,
    matches: HashMap<MatchId, MatchScorer>,
    contests: HashMap<ContestId, ContestState>,
    contests_of_match: HashMap<MatchId, BTreeSet<ContestId>>,
    /// Matches that ended and contests whose final standings are stored:
    /// their state is dropped (nothing of them changes any more), only their
    /// ids stay, so that late or repeated messages are recognised.
    finished_matches: HashSet<MatchId>,
    finished_contests: HashSet<ContestId>,
    /// Contests whose final standings are stored but which stay in memory a
    /// while (see [`Pipeline::evict_finished`]): entries produced before the
    /// match ended may still be consumed after it, from another partition.
    finalized: HashMap<ContestId, std::time::Instant>,
    /// When each ended match still in memory ended (its scorer stays as long
    /// as its contests, and at least as long: a contest produced before the
    /// end may be consumed after it).
    ended_at: HashMap<MatchId, std::time::Instant>,
    // Work of the batch in progress.
    changed_matches: BTreeSet<MatchId>,
    ended_matches: BTreeSet<MatchId>,
    deltas: BTreeMap<ContestId, ContestDelta>,
    effects: Effects,
}

impl Pipeline {
    pub fn new(rules: Arc<Rules>) -> Pipeline {
        Pipeline {
            rules,
            matches: HashMap::new(),
            contests: HashMap::new(),
            contests_of_match: HashMap::new(),
            finished_matches: HashSet::new(),
            finished_contests: HashSet::new(),
            finalized: HashMap::new(),
            ended_at: HashMap::new(),
            changed_matches: BTreeSet::new(),
            ended_matches: BTreeSet::new(),
            deltas: BTreeMap::new(),
            effects: Effects::default(),
        }
    }

    /// Rebuilds every match and contest from the durable store.
    pub fn from_snapshot(rules: Arc<Rules>, snapshot: StoreSnapshot) -> anyhow::Result<Pipeline> {
        let mut pipeline = Pipeline::new(rules);
        pipeline.finished_matches = snapshot.finished_matches.into_iter().collect();
        pipeline.finished_contests = snapshot.finished_contests.into_iter().collect();
        for (match_id, events) in snapshot.match_events {
            let scorer = pipeline.scorer(&match_id);
            for event in &events {
                scorer.apply(event).map_err(|error| {
                    anyhow::anyhow!(
                        "stored event {}/{} does not apply: {error}",
                        match_id,
                        event.seq
                    )
                })?;
            }
        }
        let mut entries = snapshot.entries;
        for (record, version) in snapshot.contests {
            let contest_id = record.contest_id.clone();
            let match_id = record.match_id.clone();
            let mut state = ContestState::new(record);
            state.version = version;
            for entry in entries.remove(&contest_id).unwrap_or_default() {
                state.add_entry(entry).map_err(|error| {
                    anyhow::anyhow!("stored entry of {contest_id} is invalid: {error}")
                })?;
            }
            if let Some(scorer) = pipeline.matches.get(&match_id) {
                state.update_players(|name| scorer.points_of(name));
            }
            pipeline
                .contests_of_match
                .entry(match_id)
                .or_default()
                .insert(contest_id.clone());
            pipeline.contests.insert(contest_id, state);
        }
        // Loaded matches that have ended (within the keep-finished window):
        // their clock starts again now.
        let now = std::time::Instant::now();
        for (match_id, scorer) in &pipeline.matches {
            if scorer.is_ended() {
                pipeline.ended_at.insert(match_id.clone(), now);
                for contest_id in pipeline
                    .contests_of_match
                    .get(match_id)
                    .into_iter()
                    .flatten()
                {
                    pipeline.finalized.insert(contest_id.clone(), now);
                }
            }
        }
        Ok(pipeline)
    }

    /// The scoring rules every match of this pipeline is scored with.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules)
    }

    /// Drops every match for which `keep` is false, with its contests: what
    /// a node lost in a rebalance (their new owner rebuilds them from the
    /// store). Only the ids of finished matches and contests stay. Returns
    /// how many contests left memory.
    pub fn retain_matches(&mut self, keep: impl Fn(&MatchId) -> bool) -> usize {
        let lost: BTreeSet<MatchId> = self
            .matches
            .keys()
            .chain(self.contests_of_match.keys())
            .filter(|match_id| !keep(match_id))
            .cloned()
            .collect();
        let mut dropped = 0;
        for match_id in lost {
            self.matches.remove(&match_id);
            self.ended_at.remove(&match_id);
            self.changed_matches.remove(&match_id);
            self.ended_matches.remove(&match_id);
            for contest_id in self
                .contests_of_match
                .remove(&match_id)
                .into_iter()
                .flatten()
            {
                if self.contests.remove(&contest_id).is_some() {
                    dropped += 1;
                }
                self.finalized.remove(&contest_id);
                self.deltas.remove(&contest_id);
            }
        }
        dropped
    }

    /// Takes in the matches and contests of `other` (what a node gained in a
    /// rebalance, rebuilt from the store), which must hold none of this
    /// pipeline's matches.
    pub fn absorb(&mut self, other: Pipeline) {
        self.matches.extend(other.matches);
        self.contests.extend(other.contests);
        for (match_id, contests) in other.contests_of_match {
            self.contests_of_match
                .entry(match_id)
                .or_default()
                .extend(contests);
        }
        self.finished_matches.extend(other.finished_matches);
        self.finished_contests.extend(other.finished_contests);
        self.finalized.extend(other.finalized);
        self.ended_at.extend(other.ended_at);
    }

    fn scorer(&mut self, match_id: &MatchId) -> &mut MatchScorer {
        let rules = Arc::clone(&self.rules);
        self.matches
            .entry(match_id.clone())
            .or_insert_with(|| MatchScorer::new(rules))
    }

    pub fn match_scorer(&self, match_id: &MatchId) -> Option<&MatchScorer> {
        self.matches.get(match_id)
    }

    pub fn contest(&self, contest_id: &ContestId) -> Option<&ContestState> {
        self.contests.get(contest_id)
    }

    pub fn contests(&self) -> impl Iterator<Item = &ContestState> {
        self.contests.values()
    }

    fn dead_letter(&mut self, message: &Incoming, topic: &'static str, reason: String) {
        self.effects.counts.dead_letters += 1;
        self.effects
            .dead_letters
            .push(DeadLetter::of(message, topic, reason));
    }

    /// Takes one consumed message of either topic.
    pub fn handle(&mut self, message: &Incoming) {
        self.effects.counts.consumed += 1;
        if message.topic == topics::MATCH_EVENTS {
            self.handle_match_event(message);
        } else if message.topic == topics::CONTEST_ENTRIES {
            self.handle_contest_message(message);
        } else {
            tracing::warn!(topic = %message.topic, "message from an unexpected topic ignored");
        }
    }

    fn handle_match_event(&mut self, message: &Incoming) {
        let event = match MatchEvent::from_json(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                return self.dead_letter(message, topics::MATCH_EVENTS_DLQ, error.to_string())
            }
        };
        if let Some(key) = &message.key {
            if key.as_slice() != event.match_id.as_str().as_bytes() {
                let reason = format!(
                    "message key `{}` is not the event's match id `{}`",
                    String::from_utf8_lossy(key),
                    event.match_id
                );
                return self.dead_letter(message, topics::MATCH_EVENTS_DLQ, reason);
            }
        }
        if self.finished_matches.contains(&event.match_id) {
            // Its match_end is applied and stored: this is a repeat.
            self.effects.counts.duplicates += 1;
            return;
        }
        let match_id = event.match_id.clone();
        let outcome = self.scorer(&match_id).apply(&event);
        match outcome {
            Ok(Applied::Duplicate) => self.effects.counts.duplicates += 1,
            Ok(Applied::Changed(_)) => {
                self.effects.counts.applied += 1;
                self.effects.store.match_events.push(event.clone());
                if matches!(event.body, EventBody::MatchEnd {}) {
                    self.ended_matches.insert(match_id.clone());
                }
                // Even an event that moves no points moves the match's version and seq.
                self.changed_matches.insert(match_id);
            }
            Err(error) => self.dead_letter(message, topics::MATCH_EVENTS_DLQ, error.to_string()),
        }
    }

    fn handle_contest_message(&mut self, message: &Incoming) {
        let parsed = match ContestMessage::from_json(&message.payload) {
            Ok(parsed) => parsed,
            Err(reason) => return self.dead_letter(message, topics::CONTEST_ENTRIES_DLQ, reason),
        };
        match parsed {
            ContestMessage::Contest(record) => {
                if self.finished_contests.contains(&record.contest_id) {
                    self.effects.counts.duplicates += 1;
                    return;
                }
                if self.finished_matches.contains(&record.match_id) {
                    let reason = format!("match `{}` has ended", record.match_id);
                    return self.dead_letter(message, topics::CONTEST_ENTRIES_DLQ, reason);
                }
                if let Some(existing) = self.contests.get(&record.contest_id) {
                    if existing.record == record {
                        self.effects.counts.duplicates += 1;
                    } else {
                        let reason = format!(
                            "contest `{}` already exists with another definition",
                            record.contest_id
                        );
                        self.dead_letter(message, topics::CONTEST_ENTRIES_DLQ, reason);
                    }
                    return;
                }
                let contest_id = record.contest_id.clone();
                let match_id = record.match_id.clone();
                let mut state = ContestState::new(record.clone());
                if let Some(scorer) = self.matches.get(&match_id) {
                    state.update_players(|name| scorer.points_of(name));
                }
                self.effects.store.contests.push(record);
                self.effects.counts.applied += 1;
                self.contests_of_match
                    .entry(match_id)
                    .or_default()
                    .insert(contest_id.clone());
                self.contests.insert(contest_id.clone(), state);
                self.deltas.entry(contest_id).or_default().created = true;
            }
            ContestMessage::Entry(record) => {
                if self.finished_contests.contains(&record.contest_id) {
                    let reason = format!("contest `{}` has finished", record.contest_id);
                    return self.dead_letter(message, topics::CONTEST_ENTRIES_DLQ, reason);
                }
                let Some(state) = self.contests.get_mut(&record.contest_id) else {
                    let reason = leaderboard_core::team::EntryError::UnknownContest(
                        record.contest_id.to_string(),
                    );
                    return self.dead_letter(
                        message,
                        topics::CONTEST_ENTRIES_DLQ,
                        reason.to_string(),
                    );
                };
                let contest_id = record.contest_id.clone();
                match state.add_entry(record.clone()) {
                    Ok(Added::Duplicate) => self.effects.counts.duplicates += 1,
                    Ok(Added::New(_)) => {
                        let index = (state.entries.len() - 1) as u32;
                        self.effects.counts.applied += 1;
                        self.effects.store.entries.push(record);
                        let delta = self.deltas.entry(contest_id).or_default();
                        delta.new_entries.push(index);
                    }
                    Err(error) => {
                        self.dead_letter(message, topics::CONTEST_ENTRIES_DLQ, error.to_string())
                    }
                }
            }
        }
    }

    /// Ends the batch: moves every contest of every changed match, bumps each
    /// touched contest's version once, writes the final standings of every
    /// contest of an ended match that changed (or whose match just ended), and
    /// returns what to write.
    pub fn finish_batch(&mut self) -> Effects {
        let mut finals: BTreeSet<ContestId> = BTreeSet::new();
        for match_id in std::mem::take(&mut self.ended_matches) {
            self.ended_at
                .entry(match_id.clone())
                .or_insert_with(std::time::Instant::now);
            finals.extend(
                self.contests_of_match
                    .get(&match_id)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        for match_id in std::mem::take(&mut self.changed_matches) {
            let Some(scorer) = self.matches.get(&match_id) else {
                continue;
            };
            self.effects.matches.push(MatchUpdate {
                match_id: match_id.clone(),
                version: scorer.version(),
                last_seq: scorer.last_seq().unwrap_or(0),
                points: scorer
                    .players()
                    .map(|(_, name, points)| (name.to_owned(), points))
                    .collect(),
                full: false,
            });
            for contest_id in self.contests_of_match.get(&match_id).into_iter().flatten() {
                let Some(state) = self.contests.get_mut(contest_id) else {
                    continue;
                };
                let moved = state.update_players(|name| scorer.points_of(name));
                if moved.is_empty() {
                    continue;
                }
                let delta = self.deltas.entry(contest_id.clone()).or_default();
                if delta.moved.is_empty() {
                    delta.moved = moved;
                } else {
                    // Moved twice in a batch: keep the oldest "before".
                    delta.moved.extend(moved);
                    delta.moved.sort_by_key(|entry| entry.index);
                    delta.moved.dedup_by_key(|entry| entry.index);
                }
            }
        }
        for (contest_id, delta) in std::mem::take(&mut self.deltas) {
            let Some(state) = self.contests.get_mut(&contest_id) else {
                continue;
            };
            if self
                .matches
                .get(state.match_id())
                .is_some_and(MatchScorer::is_ended)
            {
                finals.insert(contest_id.clone());
            }
            state.version += 1;
            self.effects
                .store
                .contest_versions
                .push((contest_id.clone(), state.version));
            let mut ranks = hot::rank_buffer(delta.moved.len() + delta.new_entries.len());
            for &Moved { index, .. } in &delta.moved {
                ranks.push((
                    state.entries[index as usize].entry_id.clone(),
                    state.points[index as usize],
                ));
            }
            let mut users = Vec::with_capacity(delta.new_entries.len());
            let mut teams = Vec::with_capacity(delta.new_entries.len());
            for &index in &delta.new_entries {
                let entry = &state.entries[index as usize];
                users.push((entry.entry_id.clone(), entry.user_id.clone()));
                teams.push((entry.entry_id.clone(), encode_team(&entry.team)));
                if delta
                    .moved
                    .binary_search_by_key(&index, |entry| entry.index)
                    .is_err()
                {
                    ranks.push((entry.entry_id.clone(), state.points[index as usize]));
                }
            }
            let top = state.top_kept(TOP_ROWS);
            let top = top_rows(state, top);
            self.effects.contests.push(ContestUpdate {
                contest_id: contest_id.clone(),
                match_id: state.match_id().clone(),
                name: state.record.name.clone(),
                version: state.version,
                total: state.total(),
                ranks: hot::RankBuffer::shared(ranks),
                users,
                teams,
                squad: if delta.created {
                    state.squad.names().to_vec()
                } else {
                    Vec::new()
                },
                player_points: state.player_points().iter().map(|p| p.0).collect(),
                histogram: {
                    // Every bucket an entry entered or left since the last
                    // change, as the contest state gathered them.
                    let mut histogram: Vec<(TeamPoints, u64)> = state
                        .take_touched()
                        .into_iter()
                        .map(|p| (p, state.histogram.count_of(p)))
                        .collect();
                    histogram.sort_unstable();
                    histogram
                },
                top: Some(top),
                full: delta.created,
            });
            state.give_back_moved(delta.moved);
        }
        for contest_id in finals {
            if let Some(state) = self.contests.get(&contest_id) {
                self.effects
                    .store
                    .rank_snapshots
                    .push(final_standings(state));
                self.effects
                    .finished
                    .push((contest_id.clone(), state.match_id().clone()));
                self.finalized.insert(contest_id, std::time::Instant::now());
            }
        }
        std::mem::take(&mut self.effects)
    }

    /// Drops from memory every contest whose final standings were stored
    /// before `finalized_before`, and then every ended match none of whose
    /// contests is left; only their ids stay, so that a late entry goes to
    /// the dead-letter topic and a repeated event counts as a duplicate.
    /// Returns how many contests left.
    pub fn evict_finished(&mut self, finalized_before: std::time::Instant) -> usize {
        let done: Vec<ContestId> = self
            .finalized
            .iter()
            .filter(|(_, at)| **at < finalized_before)
            .map(|(contest_id, _)| contest_id.clone())
            .collect();
        for contest_id in &done {
            self.finalized.remove(contest_id);
            if let Some(state) = self.contests.remove(contest_id) {
                if let Some(contests) = self.contests_of_match.get_mut(state.match_id()) {
                    contests.remove(contest_id);
                }
            }
            self.finished_contests.insert(contest_id.clone());
        }
        self.evict_finished_matches(finalized_before);
        done.len()
    }

    /// Drops the scorer of every match that ended before `ended_before` and
    /// none of whose contests is in memory.
    fn evict_finished_matches(&mut self, ended_before: std::time::Instant) {
        let finished: Vec<MatchId> = self
            .matches
            .iter()
            .filter(|(match_id, scorer)| {
                scorer.is_ended()
                    && self
                        .ended_at
                        .get(*match_id)
                        .is_none_or(|at| *at < ended_before)
                    && self
                        .contests_of_match
                        .get(*match_id)
                        .is_none_or(BTreeSet::is_empty)
            })
            .map(|(match_id, _)| match_id.clone())
            .collect();
        for match_id in finished {
            self.ended_at.remove(&match_id);
            self.matches.remove(&match_id);
            self.contests_of_match.remove(&match_id);
            self.finished_matches.insert(match_id);
        }
    }

    /// Contests whose match has ended (their final standings are stored).
    pub fn finished_contests(&self) -> Vec<(ContestId, MatchId)> {
        self.contests
            .values()
            .filter(|state| {
                self.matches
                    .get(state.match_id())
                    .is_some_and(MatchScorer::is_ended)
            })
            .map(|state| (state.contest_id().clone(), state.match_id().clone()))
            .collect()
    }

    /// The whole hot state of these contests (those still in memory).
    pub fn full_updates(&self, contests: &[ContestId]) -> Vec<ContestUpdate> {
        contests
            .iter()
            .filter_map(|contest_id| self.contests.get(contest_id))
            .map(full_update)
            .collect()
    }

    /// Every key of the hot state, rewritten from scratch (after a Redis flush
    /// or at start-up). Versions do not move: the state is the same.
    pub fn full_refresh(&self) -> (Vec<MatchUpdate>, Vec<ContestUpdate>) {
        let matches = self
            .matches
            .iter()
            .map(|(match_id, scorer)| MatchUpdate {
                match_id: match_id.clone(),
                version: scorer.version(),
                last_seq: scorer.last_seq().unwrap_or(0),
                points: scorer
                    .players()
                    .map(|(_, name, points)| (name.to_owned(), points))
                    .collect(),
                full: true,
            })
            .collect();
        let contests = self.contests.values().map(full_update).collect();
        (matches, contests)
    }
}

/// A contest's whole hot state at its current version (a rebuild, or a
/// change Redis could not take because it lost the version before it).
fn full_update(state: &ContestState) -> ContestUpdate {
    ContestUpdate {
        contest_id: state.contest_id().clone(),
        match_id: state.match_id().clone(),
        name: state.record.name.clone(),
        version: state.version,
        total: state.total(),
        ranks: hot::RankBuffer::shared(
            state
                .entries
                .iter()
                .zip(&state.points)
                .map(|(entry, points)| (entry.entry_id.clone(), *points))
                .collect(),
        ),
        users: state
            .entries
            .iter()
            .map(|e| (e.entry_id.clone(), e.user_id.clone()))
            .collect(),
        teams: state
            .entries
            .iter()
            .map(|e| (e.entry_id.clone(), encode_team(&e.team)))
            .collect(),
        squad: state.squad.names().to_vec(),
        player_points: state.player_points().iter().map(|p| p.0).collect(),
        histogram: state.histogram.buckets().collect(),
        top: Some(top_rows(state, state.top(TOP_ROWS))),
        full: true,
    }
}

/// The contest's first rows at its current version, for the meta's `top`.
/// The rows of `top` (indexes in page order).
fn top_rows(state: &ContestState, top: Vec<u32>) -> Vec<TopRow> {
    top.into_iter()
        .map(|index| {
            let entry = &state.entries[index as usize];
            TopRow {
                entry_id: entry.entry_id.clone(),
                user_id: entry.user_id.clone(),
                points: state.points[index as usize],
            }
        })
        .collect()
}

/// A contest's complete standings at its current version, exact from the
/// domain core (competition ranks over every entry's team points): what the
/// read API serves once the contest is no longer in Redis.
fn final_standings(state: &ContestState) -> RankSnapshot {
    let computed_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    RankSnapshot::rank(
        RankSnapshotInfo {
            contest_id: state.contest_id().clone(),
            snapshot_id: 0,
            match_id: state.match_id().clone(),
            version: state.version,
            total: state.total(),
            computed_at_ms,
            source: "final".into(),
        },
        state
            .entries
            .iter()
            .zip(&state.points)
            .map(|(entry, &points)| (entry.entry_id.clone(), entry.user_id.to_string(), points)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaderboard_core::contest::{ContestMessage, ContestRecord, EntryRecord};
    use leaderboard_core::event::EVENT_VERSION;

    fn message(topic: &str, offset: i64, key: &str, payload: Vec<u8>) -> Incoming {
        Incoming {
            offset,
            ..Incoming::keyed(topic, key, payload)
        }
    }

    fn squad() -> BTreeMap<String, Vec<String>> {
        let mut squad = BTreeMap::new();
        squad.insert("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect());
        squad.insert("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect());
        squad
    }

    fn contest_message(id: &str) -> Vec<u8> {
        ContestMessage::Contest(ContestRecord {
            v: EVENT_VERSION,
            contest_id: ContestId::parse(id).unwrap(),
            match_id: MatchId::parse("m1").unwrap(),
            name: "Mega".into(),
            max_entries: 100,
            squad: squad(),
        })
        .to_json()
    }

    fn entry_message(contest: &str, entry: &str, captain: &str) -> Vec<u8> {
        ContestMessage::Entry(EntryRecord {
            v: EVENT_VERSION,
            contest_id: ContestId::parse(contest).unwrap(),
            entry_id: leaderboard_core::EntryId::parse(entry).unwrap(),
            user_id: leaderboard_core::UserId::parse("u1").unwrap(),
            players: (0..11).map(|i| format!("a{i}")).collect(),
            captain: captain.into(),
            vice_captain: "a1".into(),
        })
        .to_json()
    }

    fn lineup() -> Vec<u8> {
        serde_json::to_vec(
            &serde_json::json!({"v":1,"type":"lineup","match_id":"m1","seq":0,"teams":squad()}),
        )
        .unwrap()
    }

    fn delivery(seq: u64, runs: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"v":1,"type":"delivery","match_id":"m1","seq":seq,"innings":1,"over":0,
            "delivery":{"batter":"a0","bowler":"b0","non_striker":"a1","runs":{"batter":runs,"extras":0,"total":runs}}}))
        .unwrap()
    }

    fn match_end(seq: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"v":1,"type":"match_end","match_id":"m1","seq":seq}))
            .unwrap()
    }

    #[test]
    fn a_finished_contest_and_match_leave_memory_and_late_messages_are_recognised() {
        let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
        let feed = |pipeline: &mut Pipeline, topic: &str, key: &str, payload: Vec<u8>| {
            pipeline.handle(&message(topic, 0, key, payload));
        };
        feed(
            &mut pipeline,
            topics::CONTEST_ENTRIES,
            "c1",
            contest_message("c1"),
        );
        feed(
            &mut pipeline,
            topics::CONTEST_ENTRIES,
            "c1",
            entry_message("c1", "e1", "a0"),
        );
        feed(&mut pipeline, topics::MATCH_EVENTS, "m1", lineup());
        feed(&mut pipeline, topics::MATCH_EVENTS, "m1", delivery(1, 4));
        pipeline.finish_batch();
        feed(&mut pipeline, topics::MATCH_EVENTS, "m1", match_end(2));
        let effects = pipeline.finish_batch();
        assert_eq!(
            effects.store.rank_snapshots.len(),
            1,
            "final standings stored"
        );
        assert_eq!(effects.finished.len(), 1);
        // A late entry (consumed after the end from another partition) is
        // still taken while the contest stays, and the standings rewritten.
        feed(
            &mut pipeline,
            topics::CONTEST_ENTRIES,
            "c1",
            entry_message("c1", "e3", "a0"),
        );
        let effects = pipeline.finish_batch();
        assert_eq!(effects.store.entries.len(), 1);
        assert_eq!(
            effects.store.rank_snapshots.len(),
            1,
            "final standings rewritten"
        );
        assert_eq!(pipeline.evict_finished(std::time::Instant::now()), 1);
        assert_eq!(pipeline.contests().count(), 0, "the contest left memory");
        assert!(pipeline
            .match_scorer(&MatchId::parse("m1").unwrap())
            .is_none());
        // Late: a repeated event, an entry, the contest again.
        feed(&mut pipeline, topics::MATCH_EVENTS, "m1", delivery(1, 4));
        feed(
            &mut pipeline,
            topics::CONTEST_ENTRIES,
            "c1",
            entry_message("c1", "e2", "a0"),
        );
        feed(
            &mut pipeline,
            topics::CONTEST_ENTRIES,
            "c1",
            contest_message("c1"),
        );
        let effects = pipeline.finish_batch();
        assert_eq!(
            effects.counts.duplicates, 2,
            "the event and the contest repeat"
        );
        assert_eq!(effects.dead_letters.len(), 1);
        assert!(effects.dead_letters[0].reason.contains("has finished"));
        assert!(
            effects.store.is_empty() && effects.contests.is_empty() && effects.matches.is_empty()
        );
        assert_eq!(pipeline.contests().count(), 0);
    }

    #[test]
    fn a_contest_consumed_after_its_match_ended_across_a_restart_is_still_taken() {
        // The match ended before the node restarted; its contest was produced
        // before the end but sat on a lagging partition.
        let mut first = Pipeline::new(Arc::new(Rules::t20_classic()));
        let mut events = Vec::new();
        for (seq, payload) in [(0, lineup()), (1, delivery(1, 4)), (2, match_end(2))] {
            first.handle(&message(topics::MATCH_EVENTS, seq, "m1", payload));
            events.extend(first.finish_batch().store.match_events);
        }
        // What the store loads within the keep-finished window: the events.
        let snapshot = StoreSnapshot {
            match_events: BTreeMap::from([(MatchId::parse("m1").unwrap(), events)]),
            ..StoreSnapshot::default()
        };
        let mut restarted =
            Pipeline::from_snapshot(Arc::new(Rules::t20_classic()), snapshot).unwrap();
        restarted.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            contest_message("c1"),
        ));
        restarted.handle(&message(
            topics::CONTEST_ENTRIES,
            1,
            "c1",
            entry_message("c1", "e1", "a0"),
        ));
        let effects = restarted.finish_batch();
        assert!(
            effects.dead_letters.is_empty(),
            "{:?}",
            effects.dead_letters
        );
        assert_eq!(
            effects.store.rank_snapshots.len(),
            1,
            "final standings of the late contest"
        );
        // The same points as a node that had the contest before the match.
        let mut reference = Pipeline::new(Arc::new(Rules::t20_classic()));
        reference.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            contest_message("c1"),
        ));
        reference.handle(&message(
            topics::CONTEST_ENTRIES,
            1,
            "c1",
            entry_message("c1", "e1", "a0"),
        ));
        for (seq, payload) in [(0, lineup()), (1, delivery(1, 4)), (2, match_end(2))] {
            reference.handle(&message(topics::MATCH_EVENTS, seq, "m1", payload));
        }
        let expected = reference.finish_batch().store.rank_snapshots;
        assert_eq!(effects.store.rank_snapshots[0].rows, expected[0].rows);
    }

    #[test]
    fn a_lost_match_leaves_memory_and_a_gained_one_joins_from_the_store() {
        let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
        for (offset, payload) in [contest_message("c1"), entry_message("c1", "e1", "a0")]
            .into_iter()
            .enumerate()
        {
            pipeline.handle(&message(
                topics::CONTEST_ENTRIES,
                offset as i64,
                "c1",
                payload,
            ));
        }
        pipeline.handle(&message(topics::MATCH_EVENTS, 0, "m1", lineup()));
        pipeline.handle(&message(topics::MATCH_EVENTS, 1, "m1", delivery(1, 4)));
        let effects = pipeline.finish_batch();
        let c1 = ContestId::parse("c1").unwrap();
        let points = pipeline.contest(&c1).unwrap().points.clone();

        // Lost in a rebalance: nothing of m1 stays.
        assert_eq!(pipeline.retain_matches(|m| m.as_str() != "m1"), 1);
        assert!(pipeline.contest(&c1).is_none());
        assert!(pipeline
            .match_scorer(&MatchId::parse("m1").unwrap())
            .is_none());

        // Gained again: rebuilt from what the store holds, then absorbed.
        let mut snapshot = StoreSnapshot {
            contests: effects
                .store
                .contests
                .iter()
                .map(|c| (c.clone(), 1))
                .collect(),
            ..StoreSnapshot::default()
        };
        snapshot
            .entries
            .insert(c1.clone(), effects.store.entries.clone());
        snapshot.match_events.insert(
            MatchId::parse("m1").unwrap(),
            effects.store.match_events.clone(),
        );
        let part = Pipeline::from_snapshot(pipeline.rules(), snapshot).unwrap();
        pipeline.absorb(part);
        assert_eq!(pipeline.contest(&c1).unwrap().points, points);
        // And it goes on: the next ball moves it from version 1 to 2.
        pipeline.handle(&message(topics::MATCH_EVENTS, 2, "m1", delivery(2, 6)));
        let effects = pipeline.finish_batch();
        assert_eq!(effects.contests.len(), 1);
        assert_eq!(effects.contests[0].version, 2);
        assert!(!effects.contests[0].full);
        assert_eq!(pipeline.full_updates(&[c1])[0].version, 2);
    }

    #[test]
    fn a_batch_moves_each_contest_version_once_and_dedups() {
        let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c1",
            contest_message("c1"),
        ));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            1,
            "c1",
            entry_message("c1", "e1", "a0"),
        ));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            2,
            "c1",
            entry_message("c1", "e2", "a2"),
        ));
        pipeline.handle(&message(topics::MATCH_EVENTS, 0, "m1", lineup()));
        pipeline.handle(&message(topics::MATCH_EVENTS, 1, "m1", delivery(1, 4)));
        pipeline.handle(&message(topics::MATCH_EVENTS, 2, "m1", delivery(2, 6)));
        pipeline.handle(&message(topics::MATCH_EVENTS, 1, "m1", delivery(2, 6))); // producer retry
        let effects = pipeline.finish_batch();
        assert_eq!(effects.counts.applied, 6);
        assert_eq!(effects.counts.duplicates, 1);
        assert_eq!(effects.contests.len(), 1);
        let update = &effects.contests[0];
        assert_eq!(update.version, 1, "one version step for the whole batch");
        assert_eq!(update.total, 2);
        // a0 (captain of e1): 4 + 10 runs + 1 four bonus + 2 six bonus = 17 → ×2
        // a1 (vice-captain of both): 4 → ×1.5; the other nine: 4 each.
        let points: BTreeMap<&str, TeamPoints> =
            update.ranks.iter().map(|(e, p)| (e.as_str(), *p)).collect();
        assert_eq!(points["e1"], TeamPoints(2 * (2 * 17 + 6 + 9 * 4)));
        assert_eq!(points["e2"], TeamPoints(2 * (17 + 6 + 4 + 8 * 4 + 4)));
        assert_eq!(effects.store.match_events.len(), 3);
        assert_eq!(effects.store.entries.len(), 2);
        assert_eq!(
            effects.store.contest_versions,
            vec![(ContestId::parse("c1").unwrap(), 1)]
        );

        pipeline.handle(&message(topics::MATCH_EVENTS, 3, "m1", delivery(3, 1)));
        let effects = pipeline.finish_batch();
        assert_eq!(effects.contests[0].version, 2);
        assert_eq!(effects.contests[0].ranks.len(), 2, "both teams hold a0");
        assert!(effects.contests[0].users.is_empty());
    }

    #[test]
    fn bad_messages_go_to_their_dead_letter_topics_with_reasons() {
        let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
        pipeline.handle(&message(topics::MATCH_EVENTS, 0, "m1", b"{oops".to_vec()));
        pipeline.handle(&message(topics::MATCH_EVENTS, 1, "m2", lineup()));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            0,
            "c9",
            entry_message("c9", "e1", "a0"),
        ));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            1,
            "c1",
            contest_message("c1"),
        ));
        pipeline.handle(&message(
            topics::CONTEST_ENTRIES,
            2,
            "c1",
            entry_message("c1", "e1", "a1"),
        ));
        let effects = pipeline.finish_batch();
        let reasons: Vec<(&str, &str)> = effects
            .dead_letters
            .iter()
            .map(|d| (d.topic, d.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons[0].0, topics::MATCH_EVENTS_DLQ);
        assert!(reasons[0].1.starts_with("not a match event"));
        assert!(reasons[1].1.contains("message key `m2`"));
        assert_eq!(
            reasons[2],
            (
                topics::CONTEST_ENTRIES_DLQ,
                "contest `c9` is unknown (its contest event must come first)"
            )
        );
        assert_eq!(
            reasons[3].1,
            "captain and vice-captain must differ (both are `a1`)"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&effects.dead_letters[0].to_json()).unwrap();
        assert_eq!(json["payload"], "{oops");
        assert_eq!(json["topic"], topics::MATCH_EVENTS);
    }

    #[test]
    fn the_store_snapshot_rebuilds_the_same_state() {
        let mut pipeline = Pipeline::new(Arc::new(Rules::t20_classic()));
        let mut snapshot = StoreSnapshot::default();
        for (offset, payload) in [contest_message("c1"), entry_message("c1", "e1", "a0")]
            .into_iter()
            .enumerate()
        {
            pipeline.handle(&message(
                topics::CONTEST_ENTRIES,
                offset as i64,
                "c1",
                payload,
            ));
        }
        for (seq, payload) in [lineup(), delivery(1, 4), delivery(2, 0)]
            .into_iter()
            .enumerate()
        {
            pipeline.handle(&message(topics::MATCH_EVENTS, seq as i64, "m1", payload));
        }
        let effects = pipeline.finish_batch();
        snapshot.contests = effects
            .store
            .contests
            .iter()
            .map(|c| (c.clone(), 1))
            .collect();
        for entry in effects.store.entries {
            snapshot
                .entries
                .entry(entry.contest_id.clone())
                .or_default()
                .push(entry);
        }
        for event in effects.store.match_events {
            snapshot
                .match_events
                .entry(event.match_id.clone())
                .or_default()
                .push(event);
        }
        let rebuilt = Pipeline::from_snapshot(Arc::new(Rules::t20_classic()), snapshot).unwrap();
        let contest = ContestId::parse("c1").unwrap();
        assert_eq!(
            rebuilt.contest(&contest).unwrap().points,
            pipeline.contest(&contest).unwrap().points
        );
        assert_eq!(rebuilt.contest(&contest).unwrap().version, 1);
        let (matches, contests) = rebuilt.full_refresh();
        assert_eq!((matches.len(), contests.len()), (1, 1));
        assert!(contests[0].full && contests[0].ranks.len() == 1);
    }
}
