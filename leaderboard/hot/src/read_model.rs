//! The contest read model the read API and the gateway share: a contest's
//! version, histogram and squad points as one consistent read
//! ([`ContestSnapshot`]), entry teams kept per node ([`TeamCache`]), and why a
//! read failed ([`ReadError`]). Everything read back from Redis is validated
//! like input: a corrupt value is an error that names the key, never a panic.

use std::collections::HashMap;
use std::sync::Arc;

use compact_str::CompactString;

use crate::team_table::{ContestTeams, ContestTeamsBuilder};
use crate::HotConnection;

use leaderboard_core::ids::{ContestId, EntryId};
use leaderboard_core::points::{PlayerPoints, TeamPoints};
use leaderboard_core::store::RankSnapshotInfo;
use leaderboard_core::team::Team;

use crate::keys::{contest_teams_key, contest_users_key, decode_team};

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    NotFound(String),
    #[error("the hot store failed: {0}")]
    Backend(String),
    /// A value in Redis that no writer of ours produces: reported, counted,
    /// and answered as unavailable, never trusted.
    #[error("corrupt hot state: {0}")]
    Corrupt(String),
}

impl ReadError {
    pub fn corrupt(contest: &ContestId, what: impl std::fmt::Display) -> ReadError {
        ReadError::Corrupt(format!("contest `{contest}`: {what}"))
    }
}

impl From<redis::RedisError> for ReadError {
    fn from(error: redis::RedisError) -> ReadError {
        ReadError::Backend(error.to_string())
    }
}

/// A contest's meta hash, validated: every number a number, every id an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContestMeta {
    pub match_id: String,
    pub version: u64,
    pub ranks_version: u64,
    pub total: u64,
    pub player_points: Vec<PlayerPoints>,
    /// The first rows at `version`, if the writer kept them.
    pub top: Option<Vec<crate::TopRow>>,
}

impl ContestMeta {
    /// Parses the meta hash of `contest`; an empty hash is an unknown contest.
    pub fn parse(
        contest: &ContestId,
        meta: &HashMap<String, String>,
    ) -> Result<ContestMeta, ReadError> {
        if meta.is_empty() {
            return Err(ReadError::NotFound(format!(
                "contest `{contest}` is unknown"
            )));
        }
        let number = |field: &str| -> Result<u64, ReadError> {
            match meta.get(field) {
                None => Ok(0),
                Some(text) => text.parse().map_err(|_| {
                    ReadError::corrupt(contest, format!("meta `{field}` is `{text}`, not a count"))
                }),
            }
        };
        let match_id = meta
            .get("match_id")
            .ok_or_else(|| ReadError::corrupt(contest, "meta has no `match_id`"))?;
        leaderboard_core::ids::MatchId::parse(match_id)
            .map_err(|error| ReadError::corrupt(contest, format!("meta `match_id`: {error}")))?;
        let player_points: Vec<i32> = match meta.get("players") {
            None => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(|error| {
                ReadError::corrupt(
                    contest,
                    format!("meta `players` is not a list of points: {error}"),
                )
            })?,
        };
        let top = match meta.get("top") {
            None => None,
            Some(text) => Some(crate::TopRow::decode(text).map_err(|error| {
                ReadError::corrupt(
                    contest,
                    format!("meta `top` is not a list of rows: {error}"),
                )
            })?),
        };
        Ok(ContestMeta {
            top,
            match_id: match_id.clone(),
            version: number("version")?,
            ranks_version: number("ranks_version")?,
            total: number("total")?,
            player_points: player_points.into_iter().map(PlayerPoints).collect(),
        })
    }
}

/// A contest as one consistent read: the version, the histogram and the
/// squad player points the histogram was computed from.
#[derive(Debug, Clone)]
pub struct ContestSnapshot {
    pub contest_id: ContestId,
    pub match_id: String,
    pub version: u64,
    pub ranks_version: u64,
    pub total: u64,
    pub player_points: Vec<PlayerPoints>,
    /// The first rows at `version` (see [`crate::ContestUpdate::top`]).
    pub top: Option<Arc<Vec<crate::TopRow>>>,
    /// Distinct points, highest first, with how many entries score more.
    buckets: Vec<(TeamPoints, u64)>,
    /// Where the contest is read from.
    pub source: Source,
    /// When this snapshot was read.
    pub loaded_at: std::time::Instant,
}

/// Where a contest's answers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The live hot state in Redis.
    Hot,
    /// The durable store's latest rank snapshot: the contest is not in Redis.
    Stored(RankSnapshotInfo),
}

impl ContestSnapshot {
    /// Builds a snapshot from the contest's meta hash and histogram hash,
    /// validating the meta.
    pub fn from_parts(
        contest_id: &ContestId,
        meta: &HashMap<String, String>,
        histogram: Vec<(i64, u64)>,
    ) -> Result<ContestSnapshot, ReadError> {
        let meta = ContestMeta::parse(contest_id, meta)?;
        let mut histogram: Vec<(TeamPoints, u64)> = histogram
            .into_iter()
            .map(|(halves, count)| (TeamPoints(halves), count))
            .collect();
        histogram.sort_by_key(|bucket| std::cmp::Reverse(bucket.0));
        let mut above = 0_u64;
        let buckets = histogram
            .into_iter()
            .map(|(points, count)| {
                let bucket = (points, above);
                above = above.saturating_add(count);
                bucket
            })
            .collect();
        Ok(ContestSnapshot {
            contest_id: contest_id.clone(),
            match_id: meta.match_id,
            version: meta.version,
            ranks_version: meta.ranks_version,
            total: meta.total,
            player_points: meta.player_points,
            top: meta.top.map(Arc::new),
            buckets,
            source: Source::Hot,
            loaded_at: std::time::Instant::now(),
        })
    }

    /// A contest answered from a stored rank snapshot.
    pub fn stored(info: RankSnapshotInfo) -> ContestSnapshot {
        ContestSnapshot {
            contest_id: info.contest_id.clone(),
            match_id: info.match_id.to_string(),
            version: info.version,
            ranks_version: info.version,
            total: info.total,
            player_points: Vec::new(),
            top: None,
            buckets: Vec::new(),
            source: Source::Stored(info),
            loaded_at: std::time::Instant::now(),
        }
    }

    /// The stored snapshot this contest is read from, if it is not in Redis.
    pub fn stored_info(&self) -> Option<&RankSnapshotInfo> {
        match &self.source {
            Source::Hot => None,
            Source::Stored(info) => Some(info),
        }
    }

    /// Rows `offset..offset + limit` in page order at `version`, with their
    /// competition ranks from the histogram, when the top rows cover them
    /// (or cover the whole contest); `None` otherwise.
    pub fn top_page(&self, offset: usize, limit: usize) -> Option<Vec<crate::RankedEntry>> {
        let top = self.top.as_ref()?;
        let covered = offset.saturating_add(limit) <= top.len() || top.len() as u64 >= self.total;
        if !covered {
            return None;
        }
        Some(
            top.iter()
                .skip(offset)
                .take(limit)
                .map(|row| crate::RankedEntry {
                    rank: self.rank_of(row.points),
                    entry_id: row.entry_id.to_string(),
                    user_id: row.user_id.to_string(),
                    points: row.points,
                })
                .collect(),
        )
    }

    /// 1 + entries with strictly more points, by binary search: O(log distinct).
    pub fn rank_of(&self, points: TeamPoints) -> u64 {
        let strictly_above = self.buckets.partition_point(|(bucket, _)| *bucket > points);
        match self.buckets.get(strictly_above) {
            Some((_, above)) => above + 1,
            None => self.total + 1,
        }
    }

    /// An entry's points and rank from its team, or a corrupt-state error
    /// when the team names a player outside this contest's squad.
    pub fn score(&self, entry_id: &str, team: &Team) -> Result<(TeamPoints, u64), ReadError> {
        let points = team.points_checked(&self.player_points).ok_or_else(|| {
            ReadError::corrupt(
                &self.contest_id,
                format!(
                    "the team of entry `{entry_id}` names a player outside the squad of {}",
                    self.player_points.len()
                ),
            )
        })?;
        Ok((points, self.rank_of(points)))
    }
}

/// An entry's owner and team; teams never change, so they are cached for good.
/// Held by value in the cache: the user id is inline (ids are short), so a
/// cached lookup reads one slot instead of following pointers to an `Arc`
/// and a heap string (each a likely cache miss among millions of entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryTeam {
    /// A valid [`leaderboard_core::ids::UserId`], as read back from Redis.
    pub user_id: compact_str::CompactString,
    pub team: Team,
}

impl EntryTeam {
    /// An entry's owner and team as Redis holds them, validated like input:
    /// `None` when the user is not a valid id or the team does not decode.
    pub fn decode(user_id: &str, team: &str) -> Option<EntryTeam> {
        leaderboard_core::ids::UserId::check(user_id).ok()?;
        Some(EntryTeam {
            user_id: user_id.into(),
            team: decode_team(team)?,
        })
    }
}

/// The key of an entry's team in the node cache: a 128-bit fingerprint of
/// `(contest, entry)` from two independently seeded hashes. A lookup then
/// compares two integers in the table instead of following two string
/// pointers (each a likely cache miss among millions of entries); two
/// different entries sharing a fingerprint is a 1-in-2^128-scale event.
#[derive(Debug, Clone)]
struct EntryFingerprint {
    high: foldhash::fast::RandomState,
    low: foldhash::fast::RandomState,
}

impl EntryFingerprint {
    fn new() -> EntryFingerprint {
        EntryFingerprint {
            high: foldhash::fast::RandomState::default(),
            low: foldhash::fast::RandomState::default(),
        }
    }

    fn of(&self, contest: &str, entry: &str) -> u128 {
        use std::hash::BuildHasher;
        let pair = (contest, entry);
        (u128::from(self.high.hash_one(pair)) << 64) | u128::from(self.low.hash_one(pair))
    }
}

/// Entry teams a node keeps: read from Redis once, validated, kept for good.
/// A large contest's teams, loaded in bulk ([`TeamCache::preload`]), are
/// kept in one table of its own ([`ContestTeams`]: no lock, one cache line
/// per lookup); every other team in a bounded `quick_cache` (S3-FIFO
/// eviction), where concurrent misses for one entry share a read.
#[derive(Debug, Clone)]
pub struct TeamCache {
    connection: HotConnection,
    entries: Arc<quick_cache::sync::Cache<u128, EntryTeam>>,
    fingerprint: EntryFingerprint,
    /// The contests' tables, replaced whole when one is added or dropped
    /// (rare), so that readers never wait.
    tables: Arc<arc_swap::ArcSwap<ContestTables>>,
    /// The tables in the order they were added, and the teams they hold:
    /// the oldest go first when the tables would hold more than `capacity`.
    published: Arc<std::sync::Mutex<std::collections::VecDeque<(CompactString, usize)>>>,
}

type ContestTables = HashMap<CompactString, Arc<ContestTeams>>;

impl TeamCache {
    pub fn new(connection: HotConnection, capacity: usize) -> TeamCache {
        TeamCache {
            connection,
            entries: Arc::new(quick_cache::sync::Cache::new(capacity)),
            fingerprint: EntryFingerprint::new(),
            tables: Default::default(),
            published: Default::default(),
        }
    }

    /// The table of the contest's teams, if this node has loaded them in
    /// bulk: a reader may keep it and look entries up in it
    /// ([`TeamCache::cached_in`]) for as long as it likes (teams never change).
    pub fn contest_teams(&self, contest_id: &str) -> Option<Arc<ContestTeams>> {
        self.tables.load().get(contest_id).cloned()
    }

    /// The entry's team if this node holds it: no Redis, no waiting. The
    /// ids are the request's text (checked or not: an invalid id is simply
    /// never cached).
    pub fn cached(&self, contest_id: &str, entry_id: &str) -> Option<EntryTeam> {
        let tables = self.tables.load();
        self.cached_in(
            tables.get(contest_id).map(|teams| &**teams),
            contest_id,
            entry_id,
        )
    }

    /// As [`TeamCache::cached`], with the contest's table (from
    /// [`TeamCache::contest_teams`]) already at hand.
    #[inline]
    pub fn cached_in(
        &self,
        teams: Option<&ContestTeams>,
        contest_id: &str,
        entry_id: &str,
    ) -> Option<EntryTeam> {
        self.lookup(teams, self.fingerprint.of(contest_id, entry_id))
    }

    /// The team under `key`: in the contest's table, else in the general cache.
    fn lookup(&self, teams: Option<&ContestTeams>, key: u128) -> Option<EntryTeam> {
        if let Some(team) = teams.and_then(|teams| teams.get(key)) {
            return Some(team);
        }
        self.entries.get(&key)
    }

    /// The entry's team; `on_miss` is called once per read from Redis.
    pub async fn get(
        &self,
        contest_id: &ContestId,
        entry_id: &EntryId,
        on_miss: impl FnOnce(),
    ) -> Result<EntryTeam, ReadError> {
        let key = self.fingerprint.of(contest_id.as_str(), entry_id.as_str());
        let tables = self.tables.load();
        if let Some(hit) = self.lookup(tables.get(contest_id.as_str()).map(|teams| &**teams), key) {
            return Ok(hit);
        }
        self.entries
            .get_or_insert_async(&key, async {
                on_miss();
                let mut connection = self.connection.clone();
                let (user, team): (Option<String>, Option<String>) = redis::pipe()
                    .hget(contest_users_key(contest_id), entry_id.as_str())
                    .hget(contest_teams_key(contest_id), entry_id.as_str())
                    .query_async(&mut connection)
                    .await?;
                let (Some(user_id), Some(team)) = (user, team) else {
                    return Err(ReadError::NotFound(format!(
                        "entry `{entry_id}` is not in contest `{contest_id}`"
                    )));
                };
                EntryTeam::decode(&user_id, &team).ok_or_else(|| {
                    ReadError::corrupt(
                        contest_id,
                        format!("entry `{entry_id}` has user `{user_id}` and team `{team}`"),
                    )
                })
            })
            .await
    }

    /// Loads every team of `contest_id` in bulk into a table of its own
    /// ([`ContestTeams`]), so that a cold node stops paying one round trip
    /// per entry's first read: first from the contest's roster
    /// ([`crate::contest_roster_keys`]: `GETRANGE` pages of [`ROSTER_PAGE`]
    /// bytes, about 5 MB per 100K entries, the next page read while the
    /// last is decoded); then, if the roster held fewer than `expected`
    /// entries (a contest written before rosters were), by pages of `HSCAN`
    /// over its teams, each with one `HMGET` of the same entries' users.
    /// The table is in use once this returns. Records that do not parse are
    /// left to the per-entry read, which reports them. `on_page` is called
    /// for each page read. Returns the teams it loaded.
    pub async fn preload(
        &self,
        contest_id: &ContestId,
        expected: u64,
        on_page: impl Fn(),
    ) -> Result<u64, ReadError> {
        // Room for the whole contest at once: growing the table on the way
        // would copy it and fault in fresh pages again.
        let mut teams = ContestTeamsBuilder::with_room(expected);
        for key in crate::contest_roster_keys(contest_id) {
            teams = self
                .preload_roster_shard(contest_id, &key, teams, &on_page)
                .await?;
        }
        if (teams.len() as u64) < expected {
            teams = self.preload_by_scan(contest_id, teams, &on_page).await?;
        }
        let loaded = teams.len() as u64;
        let cache = self.clone();
        let contest = contest_id.clone();
        // Dropping a table it replaces frees its pages: not on the event loop.
        tokio::task::spawn_blocking(move || cache.publish(&contest, teams.finish()))
            .await
            .map_err(|error| ReadError::Backend(format!("team table stopped: {error}")))?;
        Ok(loaded)
    }

    /// Puts `teams` in use for `contest_id`, dropping the oldest tables
    /// while all of them would hold more than the cache's capacity.
    fn publish(&self, contest_id: &ContestId, teams: ContestTeams) {
        let mut published = self.published.lock().expect("not poisoned");
        let mut tables: ContestTables = (**self.tables.load()).clone();
        let contest: CompactString = contest_id.as_str().into();
        published.retain(|(id, _)| *id != contest);
        published.push_back((contest.clone(), teams.len()));
        tables.insert(contest, Arc::new(teams));
        let capacity = usize::try_from(self.capacity()).unwrap_or(usize::MAX);
        let mut held: usize = published.iter().map(|(_, teams)| teams).sum();
        while held > capacity && published.len() > 1 {
            if let Some((oldest, teams)) = published.pop_front() {
                tables.remove(&oldest);
                held -= teams;
            }
        }
        self.tables.store(Arc::new(tables));
    }

    /// One roster shard, page by page; each page is decoded on a blocking
    /// thread, not on the event loop that serves requests, while the next
    /// is read. Returns `teams` with the shard's valid records added.
    async fn preload_roster_shard(
        &self,
        contest_id: &ContestId,
        key: &str,
        teams: ContestTeamsBuilder,
        on_page: &impl Fn(),
    ) -> Result<ContestTeamsBuilder, ReadError> {
        let stopped = |error: tokio::task::JoinError| {
            ReadError::Backend(format!("roster decoding stopped: {error}"))
        };
        let mut connection = self.connection.clone();
        let mut offset = 0_usize;
        // The table and the bytes of a record cut by the end of the previous
        // page: here, or with the page being decoded.
        let mut held = Some((teams, Vec::new()));
        let mut decoding: Option<tokio::task::JoinHandle<(ContestTeamsBuilder, Vec<u8>)>> = None;
        loop {
            on_page();
            let page: Vec<u8> = redis::cmd("GETRANGE")
                .arg(key)
                .arg(offset)
                .arg(offset + ROSTER_PAGE - 1)
                .query_async(&mut connection)
                .await?;
            offset += page.len();
            // A record without its newline at the end is no record a writer
            // wrote: the last page leaves it out.
            let last = page.len() < ROSTER_PAGE;
            if let Some(previous) = decoding.take() {
                held = Some(previous.await.map_err(stopped)?);
            }
            let (mut teams, carried) = held.take().expect("held or being decoded");
            let cache = self.clone();
            let contest = contest_id.clone();
            let decode = tokio::task::spawn_blocking(move || {
                let rest = cache.load_roster_page(&mut teams, &contest, carried, &page);
                (teams, rest)
            });
            if last {
                return Ok(decode.await.map_err(stopped)?.0);
            }
            decoding = Some(decode);
        }
    }

    /// Loads the complete records of `carried` followed by `page`; returns
    /// the bytes of the record the page cut.
    fn load_roster_page(
        &self,
        teams: &mut ContestTeamsBuilder,
        contest_id: &ContestId,
        mut carried: Vec<u8>,
        page: &[u8],
    ) -> Vec<u8> {
        let mut rest = page;
        if !carried.is_empty() {
            let Some(end) = rest.iter().position(|&byte| byte == b'\n') else {
                carried.extend_from_slice(rest);
                return carried;
            };
            carried.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            self.load_roster_record(teams, contest_id, &carried);
            carried.clear();
        }
        let complete = rest
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |end| end + 1);
        for record in rest[..complete].split(|&byte| byte == b'\n') {
            self.load_roster_record(teams, contest_id, record);
        }
        carried.extend_from_slice(&rest[complete..]);
        carried
    }

    /// Keeps one record's team; false when it does not parse.
    fn load_roster_record(
        &self,
        teams: &mut ContestTeamsBuilder,
        contest_id: &ContestId,
        record: &[u8],
    ) -> bool {
        std::str::from_utf8(record)
            .ok()
            .and_then(crate::split_roster_record)
            .is_some_and(|(entry, user, team)| self.keep_team(teams, contest_id, entry, user, team))
    }

    /// Keeps an entry's team as Redis holds it in `teams` (or, should it
    /// not fit there, in the general cache); false when it does not parse.
    /// Teams never change, so keeping an entry again rewrites the same team.
    fn keep_team(
        &self,
        teams: &mut ContestTeamsBuilder,
        contest_id: &ContestId,
        entry: &str,
        user: &str,
        team: &str,
    ) -> bool {
        let (Ok(()), Some(team)) = (EntryId::check(entry), EntryTeam::decode(user, team)) else {
            return false;
        };
        let key = self.fingerprint.of(contest_id.as_str(), entry);
        if !teams.insert(key, &team) {
            self.entries.insert(key, team);
        }
        true
    }

    /// The bulk load from the teams and users hashes, for a contest whose
    /// roster is missing entries: adds to `teams` those it does not hold.
    async fn preload_by_scan(
        &self,
        contest_id: &ContestId,
        mut teams: ContestTeamsBuilder,
        on_page: &impl Fn(),
    ) -> Result<ContestTeamsBuilder, ReadError> {
        let mut connection = self.connection.clone();
        let teams_key = contest_teams_key(contest_id);
        let users_key = contest_users_key(contest_id);
        let mut cursor = 0_u64;
        loop {
            on_page();
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&teams_key)
                .arg(cursor)
                .arg("COUNT")
                .arg(PRELOAD_PAGE)
                .query_async(&mut connection)
                .await?;
            if !page.is_empty() {
                let fields: Vec<&str> = page.iter().map(|(entry, _)| entry.as_str()).collect();
                let users: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(&users_key)
                    .arg(&fields)
                    .query_async(&mut connection)
                    .await?;
                for ((entry, team), user) in page.iter().zip(users) {
                    let key = self.fingerprint.of(contest_id.as_str(), entry);
                    if let (false, Some(user)) = (teams.contains(key), user) {
                        self.keep_team(&mut teams, contest_id, entry, &user, team);
                    }
                }
            }
            if next == 0 {
                return Ok(teams);
            }
            cursor = next;
        }
    }

    /// How many teams the cache holds at most.
    pub fn capacity(&self) -> u64 {
        self.entries.capacity()
    }
}

/// Bytes per `GETRANGE` page of a roster: a copy of a few milliseconds in
/// Redis, between other clients' commands.
const ROSTER_PAGE: usize = 1 << 20;

/// Fields per `HSCAN` page of a bulk team load: ~400 KB of reply, a few
/// milliseconds of Redis time between other clients' commands.
const PRELOAD_PAGE: usize = 10_000;
