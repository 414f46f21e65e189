//! Pipelined writes of the hot state: player points, a contest's ranks,
//! histogram, teams and version, and the notices that follow them.

use crate::connection::publish_command;
use crate::HotConnection;
use redis::RedisResult;
use serde::{Deserialize, Serialize};

use leaderboard_core::ids::{ContestId, EntryId, MatchId, UserId};
use leaderboard_core::points::{PlayerPoints, TeamPoints};

use crate::keys::*;
use crate::refresh::Refreshes;

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
    /// Entries whose points are new or moved; shared (not copied) with the
    /// background refresh of a large contest's sorted sets.
    pub ranks: Ranks,
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
    /// The contest's first [`TOP_ROWS`] rows at this version, in page order
    /// (points descending, ties by entry id descending), kept in the meta so
    /// that the first page is fresh with the version however large the
    /// contest; `None` leaves the meta without them.
    pub top: Option<Vec<TopRow>>,
    /// Replace every key of the contest (rebuild).
    pub full: bool,
}

/// One of a contest's top rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    pub entry_id: EntryId,
    pub user_id: UserId,
    pub points: TeamPoints,
}

impl TopRow {
    /// The meta's `top`: `[[entry, user, half-points], …]`.
    pub fn encode(rows: &[TopRow]) -> String {
        let rows: Vec<(&str, &str, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row.entry_id.as_str(),
                    row.user_id.as_str(),
                    row.points.halves(),
                )
            })
            .collect();
        serde_json::to_string(&rows).expect("rows serialize")
    }

    /// The inverse of [`TopRow::encode`], every id and number validated.
    pub fn decode(text: &str) -> Result<Vec<TopRow>, String> {
        let rows: Vec<(String, String, i64)> =
            serde_json::from_str(text).map_err(|error| error.to_string())?;
        rows.into_iter()
            .map(|(entry, user, halves)| {
                Ok(TopRow {
                    entry_id: EntryId::parse(&entry).map_err(|error| error.to_string())?,
                    user_id: UserId::parse(&user).map_err(|error| error.to_string())?,
                    points: TeamPoints(halves),
                })
            })
            .collect()
    }
}

/// Writes the hot state with pipelines; one instance per writer task.
#[derive(Clone)]
pub struct HotWriter {
    connection: HotConnection,
    /// From this many changed entries, a contest's sorted sets are refreshed
    /// in the background (see [`crate::refresh`]): histogram, version, top
    /// rows and notice are written at once, and the next ball does not wait
    /// for the sorted set.
    pub large_contest: usize,
    /// How long a finished contest's keys stay (see [`HotWriter::retire`]);
    /// zero keeps them.
    pub retention: std::time::Duration,
    /// The key whose absence tells this writer that Redis lost its state
    /// ([`ALIVE_KEY`] unless set): one per ingest replica, so that each
    /// notices a flush and rewrites what it owns.
    pub marker: String,
    refreshes: Refreshes,
}

impl std::fmt::Debug for HotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotWriter")
            .field("large_contest", &self.large_contest)
            .field("marker", &self.marker)
            .finish()
    }
}

/// What a readiness probe answers: `Err` with the reason when not ready.
pub type Probe = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A readiness check's body: Redis (one server, or any node of a cluster)
/// answers PING.
pub fn pinger(url: &str) -> RedisResult<impl Fn() -> Probe + Send + Sync + 'static> {
    crate::connection::Topology::parse(url)?;
    let url = url.to_string();
    Ok(move || {
        let url = url.clone();
        Box::pin(async move {
            let mut connection = crate::connect(&url).await.map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }) as Probe
    })
}

/// Whether a Redis error cannot pass by itself (a refused login or
/// permission, a bad URL or command): retrying would only repeat it.
pub fn is_permanent(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match error.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => true,
        ErrorKind::Server(ServerErrorKind::CrossSlot | ServerErrorKind::NoPerm) => true,
        _ => matches!(error.code(), Some("NOPERM" | "WRONGPASS" | "NOAUTH")),
    }
}

impl HotWriter {
    pub fn new(connection: HotConnection, large_contest: usize) -> HotWriter {
        HotWriter {
            connection,
            large_contest,
            retention: std::time::Duration::ZERO,
            marker: ALIVE_KEY.to_owned(),
            refreshes: Refreshes::default(),
        }
    }

    /// Checks that Redis still holds the hot state; `false` means it was
    /// flushed or restarted empty. The marker is set again as a side effect,
    /// and lives an hour past the last check (a replica gone for good leaves
    /// nothing behind).
    pub async fn still_alive(&mut self) -> RedisResult<bool> {
        let before: Option<String> = redis::cmd("SET")
            .arg(&self.marker)
            .arg("1")
            .arg("PX")
            .arg(3_600_000)
            .arg("GET")
            .query_async(&mut self.connection)
            .await?;
        Ok(before.is_some())
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
        self.refreshes
            .finish(contests.iter().map(|(contest, _)| contest));
        if contests.is_empty() || retention.is_zero() {
            return Ok(());
        }
        let seconds = retention.as_secs().max(1) as i64;
        // One pipeline per hash tag: on a cluster each goes to its slot.
        let mut pipes = Vec::new();
        let mut matches = std::collections::BTreeSet::new();
        for (contest, match_id) in contests {
            let mut pipe = redis::pipe();
            let [ranks, other_ranks] = contest_ranks_keys(contest);
            for key in [
                ranks,
                other_ranks,
                contest_histogram_key(contest),
                contest_users_key(contest),
                contest_teams_key(contest),
                contest_squad_key(contest),
                contest_meta_key(contest),
            ]
            .into_iter()
            .chain(contest_roster_keys(contest))
            {
                pipe.expire(key, seconds).ignore();
            }
            pipes.push(pipe);
            matches.insert(match_id);
        }
        for match_id in matches {
            let mut pipe = redis::pipe();
            for key in [
                match_points_key(match_id),
                match_meta_key(match_id),
                match_contests_key(match_id),
            ] {
                pipe.expire(key, seconds).ignore();
            }
            pipes.push(pipe);
        }
        self.send_all(&pipes).await
    }

    /// Sends pipelines of different hash tags at once; each is one request
    /// to the node of its slot (all to the one server, multiplexed, without
    /// one). Their order among themselves is not kept.
    async fn send_all(&self, pipes: &[redis::Pipeline]) -> RedisResult<()> {
        let sends = pipes.iter().map(|pipe| {
            let mut connection = self.connection.clone();
            async move { pipe.query_async::<()>(&mut connection).await }
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    }

    /// Writes match points (and which contests each match has), then every
    /// contest update; each contest's version moves once and its notice is
    /// published after its writes. Every request stays within one hash tag.
    ///
    /// Every write of a match's or a contest's state is guarded by the version
    /// Redis already holds, in the same script: an update older than that
    /// changes nothing (a replica that lost a partition, or rebuilt from an
    /// older snapshot, never overwrites fresher state). Equal versions are
    /// written again: that is how a rebuild repairs a half-written refresh.
    pub async fn write(
        &mut self,
        matches: &[MatchUpdate],
        contests: &[ContestUpdate],
    ) -> RedisResult<Written> {
        let mut scripts = Vec::new();
        for update in matches {
            let mut write = Guarded::new(match_meta_key(&update.match_id));
            let points_key = match_points_key(&update.match_id);
            if update.full {
                write.op("DEL", &points_key, Vec::<String>::new());
            }
            for chunk in update.points.chunks(GUARDED_CHUNK) {
                let fields: Vec<String> = chunk
                    .iter()
                    .flat_map(|(n, p)| [n.clone(), p.0.to_string()])
                    .collect();
                write.op("HSET", &points_key, fields);
            }
            write.op(
                "HSET",
                &match_meta_key(&update.match_id),
                [
                    "version".to_owned(),
                    update.version.to_string(),
                    "seq".to_owned(),
                    update.last_seq.to_string(),
                ],
            );
            write.op(
                publish_command(self.connection.is_cluster()),
                &match_channel(&update.match_id),
                [
                    serde_json::json!({"match_id": update.match_id, "version": update.version})
                        .to_string(),
                ],
            );
            scripts.push(write.invocation(Guard::NotOlder(update.version)));
        }
        // Which contests each match has: a set, so adding again is harmless
        // and needs no guard.
        let mut pipes: Vec<(MatchId, redis::Pipeline)> = Vec::new();
        for update in contests {
            let index = match pipes.iter().position(|(m, _)| *m == update.match_id) {
                Some(index) => index,
                None => {
                    pipes.push((update.match_id.clone(), redis::pipe()));
                    pipes.len() - 1
                }
            };
            pipes[index]
                .1
                .sadd(
                    match_contests_key(&update.match_id),
                    update.contest_id.as_str(),
                )
                .ignore();
        }
        let pipes: Vec<redis::Pipeline> = pipes.into_iter().map(|(_, pipe)| pipe).collect();
        let (applied, ()) =
            futures::future::try_join(self.run_all(&scripts), self.send_all(&pipes)).await?;
        let mut written = Written {
            refused_stale: applied
                .iter()
                .filter(|outcome| **outcome != Outcome::Written)
                .count(),
            gaps: Vec::new(),
        };
        for update in contests {
            let large =
                update.ranks.len() >= self.large_contest || self.refreshes.has(&update.contest_id);
            let outcome = if large {
                self.write_large(update).await?
            } else {
                self.write_small(update).await?
            };
            match outcome {
                Outcome::Written => {}
                Outcome::Stale => {
                    written.refused_stale += 1;
                    tracing::debug!(
                        contest = %update.contest_id,
                        version = update.version,
                        "Redis holds a newer version of the contest: update not written"
                    );
                }
                Outcome::Gap => written.gaps.push(update.contest_id.clone()),
            }
        }
        Ok(written)
    }

    /// Runs guarded scripts of different hash tags at once.
    async fn run_all(&self, scripts: &[redis::ScriptInvocation<'_>]) -> RedisResult<Vec<Outcome>> {
        let runs = scripts.iter().map(|script| {
            let mut connection = self.connection.clone();
            async move { script.invoke_async::<i64>(&mut connection).await }
        });
        let applied = futures::future::try_join_all(runs).await?;
        Ok(applied.into_iter().map(Outcome::from_reply).collect())
    }

    /// One script: sorted set, histogram, users, meta, then the notice, so
    /// that a reader sees all of a version or none; nothing when Redis holds
    /// a newer version, or (for a change on top of the previous version)
    /// not the previous one.
    async fn write_small(&mut self, update: &ContestUpdate) -> RedisResult<Outcome> {
        let mut write = Guarded::new(contest_meta_key(&update.contest_id));
        if update.full {
            clear_contest(&mut write, &update.contest_id, true);
        }
        // Both sorted sets: each then holds this version, whichever readers read.
        for key in contest_ranks_keys(&update.contest_id) {
            add_ranks(&mut write, &key, &update.ranks);
        }
        add_summary(&mut write, update, true);
        write.op(
            "HDEL",
            &contest_meta_key(&update.contest_id),
            ["refresher".to_owned()],
        );
        if update.full {
            // Both sets were emptied and written whole, and later small writes
            // change both alike: a refresh that starts from here need not
            // copy one into the other (see `crate::refresh`).
            write.op(
                "HSET",
                &contest_meta_key(&update.contest_id),
                [RANKS_EQUAL.to_owned(), "1".to_owned()],
            );
        }
        self.add_notice(&mut write, update);
        write
            .invocation(Guard::of(update))
            .invoke_async::<i64>(&mut self.connection)
            .await
            .map(Outcome::from_reply)
    }

    /// Histogram, version, top rows and notice at once (ranks are exact from
    /// the histogram, the first page from the top rows); the moved entries
    /// are then queued for the background refresh of the sorted sets, which
    /// conflates them with later balls' (see [`crate::refresh`]). Refused
    /// when Redis holds a newer version, or (for a change) not the one before.
    async fn write_large(&mut self, update: &ContestUpdate) -> RedisResult<Outcome> {
        let meta = contest_meta_key(&update.contest_id);
        let refresh = self.refreshes.for_write(
            &update.contest_id,
            &update.match_id,
            update.full,
            &self.marker,
        );
        let mut write = Guarded::new(meta.clone());
        if update.full {
            // The sorted sets are kept: readers go on reading the one they
            // read, at its version, until the refresh has rewritten the
            // other in full and switches to it.
            clear_contest(&mut write, &update.contest_id, false);
            // The refresh rewrites the sets one after the other.
            write.op("HDEL", &meta, [RANKS_EQUAL.to_owned()]);
        }
        add_summary(&mut write, update, false);
        write.op(
            "HSET",
            &meta,
            ["refresher".to_owned(), refresh.token.clone()],
        );
        self.add_notice(&mut write, update);
        let outcome = Outcome::from_reply(
            write
                .invocation(Guard::of(update))
                .invoke_async(&mut self.connection)
                .await?,
        );
        if outcome == Outcome::Written {
            self.refreshes
                .queue(&refresh, update.version, &update.ranks, &self.connection);
        }
        Ok(outcome)
    }

    fn add_notice(&self, write: &mut Guarded, update: &ContestUpdate) {
        write.op(
            publish_command(self.connection.is_cluster()),
            &contest_channel(&update.contest_id),
            [notice_json(update)],
        );
    }

    /// Waits until the sorted set readers read of `contest` holds `version`
    /// or a later one: at once for a contest written whole in one script,
    /// after the background refresh for a large one.
    pub async fn ranks_caught_up(&self, contest: &ContestId, version: u64) {
        self.refreshes.caught_up(contest, version).await;
    }

    /// Holds back the background refreshes of this writer (and its clones)
    /// until the guard drops: taken while a ball is scored and written, so
    /// that neither its Redis writes nor its CPU wait behind a refresh.
    pub fn yield_to_ball(&self) -> crate::refresh::BallInFlight {
        self.refreshes.yield_to_ball()
    }

    /// Waits until the sorted sets of every contest this writer refreshes in
    /// the background hold the latest version written: what a process that
    /// writes contests and exits (a bulk load) waits for before it exits.
    pub async fn settled(&self) {
        self.refreshes.settled().await;
    }

    pub fn connection(&self) -> HotConnection {
        self.connection.clone()
    }
}

/// A contest update's new or moved entries, shared (not copied) by the
/// update and the background refresh of a large contest's sorted sets.
pub type Ranks = std::sync::Arc<RankBuffer>;

/// The entries of [`Ranks`]: a `Vec` whose memory is kept for the next
/// update once the last holder lets go (see [`rank_buffer`]). A mega
/// contest's ball moves millions of entries; building each ball's list in
/// freshly allocated memory had the kernel fault in and zero about 120 MB
/// a ball at 10M entries (glibc maps every block that large on its own and
/// unmaps it when freed).
#[derive(Debug, PartialEq, Eq)]
pub struct RankBuffer(Vec<(EntryId, TeamPoints)>);

impl RankBuffer {
    /// An update's ranks, built in a [`rank_buffer`] or any `Vec`.
    pub fn shared(entries: Vec<(EntryId, TeamPoints)>) -> Ranks {
        std::sync::Arc::new(RankBuffer(entries))
    }
}

impl std::ops::Deref for RankBuffer {
    type Target = Vec<(EntryId, TeamPoints)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for RankBuffer {
    fn drop(&mut self) {
        let mut entries = std::mem::take(&mut self.0);
        if entries.capacity() < SPARE_FROM {
            return;
        }
        entries.clear();
        let mut spare = SPARE_RANKS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(entries);
        }
    }
}

/// A buffer for at least `capacity` ranks: a spare one when one is large
/// enough (its memory already faulted in), else a new one.
pub fn rank_buffer(capacity: usize) -> Vec<(EntryId, TeamPoints)> {
    if capacity >= SPARE_FROM {
        let mut spare = SPARE_RANKS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = spare
            .iter()
            .position(|buffer| buffer.capacity() >= capacity)
        {
            return spare.swap_remove(at);
        }
    }
    Vec::with_capacity(capacity)
}

/// Spare rank buffers (see [`RankBuffer`]).
static SPARE_RANKS: std::sync::Mutex<Vec<Vec<(EntryId, TeamPoints)>>> =
    std::sync::Mutex::new(Vec::new());
/// Buffers smaller than this many ranks are freed, not kept.
const SPARE_FROM: usize = 1 << 16;
/// Most spare buffers kept: a ball's, and those of the balls still queued
/// for the refresh.
const SPARE_BUFFERS: usize = 4;

/// What [`HotWriter::write`] did besides writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Match and contest updates not written because Redis already held a
    /// newer version of them.
    pub refused_stale: usize,
    /// Contests whose change was not written because Redis did not hold the
    /// version it builds on (writes lost in a failover, a flush): the caller
    /// writes them again in full.
    pub gaps: Vec<ContestId>,
}

/// What one guarded write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Written,
    /// Redis holds a newer version (or this one already).
    Stale,
    /// Redis does not hold the version a change builds on.
    Gap,
}

impl Outcome {
    fn from_reply(reply: i64) -> Outcome {
        match reply {
            1 => Outcome::Written,
            -1 => Outcome::Gap,
            _ => Outcome::Stale,
        }
    }
}

/// Values per command inside [`GUARDED_WRITE`]: Lua's `unpack` takes at
/// most a few thousand at once.
const GUARDED_CHUNK: usize = 1_000;

/// Runs a list of commands on the keys of one hash tag if the `version`
/// field of `KEYS[1]` allows it: `ARGV[1]` is `not-older` (write unless
/// Redis holds a newer version) or `after` (a change on top of the previous
/// version: write only if Redis holds exactly that one), `ARGV[2]` the
/// update's version, then each
/// command as its name, the index of its key in `KEYS`, its argument count
/// and its arguments. Returns 1 when it wrote, 0 when Redis holds a newer
/// version (or this one, for `after`), -1 when a change finds an older
/// version than the one it builds on. A script runs whole or not at all, so
/// the check and the writes are one atomic step, as a transaction would be.
static GUARDED_WRITE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        -- A missing or unreadable version counts as none.
        local held = tonumber(redis.call('HGET', KEYS[1], 'version') or '') or -1
        local version = tonumber(ARGV[2])
        if ARGV[1] == 'after' then
            if held >= version then return 0 end
            if held ~= version - 1 then return -1 end
        elseif held > version then
            return 0
        end
        local i = 3
        while i <= #ARGV do
            local count = tonumber(ARGV[i + 2])
            redis.call(ARGV[i], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + count))
            i = i + 3 + count
        end
        return 1
        ",
    )
});

/// When a [`Guarded`] write may run.
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// Unless Redis holds a newer version.
    NotOlder(u64),
    /// Only if Redis holds the version just before this one.
    After(u64),
}

impl Guard {
    /// A full update replaces whatever older state Redis holds; a change
    /// applies only on top of the version before it.
    fn of(update: &ContestUpdate) -> Guard {
        if update.full {
            Guard::NotOlder(update.version)
        } else {
            Guard::After(update.version)
        }
    }
}

/// Commands on one hash tag's keys, gathered for [`GUARDED_WRITE`].
#[derive(Debug)]
struct Guarded {
    keys: Vec<String>,
    ops: Vec<String>,
}

impl Guarded {
    /// `guard_key`: the hash whose `version` field guards the write.
    fn new(guard_key: String) -> Guarded {
        Guarded {
            keys: vec![guard_key],
            ops: Vec::new(),
        }
    }

    fn op(&mut self, command: &str, key: &str, args: impl IntoIterator<Item = String>) {
        let index = match self.keys.iter().position(|k| k == key) {
            Some(index) => index,
            None => {
                self.keys.push(key.to_owned());
                self.keys.len() - 1
            }
        };
        let start = self.ops.len();
        self.ops.push(command.to_owned());
        self.ops.push((index + 1).to_string());
        self.ops.push(String::new());
        self.ops.extend(args);
        let count = self.ops.len() - start - 3;
        self.ops[start + 2] = count.to_string();
    }

    fn invocation(&self, guard: Guard) -> redis::ScriptInvocation<'static> {
        let mut invocation = GUARDED_WRITE.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        match guard {
            Guard::NotOlder(version) => invocation.arg("not-older").arg(version),
            Guard::After(version) => invocation.arg("after").arg(version),
        };
        for op in &self.ops {
            invocation.arg(op);
        }
        invocation
    }
}

/// Deletes the contest's keys before a full write; its sorted sets too
/// when `with_ranks`.
fn clear_contest(write: &mut Guarded, contest: &ContestId, with_ranks: bool) {
    let mut keys = vec![
        contest_histogram_key(contest),
        contest_users_key(contest),
        contest_teams_key(contest),
    ];
    keys.extend(contest_roster_keys(contest));
    if with_ranks {
        keys.extend(contest_ranks_keys(contest));
    }
    for key in keys {
        write.op("DEL", &key, Vec::<String>::new());
    }
}

fn add_ranks(write: &mut Guarded, key: &str, ranks: &[(EntryId, TeamPoints)]) {
    for members in ranks.chunks(GUARDED_CHUNK) {
        let scored: Vec<String> = members
            .iter()
            .flat_map(|(e, p)| [p.as_f64().to_string(), e.to_string()])
            .collect();
        write.op("ZADD", key, scored);
    }
}

/// Fields as `HSET` arguments, in chunks that fit one guarded command.
fn hset_chunks<'a>(
    write: &mut Guarded,
    key: &str,
    fields: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) {
    let fields: Vec<(&str, &str)> = fields.collect();
    for chunk in fields.chunks(GUARDED_CHUNK) {
        write.op(
            "HSET",
            key,
            chunk
                .iter()
                .flat_map(|(f, v)| [(*f).to_owned(), (*v).to_owned()]),
        );
    }
}

/// The new entries' roster records (see [`contest_roster_keys`]), appended
/// to their shards, [`GUARDED_CHUNK`] records per `APPEND`.
fn add_roster(write: &mut Guarded, update: &ContestUpdate) {
    if update.users.is_empty() {
        return;
    }
    let keys = contest_roster_keys(&update.contest_id);
    let mut shards: Vec<(String, usize)> = vec![(String::new(), 0); ROSTER_SHARDS];
    for ((entry, user), (team_entry, team)) in update.users.iter().zip(&update.teams) {
        debug_assert_eq!(entry, team_entry, "users and teams are built together");
        let shard = roster_shard(entry.as_str());
        let (records, count) = &mut shards[shard];
        push_roster_record(records, entry.as_str(), user.as_str(), team);
        *count += 1;
        if *count == GUARDED_CHUNK {
            write.op("APPEND", &keys[shard], [std::mem::take(records)]);
            *count = 0;
        }
    }
    for ((records, _), key) in shards.into_iter().zip(&keys) {
        if !records.is_empty() {
            write.op("APPEND", key, [records]);
        }
    }
}

/// Users, teams, histogram and meta (with the version and the player points
/// it was computed from), in that order; the caller adds the notice. `sorted_set_done` says
/// whether the sorted set already holds this version (`ranks_version`).
fn add_summary(write: &mut Guarded, update: &ContestUpdate, sorted_set_done: bool) {
    let contest = &update.contest_id;
    hset_chunks(
        write,
        &contest_users_key(contest),
        update.users.iter().map(|(e, u)| (e.as_str(), u.as_str())),
    );
    hset_chunks(
        write,
        &contest_teams_key(contest),
        update.teams.iter().map(|(e, t)| (e.as_str(), t.as_str())),
    );
    add_roster(write, update);
    if !update.squad.is_empty() {
        write.op(
            "SET",
            &contest_squad_key(contest),
            [serde_json::to_string(&update.squad).expect("names serialize")],
        );
    }
    let (present, gone): (Vec<_>, Vec<_>) =
        update.histogram.iter().partition(|(_, count)| *count > 0);
    let histogram_key = contest_histogram_key(contest);
    for chunk in present.chunks(GUARDED_CHUNK) {
        write.op(
            "HSET",
            &histogram_key,
            chunk
                .iter()
                .flat_map(|(p, c)| [p.halves().to_string(), c.to_string()]),
        );
    }
    for chunk in gone.chunks(GUARDED_CHUNK) {
        write.op(
            "HDEL",
            &histogram_key,
            chunk.iter().map(|(p, _)| p.halves().to_string()),
        );
    }
    let mut meta = vec![
        "version".to_owned(),
        update.version.to_string(),
        "total".to_owned(),
        update.total.to_string(),
        "match_id".to_owned(),
        update.match_id.to_string(),
        "name".to_owned(),
        update.name.clone(),
        "players".to_owned(),
        serde_json::to_string(&update.player_points).expect("points serialize"),
    ];
    if sorted_set_done {
        meta.extend(["ranks_version".to_owned(), update.version.to_string()]);
    }
    let meta_key = contest_meta_key(contest);
    match &update.top {
        Some(top) => meta.extend(["top".to_owned(), TopRow::encode(top)]),
        None => write.op("HDEL", &meta_key, ["top".to_owned()]),
    }
    write.op("HSET", &meta_key, meta);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_rank_buffer_let_go_is_handed_to_the_next_update() {
        let id = EntryId::parse("e1").unwrap();
        let mut first = rank_buffer(SPARE_FROM);
        first.push((id.clone(), TeamPoints(1)));
        let memory = first.as_ptr();
        let shared: Ranks = RankBuffer::shared(first);
        let held = shared.clone();
        drop(shared);
        // Still held (by a refresh, say): nothing is given back yet.
        assert_eq!(held.len(), 1);
        drop(held);
        let next = rank_buffer(SPARE_FROM);
        assert_eq!(next.as_ptr(), memory, "the spare memory is reused");
        assert!(next.is_empty(), "a spare buffer comes back empty");
        // A small buffer is freed, not kept: asking for one allocates anew.
        drop(RankBuffer::shared(Vec::with_capacity(8)));
        assert_eq!(rank_buffer(8).capacity(), 8);
    }

    #[test]
    fn top_rows_round_trip_and_foreign_ones_are_refused() {
        let rows = vec![TopRow {
            entry_id: EntryId::parse("e1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            points: TeamPoints(247),
        }];
        let text = TopRow::encode(&rows);
        assert_eq!(text, r#"[["e1","u1",247]]"#);
        assert_eq!(TopRow::decode(&text).unwrap(), rows);
        assert!(
            TopRow::decode(r#"[["e 1","u1",4]]"#).is_err(),
            "bad entry id"
        );
        assert!(
            TopRow::decode(r#"[["e1","u1",4.5]]"#).is_err(),
            "not half-points"
        );
        assert!(TopRow::decode("not json").is_err());
    }
}
