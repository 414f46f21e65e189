//! The Redis key layout of the hot state, its pub/sub channels and the
//! stored form of a team. The layout is documented in `docs/redis-keys.md`.
//!
//! Every key of a contest carries the contest id as a hash tag (`{c1}`), and
//! every key of a match the match id, so a Redis Cluster keeps each contest's
//! keys on one slot and a pipeline for one contest never crosses nodes.

use leaderboard_core::ids::{ContestId, MatchId};
use leaderboard_core::team::{Team, TEAM_SIZE};

/// Sorted-set members written per ZADD in a batched refresh.
pub const ZADD_CHUNK: usize = 10_000;

/// Rows of a contest's top kept in its meta (`top`) at every version, so the
/// first page is fresh every ball however large the contest.
pub const TOP_ROWS: usize = 100;

/// Present while Redis holds the hot state; its absence means Redis lost it.
pub const ALIVE_KEY: &str = "lb:ingest:alive";

pub fn match_points_key(match_id: &MatchId) -> String {
    format!("lb:m:{{{match_id}}}:points")
}
pub fn match_meta_key(match_id: &MatchId) -> String {
    format!("lb:m:{{{match_id}}}:meta")
}
pub fn match_contests_key(match_id: &MatchId) -> String {
    format!("lb:m:{{{match_id}}}:contests")
}
/// The contest's first sorted set (buffer 0 of [`contest_ranks_keys`]).
pub fn contest_ranks_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:ranks")
}
/// The contest's two sorted sets: readers read the one the meta's
/// `ranks_buffer` names (0 when absent), at the meta's `ranks_version`; a
/// large contest's refresh writes the other and then switches them in one
/// step (see `docs/redis-keys.md`, "Two sorted sets").
pub fn contest_ranks_keys(contest: &ContestId) -> [String; 2] {
    [
        contest_ranks_key(contest),
        format!("lb:c:{{{contest}}}:ranks:1"),
    ]
}
/// The meta's field, `1` while the two sorted sets hold the same members and
/// scores: set by a small full write (both emptied and written whole; small
/// writes change both alike), removed by a refresh's first write into one of
/// them. A refresh that starts while it is set skips the `COPY` of one set
/// into the other (one blocking command of seconds at 10M members).
pub const RANKS_EQUAL: &str = "ranks_equal";
pub fn contest_histogram_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:hist")
}
pub fn contest_users_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:users")
}
pub fn contest_teams_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:teams")
}
pub fn contest_squad_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:squad")
}
/// The pub/sub channel told whenever a match's player points move.
pub fn match_channel(match_id: &MatchId) -> String {
    format!("lb:m:{{{match_id}}}:changed")
}
/// Every channel of the hot state, for one `PSUBSCRIBE`.
pub const ALL_CHANGES_PATTERN: &str = "lb:*:changed";

/// A team as stored: squad indexes, then the captain's and vice-captain's slots.
pub fn encode_team(team: &Team) -> String {
    let players: Vec<String> = team.players.iter().map(u32::to_string).collect();
    format!(
        "{};{};{}",
        players.join(","),
        team.captain,
        team.vice_captain
    )
}

/// The inverse of [`encode_team`]; `None` for anything malformed.
pub fn decode_team(text: &str) -> Option<Team> {
    let mut parts = text.split(';');
    let players: Vec<u32> = parts
        .next()?
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let captain: u8 = parts.next()?.parse().ok()?;
    let vice_captain: u8 = parts.next()?.parse().ok()?;
    let players: [u32; TEAM_SIZE] = players.try_into().ok()?;
    (usize::from(captain) < TEAM_SIZE
        && usize::from(vice_captain) < TEAM_SIZE
        && captain != vice_captain)
        .then_some(Team {
            players,
            captain,
            vice_captain,
        })
}

pub fn contest_meta_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:meta")
}
/// The pub/sub channel told whenever the contest's version moves.
pub fn contest_channel(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_round_trip_and_garbage_is_refused() {
        let team = Team {
            players: [0, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21],
            captain: 4,
            vice_captain: 10,
        };
        let text = encode_team(&team);
        assert_eq!(text, "0,3,5,7,9,11,13,15,17,19,21;4;10");
        assert_eq!(decode_team(&text), Some(team));
        assert_eq!(decode_team("1,2,3;0;1"), None, "too few players");
        assert_eq!(
            decode_team("0,3,5,7,9,11,13,15,17,19,21;4;4"),
            None,
            "captain is vice-captain"
        );
        assert_eq!(
            decode_team("0,3,5,7,9,11,13,15,17,19,21;11;1"),
            None,
            "slot out of range"
        );
        assert_eq!(decode_team("x"), None);
    }

    #[test]
    fn keys_carry_hash_tags() {
        let contest = ContestId::parse("c1").unwrap();
        assert_eq!(contest_ranks_key(&contest), "lb:c:{c1}:ranks");
        assert_eq!(contest_channel(&contest), "lb:c:{c1}:changed");
        assert_eq!(
            match_points_key(&MatchId::parse("1136561").unwrap()),
            "lb:m:{1136561}:points"
        );
    }
}
