//! The suppression list: addresses that hard-bounced, so later mail to them fails at once
//! instead of hammering a server that already said "no such user".
//!
//! Owns: the list (address, lower-cased → when and why it was added), its file
//! `<data_dir>/mail/suppression.json` (written through a temporary file, fsync and rename,
//! so a crash leaves the old or the new list, never half of one), and lookups.
//! Does not own: deciding what hard-bounced (the delivery engine adds a recipient when a
//! next hop refuses it with 5xx) or the admin operations' transport (`runtime::admin`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The list's file under the data folder.
pub const SUPPRESSION_FILE: &str = "mail/suppression.json";

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressedAddress {
    /// The address, lower case.
    pub address: String,
    /// Unix seconds when it was added.
    pub added: u64,
    /// The refusal that put it here (`550 5.1.1 no such user`).
    pub reason: String,
}

/// The suppression list, loaded in memory and persisted on every change.
#[derive(Debug)]
pub struct SuppressionList {
    path: PathBuf,
    entries: BTreeMap<String, SuppressedAddress>,
}

impl SuppressionList {
    /// Loads the list of `data_dir` (empty when there is none yet; an unreadable file is
    /// reported and kept aside as `suppression.json.broken` rather than silently lost).
    pub fn open(data_dir: &Path) -> SuppressionList {
        let path = data_dir.join(SUPPRESSION_FILE);
        let entries = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<SuppressedAddress>>(&bytes) {
                Ok(list) => list.into_iter().map(|e| (e.address.clone(), e)).collect(),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "suppression list unreadable; starting empty and keeping the file as .broken");
                    let _ = fs::rename(&path, path.with_extension("json.broken"));
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        SuppressionList { path, entries }
    }

    fn key(address: &str) -> String {
        address.trim().trim_start_matches('<').trim_end_matches('>').to_lowercase()
    }

    /// Whether mail to `address` must fail at once; the entry says why.
    pub fn get(&self, address: &str) -> Option<&SuppressedAddress> {
        self.entries.get(&Self::key(address))
    }

    /// Adds `address` (or refreshes its reason) and persists the list.
    pub fn add(&mut self, address: &str, reason: &str) -> io::Result<()> {
        let key = Self::key(address);
        let added = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.entries.insert(key.clone(), SuppressedAddress { address: key, added, reason: reason.to_string() });
        self.persist()
    }

    /// Removes `address`; false when it was not listed.
    pub fn remove(&mut self, address: &str) -> io::Result<bool> {
        let removed = self.entries.remove(&Self::key(address)).is_some();
        if removed {
            self.persist()?;
        }
        Ok(removed)
    }

    /// Every entry, by address.
    pub fn list(&self) -> Vec<SuppressedAddress> {
        self.entries.values().cloned().collect()
    }

    fn persist(&self) -> io::Result<()> {
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.list()).map_err(io::Error::other)?;
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(parent) = self.path.parent() {
            fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_restart_and_match_any_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut list = SuppressionList::open(dir.path());
        assert!(list.get("a@x").is_none());
        list.add("Gone@Example.NET", "550 5.1.1 no such user").expect("add");
        let reopened = SuppressionList::open(dir.path());
        assert_eq!(reopened.get("<gone@example.net>").map(|e| e.reason.as_str()), Some("550 5.1.1 no such user"));
        let mut reopened = reopened;
        assert!(reopened.remove("GONE@example.net").expect("remove"));
        assert!(!reopened.remove("gone@example.net").expect("remove"));
        assert!(SuppressionList::open(dir.path()).list().is_empty());
    }

    #[test]
    fn a_broken_file_is_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("mail")).expect("mkdir");
        fs::write(dir.path().join(SUPPRESSION_FILE), b"{not json").expect("write");
        assert!(SuppressionList::open(dir.path()).list().is_empty());
        assert!(dir.path().join("mail/suppression.json.broken").exists());
    }
}
