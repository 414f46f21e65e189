//! One authoritative recompute of one contest: re-derive the match's player
//! points from the stored event log with the domain's scoring engine (Redis
//! is not trusted), rank every entry with DataFusion (`sql/ranks.sql`),
//! stream the ranks into a new rank snapshot published atomically, and
//! reconcile them with the live hot ranks — repairing Redis where they differ.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::common::DataFusionError;
use futures::StreamExt;
use leaderboard_hot::HotConnection;
use serde::Serialize;

use leaderboard_core::ids::{ContestId, EntryId};
use leaderboard_core::points::{PlayerPoints, TeamPoints};
use leaderboard_core::rank::CompetitionRanks;
use leaderboard_core::rules::Rules;
use leaderboard_core::scoring::MatchScorer;
use leaderboard_core::store::{RankRow, RankSnapshotInfo, RecomputeInput, StoreError};
use leaderboard_core::team::Squad;
use leaderboard_hot::reconcile::{self, LiveChunk, Repair, RECONCILE_CHUNK};
use leaderboard_hot::{ContestChanged, ReadError};
use leaderboard_store::SharedStore;

use crate::compute::{self, ContestTables, EngineOptions, EntriesBuilder};
use crate::metrics;

/// Entries read from the store per page.
const ENTRIES_PAGE: u64 = 50_000;
/// Rank rows written to the store per chunk (and compared with Redis per read).
const WRITE_CHUNK: usize = RECONCILE_CHUNK;
/// How long a recompute waits, by default, for Redis to reach the version
/// read from the store: ingest writes the store first, then Redis, and a
/// large contest's deep ranks (its sorted sets) follow in the background,
/// several seconds behind at 1M entries and about a minute at 10M
/// (docs/freshness.md).
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(120);
/// Loads tried when the live state moved past the one read from the store.
const ATTEMPTS: usize = 5;

/// Why a recompute failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("contest `{0}` is unknown")]
    UnknownContest(ContestId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored data of contest `{contest}` is invalid: {message}")]
    Invalid { contest: ContestId, message: String },
    #[error("the query failed: {0}")]
    Query(#[from] DataFusionError),
    #[error("redis: {0}")]
    Redis(#[from] ReadError),
    #[error("the job was cancelled: {0}")]
    Cancelled(String),
}

impl From<redis::RedisError> for JobError {
    fn from(error: redis::RedisError) -> JobError {
        JobError::Redis(ReadError::from(error))
    }
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Timings {
    pub load_ms: u64,
    pub score_ms: u64,
    pub compute_ms: u64,
    pub write_ms: u64,
    pub redis_ms: u64,
    pub total_ms: u64,
}

/// What reconciling with Redis found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reconciled {
    /// Compared at the recompute's version; `differences` entries differed
    /// (and were rewritten when `repaired`).
    Compared { differences: u64, repaired: bool },
    /// Redis holds no state of the contest (retired after its match, or lost).
    NotLive,
    /// The live state moved past the recompute's version while it ran, so the
    /// two could not be compared (the next recompute will).
    MovedOn { live_version: u64 },
    /// Redis did not reach the recompute's version within the wait: its
    /// `version` (or its deep ranks' `ranks_version`) stayed behind it.
    Behind {
        live_version: u64,
        ranks_version: u64,
    },
    /// No Redis was given.
    Skipped,
}

/// One job's report: what it read, wrote and found, and how long each took.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub contest_id: String,
    pub match_id: String,
    pub version: u64,
    pub snapshot_id: u64,
    pub rows: u64,
    pub events: u64,
    pub distinct_points: u64,
    pub reconcile: Reconciled,
    /// Entries whose live rank differed (`None` when not compared).
    pub differences: Option<u64>,
    pub timings: Timings,
    pub peak_rss_bytes: u64,
    pub attempts: usize,
}

impl JobReport {
    /// The report as flat fields for the job's hash in Redis.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("match_id", self.match_id.clone()),
            ("version", self.version.to_string()),
            ("snapshot_id", self.snapshot_id.to_string()),
            ("rows", self.rows.to_string()),
            ("events", self.events.to_string()),
            ("load_ms", self.timings.load_ms.to_string()),
            ("score_ms", self.timings.score_ms.to_string()),
            ("compute_ms", self.timings.compute_ms.to_string()),
            ("write_ms", self.timings.write_ms.to_string()),
            ("redis_ms", self.timings.redis_ms.to_string()),
            ("total_ms", self.timings.total_ms.to_string()),
            ("peak_rss_bytes", self.peak_rss_bytes.to_string()),
        ];
        let reconcile = match &self.reconcile {
            Reconciled::Compared { repaired, .. } => {
                fields.push(("repaired", u64::from(*repaired).to_string()));
                "compared".to_owned()
            }
            Reconciled::NotLive => "not_live".to_owned(),
            Reconciled::MovedOn { live_version } => {
                fields.push(("live_version", live_version.to_string()));
                "moved_on".to_owned()
            }
            Reconciled::Behind {
                live_version,
                ranks_version,
            } => {
                fields.push(("live_version", live_version.to_string()));
                fields.push(("ranks_version", ranks_version.to_string()));
                "behind".to_owned()
            }
            Reconciled::Skipped => "skipped".to_owned(),
        };
        fields.push(("reconcile", reconcile));
        if let Some(differences) = self.differences {
            fields.push(("differences", differences.to_string()));
        }
        fields
    }
}

/// Where a job is, for progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Load { done: u64, total: u64 },
    Score,
    Rank { done: u64, total: u64 },
    Reconcile,
}

/// Runs recomputes; one per process at a time is the intent (the engine
/// takes every core it is given).
#[derive(Clone)]
pub struct Recomputer {
    pub store: SharedStore,
    pub redis: Option<HotConnection>,
    pub rules: Arc<Rules>,
    pub engine: EngineOptions,
    /// How long to wait for Redis (and a large contest's deep ranks) to reach
    /// the version read from the store before reporting it `Behind`.
    pub catch_up: Duration,
}

impl std::fmt::Debug for Recomputer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recomputer")
            .field("store", &self.store)
            .field("engine", &self.engine)
            .field("catch_up", &self.catch_up)
            .finish()
    }
}

/// What was loaded: the contest as of one version, as Arrow batches.
struct Loaded {
    input: RecomputeInput,
    squad: Squad,
    batches: Vec<RecordBatch>,
}

impl Recomputer {
    /// Recomputes `contest`; `progress` hears where it is.
    pub async fn contest(
        &self,
        contest: &ContestId,
        progress: &(dyn Fn(Stage) + Send + Sync),
    ) -> Result<JobReport, JobError> {
        let started = Instant::now();
        reset_peak_rss();
        let mut timings = Timings::default();
        let mut attempts = 0;
        let (loaded, live) = loop {
            attempts += 1;
            let clock = Instant::now();
            let loaded = self.load(contest, progress).await?;
            timings.load_ms += elapsed_ms(clock);
            let clock = Instant::now();
            let live = self.live_at(contest, loaded.input.version).await?;
            timings.redis_ms += elapsed_ms(clock);
            match live {
                Live::Ahead(_) if attempts < ATTEMPTS => continue,
                live => break (loaded, live),
            }
        };
        progress(Stage::Score);
        let clock = Instant::now();
        let (squad, points, events) = score(&self.rules, &loaded)?;
        timings.score_ms = elapsed_ms(clock);

        let Loaded { input, batches, .. } = loaded;
        let total = input.entry_count;
        let info = RankSnapshotInfo {
            contest_id: contest.clone(),
            snapshot_id: 0,
            match_id: input.contest.match_id.clone(),
            version: input.version,
            total,
            computed_at_ms: leaderboard_hot::jobs::now_ms(),
            source: "recompute".into(),
        };
        let mut writer = self.store.begin_rank_snapshot(info).await?;
        let mut receiver = spawn_query(self.engine.clone(), batches, squad.clone(), points.clone());
        let mut compare = match (&live, &self.redis) {
            (Live::At(_), Some(connection)) => Some(Comparison::new(
                connection.clone(),
                contest.clone(),
                input.version,
            )),
            _ => None,
        };
        let mut histogram: BTreeMap<TeamPoints, u64> = BTreeMap::new();
        let mut chunk: Vec<RankRow> = Vec::with_capacity(WRITE_CHUNK);
        let mut rows = 0_u64;
        loop {
            let clock = Instant::now();
            let batch = receiver.recv().await;
            timings.compute_ms += elapsed_ms(clock);
            let Some(batch) = batch else { break };
            let batch = batch?;
            for row in compute::ranked_rows(&batch)? {
                *histogram.entry(row.points).or_default() += 1;
                chunk.push(RankRow {
                    rank: row.rank,
                    entry_id: EntryId::parse(row.entry_id).map_err(|error| JobError::Invalid {
                        contest: contest.clone(),
                        message: error.to_string(),
                    })?,
                    user_id: row.user_id.to_owned(),
                    points: row.points,
                });
            }
            if chunk.len() >= WRITE_CHUNK {
                rows += chunk.len() as u64;
                self.flush(&mut writer, &mut compare, &mut chunk, &mut timings)
                    .await?;
                progress(Stage::Rank { done: rows, total });
            }
        }
        rows += chunk.len() as u64;
        self.flush(&mut writer, &mut compare, &mut chunk, &mut timings)
            .await?;
        if rows != total {
            return Err(JobError::Invalid {
                contest: contest.clone(),
                message: format!("{total} entries went in but {rows} ranked rows came out"),
            });
        }
        let clock = Instant::now();
        let published = writer.publish().await?;
        timings.write_ms += elapsed_ms(clock);
        metrics::LAST_SNAPSHOT
            .with_label_values(&[contest.as_str()])
            .set((published.computed_at_ms / 1000) as i64);

        progress(Stage::Reconcile);
        let clock = Instant::now();
        let histogram: Vec<(TeamPoints, u64)> = histogram.into_iter().collect();
        let player_points: Vec<i32> = points.iter().map(|p| p.0).collect();
        let reconciled = match (live, compare) {
            (_, None) if self.redis.is_none() => Reconciled::Skipped,
            (Live::Absent, _) => Reconciled::NotLive,
            (Live::Ahead(version), _) => Reconciled::MovedOn {
                live_version: version,
            },
            (
                Live::Behind {
                    version,
                    ranks_version,
                },
                _,
            ) => Reconciled::Behind {
                live_version: version,
                ranks_version,
            },
            (Live::At(_), None) => Reconciled::Skipped,
            (Live::At(_), Some(compare)) => {
                compare
                    .finish(&self.store, &published, &histogram, &player_points)
                    .await?
            }
        };
        timings.redis_ms += elapsed_ms(clock);
        timings.total_ms = elapsed_ms(started);
        let differences = match &reconciled {
            Reconciled::Compared { differences, .. } => Some(*differences),
            _ => None,
        };
        if let Some(differences) = differences {
            metrics::DIFFERENCES
                .with_label_values(&[contest.as_str()])
                .inc_by(differences);
            metrics::LAST_DIFFERENCES
                .with_label_values(&[contest.as_str()])
                .set(differences as i64);
        }
        for (stage, ms) in [
            ("load", timings.load_ms),
            ("score", timings.score_ms),
            ("compute", timings.compute_ms),
            ("write", timings.write_ms),
            ("redis", timings.redis_ms),
            ("total", timings.total_ms),
        ] {
            metrics::STAGE_SECONDS
                .with_label_values(&[stage])
                .observe(ms as f64 / 1000.0);
        }
        let peak_rss_bytes = peak_rss();
        metrics::PEAK_RSS.set(peak_rss_bytes as i64);
        Ok(JobReport {
            contest_id: contest.to_string(),
            match_id: published.match_id.to_string(),
            version: published.version,
            snapshot_id: published.snapshot_id,
            rows,
            events,
            distinct_points: histogram.len() as u64,
            reconcile: reconciled,
            differences,
            timings,
            peak_rss_bytes,
            attempts,
        })
    }

    async fn flush(
        &self,
        writer: &mut Box<dyn leaderboard_core::store::RankSnapshotWriter>,
        compare: &mut Option<Comparison>,
        chunk: &mut Vec<RankRow>,
        timings: &mut Timings,
    ) -> Result<(), JobError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(chunk, Vec::with_capacity(WRITE_CHUNK));
        if let Some(comparison) = compare {
            let clock = Instant::now();
            comparison.check(&rows).await?;
            timings.redis_ms += elapsed_ms(clock);
        }
        let clock = Instant::now();
        writer.write(rows).await?;
        timings.write_ms += elapsed_ms(clock);
        Ok(())
    }

    /// Reads the contest at one version and builds its Arrow batches.
    async fn load(
        &self,
        contest: &ContestId,
        progress: &(dyn Fn(Stage) + Send + Sync),
    ) -> Result<Loaded, JobError> {
        let input = self
            .store
            .recompute_input(contest)
            .await?
            .ok_or_else(|| JobError::UnknownContest(contest.clone()))?;
        let squad = Squad::from_teams(&input.contest.squad);
        let total = input.entry_count;
        let mut builder = EntriesBuilder::new();
        let mut read = 0_u64;
        progress(Stage::Load { done: 0, total });
        while read < total {
            let page = self
                .store
                .entries_page(contest, read, ENTRIES_PAGE.min(total - read))
                .await?;
            if page.is_empty() {
                return Err(JobError::Invalid {
                    contest: contest.clone(),
                    message: format!("the store has {read} of its {total} entries"),
                });
            }
            read += page.len() as u64;
            let squad = squad.clone();
            let contest_id = contest.clone();
            builder = tokio::task::spawn_blocking(move || {
                for entry in &page {
                    let team = squad
                        .team(&entry.players, &entry.captain, &entry.vice_captain)
                        .map_err(|error| JobError::Invalid {
                            contest: contest_id.clone(),
                            message: format!("entry `{}`: {error}", entry.entry_id),
                        })?;
                    builder.push(entry.entry_id.as_str(), entry.user_id.as_str(), &team);
                }
                Ok::<_, JobError>(builder)
            })
            .await
            .map_err(|error| JobError::Cancelled(error.to_string()))??;
            progress(Stage::Load { done: read, total });
        }
        let batches = builder.finish();
        Ok(Loaded {
            input,
            squad,
            batches,
        })
    }

    /// Where the live state is relative to `version`: waits up to
    /// `catch_up` for Redis, and its deep ranks, to reach what the store
    /// already holds (a mega contest's sorted sets lag its version while
    /// their background refresh runs; that is not the live state moving on).
    async fn live_at(&self, contest: &ContestId, version: u64) -> Result<Live, JobError> {
        let Some(connection) = &self.redis else {
            return Ok(Live::Absent);
        };
        let mut connection = connection.clone();
        let deadline = Instant::now() + self.catch_up;
        loop {
            let Some(chunk) = reconcile::read_live_chunk(&mut connection, contest, 0, 0).await?
            else {
                return Ok(Live::Absent);
            };
            if chunk.version > version {
                return Ok(Live::Ahead(chunk.version));
            }
            if chunk.version == version && chunk.ranks_version == version {
                return Ok(Live::At(version));
            }
            if Instant::now() >= deadline {
                return Ok(Live::Behind {
                    version: chunk.version,
                    ranks_version: chunk.ranks_version,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The live state's version against the recompute's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    At(u64),
    Ahead(u64),
    Behind { version: u64, ranks_version: u64 },
    Absent,
}

/// Scores the stored log with the domain's engine: the squad's points.
fn score(
    rules: &Arc<Rules>,
    loaded: &Loaded,
) -> Result<(Vec<String>, Vec<PlayerPoints>, u64), JobError> {
    let contest = &loaded.input.contest.contest_id;
    let mut scorer = MatchScorer::new(rules.clone());
    for event in &loaded.input.events {
        scorer.apply(event).map_err(|error| JobError::Invalid {
            contest: contest.clone(),
            message: format!(
                "stored event {} of match {}: {error}",
                event.seq, event.match_id
            ),
        })?;
    }
    let points = loaded.squad.points_table(|name| scorer.points_of(name));
    Ok((
        loaded.squad.names().to_vec(),
        points,
        loaded.input.events.len() as u64,
    ))
}

/// Runs `ranks.sql` on an engine of its own (a thread with its own runtime,
/// so that the query's CPU work never starves the service's tasks: lease
/// renewal, metrics), sending result batches back through a small bounded
/// channel: the engine waits while the store catches up.
fn spawn_query(
    engine: EngineOptions,
    batches: Vec<RecordBatch>,
    squad: Vec<String>,
    points: Vec<PlayerPoints>,
) -> tokio::sync::mpsc::Receiver<Result<RecordBatch, DataFusionError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("recompute-engine".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(engine.partitions.max(1))
                .thread_name("recompute-worker")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = sender.blocking_send(Err(DataFusionError::External(Box::new(error))));
                    return;
                }
            };
            runtime.block_on(async move {
                let run = async {
                    let tables = ContestTables::new(&engine, batches, &squad, &points)?;
                    let mut stream = tables.stream(compute::RANKS_SQL).await?;
                    while let Some(batch) = stream.next().await {
                        if sender.send(batch).await.is_err() {
                            break;
                        }
                    }
                    Ok::<_, DataFusionError>(())
                };
                if let Err(error) = run.await {
                    let _ = sender.send(Err(error)).await;
                }
            });
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the recompute engine's thread");
    }
    receiver
}

/// Compares the recomputed rows with the live sorted set position by
/// position as they stream (both are in page order). Equal all the way means
/// 0 differences; the first difference switches to an exact per-entry count
/// after the snapshot is published.
struct Comparison {
    connection: HotConnection,
    contest: ContestId,
    version: u64,
    position: usize,
    state: Compared,
}

enum Compared {
    Equal,
    Differs,
    MovedOn(u64),
    /// Redis no longer holds the contest (retired after its match).
    Gone,
}

impl Comparison {
    fn new(connection: HotConnection, contest: ContestId, version: u64) -> Comparison {
        Comparison {
            connection,
            contest,
            version,
            position: 0,
            state: Compared::Equal,
        }
    }

    /// Reads positions `start..start + count` and checks the version.
    async fn live(&mut self, start: usize, count: usize) -> Result<Option<LiveChunk>, JobError> {
        let chunk =
            reconcile::read_live_chunk(&mut self.connection, &self.contest, start, count).await?;
        match chunk {
            Some(chunk) if chunk.version == self.version && chunk.ranks_version == self.version => {
                Ok(Some(chunk))
            }
            Some(chunk) => {
                self.state = Compared::MovedOn(chunk.version);
                Ok(None)
            }
            None => {
                self.state = Compared::Gone;
                Ok(None)
            }
        }
    }

    async fn check(&mut self, rows: &[RankRow]) -> Result<(), JobError> {
        if !matches!(self.state, Compared::Equal) {
            self.position += rows.len();
            return Ok(());
        }
        let start = self.position;
        self.position += rows.len();
        let Some(live) = self.live(start, rows.len()).await? else {
            return Ok(());
        };
        let same = live.rows.len() == rows.len()
            && live.rows.iter().zip(rows).all(|((entry, points), row)| {
                entry == row.entry_id.as_str() && *points == row.points
            });
        if !same {
            self.state = Compared::Differs;
        }
        Ok(())
    }

    /// After the last row: nothing more live, same total, histogram and
    /// player points; otherwise counts the differences exactly and repairs.
    async fn finish(
        mut self,
        store: &SharedStore,
        published: &RankSnapshotInfo,
        histogram: &[(TeamPoints, u64)],
        player_points: &[i32],
    ) -> Result<Reconciled, JobError> {
        if matches!(self.state, Compared::Equal) {
            if let Some(tail) = self.live(self.position, 1).await? {
                let live_histogram =
                    reconcile::read_histogram(&mut self.connection, &self.contest).await?;
                let same_players = tail.player_points.len() == player_points.len()
                    && tail
                        .player_points
                        .iter()
                        .zip(player_points)
                        .all(|(live, recomputed)| live.0 == *recomputed);
                if !tail.rows.is_empty()
                    || tail.total != published.total
                    || live_histogram != histogram
                    || !same_players
                {
                    self.state = Compared::Differs;
                }
            }
        }
        match self.state {
            Compared::Equal => Ok(Reconciled::Compared {
                differences: 0,
                repaired: false,
            }),
            Compared::MovedOn(live_version) => Ok(Reconciled::MovedOn { live_version }),
            Compared::Gone => Ok(Reconciled::NotLive),
            Compared::Differs => {
                self.count_and_repair(store, published, histogram, player_points)
                    .await
            }
        }
    }

    /// The exact count: every live entry's points and competition rank
    /// against the snapshot's; then the recompute wins.
    async fn count_and_repair(
        mut self,
        store: &SharedStore,
        published: &RankSnapshotInfo,
        histogram: &[(TeamPoints, u64)],
        player_points: &[i32],
    ) -> Result<Reconciled, JobError> {
        let mut live: std::collections::HashMap<String, (TeamPoints, u64)> =
            std::collections::HashMap::new();
        let mut ranks = CompetitionRanks::new();
        let mut start = 0;
        loop {
            let Some(chunk) = self.live(start, RECONCILE_CHUNK).await? else {
                return Ok(match self.state {
                    Compared::MovedOn(live_version) => Reconciled::MovedOn { live_version },
                    _ => Reconciled::NotLive,
                });
            };
            if chunk.rows.is_empty() {
                break;
            }
            start += chunk.rows.len();
            for (entry, points) in chunk.rows {
                let rank = ranks.next(points);
                live.insert(entry, (points, rank));
            }
        }
        let mut repair = Repair {
            histogram: histogram.to_vec(),
            player_points: player_points.to_vec(),
            total: published.total,
            ..Repair::default()
        };
        let mut differences = 0_u64;
        let mut offset = 0_u64;
        loop {
            let page = store
                .rank_page(
                    &published.contest_id,
                    published.snapshot_id,
                    offset,
                    RECONCILE_CHUNK as u64,
                )
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u64;
            for row in page {
                match live.remove(row.entry_id.as_str()) {
                    Some((points, rank)) if points == row.points && rank == row.rank => {}
                    Some((points, _)) if points == row.points => differences += 1,
                    _ => {
                        differences += 1;
                        repair.points.push((row.entry_id.clone(), row.points));
                    }
                }
            }
        }
        differences += live.len() as u64;
        repair.remove = live.into_keys().collect();
        let notice = serde_json::to_string(&ContestChanged {
            contest_id: published.contest_id.clone(),
            match_id: published.match_id.clone(),
            version: published.version,
            total: published.total,
        })
        .expect("notices serialize");
        let repaired = reconcile::repair(
            &mut self.connection,
            &self.contest,
            self.version,
            &notice,
            &repair,
        )
        .await?;
        if repaired {
            tracing::warn!(contest = %self.contest, version = self.version, differences, "live ranks differed from the recompute; rewrote them");
        } else {
            tracing::warn!(contest = %self.contest, version = self.version, differences, "live ranks differed, but the contest moved on before the repair");
        }
        Ok(Reconciled::Compared {
            differences,
            repaired,
        })
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Resets the kernel's peak-RSS mark, so the next [`peak_rss`] is this job's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}
