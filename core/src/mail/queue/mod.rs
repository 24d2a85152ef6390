//! The durable mail queue: what "250 Ok: queued as ..." promises.
//!
//! # Who writes what
//!
//! - **Shards** write the message content: each accepted message gets a spool file
//!   `<data_dir>/mail/queue/spool/<id>`, written with glommio file I/O as `DATA`/`BDAT` chunks
//!   arrive (never the whole message in memory), then `fdatasync`ed by the shard. The shard
//!   then sends the message's record (envelope, per-recipient route and action, trace header)
//!   to the queue writer ([`ShardQueueLink::enqueue`]) and waits for the answer
//!   (`ToShard::MailQueued`, matched by ticket; one mailbox message per shard per commit) before it sends `250`.
//! - **The queue writer** ([`writer`], one thread, started by the runtime when `[email]` is
//!   configured) is the only writer of the journal. It takes every request waiting on its
//!   channel — enqueues from all shards, outcomes from the delivery engine — appends their
//!   records to the journal in one `write`, fsyncs the spool folder once if the batch added
//!   spool files, `fdatasync`s the journal once, and only then makes the batch visible
//!   (in-memory state) and answers every request of the batch (group commit). Shards never
//!   wait on a disk sync themselves except their own spool file's.
//! - **The delivery engine and the admin socket** use a [`QueueHandle`] (cloneable, `Send`,
//!   usable from the control core's tokio runtime): reads come from the in-memory state, every
//!   change goes through the writer and is durable when the returned future resolves.
//!
//! # On-disk format
//!
//! ```text
//! <data_dir>/mail/queue/
//!   spool/<id>              message content as received (after dot-unstuffing), no trace header
//!   journal-<seq>.log       the journal in force (the highest complete <seq>)
//!   journal-<seq>.log.tmp   a compaction in progress (deleted at start)
//! ```
//!
//! A journal file starts with the 8-byte magic `SGMQJ001`, followed by records:
//!
//! ```text
//! +-----------+-----------+-------------------------------+
//! | len: u32  | crc: u32  | payload: len bytes            |
//! | LE        | LE, CRC32 | JSON of one `JournalRecord`   |
//! |           | of payload|                               |
//! +-----------+-----------+-------------------------------+
//! ```
//!
//! Record kinds ([`journal::JournalRecord`], externally tagged: `{"enqueued":{...}}`): `enqueued` (a whole [`QueuedMessage`], also
//! used by compaction to write the current state of a message), `outcomes` (per-recipient
//! delivery outcomes), `retry_now`, `removed` (the message left the queue: all recipients
//! final, or deleted; carries the final states for status queries), `finished` (compaction's
//! copy of a removed message's final states).
//!
//! # Crash safety and recovery
//!
//! - A message is acknowledged only after its spool file was `fdatasync`ed (by the shard), the
//!   spool folder fsynced and its `enqueued` record `fdatasync`ed (by the writer).
//! - A delivery outcome is journaled *before* the message is removed and before its spool file
//!   is deleted, so a crash after a next hop accepted a message never delivers it again
//!   (the delivery engine records `Delivered` before it moves on).
//! - At start ([`MailQueue::open`]): the highest-numbered `journal-<seq>.log` is replayed
//!   record by record; a record whose length runs past the end or whose CRC does not match
//!   is a torn tail from a crash during an append: the file is truncated there and replay
//!   stops (records after it were never acknowledged). Older journals and `.tmp` files are
//!   deleted. Spool files without a committed `enqueued` record (a crash between the shard's
//!   spool write and the commit, or an aborted transfer) are deleted; a record whose spool
//!   file is missing is dropped with an error in the log.
//! - Compaction keeps recovery fast for large queues: when the journal grows past
//!   [`COMPACT_MIN_BYTES`] and four times the size of the live state, the writer writes the
//!   live state (one `enqueued` record per queued message, one `finished` per remembered
//!   removed message) to `journal-<seq+1>.log.tmp`, fsyncs it, renames it into place, fsyncs
//!   the folder and deletes the old journal. Replay reads each record once, so start-up time
//!   is linear in the live queue (about a second per million messages).
//!
//! # The API for the delivery engine
//!
//! [`QueueHandle::due`] hands out messages with recipients whose next attempt is due
//! (priority class first), leasing them in memory so the next call does not return them again
//! while they are being delivered; [`QueueHandle::record`] journals per-recipient outcomes
//! (`Delivered` / `Deferred` / `Failed`, or `Postponed` by a sending limit: not an
//! attempt) and removes the message once every recipient is final; [`QueueHandle::retry_now`], [`QueueHandle::delete`], [`QueueHandle::submit`] (a
//! message from the control core: bounces, `shardgate send`), [`QueueHandle::arrivals`]
//! (a watch that ticks when messages arrive) and [`QueueHandle::open_message`] (trace header
//! plus spool content as one reader) complete it.

pub mod journal;
pub mod writer;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{EmailAction, QueueClass};

pub use writer::{MailQueue, ShardQueueLink, WriterRequest};

/// The journal grows at least this large before it is compacted.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// Removed messages whose final states are kept for status queries.
pub const FINISHED_KEPT: usize = 10_000;

/// Milliseconds since the Unix epoch, the queue's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A queue id: 16 upper-case hex digits, unique without coordination: a per-shard counter that
/// starts at the shard's start time in microseconds (so ids grow across restarts), then the
/// shard index. The control core's own messages use shard index 0xFF.
pub fn make_queue_id(counter: u64, shard: u8) -> String {
    format!("{:014X}{:02X}", counter & 0x00FF_FFFF_FFFF_FFFF, shard)
}

/// Whether `id` has the shape of a queue id (checked before it is used in a path).
pub fn is_queue_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
}

/// The starting value of a queue id counter: now in microseconds.
pub fn queue_id_counter_start() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1)
}

/// One queued message: everything but its content (that is the spool file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The queue id (also the spool file's name).
    pub id: String,
    /// When it was accepted (ms since the epoch).
    pub received_at_ms: u64,
    /// The envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// The recipients, each with its route, action and delivery state.
    pub recipients: Vec<QueuedRecipient>,
    /// Content size in octets (the spool file's length; the trace header is extra).
    pub size: u64,
    /// The `Received:` header to put in front of the content when delivering (CRLF-ended).
    pub trace_header: String,
    /// The client's `EHLO`/`HELO` name.
    pub helo: String,
    /// The client's address (the control core's own submissions: 127.0.0.1).
    pub client_ip: IpAddr,
    /// The SASL user, if the client authenticated.
    pub authenticated_user: Option<String>,
    /// The session used TLS.
    pub tls: bool,
    /// `SMTPUTF8` was requested: the next hop must support it.
    pub smtputf8: bool,
    /// `BODY=8BITMIME` was declared.
    pub body_8bit: bool,
    /// The correlation id of the SMTP session that queued it (`crate::correlation`), or of
    /// the message a bounce reports on, or a control core id (`shardgate send`); the delivery
    /// engine logs under it. `None` in records written before it existed.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl QueuedMessage {
    /// The queue class: priority when any recipient's action is `process` with
    /// `queue = "priority"`.
    pub fn class(&self) -> QueueClass {
        let priority =
            self.recipients.iter().any(|r| matches!(r.action, EmailAction::Process { queue: QueueClass::Priority }));
        if priority {
            QueueClass::Priority
        } else {
            QueueClass::Normal
        }
    }

    /// When the earliest pending recipient is due (ms), `None` when none is pending.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.recipients.iter().filter(|r| r.state == RecipientState::Pending).map(|r| r.next_attempt_ms).min()
    }

    /// True when every recipient is delivered or failed.
    pub fn is_final(&self) -> bool {
        self.recipients.iter().all(|r| r.state != RecipientState::Pending)
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// The address as given in `RCPT TO` (without angle brackets).
    pub address: String,
    /// The email route that decided its action.
    pub route: String,
    /// What to do: forward, deliver (local Maildir) or process (MX). Never reject.
    pub action: EmailAction,
    /// Delivery state.
    pub state: RecipientState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest time of the next attempt (ms since the epoch); 0 means at once.
    pub next_attempt_ms: u64,
    /// The last temporary error, for `shardgate queue` and status queries.
    pub last_error: Option<String>,
}

/// Where a recipient stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Not delivered yet (never tried, or deferred).
    Pending,
    /// Accepted by the next hop (or stored in the Maildir) with this reply.
    Delivered {
        /// The next hop's reply (e.g. `250 2.0.0 Ok: queued as X`).
        reply: String,
    },
    /// Permanently failed with this reply (the delivery engine bounces it).
    Failed {
        /// The permanent error (e.g. `550 5.1.1 no such user`).
        reply: String,
    },
}

/// A delivery attempt's result for one recipient, given to [`QueueHandle::record`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientOutcome {
    /// The next hop accepted it: final.
    Delivered {
        /// The next hop's reply.
        reply: String,
    },
    /// A temporary failure: try again at `next_attempt_ms`.
    Deferred {
        /// What went wrong.
        error: String,
        /// When to try next (ms since the epoch).
        next_attempt_ms: u64,
    },
    /// A permanent failure: final.
    Failed {
        /// The permanent error.
        reply: String,
    },
    /// Not attempted (a sending limit of ours): try at `next_attempt_ms`. Not counted as an
    /// attempt, so it does not lengthen the retry backoff.
    Postponed {
        /// Why.
        reason: String,
        /// When to try (ms since the epoch).
        next_attempt_ms: u64,
    },
}

/// A message that left the queue, kept for status queries ([`FINISHED_KEPT`] of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedMessage {
    /// The queue id.
    pub id: String,
    /// The envelope sender.
    pub sender: String,
    /// When it left the queue (ms since the epoch).
    pub finished_at_ms: u64,
    /// Deleted by an operator (`delete`) rather than completed.
    pub deleted: bool,
    /// Each recipient's final state (deleted messages may have `pending` ones).
    pub recipients: Vec<(String, RecipientState)>,
}

/// What a status query finds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum MessageStatus {
    /// Still in the queue (see each recipient's state, attempts and last error).
    Queued(QueuedMessage),
    /// Left the queue.
    Finished(FinishedMessage),
}

/// What [`QueueHandle::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Every recipient was final: the message was removed and its spool file deleted.
    pub removed: bool,
}

/// A new message from the control core ([`QueueHandle::submit`]): bounces, `shardgate send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The envelope sender (empty for `<>`, as bounces use).
    pub sender: String,
    /// (address, route name, action) per recipient.
    pub recipients: Vec<(String, String, EmailAction)>,
    /// A trace header to prepend when delivering (may be empty).
    pub trace_header: String,
    /// `SMTPUTF8` needed.
    pub smtputf8: bool,
    /// The correlation id its delivery is logged under (a bounce: the bounced message's).
    pub correlation_id: Option<String>,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No queued message has this id.
    #[error("no queued message {0}")]
    UnknownMessage(String),
    /// A recipient index outside the message's recipients.
    #[error("message {id} has no recipient #{index}")]
    UnknownRecipient {
        /// The message.
        id: String,
        /// The index given.
        index: usize,
    },
    /// The journal or a spool file could not be written or synced: nothing was committed.
    #[error("queue storage failed: {0}")]
    Storage(String),
    /// The queue writer has stopped (the appliance is shutting down).
    #[error("the queue writer has stopped")]
    Stopped,
    /// A request was malformed (e.g. a message without recipients).
    #[error("{0}")]
    Invalid(String),
}

/// The in-memory queue, as committed to the journal. Only the writer mutates it, after a
/// batch is durable.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) messages: HashMap<String, QueuedMessage>,
    /// (due ms, id) of messages with pending recipients, per class; leases move entries.
    pub(crate) schedule_priority: BTreeSet<(u64, String)>,
    pub(crate) schedule_normal: BTreeSet<(u64, String)>,
    /// In-memory due time per scheduled id (equals the journaled one unless leased).
    pub(crate) scheduled_at: HashMap<String, u64>,
    pub(crate) finished: HashMap<String, FinishedMessage>,
    pub(crate) finished_order: VecDeque<String>,
}

impl QueueState {
    fn schedule_of(&mut self, class: QueueClass) -> &mut BTreeSet<(u64, String)> {
        match class {
            QueueClass::Priority => &mut self.schedule_priority,
            QueueClass::Normal => &mut self.schedule_normal,
        }
    }

    fn unschedule(&mut self, id: &str, class: QueueClass) {
        if let Some(at) = self.scheduled_at.remove(id) {
            self.schedule_of(class).remove(&(at, id.to_string()));
        }
    }

    fn schedule(&mut self, id: &str, class: QueueClass, at: u64) {
        self.unschedule(id, class);
        self.scheduled_at.insert(id.to_string(), at);
        self.schedule_of(class).insert((at, id.to_string()));
    }

    /// Inserts or replaces a message (and its schedule entry).
    pub(crate) fn put(&mut self, message: QueuedMessage) {
        let class = message.class();
        match message.next_due_ms() {
            Some(at) => self.schedule(&message.id, class, at),
            None => self.unschedule(&message.id, class),
        }
        self.messages.insert(message.id.clone(), message);
    }

    /// Removes a message, remembering its final states.
    pub(crate) fn remove(&mut self, id: &str, finished: FinishedMessage) {
        if let Some(message) = self.messages.remove(id) {
            self.unschedule(id, message.class());
        }
        self.remember(finished);
    }

    pub(crate) fn remember(&mut self, finished: FinishedMessage) {
        if self.finished.insert(finished.id.clone(), finished.clone()).is_none() {
            self.finished_order.push_back(finished.id);
        }
        while self.finished_order.len() > FINISHED_KEPT {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Leases up to `limit` due messages until `now + lease`.
    fn take_due(&mut self, now: u64, limit: usize, lease: Duration) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        for class in [QueueClass::Priority, QueueClass::Normal] {
            let ids: Vec<String> = self
                .schedule_of(class)
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(limit - out.len())
                .map(|(_, id)| id.clone())
                .collect();
            for id in ids {
                self.schedule(&id, class, now + lease.as_millis() as u64);
                if let Some(message) = self.messages.get(&id) {
                    out.push(message.clone());
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }
}

/// What readers and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: RwLock<QueueState>,
    pub(crate) requests: crossbeam_channel::Sender<WriterRequest>,
    pub(crate) arrivals: tokio::sync::watch::Sender<u64>,
    pub(crate) spool_dir: PathBuf,
    /// Counter for the control core's own queue ids.
    pub(crate) local_ids: AtomicU64,
}

/// The queue API for the control core (delivery engine, admin socket): cloneable, `Send`,
/// async where it waits for the journal. Reads never wait for the writer.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub(crate) shared: Arc<Shared>,
}

impl QueueHandle {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, QueueState> {
        self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many messages are queued.
    pub fn len(&self) -> usize {
        self.read().messages.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Vec<QueuedMessage> {
        let mut all: Vec<QueuedMessage> = self.read().messages.values().cloned().collect();
        all.sort_by(|a, b| (a.received_at_ms, &a.id).cmp(&(b.received_at_ms, &b.id)));
        all
    }

    /// One queued message.
    pub fn get(&self, id: &str) -> Option<QueuedMessage> {
        self.read().messages.get(id).cloned()
    }

    /// A message's status: still queued, or finished (delivered / bounced / deleted) if it
    /// left the queue recently enough to be remembered.
    pub fn status(&self, id: &str) -> Option<MessageStatus> {
        let state = self.read();
        if let Some(message) = state.messages.get(id) {
            return Some(MessageStatus::Queued(message.clone()));
        }
        state.finished.get(id).cloned().map(MessageStatus::Finished)
    }

    /// Up to `limit` messages with a recipient due at `now_ms` or earlier, priority class
    /// first, then earliest due. Each returned message is leased in memory until
    /// `now_ms + lease`: later calls do not return it again meanwhile, so a delivery in
    /// progress is not started twice. Recording an outcome ends the lease (the message is
    /// rescheduled from its recipients' states); a lease that simply runs out makes the
    /// message due again. Leases are not journaled: after a crash every pending recipient is
    /// due at its journaled time.
    pub fn due(&self, now_ms: u64, limit: usize, lease: Duration) -> Vec<QueuedMessage> {
        if limit == 0 {
            return Vec::new();
        }
        let mut state = self.shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.take_due(now_ms, limit, lease)
    }

    /// When the next message is due (ms), for the delivery engine's sleep.
    pub fn next_due_ms(&self) -> Option<u64> {
        let state = self.read();
        let first = |set: &BTreeSet<(u64, String)>| set.iter().next().map(|(at, _)| *at);
        match (first(&state.schedule_priority), first(&state.schedule_normal)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, QueueError>>) -> WriterRequest,
    ) -> Result<T, QueueError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.shared.requests.send(make(reply)).map_err(|_| QueueError::Stopped)?;
        answer.await.map_err(|_| QueueError::Stopped)?
    }

    /// Journals per-recipient outcomes `(recipient index, outcome)` of message `id`, durably,
    /// before returning. Outcomes for recipients already final are ignored (idempotent).
    /// When every recipient is final, the message is removed in the same commit (its final
    /// states kept for [`QueueHandle::status`]) and its spool file deleted afterwards.
    /// Record `Delivered` as soon as the next hop accepted — that is what prevents a second
    /// delivery after a crash.
    pub async fn record(&self, id: &str, outcomes: Vec<(usize, RecipientOutcome)>) -> Result<Recorded, QueueError> {
        let id = id.to_string();
        self.ask(|reply| WriterRequest::Outcomes { id, outcomes, reply }).await
    }

    /// Makes every pending recipient of `id` due now (journaled).
    pub async fn retry_now(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.ask(|reply| WriterRequest::RetryNow { id, reply }).await
    }

    /// Removes `id` from the queue without delivering it (journaled, spool file deleted).
    pub async fn delete(&self, id: &str) -> Result<(), QueueError> {
        let id = id.to_string();
        self.ask(|reply| WriterRequest::Delete { id, reply }).await
    }

    /// Queues a message made on the control core (a bounce, `shardgate send`): writes and
    /// syncs its spool file (on a blocking thread), commits its record, returns its queue id.
    pub async fn submit(&self, message: NewMessage, content: Vec<u8>) -> Result<String, QueueError> {
        if message.recipients.is_empty() {
            return Err(QueueError::Invalid("a message needs at least one recipient".into()));
        }
        let counter = self.shared.local_ids.fetch_add(1, Ordering::Relaxed);
        let id = make_queue_id(counter, 0xFF);
        let path = self.shared.spool_dir.join(&id);
        let size = content.len() as u64;
        tokio::task::spawn_blocking(move || write_synced(&path, &content))
            .await
            .map_err(|e| QueueError::Storage(e.to_string()))?
            .map_err(|e| QueueError::Storage(e.to_string()))?;
        let queued = QueuedMessage {
            id: id.clone(),
            received_at_ms: now_ms(),
            sender: message.sender,
            recipients: message
                .recipients
                .into_iter()
                .map(|(address, route, action)| QueuedRecipient {
                    address,
                    route,
                    action,
                    state: RecipientState::Pending,
                    attempts: 0,
                    next_attempt_ms: 0,
                    last_error: None,
                })
                .collect(),
            size,
            trace_header: message.trace_header,
            helo: "localhost".into(),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            authenticated_user: None,
            tls: false,
            smtputf8: message.smtputf8,
            body_8bit: false,
            correlation_id: message.correlation_id,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = WriterRequest::Enqueue { message: Box::new(queued), reply: writer::EnqueueReply::Local(reply) };
        self.shared.requests.send(request).map_err(|_| QueueError::Stopped)?;
        answer.await.map_err(|_| QueueError::Stopped)??;
        Ok(id)
    }

    /// A watch whose value increases whenever messages are committed to the queue (shards'
    /// and submitted ones): `changed().await` to wake the delivery engine.
    pub fn arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.arrivals.subscribe()
    }

    /// The spool file of `id` (the content as received, without the trace header).
    pub fn spool_path(&self, id: &str) -> Option<PathBuf> {
        is_queue_id(id).then(|| self.shared.spool_dir.join(id))
    }

    /// The message as it is to be delivered: its trace header, then its spool content.
    /// Blocking file I/O: call it from `spawn_blocking` or read in small steps.
    pub fn open_message(&self, id: &str) -> std::io::Result<MessageReader> {
        let Some(message) = self.get(id) else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no queued message {id}")));
        };
        let path = self.spool_path(id).ok_or_else(|| std::io::Error::other("bad queue id"))?;
        let file = std::fs::File::open(path)?;
        Ok(MessageReader { header: std::io::Cursor::new(message.trace_header.into_bytes()), content: file })
    }
}

/// Trace header then spool content, as one `Read`.
#[derive(Debug)]
pub struct MessageReader {
    header: std::io::Cursor<Vec<u8>>,
    content: std::fs::File,
}

impl Read for MessageReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.header.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        self.content.read(buf)
    }
}

/// Writes `content` to a new file at `path` and `fdatasync`s it.
fn write_synced(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(content)?;
    file.sync_data()
}

#[cfg(test)]
mod tests;
