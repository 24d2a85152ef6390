//! The durable mail queue: what "250 Ok: queued as ..." promises.
//!
//! # Who writes what
//!
//! - **Shards** write the message content: each accepted message gets a spool file
//!   `<data_dir>/mail/queue/spool/<id>`, written with glommio file I/O as `DATA`/`BDAT` chunks
//!   arrive (never the whole message in memory), and not synced by the shard. The shard
//!   then sends the message's record (envelope, per-recipient route and action, trace header)
//!   and the file's digest (length, CRC32: [`SpoolDigest`]) to the queue writer ([`ShardQueueLink::enqueue`]) and waits for the answer
//!   (`ToShard::MailQueued`, matched by ticket; one mailbox message per shard per commit) before it sends `250`.
//! - **The queue writer** ([`writer`], one thread, started by the runtime when `[email]` is
//!   configured) is the only writer of the journal. It takes every request waiting on its
//!   channel — enqueues from all shards, outcomes from the delivery engine — appends their
//!   records to the journal in one `write` — for shard messages led by an `unsynced` record
//!   listing their digests — then makes it all durable with **one `syncfs`** of the spool
//!   file system (the spool files' data, the folder and the journal in one file-system
//!   commit, instead of one commit per spool file, one for the folder and one for the
//!   journal), and only then makes the batch visible (in-memory state) and answers every
//!   request of the batch (group commit). A batch of only delivery outcomes (or of control
//!   core submissions, whose files are synced when written) `fdatasync`s the journal instead
//!   (after an fsync of the spool folder for new files). Shards never wait on a disk sync.
//!   `syncfs` also writes back whatever else is dirty on that file system: keep `data_dir`
//!   on a file system of its own (as for Postfix's queue) when other heavy writers share
//!   the disk.
//! - **The delivery engine and the admin socket** use a [`QueueHandle`] (cloneable, `Send`,
//!   usable from the control core's tokio runtime): reads come from the in-memory state, every
//!   change goes through the writer and is durable when the returned future resolves — except
//!   a batch of only deferrals/postponements, which is written but synced with the next batch
//!   that needs a sync (losing it in a crash only makes those recipients due again sooner).
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
//! A journal file starts with the 8-byte magic `SGMQJ002` (format 2), followed by records:
//!
//! ```text
//! +-----------+------------------+-------------------------------------------+
//! | len: u32  | crc: u32 LE      | payload: len bytes                        |
//! | LE        | CRC32 of the len | one `JournalRecord`, binary               |
//! |           | field + payload  | (tag byte, varints, length-prefixed UTF-8)|
//! +-----------+------------------+-------------------------------------------+
//! ```
//!
//! The payload encoding is specified in [`codec`]. Record kinds ([`journal::JournalRecord`]):
//! `enqueued` (a whole [`QueuedMessage`], also used by compaction to write the current state
//! of a message), `outcomes` (per-recipient delivery outcomes), `retry_now`, `removed` (the
//! message left the queue: all recipients final, or deleted; carries the final states for
//! status queries), `finished` (compaction's copy of a removed message's final states) and
//! `closed` (the clean-shutdown marker, see below).
//!
//! Format 1 (magic `SGMQJ001`, written before this version: the same frame with a JSON
//! payload and a CRC of the payload only) is still read: the first start of this version
//! replays it once (about 5 µs per record) and compacts it into a format 2 journal
//! (`journal-<seq+1>.log`) before anything is appended, so upgrading needs no manual step
//! and downgrading is not supported.
//!
//! # Crash safety and recovery
//!
//! - A message is acknowledged only after the `syncfs` that covers its spool file, the spool
//!   folder and its `enqueued` record returned (group commit); only then does the shard send
//!   `250`. Because the record may reach the disk before the file's data (they are synced
//!   together), the batch's `unsynced` record lists each file's length and CRC32; the next
//!   batch starts with a `synced` record once the sync returned. At start, the digests of
//!   an `unsynced` record not followed by `synced` (at most the last batch before a crash)
//!   are checked against the files: a message whose file is short or holds other bytes was
//!   never acknowledged and is dropped (`removed` journaled, file deleted).
//! - A delivery outcome is journaled *before* the message is removed and before its spool file
//!   is deleted, so a crash after a next hop accepted a message never delivers it again
//!   (the delivery engine records `Delivered` before it moves on).
//! - At start ([`MailQueue::open`]): the highest-numbered `journal-<seq>.log` is replayed
//!   record by record; a record whose length runs past the end or whose CRC does not match
//!   is a torn tail from a crash during an append: the file is truncated there and replay
//!   stops (records after it were never acknowledged). Older journals and `.tmp` files are
//!   deleted. Spool files without a committed `enqueued` record (a crash between the shard's
//!   spool write and the commit, or an aborted transfer) are deleted; a record whose spool
//!   file is missing is dropped with an error in the log. The spool folder is listed on a
//!   second thread while the journal is replayed.
//! - Clean shutdown: when every shard has drained (each deletes the spool files of messages
//!   it was still receiving and never handed over) and no control-core submission is half
//!   done, the writer fsyncs the spool folder and appends a `closed` record as the journal's
//!   last. A start that finds it (a fixed 17-byte frame at the end of the file) knows every
//!   spool file belongs to a committed message and skips listing the spool folder; it cuts
//!   the marker off (truncate + fsync) before the shards start, so a crash later in that run
//!   is never mistaken for a clean stop. A spool file deleted by hand while the appliance was
//!   stopped is then only noticed when its message is delivered.
//! - Replay reads the journal in 4 MiB chunks and decodes each record from the buffer (one
//!   allocation per string, none per frame); the index is keyed by the queue id as a number
//!   and the due schedules are built once, sorted, at the end.
//! - Compaction keeps recovery fast for large queues: when the journal grows past
//!   [`COMPACT_MIN_BYTES`] and four times the size of the live state, the writer writes the
//!   live state (one `enqueued` record per queued message, one `finished` per remembered
//!   removed message) to `journal-<seq+1>.log.tmp`, fsyncs it, renames it into place, fsyncs
//!   the folder and deletes the old journal. At start the same is done when the replayed
//!   journal holds more than twice as many records as live entries (and always for a format
//!   1 journal). Replay reads each record once, so start-up time is linear in the journal,
//!   which compaction keeps linear in the live queue.
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

pub mod codec;
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

pub use journal::SpoolDigest;
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

/// A queue id as a number: the 16 hex digits read as a `u64` (queue ids are exactly that, see
/// [`make_queue_id`]). The in-memory index is keyed by it: no string per index entry.
pub(crate) fn id_key(id: &str) -> Option<u64> {
    if is_queue_id(id) {
        u64::from_str_radix(id, 16).ok()
    } else {
        None
    }
}

/// Hashes [`id_key`]s: a 64-bit finaliser (splitmix64), since queue ids share their low byte
/// (the shard) and count up. The keys are made by the appliance, never by a client.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A map keyed by [`id_key`].
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The in-memory queue, as committed to the journal. Only the writer mutates it, after a
/// batch is durable (and recovery, before the writer starts). Keyed by [`id_key`].
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) messages: IdMap<QueuedMessage>,
    /// (due ms, key) of messages with pending recipients, per class; leases move entries.
    pub(crate) schedule_priority: BTreeSet<(u64, u64)>,
    pub(crate) schedule_normal: BTreeSet<(u64, u64)>,
    /// In-memory due time per scheduled key (equals the journaled one unless leased).
    pub(crate) scheduled_at: IdMap<u64>,
    pub(crate) finished: IdMap<FinishedMessage>,
    pub(crate) finished_order: VecDeque<u64>,
}

impl QueueState {
    /// An empty state with room for about `messages` messages (recovery sizes it from the
    /// journal's length so the index is not rehashed a dozen times).
    pub(crate) fn with_capacity(messages: usize) -> QueueState {
        QueueState { messages: IdMap::with_capacity_and_hasher(messages, Default::default()), ..QueueState::default() }
    }

    /// The queued message `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&QueuedMessage> {
        id_key(id).and_then(|key| self.messages.get(&key))
    }

    /// The remembered final states of `id`.
    pub(crate) fn finished(&self, id: &str) -> Option<&FinishedMessage> {
        id_key(id).and_then(|key| self.finished.get(&key))
    }

    fn schedule_of(&mut self, class: QueueClass) -> &mut BTreeSet<(u64, u64)> {
        match class {
            QueueClass::Priority => &mut self.schedule_priority,
            QueueClass::Normal => &mut self.schedule_normal,
        }
    }

    fn unschedule(&mut self, key: u64, class: QueueClass) {
        if let Some(at) = self.scheduled_at.remove(&key) {
            self.schedule_of(class).remove(&(at, key));
        }
    }

    fn schedule(&mut self, key: u64, class: QueueClass, at: u64) {
        self.unschedule(key, class);
        self.scheduled_at.insert(key, at);
        self.schedule_of(class).insert((at, key));
    }

    /// Re-schedules message `key` from its recipients' states (after a change in place).
    fn reschedule(&mut self, key: u64) {
        let Some(message) = self.messages.get(&key) else { return };
        let (class, due) = (message.class(), message.next_due_ms());
        match due {
            Some(at) => self.schedule(key, class, at),
            None => self.unschedule(key, class),
        }
    }

    /// Inserts or replaces a message (and its schedule entry). Messages whose id is not a
    /// queue id are never committed (the writer refuses them), so are ignored here.
    pub(crate) fn put(&mut self, message: QueuedMessage) {
        let Some(key) = id_key(&message.id) else { return };
        self.messages.insert(key, message);
        self.reschedule(key);
    }

    /// Inserts or replaces a message without touching the schedules (recovery, which calls
    /// [`QueueState::rebuild_schedules`] once at the end). `false` for a bad id.
    pub(crate) fn load(&mut self, message: QueuedMessage) -> bool {
        let Some(key) = id_key(&message.id) else { return false };
        self.messages.insert(key, message);
        true
    }

    /// Changes message `id` in place; `schedule` re-derives its schedule entry afterwards
    /// (recovery passes `false` and rebuilds every schedule at the end).
    pub(crate) fn modify(&mut self, id: &str, schedule: bool, change: impl FnOnce(&mut QueuedMessage)) {
        let Some(key) = id_key(id) else { return };
        let Some(message) = self.messages.get_mut(&key) else { return };
        change(message);
        if schedule {
            self.reschedule(key);
        }
    }

    /// Builds both schedules from the messages in one pass (sorted bulk build).
    pub(crate) fn rebuild_schedules(&mut self) {
        let mut priority = Vec::new();
        let mut normal = Vec::with_capacity(self.messages.len());
        self.scheduled_at = IdMap::with_capacity_and_hasher(self.messages.len(), Default::default());
        for (key, message) in &self.messages {
            let Some(at) = message.next_due_ms() else { continue };
            self.scheduled_at.insert(*key, at);
            match message.class() {
                QueueClass::Priority => priority.push((at, *key)),
                QueueClass::Normal => normal.push((at, *key)),
            }
        }
        priority.sort_unstable();
        normal.sort_unstable();
        self.schedule_priority = priority.into_iter().collect();
        self.schedule_normal = normal.into_iter().collect();
    }

    /// Removes a message, remembering its final states.
    pub(crate) fn remove(&mut self, id: &str, finished: FinishedMessage, schedule: bool) {
        if let Some(key) = id_key(id) {
            if let Some(message) = self.messages.remove(&key) {
                if schedule {
                    self.unschedule(key, message.class());
                }
            }
        }
        self.remember(finished);
    }

    pub(crate) fn remember(&mut self, finished: FinishedMessage) {
        let Some(key) = id_key(&finished.id) else { return };
        if self.finished.insert(key, finished).is_none() {
            self.finished_order.push_back(key);
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
            let keys: Vec<u64> = self
                .schedule_of(class)
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(limit - out.len())
                .map(|(_, key)| *key)
                .collect();
            for key in keys {
                self.schedule(key, class, now + lease.as_millis() as u64);
                if let Some(message) = self.messages.get(&key) {
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
    /// [`QueueHandle::submit`]s between their spool file and their commit (or cleanup); a
    /// submission abandoned half way leaves it above zero for good (its spool file may be an
    /// orphan: the shutdown is then not clean).
    pub(crate) submitting: AtomicU64,
    /// The writer has stopped taking submissions (it is about to write the clean-shutdown
    /// marker); checked by `submit` after counting itself in `submitting`.
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

/// Counts a submission in [`Shared::submitting`] until it is disarmed (committed or cleaned
/// up); dropped armed (the future was cancelled half way), it stays counted.
struct Submitting<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl<'a> Submitting<'a> {
    fn enter(shared: &'a Shared) -> Result<Submitting<'a>, QueueError> {
        shared.submitting.fetch_add(1, Ordering::SeqCst);
        let guard = Submitting { shared, armed: true };
        if shared.closed.load(Ordering::SeqCst) {
            // Not started: nothing to clean up.
            guard.done();
            return Err(QueueError::Stopped);
        }
        Ok(guard)
    }

    fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for Submitting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            self.shared.submitting.fetch_sub(1, Ordering::SeqCst);
        }
    }
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
        self.read().get(id).cloned()
    }

    /// A message's status: still queued, or finished (delivered / bounced / deleted) if it
    /// left the queue recently enough to be remembered.
    pub fn status(&self, id: &str) -> Option<MessageStatus> {
        let state = self.read();
        if let Some(message) = state.get(id) {
            return Some(MessageStatus::Queued(message.clone()));
        }
        state.finished(id).cloned().map(MessageStatus::Finished)
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
        let first = |set: &BTreeSet<(u64, u64)>| set.iter().next().map(|(at, _)| *at);
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
    /// before returning (only deferrals and postponements alone are written without waiting
    /// for a sync: see the module doc). Outcomes for recipients already final are ignored (idempotent).
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
        self.submit_with_file(message, content, None).await
    }

    /// Like [`QueueHandle::submit`], with the content `head` followed by the content of
    /// `file`, which is copied into the spool file by the kernel (`copy_file_range`) or in
    /// small steps, never read whole into memory.
    pub async fn submit_with_file(&self, message: NewMessage, head: Vec<u8>, file: Option<ContentFile>) -> Result<String, QueueError> {
        if message.recipients.is_empty() {
            return Err(QueueError::Invalid("a message needs at least one recipient".into()));
        }
        let submitting = Submitting::enter(&self.shared)?;
        let counter = self.shared.local_ids.fetch_add(1, Ordering::Relaxed);
        let id = make_queue_id(counter, 0xFF);
        let path = self.shared.spool_dir.join(&id);
        let written = tokio::task::spawn_blocking({
            let path = path.clone();
            move || write_synced(&path, &head, file.as_ref())
        })
        .await;
        let size = match written.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(size) => size,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                submitting.done();
                return Err(QueueError::Storage(e));
            }
        };
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
        let request = WriterRequest::Enqueue { message: Box::new(queued), unsynced: None, reply: writer::EnqueueReply::Local(reply) };
        if self.shared.requests.send(request).is_err() {
            let _ = std::fs::remove_file(&path);
            submitting.done();
            return Err(QueueError::Stopped);
        }
        // Handed over: the writer commits it or deletes its spool file.
        submitting.done();
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

/// A file whose content is appended to a submitted message ([`QueueHandle::submit_with_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFile {
    /// The file (read by the appliance).
    pub path: PathBuf,
    /// More than this many bytes refuses the message (the file may grow after a size check).
    pub max_bytes: u64,
}

/// Writes `head` then the content of `file` to a new file at `path`, `fdatasync`s it and
/// returns its size.
fn write_synced(path: &Path, head: &[u8], file: Option<&ContentFile>) -> std::io::Result<u64> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    out.write_all(head)?;
    let mut size = head.len() as u64;
    if let Some(file) = file {
        let input = std::fs::File::open(&file.path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.path.display())))?;
        // `io::copy` between two files is `copy_file_range` on Linux: no user-space buffer.
        let copied = std::io::copy(&mut input.take(file.max_bytes.saturating_add(1)), &mut out)?;
        if copied > file.max_bytes {
            return Err(std::io::Error::other(format!("{} is larger than {} bytes", file.path.display(), file.max_bytes)));
        }
        size += copied;
    }
    out.sync_data()?;
    Ok(size)
}

#[cfg(test)]
mod tests;
