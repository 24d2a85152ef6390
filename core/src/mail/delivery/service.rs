//! Mail on the control core: the delivery engine as a service, and the admin operations
//! behind `shardgate queue|suppression|send`.
//!
//! Owns: starting the delivery engine on the control core's tokio runtime with the queue's
//! handle, applying a reloaded config (routes for bounces and `send`, templates), the
//! delivery counters for `shardgate stats`, and answering the mail admin requests (each on
//! the tokio runtime, so a slow disk never blocks the control loop).
//! Does not own: the admin socket's transport (`runtime::admin`), or the queue and its
//! writer thread (the control core holds those).

use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::json;

use super::{queue_link, DeliveryEngine, DeliveryStats};
use crate::config::{Config, MailTemplate};
use crate::mail::queue::{now_ms, MessageStatus, QueueHandle, RecipientState};
use crate::runtime::admin::{AdminRequest, AdminResponse};
use crate::runtime::control_async::ControlAsync;

/// Longest message `shardgate send` accepts from a file (the SMTP default `max_message_size`).
pub const MAX_SEND_BYTES: u64 = 50 * 1024 * 1024;

/// The control core's mail service.
pub struct MailService {
    handle: QueueHandle,
    engine: Arc<DeliveryEngine<QueueHandle>>,
    templates: Arc<RwLock<Vec<MailTemplate>>>,
    hostname: String,
}

impl std::fmt::Debug for MailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailService").field("hostname", &self.hostname).finish()
    }
}

/// One recipient's state in plain words (`shardgate queue status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientStatus {
    /// The address.
    pub address: String,
    /// `queued`, `deferred`, `delivered`, `bounced` or `deleted`.
    pub status: &'static str,
    /// The last error (deferred), the next hop's reply (delivered) or the refusal (bounced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds until the next attempt (queued, deferred).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_in: Option<u64>,
    /// Attempts made (still queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A message's state in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Queue id.
    pub id: String,
    /// Overall: `queued`, `deferred`, `delivered`, `bounced`, `partly bounced` or `deleted`.
    pub status: &'static str,
    /// Per recipient.
    pub recipients: Vec<RecipientStatus>,
}

/// The plain-words status of a message as the queue knows it.
pub fn status_report(id: &str, status: &MessageStatus, now_ms: u64) -> StatusReport {
    let recipients: Vec<RecipientStatus> = match status {
        MessageStatus::Queued(message) => message
            .recipients
            .iter()
            .map(|r| match &r.state {
                RecipientState::Pending => RecipientStatus {
                    address: r.address.clone(),
                    status: if r.last_error.is_some() { "deferred" } else { "queued" },
                    detail: r.last_error.clone(),
                    next_attempt_in: Some(r.next_attempt_ms.saturating_sub(now_ms) / 1000),
                    attempts: Some(r.attempts),
                },
                RecipientState::Delivered { reply } => final_state(&r.address, "delivered", reply),
                RecipientState::Failed { reply } => final_state(&r.address, "bounced", reply),
            })
            .collect(),
        MessageStatus::Finished(finished) => finished
            .recipients
            .iter()
            .map(|(address, state)| match state {
                RecipientState::Delivered { reply } => final_state(address, "delivered", reply),
                RecipientState::Failed { reply } => final_state(address, "bounced", reply),
                RecipientState::Pending => RecipientStatus { address: address.clone(), status: "deleted", detail: None, next_attempt_in: None, attempts: None },
            })
            .collect(),
    };
    let all = |s: &str| recipients.iter().all(|r| r.status == s);
    let any = |s: &str| recipients.iter().any(|r| r.status == s);
    let overall = if matches!(status, MessageStatus::Finished(f) if f.deleted) {
        "deleted"
    } else if any("deferred") {
        "deferred"
    } else if any("queued") {
        "queued"
    } else if all("delivered") {
        "delivered"
    } else if all("bounced") {
        "bounced"
    } else {
        "partly bounced"
    };
    StatusReport { id: id.to_string(), status: overall, recipients }
}

fn final_state(address: &str, status: &'static str, reply: &str) -> RecipientStatus {
    RecipientStatus { address: address.to_string(), status, detail: Some(reply.to_string()), next_attempt_in: None, attempts: None }
}

impl MailService {
    /// Starts delivery for the queue behind `handle` (recovered, writer started) with
    /// `config`'s `[email]`; `None` without an `[email]` section.
    pub fn start(handle: QueueHandle, config: &Config, runtime: &ControlAsync) -> Option<MailService> {
        let email = config.email.as_ref()?;
        let engine = DeliveryEngine::start(
            runtime.handle(),
            handle.clone(),
            email.delivery.clone(),
            &email.server.hostname,
            config.runtime.data_dir.clone(),
            queue_link::router(email.routes.clone()),
        );
        Some(MailService {
            handle,
            engine: Arc::new(engine),
            templates: Arc::new(RwLock::new(config.mail_templates.clone())),
            hostname: email.server.hostname.clone(),
        })
    }

    /// Uses a reloaded config's routes, templates, `[email.delivery.limits]` and `hold`. (Other
    /// delivery settings such as the resolver or concurrency take a restart.)
    pub fn reconfigure(&self, config: &Config) {
        if let Some(email) = &config.email {
            self.engine.set_router(queue_link::router(email.routes.clone()));
            self.engine.set_limits(&email.delivery.limits, &email.delivery.source_ips);
            self.engine.set_hold(email.delivery.hold);
        }
        *self.templates.write().unwrap_or_else(|p| p.into_inner()) = config.mail_templates.clone();
    }

    /// Signs `process`/`forward` deliveries with `table` (DKIM hook, `crate::mail::dkim`).
    pub fn set_dkim(&self, table: Option<Arc<crate::mail::dkim::service::SignerTable>>) {
        self.engine.set_dkim(table);
    }

    /// Stops delivery gracefully (see [`DeliveryEngine::stop`]); before the queue writer.
    pub fn stop(&self) {
        self.engine.stop(std::time::Duration::from_secs(10));
    }

    /// Delivery counters.
    pub fn stats(&self) -> DeliveryStats {
        self.engine.stats()
    }

    /// Answers a mail admin request on the tokio runtime.
    pub fn answer(&self, request: AdminRequest, reply: crossbeam_channel::Sender<AdminResponse>, runtime: &ControlAsync) {
        let handle = self.handle.clone();
        let engine = self.engine.clone();
        let templates = self.templates.clone();
        let hostname = self.hostname.clone();
        runtime.spawn(async move {
            let response = match answer(request, &handle, &engine, &templates, &hostname).await {
                Ok(value) => AdminResponse { ok: true, mail: Some(value), ..Default::default() },
                Err(message) => AdminResponse::error(message),
            };
            let _ = reply.send(response);
        });
    }
}

fn message_view(message: &crate::mail::queue::QueuedMessage) -> serde_json::Value {
    let mut value = serde_json::to_value(message).unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("trace_header");
    }
    value
}

async fn answer(
    request: AdminRequest,
    handle: &QueueHandle,
    engine: &DeliveryEngine<QueueHandle>,
    templates: &RwLock<Vec<MailTemplate>>,
    hostname: &str,
) -> Result<serde_json::Value, String> {
    match request {
        AdminRequest::QueueList { limit } => {
            let now = now_ms();
            let all = handle.list();
            let list: Vec<serde_json::Value> = all
                .iter()
                .take(limit.unwrap_or(usize::MAX))
                .map(|m| {
                    let report = status_report(&m.id, &MessageStatus::Queued(m.clone()), now);
                    json!({
                        "id": m.id,
                        "sender": m.sender,
                        "size": m.size,
                        "age_secs": now.saturating_sub(m.received_at_ms) / 1000,
                        "status": report.status,
                        "recipients": m.recipients.iter().map(|r| r.address.clone()).collect::<Vec<_>>(),
                        "correlation_id": m.correlation_id,
                    })
                })
                .collect();
            Ok(json!({ "messages": list, "total": all.len() }))
        }
        AdminRequest::QueueShow { id } => match handle.get(&id) {
            Some(message) => Ok(message_view(&message)),
            None => Err(format!("no queued message {id}")),
        },
        AdminRequest::QueueStatus { id } => match handle.status(&id) {
            Some(status) => serde_json::to_value(status_report(&id, &status, now_ms())).map_err(|e| e.to_string()),
            None => Err(format!("unknown queue id {id} (never queued here, or finished too long ago)")),
        },
        AdminRequest::QueueRetry { id: Some(id) } => {
            handle.retry_now(&id).await.map(|()| json!({ "retrying": [id] })).map_err(|e| e.to_string())
        }
        AdminRequest::QueueRetry { id: None } => {
            // Concurrently, so the queue writer commits them in a few group commits.
            let tasks: Vec<_> = handle
                .list()
                .into_iter()
                .filter(|m| !m.is_final())
                .map(|m| {
                    let handle = handle.clone();
                    tokio::spawn(async move { handle.retry_now(&m.id).await.map(|()| m.id) })
                })
                .collect();
            let mut retrying = Vec::new();
            for task in tasks {
                if let Ok(Ok(id)) = task.await {
                    retrying.push(id);
                }
            }
            Ok(json!({ "retrying": retrying }))
        }
        AdminRequest::QueueDelete { id } => handle.delete(&id).await.map(|()| json!({ "deleted": id })).map_err(|e| e.to_string()),
        AdminRequest::SuppressionList => Ok(json!({ "suppressed": engine.suppressed() })),
        AdminRequest::SuppressionRemove { address } => match engine.unsuppress(&address) {
            Ok(true) => Ok(json!({ "removed": address })),
            Ok(false) => Err(format!("{address} is not on the suppression list")),
            Err(e) => Err(format!("cannot write the suppression list: {e}")),
        },
        AdminRequest::Send { from, to, template, vars, file } => {
            if to.is_empty() {
                return Err("give at least one --to".into());
            }
            for address in std::iter::once(&from).chain(&to) {
                if !address.is_empty() && shardgate_smtp::Mailbox::parse(address).is_err() {
                    return Err(format!("`{address}` is not an address like user@example.com"));
                }
            }
            let (text, file) = match (template, file) {
                (Some(name), None) => {
                    let templates = templates.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let template = crate::mail::template::find(&templates, &name).map_err(|e| e.to_string())?;
                    let text = crate::mail::template::render(template, &vars, &from, &to, hostname).map_err(|e| e.to_string())?;
                    (crate::mail::template::complete_headers(text, hostname), None)
                }
                // A message file is streamed into the spool: only its header block is read
                // here, to add a missing Date / Message-ID in front of it.
                (None, Some(path)) => (submission_headers(&path, hostname).await?, Some(path)),
                _ => return Err("give either a template or a message file".into()),
            };
            let id = engine.submit(&from, &to, text, file).await?;
            Ok(json!({ "queued": id }))
        }
        other => Err(format!("not a mail request: {other:?}")),
    }
}

/// How much of a message file is read to look at its header block.
const HEADER_SAMPLE: u64 = 256 * 1024;

/// Checks a message file's size and returns the header lines it lacks (read from its first
/// [`HEADER_SAMPLE`] bytes only; the file itself is copied into the spool later, in the
/// kernel, never held whole in memory).
async fn submission_headers(path: &Path, hostname: &str) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let size = tokio::fs::metadata(path).await.map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size > MAX_SEND_BYTES {
        return Err(format!("{} is {size} bytes; at most {MAX_SEND_BYTES} can be sent", path.display()));
    }
    let file = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let mut start = Vec::new();
    file.take(HEADER_SAMPLE).read_to_end(&mut start).await.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(crate::mail::template::missing_headers(&start, hostname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmailAction;
    use crate::mail::queue::{FinishedMessage, QueuedMessage, QueuedRecipient};

    fn recipient(address: &str, state: RecipientState, last_error: Option<&str>) -> QueuedRecipient {
        QueuedRecipient {
            address: address.into(),
            route: "r".into(),
            action: EmailAction::Deliver,
            state,
            attempts: u32::from(last_error.is_some()),
            next_attempt_ms: 61_000,
            last_error: last_error.map(Into::into),
        }
    }

    fn queued(recipients: Vec<QueuedRecipient>) -> MessageStatus {
        MessageStatus::Queued(QueuedMessage {
            id: "Q".into(),
            received_at_ms: 0,
            sender: "s@x".into(),
            recipients,
            size: 1,
            trace_header: String::new(),
            helo: "h".into(),
            client_ip: "127.0.0.1".parse().expect("ip"),
            authenticated_user: None,
            tls: false,
            smtputf8: false,
            body_8bit: false,
            correlation_id: None,
        })
    }

    #[test]
    fn status_words_follow_the_recipients() {
        let fresh = status_report("Q", &queued(vec![recipient("a@x", RecipientState::Pending, None)]), 1_000);
        assert_eq!((fresh.status, fresh.recipients[0].next_attempt_in), ("queued", Some(60)));
        let deferred = status_report(
            "Q",
            &queued(vec![
                recipient("a@x", RecipientState::Delivered { reply: "250 ok".into() }, None),
                recipient("b@x", RecipientState::Pending, Some("451 later")),
            ]),
            0,
        );
        assert_eq!(deferred.status, "deferred");
        assert_eq!(deferred.recipients[1].detail.as_deref(), Some("451 later"));
        let finished = |recipients: Vec<(String, RecipientState)>, deleted| {
            MessageStatus::Finished(FinishedMessage { id: "Q".into(), sender: "s@x".into(), finished_at_ms: 0, deleted, recipients })
        };
        let delivered = RecipientState::Delivered { reply: "250 ok".into() };
        let failed = RecipientState::Failed { reply: "550 no".into() };
        assert_eq!(status_report("Q", &finished(vec![("a@x".into(), delivered.clone())], false), 0).status, "delivered");
        assert_eq!(status_report("Q", &finished(vec![("a@x".into(), failed.clone())], false), 0).status, "bounced");
        assert_eq!(status_report("Q", &finished(vec![("a@x".into(), delivered), ("b@x".into(), failed)], false), 0).status, "partly bounced");
        assert_eq!(status_report("Q", &finished(vec![("a@x".into(), RecipientState::Pending)], true), 0).status, "deleted");
    }
}
