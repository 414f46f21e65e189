//! Contests and their entries: the `contest-entries` messages, and a contest's
//! live state (team points of every entry, the points histogram, the version).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::event::EVENT_VERSION;
use super::ids::{ContestId, EntryId, MatchId, UserId};
use super::points::{PlayerPoints, TeamPoints};
use super::rank::Histogram;
use super::team::{EntryError, Squad, Team};

/// A message on `contest-entries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContestMessage {
    Contest(ContestRecord),
    Entry(EntryRecord),
}

/// A contest of one match, with the squad its entries pick from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContestRecord {
    pub v: u32,
    pub contest_id: ContestId,
    pub match_id: MatchId,
    pub name: String,
    pub max_entries: u64,
    pub squad: BTreeMap<String, Vec<String>>,
}

/// One user's team in a contest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub v: u32,
    pub contest_id: ContestId,
    pub entry_id: EntryId,
    pub user_id: UserId,
    pub players: Vec<String>,
    pub captain: String,
    pub vice_captain: String,
}

impl ContestMessage {
    /// Parses one message, refusing unknown versions and empty squads.
    pub fn from_json(bytes: &[u8]) -> Result<ContestMessage, String> {
        let message: ContestMessage = serde_json::from_slice(bytes)
            .map_err(|error| format!("not a contest message: {error}"))?;
        let version = match &message {
            ContestMessage::Contest(contest) => contest.v,
            ContestMessage::Entry(entry) => entry.v,
        };
        if version != EVENT_VERSION {
            return Err(format!(
                "unsupported message version {version} (this build reads version 1)"
            ));
        }
        if let ContestMessage::Contest(contest) = &message {
            if contest.squad.values().all(Vec::is_empty) {
                return Err(format!(
                    "contest `{}` has an empty squad",
                    contest.contest_id
                ));
            }
            if contest.max_entries == 0 {
                return Err(format!(
                    "contest `{}` allows no entries",
                    contest.contest_id
                ));
            }
        }
        Ok(message)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a contest message always serializes")
    }
}

/// One accepted entry in memory: its ids and its team as squad indexes
/// (the record's eleven player names are not kept; the store has them).
#[derive(Debug, Clone)]
pub struct LiveEntry {
    pub entry_id: EntryId,
    pub user_id: UserId,
    pub team: Team,
}

/// An entry whose points moved, and where from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub index: u32,
    pub before: TeamPoints,
}

/// What adding an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// New entry at these points.
    New(TeamPoints),
    /// The same entry again (a producer retry): nothing changes.
    Duplicate,
}

/// A contest's live state. Team points are recomputed from the squad's player
/// points (11 multiply-adds per entry), the histogram follows every move.
#[derive(Debug, Clone)]
pub struct ContestState {
    pub record: ContestRecord,
    pub squad: Squad,
    pub entries: Vec<LiveEntry>,
    pub points: Vec<TeamPoints>,
    pub by_entry: HashMap<EntryId, u32>,
    pub histogram: Histogram,
    pub version: u64,
    table: Vec<PlayerPoints>,
    /// The first rows in page order as last computed, kept exact while only
    /// entries are added (each new entry is placed into it), dropped when
    /// points move: see [`ContestState::top_kept`].
    kept_top: Option<(usize, Vec<u32>)>,
    /// The histogram's buckets touched since [`ContestState::take_touched`]
    /// (a new entry's, each moved entry's old and new): the ones a change of
    /// the contest rewrites, gathered once per bucket rather than per entry.
    touched: HashSet<TeamPoints, foldhash::fast::RandomState>,
    /// The last ball's list of moved entries, given back once used (see
    /// [`ContestState::give_back_moved`]): the next ball fills the same
    /// memory instead of growing a new list of millions of entries in
    /// freshly faulted pages.
    spare_moved: Vec<Moved>,
}

impl ContestState {
    pub fn new(record: ContestRecord) -> ContestState {
        let squad = Squad::from_teams(&record.squad);
        let table = vec![PlayerPoints::ZERO; squad.len()];
        ContestState {
            record,
            squad,
            entries: Vec::new(),
            points: Vec::new(),
            by_entry: HashMap::new(),
            histogram: Histogram::default(),
            version: 0,
            table,
            kept_top: None,
            touched: HashSet::default(),
            spare_moved: Vec::new(),
        }
    }

    /// Returns a list [`ContestState::update_players`] gave out, for the next
    /// ball to fill.
    pub fn give_back_moved(&mut self, moved: Vec<Moved>) {
        if moved.capacity() > self.spare_moved.capacity() {
            self.spare_moved = moved;
        }
    }

    pub fn contest_id(&self) -> &ContestId {
        &self.record.contest_id
    }

    pub fn match_id(&self) -> &MatchId {
        &self.record.match_id
    }

    pub fn total(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Validates and adds an entry; the contract's rejections are errors.
    pub fn add_entry(&mut self, record: EntryRecord) -> Result<Added, EntryError> {
        if let Some(&existing) = self.by_entry.get(&record.entry_id) {
            // The same owner and the same team (players, captain, vice) is a
            // producer's retry; anything else reuses the id.
            let existing = &self.entries[existing as usize];
            let same = existing.user_id == record.user_id
                && self
                    .squad
                    .team(&record.players, &record.captain, &record.vice_captain)
                    .is_ok_and(|team| team == existing.team);
            return if same {
                Ok(Added::Duplicate)
            } else {
                Err(EntryError::DuplicateEntry(record.entry_id.to_string()))
            };
        }
        if self.total() >= self.record.max_entries {
            return Err(EntryError::ContestFull {
                contest: self.record.contest_id.to_string(),
                max_entries: self.record.max_entries,
            });
        }
        let team = self
            .squad
            .team(&record.players, &record.captain, &record.vice_captain)?;
        let points = team.points(&self.table);
        self.by_entry
            .insert(record.entry_id.clone(), self.entries.len() as u32);
        self.entries.push(LiveEntry {
            entry_id: record.entry_id,
            user_id: record.user_id,
            team,
        });
        self.points.push(points);
        self.histogram.add(points);
        self.touched.insert(points);
        self.keep_in_top(self.entries.len() as u32 - 1);
        Ok(Added::New(points))
    }

    /// Takes new player points (by name) and recomputes every entry; returns
    /// the entries whose points moved, with their old points.
    pub fn update_players(&mut self, points_of: impl Fn(&str) -> PlayerPoints) -> Vec<Moved> {
        let table = self.squad.points_table(points_of);
        if table == self.table {
            return Vec::new();
        }
        self.table = table;
        self.kept_top = None;
        let mut moved = std::mem::take(&mut self.spare_moved);
        moved.clear();
        for (index, entry) in self.entries.iter().enumerate() {
            let now = entry.team.points(&self.table);
            let before = self.points[index];
            if now != before {
                self.points[index] = now;
                moved.push(Moved {
                    index: index as u32,
                    before,
                });
            }
        }
        let points = &self.points;
        let touched = self.histogram.shift_all(
            moved
                .iter()
                .map(|entry| (entry.before, points[entry.index as usize])),
        );
        self.touched.extend(touched);
        moved
    }

    /// The histogram's buckets touched since the last call, each once: a
    /// change of the contest writes their counts.
    pub fn take_touched(&mut self) -> Vec<TeamPoints> {
        self.touched.drain().collect()
    }

    /// The indexes of the first `k` entries in page order: points
    /// descending, ties by entry id descending (as the hot sorted set
    /// orders them). One pass over the points; only entries tied at the
    /// lowest points of the first `k` compare their ids.
    pub fn top(&self, k: usize) -> Vec<u32> {
        use std::cmp::Reverse;
        let mut above_floor = 0_u64;
        let mut floor = None;
        for (points, count) in self.histogram.buckets() {
            if above_floor + count >= k as u64 {
                floor = Some(points);
                break;
            }
            above_floor += count;
        }
        // Fewer than `k` entries: all of them.
        let floor = floor.unwrap_or(TeamPoints(i64::MIN));
        let wanted_at_floor = (k as u64 - above_floor.min(k as u64)) as usize;
        let mut above = Vec::with_capacity(above_floor as usize);
        // The largest ids at the floor, smallest on top of the heap.
        let mut at_floor: std::collections::BinaryHeap<Reverse<(&EntryId, u32)>> =
            std::collections::BinaryHeap::with_capacity(wanted_at_floor + 1);
        for (index, points) in self.points.iter().enumerate() {
            if *points > floor {
                above.push(index as u32);
            } else if *points == floor && wanted_at_floor > 0 {
                let id = &self.entries[index].entry_id;
                if at_floor.len() == wanted_at_floor {
                    match at_floor.peek() {
                        Some(Reverse((smallest, _))) if id <= *smallest => continue,
                        _ => {
                            at_floor.pop();
                        }
                    }
                }
                at_floor.push(Reverse((id, index as u32)));
            }
        }
        let order = |index: &u32| {
            let index = *index as usize;
            Reverse((self.points[index], &self.entries[index].entry_id))
        };
        above.sort_unstable_by_key(order);
        let mut ties: Vec<u32> = at_floor.into_iter().map(|Reverse((_, i))| i).collect();
        ties.sort_unstable_by_key(order);
        above.extend(ties);
        above.truncate(k);
        above
    }

    /// The same rows as [`ContestState::top`], without a pass over every
    /// entry while only entries were added since the last call: the first
    /// `k` of a set and one more entry are the first `k` of the previous
    /// first `k` and that entry. While a mega contest's millions of entries
    /// arrive (all tied at 0 points before the first ball) this keeps each
    /// batch's first page from costing a comparison per entry held.
    pub fn top_kept(&mut self, k: usize) -> Vec<u32> {
        match &self.kept_top {
            Some((kept_k, top)) if *kept_k == k => top.clone(),
            _ => {
                let top = self.top(k);
                self.kept_top = Some((k, top.clone()));
                top
            }
        }
    }

    /// Places a new entry into the kept first rows.
    fn keep_in_top(&mut self, index: u32) {
        let Some((k, mut top)) = self.kept_top.take() else {
            return;
        };
        let key = |i: u32| (self.points[i as usize], &self.entries[i as usize].entry_id);
        let new = key(index);
        // Page order: points descending, then ids descending.
        let at = top.partition_point(|&i| key(i) > new);
        if at < k {
            top.insert(at, index);
            top.truncate(k);
        }
        self.kept_top = Some((k, top));
    }

    /// The squad player points currently applied.
    pub fn player_points(&self) -> &[PlayerPoints] {
        &self.table
    }

    pub fn entry_index(&self, entry: &EntryId) -> Option<u32> {
        self.by_entry.get(entry).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contest(max_entries: u64) -> ContestState {
        let mut squad = BTreeMap::new();
        squad.insert("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect());
        squad.insert("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect());
        ContestState::new(ContestRecord {
            v: 1,
            contest_id: ContestId::parse("c1").unwrap(),
            match_id: MatchId::parse("m1").unwrap(),
            name: "Mega".into(),
            max_entries,
            squad,
        })
    }

    fn entry(id: &str, captain: &str) -> EntryRecord {
        EntryRecord {
            v: 1,
            contest_id: ContestId::parse("c1").unwrap(),
            entry_id: EntryId::parse(id).unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            players: (0..11).map(|i| format!("a{i}")).collect(),
            captain: captain.into(),
            vice_captain: "a10".into(),
        }
    }

    #[test]
    fn entries_are_validated_and_deduplicated() {
        let mut state = contest(2);
        assert_eq!(
            state.add_entry(entry("e1", "a0")),
            Ok(Added::New(TeamPoints(0)))
        );
        assert_eq!(state.add_entry(entry("e1", "a0")), Ok(Added::Duplicate));
        assert_eq!(
            state.add_entry(entry("e1", "a1")),
            Err(EntryError::DuplicateEntry("e1".into()))
        );
        assert_eq!(
            state.add_entry(entry("e2", "a10")),
            Err(EntryError::CaptainIsViceCaptain("a10".into()))
        );
        assert!(state.add_entry(entry("e2", "a1")).is_ok());
        assert!(matches!(
            state.add_entry(entry("e3", "a2")),
            Err(EntryError::ContestFull { .. })
        ));
    }

    #[test]
    fn the_kept_first_rows_equal_a_full_pass_as_entries_arrive_and_points_move() {
        for k in [1, 10, 100] {
            let mut state = contest(5_000);
            let mut seed = 7_u64;
            let mut next = move |n: u64| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) % n
            };
            let mut added = 0;
            for round in 0..30 {
                for _ in 0..100 {
                    let captain = format!("a{}", next(10));
                    // Ids of different lengths: id order is not index order.
                    let id = format!("e{}", next(1_000_000));
                    if state.add_entry(entry(&id, &captain)).is_ok() {
                        added += 1;
                    }
                }
                assert_eq!(state.top_kept(k), state.top(k), "round {round}, k {k}");
                if round % 3 == 2 {
                    let bump = next(30) as i32;
                    state.update_players(|name| match name {
                        "a0" => PlayerPoints(bump),
                        "a3" => PlayerPoints(30 - bump),
                        _ => PlayerPoints::ZERO,
                    });
                }
            }
            assert!(added > 2_000, "{added}");
        }
    }

    #[test]
    fn a_moved_list_given_back_is_filled_by_the_next_ball_from_empty() {
        let mut state = contest(10);
        state.add_entry(entry("e1", "a0")).unwrap();
        state.add_entry(entry("e2", "a1")).unwrap();
        let moved = state.update_players(|_| PlayerPoints(1));
        assert_eq!(moved.len(), 2);
        let memory = moved.as_ptr();
        state.give_back_moved(moved);
        let before = state.points.clone();
        let moved = state.update_players(|name| PlayerPoints(if name == "a1" { 5 } else { 1 }));
        assert_eq!(moved.as_ptr(), memory, "the same memory");
        assert_eq!(
            moved
                .iter()
                .map(|m| (m.index, m.before))
                .collect::<Vec<_>>(),
            vec![(0, before[0]), (1, before[1])],
            "this ball's moves alone, each once"
        );
    }

    #[test]
    fn player_points_move_entries_and_histogram() {
        let mut state = contest(10);
        state.add_entry(entry("e1", "a0")).unwrap();
        state.add_entry(entry("e2", "a1")).unwrap();
        let moved = state.update_players(|name| match name {
            "a0" => PlayerPoints(10),
            _ => PlayerPoints(0),
        });
        assert_eq!(
            moved
                .iter()
                .map(|m| (m.index, m.before))
                .collect::<Vec<_>>(),
            vec![(0, TeamPoints(0)), (1, TeamPoints(0))]
        );
        assert_eq!(state.points, vec![TeamPoints(40), TeamPoints(20)]);
        assert_eq!(state.histogram.rank_of(TeamPoints(20)), 2);
        assert!(state
            .update_players(|name| if name == "a0" {
                PlayerPoints(10)
            } else {
                PlayerPoints(0)
            })
            .is_empty());
    }

    #[test]
    fn the_top_is_page_order_with_ties_by_entry_id_descending() {
        let mut state = contest(1_000);
        // Ten captains, few distinct points: large ties at every floor.
        for i in 0..300 {
            let captain = format!("a{}", (i * 7) % 10);
            state
                .add_entry(entry(&format!("e{}", (i * 37) % 1_000), &captain))
                .unwrap();
        }
        state.update_players(|name| match name {
            "a0" | "a3" => PlayerPoints(4),
            "a5" => PlayerPoints(6),
            "a7" => PlayerPoints(1),
            _ => PlayerPoints(0),
        });
        let mut brute: Vec<u32> = (0..state.entries.len() as u32).collect();
        brute.sort_by(|a, b| {
            let (a, b) = (*a as usize, *b as usize);
            (state.points[b], &state.entries[b].entry_id)
                .cmp(&(state.points[a], &state.entries[a].entry_id))
        });
        for k in [0, 1, 5, 37, 100, 299, 300, 400] {
            assert_eq!(state.top(k), brute[..k.min(300)].to_vec(), "k = {k}");
        }
    }

    #[test]
    fn contest_messages_parse() {
        let message = ContestMessage::from_json(
            br#"{"v":1,"type":"entry","contest_id":"c1","entry_id":"e42","user_id":"u7",
            "players":["a"],"captain":"a","vice_captain":"b"}"#,
        )
        .unwrap();
        assert!(matches!(message, ContestMessage::Entry(_)));
        assert!(
            ContestMessage::from_json(br#"{"v":1,"type":"entry","contest_id":"c 1"}"#).is_err()
        );
        let empty = br#"{"v":1,"type":"contest","contest_id":"c1","match_id":"1","name":"x","max_entries":5,"squad":{}}"#;
        assert!(ContestMessage::from_json(empty)
            .unwrap_err()
            .contains("empty squad"));
    }
}
