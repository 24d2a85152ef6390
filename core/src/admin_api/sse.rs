//! `/api/stream`: the merged stats as Server-Sent Events, one `stats` event per merge (about
//! every second), for the dashboard and other live clients.
//!
//! Owns: turning the stats `watch` channel into an event stream that starts with the current
//! value and ends when the caller's token expires (the client logs in again) or the appliance
//! stops. Does not own: authentication (`handlers::AuthUser`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_lite::Stream;

use super::handlers::{ApiState, AuthUser};

/// The stats stream for a logged-in caller.
pub async fn stream(AuthUser(session): AuthUser, State(state): State<Arc<ApiState>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.view.stats.clone();
    let expires = session.expires;
    let events = futures_lite::stream::unfold((receiver, true), move |(mut receiver, first)| async move {
        if !first {
            let wait = expires.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, receiver.changed()).await {
                Ok(Ok(())) => {}
                // Token expired, or the control core is gone.
                _ => return None,
            }
        }
        let json = serde_json::to_string(&**receiver.borrow_and_update()).unwrap_or_else(|_| "{}".into());
        Some((Ok(Event::default().event("stats").data(json)), (receiver, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
