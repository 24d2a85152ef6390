//! The web dashboard: one HTML page and one script, compiled into the binary
//! (`include_str!`), no external assets.
//!
//! Owns: serving `/` and `/dashboard.js`. The page logs in through `POST /api/login`, keeps the
//! token in the page (session storage), reads `/api/stream` (SSE) and draws rate charts on
//! canvases and tables of shards, routes, latency, DNS, RADIUS, certificates and recent
//! warnings, updating without reload; the mail queue table has Retry and Delete (confirmed by
//! a second press) per message and Retry all, and a message's correlation id opens its log
//! lines (`/api/logs?id=`). Does not own: the data or the actions (the API's).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// The page may load only its own script and talk only to its own origin, and may not be
/// framed (the token lives in the page).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], DASHBOARD_JS).into_response()
}
