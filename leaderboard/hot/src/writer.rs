//! Pipelined writes of the hot state: player points, a contest's ranks,
//! histogram, teams and version, and the notices that follow them.

use crate::HotConnection;
use redis::RedisResult;
use serde::{Deserialize, Serialize};

use leaderboard_core::ids::{ContestId, EntryId, MatchId, UserId};
use leaderboard_core::points::{PlayerPoints, TeamPoints};

use crate::keys::*;

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
    connection: HotConnection,
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
        // One pipeline per hash tag: on a cluster each goes to its slot.
        let mut pipes = Vec::new();
        let mut matches = std::collections::BTreeSet::new();
        for (contest, match_id) in contests {
            let mut pipe = redis::pipe();
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
    /// published after its writes. Every pipeline stays within one hash tag.
    pub async fn write(
        &mut self,
        matches: &[MatchUpdate],
        contests: &[ContestUpdate],
    ) -> RedisResult<()> {
        let mut pipes: Vec<(MatchId, redis::Pipeline)> = Vec::new();
        for update in matches {
            let mut pipe = redis::pipe();
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
            self.connection.notice(
                &mut pipe,
                &match_channel(&update.match_id),
                &serde_json::json!({"match_id": update.match_id, "version": update.version})
                    .to_string(),
            );
            pipes.push((update.match_id.clone(), pipe));
        }
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
        self.send_all(&pipes).await?;
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
        self.connection.notice(
            &mut pipe,
            &contest_channel(&update.contest_id),
            &notice_json(update),
        );
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
        self.connection.notice(
            &mut pipe,
            &contest_channel(&update.contest_id),
            &notice_json(update),
        );
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
        self.connection.notice(
            &mut pipe,
            &contest_channel(&update.contest_id),
            &notice_json(update),
        );
        pipe.query_async::<()>(&mut self.connection).await
    }

    pub fn connection(&self) -> HotConnection {
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

/// Users, teams, histogram and meta (with the version and the player points
/// it was computed from), in that order; the caller adds the notice. `sorted_set_done` says
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
