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
/// Shards of a contest's roster (see [`contest_roster_keys`]).
pub const ROSTER_SHARDS: usize = 16;

/// The contest's roster: every entry's owner and team again, as
/// `entry user team\n` records appended to one of [`ROSTER_SHARDS`]
/// strings (by [`roster_shard`]), written with the hashes in the same
/// atomic write. A node loads a mega contest's teams from these in a few
/// `GETRANGE` pages of megabytes instead of scanning two hashes of millions
/// of fields; 16 strings keep each far below Redis's 512 MB string limit
/// at 10M entries.
pub fn contest_roster_keys(contest: &ContestId) -> Vec<String> {
    (0..ROSTER_SHARDS)
        .map(|shard| format!("lb:c:{{{contest}}}:roster:{shard}"))
        .collect()
}

/// The roster shard of an entry: FNV-1a of its id (stable across versions
/// and processes, unlike the standard library's seeded hashers).
pub fn roster_shard(entry: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in entry.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % ROSTER_SHARDS
}

/// Appends one roster record to `out`. Ids hold no space or newline, nor
/// does an encoded team.
pub fn push_roster_record(out: &mut String, entry: &str, user: &str, team: &str) {
    out.push_str(entry);
    out.push(' ');
    out.push_str(user);
    out.push(' ');
    out.push_str(team);
    out.push('\n');
}

/// One roster record (without its newline) as (entry, user, team) text,
/// unchecked; `None` when it does not have three fields.
pub fn split_roster_record(record: &str) -> Option<(&str, &str, &str)> {
    let mut fields = record.splitn(3, ' ');
    Some((fields.next()?, fields.next()?, fields.next()?))
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
    // Parsed in place (no list is built): a bulk load decodes millions.
    let mut players = [0_u32; TEAM_SIZE];
    let mut count = 0;
    for player in parts.next()?.split(',') {
        *players.get_mut(count)? = player.parse().ok()?;
        count += 1;
    }
    if count != TEAM_SIZE {
        return None;
    }
    let captain: u8 = parts.next()?.parse().ok()?;
    let vice_captain: u8 = parts.next()?.parse().ok()?;
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
        assert_eq!(
            decode_team("0,3,5,7,9,11,13,15,17,19,21,2;4;10"),
            None,
            "too many players"
        );
        assert_eq!(decode_team(",3,5,7,9,11,13,15,17,19,21;4;10"), None);
    }

    #[test]
    fn roster_records_round_trip_and_shards_are_fixed() {
        let mut records = String::new();
        push_roster_record(&mut records, "e1", "u1", "0,1,2,3,4,5,6,7,8,9,10;0;1");
        push_roster_record(&mut records, "e-2.x", "u_2", "1,2,3,4,5,6,7,8,9,10,11;2;3");
        let parsed: Vec<_> = records.lines().map(split_roster_record).collect();
        assert_eq!(
            parsed,
            [
                Some(("e1", "u1", "0,1,2,3,4,5,6,7,8,9,10;0;1")),
                Some(("e-2.x", "u_2", "1,2,3,4,5,6,7,8,9,10,11;2;3"))
            ]
        );
        assert_eq!(split_roster_record("e1 u1"), None);
        // Writers and readers of every version must agree on the shard.
        let shards: Vec<usize> = ["e1", "e2", "e42", "entry-1000000"]
            .iter()
            .map(|entry| roster_shard(entry))
            .collect();
        assert_eq!(shards, [3, 6, 10, 9], "FNV-1a, 32 bits, modulo 16");
        let keys = contest_roster_keys(&ContestId::parse("c1").unwrap());
        assert_eq!(
            (keys.len(), keys[3].as_str()),
            (ROSTER_SHARDS, "lb:c:{c1}:roster:3")
        );
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
