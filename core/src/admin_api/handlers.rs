//! The admin API's routes and handlers.
//!
//! Owns: the URL map ([`router`]), token checking for every `/api` path but `/api/login` and
//! `/api/health` ([`AuthUser`]; `/metrics` too unless `[admin] metrics_open`), the JSON error
//! shape ([`ApiError`]: `{"error": ...}` or `{"problems": [...]}` with 400/401/404/429/5xx),
//! and each endpoint: login, health, stats, metrics, config read/replace, logs (all, or one
//! correlation id's), certificates, the mail queue and its actions (retry now, flush,
//! delete; each audited under `shardgate::audit` with the user, like config changes).
//! Does not own: sockets and TLS (`server`), the SSE stream (`sse`), the dashboard files
//! (`dashboard`), or applying a config (the control core).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
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
    /// Password checks running at once (argon2/SHA-crypt are slow on purpose; a login flood
    /// must not take every CPU of the control core).
    pub verifications: tokio::sync::Semaphore,
}

/// Password checks that may run at once.
pub const CONCURRENT_VERIFICATIONS: usize = 2;

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
    /// The path exists but what it names does not, e.g. a queue id (404 with this text).
    Missing(String),
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
            ApiError::Missing(what) => (StatusCode::NOT_FOUND, Json(json!({"error": what}))).into_response(),
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
        .route("/api/queue", get(queue))
        .route("/api/queue/retry", post(queue_flush))
        .route("/api/queue/{id}", get(queue_message).delete(queue_delete))
        .route("/api/queue/{id}/retry", post(queue_retry))
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
    let session = state.sessions.check(&token, Instant::now())?;
    // A user removed from `[admin] users` (reload or PUT /api/config) loses access at once.
    let still_a_user = state.view.config.borrow().config.admin.as_ref().is_some_and(|a| a.users.iter().any(|u| u.username == session.user));
    still_a_user.then_some(session)
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
    // argon2/SHA-crypt are slow on purpose: off the runtime thread, a few at a time.
    let _permit = state.verifications.acquire().await.map_err(|_| ApiError::Unavailable("stopping".into()))?;
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
    /// A correlation id (its connection's or message's lines), or any text a line must
    /// mention (a queue id).
    id: Option<String>,
}

async fn logs(_user: AuthUser, Query(query): Query<LogQuery>) -> Result<Response, ApiError> {
    let level = match query.level.as_deref() {
        None => tracing::Level::INFO,
        Some(text) => text
            .parse::<tracing::Level>()
            .map_err(|_| ApiError::BadRequest(vec![format!("level `{text}` is not error, warn, info, debug or trace")]))?,
    };
    let limit = query.limit.unwrap_or(200).min(super::logs::LOG_RING_LINES);
    Ok(Json(json!({"lines": LogRing::global().recent_about(level, limit, query.id.as_deref())})).into_response())
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

#[derive(Deserialize)]
struct QueueQuery {
    limit: Option<usize>,
}

/// `GET /api/queue`: how many messages are queued and the oldest `limit` (default 100) of
/// them, envelope and per-recipient state (404 without `[email]`).
async fn queue(_user: AuthUser, State(state): State<Arc<ApiState>>, Query(query): Query<QueueQuery>) -> Result<Response, ApiError> {
    let Some(handle) = state.view.config.borrow().mail_queue.clone() else {
        return Err(ApiError::NotFound);
    };
    let all = handle.list();
    let limit = query.limit.unwrap_or(100).min(10_000);
    let shown: Vec<_> = all.iter().take(limit).collect();
    Ok(Json(json!({"messages": all.len(), "next_due_ms": handle.next_due_ms(), "list": shown})).into_response())
}

/// The mail queue's handle (404 without `[email]`).
fn mail_queue(state: &ApiState) -> Result<crate::mail::queue::QueueHandle, ApiError> {
    state.view.config.borrow().mail_queue.clone().ok_or(ApiError::NotFound)
}

/// A queue id from the path, checked for its shape.
fn queue_id(id: &str) -> Result<(), ApiError> {
    if crate::mail::queue::is_queue_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(vec![format!("`{id}` is not a queue id (16 upper-case hex digits, as `queue list` shows)")]))
    }
}

/// `GET /api/queue/{id}`: a message's record (envelope, recipients with state, attempts and
/// last error, correlation id) while it is queued, and its status in plain words — also
/// after it left the queue (delivered, bounced, deleted), while the queue remembers it.
async fn queue_message(_user: AuthUser, State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let handle = mail_queue(&state)?;
    queue_id(&id)?;
    let status = handle.status(&id).ok_or_else(|| ApiError::Missing(format!("unknown queue id {id} (never queued here, or finished too long ago)")))?;
    let report = crate::mail::delivery::service::status_report(&id, &status, crate::mail::queue::now_ms());
    let message = match &status {
        crate::mail::queue::MessageStatus::Queued(message) => {
            let mut value = serde_json::to_value(message).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.remove("trace_header");
            }
            value
        }
        crate::mail::queue::MessageStatus::Finished(_) => serde_json::Value::Null,
    };
    Ok(Json(json!({"id": id, "status": report, "message": message})).into_response())
}

/// A change to one queued message.
#[derive(Debug, Clone, Copy)]
enum QueueAction {
    /// Every pending recipient attempted now.
    Retry,
    /// Removed undelivered, no bounce.
    Delete,
}

impl QueueAction {
    fn name(self) -> &'static str {
        match self {
            QueueAction::Retry => "retry",
            QueueAction::Delete => "delete",
        }
    }
}

/// Carries out `action` on message `id` for `user`, and logs it under `shardgate::audit`
/// inside the message's `conn` span (its correlation id, looked up before the action), so the
/// message's story shows who retried or deleted it.
async fn act_on_message(state: &ApiState, user: &str, peer: SocketAddr, id: &str, action: QueueAction) -> Result<(), ApiError> {
    let handle = mail_queue(state)?;
    queue_id(id)?;
    let correlation = handle.get(id).and_then(|m| m.correlation_id);
    let outcome = match action {
        QueueAction::Retry => handle.retry_now(id).await,
        QueueAction::Delete => handle.delete(id).await,
    };
    let span = match &correlation {
        Some(correlation) => tracing::info_span!("conn", id = %correlation),
        None => tracing::Span::none(),
    };
    let _entered = span.enter();
    let action = action.name();
    match &outcome {
        Ok(()) => tracing::info!(target: "shardgate::audit", user = %user, %peer, queue_id = %id, action = %action, "mail queue action through the admin API"),
        Err(error) => tracing::warn!(
            target: "shardgate::audit",
            user = %user,
            %peer,
            queue_id = %id,
            action = %action,
            %error,
            "mail queue action through the admin API refused"
        ),
    }
    outcome.map_err(queue_error)
}

fn queue_error(error: crate::mail::queue::QueueError) -> ApiError {
    match error {
        crate::mail::queue::QueueError::UnknownMessage(id) => ApiError::Missing(format!("no queued message {id}")),
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `POST /api/queue/{id}/retry`: every pending recipient of the message is attempted now
/// (`shardgate queue retry ID`).
async fn queue_retry(
    AuthUser(session): AuthUser,
    State(state): State<Arc<ApiState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act_on_message(&state, &session.user, peer, &id, QueueAction::Retry).await?;
    Ok(Json(json!({"retrying": [id]})).into_response())
}

/// `POST /api/queue/retry`: a flush, every queued message attempted now
/// (`shardgate queue retry --all`, Postfix's `postqueue -f`).
async fn queue_flush(
    AuthUser(session): AuthUser,
    State(state): State<Arc<ApiState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
) -> Result<Response, ApiError> {
    let handle = mail_queue(&state)?;
    let pending: Vec<String> = handle.list().into_iter().filter(|m| !m.is_final()).map(|m| m.id).collect();
    // Concurrently, so the queue writer commits them in a few group commits.
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|id| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.retry_now(&id).await.map(|()| id) })
        })
        .collect();
    let mut retrying = Vec::new();
    for task in tasks {
        if let Ok(Ok(id)) = task.await {
            retrying.push(id);
        }
    }
    tracing::info!(target: "shardgate::audit", user = %session.user, %peer, messages = retrying.len(), "mail queue flushed through the admin API");
    Ok(Json(json!({"retrying": retrying})).into_response())
}

/// `DELETE /api/queue/{id}`: the message leaves the queue undelivered, no bounce
/// (`shardgate queue delete ID`, Postfix's `postsuper -d`); `GET` on it then says `deleted`.
async fn queue_delete(
    AuthUser(session): AuthUser,
    State(state): State<Arc<ApiState>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act_on_message(&state, &session.user, peer, &id, QueueAction::Delete).await?;
    Ok(Json(json!({"deleted": id})).into_response())
}

async fn fallback(State(state): State<Arc<ApiState>>, headers: HeaderMap, uri: Uri) -> ApiError {
    if uri.path().starts_with("/api") && session_of(&state, &headers, &uri).is_none() {
        return ApiError::Unauthorized;
    }
    ApiError::NotFound
}
