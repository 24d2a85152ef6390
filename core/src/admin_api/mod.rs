//! The admin API: an HTTP(S) management listener on the control core's tokio runtime.
//!
//! Layers, outside in:
//! - [`server`]: the listener (`[admin] listen`, default `127.0.0.1:9090`), TLS when a
//!   certificate is configured, hyper HTTP/1.1 per connection;
//! - [`handlers`]: the URL map and endpoints — `POST /api/login` (token), `GET /api/health`,
//!   `/api/stats`, `/metrics` (Prometheus), `GET|PUT /api/config`, `/api/logs` (`?id=` one
//!   correlation id's lines), `/api/certs`, `/api/queue` (the mail queue, with `[email]`),
//!   `GET|DELETE /api/queue/{id}`, `POST /api/queue/{id}/retry` and `POST /api/queue/retry`
//!   (flush), audited under `shardgate::audit`;
//!   [`sse`]: `/api/stream`; [`dashboard`]: the web page at `/`;
//! - [`auth`]: tokens and the failed-login limiter; [`config_edit`]: redaction and section
//!   replacement of config documents; [`prometheus`]: the metrics text; [`logs`]: the ring of
//!   recent log lines the binary's tracing subscriber fills;
//! - [`feed`]: what the control core publishes (stats, running config) and the config-change
//!   request it answers (`ToControl::ReplaceConfig`, the same validation and hot-apply path as
//!   SIGHUP, then persisted).
//!
//! Nothing here runs on a shard. The Unix admin socket (`runtime::admin`) stays for the CLI.

pub mod auth;
pub mod config_edit;
pub mod dashboard;
pub mod feed;
pub mod handlers;
pub mod logs;
pub mod prometheus;
pub mod server;
pub mod sse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::runtime::control_async::ControlAsync;
use crate::runtime::messages::ToControl;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminApiError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Starts the admin API for `config`'s `[admin]` on the control core's runtime; returns the
/// address it listens on (`None` without `[admin]`).
pub fn start(
    runtime: &ControlAsync,
    config: &Config,
    view: feed::AdminView,
    to_control: Sender<ToControl>,
) -> Result<Option<SocketAddr>, AdminApiError> {
    let Some(admin) = &config.admin else { return Ok(None) };
    let tls = server::tls_config(admin.tls.as_ref(), config)?;
    let listener = server::bind(admin.listen)?;
    let addr = listener.local_addr().map_err(|source| AdminApiError::Bind { addr: admin.listen, source })?;
    let state = Arc::new(handlers::ApiState {
        view,
        sessions: auth::Sessions::default(),
        to_control,
        started: Instant::now(),
        verifications: tokio::sync::Semaphore::new(handlers::CONCURRENT_VERIFICATIONS),
    });
    let app = handlers::router(state);
    let https = tls.is_some();
    runtime.spawn(server::serve(listener, tls, app));
    tracing::info!(%addr, https, users = admin.users.len(), "admin API listening");
    Ok(Some(addr))
}
