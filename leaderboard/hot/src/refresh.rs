//! The background refresh of a large contest's sorted sets, conflated, so
//! that no ball waits for the previous ball's sorted-set writes.
//!
//! A contest has two sorted sets ([`contest_ranks_keys`]). Readers read the
//! one the meta's `ranks_buffer` names, and it holds exactly the version the
//! meta's `ranks_version` names; nobody writes it while it is read. A ball's
//! summary (version, histogram, player points, top rows, notice) is written at
//! once by [`crate::HotWriter`]; the entries whose points moved are then
//! queued here for *both* sets (the latest points of an entry win, so queued
//! balls conflate). The refresh task writes what the other set lacks into it,
//! then switches the two in one script and publishes the contest's notice:
//! deep pages move from one whole version to a later whole version, never
//! through a half-written one, and never backwards.
//!
//! Every script checks the meta's `refresher` token: a writer that rewrote
//! the contest in full (or another replica that took it over) sets its own,
//! and a refresh of the old token then changes nothing and stops.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::RedisResult;
use tokio::sync::Notify;

use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;

use crate::connection::publish_command;
use crate::keys::*;
use crate::HotConnection;

/// Members written per script into the set readers do not read.
const REFRESH_CHUNK: usize = ZADD_CHUNK * 4;

/// This process among the writers that ever refreshed a contest: its id and
/// start time, so two processes with the same marker never share a token.
static PROCESS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!("{}-{started}", std::process::id())
});

/// The large contests one writer refreshes, shared by its clones.
#[derive(Clone)]
pub(crate) struct Refreshes {
    contests: Arc<Mutex<HashMap<ContestId, Arc<Refresh>>>>,
    epoch: Arc<AtomicU64>,
    /// Balls being scored and written ([`Refreshes::yield_to_ball`]): while
    /// any is, the refresh tasks send nothing.
    balls: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Refreshes {
    fn default() -> Refreshes {
        Refreshes {
            contests: Arc::default(),
            epoch: Arc::default(),
            balls: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

/// Held while a ball is scored and written; see [`Refreshes::yield_to_ball`].
#[derive(Debug)]
#[must_use = "the refreshes wait only while this is held"]
pub struct BallInFlight {
    balls: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Drop for BallInFlight {
    fn drop(&mut self) {
        self.balls.send_modify(|balls| *balls -= 1);
    }
}

/// One contest's refresh: what each sorted set lacks, and the task's wake-up.
pub(crate) struct Refresh {
    contest: ContestId,
    match_id: MatchId,
    /// The meta's `refresher` while this refresh owns the contest's sets.
    pub(crate) token: String,
    state: Mutex<Lacking>,
    wake: Notify,
    /// The version the set readers read holds; `u64::MAX` once this
    /// refresh stopped.
    caught_up: tokio::sync::watch::Sender<u64>,
}

struct Lacking {
    /// The latest version whose summary is in Redis and whose moves are queued.
    version: u64,
    /// The version the set readers read holds. The other set is written
    /// only once a later version is queued: each switch then moves readers
    /// to the newest version queued, and no ball waits for a write that
    /// only brings the other set level.
    active_version: u64,
    /// Per sorted set: the moves it does not hold yet.
    entries: [Pending; 2],
    /// The set readers read; unknown (`None`) until this refresh's first
    /// script reads it (and, when it began on a change rather than a full
    /// write, copies that set into the other).
    active: Option<usize>,
    /// Whether the first script copies the set readers read into the other:
    /// a refresh that began on a change knows only the moves, not the rest.
    copy_first: bool,
    /// Per sorted set: empty it before its next write, because a full write
    /// queued every entry and the set may hold members the contest no longer
    /// has. The set readers read is kept until then, so deep pages stay at
    /// their version during a rebuild instead of going back to none.
    replace: [bool; 2],
    stopped: bool,
    /// The contest finished: stop once nothing is lacking.
    finishing: bool,
}

impl Refreshes {
    /// Until the returned guard drops, the refresh tasks send no more
    /// writes to Redis (one already sent finishes): a ball's summary then
    /// waits behind at most one chunk of a refresh in Redis, and the
    /// refresh's encoding leaves the cores to the ball. Refreshes go on
    /// between balls, conflating what came meanwhile.
    pub(crate) fn yield_to_ball(&self) -> BallInFlight {
        self.balls.send_modify(|balls| *balls += 1);
        BallInFlight {
            balls: self.balls.clone(),
        }
    }

    /// Whether this writer refreshes `contest` in the background.
    pub(crate) fn has(&self, contest: &ContestId) -> bool {
        self.lock().contains_key(contest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContestId, Arc<Refresh>>> {
        self.contests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refresh a write of `contest` belongs to: a new one (and token)
    /// for a full write or a contest this writer has not refreshed yet,
    /// otherwise the running one. Nothing runs before [`Refreshes::queue`].
    pub(crate) fn for_write(
        &self,
        contest: &ContestId,
        match_id: &MatchId,
        full: bool,
        marker: &str,
    ) -> Arc<Refresh> {
        if !full {
            if let Some(running) = self.lock().get(contest) {
                return running.clone();
            }
        }
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let process = &*PROCESS;
        Arc::new(Refresh {
            contest: contest.clone(),
            match_id: match_id.clone(),
            token: format!("{marker}:{process}:{epoch}"),
            state: Mutex::new(Lacking {
                version: 0,
                active_version: 0,
                entries: [Pending::default(), Pending::default()],
                active: None,
                copy_first: !full,
                replace: [full; 2],
                stopped: false,
                finishing: false,
            }),
            wake: Notify::new(),
            caught_up: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Queues the moves of `version` (its summary is written) for both
    /// sorted sets, and starts the refresh's task if it is new.
    pub(crate) fn queue(
        &self,
        refresh: &Arc<Refresh>,
        version: u64,
        moves: &Moves,
        connection: &HotConnection,
    ) {
        {
            let mut lacking = refresh.lock();
            lacking.version = lacking.version.max(version);
            for entries in &mut lacking.entries {
                entries.push(moves);
            }
        }
        let replaced = {
            let mut contests = self.lock();
            match contests.get(&refresh.contest) {
                Some(running) if Arc::ptr_eq(running, refresh) => None,
                _ => {
                    let old = contests.insert(refresh.contest.clone(), refresh.clone());
                    tokio::spawn(run(
                        refresh.clone(),
                        connection.clone(),
                        self.contests.clone(),
                        self.balls.subscribe(),
                    ));
                    old
                }
            }
        };
        if let Some(old) = replaced {
            old.lock().stopped = true;
            old.wake.notify_one();
        }
        refresh.wake.notify_one();
    }

    /// Waits until the set readers read holds `version` or a later one (or
    /// this writer does not refresh `contest`).
    pub(crate) async fn caught_up(&self, contest: &ContestId, version: u64) {
        let Some(refresh) = self.lock().get(contest).cloned() else {
            return;
        };
        let mut caught_up = refresh.caught_up.subscribe();
        let _ = caught_up.wait_for(|held| *held >= version).await;
    }

    /// Waits until every contest this writer refreshes has the set readers
    /// read at the latest version queued (or its refresh stopped).
    pub(crate) async fn settled(&self) {
        let queued: Vec<(Arc<Refresh>, u64)> = self
            .lock()
            .values()
            .map(|refresh| (refresh.clone(), refresh.lock().version))
            .collect();
        for (refresh, version) in queued {
            let mut caught_up = refresh.caught_up.subscribe();
            let _ = caught_up.wait_for(|held| *held >= version).await;
        }
    }

    /// The contests finished: their refreshes end once nothing is lacking.
    pub(crate) fn finish<'a>(&self, contests: impl IntoIterator<Item = &'a ContestId>) {
        let contests_held = self.lock();
        for contest in contests {
            if let Some(refresh) = contests_held.get(contest) {
                refresh.lock().finishing = true;
                refresh.wake.notify_one();
            }
        }
    }
}

impl Refresh {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lacking> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One ball's moved entries (or a full write's every entry), each once,
/// shared with the writer's update: queuing them copies nothing.
pub(crate) type Moves = crate::writer::Ranks;

/// The moves one sorted set lacks, as queued, oldest first. Queuing a ball
/// is one reference count on the ball path; the refresh task conflates them
/// when it takes them (an entry's latest points win), off the ball path.
#[derive(Default)]
struct Pending {
    batches: Vec<Moves>,
}

impl Pending {
    fn push(&mut self, moves: &Moves) {
        if !moves.is_empty() {
            self.batches.push(moves.clone());
        }
    }

    /// Moves taken but not written: older than anything queued since.
    fn put_back(&mut self, older: Pending) {
        let newer = std::mem::replace(&mut self.batches, older.batches);
        self.batches.extend(newer);
    }

    /// The moves to write, in the order to write them: every entry at its
    /// latest queued points. An entry is told by the address of its id's
    /// text, which every clone of the id shares (the contest state's moves
    /// are clones of its own ids), so nothing is hashed but an address and no
    /// text is compared: at millions of moves per ball, hashing and comparing
    /// the ids took half of ingest's CPU. Two ids of the same text that are
    /// not clones (a contest rebuilt from the store) may both be written:
    /// oldest first, so that, each `ZADD` applying its members in order, the
    /// latest points win.
    #[cfg(test)]
    fn conflated(&self) -> Vec<(&EntryId, TeamPoints)> {
        self.conflated_with(&mut SeenIds::default())
    }

    /// [`Pending::conflated`] with the refresh's own set of ids seen, kept
    /// between writes (cleared, not freed: at 10M entries it holds millions).
    fn conflated_with(&self, seen: &mut SeenIds) -> Vec<(&EntryId, TeamPoints)> {
        match self.batches.as_slice() {
            [] => Vec::new(),
            [only] => only
                .iter()
                .map(|(entry, points)| (entry, *points))
                .collect(),
            batches => {
                let largest = batches.iter().map(|moves| moves.len()).max().unwrap_or(0);
                seen.clear();
                seen.reserve(largest);
                let mut latest = Vec::with_capacity(largest);
                // Newest first: an entry's first sighting holds its latest points.
                for moves in batches.iter().rev() {
                    for (entry, points) in moves.iter().rev() {
                        if seen.insert(entry.as_str().as_ptr() as usize) {
                            latest.push((entry, *points));
                        }
                    }
                }
                latest.reverse();
                latest
            }
        }
    }
}

/// The ids a conflation has seen, by the address of their text.
type SeenIds = HashSet<usize, foldhash::fast::RandomState>;

/// What the task does next.
enum Step {
    Wait,
    Stop,
    /// Learn (and for a refresh begun on a change, copy) the set readers read.
    Start {
        copy: bool,
    },
    Write {
        target: usize,
        entries: Pending,
        version: u64,
        replace: bool,
    },
}

/// The refresh task: waits for queued moves, writes them into the set
/// readers do not read, switches the sets, and again until neither lacks
/// anything; stops when its token is no longer the contest's.
async fn run(
    refresh: Arc<Refresh>,
    mut connection: HotConnection,
    registry: Arc<Mutex<HashMap<ContestId, Arc<Refresh>>>>,
    mut balls: tokio::sync::watch::Receiver<usize>,
) {
    let keys = contest_ranks_keys(&refresh.contest);
    let meta = contest_meta_key(&refresh.contest);
    let mut failures = 0_u32;
    let mut seen = SeenIds::default();
    loop {
        let step = {
            let mut lacking = refresh.lock();
            if lacking.stopped {
                Step::Stop
            } else {
                match lacking.active {
                    None => Step::Start {
                        copy: lacking.copy_first,
                    },
                    Some(active) => {
                        if lacking.version > lacking.active_version {
                            let target = 1 - active;
                            Step::Write {
                                target,
                                entries: std::mem::take(&mut lacking.entries[target]),
                                version: lacking.version,
                                replace: std::mem::take(&mut lacking.replace[target]),
                            }
                        } else if lacking.finishing {
                            Step::Stop
                        } else {
                            Step::Wait
                        }
                    }
                }
            }
        };
        let outcome = match step {
            Step::Stop => break,
            Step::Wait => {
                refresh.wake.notified().await;
                continue;
            }
            Step::Start { copy } => start(&mut connection, &meta, &keys, &refresh.token, copy)
                .await
                .map(|active| {
                    if let Some(active) = active {
                        refresh.lock().active = Some(active);
                    }
                    active.is_some()
                }),
            Step::Write {
                target,
                entries,
                version,
                replace,
            } => {
                no_ball_in_flight(&mut balls).await;
                let started = Instant::now();
                let members = entries.conflated_with(&mut seen);
                let written = write_and_switch(
                    &mut connection,
                    &refresh,
                    &keys,
                    (target, replace),
                    &members,
                    version,
                    &mut balls,
                )
                .await;
                let members = members.len();
                match written {
                    Ok(Some(switched)) => {
                        let mut lacking = refresh.lock();
                        if switched {
                            lacking.active = Some(target);
                        }
                        lacking.active_version = lacking.active_version.max(version);
                        drop(lacking);
                        refresh.caught_up.send_replace(version);
                        tracing::debug!(
                            contest = %refresh.contest,
                            version,
                            members,
                            switched,
                            millis = started.elapsed().as_millis() as u64,
                            "sorted-set refresh written"
                        );
                        Ok(true)
                    }
                    other => {
                        // Not written: what the set lacks is lacking still,
                        // older than anything queued since.
                        let mut lacking = refresh.lock();
                        lacking.replace[target] |= replace;
                        lacking.entries[target].put_back(entries);
                        other.map(|written| written.is_some())
                    }
                }
            }
        };
        match outcome {
            Ok(true) => failures = 0,
            Ok(false) => {
                tracing::info!(
                    contest = %refresh.contest,
                    "another write owns the contest's sorted sets now: refresh stopped"
                );
                break;
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(contest = %refresh.contest, %error, failures, "sorted-set refresh failed; retrying");
                let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = refresh.wake.notified() => {}
                }
            }
        }
    }
    refresh.lock().stopped = true;
    refresh.caught_up.send_replace(u64::MAX);
    let mut contests = registry.lock().unwrap_or_else(|e| e.into_inner());
    if contests
        .get(&refresh.contest)
        .is_some_and(|running| Arc::ptr_eq(running, &refresh))
    {
        contests.remove(&refresh.contest);
    }
}

/// The set readers read (0 or 1) while `ARGV[1]` owns the contest, -1
/// otherwise; with `ARGV[2]` = `copy`, the other set is first made a copy of
/// it (the start of a refresh that did not begin with a full write), unless
/// the meta's `ranks_equal` says the two are equal already: a mega contest
/// whose entries arrived in small writes, at its first ball.
static START: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('HGET', KEYS[1], 'refresher') ~= ARGV[1] then return -1 end
        local active = 0
        if redis.call('HGET', KEYS[1], 'ranks_buffer') == '1' then active = 1 end
        if ARGV[2] ~= 'copy' then return active end
        if redis.call('HGET', KEYS[1], 'ranks_equal') == '1' then return active end
        if redis.call('EXISTS', KEYS[2 + active]) == 1 then
            redis.call('COPY', KEYS[2 + active], KEYS[3 - active], 'REPLACE')
        else
            redis.call('DEL', KEYS[3 - active])
        end
        return active
        ",
    )
});

async fn start(
    connection: &mut HotConnection,
    meta: &str,
    keys: &[String; 2],
    token: &str,
    copy: bool,
) -> RedisResult<Option<usize>> {
    let active: i64 = START
        .key(meta)
        .key(&keys[0])
        .key(&keys[1])
        .arg(token)
        .arg(if copy { "copy" } else { "read" })
        .invoke_async(connection)
        .await?;
    Ok(usize::try_from(active).ok())
}

/// ZADDs the (score, member) pairs from `ARGV[4]` on into `KEYS[2]` while
/// `ARGV[1]` owns the contest and readers do not read that set (`ARGV[2]` is
/// its index; the sets then differ: `ranks_equal` goes); first empties it (`UNLINK`: freed off the main thread) when
/// `ARGV[3]` is `1`. Variadic ZADDs of 3,500 pairs (Lua's `unpack` takes at
/// most about 8,000 values): about 15% less Redis time than a call per
/// member, measured on a 1M-member set.
static WRITE_CHUNK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('HGET', KEYS[1], 'refresher') ~= ARGV[1] then return 0 end
        if (redis.call('HGET', KEYS[1], 'ranks_buffer') or '0') == ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], 'ranks_equal')
        if ARGV[3] == '1' then redis.call('UNLINK', KEYS[2]) end
        for i = 4, #ARGV, 7000 do
            redis.call('ZADD', KEYS[2], unpack(ARGV, i, math.min(i + 6999, #ARGV)))
        end
        return 1
        ",
    )
});

/// Names set `ARGV[2]` the one readers read, at `ranks_version` `ARGV[3]`,
/// and publishes the contest's notice at the version Redis holds now
/// (`ARGV[5]` opens the notice's JSON, which ends with the version and total).
static SWITCH: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
        if redis.call('HGET', KEYS[1], 'refresher') ~= ARGV[1] then return 0 end
        if tonumber(redis.call('HGET', KEYS[1], 'ranks_version') or '0') > tonumber(ARGV[3]) then
            return 2
        end
        redis.call('HSET', KEYS[1], 'ranks_buffer', ARGV[2], 'ranks_version', ARGV[3])
        local held = redis.call('HMGET', KEYS[1], 'version', 'total')
        redis.call(ARGV[4], KEYS[2], ARGV[5] .. held[1] .. ',"total":' .. held[2] .. '}')
        return 1
        "#,
    )
});

/// Writes `members` into set `target` (emptied first if `replace`) and
/// switches the sets: `Some(true)` switched, `Some(false)` written but the
/// set readers read already holds a later version, `None` refused: another
/// write owns the contest.
async fn write_and_switch(
    connection: &mut HotConnection,
    refresh: &Refresh,
    keys: &[String; 2],
    (target, replace): (usize, bool),
    members: &[(&EntryId, TeamPoints)],
    version: u64,
    balls: &mut tokio::sync::watch::Receiver<usize>,
) -> RedisResult<Option<bool>> {
    let meta = contest_meta_key(&refresh.contest);
    let mut chunks: Vec<&[(&EntryId, TeamPoints)]> = members.chunks(REFRESH_CHUNK).collect();
    if chunks.is_empty() && replace {
        chunks.push(&[]);
    }
    for (index, chunk) in chunks.into_iter().enumerate() {
        no_ball_in_flight(balls).await;
        let mut invocation = WRITE_CHUNK.key(&meta);
        invocation
            .key(&keys[target])
            .arg(&refresh.token)
            .arg(target)
            .arg(u8::from(replace && index == 0));
        for (entry, points) in chunk {
            invocation.arg(points.as_f64()).arg(entry.as_str());
        }
        let applied: i64 = invocation.invoke_async(connection).await?;
        if applied != 1 {
            return Ok(None);
        }
    }
    let opening = notice_opening(&refresh.contest, &refresh.match_id);
    let switched: i64 = SWITCH
        .key(&meta)
        .key(contest_channel(&refresh.contest))
        .arg(&refresh.token)
        .arg(target)
        .arg(version)
        .arg(publish_command(connection.is_cluster()))
        .arg(opening)
        .invoke_async(connection)
        .await?;
    Ok(match switched {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    })
}

/// Returns once no ball is being scored and written (at once when the
/// writer is gone).
async fn no_ball_in_flight(balls: &mut tokio::sync::watch::Receiver<usize>) {
    let _ = balls.wait_for(|balls| *balls == 0).await;
}

/// The notice's JSON up to its version: `{"contest_id":…,"match_id":…,"version":`.
fn notice_opening(contest: &ContestId, match_id: &MatchId) -> String {
    let mut opening = serde_json::json!({"contest_id": contest, "match_id": match_id}).to_string();
    opening.pop();
    opening.push_str(",\"version\":");
    opening
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moves(pairs: &[(&str, i64)]) -> Moves {
        crate::RankBuffer::shared(
            pairs
                .iter()
                .map(|(entry, points)| (EntryId::parse(entry).unwrap(), TeamPoints(*points)))
                .collect(),
        )
    }

    /// What a sorted set holds once the conflated moves are written in
    /// their order (each member's last score wins, as in `ZADD`).
    fn sorted(pending: &Pending) -> Vec<(String, i64)> {
        let mut members = std::collections::BTreeMap::new();
        for (entry, points) in pending.conflated() {
            members.insert(entry.to_string(), points.0);
        }
        members.into_iter().collect()
    }

    #[test]
    fn clones_of_one_id_are_written_once_at_their_latest_points() {
        let ids: Vec<EntryId> = (0..4)
            .map(|i| EntryId::parse(&format!("e{i}")).unwrap())
            .collect();
        let ball = |points: i64, of: &[usize]| -> Moves {
            crate::RankBuffer::shared(
                of.iter()
                    .map(|&i| (ids[i].clone(), TeamPoints(points + i as i64)))
                    .collect(),
            )
        };
        let mut pending = Pending::default();
        pending.push(&ball(10, &[0, 1, 2]));
        pending.push(&ball(20, &[1, 3]));
        pending.push(&ball(30, &[2, 1]));
        let written: Vec<(String, i64)> = pending
            .conflated()
            .into_iter()
            .map(|(entry, points)| (entry.to_string(), points.0))
            .collect();
        let mut names: Vec<&str> = written.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["e0", "e1", "e2", "e3"], "each entry once");
        assert_eq!(
            sorted(&pending),
            [
                ("e0".into(), 10),
                ("e1".into(), 31),
                ("e2".into(), 32),
                ("e3".into(), 23)
            ]
        );
    }

    #[test]
    fn queued_moves_conflate_to_each_entrys_latest_points() {
        let mut pending = Pending::default();
        assert!(pending.conflated().is_empty());
        pending.push(&moves(&[("e1", 10), ("e2", 20)]));
        pending.push(&moves(&[]));
        assert_eq!(sorted(&pending), [("e1".into(), 10), ("e2".into(), 20)]);
        pending.push(&moves(&[("e2", 25), ("e3", 30)]));
        assert_eq!(
            sorted(&pending),
            [("e1".into(), 10), ("e2".into(), 25), ("e3".into(), 30)]
        );
        // Taken, not written, and put back behind a later ball: the later
        // ball's points still win.
        let taken = std::mem::take(&mut pending);
        pending.push(&moves(&[("e1", 11)]));
        pending.put_back(taken);
        assert_eq!(
            sorted(&pending),
            [("e1".into(), 11), ("e2".into(), 25), ("e3".into(), 30)]
        );
    }

    #[test]
    fn the_notice_opening_completes_to_the_notice() {
        let contest = ContestId::parse("c1").unwrap();
        let match_id = MatchId::parse("1136561").unwrap();
        let text = format!("{}42,\"total\":7}}", notice_opening(&contest, &match_id));
        let notice: crate::ContestChanged = serde_json::from_str(&text).unwrap();
        assert_eq!(notice.contest_id, contest);
        assert_eq!(notice.match_id, match_id);
        assert_eq!((notice.version, notice.total), (42, 7));
    }
}
