//! Contest entries: squads, team validation with precise errors, and team points.

use std::collections::{BTreeMap, HashMap};

use super::points::{PlayerPoints, TeamPoints};

/// Players in a team.
pub const TEAM_SIZE: usize = 11;

/// Multipliers in half units: ×1, ×1.5 (vice-captain), ×2 (captain).
pub const WEIGHT_PLAYER: i64 = 2;
pub const WEIGHT_VICE_CAPTAIN: i64 = 3;
pub const WEIGHT_CAPTAIN: i64 = 4;

/// Why an entry was rejected; the text goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry names {got} players; a team has exactly 11")]
    WrongCount { got: usize },
    #[error("player `{0}` is named more than once")]
    DuplicatePlayer(String),
    #[error("player `{0}` is not in the contest's squad")]
    NotInSquad(String),
    #[error("captain `{0}` is not one of the entry's 11 players")]
    CaptainNotPicked(String),
    #[error("vice-captain `{0}` is not one of the entry's 11 players")]
    ViceCaptainNotPicked(String),
    #[error("captain and vice-captain must differ (both are `{0}`)")]
    CaptainIsViceCaptain(String),
    #[error("contest `{0}` is unknown (its contest event must come first)")]
    UnknownContest(String),
    #[error("contest `{contest}` is full ({max_entries} entries)")]
    ContestFull { contest: String, max_entries: u64 },
    #[error("entry `{0}` already exists in this contest")]
    DuplicateEntry(String),
}

/// The pool of players a contest's entries pick from, each with a dense index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Squad {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Squad {
    /// Builds a squad from the contract's `{"team": ["player", …]}` map.
    pub fn from_teams(teams: &BTreeMap<String, Vec<String>>) -> Squad {
        let mut squad = Squad::default();
        for name in teams.values().flatten() {
            if !squad.index.contains_key(name) {
                squad.index.insert(name.clone(), squad.names.len() as u32);
                squad.names.push(name.clone());
            }
        }
        squad
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn name(&self, index: u32) -> &str {
        &self.names[index as usize]
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Looks up every squad player's points, by squad index.
    pub fn points_table(&self, points_of: impl Fn(&str) -> PlayerPoints) -> Vec<PlayerPoints> {
        self.names.iter().map(|name| points_of(name)).collect()
    }

    /// Validates a pick of 11 players with captain and vice-captain.
    pub fn team(
        &self,
        players: &[String],
        captain: &str,
        vice_captain: &str,
    ) -> Result<Team, EntryError> {
        if players.len() != TEAM_SIZE {
            return Err(EntryError::WrongCount { got: players.len() });
        }
        let mut picked = [0_u32; TEAM_SIZE];
        for (slot, name) in players.iter().enumerate() {
            if players[..slot].contains(name) {
                return Err(EntryError::DuplicatePlayer(name.clone()));
            }
            picked[slot] = self
                .index_of(name)
                .ok_or_else(|| EntryError::NotInSquad(name.clone()))?;
        }
        if captain == vice_captain {
            return Err(EntryError::CaptainIsViceCaptain(captain.to_owned()));
        }
        let captain_slot = players
            .iter()
            .position(|name| name == captain)
            .ok_or_else(|| EntryError::CaptainNotPicked(captain.to_owned()))?;
        let vice_captain_slot = players
            .iter()
            .position(|name| name == vice_captain)
            .ok_or_else(|| EntryError::ViceCaptainNotPicked(vice_captain.to_owned()))?;
        Ok(Team {
            players: picked,
            captain: captain_slot as u8,
            vice_captain: vice_captain_slot as u8,
        })
    }
}

/// A valid team: 11 distinct squad indexes, captain and vice-captain slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Team {
    pub players: [u32; TEAM_SIZE],
    pub captain: u8,
    pub vice_captain: u8,
}

impl Team {
    /// Team points from squad-indexed player points: 11 multiply-adds.
    #[inline]
    pub fn points(&self, table: &[PlayerPoints]) -> TeamPoints {
        let mut halves = 0_i64;
        for (slot, &player) in self.players.iter().enumerate() {
            let weight = if slot == self.captain as usize {
                WEIGHT_CAPTAIN
            } else if slot == self.vice_captain as usize {
                WEIGHT_VICE_CAPTAIN
            } else {
                WEIGHT_PLAYER
            };
            halves += i64::from(table[player as usize].0) * weight;
        }
        TeamPoints(halves)
    }

    /// Team points, or `None` when a player index is outside `table`: for
    /// teams read back from a store, which are validated like input.
    pub fn points_checked(&self, table: &[PlayerPoints]) -> Option<TeamPoints> {
        self.fits(table.len()).then(|| self.points(table))
    }

    /// Whether every player index is inside a squad of `squad_len` players.
    pub fn fits(&self, squad_len: usize) -> bool {
        self.players
            .iter()
            .all(|&player| (player as usize) < squad_len)
    }

    /// Whether any of these squad players is in the team.
    pub fn picks_any(&self, squad_indexes: &[u32]) -> bool {
        self.players
            .iter()
            .any(|player| squad_indexes.contains(player))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squad() -> Squad {
        let mut teams = BTreeMap::new();
        teams.insert("A".to_owned(), (0..11).map(|i| format!("a{i}")).collect());
        teams.insert("B".to_owned(), (0..11).map(|i| format!("b{i}")).collect());
        Squad::from_teams(&teams)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    const PICK: [&str; 11] = [
        "a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "b3", "b4",
    ];

    #[test]
    fn validation_names_the_problem() {
        let squad = squad();
        assert!(squad.team(&names(&PICK), "a0", "b0").is_ok());
        assert_eq!(
            squad.team(&names(&PICK[..10]), "a0", "b0"),
            Err(EntryError::WrongCount { got: 10 })
        );
        let mut duplicate = PICK;
        duplicate[10] = "a0";
        assert_eq!(
            squad.team(&names(&duplicate), "a0", "b0"),
            Err(EntryError::DuplicatePlayer("a0".into()))
        );
        let mut stranger = PICK;
        stranger[3] = "zz";
        assert_eq!(
            squad.team(&names(&stranger), "a0", "b0"),
            Err(EntryError::NotInSquad("zz".into()))
        );
        assert_eq!(
            squad.team(&names(&PICK), "a9", "b0"),
            Err(EntryError::CaptainNotPicked("a9".into()))
        );
        assert_eq!(
            squad.team(&names(&PICK), "a0", "b9"),
            Err(EntryError::ViceCaptainNotPicked("b9".into()))
        );
        assert_eq!(
            squad.team(&names(&PICK), "a1", "a1"),
            Err(EntryError::CaptainIsViceCaptain("a1".into()))
        );
        assert_eq!(
            EntryError::NotInSquad("zz".into()).to_string(),
            "player `zz` is not in the contest's squad"
        );
    }

    #[test]
    fn captain_doubles_and_vice_captain_adds_half() {
        let squad = squad();
        let team = squad.team(&names(&PICK), "a0", "a1").unwrap();
        let table = squad.points_table(|name| match name {
            "a0" => PlayerPoints(10),
            "a1" => PlayerPoints(7),
            "b4" => PlayerPoints(-2),
            "b9" => PlayerPoints(100), // not picked
            _ => PlayerPoints(1),
        });
        // 2×10 + 1.5×7 + (-2) + 8×1 = 36.5
        assert_eq!(team.points(&table), TeamPoints(73));
        assert_eq!(team.points_checked(&table), Some(TeamPoints(73)));
        assert_eq!(
            team.points_checked(&table[..3]),
            None,
            "an index past the table is refused, not a panic"
        );
        assert_eq!(team.points(&table).to_string(), "36.5");
    }
}
