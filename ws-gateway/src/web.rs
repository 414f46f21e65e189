//! The web viewer served at `/`: pick a contest, follow an entry, and watch
//! the top 10 and your own rank move live. One static page, no build step;
//! `?contest=c1&entry=e42&token=…` fills the form and starts following.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../web/index.html");

/// `GET /`: the viewer.
pub fn router() -> Router {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}
