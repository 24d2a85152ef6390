//! The admin API's routes and handlers.
//!
//! Owns: the URL map ([`router`]), token checking for every `/api` path but `/api/login` and
//! `/api/health` ([`AuthUser`]; `/metrics` too unless `[admin] metrics_open`), the JSON error
//! shape ([`ApiError`]: `{"error": ...}` or `{"problems": [...]}` with 400/401/404/429/5xx),
//! and each endpoint: login, health, stats, metrics, config read/replace, logs, certificates.
//! Does not own: sockets and TLS (`server`), the SSE stream (`sse`), the dashboard files
//! (`dashboard`), or applying a config (the control core).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use crossbeam_channel::Sender;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Session, Sessions};
use super::config_edit::{redact, replace_sections, restore_redacted, REDACTED};
use super::feed::{AdminView, ConfigChange, ConfigChangeOutcome};
use super::logs::LogRing;
use crate::runtime::messages::ToControl;

/// How long a config change may take the control core to apply.
const CONFIG_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// What the control core publishes.
    pub view: AdminView,
    /// Tokens and failed logins.
    pub sessions: Sessions,
    /// Where config changes go.
    pub to_control: Sender<ToControl>,
    /// When the API started (health's uptime).
    pub started: Instant,
}

/// The client's address, inserted per connection by the server.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// No valid token (401).
    Unauthorized,
    /// Too many failed logins from this address (429).
    TooManyLogins(Duration),
    /// The request cannot be carried out as sent (400), every problem listed.
    BadRequest(Vec<String>),
    /// No such path (404).
    NotFound,
    /// The appliance could not do it (503).
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                Json(json!({"error": "a valid token is required: POST /api/login, then Authorization: Bearer <token>"})),
            )
                .into_response(),
            ApiError::TooManyLogins(retry) => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry.as_secs().max(1).to_string())],
                Json(json!({"error": "too many failed logins from this address; try again later"})),
            )
                .into_response(),
            ApiError::BadRequest(problems) => (StatusCode::BAD_REQUEST, Json(json!({"problems": problems}))).into_response(),
            ApiError::NotFound => (StatusCode::NOT_FOUND, Json(json!({"error": "no such path"}))).into_response(),
            ApiError::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": why}))).into_response(),
        }
    }
}

/// The routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(super::dashboard::index))
        .route("/dashboard.js", get(super::dashboard::script))
        .route("/api/login", post(login))
        .route("/api/health", get(health))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/api/config", get(read_config).put(replace_config))
        .route("/api/logs", get(logs))
        .route("/api/certs", get(certs))
        .route("/api/stream", get(super::sse::stream))
        .fallback(fallback)
        .with_state(state)
}

/// The session of the request's token: `Authorization: Bearer <token>`, or `?token=` on
/// `/api/stream` (browsers' EventSource cannot set headers).
fn session_of(state: &ApiState, headers: &HeaderMap, uri: &Uri) -> Option<Session> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let from_query = || {
        (uri.path() == "/api/stream")
            .then(|| uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string))
            .flatten()
    };
    let token = from_header.or_else(from_query)?;
    state.sessions.check(&token, Instant::now())
}

/// A logged-in caller (extracting it answers 401 without a valid token).
#[derive(Debug, Clone)]
pub struct AuthUser(pub Session);

impl FromRequestParts<Arc<ApiState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, Self::Rejection> {
        session_of(state, &parts.headers, &parts.uri).map(AuthUser).ok_or(ApiError::Unauthorized)
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(state): State<Arc<ApiState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    state.sessions.login_allowed(peer.ip(), now).map_err(ApiError::TooManyLogins)?;
    let Json(request) = body.map_err(|e| ApiError::BadRequest(vec![format!("expected {{\"username\":..., \"password\":...}}: {e}")]))?;
    let Some(admin) = state.view.config.borrow().config.admin.clone() else {
        return Err(ApiError::Unavailable("no [admin] section".into()));
    };
    let directory = admin.user_directory();
    let (username, password) = (request.username, request.password);
    let user = username.clone();
    // argon2/SHA-crypt are slow on purpose: off the runtime thread.
    let verified = tokio::task::spawn_blocking(move || directory.verify(&user, password.as_bytes())).await.unwrap_or(false);
    if !verified {
        state.sessions.record_failure(peer.ip(), now);
        tracing::warn!(target: "shardgate::security", %peer, user = %username, "admin API login failed");
        return Err(ApiError::Unauthorized);
    }
    state.sessions.clear_failures(peer.ip());
    let token = state
        .sessions
        .issue(&username, admin.token_ttl, Instant::now())
        .ok_or_else(|| ApiError::Unavailable("no randomness for a token".into()))?;
    tracing::info!(target: "shardgate::audit", %peer, user = %username, "admin API login");
    Ok(Json(json!({"token": token, "expires_in": admin.token_ttl.as_secs(), "user": username})).into_response())
}

async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let generation = state.view.config.borrow().generation;
    Json(json!({"status": "ok", "config_generation": generation, "uptime_secs": state.started.elapsed().as_secs()})).into_response()
}

async fn stats(_user: AuthUser, State(state): State<Arc<ApiState>>) -> Response {
    let stats = state.view.stats.borrow().clone();
    Json(&*stats).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let open = state.view.config.borrow().config.admin.as_ref().is_some_and(|a| a.metrics_open);
    if !open && session_of(&state, &headers, &uri).is_none() {
        return Err(ApiError::Unauthorized);
    }
    let stats = state.view.stats.borrow().clone();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], super::prometheus::render(&stats)).into_response())
}

#[derive(Deserialize)]
struct ConfigQuery {
    format: Option<String>,
}

async fn read_config(_user: AuthUser, State(state): State<Arc<ApiState>>, Query(query): Query<ConfigQuery>) -> Result<Response, ApiError> {
    let running = state.view.config.borrow().clone();
    let doc: toml::Table =
        running.text.parse().map_err(|e| ApiError::Unavailable(format!("the running config text cannot be re-read: {e}")))?;
    let redacted = redact(&doc);
    if query.format.as_deref() == Some("toml") {
        let text = toml::to_string(&redacted).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        return Ok(([(header::CONTENT_TYPE, "application/toml")], text).into_response());
    }
    Ok(Json(json!({"generation": running.generation, "source": running.config.source, "config": redacted})).into_response())
}

/// `PUT /api/config`: a whole config as TOML (any non-JSON content type), or JSON
/// `{"config": "<toml>"}` or `{"sections": {"routes": [...], ...}}` (sections replaced whole,
/// `null` removes one). Values reading `<redacted>` keep the running secret.
async fn replace_config(
    AuthUser(session): AuthUser,
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let running = state.view.config.borrow().clone();
    let running_doc: toml::Table = running.text.parse().unwrap_or_default();
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let mut text = if is_json {
        let request: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| ApiError::BadRequest(vec![format!("not valid JSON: {e}")]))?;
        if let Some(text) = request.get("config").and_then(|c| c.as_str()) {
            text.to_string()
        } else if let Some(sections) = request.get("sections") {
            replace_sections(&running_doc, sections).map_err(ApiError::BadRequest)?
        } else {
            return Err(ApiError::BadRequest(vec!["expected {\"config\": \"<toml>\"} or {\"sections\": {...}}".into()]));
        }
    } else {
        body
    };
    if text.contains(REDACTED) {
        let mut doc: toml::Table = text.parse().map_err(|e| ApiError::BadRequest(vec![format!("not valid TOML: {e}")]))?;
        restore_redacted(&mut doc, &running_doc).map_err(ApiError::BadRequest)?;
        text = toml::to_string(&doc).map_err(|e| ApiError::BadRequest(vec![e.to_string()]))?;
    }
    let (reply, outcome) = tokio::sync::oneshot::channel();
    state
        .to_control
        .send(ToControl::ReplaceConfig(ConfigChange { text, user: session.user, reply }))
        .map_err(|_| ApiError::Unavailable("the appliance is stopping".into()))?;
    match tokio::time::timeout(CONFIG_CHANGE_TIMEOUT, outcome).await {
        Ok(Ok(applied @ ConfigChangeOutcome::Applied { .. })) => Ok(Json(applied).into_response()),
        Ok(Ok(ConfigChangeOutcome::Refused { problems })) => Err(ApiError::BadRequest(problems)),
        Ok(Err(_)) => Err(ApiError::Unavailable("the control core dropped the request (stopping?)".into())),
        Err(_) => Err(ApiError::Unavailable("the control core did not answer in time".into())),
    }
}

#[derive(Deserialize)]
struct LogQuery {
    level: Option<String>,
    limit: Option<usize>,
}

async fn logs(_user: AuthUser, Query(query): Query<LogQuery>) -> Result<Response, ApiError> {
    let level = match query.level.as_deref() {
        None => tracing::Level::INFO,
        Some(text) => text
            .parse::<tracing::Level>()
            .map_err(|_| ApiError::BadRequest(vec![format!("level `{text}` is not error, warn, info, debug or trace")]))?,
    };
    let limit = query.limit.unwrap_or(200).min(super::logs::LOG_RING_LINES);
    Ok(Json(json!({"lines": LogRing::global().recent(level, limit)})).into_response())
}

async fn certs(_user: AuthUser, State(state): State<Arc<ApiState>>) -> Response {
    let running = state.view.config.borrow().clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let served: Vec<serde_json::Value> = running
        .config
        .certificates
        .all()
        .map(|c| {
            json!({
                "name": c.name,
                "dns_names": c.dns_names,
                "not_after": c.not_after,
                "expires_in_days": (c.not_after - now).div_euclid(86_400),
            })
        })
        .collect();
    let acme = state.view.stats.borrow().certificates.clone();
    Json(json!({"certificates": served, "acme": acme})).into_response()
}

async fn fallback(State(state): State<Arc<ApiState>>, headers: HeaderMap, uri: Uri) -> ApiError {
    if uri.path().starts_with("/api") && session_of(&state, &headers, &uri).is_none() {
        return ApiError::Unauthorized;
    }
    ApiError::NotFound
}
