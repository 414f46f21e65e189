//! The OpenAPI document of the read API, generated from the handlers'
//! annotations (`utoipa`) and served at `/v1/openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::{EntryRank, LeaderboardPage, RankedRow};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Leaderboard read API",
        description = "Live fantasy contest leaderboards: pages, an entry's rank, around an entry, match players. Errors are JSON {\"error\": \"...\"}."
    ),
    paths(
        super::leaderboard,
        super::entry_rank,
        super::around,
        super::match_players
    ),
    components(schemas(LeaderboardPage, RankedRow, EntryRank))
)]
#[derive(Debug)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
