//! The queue writer: the one thread that appends to the journal, group-committing whatever
//! is waiting (enqueues from every shard, outcomes from the delivery engine) with one fsync.
//!
//! Owns: [`MailQueue`] (opening = recovery: replay, torn-tail cut, orphan spool files removed;
//! then the writer thread), the request channel ([`WriterRequest`]), the shards' side of it
//! ([`ShardQueueLink`]) and compaction. Does not own: the record format ([`super::journal`])
//! or what shards do while they wait (`crate::smtp`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::journal::{self, JournalRecord};
use super::{
    is_queue_id, now_ms, queue_id_counter_start, FinishedMessage, QueueError, QueueHandle, QueueState, QueuedMessage,
    RecipientOutcome, RecipientState, Recorded, Shared, COMPACT_MIN_BYTES,
};
use crate::runtime::doorbell::Mailbox;
use crate::runtime::messages::ToShard;

/// Most requests committed in one batch.
const MAX_BATCH: usize = 8192;

/// Where the answer to an enqueue goes.
#[derive(Debug)]
pub enum EnqueueReply {
    /// To a shard, in its next `ToShard::MailQueued` answers (by ticket).
    Shard {
        /// The shard's index.
        shard: usize,
        /// The shard's ticket for this message.
        ticket: u64,
    },
    /// To a task on the control core.
    Local(oneshot::Sender<Result<(), QueueError>>),
}

/// A request to the queue writer.
#[derive(Debug)]
pub enum WriterRequest {
    /// Commit a new message (its spool file is already written and synced). On failure the
    /// writer deletes the spool file.
    Enqueue {
        /// The message record.
        message: Box<QueuedMessage>,
        /// Who waits.
        reply: EnqueueReply,
    },
    /// Journal outcomes (see [`QueueHandle::record`]).
    Outcomes {
        /// The message.
        id: String,
        /// (recipient index, outcome).
        outcomes: Vec<(usize, RecipientOutcome)>,
        /// Who waits.
        reply: oneshot::Sender<Result<Recorded, QueueError>>,
    },
    /// See [`QueueHandle::retry_now`].
    RetryNow {
        /// The message.
        id: String,
        /// Who waits.
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    /// See [`QueueHandle::delete`].
    Delete {
        /// The message.
        id: String,
        /// Who waits.
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    /// Commit what is pending, then end the thread.
    Stop,
}

/// A shard's way into the queue: where to write spool files and where to send records.
/// Cheap to clone; sent to the shards in their config snapshot.
#[derive(Debug, Clone)]
pub struct ShardQueueLink {
    requests: Sender<WriterRequest>,
    spool_dir: Arc<Path>,
}

impl ShardQueueLink {
    /// The spool file for queue id `id`.
    pub fn spool_path(&self, id: &str) -> PathBuf {
        self.spool_dir.join(id)
    }

    /// Hands a message whose spool file is written and synced to the writer; the answer comes
    /// back to `shard` in `ToShard::MailQueued` under `ticket`. `false` when the writer has
    /// stopped (no answer will come: reply 451 at once).
    pub fn enqueue(&self, shard: usize, ticket: u64, message: QueuedMessage) -> bool {
        let request = WriterRequest::Enqueue { message: Box::new(message), reply: EnqueueReply::Shard { shard, ticket } };
        self.requests.send(request).is_ok()
    }
}

/// The durable queue as the control core owns it: recovered at [`MailQueue::open`], written
/// by its thread once [`MailQueue::start`] ran.
#[derive(Debug)]
pub struct MailQueue {
    handle: QueueHandle,
    link: ShardQueueLink,
    pending: Option<(Receiver<WriterRequest>, File, u64, u64)>,
    dir: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What recovery found, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Messages in the queue.
    pub messages: usize,
    /// Journal records replayed.
    pub records: u64,
    /// A torn tail was cut off the journal.
    pub truncated_tail: bool,
    /// Spool files without a committed record, deleted.
    pub orphan_spool_files: usize,
    /// Records whose spool file was missing, dropped.
    pub missing_spool_files: usize,
}

impl MailQueue {
    /// Opens (creating if needed) the queue in `dir` and recovers it: replays the newest
    /// journal (cutting a torn tail), deletes older journals, `.tmp` files and spool files
    /// without a committed record, drops records without a spool file. Shards must not write
    /// spool files before this returns. The writer starts with [`MailQueue::start`].
    pub fn open(dir: &Path) -> std::io::Result<(MailQueue, RecoveryReport)> {
        let spool_dir = dir.join("spool");
        std::fs::create_dir_all(&spool_dir)?;
        let seqs = journal::existing_journals(dir)?;
        let mut state = QueueState::default();
        let mut report = RecoveryReport {
            messages: 0,
            records: 0,
            truncated_tail: false,
            orphan_spool_files: 0,
            missing_spool_files: 0,
        };
        let (mut file, seq, mut journal_len) = match seqs.last() {
            Some(&seq) => {
                let path = journal::journal_path(dir, seq);
                let replayed = journal::replay(&path, &mut state)?;
                report.records = replayed.records;
                report.truncated_tail = replayed.truncated_tail;
                for old in &seqs[..seqs.len() - 1] {
                    let _ = std::fs::remove_file(journal::journal_path(dir, *old));
                }
                (journal::open_append(&path)?, seq, replayed.valid_bytes)
            }
            None => {
                let path = journal::journal_path(dir, 1);
                let file = journal::create_empty(&path)?;
                journal::sync_dir(dir)?;
                (file, 1, journal::MAGIC.len() as u64)
            }
        };
        // Spool files and records must agree (one pass over the folder, no stat per message).
        let mut present = std::collections::HashSet::with_capacity(state.messages.len());
        for entry in std::fs::read_dir(&spool_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if state.messages.contains_key(&name) {
                present.insert(name);
            } else {
                let _ = std::fs::remove_file(entry.path());
                report.orphan_spool_files += 1;
            }
        }
        let missing: Vec<String> = state.messages.keys().filter(|id| !present.contains(id.as_str())).cloned().collect();
        if !missing.is_empty() {
            let mut buf = Vec::new();
            for id in &missing {
                tracing::error!(id = %id, "mail queue: spool file missing, message dropped");
                let finished = finished_of(&state.messages[id], true);
                journal::encode(&JournalRecord::Removed(finished.clone()), &mut buf);
                state.remove(id, finished);
            }
            file.write_all(&buf)?;
            file.sync_data()?;
            journal_len += buf.len() as u64;
            report.missing_spool_files = missing.len();
        }
        if report.orphan_spool_files > 0 {
            journal::sync_dir(&spool_dir)?;
        }
        report.messages = state.messages.len();
        let (requests, receiver) = crossbeam_channel::unbounded();
        let (arrivals, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            requests: requests.clone(),
            arrivals,
            spool_dir: spool_dir.clone(),
            local_ids: AtomicU64::new(queue_id_counter_start()),
        });
        let handle = QueueHandle { shared };
        let link = ShardQueueLink { requests, spool_dir: Arc::from(spool_dir.as_path()) };
        let mut queue = MailQueue { handle, link, pending: None, dir: dir.to_path_buf(), thread: None };
        let (file, journal_len, seq) = queue.compact_if_large(file, journal_len, seq)?;
        queue.pending = Some((receiver, file, journal_len, seq));
        Ok((queue, report))
    }

    fn compact_if_large(&self, file: File, journal_len: u64, seq: u64) -> std::io::Result<(File, u64, u64)> {
        let state = self.handle.shared.state.read().unwrap_or_else(|p| p.into_inner());
        if journal_len < COMPACT_MIN_BYTES || journal_len < 4 * live_estimate(&state) {
            return Ok((file, journal_len, seq));
        }
        let (compacted, size) = journal::write_compacted(&self.dir, seq + 1, &state)?;
        let _ = std::fs::remove_file(journal::journal_path(&self.dir, seq));
        let mut compacted = compacted;
        compacted.seek(SeekFrom::End(0))?;
        Ok((compacted, size, seq + 1))
    }

    /// The API for the control core.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// The shards' way in.
    pub fn link(&self) -> ShardQueueLink {
        self.link.clone()
    }

    /// Starts the writer thread; `shards` are the shards' mailboxes, in index order (answers
    /// to enqueues go there). Requests sent before are kept and committed first.
    pub fn start(&mut self, shards: Vec<Mailbox<ToShard>>) -> std::io::Result<()> {
        let Some((receiver, journal, journal_len, seq)) = self.pending.take() else { return Ok(()) };
        let mut writer = Writer {
            dir: self.dir.clone(),
            spool_dir: self.handle.shared.spool_dir.clone(),
            seq,
            journal,
            journal_len,
            shared: self.handle.shared.clone(),
            shards,
            receiver,
            average_record: 512,
        };
        self.thread = Some(std::thread::Builder::new().name("queue-writer".into()).spawn(move || writer.run())?);
        Ok(())
    }

    /// Commits what is pending and stops the writer thread.
    pub fn stop(&mut self) {
        let _ = self.handle.shared.requests.send(WriterRequest::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MailQueue {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A removed message's final states.
fn finished_of(message: &QueuedMessage, deleted: bool) -> FinishedMessage {
    FinishedMessage {
        id: message.id.clone(),
        sender: message.sender.clone(),
        finished_at_ms: now_ms(),
        deleted,
        recipients: message.recipients.iter().map(|r| (r.address.clone(), r.state.clone())).collect(),
    }
}

/// Bytes the live state would take in a compacted journal, roughly.
fn live_estimate(state: &QueueState) -> u64 {
    state.messages.len() as u64 * 600 + state.finished.len() as u64 * 200 + 4096
}

struct Writer {
    dir: PathBuf,
    spool_dir: PathBuf,
    seq: u64,
    journal: File,
    journal_len: u64,
    shared: Arc<Shared>,
    shards: Vec<Mailbox<ToShard>>,
    receiver: Receiver<WriterRequest>,
    average_record: u64,
}

/// Answers to shards, grouped by shard index.
type ShardAnswers = HashMap<usize, Vec<(u64, Result<(), String>)>>;

/// An answer held back until the batch is durable.
enum Held {
    Enqueue(EnqueueReply, String),
    Outcomes(oneshot::Sender<Result<Recorded, QueueError>>, bool),
    Unit(oneshot::Sender<Result<(), QueueError>>),
}

impl Writer {
    fn run(&mut self) {
        while let Ok(first) = self.receiver.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|r| matches!(r, WriterRequest::Stop));
            self.commit(batch);
            if stop {
                break;
            }
            if let Err(e) = self.compact_if_large() {
                tracing::error!(error = %e, "mail journal compaction failed; appending to the old journal");
            }
        }
    }

    fn current(&self, overlay: &HashMap<String, Option<QueuedMessage>>, id: &str) -> Option<QueuedMessage> {
        match overlay.get(id) {
            Some(entry) => entry.clone(),
            None => self.shared.state.read().unwrap_or_else(|p| p.into_inner()).messages.get(id).cloned(),
        }
    }

    fn commit(&mut self, batch: Vec<WriterRequest>) {
        let mut overlay: HashMap<String, Option<QueuedMessage>> = HashMap::new();
        let mut records: Vec<JournalRecord> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        let mut new_spool_files = false;
        let mut removed: Vec<String> = Vec::new();
        let mut to_shards = ShardAnswers::new();
        for request in batch {
            match request {
                WriterRequest::Enqueue { message, reply } => {
                    if !is_queue_id(&message.id) || message.recipients.is_empty() {
                        let _ = std::fs::remove_file(self.spool_dir.join(&message.id));
                        let error = QueueError::Invalid(format!("bad queue record {}", message.id));
                        self.answer_enqueue(reply, Err(error), &mut to_shards);
                        continue;
                    }
                    new_spool_files = true;
                    overlay.insert(message.id.clone(), Some((*message).clone()));
                    held.push(Held::Enqueue(reply, message.id.clone()));
                    records.push(JournalRecord::Enqueued(message));
                }
                WriterRequest::Outcomes { id, outcomes, reply } => {
                    let Some(mut message) = self.current(&overlay, &id) else {
                        let _ = reply.send(Err(QueueError::UnknownMessage(id)));
                        continue;
                    };
                    if let Some((index, _)) = outcomes.iter().find(|(i, _)| *i >= message.recipients.len()) {
                        let _ = reply.send(Err(QueueError::UnknownRecipient { id, index: *index }));
                        continue;
                    }
                    journal::apply_outcomes(&mut message, &outcomes);
                    records.push(JournalRecord::Outcomes { id: id.clone(), outcomes });
                    let done = message.is_final();
                    if done {
                        records.push(JournalRecord::Removed(finished_of(&message, false)));
                        overlay.insert(id.clone(), None);
                        removed.push(id);
                    } else {
                        overlay.insert(id, Some(message));
                    }
                    held.push(Held::Outcomes(reply, done));
                }
                WriterRequest::RetryNow { id, reply } => {
                    let Some(mut message) = self.current(&overlay, &id) else {
                        let _ = reply.send(Err(QueueError::UnknownMessage(id)));
                        continue;
                    };
                    let at_ms = now_ms();
                    for recipient in &mut message.recipients {
                        if recipient.state == RecipientState::Pending {
                            recipient.next_attempt_ms = recipient.next_attempt_ms.min(at_ms);
                        }
                    }
                    records.push(JournalRecord::RetryNow { id: id.clone(), at_ms });
                    overlay.insert(id, Some(message));
                    held.push(Held::Unit(reply));
                }
                WriterRequest::Delete { id, reply } => {
                    let Some(message) = self.current(&overlay, &id) else {
                        let _ = reply.send(Err(QueueError::UnknownMessage(id)));
                        continue;
                    };
                    records.push(JournalRecord::Removed(finished_of(&message, true)));
                    overlay.insert(id.clone(), None);
                    removed.push(id);
                    held.push(Held::Unit(reply));
                }
                WriterRequest::Stop => {}
            }
        }
        if records.is_empty() {
            self.send_to_shards(to_shards);
            return;
        }
        let mut buf = Vec::with_capacity(records.len() * 600);
        let mut enqueued = 0u64;
        for record in &records {
            let before = buf.len();
            journal::encode(record, &mut buf);
            if matches!(record, JournalRecord::Enqueued(_)) {
                enqueued += 1;
                self.average_record = (self.average_record * 7 + (buf.len() - before) as u64) / 8;
            }
        }
        let written = self.write_and_sync(&buf, new_spool_files);
        if let Err(e) = written {
            tracing::error!(error = %e, "mail journal write failed: the batch is refused (clients get 451)");
            // Nothing of the batch counts: cut whatever part of it reached the file.
            let _ = self.journal.set_len(self.journal_len);
            let _ = self.journal.seek(SeekFrom::End(0));
            let message = e.to_string();
            for answer in held {
                match answer {
                    Held::Enqueue(reply, id) => {
                        let _ = std::fs::remove_file(self.spool_dir.join(&id));
                        self.answer_enqueue(reply, Err(QueueError::Storage(message.clone())), &mut to_shards);
                    }
                    Held::Outcomes(reply, _) => {
                        let _ = reply.send(Err(QueueError::Storage(message.clone())));
                    }
                    Held::Unit(reply) => {
                        let _ = reply.send(Err(QueueError::Storage(message.clone())));
                    }
                }
            }
            self.send_to_shards(to_shards);
            return;
        }
        self.journal_len += buf.len() as u64;
        {
            let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            for record in records {
                journal::apply(&mut state, record);
            }
        }
        if enqueued > 0 {
            self.shared.arrivals.send_modify(|count| *count += enqueued);
        }
        // After the commit: a crash before these deletions leaves orphans that recovery removes.
        for id in removed {
            let _ = std::fs::remove_file(self.spool_dir.join(&id));
        }
        for answer in held {
            match answer {
                Held::Enqueue(reply, _) => self.answer_enqueue(reply, Ok(()), &mut to_shards),
                Held::Outcomes(reply, removed) => {
                    let _ = reply.send(Ok(Recorded { removed }));
                }
                Held::Unit(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        self.send_to_shards(to_shards);
    }

    fn write_and_sync(&mut self, buf: &[u8], new_spool_files: bool) -> std::io::Result<()> {
        self.journal.write_all(buf)?;
        if new_spool_files {
            journal::sync_dir(&self.spool_dir)?;
        }
        self.journal.sync_data()
    }

    /// Answers an enqueue: a local waiter at once, a shard's ticket into `to_shards` (sent
    /// per shard, one mailbox message per batch, by [`Writer::send_to_shards`]).
    fn answer_enqueue(&self, reply: EnqueueReply, result: Result<(), QueueError>, to_shards: &mut ShardAnswers) {
        match reply {
            EnqueueReply::Shard { shard, ticket } => {
                to_shards.entry(shard).or_default().push((ticket, result.map_err(|e| e.to_string())));
            }
            EnqueueReply::Local(reply) => {
                let _ = reply.send(result);
            }
        }
    }

    fn send_to_shards(&self, to_shards: ShardAnswers) {
        for (shard, answers) in to_shards {
            if let Some(mailbox) = self.shards.get(shard) {
                let _ = mailbox.send(ToShard::MailQueued(answers));
            }
        }
    }

    fn compact_if_large(&mut self) -> std::io::Result<()> {
        let live = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            state.messages.len() as u64 * self.average_record.max(64) + state.finished.len() as u64 * 200 + 4096
        };
        if self.journal_len < COMPACT_MIN_BYTES || self.journal_len < 4 * live {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (file, size) = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            journal::write_compacted(&self.dir, self.seq + 1, &state)?
        };
        let old = journal::journal_path(&self.dir, self.seq);
        self.journal = file;
        self.journal.seek(SeekFrom::End(0))?;
        self.journal_len = size;
        self.seq += 1;
        let _ = std::fs::remove_file(old);
        tracing::info!(seq = self.seq, bytes = size, took = ?started.elapsed(), "mail journal compacted");
        Ok(())
    }
}
