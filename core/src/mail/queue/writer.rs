//! The queue writer: the one thread that appends to the journal, group-committing whatever
//! is waiting (enqueues from every shard, outcomes from the delivery engine) with one fsync.
//!
//! Owns: [`MailQueue`] (opening = recovery: replay while the spool folder is listed on a
//! second thread, torn-tail cut, orphan spool files removed, compaction or format 1 upgrade;
//! then the writer thread), the request channel ([`WriterRequest`]), the shards' side of it
//! ([`ShardQueueLink`]), compaction and the clean-shutdown marker at a clean stop. Does not own: the record format ([`super::journal`])
//! or what shards do while they wait (`crate::smtp`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::journal::{self, JournalRecord, SpoolDigest};
use super::{
    id_key, is_queue_id, now_ms, queue_id_counter_start, FinishedMessage, QueueError, QueueHandle, QueueState, QueuedMessage,
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
    /// Commit a new message (its spool file is already written). On failure the writer
    /// deletes the spool file.
    Enqueue {
        /// The message record.
        message: Box<QueuedMessage>,
        /// `Some`: the spool file is written but not synced; the writer syncs the file system
        /// once for the whole batch before it answers, and journals the digest so recovery
        /// can tell a file the sync did not complete. `None`: the file is already synced.
        unsynced: Option<SpoolDigest>,
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
    /// Commit what is pending, then end the thread; `clean`: also write the clean-shutdown
    /// marker (see [`MailQueue::stop_clean`]).
    Stop {
        /// The caller vouches that every spool file belongs to a request already sent.
        clean: bool,
    },
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

    /// Hands a message whose spool file is written (not synced: `digest` says what it holds)
    /// to the writer, which makes it durable with the rest of its batch; the answer comes
    /// back to `shard` in `ToShard::MailQueued` under `ticket`. `false` when the writer has
    /// stopped (no answer will come: reply 451 at once).
    pub fn enqueue(&self, shard: usize, ticket: u64, message: QueuedMessage, digest: SpoolDigest) -> bool {
        let request =
            WriterRequest::Enqueue { message: Box::new(message), unsynced: Some(digest), reply: EnqueueReply::Shard { shard, ticket } };
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
    /// The spool folder was listed (not after a clean shutdown).
    pub spool_listed: bool,
    /// The journal was in format 1 (JSON) and was rewritten in format 2.
    pub upgraded_from_json: bool,
    /// The journal was compacted at start.
    pub compacted: bool,
}

/// The spool folder's entries, listed while the journal is replayed.
#[derive(Debug, Default)]
struct SpoolListing {
    /// Entries named like a queue id, as [`id_key`]s.
    ids: Vec<u64>,
    /// Any other entry (never a committed message's file).
    others: Vec<PathBuf>,
}

fn list_spool(spool_dir: &Path) -> std::io::Result<SpoolListing> {
    let mut listing = SpoolListing::default();
    for entry in std::fs::read_dir(spool_dir)? {
        let entry = entry?;
        match entry.file_name().to_str().and_then(id_key) {
            Some(key) => listing.ids.push(key),
            None => listing.others.push(entry.path()),
        }
    }
    Ok(listing)
}

/// A spool file's name from its key (the inverse of [`id_key`]).
fn spool_name(key: u64) -> String {
    format!("{key:016X}")
}

impl MailQueue {
    /// Opens (creating if needed) the queue in `dir` and recovers it: replays the newest
    /// journal (cutting a torn tail), deletes older journals, `.tmp` files and spool files
    /// without a committed record, drops records without a spool file. Shards must not write
    /// spool files before this returns. The writer starts with [`MailQueue::start`].
    ///
    /// The spool folder is listed on a second thread while the journal is replayed, and not
    /// at all when the journal ends with the clean-shutdown marker (then every spool file
    /// belongs to a committed message). A format 1 (JSON) journal, or one with more than
    /// twice as many records as live entries, is compacted into a new format 2 journal
    /// before the writer starts.
    pub fn open(dir: &Path) -> std::io::Result<(MailQueue, RecoveryReport)> {
        let spool_dir = dir.join("spool");
        std::fs::create_dir_all(&spool_dir)?;
        let seqs = journal::existing_journals(dir)?;
        let newest = seqs.last().map(|seq| (*seq, journal::journal_path(dir, *seq)));
        let mut report = RecoveryReport {
            messages: 0,
            records: 0,
            truncated_tail: false,
            orphan_spool_files: 0,
            missing_spool_files: 0,
            spool_listed: false,
            upgraded_from_json: false,
            compacted: false,
        };
        // The last batch's spool digests, if its file-system sync is not known to be done.
        let mut unsynced: Vec<SpoolDigest> = Vec::new();
        // About 250 bytes per message record in format 2, 600 in format 1.
        let (mut state, replayed, listing) = match &newest {
            Some((_, path)) => {
                let size = std::fs::metadata(path)?.len();
                let per_record = match journal::read_format(path)? {
                    journal::JournalFormat::BinaryV2 => 256,
                    journal::JournalFormat::JsonV1 => 600,
                };
                let mut state = QueueState::with_capacity((size / per_record).min(64 << 20) as usize);
                let list_now = !journal::ends_closed(path)?;
                let (replayed, listing) = std::thread::scope(|scope| {
                    let lister = list_now.then(|| {
                        std::thread::Builder::new()
                            .name("queue-spool-list".into())
                            .spawn_scoped(scope, || list_spool(&spool_dir))
                    });
                    let replayed = journal::replay(path, &mut state, &mut unsynced);
                    let listing = match lister {
                        Some(Ok(thread)) => Some(thread.join().unwrap_or_else(|_| Err(std::io::Error::other("spool listing panicked")))),
                        // No second thread (or none could start): list after the replay.
                        Some(Err(_)) => Some(list_spool(&spool_dir)),
                        None => None,
                    };
                    (replayed, listing)
                });
                let replayed = replayed?;
                let listing = match listing {
                    Some(listing) => Some(listing?),
                    None if !replayed.closed_cleanly => Some(list_spool(&spool_dir)?),
                    None => None,
                };
                (state, Some(replayed), listing)
            }
            None => (QueueState::default(), None, Some(list_spool(&spool_dir)?)),
        };
        let (mut file, seq, mut journal_len) = match (&newest, &replayed) {
            (Some((seq, path)), Some(replayed)) => {
                report.records = replayed.records;
                report.truncated_tail = replayed.truncated_tail;
                for old in &seqs[..seqs.len() - 1] {
                    let _ = std::fs::remove_file(journal::journal_path(dir, *old));
                }
                (journal::open_append(path)?, *seq, replayed.valid_bytes)
            }
            _ => {
                let path = journal::journal_path(dir, 1);
                let file = journal::create_empty(&path)?;
                journal::sync_dir(dir)?;
                (file, 1, journal::MAGIC.len() as u64)
            }
        };
        // Spool files and records must agree (one listing, no stat per message).
        if let Some(listing) = listing {
            report.spool_listed = true;
            let mut present = 0usize;
            for key in &listing.ids {
                if state.messages.contains_key(key) {
                    present += 1;
                } else {
                    let _ = std::fs::remove_file(spool_dir.join(spool_name(*key)));
                    report.orphan_spool_files += 1;
                }
            }
            for other in &listing.others {
                let _ = std::fs::remove_file(other);
                report.orphan_spool_files += 1;
            }
            if present < state.messages.len() {
                let listed: std::collections::HashSet<u64> = listing.ids.iter().copied().collect();
                let missing: Vec<u64> = state.messages.keys().filter(|key| !listed.contains(key)).copied().collect();
                let mut buf = Vec::new();
                for key in &missing {
                    let Some(message) = state.messages.get(key) else { continue };
                    tracing::error!(id = %message.id, "mail queue: spool file missing, message dropped");
                    let finished = finished_of(message, true);
                    let id = message.id.clone();
                    journal::encode(&JournalRecord::Removed(finished.clone()), &mut buf);
                    state.remove(&id, finished, true);
                }
                if replayed.is_some_and(|r| r.format == journal::JournalFormat::BinaryV2) {
                    file.write_all(&buf)?;
                    file.sync_data()?;
                    journal_len += buf.len() as u64;
                }
                report.missing_spool_files = missing.len();
            }
            if report.orphan_spool_files > 0 {
                journal::sync_dir(&spool_dir)?;
            }
        }
        // The last batch before a crash may have been written without its sync completing:
        // its messages were never acknowledged, and a spool file that does not hold what was
        // written (short, or blocks never written) drops its message.
        let mut torn = Vec::new();
        for digest in &unsynced {
            let Some(message) = state.get(&digest.id) else { continue };
            if digest.matches_file(&spool_dir.join(&digest.id)) {
                continue;
            }
            tracing::warn!(id = %digest.id, "mail queue: spool file incomplete after a crash (never acknowledged), message dropped");
            torn.push(finished_of(message, true));
        }
        if !torn.is_empty() {
            let mut buf = Vec::new();
            for finished in torn {
                let _ = std::fs::remove_file(spool_dir.join(&finished.id));
                journal::encode(&JournalRecord::Removed(finished.clone()), &mut buf);
                let id = finished.id.clone();
                state.remove(&id, finished, true);
                report.missing_spool_files += 1;
            }
            if replayed.is_some_and(|r| r.format == journal::JournalFormat::BinaryV2) {
                file.write_all(&buf)?;
                file.sync_data()?;
                journal_len += buf.len() as u64;
            }
        }
        report.messages = state.messages.len();
        // Compaction at start: the JSON format is rewritten once (its records cannot be
        // appended to), and a journal mostly made of history is cut down to the live state.
        let live = (state.messages.len() + state.finished.len()) as u64;
        let upgrade = replayed.is_some_and(|r| r.format == journal::JournalFormat::JsonV1);
        let (file, journal_len, seq) = if upgrade || (report.records > 2 * live + 10_000) {
            let (mut compacted, size) = journal::write_compacted(dir, seq + 1, &state)?;
            compacted.seek(SeekFrom::End(0))?;
            let _ = std::fs::remove_file(journal::journal_path(dir, seq));
            report.upgraded_from_json = upgrade;
            report.compacted = true;
            (compacted, size, seq + 1)
        } else {
            (file, journal_len, seq)
        };
        let (requests, receiver) = crossbeam_channel::unbounded();
        let (arrivals, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            requests: requests.clone(),
            arrivals,
            spool_dir: spool_dir.clone(),
            local_ids: AtomicU64::new(queue_id_counter_start()),
            submitting: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let handle = QueueHandle { shared };
        let link = ShardQueueLink { requests, spool_dir: Arc::from(spool_dir.as_path()) };
        let queue = MailQueue { handle, link, pending: Some((receiver, file, journal_len, seq)), dir: dir.to_path_buf(), thread: None };
        Ok((queue, report))
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
        let spool_dir = &self.handle.shared.spool_dir;
        let spool_fs = File::open(spool_dir)?;
        let journal_on_spool_fs = {
            use std::os::unix::fs::MetadataExt;
            spool_fs.metadata()?.dev() == journal.metadata()?.dev()
        };
        let mut writer = Writer {
            spool_fs,
            journal_on_spool_fs,
            marker_owed: false,
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

    /// Commits what is pending and stops the writer thread. The next start lists the spool
    /// folder (as after a crash): use [`MailQueue::stop_clean`] when nothing can have left an
    /// uncommitted spool file.
    pub fn stop(&mut self) {
        self.stop_with(false);
    }

    /// Commits what is pending, stops the writer thread and, if no control-core submission
    /// is half done, ends the journal with the clean-shutdown marker so the next start trusts
    /// it without listing the spool folder. Call it only once no shard can write a spool file
    /// any more and every shard removed the spool files of the messages it did not hand over
    /// (the runtime does, once every shard reported `ShardStopped`).
    pub fn stop_clean(&mut self) {
        self.stop_with(true);
    }

    fn stop_with(&mut self, clean: bool) {
        let _ = self.handle.shared.requests.send(WriterRequest::Stop { clean });
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

struct Writer {
    /// The spool folder, open: `syncfs` target for batches with unsynced spool files.
    spool_fs: File,
    /// The journal is on the spool folder's file system (so `syncfs` covers it too).
    journal_on_spool_fs: bool,
    /// The last batch had unsynced spool files and its sync returned: the next write starts
    /// with a [`JournalRecord::Synced`] so recovery need not check them.
    marker_owed: bool,
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
            let stop = batch.iter().find_map(|r| match r {
                WriterRequest::Stop { clean } => Some(*clean),
                _ => None,
            });
            self.commit(batch);
            if let Some(clean) = stop {
                self.finish(clean);
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
            None => self.shared.state.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned(),
        }
    }

    fn commit(&mut self, batch: Vec<WriterRequest>) {
        let mut overlay: HashMap<String, Option<QueuedMessage>> = HashMap::new();
        let mut records: Vec<JournalRecord> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        let mut new_spool_files = false;
        let mut digests: Vec<SpoolDigest> = Vec::new();
        // Anything but deferrals must be durable before it is answered (see `lazy` below).
        let mut needs_sync = false;
        let mut removed: Vec<String> = Vec::new();
        let mut to_shards = ShardAnswers::new();
        for request in batch {
            match request {
                WriterRequest::Enqueue { message, unsynced, reply } => {
                    if !is_queue_id(&message.id) || message.recipients.is_empty() {
                        let _ = std::fs::remove_file(self.spool_dir.join(&message.id));
                        let error = QueueError::Invalid(format!("bad queue record {}", message.id));
                        self.answer_enqueue(reply, Err(error), &mut to_shards);
                        continue;
                    }
                    needs_sync = true;
                    match unsynced {
                        Some(digest) => digests.push(digest),
                        None => new_spool_files = true,
                    }
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
                    needs_sync |= outcomes
                        .iter()
                        .any(|(_, outcome)| matches!(outcome, RecipientOutcome::Delivered { .. } | RecipientOutcome::Failed { .. }));
                    journal::apply_outcomes(&mut message, &outcomes);
                    records.push(JournalRecord::Outcomes { id: id.clone(), outcomes });
                    let done = message.is_final();
                    needs_sync |= done;
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
                    needs_sync = true;
                    records.push(JournalRecord::RetryNow { id: id.clone(), at_ms });
                    overlay.insert(id, Some(message));
                    held.push(Held::Unit(reply));
                }
                WriterRequest::Delete { id, reply } => {
                    let Some(message) = self.current(&overlay, &id) else {
                        let _ = reply.send(Err(QueueError::UnknownMessage(id)));
                        continue;
                    };
                    needs_sync = true;
                    records.push(JournalRecord::Removed(finished_of(&message, true)));
                    overlay.insert(id.clone(), None);
                    removed.push(id);
                    held.push(Held::Unit(reply));
                }
                WriterRequest::Stop { .. } => {}
            }
        }
        if records.is_empty() {
            self.send_to_shards(to_shards);
            return;
        }
        let mut buf = Vec::with_capacity(records.len() * 600 + digests.len() * 32);
        if self.marker_owed {
            journal::encode(&JournalRecord::Synced, &mut buf);
        }
        let sync_fs = !digests.is_empty();
        if sync_fs {
            journal::encode(&JournalRecord::Unsynced(digests), &mut buf);
        }
        let mut enqueued = 0u64;
        for record in &records {
            let before = buf.len();
            journal::encode(record, &mut buf);
            if matches!(record, JournalRecord::Enqueued(_)) {
                enqueued += 1;
                self.average_record = (self.average_record * 7 + (buf.len() - before) as u64) / 8;
            }
        }
        // A batch of only deferrals (and postponements) is written but not synced: losing it
        // in a crash only makes those recipients due again sooner (an attempt too many, never
        // a message lost or delivered twice); the next synced batch makes it durable. This
        // keeps a busy delivery engine's retries from costing the intake a disk commit each.
        let written = if needs_sync { self.write_and_sync(&buf, new_spool_files, sync_fs) } else { self.journal.write_all(&buf) };
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
        self.marker_owed = sync_fs;
        {
            let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            for record in records {
                journal::apply(&mut state, record, true);
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

    /// The last step before the thread ends: commits whatever arrived behind the stop
    /// request, then writes the clean-shutdown marker if `clean` and no submission is half
    /// done (submissions after this point are refused: [`Shared::closed`]).
    fn finish(&mut self, clean: bool) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let late: Vec<WriterRequest> = self.receiver.try_iter().collect();
        if !late.is_empty() {
            self.commit(late);
        }
        if !clean || self.shared.submitting.load(Ordering::SeqCst) > 0 || !self.receiver.is_empty() {
            return;
        }
        let marked = journal::sync_dir(&self.spool_dir).and_then(|()| journal::append_closed(&mut self.journal, now_ms()));
        match marked {
            Ok(()) => tracing::info!("mail journal closed cleanly: the next start does not list the spool folder"),
            Err(e) => tracing::warn!(error = %e, "mail journal: could not write the clean-shutdown marker"),
        }
    }

    /// Appends `buf` and makes it durable. `sync_fs`: the batch has spool files that were not
    /// synced, so one `syncfs` of the spool file system writes them, the spool folder and the
    /// journal in one go (one journal commit of the file system instead of one per file, then
    /// the folder's, then the journal's); recovery checks that batch's files against their
    /// digests until a later batch says it was synced.
    fn write_and_sync(&mut self, buf: &[u8], new_spool_files: bool, sync_fs: bool) -> std::io::Result<()> {
        self.journal.write_all(buf)?;
        if sync_fs {
            use std::os::fd::AsRawFd;
            // SAFETY: `syncfs` takes any open descriptor; `spool_fs` lives as long as `self`.
            if unsafe { libc::syncfs(self.spool_fs.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The spool folder is on that file system, synced with it.
            return if self.journal_on_spool_fs { Ok(()) } else { self.journal.sync_data() };
        }
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
