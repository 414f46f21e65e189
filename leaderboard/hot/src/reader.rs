//! Reads of the hot state: leaderboard pages and a contest's top rows, each
//! in one atomic step, and a match's player points.

use crate::HotConnection;
use redis::{AsyncCommands, RedisResult};
use serde::Serialize;

use leaderboard_core::ids::{ContestId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::rank::CompetitionRanks;

use crate::keys::*;
use crate::read_model::{ContestMeta, ReadError};

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
/// above the first row's score, and the rows' users; from the sorted set the
/// meta's `ranks_buffer` names (`KEYS[2]` or `KEYS[4]`).
static READ_PAGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local meta = redis.call('HGETALL', KEYS[1])
        if #meta == 0 then return {{}, {}, 0, {}} end
        local ranks = KEYS[2]
        if redis.call('HGET', KEYS[1], 'ranks_buffer') == '1' then ranks = KEYS[4] end
        local rows = redis.call('ZREVRANGE', ranks, ARGV[1], ARGV[2], 'WITHSCORES')
        if #rows == 0 then return {meta, rows, 0, {}} end
        local above = redis.call('ZCOUNT', ranks, '(' .. rows[2], '+inf')
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
    connection: &mut HotConnection,
    contest: &ContestId,
    offset: usize,
    limit: usize,
) -> Result<Option<HotPage>, ReadError> {
    let (start, stop) = if limit == 0 {
        (1, 0)
    } else {
        (offset as isize, (offset + limit - 1) as isize)
    };
    // One script, so one atomic read: the rows, the rank of the first one
    // (entries strictly above its points), their users and the
    // `ranks_version` all belong to the same state.
    let [ranks, other_ranks] = contest_ranks_keys(contest);
    let (meta, rows, above, users): PageRead = READ_PAGE
        .key(contest_meta_key(contest))
        .key(ranks)
        .key(contest_users_key(contest))
        .key(other_ranks)
        .arg(start)
        .arg(stop)
        .invoke_async(connection)
        .await?;
    if meta.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(rows.len());
    let mut ranks = CompetitionRanks::starting_at(offset as u64, above + 1);
    for ((entry, score), user) in rows.iter().zip(users) {
        let points = points_of_score(contest, entry, *score)?;
        entries.push(RankedEntry {
            rank: ranks.next(points),
            entry_id: entry.clone(),
            user_id: user.ok_or_else(|| {
                ReadError::corrupt(contest, format!("entry `{entry}` has no owner"))
            })?,
            points,
        });
    }
    let meta = ContestMeta::parse(contest, &meta)?;
    Ok(Some(HotPage {
        contest_id: contest.to_string(),
        match_id: meta.match_id,
        version: meta.version,
        ranks_version: meta.ranks_version,
        total: meta.total,
        entries,
    }))
}

/// A sorted-set score as team points: exact half-points, or the value is corrupt.
pub fn points_of_score(
    contest: &ContestId,
    entry: &str,
    score: f64,
) -> Result<TeamPoints, ReadError> {
    TeamPoints::from_f64_exact(score).ok_or_else(|| {
        ReadError::corrupt(
            contest,
            format!("entry `{entry}` has score {score}, not a whole number of half-points"),
        )
    })
}

/// A contest's meta, histogram and top `top` rows (entry, score), read in
/// one transaction so the rows belong to the version the meta names.
pub type TopRead = (
    std::collections::HashMap<String, String>,
    Vec<(i64, u64)>,
    Vec<(String, f64)>,
);

/// Meta, histogram and the top rows in one atomic step. A script rather
/// than MULTI/EXEC: on a Redis Cluster a script follows a moved slot (the
/// client refreshes its map on `MOVED`), while a transaction whose slot
/// moved in a failover only reports "transaction aborted" and keeps going
/// to the old node.
static READ_TOP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local ranks = KEYS[3]
        if redis.call('HGET', KEYS[1], 'ranks_buffer') == '1' then ranks = KEYS[4] end
        return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
                redis.call('ZREVRANGE', ranks, ARGV[1], ARGV[2], 'WITHSCORES')}
        ",
    )
});

/// A contest's meta and histogram in one atomic step (a script, for the
/// reason given at [`READ_TOP`]).
static READ_SUMMARY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
        ",
    )
});

/// A contest's meta and histogram, read together: the version, the player
/// points and the histogram agree.
pub async fn read_summary(
    connection: &mut HotConnection,
    contest: &ContestId,
) -> RedisResult<(std::collections::HashMap<String, String>, Vec<(i64, u64)>)> {
    READ_SUMMARY
        .key(contest_meta_key(contest))
        .key(contest_histogram_key(contest))
        .invoke_async(connection)
        .await
}

/// A match's points and version in one atomic step (a script, for the
/// reason given at [`READ_TOP`]).
static READ_MATCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        return {redis.call('HGETALL', KEYS[1]), redis.call('HGET', KEYS[2], 'version')}
        ",
    )
});

/// A match's player points and version, read together.
pub async fn read_match(
    connection: &mut HotConnection,
    match_id: &MatchId,
) -> RedisResult<(std::collections::BTreeMap<String, i64>, Option<u64>)> {
    READ_MATCH
        .key(match_points_key(match_id))
        .key(match_meta_key(match_id))
        .invoke_async(connection)
        .await
}

/// Reads [`TopRead`] and the owners of the top rows.
pub async fn read_top(
    connection: &mut HotConnection,
    contest: &ContestId,
    top: usize,
) -> RedisResult<(TopRead, Vec<Option<String>>)> {
    // ZREVRANGE 1 0 is empty: `top` 0 reads no rows.
    let (start, stop) = if top == 0 {
        (1, 0)
    } else {
        (0, top as isize - 1)
    };
    let [ranks, other_ranks] = contest_ranks_keys(contest);
    let (meta, histogram, rows): TopRead = READ_TOP
        .key(contest_meta_key(contest))
        .key(contest_histogram_key(contest))
        .key(ranks)
        .key(other_ranks)
        .arg(start)
        .arg(stop)
        .invoke_async(connection)
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

/// An entry's 0-based position in the sorted set readers read, with the
/// `ranks_version` it holds, in one atomic step.
static READ_POSITION: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local ranks = KEYS[2]
        if redis.call('HGET', KEYS[1], 'ranks_buffer') == '1' then ranks = KEYS[3] end
        return {redis.call('HGET', KEYS[1], 'ranks_version'), redis.call('ZREVRANK', ranks, ARGV[1])}
        ",
    )
});

/// An entry's position in page order and the `ranks_version` it is of;
/// `None` for an entry the sorted set does not hold.
pub async fn read_position(
    connection: &mut HotConnection,
    contest: &ContestId,
    entry: &str,
) -> Result<(u64, Option<u64>), ReadError> {
    let [ranks, other_ranks] = contest_ranks_keys(contest);
    let (version, position): (Option<String>, Option<u64>) = READ_POSITION
        .key(contest_meta_key(contest))
        .key(ranks)
        .key(other_ranks)
        .arg(entry)
        .invoke_async(connection)
        .await?;
    let version = match version {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            ReadError::corrupt(
                contest,
                format!("meta `ranks_version` is `{text}`, not a count"),
            )
        })?,
    };
    Ok((version, position))
}

/// A match's live player points and version.
pub async fn read_match_points(
    connection: &mut HotConnection,
    match_id: &MatchId,
) -> RedisResult<(u64, std::collections::BTreeMap<String, i64>)> {
    let points: std::collections::BTreeMap<String, i64> =
        connection.hgetall(match_points_key(match_id)).await?;
    let version: Option<u64> = connection.hget(match_meta_key(match_id), "version").await?;
    Ok((version.unwrap_or(0), points))
}
