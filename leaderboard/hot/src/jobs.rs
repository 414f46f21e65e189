//! Recompute jobs in Redis: operators' requests on a stream with a consumer
//! group (durable: a request survives the scheduler that read it dying before
//! it acknowledged), each job's state in a hash, one active job per contest
//! (a request for a contest already queued or running joins that job), and
//! the scheduler's lease with a fencing token.
//!
//! Every key here lives on one slot by itself or carries the contest's hash
//! tag, so nothing crosses slots on a Redis Cluster.

use std::collections::HashMap;
use std::time::Duration;

use crate::HotConnection;
use redis::{AsyncCommands, RedisResult};
use serde::Serialize;

use leaderboard_core::ids::ContestId;

/// The stream of recompute requests.
pub const REQUESTS_STREAM: &str = "lb:jobs:requests";
/// The consumer group every scheduler reads [`REQUESTS_STREAM`] in.
pub const SCHEDULERS_GROUP: &str = "schedulers";
/// The scheduler lease: `SET NX PX`, value `node/token`.
pub const LEASE_KEY: &str = "lb:jobs:lease";
/// Fencing tokens: one INCR per lease taken, so a later holder's is larger.
pub const FENCE_KEY: &str = "lb:jobs:fence";
/// Job ids: one INCR per job.
pub const JOB_SEQ_KEY: &str = "lb:jobs:seq";
/// How long a finished job's state is kept.
pub const JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a contest's active-job marker lives without its job finishing
/// (its request was lost with the node that made it): then a new request
/// makes a new job.
pub const ACTIVE_JOB_TTL: Duration = Duration::from_secs(30 * 60);

pub fn job_key(job_id: &str) -> String {
    format!("lb:job:{{{job_id}}}")
}

/// The job now queued or running for a contest.
pub fn contest_job_key(contest: &ContestId) -> String {
    format!("lb:c:{{{contest}}}:job")
}

/// A job's state, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job as stored: its state and every figure the job reported, as fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    pub contest_id: String,
    pub state: JobState,
    pub fields: HashMap<String, String>,
}

impl Job {
    /// The job as the admin route answers it: numbers as numbers.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (field, value) in &self.fields {
            let value = match value.parse::<u64>() {
                Ok(number) => serde_json::Value::from(number),
                Err(_) => serde_json::Value::from(value.clone()),
            };
            object.insert(field.clone(), value);
        }
        object.insert("job_id".into(), self.job_id.clone().into());
        object.insert("contest_id".into(), self.contest_id.clone().into());
        object.insert("state".into(), self.state.as_str().into());
        object
            .entry("differences")
            .or_insert(serde_json::Value::Null);
        serde_json::Value::Object(object)
    }
}

/// A job id: `j` and a number (what the INCR gave), nothing else.
pub fn valid_job_id(text: &str) -> bool {
    text.len() > 1
        && text.len() <= 21
        && text.starts_with('j')
        && text[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Milliseconds since the Unix epoch, as job times are recorded.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Reads a job; `Ok(None)` for an unknown (or expired) one. A stored job
/// without a valid state is reported as corrupt.
pub async fn read_job(connection: &mut HotConnection, job_id: &str) -> RedisResult<Option<Job>> {
    if !valid_job_id(job_id) {
        return Ok(None);
    }
    let mut fields: HashMap<String, String> = connection.hgetall(job_key(job_id)).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let state = fields
        .remove("state")
        .as_deref()
        .and_then(JobState::parse)
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "stored job is corrupt",
                format!("job {job_id} has no valid state"),
            ))
        })?;
    let contest_id = fields.remove("contest_id").unwrap_or_default();
    fields.remove("job_id");
    Ok(Some(Job {
        job_id: job_id.to_owned(),
        contest_id,
        state,
        fields,
    }))
}

/// Asks for a recompute of `contest`: the job already queued or running for
/// it, or a new queued one on the requests stream. Returns (job id, whether
/// it is new).
pub async fn request_recompute(
    connection: &mut HotConnection,
    contest: &ContestId,
    origin: &str,
) -> RedisResult<(String, bool)> {
    let marker = contest_job_key(contest);
    for _ in 0..3 {
        let number: u64 = connection.incr(JOB_SEQ_KEY, 1).await?;
        let job_id = format!("j{number}");
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&marker)
            .arg(&job_id)
            .arg("NX")
            .arg("PX")
            .arg(ACTIVE_JOB_TTL.as_millis() as u64)
            .query_async(connection)
            .await?;
        if claimed.is_some() {
            let now = now_ms().to_string();
            let _: () = connection
                .hset_multiple(
                    job_key(&job_id),
                    &[
                        ("job_id", job_id.as_str()),
                        ("contest_id", contest.as_str()),
                        ("state", JobState::Queued.as_str()),
                        ("origin", origin),
                        ("requested_at_ms", now.as_str()),
                    ],
                )
                .await?;
            let _: () = connection
                .expire(job_key(&job_id), JOB_RETENTION.as_secs() as i64)
                .await?;
            let _: String = connection
                .xadd(
                    REQUESTS_STREAM,
                    "*",
                    &[
                        ("job_id", job_id.as_str()),
                        ("contest_id", contest.as_str()),
                    ],
                )
                .await?;
            return Ok((job_id, true));
        }
        let active: Option<String> = connection.get(&marker).await?;
        let Some(active) = active else { continue };
        match read_job(connection, &active).await? {
            Some(job) if job.state.is_active() => return Ok((active, false)),
            // The marker outlived its job (a finish that could not clear it):
            // drop it and claim again.
            _ => {
                clear_active(connection, contest, &active).await?;
            }
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "cannot claim the contest's recompute",
        contest.to_string(),
    )))
}

static CLEAR_IF_OWNED: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        ",
    )
});

/// Forgets the contest's active job, if it is still `job_id`.
pub async fn clear_active(
    connection: &mut HotConnection,
    contest: &ContestId,
    job_id: &str,
) -> RedisResult<()> {
    let _: i64 = CLEAR_IF_OWNED
        .key(contest_job_key(contest))
        .arg(job_id)
        .invoke_async(connection)
        .await?;
    Ok(())
}

/// Sets fields of a job's state (and its state, if given).
pub async fn update_job(
    connection: &mut HotConnection,
    job_id: &str,
    state: Option<JobState>,
    fields: &[(&str, String)],
) -> RedisResult<()> {
    let mut all: Vec<(&str, String)> = fields.to_vec();
    if let Some(state) = state {
        all.push(("state", state.as_str().to_owned()));
    }
    if all.is_empty() {
        return Ok(());
    }
    let _: () = connection.hset_multiple(job_key(job_id), &all).await?;
    Ok(())
}

/// One request read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub stream_id: String,
    pub job_id: String,
    pub contest_id: String,
}

/// Creates the consumer group (from the stream's start) unless it exists.
pub async fn ensure_group(connection: &mut HotConnection) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(REQUESTS_STREAM)
        .arg(SCHEDULERS_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

fn request_of(entry: redis::streams::StreamId) -> Request {
    let field = |name: &str| -> String {
        entry
            .map
            .get(name)
            .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
            .unwrap_or_default()
    };
    Request {
        job_id: field("job_id"),
        contest_id: field("contest_id"),
        stream_id: entry.id.clone(),
    }
}

fn requests_of(reply: redis::streams::StreamReadReply) -> Vec<Request> {
    reply
        .keys
        .into_iter()
        .flat_map(|key| key.ids)
        .map(request_of)
        .collect()
}

/// New requests for `consumer`, waiting up to `block` for one.
pub async fn read_requests(
    connection: &mut HotConnection,
    consumer: &str,
    block: Duration,
) -> RedisResult<Vec<Request>> {
    let options = redis::streams::StreamReadOptions::default()
        .group(SCHEDULERS_GROUP, consumer)
        .count(16)
        .block(block.as_millis() as usize);
    let reply: Option<redis::streams::StreamReadReply> = connection
        .xread_options(&[REQUESTS_STREAM], &[">"], &options)
        .await?;
    Ok(reply.map(requests_of).unwrap_or_default())
}

/// Requests read by a consumer that has not acknowledged them for
/// `idle` (it died mid-job): claimed for `consumer`, to be run again.
pub async fn claim_abandoned(
    connection: &mut HotConnection,
    consumer: &str,
    idle: Duration,
) -> RedisResult<Vec<Request>> {
    let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(REQUESTS_STREAM)
        .arg(SCHEDULERS_GROUP)
        .arg(consumer)
        .arg(idle.as_millis() as u64)
        .arg("0")
        .arg("COUNT")
        .arg(64)
        .query_async(connection)
        .await?;
    Ok(reply.claimed.into_iter().map(request_of).collect())
}

/// Acknowledges a request: its job has finished, one way or the other.
pub async fn acknowledge(connection: &mut HotConnection, stream_id: &str) -> RedisResult<()> {
    let _: i64 = connection
        .xack(REQUESTS_STREAM, SCHEDULERS_GROUP, &[stream_id])
        .await?;
    let _: i64 = connection.xdel(REQUESTS_STREAM, &[stream_id]).await?;
    Ok(())
}

/// The scheduler lease this node holds: its value carries the fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub token: u64,
}

impl Lease {
    fn value(&self) -> String {
        format!("{}/{}", self.node, self.token)
    }
}

/// Takes the lease for `ttl` if nobody holds it.
pub async fn try_acquire_lease(
    connection: &mut HotConnection,
    node: &str,
    ttl: Duration,
) -> RedisResult<Option<Lease>> {
    let holder: Option<String> = connection.get(LEASE_KEY).await?;
    if holder.is_some() {
        return Ok(None);
    }
    let token: u64 = connection.incr(FENCE_KEY, 1).await?;
    let lease = Lease {
        node: node.to_owned(),
        token,
    };
    let taken: Option<String> = redis::cmd("SET")
        .arg(LEASE_KEY)
        .arg(lease.value())
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(connection)
        .await?;
    Ok(taken.map(|_| lease))
}

static RENEW: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        ",
    )
});

/// Extends the lease; `false` when it is no longer this node's (it expired
/// and another node took it).
pub async fn renew_lease(
    connection: &mut HotConnection,
    lease: &Lease,
    ttl: Duration,
) -> RedisResult<bool> {
    let renewed: i64 = RENEW
        .key(LEASE_KEY)
        .arg(lease.value())
        .arg(ttl.as_millis() as u64)
        .invoke_async(connection)
        .await?;
    Ok(renewed == 1)
}

/// Gives the lease up (on shutdown), if it is still this node's.
pub async fn release_lease(connection: &mut HotConnection, lease: &Lease) -> RedisResult<()> {
    let _: i64 = CLEAR_IF_OWNED
        .key(LEASE_KEY)
        .arg(lease.value())
        .invoke_async(connection)
        .await?;
    Ok(())
}

/// Who holds the lease now: (node, token).
pub async fn lease_holder(connection: &mut HotConnection) -> RedisResult<Option<Lease>> {
    let holder: Option<String> = connection.get(LEASE_KEY).await?;
    Ok(holder.and_then(|value| {
        let (node, token) = value.rsplit_once('/')?;
        Some(Lease {
            node: node.to_owned(),
            token: token.parse().ok()?,
        })
    }))
}

/// Whether `lease` (with its fencing token) is still the one held: a job
/// started under a lease that expired meanwhile must not publish, since a
/// newer holder, with a larger token, may be running the same contest.
pub async fn holds_lease(connection: &mut HotConnection, lease: &Lease) -> RedisResult<bool> {
    let holder: Option<String> = connection.get(LEASE_KEY).await?;
    Ok(holder.as_deref() == Some(lease.value().as_str()))
}
