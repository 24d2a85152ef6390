//! What became of messages that have left the queue: the delivery history behind
//! `shardgate queue status ID` once a message is delivered or bounced.
//!
//! Owns: `<data_dir>/mail/delivery-history.jsonl`, one JSON line per final recipient outcome
//! (queue id, recipient, `delivered` with the next hop's reply or `bounced` with the
//! refusal, Unix time), appended after the queue recorded the outcome; and lookups by id.
//! The history is informational (the queue's journal is what prevents double delivery), so
//! lines are not fsynced one by one; a line lost in a crash only makes `status` answer
//! "unknown" for that recipient. It grows with traffic; rotate it like a log.
//! Does not own: the queue's own per-recipient state (queued / deferred live there).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The history file under the data folder.
pub const HISTORY_FILE: &str = "mail/delivery-history.jsonl";

/// The final state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    /// The next hop (or the local mailbox) took it.
    Delivered,
    /// It failed for good; a bounce went to the sender (unless the sender was `<>`).
    Bounced,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Queue id.
    pub id: String,
    /// Recipient address.
    pub recipient: String,
    /// What became of it.
    pub state: FinalState,
    /// The next hop's reply (delivered) or the refusal (bounced).
    pub reply: String,
    /// Unix seconds.
    pub at: u64,
}

/// The history file.
#[derive(Debug)]
pub struct DeliveryHistory {
    path: PathBuf,
    write: Mutex<()>,
}

impl DeliveryHistory {
    /// The history of `data_dir`.
    pub fn open(data_dir: &Path) -> DeliveryHistory {
        DeliveryHistory { path: data_dir.join(HISTORY_FILE), write: Mutex::new(()) }
    }

    /// Appends entries (best effort: a failure is logged, never fatal).
    pub fn append(&self, entries: &[HistoryEntry]) {
        if entries.is_empty() {
            return;
        }
        let mut text = Vec::new();
        for entry in entries {
            if serde_json::to_writer(&mut text, entry).is_ok() {
                text.push(b'\n');
            }
        }
        let _guard = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = (|| {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent)?;
            }
            OpenOptions::new().create(true).append(true).open(&self.path)?.write_all(&text)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot append to the delivery history");
        }
    }

    /// Every entry of queue id `id`, oldest first.
    pub fn lookup(&self, id: &str) -> Vec<HistoryEntry> {
        let Ok(file) = fs::File::open(&self.path) else { return Vec::new() };
        let needle = format!("\"id\":{}", serde_json::Value::String(id.to_string()));
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains(&needle))
            .filter_map(|line| serde_json::from_str::<HistoryEntry>(&line).ok())
            .filter(|entry| entry.id == id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let history = DeliveryHistory::open(dir.path());
        assert!(history.lookup("A").is_empty());
        let entry = |id: &str, state| HistoryEntry { id: id.into(), recipient: "r@x".into(), state, reply: "250 ok".into(), at: 1 };
        history.append(&[entry("A", FinalState::Delivered), entry("AB", FinalState::Bounced)]);
        history.append(&[entry("A", FinalState::Bounced)]);
        let found = history.lookup("A");
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].state, FinalState::Bounced);
        assert_eq!(history.lookup("AB").len(), 1);
    }
}
