//! The Redis hot state: key layout, pipelined writes, and the reads the CLI
//! and the API use. The layout is documented in `docs/redis-keys.md`.
//!
//! Every key of a contest carries the contest id as a hash tag (`{c1}`), and
//! every key of a match the match id, so a Redis Cluster keeps each contest's
//! keys on one slot and a pipeline for one contest never crosses nodes.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{ContestId, EntryId, MatchId, UserId};
use crate::domain::points::{PlayerPoints, TeamPoints};
use crate::domain::team::{Team, TEAM_SIZE};

/// Sorted-set members written per ZADD in a batched refresh.
pub const ZADD_CHUNK: usize = 10_000;

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
pub fn contest_ranks_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:ranks")
}
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

/// The pub/sub message on a contest's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContestChanged {
    pub contest_id: ContestId,
    pub match_id: MatchId,
    pub version: u64,
    pub total: u64,
}

/// New player points of one match.
#[derive(Debug, Clone)]
pub struct MatchUpdate {
    pub match_id: MatchId,
    pub version: u64,
    pub last_seq: u64,
    pub points: Vec<(String, PlayerPoints)>,
    /// Replace the whole hash (rebuild) rather than patch it.
    pub full: bool,
}

/// What changed in one contest.
#[derive(Debug, Clone)]
pub struct ContestUpdate {
    pub contest_id: ContestId,
    pub match_id: MatchId,
    pub name: String,
    pub version: u64,
    pub total: u64,
    /// Entries whose points are new or moved.
    pub ranks: Vec<(EntryId, TeamPoints)>,
    /// Entries new to the contest.
    pub users: Vec<(EntryId, UserId)>,
    /// Their teams, encoded by [`encode_team`].
    pub teams: Vec<(EntryId, String)>,
    /// The squad in index order (written with a full update).
    pub squad: Vec<String>,
    /// The squad's player points the contest's points were computed from.
    pub player_points: Vec<i32>,
    /// Histogram buckets that changed: (points, count), count 0 = gone.
    pub histogram: Vec<(TeamPoints, u64)>,
    /// Replace every key of the contest (rebuild).
    pub full: bool,
}

/// Writes the hot state with pipelines; one instance per writer task.
#[derive(Clone)]
pub struct HotWriter {
    connection: ConnectionManager,
    /// From this many changed entries, a contest is refreshed in two steps:
    /// histogram, version and notice first, then the sorted set in chunks.
    pub large_contest: usize,
    /// How long a finished contest's keys stay (see [`HotWriter::retire`]);
    /// zero keeps them.
    pub retention: std::time::Duration,
}

impl std::fmt::Debug for HotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotWriter")
            .field("large_contest", &self.large_contest)
            .finish()
    }
}

/// Connects with a connection manager that reconnects by itself.
pub async fn connect(url: &str) -> RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(30)));
    ConnectionManager::new_with_config(client, config).await
}

impl HotWriter {
    pub fn new(connection: ConnectionManager, large_contest: usize) -> HotWriter {
        HotWriter {
            connection,
            large_contest,
            retention: std::time::Duration::ZERO,
        }
    }

    /// Checks that Redis still holds the hot state; `false` means it was
    /// flushed or restarted empty (the marker is set again as a side effect).
    pub async fn still_alive(&mut self) -> RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(ALIVE_KEY)
            .arg("1")
            .arg("NX")
            .query_async(&mut self.connection)
            .await?;
        Ok(set.is_none())
    }

    /// Gives the hot keys of finished contests (and of their matches) a time
    /// to live of `retention`: once it passes, Redis forgets them and the read
    /// API answers those contests from their final standings in the durable
    /// store. Redis holds what is live; the store holds what is finished.
    pub async fn retire(
        &mut self,
        contests: &[(ContestId, MatchId)],
        retention: std::time::Duration,
    ) -> RedisResult<()> {
        if contests.is_empty() || retention.is_zero() {
            return Ok(());
        }
        let seconds = retention.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        let mut matches = std::collections::BTreeSet::new();
        for (contest, match_id) in contests {
            for key in [
                contest_ranks_key(contest),
                contest_histogram_key(contest),
                contest_users_key(contest),
                contest_teams_key(contest),
                contest_squad_key(contest),
                contest_meta_key(contest),
            ] {
                pipe.expire(key, seconds).ignore();
            }
            matches.insert(match_id);
        }
        for match_id in matches {
            for key in [
                match_points_key(match_id),
                match_meta_key(match_id),
                match_contests_key(match_id),
            ] {
                pipe.expire(key, seconds).ignore();
            }
        }
        pipe.query_async(&mut self.connection).await
    }

    /// Writes match points, then every contest update; each contest's
    /// version moves once and its notice is published after its writes.
    pub async fn write(
        &mut self,
        matches: &[MatchUpdate],
        contests: &[ContestUpdate],
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for update in matches {
            let points_key = match_points_key(&update.match_id);
            if update.full {
                pipe.del(&points_key).ignore();
            }
            if !update.points.is_empty() {
                let fields: Vec<(&str, i32)> = update
                    .points
                    .iter()
                    .map(|(n, p)| (n.as_str(), p.0))
                    .collect();
                pipe.hset_multiple(&points_key, &fields).ignore();
            }
            pipe.hset_multiple(
                match_meta_key(&update.match_id),
                &[("version", update.version), ("seq", update.last_seq)],
            )
            .ignore();
            pipe.publish(
                match_channel(&update.match_id),
                serde_json::json!({"match_id": update.match_id, "version": update.version})
                    .to_string(),
            )
            .ignore();
        }
        if !matches.is_empty() {
            pipe.query_async::<()>(&mut self.connection).await?;
        }
        for update in contests {
            if update.ranks.len() >= self.large_contest {
                self.write_large(update).await?;
            } else {
                self.write_small(update).await?;
            }
        }
        Ok(())
    }

    /// One transaction (MULTI/EXEC): sorted set, histogram, users, meta, then
    /// the notice, so that a reader's transaction sees all of a version or none.
    async fn write_small(&mut self, update: &ContestUpdate) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if update.full {
            clear_contest(&mut pipe, &update.contest_id);
        }
        add_ranks(&mut pipe, update, &update.ranks);
        add_summary(&mut pipe, update, true);
        pipe.query_async::<()>(&mut self.connection).await
    }

    /// Histogram, version and notice first (ranks are exact from the histogram
    /// at once), then the sorted set in chunks of [`ZADD_CHUNK`].
    async fn write_large(&mut self, update: &ContestUpdate) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        if update.full {
            clear_contest(&mut pipe, &update.contest_id);
        }
        add_summary(&mut pipe, update, false);
        pipe.query_async::<()>(&mut self.connection).await?;
        for chunk in update.ranks.chunks(ZADD_CHUNK * 4) {
            let mut pipe = redis::pipe();
            add_ranks(&mut pipe, update, chunk);
            pipe.query_async::<()>(&mut self.connection).await?;
        }
        // The sorted set now matches the version: pages may be served from it.
        let mut pipe = redis::pipe();
        pipe.hset(
            contest_meta_key(&update.contest_id),
            "ranks_version",
            update.version,
        )
        .ignore();
        pipe.publish(contest_channel(&update.contest_id), notice_json(update))
            .ignore();
        pipe.query_async::<()>(&mut self.connection).await
    }

    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

fn clear_contest(pipe: &mut redis::Pipeline, contest: &ContestId) {
    pipe.del(&[
        contest_ranks_key(contest),
        contest_histogram_key(contest),
        contest_users_key(contest),
        contest_teams_key(contest),
    ])
    .ignore();
}

fn add_ranks(pipe: &mut redis::Pipeline, update: &ContestUpdate, ranks: &[(EntryId, TeamPoints)]) {
    for members in ranks.chunks(ZADD_CHUNK) {
        let scored: Vec<(f64, &str)> = members
            .iter()
            .map(|(e, p)| (p.as_f64(), e.as_str()))
            .collect();
        pipe.zadd_multiple(contest_ranks_key(&update.contest_id), &scored)
            .ignore();
    }
}

/// Users, teams, histogram, meta (with the version and the player points it
/// was computed from) and the notice, in that order. `sorted_set_done` says
/// whether the sorted set already holds this version (`ranks_version`).
fn add_summary(pipe: &mut redis::Pipeline, update: &ContestUpdate, sorted_set_done: bool) {
    let contest = &update.contest_id;
    for users in update.users.chunks(ZADD_CHUNK) {
        let fields: Vec<(&str, &str)> = users
            .iter()
            .map(|(e, u)| (e.as_str(), u.as_str()))
            .collect();
        pipe.hset_multiple(contest_users_key(contest), &fields)
            .ignore();
    }
    for teams in update.teams.chunks(ZADD_CHUNK) {
        let fields: Vec<(&str, &str)> = teams
            .iter()
            .map(|(e, t)| (e.as_str(), t.as_str()))
            .collect();
        pipe.hset_multiple(contest_teams_key(contest), &fields)
            .ignore();
    }
    if !update.squad.is_empty() {
        pipe.set(
            contest_squad_key(contest),
            serde_json::to_string(&update.squad).expect("names serialize"),
        )
        .ignore();
    }
    let (present, gone): (Vec<_>, Vec<_>) =
        update.histogram.iter().partition(|(_, count)| *count > 0);
    if !present.is_empty() {
        let fields: Vec<(i64, u64)> = present.iter().map(|(p, c)| (p.halves(), *c)).collect();
        pipe.hset_multiple(contest_histogram_key(contest), &fields)
            .ignore();
    }
    if !gone.is_empty() {
        let fields: Vec<i64> = gone.iter().map(|(p, _)| p.halves()).collect();
        pipe.hdel(contest_histogram_key(contest), fields).ignore();
    }
    pipe.hset_multiple(
        contest_meta_key(contest),
        &[
            ("version", update.version.to_string()),
            ("total", update.total.to_string()),
            ("match_id", update.match_id.to_string()),
            ("name", update.name.clone()),
            (
                "players",
                serde_json::to_string(&update.player_points).expect("points serialize"),
            ),
        ],
    )
    .ignore();
    if sorted_set_done {
        pipe.hset(contest_meta_key(contest), "ranks_version", update.version)
            .ignore();
    }
    pipe.sadd(match_contests_key(&update.match_id), contest.as_str())
        .ignore();
    pipe.publish(contest_channel(contest), notice_json(update))
        .ignore();
}

fn notice_json(update: &ContestUpdate) -> String {
    let notice = ContestChanged {
        contest_id: update.contest_id.clone(),
        match_id: update.match_id.clone(),
        version: update.version,
        total: update.total,
    };
    serde_json::to_string(&notice).expect("notices serialize")
}

/// One row of a leaderboard page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedEntry {
    pub rank: u64,
    pub entry_id: String,
    pub user_id: String,
    pub points: TeamPoints,
}

/// A page of a contest from the hot state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotPage {
    pub contest_id: String,
    pub match_id: String,
    pub version: u64,
    /// The version the rows were ranked at (read with them, in one transaction).
    pub ranks_version: u64,
    pub total: u64,
    pub entries: Vec<RankedEntry>,
}

/// A page in one atomic step: meta, rows with scores, the count strictly
/// above the first row's score, and the rows' users.
static READ_PAGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local meta = redis.call('HGETALL', KEYS[1])
        if #meta == 0 then return {{}, {}, 0, {}} end
        local rows = redis.call('ZREVRANGE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')
        if #rows == 0 then return {meta, rows, 0, {}} end
        local above = redis.call('ZCOUNT', KEYS[2], '(' .. rows[2], '+inf')
        local ids = {}
        for i = 1, #rows, 2 do ids[#ids + 1] = rows[i] end
        return {meta, rows, above, redis.call('HMGET', KEYS[3], unpack(ids))}
        ",
    )
});

/// What [`READ_PAGE`] answers: meta, rows with scores, entries above the
/// first row, the rows' users.
type PageRead = (
    std::collections::HashMap<String, String>,
    Vec<(String, f64)>,
    u64,
    Vec<Option<String>>,
);

/// Reads a page of the sorted set with competition ranks.
pub async fn read_page(
    connection: &mut ConnectionManager,
    contest: &ContestId,
    offset: usize,
    limit: usize,
) -> RedisResult<Option<HotPage>> {
    let (start, stop) = if limit == 0 {
        (1, 0)
    } else {
        (offset as isize, (offset + limit - 1) as isize)
    };
    // One script, so one atomic read: the rows, the rank of the first one
    // (entries strictly above its points), their users and the
    // `ranks_version` all belong to the same state.
    let (meta, rows, above, users): PageRead = READ_PAGE
        .key(contest_meta_key(contest))
        .key(contest_ranks_key(contest))
        .key(contest_users_key(contest))
        .arg(start)
        .arg(stop)
        .invoke_async(connection)
        .await?;
    if meta.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(rows.len());
    let mut rank = above + 1;
    for (position, ((entry, score), user)) in rows.iter().zip(users).enumerate() {
        if position > 0 && *score != rows[position - 1].1 {
            rank = offset as u64 + position as u64 + 1;
        }
        entries.push(RankedEntry {
            rank,
            entry_id: entry.clone(),
            user_id: user.unwrap_or_default(),
            points: TeamPoints::from_f64_exact(*score).unwrap_or_default(),
        });
    }
    let number = |field: &str| meta.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Some(HotPage {
        contest_id: contest.to_string(),
        match_id: meta.get("match_id").cloned().unwrap_or_default(),
        version: number("version"),
        ranks_version: number("ranks_version"),
        total: number("total"),
        entries,
    }))
}

/// A contest's meta, histogram and top `top` rows (entry, score), read in
/// one transaction so the rows belong to the version the meta names.
pub type TopRead = (
    std::collections::HashMap<String, String>,
    Vec<(i64, u64)>,
    Vec<(String, f64)>,
);

/// Reads [`TopRead`] and the owners of the top rows.
pub async fn read_top(
    connection: &mut ConnectionManager,
    contest: &ContestId,
    top: usize,
) -> RedisResult<(TopRead, Vec<Option<String>>)> {
    // ZREVRANGE 1 0 is empty: `top` 0 reads no rows.
    let (start, stop) = if top == 0 {
        (1, 0)
    } else {
        (0, top as isize - 1)
    };
    let (meta, histogram, rows): TopRead = redis::pipe()
        .atomic()
        .hgetall(contest_meta_key(contest))
        .hgetall(contest_histogram_key(contest))
        .zrevrange_withscores(contest_ranks_key(contest), start, stop)
        .query_async(connection)
        .await?;
    let users: Vec<Option<String>> = if rows.is_empty() {
        Vec::new()
    } else {
        // Owners never change: read outside the transaction.
        let ids: Vec<&str> = rows.iter().map(|(e, _)| e.as_str()).collect();
        redis::cmd("HMGET")
            .arg(contest_users_key(contest))
            .arg(&ids)
            .query_async(connection)
            .await?
    };
    Ok(((meta, histogram, rows), users))
}

/// A match's live player points and version.
pub async fn read_match_points(
    connection: &mut ConnectionManager,
    match_id: &MatchId,
) -> RedisResult<(u64, std::collections::BTreeMap<String, i64>)> {
    let points: std::collections::BTreeMap<String, i64> =
        connection.hgetall(match_points_key(match_id)).await?;
    let version: Option<u64> = connection.hget(match_meta_key(match_id), "version").await?;
    Ok((version.unwrap_or(0), points))
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
