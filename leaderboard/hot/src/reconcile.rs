//! The hot side of the authoritative recompute: reading a contest's live
//! ranks in page order, chunk by chunk, each chunk atomic with the version it
//! belongs to; and repairing them where the recompute found them wrong.

use crate::HotConnection;
use redis::RedisResult;

use leaderboard_core::ids::{ContestId, EntryId};
use leaderboard_core::points::{PlayerPoints, TeamPoints};

use crate::keys::*;
use crate::read_model::{ContestMeta, ReadError};
use crate::reader::points_of_score;

/// Sorted-set members read per round trip while reconciling.
pub const RECONCILE_CHUNK: usize = 50_000;

/// A chunk of the live sorted set in page order, with the versions of the
/// state it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveChunk {
    pub version: u64,
    pub ranks_version: u64,
    pub total: u64,
    /// The squad's player points the live ranks were computed from.
    pub player_points: Vec<PlayerPoints>,
    /// (entry, points), points descending, ties by entry id descending.
    pub rows: Vec<(String, TeamPoints)>,
}

static READ_CHUNK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local meta = redis.call('HGETALL', KEYS[1])
        if #meta == 0 then return {{}, {}} end
        -- an empty chunk (stop below start): the meta alone; ZREVRANGE 0 -1
        -- would read the whole set
        if tonumber(ARGV[2]) < tonumber(ARGV[1]) then return {meta, {}} end
        local ranks = KEYS[2]
        if redis.call('HGET', KEYS[1], 'ranks_buffer') == '1' then ranks = KEYS[3] end
        return {meta, redis.call('ZREVRANGE', ranks, ARGV[1], ARGV[2], 'WITHSCORES')}
        ",
    )
});

/// Reads positions `start..start + count` of the contest's sorted set with
/// its meta, in one script (one atomic step); `count` 0 reads the meta
/// alone. `None`: Redis has no such contest.
pub async fn read_live_chunk(
    connection: &mut HotConnection,
    contest: &ContestId,
    start: usize,
    count: usize,
) -> Result<Option<LiveChunk>, ReadError> {
    let stop = (start + count) as isize - 1;
    let [ranks, other_ranks] = contest_ranks_keys(contest);
    let (meta, rows): (
        std::collections::HashMap<String, String>,
        Vec<(String, f64)>,
    ) = READ_CHUNK
        .key(contest_meta_key(contest))
        .key(ranks)
        .key(other_ranks)
        .arg(start)
        .arg(stop.max(start as isize - 1))
        .invoke_async(connection)
        .await?;
    if meta.is_empty() {
        return Ok(None);
    }
    let meta = ContestMeta::parse(contest, &meta)?;
    let rows = rows
        .into_iter()
        .map(|(entry, score)| {
            let points = points_of_score(contest, &entry, score)?;
            Ok((entry, points))
        })
        .collect::<Result<_, ReadError>>()?;
    Ok(Some(LiveChunk {
        version: meta.version,
        ranks_version: meta.ranks_version,
        total: meta.total,
        player_points: meta.player_points,
        rows,
    }))
}

/// The contest's histogram as stored: (points, entries), validated.
pub async fn read_histogram(
    connection: &mut HotConnection,
    contest: &ContestId,
) -> Result<Vec<(TeamPoints, u64)>, ReadError> {
    use redis::AsyncCommands;
    let buckets: Vec<(i64, u64)> = connection.hgetall(contest_histogram_key(contest)).await?;
    let mut buckets: Vec<(TeamPoints, u64)> = buckets
        .into_iter()
        .map(|(points, count)| (TeamPoints(points), count))
        .collect();
    buckets.sort_unstable();
    Ok(buckets)
}

/// What the recompute found wrong in the hot state, to be rewritten.
#[derive(Debug, Clone, Default)]
pub struct Repair {
    /// Entries whose live points are missing or wrong: their right points.
    pub points: Vec<(EntryId, TeamPoints)>,
    /// Live members the recompute does not know.
    pub remove: Vec<String>,
    /// The whole histogram, as recomputed: (points, entries).
    pub histogram: Vec<(TeamPoints, u64)>,
    /// The squad's player points, as recomputed (the meta's `players`).
    pub player_points: Vec<i32>,
    pub total: u64,
}

/// Applies a chunk of a repair only while the contest is still at `version`
/// (ingest may have moved it on meanwhile; then its own writes are newer and
/// the repair is dropped). Returns 0 when the version moved.
static REPAIR_CHUNK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
        local removed = tonumber(ARGV[2])
        -- both sorted sets: the one readers read, and the one a large
        -- contest's next refresh switches to
        for k = 2, 3 do
            for i = 3, 2 + removed do redis.call('ZREM', KEYS[k], ARGV[i]) end
            for i = 3 + removed, #ARGV, 2 do redis.call('ZADD', KEYS[k], ARGV[i + 1], ARGV[i]) end
        end
        return 1
        ",
    )
});

/// The histogram, the total and the notice, last, under the same guard.
static REPAIR_SUMMARY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[2])
        for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
        redis.call('HSET', KEYS[1], 'total', ARGV[2], 'ranks_version', ARGV[1], 'players', ARGV[4])
        -- PUBLISH, or SPUBLISH on a cluster (the channel shares the contest's slot)
        redis.call(ARGV[5], KEYS[3], ARGV[3])
        return 1
        ",
    )
});

/// Rewrites the hot sets where the recompute found them wrong, in pipelined
/// chunks, then the histogram, and publishes the contest's notice (at the same
/// version: the readers re-read it; a version is only ever moved by ingest).
/// Returns `false`, having changed nothing more, once the version moved.
pub async fn repair(
    connection: &mut HotConnection,
    contest: &ContestId,
    version: u64,
    notice: &str,
    repair: &Repair,
) -> RedisResult<bool> {
    let meta = contest_meta_key(contest);
    let [ranks, other_ranks] = contest_ranks_keys(contest);
    let version_text = version.to_string();
    let mut removals = repair.remove.chunks(RECONCILE_CHUNK);
    let mut additions = repair.points.chunks(RECONCILE_CHUNK);
    loop {
        let (remove, add) = (removals.next(), additions.next());
        if remove.is_none() && add.is_none() {
            break;
        }
        let remove = remove.unwrap_or_default();
        let mut invocation = REPAIR_CHUNK.key(&meta);
        invocation
            .key(&ranks)
            .key(&other_ranks)
            .arg(&version_text)
            .arg(remove.len());
        for member in remove {
            invocation.arg(member);
        }
        for (entry, points) in add.unwrap_or_default() {
            invocation.arg(entry.as_str()).arg(points.as_f64());
        }
        let applied: i64 = invocation.invoke_async(connection).await?;
        if applied == 0 {
            return Ok(false);
        }
    }
    let mut invocation = REPAIR_SUMMARY.key(&meta);
    invocation
        .key(contest_histogram_key(contest))
        .key(contest_channel(contest))
        .arg(&version_text)
        .arg(repair.total)
        .arg(notice)
        .arg(serde_json::to_string(&repair.player_points).expect("points serialize"))
        .arg(crate::connection::publish_command(connection.is_cluster()));
    for (points, count) in &repair.histogram {
        invocation.arg(points.halves()).arg(*count);
    }
    let applied: i64 = invocation.invoke_async(connection).await?;
    Ok(applied == 1)
}
