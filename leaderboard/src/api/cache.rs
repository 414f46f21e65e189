//! The per-node cache of the read API. Contest snapshots (version, histogram,
//! the player points behind them), entry teams, pages and match players live
//! in `moka` caches; a miss is loaded once however many requests wait for it
//! (`try_get_with` coalesces them), and one pub/sub connection per node drops
//! a contest or match the moment its version moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use leaderboard_hot::HotConnection;
use moka::future::Cache;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_core::store::RankRow;
use leaderboard_hot::notices::{self, Event, Subscriptions};
use leaderboard_hot::{self as hot, HotPage, RankedEntry};
use leaderboard_service::backoff::Backoff;
use leaderboard_store::SharedStore;

pub use leaderboard_hot::{ContestSnapshot, EntryTeam, ReadError, Source, TeamCache};

use crate::metrics;

static ROUND_TRIP_RANK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local ranks = KEYS[1]
        if redis.call('HGET', KEYS[3], 'ranks_buffer') == '1' then ranks = KEYS[4] end
        local score = redis.call('ZSCORE', ranks, ARGV[1])
        if not score then return {false, 0, false, false, false} end
        local above = redis.call('ZCOUNT', ranks, '(' .. score, '+inf')
        local user = redis.call('HGET', KEYS[2], ARGV[1])
        local meta = redis.call('HMGET', KEYS[3], 'version', 'total')
        return {score, above, user, meta[1], meta[2]}
        ",
    )
});

/// A page serialized once, in the contract's leaderboard shape, served as bytes.
#[derive(Debug, Clone)]
pub struct RenderedPage {
    pub json: bytes::Bytes,
}

impl RenderedPage {
    pub fn render(page: &HotPage, snapshot: &ContestSnapshot) -> RenderedPage {
        let body = super::LeaderboardPage {
            contest_id: page.contest_id.clone(),
            match_id: page.match_id.clone(),
            // The version the rows were read at, not the cached snapshot's:
            // the two differ for a moment right after a ball.
            version: page.ranks_version,
            total: snapshot.total,
            entries: page.entries.iter().map(super::RankedRow::from).collect(),
            snapshot: snapshot.stored_info().map(super::SnapshotOrigin::from),
        };
        RenderedPage {
            json: serde_json::to_vec(&body).expect("pages serialize").into(),
        }
    }
}

/// A match's live player points.
#[derive(Debug, Clone, Serialize)]
pub struct MatchPlayers {
    pub match_id: String,
    pub version: u64,
    pub players: std::collections::BTreeMap<String, i64>,
}

/// The node's cache in front of Redis.
#[derive(Clone)]
pub struct NodeCache {
    connection: HotConnection,
    contests: Cache<ContestId, Arc<ContestSnapshot>>,
    /// Entry teams never change and are read on every my-rank request, so
    /// a bulk-loaded contest's live in a lock-free table of its own, and
    /// the rest in `quick_cache` (a sharded map with S3-FIFO eviction, no
    /// per-read bookkeeping queue), keyed by a fingerprint of the ids.
    entries: TeamCache,
    /// (contest, ranks version, from the store, offset, limit)
    pages: Cache<(ContestId, u64, bool, usize, usize), Arc<RenderedPage>>,
    positions: Cache<(ContestId, u64, EntryId), u64>,
    /// Rows of stored rank snapshots: (position, row) by (contest, snapshot id, entry).
    stored_rows: Cache<(ContestId, u64, EntryId), Arc<(u64, RankRow)>>,
    /// The durable store, for contests no longer in Redis.
    store: Option<SharedStore>,
    matches: Cache<MatchId, Arc<MatchPlayers>>,
    backend_reads: Arc<AtomicU64>,
    /// The channels this node follows on a cluster (see [`follow_notices`]).
    followed: Arc<Followed>,
    /// Contests whose teams this node loaded (or is loading) in bulk.
    preloads: Arc<std::sync::Mutex<std::collections::HashSet<ContestId>>>,
    /// Teams loaded in bulk so far.
    teams_preloaded: Arc<AtomicU64>,
    /// From this many entries, a contest's first read on this node loads all
    /// its teams in the background ([`TeamCache::preload`]); smaller ones are
    /// read entry by entry as they are asked for. 0: never.
    preload_from: u64,
    /// Moves whenever a contest snapshot is dropped (see [`NodeCache::with_entry_now`]).
    generation: Arc<AtomicU64>,
    /// This node among the caches of the process (its clones share it).
    node: u64,
    max_staleness: Duration,
}

/// Each HTTP thread's own copy of the contest snapshots it serves, so that
/// the hottest route reads a snapshot without `moka`'s bookkeeping and
/// without touching a reference count every thread shares. A copy is good
/// while its node's generation has not moved since it was taken (every
/// invalidation moves it, after the `moka` entry is gone) and the snapshot
/// is younger than the node's staleness bound: it never answers anything
/// the node's shared cache would not.
#[derive(Default)]
struct FrontCopies {
    /// (node, generation the copies were taken at, contest → snapshot)
    nodes: Vec<(u64, u64, FrontSnapshots)>,
}

/// One node's front copies on one thread, by contest id.
type FrontSnapshots = std::collections::HashMap<Box<str>, FrontContest>;

/// A contest's snapshot as one thread holds it, with the pages it served
/// from that very snapshot, as bytes of its own (a clone of bytes another
/// thread also sends would touch their shared reference count every time).
struct FrontContest {
    snapshot: Arc<ContestSnapshot>,
    /// The contest's teams if the node has loaded them in bulk when the
    /// copy was taken (a load that ends later moves the generation).
    teams: Option<Arc<hot::ContestTeams>>,
    /// By (offset, limit).
    pages: std::collections::HashMap<(usize, usize), bytes::Bytes>,
}

/// Most pages one thread keeps per contest (past this it starts afresh).
const FRONT_PAGES: usize = 256;

thread_local! {
    static FRONT: std::cell::RefCell<FrontCopies> = std::cell::RefCell::default();
}

/// Numbers the node caches of the process.
static NODES: AtomicU64 = AtomicU64::new(0);

/// Most contests one thread keeps front copies of (past this it starts afresh).
const FRONT_CONTESTS: usize = 10_000;

/// On a Redis Cluster notices are sharded: a node cannot follow them all by
/// one pattern, so it subscribes each contest's (and match's) channel the
/// first time it caches it.
#[derive(Debug)]
struct Followed {
    /// Each followed channel, and whether its subscription is confirmed.
    channels: std::sync::Mutex<std::collections::HashMap<String, watch::Receiver<bool>>>,
    requests: mpsc::UnboundedSender<FollowRequest>,
    pending: std::sync::Mutex<Option<mpsc::UnboundedReceiver<FollowRequest>>>,
}

/// A channel to subscribe, and where to say that it is.
type FollowRequest = (String, watch::Sender<bool>);

/// How long a first read waits for its channel's subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("backend_reads", &self.backend_reads())
            .finish()
    }
}

impl NodeCache {
    /// `max_staleness` bounds how long a snapshot lives should a notice be lost.
    pub fn new(connection: HotConnection, max_staleness: Duration) -> NodeCache {
        let (requests, pending) = mpsc::unbounded_channel();
        let generation = Arc::new(AtomicU64::new(0));
        let evicted = generation.clone();
        NodeCache {
            followed: Arc::new(Followed {
                channels: Default::default(),
                requests,
                pending: std::sync::Mutex::new(Some(pending)),
            }),
            connection: connection.clone(),
            contests: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(max_staleness)
                // A snapshot evicted for room may come back newer before any
                // notice: the threads' copies of it must not outlive it.
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evicted.fetch_add(1, Ordering::Release);
                    }
                })
                .build(),
            entries: TeamCache::new(connection.clone(), 5_000_000),
            pages: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            positions: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            matches: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(max_staleness)
                .build(),
            stored_rows: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            store: None,
            backend_reads: Arc::new(AtomicU64::new(0)),
            preloads: Default::default(),
            teams_preloaded: Arc::new(AtomicU64::new(0)),
            preload_from: 1_000,
            generation,
            node: NODES.fetch_add(1, Ordering::Relaxed),
            max_staleness,
        }
    }

    /// Runs `answer` on this thread's copy of the contest if it is good.
    fn with_front_copy<T>(
        &self,
        contest_id: &str,
        answer: impl FnOnce(&FrontContest) -> Option<T>,
    ) -> Option<T> {
        let node = self.node;
        let generation = self.generation.load(Ordering::Acquire);
        FRONT.with(|front| {
            let front = front.borrow();
            let (_, taken_at, copies) = front.nodes.iter().find(|(id, _, _)| *id == node)?;
            if *taken_at != generation {
                return None;
            }
            let copy = copies.get(contest_id)?;
            if copy.snapshot.loaded_at.elapsed() >= self.max_staleness {
                return None;
            }
            answer(copy)
        })
    }

    /// Runs `answer` on the contest's snapshot and the entry's team if this
    /// thread holds a good copy of the one and the node holds the other: no
    /// waiting, no Redis. The ids are the request's text (checked or not: an
    /// invalid id is simply never cached).
    pub fn with_entry_now<T>(
        &self,
        contest_id: &str,
        entry_id: &str,
        answer: impl FnOnce(&ContestSnapshot, &EntryTeam) -> Option<T>,
    ) -> Option<T> {
        self.with_front_copy(contest_id, |copy| {
            let team = self
                .entries
                .cached_in(copy.teams.as_deref(), contest_id, entry_id)?;
            answer(&copy.snapshot, &team)
        })
    }

    /// The page this thread served last from its copy of the contest's
    /// snapshot, if it still holds a good one (see [`NodeCache::keep_page_now`]).
    pub fn page_now(&self, contest_id: &str, offset: usize, limit: usize) -> Option<bytes::Bytes> {
        self.with_front_copy(contest_id, |copy| copy.pages.get(&(offset, limit)).cloned())
    }

    /// Keeps a page rendered from `snapshot` beside this thread's copy of
    /// that same snapshot, if it holds one.
    pub fn keep_page_now(
        &self,
        snapshot: &Arc<ContestSnapshot>,
        offset: usize,
        limit: usize,
        json: &bytes::Bytes,
    ) {
        let node = self.node;
        FRONT.with(|front| {
            let mut front = front.borrow_mut();
            let Some((_, _, copies)) = front.nodes.iter_mut().find(|(id, _, _)| *id == node) else {
                return;
            };
            let Some(copy) = copies.get_mut(snapshot.contest_id.as_str()) else {
                return;
            };
            if !Arc::ptr_eq(&copy.snapshot, snapshot) {
                return;
            }
            if copy.pages.len() >= FRONT_PAGES {
                copy.pages.clear();
            }
            copy.pages
                .insert((offset, limit), bytes::Bytes::copy_from_slice(json));
        });
    }

    /// Keeps `snapshot`, read from the shared cache after `generation` was
    /// loaded, as this thread's copy.
    fn keep_front_copy(&self, generation: u64, snapshot: &Arc<ContestSnapshot>) {
        let node = self.node;
        FRONT.with(|front| {
            let mut front = front.borrow_mut();
            let index = match front.nodes.iter().position(|(id, _, _)| *id == node) {
                Some(index) => index,
                None => {
                    front.nodes.push((node, generation, Default::default()));
                    front.nodes.len() - 1
                }
            };
            let (_, taken_at, copies) = &mut front.nodes[index];
            if generation < *taken_at {
                // Read before a newer copy was taken: keep the newer ones.
                return;
            }
            if generation > *taken_at || copies.len() >= FRONT_CONTESTS {
                copies.clear();
                *taken_at = generation;
            }
            match copies.get_mut(snapshot.contest_id.as_str()) {
                Some(copy) if Arc::ptr_eq(&copy.snapshot, snapshot) => {}
                _ => {
                    copies.insert(
                        snapshot.contest_id.as_str().into(),
                        FrontContest {
                            snapshot: snapshot.clone(),
                            teams: self.entries.contest_teams(snapshot.contest_id.as_str()),
                            pages: Default::default(),
                        },
                    );
                }
            }
        });
    }

    /// Marks every thread's front copies stale: called after each
    /// invalidation of the shared cache.
    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The node's Redis connection (shared, multiplexed).
    pub fn connection(&self) -> HotConnection {
        self.connection.clone()
    }

    /// The durable store, if the node has one.
    pub fn store(&self) -> Option<SharedStore> {
        self.store.clone()
    }

    /// See [`NodeCache::preload_from`]: 0 turns the bulk team load off.
    pub fn with_preload_from(mut self, entries: u64) -> NodeCache {
        self.preload_from = entries;
        self
    }

    /// Answers contests that are not in Redis from the store's latest rank
    /// snapshot.
    pub fn with_store(mut self, store: SharedStore) -> NodeCache {
        self.store = Some(store);
        self
    }

    /// Redis and store reads made so far (each coalesced miss counts once).
    pub fn backend_reads(&self) -> u64 {
        self.backend_reads.load(Ordering::Relaxed)
    }

    fn count_read(&self, kind: &str) {
        self.backend_reads.fetch_add(1, Ordering::Relaxed);
        metrics::BACKEND_READS.with_label_values(&[kind]).inc();
    }

    pub async fn contest(&self, contest_id: &ContestId) -> Result<Arc<ContestSnapshot>, ReadError> {
        // Loaded before the shared cache is read: a copy taken from it is
        // never newer than the generation it is filed under.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(hit) = self.contests.get(contest_id).await {
            self.keep_front_copy(generation, &hit);
            return Ok(hit);
        }
        self.follow(hot::contest_channel(contest_id)).await;
        let snapshot = self
            .contests
            .try_get_with(contest_id.clone(), self.load_contest(contest_id))
            .await
            .map_err(|error: Arc<ReadError>| (*error).clone())?;
        self.keep_front_copy(generation, &snapshot);
        Ok(snapshot)
    }

    async fn load_contest(
        &self,
        contest_id: &ContestId,
    ) -> Result<Arc<ContestSnapshot>, ReadError> {
        self.count_read("contest");
        let mut connection = self.connection.clone();
        // One atomic read (a script): the version, the player points and the histogram agree.
        let (meta, histogram) = hot::read_summary(&mut connection, contest_id).await?;
        match ContestSnapshot::from_parts(contest_id, &meta, histogram) {
            Err(ReadError::NotFound(message)) => {
                let Some(store) = &self.store else {
                    return Err(ReadError::NotFound(message));
                };
                self.count_read("store_contest");
                match store.latest_rank_snapshot(contest_id).await {
                    Ok(Some(info)) => Ok(Arc::new(ContestSnapshot::stored(info))),
                    Ok(None) => Err(ReadError::NotFound(message)),
                    Err(error) => Err(ReadError::Backend(error.to_string())),
                }
            }
            Ok(snapshot) => {
                self.start_preload(&snapshot);
                Ok(Arc::new(snapshot))
            }
            Err(error) => Err(error),
        }
    }

    /// Starts the bulk load of a large contest's teams, once per node and
    /// contest (again after a failure), when the team cache can hold them.
    fn start_preload(&self, snapshot: &ContestSnapshot) {
        if self.preload_from == 0
            || snapshot.total < self.preload_from
            || snapshot.total > self.entries.capacity() / 2
        {
            return;
        }
        let (contest_id, total) = (snapshot.contest_id.clone(), snapshot.total);
        if !self
            .preloads
            .lock()
            .expect("not poisoned")
            .insert(contest_id.clone())
        {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match cache
                .entries
                .preload(&contest_id, total, || {
                    metrics::BACKEND_READS
                        .with_label_values(&["team_pages"])
                        .inc();
                })
                .await
            {
                Ok(loaded) => {
                    // The threads' copies retake the contest with its table.
                    cache.bump_generation();
                    cache.teams_preloaded.fetch_add(loaded, Ordering::Relaxed);
                    tracing::info!(
                        contest = %contest_id,
                        loaded,
                        millis = started.elapsed().as_millis() as u64,
                        "teams loaded in bulk"
                    );
                }
                Err(error) => {
                    tracing::warn!(contest = %contest_id, %error, "bulk team load failed; entries are read one by one");
                    cache
                        .preloads
                        .lock()
                        .expect("not poisoned")
                        .remove(&contest_id);
                }
            }
        });
    }

    /// Teams this node has loaded in bulk so far.
    pub fn teams_preloaded(&self) -> u64 {
        self.teams_preloaded.load(Ordering::Relaxed)
    }

    /// An entry's position and row in the stored snapshot `snapshot` reads from.
    pub async fn stored_entry(
        &self,
        snapshot: &ContestSnapshot,
        entry_id: &EntryId,
    ) -> Result<Arc<(u64, RankRow)>, ReadError> {
        let (Some(store), Some(info)) = (self.store.as_ref(), snapshot.stored_info()) else {
            return Err(ReadError::Backend("not a stored contest".into()));
        };
        let snapshot_id = info.snapshot_id;
        let key = (snapshot.contest_id.clone(), snapshot_id, entry_id.clone());
        self.stored_rows
            .try_get_with(key, async {
                self.count_read("store_entry");
                store
                    .rank_of_entry(&snapshot.contest_id, snapshot_id, entry_id)
                    .await
                    .map_err(|error| ReadError::Backend(error.to_string()))?
                    .map(Arc::new)
                    .ok_or_else(|| {
                        ReadError::NotFound(format!(
                            "entry `{entry_id}` is not in contest `{}`",
                            snapshot.contest_id
                        ))
                    })
            })
            .await
            .map_err(|error: Arc<ReadError>| (*error).clone())
    }

    pub async fn entry(
        &self,
        contest_id: &ContestId,
        entry_id: &EntryId,
    ) -> Result<EntryTeam, ReadError> {
        self.entries
            .get(contest_id, entry_id, || self.count_read("entry"))
            .await
    }

    /// A page at the contest's version when its top rows cover it (the
    /// first page of a large contest is fresh every ball), otherwise of the
    /// sorted set, as of the contest's `ranks_version`.
    pub async fn page(
        &self,
        snapshot: &ContestSnapshot,
        offset: usize,
        limit: usize,
    ) -> Result<Arc<RenderedPage>, ReadError> {
        let top = snapshot.top_page(offset, limit);
        let key = (
            snapshot.contest_id.clone(),
            // The same rows either way at the same version.
            if top.is_some() {
                snapshot.version
            } else {
                snapshot.ranks_version
            },
            snapshot.stored_info().is_some(),
            offset,
            limit,
        );
        if let Some(hit) = self.pages.get(&key).await {
            return Ok(hit);
        }
        self.pages
            .try_get_with(key, async {
                if let (Some(info), Some(store)) = (snapshot.stored_info(), &self.store) {
                    self.count_read("store_page");
                    let rows = store
                        .rank_page(
                            &info.contest_id,
                            info.snapshot_id,
                            offset as u64,
                            limit as u64,
                        )
                        .await
                        .map_err(|error| ReadError::Backend(error.to_string()))?;
                    let page = HotPage {
                        contest_id: info.contest_id.to_string(),
                        match_id: info.match_id.to_string(),
                        version: info.version,
                        ranks_version: info.version,
                        total: info.total,
                        entries: rows
                            .into_iter()
                            .map(|row| RankedEntry {
                                rank: row.rank,
                                entry_id: row.entry_id.to_string(),
                                user_id: row.user_id,
                                points: row.points,
                            })
                            .collect(),
                    };
                    return Ok(Arc::new(RenderedPage::render(&page, snapshot)));
                }
                if let Some(entries) = top {
                    let page = HotPage {
                        contest_id: snapshot.contest_id.to_string(),
                        match_id: snapshot.match_id.clone(),
                        version: snapshot.version,
                        ranks_version: snapshot.version,
                        total: snapshot.total,
                        entries,
                    };
                    return Ok(Arc::new(RenderedPage::render(&page, snapshot)));
                }
                self.count_read("page");
                let mut connection = self.connection.clone();
                let page = hot::read_page(&mut connection, &snapshot.contest_id, offset, limit)
                    .await?
                    .ok_or_else(|| {
                        ReadError::NotFound(format!("contest `{}` is unknown", snapshot.contest_id))
                    })?;
                if page.ranks_version > snapshot.ranks_version {
                    // The sets switched after the snapshot was read and its
                    // notice is on the way: drop the snapshot now, so that a
                    // reader's next page is not one cached at the older version.
                    self.invalidate_contest(&snapshot.contest_id).await;
                }
                Ok(Arc::new(RenderedPage::render(&page, snapshot)))
            })
            .await
            .map_err(|error: Arc<ReadError>| (*error).clone())
    }

    /// An entry's 0-based position in the sorted set, as of `ranks_version`.
    pub async fn position(
        &self,
        snapshot: &ContestSnapshot,
        entry_id: &EntryId,
    ) -> Result<u64, ReadError> {
        if snapshot.stored_info().is_some() {
            return Ok(self.stored_entry(snapshot, entry_id).await?.0);
        }
        let key = (
            snapshot.contest_id.clone(),
            snapshot.ranks_version,
            entry_id.clone(),
        );
        self.positions
            .try_get_with(key, async {
                self.count_read("position");
                let mut connection = self.connection.clone();
                // Of the sorted set readers read now: right after the sets
                // switched, of a newer version than the snapshot's, until the
                // switch's notice drops the snapshot.
                let (_, position) =
                    hot::read_position(&mut connection, &snapshot.contest_id, entry_id.as_str())
                        .await?;
                position.ok_or_else(|| {
                    ReadError::NotFound(format!(
                        "entry `{entry_id}` is not in contest `{}`",
                        snapshot.contest_id
                    ))
                })
            })
            .await
            .map_err(|error: Arc<ReadError>| (*error).clone())
    }

    pub async fn match_players(&self, match_id: &MatchId) -> Result<Arc<MatchPlayers>, ReadError> {
        self.follow(hot::match_channel(match_id)).await;
        self.matches
            .try_get_with(match_id.clone(), async {
                self.count_read("match");
                let mut connection = self.connection.clone();
                let (players, version) = hot::read_match(&mut connection, match_id).await?;
                if players.is_empty() {
                    return Err(ReadError::NotFound(format!(
                        "match `{match_id}` is unknown"
                    )));
                }
                Ok(Arc::new(MatchPlayers {
                    match_id: match_id.to_string(),
                    version: version.unwrap_or(0),
                    players,
                }))
            })
            .await
            .map_err(|error: Arc<ReadError>| (*error).clone())
    }

    /// The benchmark baseline: an entry's rank in one Redis round trip (a Lua
    /// script: ZSCORE, ZCOUNT above it, the user and the meta), no cache.
    pub async fn entry_rank_round_trip(
        &self,
        contest_id: &ContestId,
        entry_id: &EntryId,
    ) -> Result<super::EntryRank, ReadError> {
        self.count_read("round_trip");
        let mut connection = self.connection.clone();
        let (score, above, user, version, total): (
            Option<f64>,
            u64,
            Option<String>,
            Option<u64>,
            Option<u64>,
        ) = ROUND_TRIP_RANK
            .key(hot::contest_ranks_key(contest_id))
            .key(hot::contest_users_key(contest_id))
            .key(hot::contest_meta_key(contest_id))
            .key(hot::contest_ranks_keys(contest_id)[1].clone())
            .arg(entry_id.as_str())
            .invoke_async(&mut connection)
            .await?;
        let (Some(score), Some(user_id)) = (score, user) else {
            return Err(ReadError::NotFound(format!(
                "entry `{entry_id}` is not in contest `{contest_id}`"
            )));
        };
        Ok(super::EntryRank {
            contest_id: contest_id.to_string(),
            entry_id: entry_id.to_string(),
            user_id,
            rank: above + 1,
            points: TeamPoints::from_f64_exact(score).unwrap_or_default(),
            total: total.unwrap_or(0),
            version: version.unwrap_or(0),
            snapshot: None,
        })
    }

    /// The benchmark baseline: a page read from Redis on every request.
    pub async fn page_round_trip(
        &self,
        contest_id: &ContestId,
        offset: usize,
        limit: usize,
    ) -> Result<HotPage, ReadError> {
        self.count_read("round_trip");
        let mut connection = self.connection.clone();
        hot::read_page(&mut connection, contest_id, offset, limit)
            .await?
            .ok_or_else(|| ReadError::NotFound(format!("contest `{contest_id}` is unknown")))
    }

    /// On a cluster, has the notice follower subscribe `channel` unless it
    /// already does, and waits (at most [`SUBSCRIBE_WAIT`]) until it does, so
    /// that what is loaded next is followed by every later notice.
    async fn follow(&self, channel: String) {
        if !self.connection.is_cluster() {
            return;
        }
        let mut confirmed = {
            let mut channels = self.followed.channels.lock().expect("not poisoned");
            match channels.get(&channel) {
                Some(confirmed) if *confirmed.borrow() => return,
                Some(confirmed) => confirmed.clone(),
                None => {
                    let (sender, confirmed) = watch::channel(false);
                    channels.insert(channel.clone(), confirmed.clone());
                    let _ = self.followed.requests.send((channel, sender));
                    confirmed
                }
            }
        };
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, confirmed.wait_for(|done| *done)).await;
    }

    /// Drops what a notice on `channel` made stale.
    pub async fn invalidate_channel(&self, channel: &str) {
        let Some(rest) = channel.strip_prefix("lb:") else {
            return;
        };
        let Some(body) = rest.strip_suffix(":changed") else {
            return;
        };
        let (kind, id) = match body.split_once(':') {
            Some((kind, tagged)) => (kind, tagged.trim_start_matches('{').trim_end_matches('}')),
            None => return,
        };
        match kind {
            "c" => {
                if let Ok(contest_id) = ContestId::parse(id) {
                    self.invalidate_contest(&contest_id).await;
                }
            }
            "m" => {
                if let Ok(match_id) = MatchId::parse(id) {
                    self.matches.invalidate(&match_id).await;
                }
            }
            _ => {}
        }
    }

    /// Drops a contest's snapshot: its version moved.
    pub async fn invalidate_contest(&self, contest_id: &ContestId) {
        self.contests.invalidate(contest_id).await;
        self.bump_generation();
    }

    /// Forgets every snapshot (after a gap in notices).
    pub fn invalidate_all(&self) {
        self.contests.invalidate_all();
        self.matches.invalidate_all();
        self.bump_generation();
    }
}

/// Follows change notices with one pub/sub connection until `shutdown`,
/// reconnecting with backoff and jitter; after a gap every snapshot is dropped,
/// since notices may have been missed. On one server that is every notice
/// (`PSUBSCRIBE lb:*:changed`); on a cluster, the sharded channel of every
/// contest and match the node has cached (see [`NodeCache::follow`]).
pub async fn follow_notices(cache: NodeCache, redis_url: String, shutdown: CancellationToken) {
    let Some(mut requests) = cache.followed.pending.lock().expect("not poisoned").take() else {
        tracing::error!("the node's notices are already followed");
        return;
    };
    let mut backoff = Backoff::reconnect();
    loop {
        let connected = async {
            if cache.connection.is_cluster() {
                let (mut sink, messages) = notices::subscribe_to(&redis_url).await?;
                let channels: Vec<String> = cache
                    .followed
                    .channels
                    .lock()
                    .expect("not poisoned")
                    .keys()
                    .cloned()
                    .collect();
                sink.subscribe(&channels).await?;
                Ok::<_, redis::RedisError>(Follower::Sharded(sink, messages))
            } else {
                let client = redis::Client::open(redis_url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.psubscribe(hot::ALL_CHANGES_PATTERN).await?;
                Ok(Follower::Pattern(pubsub))
            }
        };
        match connected.await {
            Ok(follower) => {
                backoff.reset();
                cache.invalidate_all();
                tracing::info!("following contest and match notices");
                match follower {
                    Follower::Pattern(mut pubsub) => {
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                message = messages.next() => match message {
                                    Some(message) => cache.invalidate_channel(message.get_channel_name()).await,
                                    None => break,
                                },
                            }
                        }
                    }
                    Follower::Sharded(mut sink, mut messages) => loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            request = requests.recv() => {
                                let Some((channel, confirmed)) = request else { return };
                                if let Err(error) = sink.subscribe(std::slice::from_ref(&channel)).await {
                                    tracing::warn!(%channel, %error, "cannot subscribe a notice channel");
                                    break;
                                }
                                confirmed.send_replace(true);
                            }
                            event = messages.next() => match event {
                                Some(Event::Notice { channel, .. } | Event::Resubscribed { channel }) => {
                                    cache.invalidate_channel(&channel).await;
                                }
                                None => break,
                            },
                        }
                    },
                }
                tracing::warn!("notice connection lost, reconnecting");
            }
            Err(error) => tracing::warn!(%error, "cannot follow notices, retrying"),
        }
        cache.invalidate_all();
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// How a node follows notices: by pattern on one server, by sharded
/// channels on a cluster.
enum Follower {
    Pattern(redis::aio::PubSub),
    Sharded(Subscriptions, notices::Messages),
}
