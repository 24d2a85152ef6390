//! The journal file: record framing (length, CRC32, JSON payload), replay with torn-tail
//! detection, and compaction into a new file. The format is described in the parent module.
//!
//! Owns: bytes on disk and their meaning. Does not own: when to write or sync (the writer).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{FinishedMessage, QueueState, QueuedMessage, RecipientOutcome, RecipientState};

/// The first 8 bytes of every journal file.
pub const MAGIC: &[u8; 8] = b"SGMQJ001";

/// A record larger than this is treated as corruption (a message record is a few KiB).
const MAX_RECORD: u32 = 64 * 1024 * 1024;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged (`{"enqueued":{...}}`): serde_json reads that without buffering, which
// keeps replay at a few microseconds per record.
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
}

/// Appends `record`, framed, to `out`.
pub fn encode(record: &JournalRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    // Serialising plain data into a Vec cannot fail; if it ever did, drop the frame.
    if serde_json::to_writer(&mut *out, record).is_err() {
        out.truncate(start);
        return;
    }
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Applies one record to the state (replay, and the writer after a commit).
pub(crate) fn apply(state: &mut QueueState, record: JournalRecord) {
    match record {
        JournalRecord::Enqueued(message) => state.put(*message),
        JournalRecord::Outcomes { id, outcomes } => {
            if let Some(mut message) = state.messages.get(&id).cloned() {
                apply_outcomes(&mut message, &outcomes);
                state.put(message);
            }
        }
        JournalRecord::RetryNow { id, at_ms } => {
            if let Some(mut message) = state.messages.get(&id).cloned() {
                for recipient in &mut message.recipients {
                    if recipient.state == RecipientState::Pending {
                        recipient.next_attempt_ms = recipient.next_attempt_ms.min(at_ms);
                    }
                }
                state.put(message);
            }
        }
        JournalRecord::Removed(finished) => {
            let id = finished.id.clone();
            state.remove(&id, finished);
        }
        JournalRecord::Finished(finished) => state.remember(finished),
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
    /// Records applied.
    pub records: u64,
    /// Bytes of the journal that are valid (the file was truncated to this when longer).
    pub valid_bytes: u64,
    /// A torn or corrupt tail was cut off.
    pub truncated_tail: bool,
}

/// Replays the journal at `path` into `state`, truncating a torn tail.
pub(crate) fn replay(path: &Path, state: &mut QueueState) -> std::io::Result<ReplayReport> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let total = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut report = ReplayReport::default();
    let mut magic = [0u8; 8];
    if total < 8 || reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not a shardgate mail journal (bad magic)", path.display()),
        ));
    }
    let mut offset = 8u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        match read_full(&mut reader, &mut header)? {
            0 => break,
            8 => {}
            _ => {
                report.truncated_tail = true;
                break;
            }
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD || offset + 8 + u64::from(len) > total {
            report.truncated_tail = true;
            break;
        }
        payload.resize(len as usize, 0);
        if read_full(&mut reader, &mut payload)? != payload.len() || crc32fast::hash(&payload) != crc {
            report.truncated_tail = true;
            break;
        }
        match serde_json::from_slice::<JournalRecord>(&payload) {
            Ok(record) => apply(state, record),
            Err(e) => {
                // A CRC-valid record we cannot read is a format problem, not a torn write:
                // skip it loudly rather than lose everything after it.
                tracing::error!(offset, error = %e, "mail journal: unreadable record skipped");
            }
        }
        report.records += 1;
        offset += 8 + u64::from(len);
    }
    report.valid_bytes = offset;
    drop(reader);
    if report.truncated_tail || offset < total {
        file.set_len(offset)?;
        file.sync_all()?;
        report.truncated_tail = true;
    }
    Ok(report)
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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
    for id in &state.finished_order {
        if let Some(finished) = state.finished.get(id) {
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
    fn frames_carry_length_and_crc() {
        let record = JournalRecord::RetryNow { id: "0000000000000001".into(), at_ms: 5 };
        let mut out = Vec::new();
        encode(&record, &mut out);
        let len = u32::from_le_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 8);
        assert_eq!(u32::from_le_bytes([out[4], out[5], out[6], out[7]]), crc32fast::hash(&out[8..]));
        assert_eq!(serde_json::from_slice::<JournalRecord>(&out[8..]).expect("json"), record);
    }
}
