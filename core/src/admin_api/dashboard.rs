//! The web dashboard: one HTML page and one script, compiled into the binary
//! (`include_str!`), no external assets.
//!
//! Owns: serving `/` and `/dashboard.js`. The page logs in through `POST /api/login`, keeps the
//! token in the page (session storage), reads `/api/stream` (SSE) and draws rate charts on
//! canvases and tables of shards, routes, latency, DNS, RADIUS, certificates and recent
//! warnings, updating without reload. Does not own: the data (the API's JSON).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// `GET /`.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], INDEX_HTML).into_response()
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], DASHBOARD_JS).into_response()
}
