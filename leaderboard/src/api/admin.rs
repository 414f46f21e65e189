//! The operators' routes: ask for a recompute of a contest, and follow the
//! job. The request goes to the active `jobs schedule` through the requests
//! stream in Redis; a contest already queued or running answers that job.
//! Every route needs `Authorization: Bearer $ADMIN_TOKEN`, compared in
//! constant time (`subtle`); without a configured token every call is 403.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leaderboard_hot::HotConnection;
use serde_json::json;
use subtle::ConstantTimeEq;

use leaderboard_core::ids::ContestId;
use leaderboard_hot::jobs;
use leaderboard_store::SharedStore;

use super::ApiError;

/// What the admin routes share.
#[derive(Clone)]
pub struct AdminApi {
    /// `None`: no token configured, every call is refused.
    token: Option<Arc<[u8]>>,
    connection: HotConnection,
    store: Option<SharedStore>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("token_set", &self.token.is_some())
            .finish()
    }
}

impl AdminApi {
    pub fn new(
        token: Option<&str>,
        connection: HotConnection,
        store: Option<SharedStore>,
    ) -> AdminApi {
        AdminApi {
            token: token
                .filter(|token| !token.is_empty())
                .map(|token| Arc::from(token.as_bytes())),
            connection,
            store,
        }
    }

    /// Checks the bearer token; the same 403 whatever is wrong with it.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let refused = || ApiError {
            status: StatusCode::FORBIDDEN,
            message: "admin routes need Authorization: Bearer <ADMIN_TOKEN>".into(),
        };
        let expected = self.token.as_ref().ok_or_else(refused)?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .ok_or_else(refused)?;
        if bool::from(given.ct_eq(expected)) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// The admin routes, with their own state (merged into the API's router).
pub fn router(admin: AdminApi) -> Router {
    Router::new()
        .route("/v1/admin/contests/{contest}/recompute", post(recompute))
        .route("/v1/admin/jobs/{job_id}", get(job))
        .with_state(admin)
}

fn backend(error: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("cannot reach the job queue: {error}"),
    }
}

async fn recompute(
    State(admin): State<AdminApi>,
    headers: HeaderMap,
    Path(contest): Path<String>,
) -> Result<Response, ApiError> {
    admin.authorize(&headers)?;
    let contest = ContestId::parse(&contest).map_err(|error| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid contest id: {error}"),
    })?;
    let mut connection = admin.connection.clone();
    if !contest_exists(&admin, &mut connection, &contest).await? {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("contest `{contest}` is unknown"),
        });
    }
    let (job_id, new) = jobs::request_recompute(&mut connection, &contest, "api")
        .await
        .map_err(backend)?;
    tracing::info!(contest = %contest, job = %job_id, new, "recompute requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "contest_id": contest.as_str(), "new": new })),
    )
        .into_response())
}

/// Known to the hot state, or to the store (a finished contest Redis forgot).
async fn contest_exists(
    admin: &AdminApi,
    connection: &mut HotConnection,
    contest: &ContestId,
) -> Result<bool, ApiError> {
    let hot: bool =
        redis::AsyncCommands::exists(connection, leaderboard_hot::contest_meta_key(contest))
            .await
            .map_err(backend)?;
    if hot {
        return Ok(true);
    }
    let Some(store) = &admin.store else {
        return Ok(false);
    };
    let listed = store.list_contests().await.map_err(|error| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!("cannot read the store: {error}"),
    })?;
    Ok(listed.iter().any(|listing| &listing.contest_id == contest))
}

async fn job(
    State(admin): State<AdminApi>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    admin.authorize(&headers)?;
    if !jobs::valid_job_id(&job_id) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid job id `{job_id}`: expected `j` and digits, as the recompute request answered"),
        });
    }
    let mut connection = admin.connection.clone();
    let job = jobs::read_job(&mut connection, &job_id)
        .await
        .map_err(backend)?
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("job `{job_id}` is unknown"),
        })?;
    Ok(Json(job.to_json()).into_response())
}
