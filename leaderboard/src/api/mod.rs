//! The HTTP read API of `leaderboard serve`: leaderboard pages, an entry's
//! rank, around an entry, and a match's players, answered from the node cache
//! ([`cache`]) so that the common case makes no Redis round trip.

pub mod admin;
pub mod cache;
pub mod openapi;
pub mod ratelimit;
pub mod server;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::metrics;
use cache::{NodeCache, ReadError};
use leaderboard_core::ids::{ContestId, EntryId, MatchId};
use leaderboard_core::points::TeamPoints;
use leaderboard_hot::RankedEntry;

/// Largest `limit` of a leaderboard page.
pub const MAX_LIMIT: usize = 200;
/// Largest `radius` around an entry.
pub const MAX_RADIUS: usize = 50;

/// An error as the contract shapes it: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        match error {
            ReadError::NotFound(message) => ApiError {
                status: StatusCode::NOT_FOUND,
                message,
            },
            ReadError::Backend(message) => {
                tracing::warn!(%message, "read failed");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the leaderboard store is unavailable, retry shortly".into(),
                }
            }
            ReadError::Corrupt(message) => {
                metrics::CORRUPT_READS.inc();
                tracing::error!(%message, "corrupt hot state read, not served");
                ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the leaderboard store is unavailable, retry shortly".into(),
                }
            }
        }
    }
}

/// A path that does not decode (invalid percent-encoding, invalid UTF-8)
/// is a bad request in the API's own shape, not axum's plain-text rejection.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid path: {}", rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid query: {}", rejection.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub cache: NodeCache,
    /// The benchmark baseline: one Redis round trip per request, no cache.
    pub per_request_redis: bool,
}

/// The contract's routes (without the admin routes, merged by the caller).
/// The state is shared behind one `Arc`: axum clones it for every request,
/// and one reference count is cheaper than the cache's many.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/contests/{contest}/leaderboard", get(leaderboard))
        .route("/v1/contests/{contest}/entries/{entry}", get(entry_rank))
        .route("/v1/contests/{contest}/entries/{entry}/around", get(around))
        .route("/v1/matches/{match}/players", get(match_players))
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "this route answers GET only".into(),
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such route; see /v1/openapi.json".into(),
    }
}

fn contest_id(text: &str) -> Result<ContestId, ApiError> {
    ContestId::parse(text).map_err(|error| ApiError::bad_request(error.to_string()))
}

fn entry_id(text: &str) -> Result<EntryId, ApiError> {
    EntryId::parse(text).map_err(|error| ApiError::bad_request(error.to_string()))
}

/// Reads an optional integer parameter within `range`.
fn parameter(
    text: Option<&str>,
    name: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value: usize = text
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name} must be an integer, not `{text}`")))?;
    if !range.contains(&value) {
        return Err(ApiError::bad_request(format!(
            "{name} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        )));
    }
    Ok(value)
}

/// A page of the leaderboard (the contract's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaderboardPage {
    pub contest_id: String,
    pub match_id: String,
    pub version: u64,
    pub total: u64,
    pub entries: Vec<RankedRow>,
    /// Present when the contest is no longer in Redis and the page comes
    /// from the durable store's latest rank snapshot (at `version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotOrigin>,
}

/// Which stored rank snapshot an answer comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotOrigin {
    /// `final` (the standings when the match ended) or `recompute`.
    pub source: String,
    /// When it was computed, in milliseconds since the Unix epoch.
    pub computed_at_ms: u64,
}

impl From<&leaderboard_core::store::RankSnapshotInfo> for SnapshotOrigin {
    fn from(info: &leaderboard_core::store::RankSnapshotInfo) -> SnapshotOrigin {
        SnapshotOrigin {
            source: info.source.clone(),
            computed_at_ms: info.computed_at_ms,
        }
    }
}

/// One ranked entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RankedRow {
    pub rank: u64,
    pub entry_id: String,
    pub user_id: String,
    #[schema(value_type = f64)]
    pub points: TeamPoints,
}

impl From<&RankedEntry> for RankedRow {
    fn from(row: &RankedEntry) -> RankedRow {
        RankedRow {
            rank: row.rank,
            entry_id: row.entry_id.clone(),
            user_id: row.user_id.clone(),
            points: row.points,
        }
    }
}

/// One entry's rank.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntryRank {
    pub contest_id: String,
    pub entry_id: String,
    pub user_id: String,
    pub rank: u64,
    #[schema(value_type = f64)]
    pub points: TeamPoints,
    pub total: u64,
    pub version: u64,
    /// Present when answered from the durable store's latest rank snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotOrigin>,
}

/// The route a request asked for, as the request counter labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    Leaderboard,
    Entry,
    Around,
    Players,
    OpenApi,
    Admin,
    Other,
}

impl RouteLabel {
    const ALL: [RouteLabel; 7] = [
        RouteLabel::Leaderboard,
        RouteLabel::Entry,
        RouteLabel::Around,
        RouteLabel::Players,
        RouteLabel::OpenApi,
        RouteLabel::Admin,
        RouteLabel::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            RouteLabel::Leaderboard => "leaderboard",
            RouteLabel::Entry => "entry",
            RouteLabel::Around => "around",
            RouteLabel::Players => "players",
            RouteLabel::OpenApi => "openapi",
            RouteLabel::Admin => "admin",
            RouteLabel::Other => "other",
        }
    }

    /// The route of a raw request path (undecoded; shape only). No
    /// allocation: it runs for every request.
    pub(crate) fn of(path: &str) -> RouteLabel {
        let segment = |text: &str| !text.is_empty() && !text.contains('/');
        if let Some(rest) = path.strip_prefix("/v1/contests/") {
            let Some((contest, tail)) = rest.split_once('/') else {
                return RouteLabel::Other;
            };
            if !segment(contest) {
                return RouteLabel::Other;
            }
            if tail == "leaderboard" {
                return RouteLabel::Leaderboard;
            }
            let Some(entry) = tail.strip_prefix("entries/") else {
                return RouteLabel::Other;
            };
            return match entry.strip_suffix("/around") {
                Some(entry) if segment(entry) => RouteLabel::Around,
                _ if segment(entry) => RouteLabel::Entry,
                _ => RouteLabel::Other,
            };
        }
        if path.starts_with("/v1/admin/") {
            return RouteLabel::Admin;
        }
        if let Some(rest) = path.strip_prefix("/v1/matches/") {
            return match rest.strip_suffix("/players") {
                Some(id) if segment(id) => RouteLabel::Players,
                _ => RouteLabel::Other,
            };
        }
        match path {
            "/v1/openapi.json" => RouteLabel::OpenApi,
            "/metrics" | "/healthz" | "/readyz" => RouteLabel::Admin,
            _ => RouteLabel::Other,
        }
    }
}

/// The 200 counter of each route, resolved once: the common case costs one
/// atomic add, no label hashing.
static OK_COUNTERS: std::sync::LazyLock<[prometheus::IntCounter; 7]> =
    std::sync::LazyLock::new(|| {
        RouteLabel::ALL
            .map(|route| metrics::HTTP_REQUESTS.with_label_values(&[route.name(), "200"]))
    });

/// Each route's latency histogram, resolved once (no label hashing per request).
static ROUTE_SECONDS: std::sync::LazyLock<[prometheus::Histogram; 7]> =
    std::sync::LazyLock::new(|| {
        RouteLabel::ALL.map(|route| metrics::HTTP_SECONDS.with_label_values(&[route.name()]))
    });

/// Counts one answered request by route and status, and its time.
pub(crate) fn count_request(route: RouteLabel, status: StatusCode, took: std::time::Duration) {
    ROUTE_SECONDS[route as usize].observe(took.as_secs_f64());
    if status == StatusCode::OK {
        OK_COUNTERS[route as usize].inc();
    } else {
        metrics::HTTP_REQUESTS
            .with_label_values(&[route.name(), status.as_str()])
            .inc();
    }
}

fn json_response<T: Serialize>(body: &T) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Json(body)).into_response()
}

/// JSON bytes as an answer, its two headers set directly (no header-parts
/// machinery: this runs for every page and every rank).
fn bytes_response(body: bytes::Bytes) -> Response {
    use axum::http::HeaderValue;
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A live entry's rank in the contract's [`EntryRank`] shape, written
/// straight into one buffer: the same bytes `serde_json` writes (a unit test
/// holds them equal), at a fraction of the cost on the hottest route. Ids
/// hold only ASCII letters, digits, '-', '_' and '.', so none needs escaping.
fn entry_rank_json(
    contest_id: &str,
    entry_id: &str,
    user_id: &str,
    rank: u64,
    points: TeamPoints,
    total: u64,
    version: u64,
) -> bytes::Bytes {
    let mut numbers = itoa::Buffer::new();
    let mut out = Vec::with_capacity(128 + contest_id.len() + entry_id.len() + user_id.len());
    out.extend_from_slice(b"{\"contest_id\":\"");
    out.extend_from_slice(contest_id.as_bytes());
    out.extend_from_slice(b"\",\"entry_id\":\"");
    out.extend_from_slice(entry_id.as_bytes());
    out.extend_from_slice(b"\",\"user_id\":\"");
    out.extend_from_slice(user_id.as_bytes());
    out.extend_from_slice(b"\",\"rank\":");
    out.extend_from_slice(numbers.format(rank).as_bytes());
    out.extend_from_slice(b",\"points\":");
    let whole = points.0 / 2;
    if points.0 % 2 != 0 && points.0 < 0 && whole == 0 {
        out.extend_from_slice(b"-0");
    } else {
        out.extend_from_slice(numbers.format(whole).as_bytes());
    }
    if points.0 % 2 != 0 {
        out.extend_from_slice(b".5");
    }
    out.extend_from_slice(b",\"total\":");
    out.extend_from_slice(numbers.format(total).as_bytes());
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(numbers.format(version).as_bytes());
    out.push(b'}');
    out.into()
}

/// `GET /v1/contests/{contest}/leaderboard?offset=0&limit=50`
#[utoipa::path(get, path = "/v1/contests/{contest}/leaderboard",
    params(("contest" = String, Path), ("offset" = Option<usize>, Query), ("limit" = Option<usize>, Query, description = "1-200, default 50")),
    responses((status = 200, body = LeaderboardPage), (status = 400), (status = 404), (status = 429)))]
pub async fn leaderboard(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(contest) = path?;
    let Query(query) = query?;
    let (offset, limit) = (query.get("offset"), query.get("limit"));
    leaderboard_page(
        &state,
        &contest,
        offset.map(String::as_str),
        limit.map(String::as_str),
    )
    .await
}

/// A leaderboard page from the route's raw `contest`, `offset` and `limit`.
pub(crate) async fn leaderboard_page(
    state: &ApiState,
    contest: &str,
    offset: Option<&str>,
    limit: Option<&str>,
) -> Result<Response, ApiError> {
    if !state.per_request_redis {
        // The common case, synchronously: a page this thread rendered from
        // its current copy of the contest's snapshot (only valid ids and
        // parameters are ever kept; anything else takes the path below).
        if let (Ok(offset), Ok(limit)) = (
            parameter(offset, "offset", 0, 0..=10_000_000),
            parameter(limit, "limit", 50, 1..=MAX_LIMIT),
        ) {
            if let Some(json) = state.cache.page_now(contest, offset, limit) {
                return Ok(bytes_response(json));
            }
        }
    }
    let contest = contest_id(contest)?;
    let offset = parameter(offset, "offset", 0, 0..=10_000_000)?;
    let limit = parameter(limit, "limit", 50, 1..=MAX_LIMIT)?;
    if state.per_request_redis {
        let page = state.cache.page_round_trip(&contest, offset, limit).await?;
        return Ok(json_response(&LeaderboardPage {
            contest_id: page.contest_id.clone(),
            match_id: page.match_id.clone(),
            version: page.version,
            total: page.total,
            entries: page.entries.iter().map(RankedRow::from).collect(),
            snapshot: None,
        }));
    }
    let snapshot = state.cache.contest(&contest).await?;
    let page = state.cache.page(&snapshot, offset, limit).await?;
    state
        .cache
        .keep_page_now(&snapshot, offset, limit, &page.json);
    Ok(bytes_response(page.json.clone()))
}

/// `GET /v1/contests/{contest}/entries/{entry}`: answered from the cached
/// histogram and the entry's team, exactly, with no Redis round trip once both
/// are cached.
#[utoipa::path(get, path = "/v1/contests/{contest}/entries/{entry}",
    params(("contest" = String, Path), ("entry" = String, Path)),
    responses((status = 200, body = EntryRank), (status = 400), (status = 404), (status = 429)))]
pub async fn entry_rank(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((contest, entry)) = path?;
    entry_rank_of(&state, &contest, &entry).await
}

/// An entry's rank from the route's raw `contest` and `entry`.
pub(crate) async fn entry_rank_of(
    state: &ApiState,
    contest: &str,
    entry: &str,
) -> Result<Response, ApiError> {
    if !state.per_request_redis {
        // The common case, synchronously: this thread's copy of the
        // contest's snapshot and the entry's cached team. The ids need no
        // check here: only valid ones are ever cached.
        let cache = &state.cache;
        let answered = cache.with_entry_now(contest, entry, |snapshot, team| {
            if snapshot.stored_info().is_some() {
                return None;
            }
            let (points, rank) = snapshot.score(entry, &team.team).ok()?;
            Some(entry_rank_json(
                contest,
                entry,
                &team.user_id,
                rank,
                points,
                snapshot.total,
                snapshot.version,
            ))
        });
        if let Some(body) = answered {
            return Ok(bytes_response(body));
        }
    }
    let contest = contest_id(contest)?;
    let entry = entry_id(entry)?;
    if state.per_request_redis {
        let answer = state.cache.entry_rank_round_trip(&contest, &entry).await?;
        return Ok(json_response(&answer));
    }
    let snapshot = state.cache.contest(&contest).await?;
    if let Some(info) = snapshot.stored_info() {
        let stored = state.cache.stored_entry(&snapshot, &entry).await?;
        let row = &stored.1;
        return Ok(json_response(&EntryRank {
            contest_id: contest.to_string(),
            entry_id: entry.to_string(),
            user_id: row.user_id.clone(),
            rank: row.rank,
            points: row.points,
            total: snapshot.total,
            version: snapshot.version,
            snapshot: Some(info.into()),
        }));
    }
    let team = state.cache.entry(&contest, &entry).await?;
    let (points, rank) = snapshot.score(entry.as_str(), &team.team)?;
    Ok(bytes_response(entry_rank_json(
        contest.as_str(),
        entry.as_str(),
        &team.user_id,
        rank,
        points,
        snapshot.total,
        snapshot.version,
    )))
}

/// `GET /v1/contests/{contest}/entries/{entry}/around?radius=5`
#[utoipa::path(get, path = "/v1/contests/{contest}/entries/{entry}/around",
    params(("contest" = String, Path), ("entry" = String, Path), ("radius" = Option<usize>, Query, description = "0-50, default 5")),
    responses((status = 200, body = LeaderboardPage), (status = 400), (status = 404), (status = 429)))]
pub async fn around(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((contest, entry)) = path?;
    let Query(query) = query?;
    let contest = contest_id(&contest)?;
    let entry = entry_id(&entry)?;
    let radius = parameter(
        query.get("radius").map(String::as_str),
        "radius",
        5,
        0..=MAX_RADIUS,
    )?;
    let snapshot = state.cache.contest(&contest).await?;
    let position = state.cache.position(&snapshot, &entry).await? as usize;
    let offset = position.saturating_sub(radius);
    let limit = position - offset + radius + 1;
    let page = state.cache.page(&snapshot, offset, limit).await?;
    Ok(bytes_response(page.json.clone()))
}

/// `GET /v1/matches/{match}/players`
#[utoipa::path(get, path = "/v1/matches/{match}/players",
    params(("match" = String, Path)),
    responses((status = 200, description = "{\"match_id\",\"version\",\"players\":{name: points}}"), (status = 400), (status = 404)))]
pub async fn match_players(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(match_id) = path?;
    let match_id =
        MatchId::parse(&match_id).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let players = state.cache.match_players(&match_id).await?;
    Ok(json_response(&*players))
}

#[cfg(test)]
mod tests {
    use super::{entry_rank_json, EntryRank, RouteLabel};
    use leaderboard_core::points::TeamPoints;

    #[test]
    fn a_rank_written_by_hand_is_the_json_serde_writes() {
        for (halves, rank, total, version) in [
            (1220, 227_743, 1_000_000, 1),
            (247, 1, 1, 0),
            (0, 5, 9, u64::MAX),
            (-1, 2, 2, 17),
            (-3, 3, 3, 18),
            (-4, 4, 4, 19),
            (1, u64::MAX, u64::MAX, 20),
        ] {
            let points = TeamPoints(halves);
            let by_hand = entry_rank_json("c-1.x_", "e42", "u_7", rank, points, total, version);
            let by_serde = serde_json::to_vec(&EntryRank {
                contest_id: "c-1.x_".into(),
                entry_id: "e42".into(),
                user_id: "u_7".into(),
                rank,
                points,
                total,
                version,
                snapshot: None,
            })
            .unwrap();
            assert_eq!(
                std::str::from_utf8(&by_hand).unwrap(),
                std::str::from_utf8(&by_serde).unwrap()
            );
        }
    }

    #[test]
    fn request_paths_are_labelled_by_route() {
        for (path, route) in [
            ("/v1/contests/c1/leaderboard", RouteLabel::Leaderboard),
            ("/v1/contests/c1/entries/e7", RouteLabel::Entry),
            ("/v1/contests/c1/entries/e7/around", RouteLabel::Around),
            ("/v1/matches/m1/players", RouteLabel::Players),
            ("/v1/openapi.json", RouteLabel::OpenApi),
            ("/readyz", RouteLabel::Admin),
            ("/v1/contests//leaderboard", RouteLabel::Other),
            ("/v1/contests/c1/entries/", RouteLabel::Other),
            ("/v1/contests/c1/entries/a/b", RouteLabel::Other),
            ("/v1/matches/m1/x", RouteLabel::Other),
            ("/nothing", RouteLabel::Other),
        ] {
            assert_eq!(RouteLabel::of(path), route, "{path}");
        }
    }
}
