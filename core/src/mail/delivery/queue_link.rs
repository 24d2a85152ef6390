//! The delivery engine's view of the real queue: [`MailQueue`] for
//! [`crate::mail::queue::QueueHandle`], and the [`Router`] built from `[[email.routes]]`.
//!
//! Owns: the translation between the queue's records (ms timestamps, recipient states,
//! trace header + spool file) and the engine's due messages and outcomes; the lease the
//! engine takes on due messages ([`LEASE`]); and routing of messages the control core
//! submits itself (bounces, `shardgate send`) with the envelope rules of
//! `crate::mail::routes`.
//! Does not own: the queue's storage or the matching rules.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;

use super::{AttemptOutcome, DueMessage, DueRecipient, MailQueue, QueueAccessError, Router, Submission, TextReader};
use crate::config::EmailRoute;
use crate::mail::queue::{NewMessage, QueueHandle, QueuedMessage, RecipientOutcome, RecipientState};
use crate::mail::routes::{route_recipient, EnvelopeFacts, RcptRouting};

/// How long a due message is leased to the engine: longer than any attempt can take
/// (connect, five-minute command timeouts, the ten-minute final reply), so a message is
/// never handed out twice while in flight; a lease that runs out (the engine lost track of
/// it) makes it due again.
pub const LEASE: Duration = Duration::from_secs(20 * 60);

fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The pending recipients of `message` due at `now_ms` (`None` when there are none).
pub fn due_message(message: QueuedMessage, now_ms: u64) -> Option<DueMessage> {
    let recipients: Vec<DueRecipient> = message
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RecipientState::Pending && r.next_attempt_ms <= now_ms)
        .map(|(index, r)| DueRecipient { index, address: r.address.clone(), action: r.action.clone(), attempts: r.attempts })
        .collect();
    if recipients.is_empty() {
        return None;
    }
    Some(DueMessage {
        id: message.id,
        sender: message.sender,
        received: UNIX_EPOCH + Duration::from_millis(message.received_at_ms),
        size: message.size + message.trace_header.len() as u64,
        smtputf8: message.smtputf8,
        recipients,
        correlation_id: message.correlation_id,
    })
}

fn outcome(outcome: AttemptOutcome) -> RecipientOutcome {
    match outcome {
        AttemptOutcome::Delivered { reply } => RecipientOutcome::Delivered { reply },
        AttemptOutcome::Deferred { error, next_attempt } => RecipientOutcome::Deferred { error, next_attempt_ms: ms(next_attempt) },
        AttemptOutcome::Failed { reply } => RecipientOutcome::Failed { reply },
        AttemptOutcome::Postponed { reason, next_attempt } => RecipientOutcome::Postponed { reason, next_attempt_ms: ms(next_attempt) },
    }
}

impl MailQueue for QueueHandle {
    fn due(&self, now: SystemTime, limit: usize) -> impl Future<Output = Result<Vec<DueMessage>, QueueAccessError>> + Send {
        let now_ms = ms(now);
        let due: Vec<DueMessage> =
            QueueHandle::due(self, now_ms, limit, LEASE).into_iter().filter_map(|m| due_message(m, now_ms)).collect();
        async move { Ok(due) }
    }

    fn record(&self, id: &str, outcomes: Vec<(usize, AttemptOutcome)>) -> impl Future<Output = Result<(), QueueAccessError>> + Send {
        let handle = self.clone();
        let id = id.to_string();
        let outcomes: Vec<(usize, RecipientOutcome)> = outcomes.into_iter().map(|(index, o)| (index, outcome(o))).collect();
        async move { QueueHandle::record(&handle, &id, outcomes).await.map(|_| ()).map_err(|e| QueueAccessError(e.to_string())) }
    }

    fn open_text(&self, id: &str) -> impl Future<Output = Result<TextReader, QueueAccessError>> + Send {
        let message = self.get(id);
        let path = self.spool_path(id);
        let id = id.to_string();
        async move {
            let (Some(message), Some(path)) = (message, path) else {
                return Err(QueueAccessError(format!("no queued message {id}")));
            };
            let file = tokio::fs::File::open(&path).await.map_err(|e| QueueAccessError(format!("spool file {}: {e}", path.display())))?;
            let header = std::io::Cursor::new(message.trace_header.into_bytes());
            Ok(Box::new(header.chain(file)) as TextReader)
        }
    }

    fn open_text_blocking(&self, id: &str) -> Result<Box<dyn std::io::Read + Send>, QueueAccessError> {
        self.open_message(id).map(|reader| Box::new(reader) as Box<dyn std::io::Read + Send>).map_err(|e| QueueAccessError(e.to_string()))
    }

    fn submit(&self, submission: Submission) -> impl Future<Output = Result<String, QueueAccessError>> + Send {
        let handle = self.clone();
        let smtputf8 = !submission.sender.is_ascii() || submission.recipients.iter().any(|(address, _, _)| !address.is_ascii());
        let message = NewMessage {
            sender: submission.sender,
            recipients: submission.recipients,
            trace_header: String::new(),
            smtputf8,
            correlation_id: submission.correlation_id,
        };
        let file = submission.file.map(|path| crate::mail::queue::ContentFile { path, max_bytes: super::service::MAX_SEND_BYTES });
        async move {
            QueueHandle::submit_with_file(&handle, message, submission.text, file).await.map_err(|e| QueueAccessError(e.to_string()))
        }
    }

    fn arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        QueueHandle::arrivals(self)
    }
}

/// Routes messages the control core submits by the envelope rules of `[[email.routes]]`,
/// as a local, authenticated client (127.0.0.1). Routes with content criteria cannot be
/// decided before the message exists; the first route after them without content criteria
/// decides (the same fallback a provisional recipient has).
pub fn router(routes: Vec<EmailRoute>) -> Router {
    let routes = Arc::new(routes);
    Arc::new(move |sender: &str, recipient: &str| {
        let facts = EnvelopeFacts { sender, recipient, client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), authenticated: true };
        let chosen = match route_recipient(&routes, &facts) {
            RcptRouting::Routed(index) | RcptRouting::Rejected(index) => Some(index),
            RcptRouting::Provisional(candidates) => {
                candidates.into_iter().find(|&index| routes.get(index).is_some_and(|r| !r.matcher.has_content_criteria()))
            }
            RcptRouting::NoRoute => None,
        };
        chosen.and_then(|index| routes.get(index)).map(|route| (route.name.clone(), route.action.clone()))
    })
}
