//! The journal file: record framing (length, CRC32, binary payload from [`super::codec`]),
//! replay with torn-tail detection, the clean-shutdown marker, the one-time read of the old
//! JSON format, and compaction into a new file. The format is described in the parent module.
//!
//! Owns: bytes on disk and their meaning. Does not own: when to write or sync (the writer).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{codec, FinishedMessage, QueueState, QueuedMessage, RecipientOutcome, RecipientState};

/// The first 8 bytes of every journal file written now (format 2: binary records).
pub const MAGIC: &[u8; 8] = b"SGMQJ002";

/// The first 8 bytes of a format 1 journal (JSON records; read once, then compacted into
/// format 2 at start).
pub const MAGIC_V1: &[u8; 8] = b"SGMQJ001";

/// A record larger than this is treated as corruption (a message record is a few KiB).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

/// Bytes read from the journal per `read` during replay.
const READ_CHUNK: usize = 4 * 1024 * 1024;

/// One journal record. Serde (JSON, externally tagged: `{"enqueued":{...}}`) is format 1,
/// kept to read old journals; format 2 is [`super::codec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalRecord {
    /// A message entered the queue (or, written by compaction, its current state).
    Enqueued(Box<QueuedMessage>),
    /// Outcomes of a delivery attempt, by recipient index.
    Outcomes {
        /// The message.
        id: String,
        /// (recipient index, outcome).
        outcomes: Vec<(usize, RecipientOutcome)>,
    },
    /// Every pending recipient is due now.
    RetryNow {
        /// The message.
        id: String,
        /// When (ms since the epoch).
        at_ms: u64,
    },
    /// The message left the queue.
    Removed(FinishedMessage),
    /// Compaction's copy of a removed message's final states.
    Finished(FinishedMessage),
    /// The appliance stopped cleanly: every spool file belongs to a committed message, so the
    /// next start may trust the journal without listing the spool folder. Only ever the last
    /// record; recovery cuts it off again before anything else is written.
    Closed {
        /// When (ms since the epoch).
        at_ms: u64,
    },
    /// The spool files of the `enqueued` records that follow in the same batch were not yet
    /// synced when this was written: the writer syncs the whole file system (spool files,
    /// folder and journal) once after writing the batch. Until a [`JournalRecord::Synced`]
    /// follows, recovery checks each listed file against its length and CRC and drops a
    /// message whose file does not match (it was never acknowledged).
    Unsynced(Vec<SpoolDigest>),
    /// Everything before this record is durable (the previous batch's sync returned).
    Synced,
}

/// What a spool file written without its own sync must contain: recovery's check for the
/// messages of a batch whose file-system sync may not have completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolDigest {
    /// The queue id (the spool file's name).
    pub id: String,
    /// The file's length in octets.
    pub len: u64,
    /// CRC32 (IEEE) of the file's content.
    pub crc: u32,
}

impl SpoolDigest {
    /// Does the spool file at `path` hold exactly what was written? Reads it whole (only the
    /// files of the last batch before a crash are ever checked).
    pub fn matches_file(&self, path: &Path) -> bool {
        let Ok(mut file) = File::open(path) else { return false };
        if file.metadata().map(|m| m.len()).ok() != Some(self.len) {
            return false;
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        hasher.finalize() == self.crc
    }
}

/// Which journal format a file is in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum JournalFormat {
    /// `SGMQJ001`: JSON payloads, CRC of the payload.
    JsonV1,
    /// `SGMQJ002`: binary payloads, CRC of length and payload.
    #[default]
    BinaryV2,
}

/// The CRC32 of a format 2 frame: its length field, then its payload.
fn frame_crc(len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends `record`, framed (format 2), to `out`.
pub fn encode(record: &JournalRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    codec::encode_payload(record, out);
    let len = (out.len() - start - 8) as u32;
    let crc = frame_crc(len, &out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `record` framed in format 1 (JSON), as journals written before format 2 were:
/// for upgrade tests and benches only.
pub fn encode_v1(record: &JournalRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    if serde_json::to_writer(&mut *out, record).is_err() {
        out.truncate(start);
        return;
    }
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Applies one record to the state. `schedule: true` keeps the due schedules current (the
/// writer after a commit); recovery passes `false` and rebuilds them once at the end.
pub(crate) fn apply(state: &mut QueueState, record: JournalRecord, schedule: bool) {
    match record {
        JournalRecord::Enqueued(message) => {
            if schedule {
                state.put(*message);
            } else if !state.load(*message) {
                tracing::error!("mail journal: a message record with a bad queue id skipped");
            }
        }
        JournalRecord::Outcomes { id, outcomes } => state.modify(&id, schedule, |message| apply_outcomes(message, &outcomes)),
        JournalRecord::RetryNow { id, at_ms } => state.modify(&id, schedule, |message| {
            for recipient in &mut message.recipients {
                if recipient.state == RecipientState::Pending {
                    recipient.next_attempt_ms = recipient.next_attempt_ms.min(at_ms);
                }
            }
        }),
        JournalRecord::Removed(finished) => {
            let id = finished.id.clone();
            state.remove(&id, finished, schedule);
        }
        JournalRecord::Finished(finished) => state.remember(finished),
        JournalRecord::Closed { .. } | JournalRecord::Unsynced(_) | JournalRecord::Synced => {}
    }
}

/// Applies outcomes to a message's recipients; outcomes for final recipients or unknown
/// indexes are ignored.
pub(crate) fn apply_outcomes(message: &mut QueuedMessage, outcomes: &[(usize, RecipientOutcome)]) {
    for (index, outcome) in outcomes {
        let Some(recipient) = message.recipients.get_mut(*index) else { continue };
        if recipient.state != RecipientState::Pending {
            continue;
        }
        if !matches!(outcome, RecipientOutcome::Postponed { .. }) {
            recipient.attempts = recipient.attempts.saturating_add(1);
        }
        match outcome {
            RecipientOutcome::Delivered { reply } => recipient.state = RecipientState::Delivered { reply: reply.clone() },
            RecipientOutcome::Failed { reply } => recipient.state = RecipientState::Failed { reply: reply.clone() },
            RecipientOutcome::Deferred { error: why, next_attempt_ms } | RecipientOutcome::Postponed { reason: why, next_attempt_ms } => {
                recipient.last_error = Some(why.clone());
                recipient.next_attempt_ms = *next_attempt_ms;
            }
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records read (applied, or unreadable and skipped); the clean-shutdown marker is not
    /// counted.
    pub records: u64,
    /// Bytes of the journal that are valid (the file was truncated to this when longer).
    pub valid_bytes: u64,
    /// A torn or corrupt tail was cut off.
    pub truncated_tail: bool,
    /// The journal ended with a [`JournalRecord::Closed`] marker (cut off again by replay):
    /// the spool folder agrees with the journal.
    pub closed_cleanly: bool,
    /// The file's format (format 1 is compacted into format 2 by the caller).
    pub format: JournalFormat,
    /// CRC-valid records that could not be decoded (skipped, each logged).
    pub unreadable: u64,
}

/// Frames read from a journal file in large chunks; payloads are slices of the buffer (no
/// copy, no allocation per record).
struct FrameReader {
    file: File,
    format: JournalFormat,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    total: u64,
}

/// One step of [`FrameReader::next_frame`].
enum Frame<'a> {
    /// A complete, CRC-checked record starting at file offset `at`.
    Record { at: u64, payload: &'a [u8] },
    /// The clean end of the file.
    End,
    /// A frame that runs past the end or whose CRC does not match, at the current offset.
    Torn,
}

impl FrameReader {
    /// Makes at least `need` bytes available from `start`; `false` at end of file first.
    fn fill(&mut self, need: usize) -> std::io::Result<bool> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        if self.buf.len() - self.start < need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < need {
                self.buf.resize(need.max(READ_CHUNK), 0);
            }
        }
        while self.end - self.start < need {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn next_frame(&mut self) -> std::io::Result<Frame<'_>> {
        if !self.fill(8)? {
            return Ok(if self.end == self.start { Frame::End } else { Frame::Torn });
        }
        let header = &self.buf[self.start..self.start + 8];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD || self.offset + 8 + u64::from(len) > self.total {
            return Ok(Frame::Torn);
        }
        let size = 8 + len as usize;
        if !self.fill(size)? {
            return Ok(Frame::Torn);
        }
        let payload_at = self.start + 8;
        let payload = &self.buf[payload_at..payload_at + len as usize];
        let valid = match self.format {
            JournalFormat::JsonV1 => crc32fast::hash(payload) == crc,
            JournalFormat::BinaryV2 => frame_crc(len, payload) == crc,
        };
        if !valid {
            return Ok(Frame::Torn);
        }
        let at = self.offset;
        self.start += size;
        self.offset += size as u64;
        Ok(Frame::Record { at, payload: &self.buf[payload_at..payload_at + len as usize] })
    }
}

/// Reads a journal's magic: its format, or an error for anything else.
pub(crate) fn read_format(path: &Path) -> std::io::Result<JournalFormat> {
    let mut magic = [0u8; 8];
    File::open(path)?.read_exact(&mut magic).map_err(|_| bad_magic(path))?;
    format_of(&magic).ok_or_else(|| bad_magic(path))
}

fn format_of(magic: &[u8; 8]) -> Option<JournalFormat> {
    match magic {
        m if m == MAGIC => Some(JournalFormat::BinaryV2),
        m if m == MAGIC_V1 => Some(JournalFormat::JsonV1),
        _ => None,
    }
}

fn bad_magic(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{} is not a shardgate mail journal (bad magic)", path.display()),
    )
}

/// Replays the journal at `path` into `state` (schedules are rebuilt at the end), truncating
/// a torn tail and a trailing clean-shutdown marker (so a later crash never looks clean).
/// `unsynced` receives the spool digests of the batch (at most one, the last) whose
/// file-system sync is not known to have completed: the caller checks those files.
pub(crate) fn replay(path: &Path, state: &mut QueueState, unsynced: &mut Vec<SpoolDigest>) -> std::io::Result<ReplayReport> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let total = file.metadata()?.len();
    let mut magic = [0u8; 8];
    if total < 8 || file.read_exact(&mut magic).is_err() {
        return Err(bad_magic(path));
    }
    let format = format_of(&magic).ok_or_else(|| bad_magic(path))?;
    let mut report = ReplayReport { format, ..ReplayReport::default() };
    let mut frames = FrameReader {
        file: file.try_clone()?,
        format,
        buf: vec![0u8; READ_CHUNK.min(total as usize + 8)],
        start: 0,
        end: 0,
        offset: 8,
        total,
    };
    // Where the marker starts, while it is the last record seen.
    let mut closed_at: Option<u64> = None;
    loop {
        let (at, payload) = match frames.next_frame()? {
            Frame::End => break,
            Frame::Torn => {
                report.truncated_tail = true;
                break;
            }
            Frame::Record { at, payload } => (at, payload),
        };
        let decoded = match format {
            JournalFormat::BinaryV2 => codec::decode_payload(payload).map_err(|e| e.to_string()),
            JournalFormat::JsonV1 => serde_json::from_slice::<JournalRecord>(payload).map_err(|e| e.to_string()),
        };
        match decoded {
            // The marker is not a record of the queue's history (and is cut off below).
            Ok(JournalRecord::Closed { .. }) => closed_at = Some(at),
            Ok(JournalRecord::Unsynced(digests)) => {
                report.records += 1;
                closed_at = None;
                unsynced.extend(digests);
            }
            Ok(JournalRecord::Synced) => {
                report.records += 1;
                closed_at = None;
                unsynced.clear();
            }
            Ok(record) => {
                report.records += 1;
                closed_at = None;
                apply(state, record, false);
            }
            Err(error) => {
                report.records += 1;
                // A CRC-valid record we cannot read is a format problem, not a torn write:
                // skip it loudly rather than lose everything after it.
                closed_at = None;
                report.unreadable += 1;
                tracing::error!(offset = at, %error, "mail journal: unreadable record skipped");
            }
        }
    }
    let mut offset = frames.offset;
    drop(frames);
    if let (Some(at), false) = (closed_at, report.truncated_tail) {
        report.closed_cleanly = true;
        offset = at;
    }
    report.valid_bytes = offset;
    if offset < total {
        file.set_len(offset)?;
        file.sync_all()?;
    }
    if offset < total && !report.closed_cleanly {
        report.truncated_tail = true;
    }
    state.rebuild_schedules();
    Ok(report)
}

/// Bytes of a framed [`JournalRecord::Closed`]: header, tag, 8-byte time.
const CLOSED_FRAME: u64 = 8 + 1 + 8;

/// A quick look at the end of the journal at `path`: does it end with the clean-shutdown
/// marker? Lets recovery skip listing the spool folder while it replays; [`replay`] has the
/// final word.
pub(crate) fn ends_closed(path: &Path) -> std::io::Result<bool> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    if total < MAGIC.len() as u64 + CLOSED_FRAME {
        return Ok(false);
    }
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Ok(false);
    }
    let mut frame = [0u8; CLOSED_FRAME as usize];
    file.seek(SeekFrom::Start(total - CLOSED_FRAME))?;
    file.read_exact(&mut frame)?;
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok(u64::from(len) == CLOSED_FRAME - 8 && frame_crc(len, &frame[8..]) == crc && matches!(codec::decode_payload(&frame[8..]), Ok(JournalRecord::Closed { .. })))
}

/// Appends the clean-shutdown marker to `file` and syncs it.
pub(crate) fn append_closed(file: &mut File, at_ms: u64) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(32);
    encode(&JournalRecord::Closed { at_ms }, &mut buf);
    file.write_all(&buf)?;
    file.sync_data()
}

/// The journal file name for sequence `seq`.
pub fn journal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq:08}.log"))
}

/// The sequence numbers of the complete journals in `dir`, ascending; `.tmp` files are
/// deleted on the way.
pub(crate) fn existing_journals(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("journal-") && name.ends_with(".log.tmp") {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if let Some(seq) = name.strip_prefix("journal-").and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates an empty journal (magic only) at `path`, synced, and opens it for appending.
pub(crate) fn create_empty(path: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.write_all(MAGIC)?;
    file.sync_all()?;
    Ok(file)
}

/// Opens an existing journal for appending at its end.
pub(crate) fn open_append(path: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    file.seek(SeekFrom::End(0))?;
    Ok(file)
}

/// Writes the live `state` as journal `seq` (through a `.tmp` file, synced, renamed, folder
/// synced) and returns it opened for appending with its size.
pub(crate) fn write_compacted(dir: &Path, seq: u64, state: &QueueState) -> std::io::Result<(File, u64)> {
    let final_path = journal_path(dir, seq);
    let tmp = final_path.with_extension("log.tmp");
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp)?;
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(MAGIC);
    let mut size = 0u64;
    let mut flush = |buf: &mut Vec<u8>, file: &mut File, force: bool| -> std::io::Result<()> {
        if force || buf.len() >= 1 << 20 {
            file.write_all(buf)?;
            size += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    };
    for key in &state.finished_order {
        if let Some(finished) = state.finished.get(key) {
            encode(&JournalRecord::Finished(finished.clone()), &mut buf);
            flush(&mut buf, &mut file, false)?;
        }
    }
    for message in state.messages.values() {
        encode(&JournalRecord::Enqueued(Box::new(message.clone())), &mut buf);
        flush(&mut buf, &mut file, false)?;
    }
    flush(&mut buf, &mut file, true)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &final_path)?;
    sync_dir(dir)?;
    Ok((file, size))
}

/// fsyncs a folder (makes created, renamed and deleted entries durable).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_and_a_crc_of_length_and_payload() {
        let record = JournalRecord::RetryNow { id: "0000000000000001".into(), at_ms: 5 };
        let mut out = Vec::new();
        encode(&record, &mut out);
        let len = u32::from_le_bytes([out[0], out[1], out[2], out[3]]);
        assert_eq!(len as usize, out.len() - 8);
        assert_eq!(u32::from_le_bytes([out[4], out[5], out[6], out[7]]), frame_crc(len, &out[8..]));
        assert_eq!(codec::decode_payload(&out[8..]).expect("decode"), record);
    }

    #[test]
    fn the_closed_marker_is_a_fixed_frame() {
        let mut out = Vec::new();
        encode(&JournalRecord::Closed { at_ms: u64::MAX }, &mut out);
        assert_eq!(out.len() as u64, CLOSED_FRAME);
        out.clear();
        encode(&JournalRecord::Closed { at_ms: 0 }, &mut out);
        assert_eq!(out.len() as u64, CLOSED_FRAME);
    }

    #[test]
    fn format_one_frames_still_read() {
        let record = JournalRecord::RetryNow { id: "0000000000000001".into(), at_ms: 5 };
        let mut out = Vec::new();
        encode_v1(&record, &mut out);
        assert_eq!(u32::from_le_bytes([out[4], out[5], out[6], out[7]]), crc32fast::hash(&out[8..]));
        assert_eq!(serde_json::from_slice::<JournalRecord>(&out[8..]).expect("json"), record);
    }
}
