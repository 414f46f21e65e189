//! One contest's entry teams, loaded in bulk and then only read
//! ([`ContestTeams`]): the table a node answers my-rank from once it has
//! read a large contest's roster.
//!
//! Why not the general team cache (`quick_cache`) for these: a lookup there
//! takes a shard's read lock (two atomic writes to a line every core
//! shares), probes a hash table of slot numbers, then reads the slot the
//! number points at; each of the last two is a likely cache miss among a
//! million entries, and each cached team costs about 160 bytes. A table that
//! is never written once built needs no lock, and holding each team inline
//! in one 64-byte line, at a load of at most three quarters, makes a lookup
//! one cache miss (plus, now and then, the next line) and a team about 96
//! bytes (a 64-byte slot at two thirds' load). Linear probing over such a table is a few dozen lines, so it is
//! written here rather than taken from a crate.

use compact_str::CompactString;
use leaderboard_core::team::{Team, TEAM_SIZE};

use crate::read_model::EntryTeam;

/// One slot: an entry's key and its team, one cache line. A key of 0 marks
/// an empty slot (keys are stored with their lowest bit set).
#[repr(C, align(64))]
#[derive(Debug, Clone)]
struct TeamSlot {
    key: u128,
    user_id: CompactString,
    /// Squad indexes; a team with an index past `u16::MAX` is not kept
    /// here (no real squad comes near it).
    players: [u16; TEAM_SIZE],
    captain: u8,
    vice_captain: u8,
}

const _: () = assert!(std::mem::size_of::<TeamSlot>() == 64);

impl TeamSlot {
    fn empty() -> TeamSlot {
        TeamSlot {
            key: 0,
            user_id: CompactString::const_new(""),
            players: [0; TEAM_SIZE],
            captain: 0,
            vice_captain: 0,
        }
    }

    fn team(&self) -> EntryTeam {
        EntryTeam {
            user_id: self.user_id.clone(),
            team: Team {
                players: self.players.map(u32::from),
                captain: self.captain,
                vice_captain: self.vice_captain,
            },
        }
    }
}

/// A slot's stored key: never 0, so that 0 can mark an empty slot.
fn stored(key: u128) -> u128 {
    key | 1
}

/// Where a key's probe starts in a table of `slots` slots: its high 64
/// bits scaled to the table (the keys are already uniform hashes).
fn home(key: u128, slots: usize) -> usize {
    (((key >> 64) * slots as u128) >> 64) as usize
}

/// A contest's teams by entry key (the team cache's 128-bit fingerprint of
/// contest and entry), read without locks: open addressing, linear probing.
#[derive(Debug)]
pub struct ContestTeams {
    slots: Box<[TeamSlot]>,
    len: usize,
}

impl ContestTeams {
    /// The team of the entry whose key is `key`, if the table holds it.
    #[inline]
    pub fn get(&self, key: u128) -> Option<EntryTeam> {
        find(&self.slots, key).map(TeamSlot::team)
    }

    /// Teams held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A [`ContestTeams`] being filled, one team at a time.
#[derive(Debug)]
pub struct ContestTeamsBuilder {
    slots: Vec<TeamSlot>,
    len: usize,
}

impl ContestTeamsBuilder {
    /// A table with room for `expected` teams before it has to grow.
    pub fn with_room(expected: u64) -> ContestTeamsBuilder {
        let expected = usize::try_from(expected).unwrap_or(usize::MAX / 4);
        ContestTeamsBuilder {
            slots: vec![TeamSlot::empty(); Self::slots_for(expected)],
            len: 0,
        }
    }

    /// Slots for `teams` at a load of two thirds (a lookup reads 2 slots on
    /// average, a probe for an absent key 5).
    fn slots_for(teams: usize) -> usize {
        teams.saturating_mul(3) / 2 + 16
    }

    /// Keeps `team` under `key`, replacing what the key held. False when
    /// the team does not fit a slot (a squad index past `u16::MAX`): the
    /// caller keeps it elsewhere.
    pub fn insert(&mut self, key: u128, team: &EntryTeam) -> bool {
        let mut players = [0_u16; TEAM_SIZE];
        for (slot, &player) in players.iter_mut().zip(&team.team.players) {
            let Ok(player) = u16::try_from(player) else {
                return false;
            };
            *slot = player;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let slot = TeamSlot {
            key: stored(key),
            user_id: team.user_id.clone(),
            players,
            captain: team.team.captain,
            vice_captain: team.team.vice_captain,
        };
        if self.place(slot) {
            self.len += 1;
        }
        true
    }

    /// Whether the table holds a team under `key`.
    pub fn contains(&self, key: u128) -> bool {
        find(&self.slots, key).is_some()
    }

    /// Puts `slot` in its place; true when its key was new.
    fn place(&mut self, slot: TeamSlot) -> bool {
        let slots = self.slots.len();
        let mut at = home(slot.key, slots);
        loop {
            let here = &mut self.slots[at];
            if here.key == 0 || here.key == slot.key {
                let new = here.key == 0;
                *here = slot;
                return new;
            }
            at += 1;
            if at == slots {
                at = 0;
            }
        }
    }

    /// Twice the slots: more teams came than the contest said it had.
    fn grow(&mut self) {
        let bigger = vec![TeamSlot::empty(); self.slots.len() * 2];
        for slot in std::mem::replace(&mut self.slots, bigger) {
            if slot.key != 0 {
                self.place(slot);
            }
        }
    }

    /// Teams kept so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> ContestTeams {
        ContestTeams {
            slots: self.slots.into_boxed_slice(),
            len: self.len,
        }
    }
}

/// The slot holding `key` among `slots`, if any: linear probing from its
/// home slot up to the first empty one (a table always has one: its load is
/// kept at most three quarters).
#[inline]
fn find(slots: &[TeamSlot], key: u128) -> Option<&TeamSlot> {
    let key = stored(key);
    let mut at = home(key, slots.len());
    loop {
        let slot = &slots[at];
        if slot.key == key {
            return Some(slot);
        }
        if slot.key == 0 {
            return None;
        }
        at += 1;
        if at == slots.len() {
            at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn team(seed: u32) -> EntryTeam {
        EntryTeam {
            user_id: format!("u{seed}").into(),
            team: Team {
                players: std::array::from_fn(|slot| seed % 40 + slot as u32),
                captain: (seed % 11) as u8,
                vice_captain: ((seed + 1) % 11) as u8,
            },
        }
    }

    #[test]
    fn every_team_kept_is_found_and_no_other_key_is() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let keys: Vec<u128> = (0..50_000).map(|_| rng.random()).collect();
        // Room for fewer than come: the table grows twice on the way.
        let mut builder = ContestTeamsBuilder::with_room(10_000);
        for (index, &key) in keys.iter().enumerate() {
            assert!(builder.insert(key, &team(index as u32)));
        }
        assert!(builder.contains(keys[123]));
        let table = builder.finish();
        assert_eq!(table.len(), keys.len());
        for (index, &key) in keys.iter().enumerate() {
            assert_eq!(table.get(key), Some(team(index as u32)), "key {index}");
        }
        for _ in 0..50_000 {
            let absent: u128 = rng.random();
            assert!(!keys.contains(&absent));
            assert_eq!(table.get(absent), None);
        }
    }

    #[test]
    fn keeping_a_key_again_replaces_its_team_and_counts_it_once() {
        let mut builder = ContestTeamsBuilder::with_room(4);
        assert!(builder.insert(42 << 64, &team(1)));
        assert!(builder.insert(42 << 64, &team(2)));
        let table = builder.finish();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(42 << 64), Some(team(2)));
    }

    #[test]
    fn keys_that_share_a_home_slot_are_told_apart_and_the_lowest_bit_is_not_part_of_a_key() {
        let mut builder = ContestTeamsBuilder::with_room(4);
        // Same high half, so the same home slot: they probe past each other.
        for low in (2..20_u128).step_by(2) {
            assert!(builder.insert((7 << 64) | low, &team(low as u32)));
        }
        let table = builder.finish();
        assert_eq!(table.len(), 9);
        for low in (2..20_u128).step_by(2) {
            assert_eq!(table.get((7 << 64) | low), Some(team(low as u32)));
        }
        // The lowest bit is not part of a key: 2 and 3 are the same entry.
        assert_eq!(table.get((7 << 64) | 3), Some(team(2)));
        assert_eq!(table.get((7 << 64) | 20), None);
    }

    #[test]
    fn a_team_with_a_squad_index_past_u16_is_refused_not_truncated() {
        let mut builder = ContestTeamsBuilder::with_room(4);
        let mut wide = team(3);
        wide.team.players[4] = 70_000;
        assert!(!builder.insert(5 << 64, &wide));
        assert!(builder.is_empty());
        assert_eq!(builder.finish().get(5 << 64), None);
    }

    #[test]
    fn an_empty_table_answers_nothing() {
        let table = ContestTeamsBuilder::with_room(0).finish();
        assert!(table.is_empty());
        assert_eq!(table.get(1 << 100), None);
    }
}
