//! The control core's RADIUS accounting session table, kept across restarts.
//!
//! Owns the storage entry [`SESSIONS_KEY`] (the storage layer, `crate::storage`: with the
//! files backend, `<data_dir>/storage/radius/sessions.json`, private, written crash-safely;
//! a `<data_dir>/radius-sessions.json` of an older release is moved there at start): loading
//! it at start (a corrupt entry is logged, kept aside as [`CORRUPT_KEY`] and the table starts
//! empty — a bad entry never stops the appliance), and writing it when the table changed, at
//! most once per control-core tick and at stop. Also renders the table for
//! `shardgate radius sessions`. What an accounting event does to the table is the
//! `shardgate-radius` crate's [`SessionTable`]; this module only drives it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shardgate_radius::server::AccountingEvent;
use shardgate_radius::sessions::{Session, SessionChange, SessionTable};

use crate::storage::{adopt_legacy_file, Privacy, Storage, StorageError, StorageKey};

/// The storage key of the session table.
pub const SESSIONS_KEY: &str = "radius/sessions.json";

/// Where an unreadable session table is kept for inspection.
pub const CORRUPT_KEY: &str = "radius/sessions.json.corrupt";

/// The file an older release kept the table in, inside the data folder.
pub const LEGACY_SESSIONS_FILE: &str = "radius-sessions.json";

/// The stored value: the table and when it was written (so the CLI can age idle times).
#[derive(Debug, Serialize, Deserialize)]
struct StoredTable {
    /// Seconds since the epoch at the write.
    written_at: u64,
    /// `SessionTable::to_json`.
    table: serde_json::Value,
}

fn key(name: &str) -> Result<StorageKey, StorageError> {
    StorageKey::new(name)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why the stored table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// The storage backend failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// The entry is not a session table.
    #[error("`{SESSIONS_KEY}` is not a session table: {0}")]
    Corrupt(String),
}

/// Parses a stored value into the table and its write time.
fn parse(bytes: &[u8], stale_timeout: Duration, now: Instant) -> Result<(SessionTable, u64), SessionStoreError> {
    let stored: StoredTable = serde_json::from_slice(bytes).map_err(|e| SessionStoreError::Corrupt(e.to_string()))?;
    let table = SessionTable::from_json(&stored.table.to_string(), stale_timeout, now)
        .map_err(|e| SessionStoreError::Corrupt(e.to_string()))?;
    Ok((table, stored.written_at))
}

/// Moves an unreadable table to [`CORRUPT_KEY`].
fn set_aside(storage: &dyn Storage) -> Result<(), StorageError> {
    let current = key(SESSIONS_KEY)?;
    if let Some(bytes) = storage.get(&current)? {
        storage.put(&key(CORRUPT_KEY)?, &bytes, Privacy::Private)?;
        storage.delete(&current)?;
    }
    Ok(())
}

/// The session table and where it is persisted.
#[derive(Debug)]
pub struct SessionStore {
    table: SessionTable,
    storage: Arc<dyn Storage>,
    changed: bool,
}

impl SessionStore {
    /// Loads the stored table (missing: empty table; corrupt: kept aside, logged, empty
    /// table). `data_dir` is where an older release kept it (adopted once).
    pub fn open(storage: Arc<dyn Storage>, data_dir: &Path, stale_timeout: Duration, now: Instant) -> SessionStore {
        let table = match Self::load(storage.as_ref(), data_dir, stale_timeout, now) {
            Ok(Some(table)) => {
                tracing::info!(key = SESSIONS_KEY, sessions = table.len(), "RADIUS accounting sessions restored");
                table
            }
            Ok(None) => SessionTable::new(stale_timeout),
            Err(SessionStoreError::Corrupt(reason)) => {
                let moved = set_aside(storage.as_ref());
                tracing::error!(
                    key = SESSIONS_KEY, error = %reason, moved_to = CORRUPT_KEY, moved = moved.is_ok(),
                    "RADIUS session table is corrupt: kept aside, starting with no sessions"
                );
                SessionTable::new(stale_timeout)
            }
            Err(e) => {
                tracing::error!(key = SESSIONS_KEY, error = %e, "cannot read the RADIUS session table; starting with no sessions");
                SessionTable::new(stale_timeout)
            }
        };
        SessionStore { table, storage, changed: false }
    }

    fn load(storage: &dyn Storage, data_dir: &Path, stale_timeout: Duration, now: Instant) -> Result<Option<SessionTable>, SessionStoreError> {
        let key = key(SESSIONS_KEY)?;
        let legacy = data_dir.join(LEGACY_SESSIONS_FILE);
        if storage.get(&key)?.is_none() {
            // An older release wrote the bare table: wrap it on the way in.
            if let Ok(text) = std::fs::read_to_string(&legacy) {
                let table: serde_json::Value = serde_json::from_str(&text).map_err(|e| SessionStoreError::Corrupt(e.to_string()))?;
                let wrapped = serde_json::to_vec(&StoredTable { written_at: unix_now(), table })
                    .map_err(|e| SessionStoreError::Corrupt(e.to_string()))?;
                let staged = data_dir.join(format!("{LEGACY_SESSIONS_FILE}.adopt"));
                std::fs::write(&staged, wrapped).map_err(|source| StorageError::Io { action: "write", key: staged.display().to_string(), source })?;
                adopt_legacy_file(storage, &key, &staged, Privacy::Private)?;
                let _ = std::fs::remove_file(&legacy);
            }
        }
        match storage.get(&key)? {
            None => Ok(None),
            Some(bytes) => parse(&bytes, stale_timeout, now).map(|(table, _)| Some(table)),
        }
    }

    /// Applies an accounting event a shard acknowledged.
    pub fn apply(&mut self, event: &AccountingEvent, now: Instant) {
        match self.table.apply(event, now) {
            SessionChange::NasReset { ended } => {
                tracing::info!(nas = %event.nas.client, ended, status = ?event.status, "RADIUS NAS reset its sessions")
            }
            change => tracing::debug!(session = %event.session_id, nas = %event.nas.client, ?change, "RADIUS accounting"),
        }
        self.changed = true;
    }

    /// Drops sessions idle for longer than the stale timeout.
    pub fn expire(&mut self, now: Instant) {
        let expired = self.table.expire(now);
        if !expired.is_empty() {
            tracing::info!(expired = expired.len(), "stale RADIUS sessions expired");
            self.changed = true;
        }
    }

    /// New stale timeout (config reload).
    pub fn set_stale_timeout(&mut self, stale_timeout: Duration) {
        self.table.set_stale_timeout(stale_timeout);
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Writes the table if it changed since the last write. A failed write is logged and
    /// retried on the next call.
    pub fn persist_if_changed(&mut self, now: Instant) {
        if !self.changed {
            return;
        }
        let written = self
            .table
            .to_json(now)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).map_err(|e| e.to_string()))
            .and_then(|table| serde_json::to_vec(&StoredTable { written_at: unix_now(), table }).map_err(|e| e.to_string()))
            .and_then(|bytes| {
                key(SESSIONS_KEY).and_then(|k| self.storage.put(&k, &bytes, Privacy::Private)).map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => self.changed = false,
            Err(e) => tracing::error!(key = SESSIONS_KEY, error = %e, "cannot persist RADIUS sessions"),
        }
    }
}

/// A persisted session table as the CLI reads it.
#[derive(Debug)]
pub struct SessionSnapshot {
    /// The sessions, with their idle time counted to when the snapshot was read.
    pub sessions: Vec<(Session, Duration)>,
    /// How long ago the table was written.
    pub age: Duration,
}

/// Reads the stored table (`Ok(None)`: none written yet). Idle times are the persisted ones
/// plus the age of the entry (the appliance rewrites it whenever a session changes).
pub fn read_snapshot(storage: &dyn Storage) -> Result<Option<SessionSnapshot>, SessionStoreError> {
    let Some(bytes) = storage.get(&key(SESSIONS_KEY)?)? else { return Ok(None) };
    let now = Instant::now();
    // The table is only listed, never expired here: any timeout works.
    let (table, written_at) = parse(&bytes, Duration::MAX, now)?;
    let age = Duration::from_secs(unix_now().saturating_sub(written_at));
    let sessions = table.iter(now).map(|(session, idle)| (session.clone(), idle + age)).collect();
    Ok(Some(SessionSnapshot { sessions, age }))
}

/// The session table as aligned text columns, one session per line, header first.
pub fn render_sessions(sessions: &[(Session, Duration)]) -> String {
    let header = ["SESSION-ID", "MAC", "NAS", "VLAN", "IN-OCTETS", "OUT-OCTETS", "DURATION", "IDLE"];
    let rows: Vec<[String; 8]> = sessions
        .iter()
        .map(|(session, idle)| {
            let nas = match (&session.nas.ip, &session.nas.identifier) {
                (Some(ip), _) => format!("{} ({ip})", session.nas.client),
                (None, Some(id)) => format!("{} ({id})", session.nas.client),
                (None, None) => session.nas.client.clone(),
            };
            [
                session.session_id.clone(),
                session.mac.map_or_else(|| "-".to_string(), |mac| mac.to_string()),
                nas,
                session.vlan.map_or_else(|| "-".to_string(), |vlan| vlan.to_string()),
                session.input_octets.to_string(),
                session.output_octets.to_string(),
                compact_duration(Duration::from_secs(session.session_time_secs)),
                compact_duration(*idle),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let _ = if i + 1 == cells.len() { write!(text, "{cell}") } else { write!(text, "{cell:<width$}  ") };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// `42s`, `3m07s`, `2h05m`, `4d03h`.
fn compact_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::storage::files::FileStorage;

    use shardgate_radius::mac::MacAddress;
    use shardgate_radius::server::{AccountingStatus, NasInfo};

    use super::*;

    fn files(dir: &Path) -> Arc<dyn Storage> {
        Arc::new(FileStorage::open(&dir.join("storage")).expect("storage"))
    }

    fn event(status: AccountingStatus, session_id: &str) -> AccountingEvent {
        AccountingEvent {
            status,
            session_id: session_id.into(),
            mac: MacAddress::parse("aa-bb-cc-dd-ee-ff").ok(),
            nas: NasInfo { client: "sw1".into(), ip: Some("192.0.2.1".parse().expect("ip")), identifier: None, port: Some(7) },
            vlan: Some(20),
            input_octets: 1500,
            output_octets: 3000,
            session_time: Some(Duration::from_secs(125)),
            terminate_cause: None,
        }
    }

    #[test]
    fn sessions_survive_a_reopen_and_the_file_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let mut store = SessionStore::open(files(dir.path()), dir.path(), Duration::from_secs(3600), now);
        assert!(store.is_empty());
        store.apply(&event(AccountingStatus::Start, "s-1"), now);
        store.apply(&event(AccountingStatus::Start, "s-2"), now);
        store.persist_if_changed(now);
        let path = dir.path().join("storage").join(SESSIONS_KEY);
        let mode = std::fs::metadata(&path).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let mut reopened = SessionStore::open(files(dir.path()), dir.path(), Duration::from_secs(3600), Instant::now());
        assert_eq!(reopened.len(), 2);
        reopened.apply(&event(AccountingStatus::Stop, "s-1"), Instant::now());
        reopened.persist_if_changed(Instant::now());
        let snapshot = read_snapshot(files(dir.path()).as_ref()).expect("readable").expect("written");
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].0.session_id, "s-2");
    }

    #[test]
    fn a_table_of_an_older_release_is_moved_into_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let mut store = SessionStore::open(files(dir.path()), dir.path(), Duration::from_secs(3600), now);
        store.apply(&event(AccountingStatus::Start, "s-7"), now);
        let bare = store.table.to_json(now).expect("json");
        std::fs::write(dir.path().join(LEGACY_SESSIONS_FILE), bare).expect("write");
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::rename(dir.path().join(LEGACY_SESSIONS_FILE), other.path().join(LEGACY_SESSIONS_FILE)).expect("move");
        let adopted = SessionStore::open(files(other.path()), other.path(), Duration::from_secs(3600), Instant::now());
        assert_eq!(adopted.len(), 1);
        assert!(!other.path().join(LEGACY_SESSIONS_FILE).exists());
        assert!(other.path().join("storage").join(SESSIONS_KEY).exists());
    }

    #[test]
    fn a_corrupt_entry_is_kept_aside_and_the_table_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = files(dir.path());
        storage.put(&key(SESSIONS_KEY).expect("key"), b"{ not json", Privacy::Private).expect("put");
        let store = SessionStore::open(storage.clone(), dir.path(), Duration::from_secs(60), Instant::now());
        assert!(store.is_empty());
        assert!(storage.get(&key(SESSIONS_KEY).expect("key")).expect("get").is_none());
        assert_eq!(storage.get(&key(CORRUPT_KEY).expect("key")).expect("get").as_deref(), Some(&b"{ not json"[..]));
    }

    #[test]
    fn stale_sessions_expire_and_unchanged_tables_are_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let mut store = SessionStore::open(files(dir.path()), dir.path(), Duration::from_secs(10), start);
        store.persist_if_changed(start);
        assert!(!dir.path().join("storage").join(SESSIONS_KEY).exists(), "nothing changed, nothing written");
        store.apply(&event(AccountingStatus::InterimUpdate, "s-9"), start);
        store.expire(start + Duration::from_secs(5));
        assert_eq!(store.len(), 1);
        store.set_stale_timeout(Duration::from_secs(2));
        store.expire(start + Duration::from_secs(5));
        assert!(store.is_empty());
    }

    #[test]
    fn the_table_renders_one_aligned_row_per_session() {
        let session = Session {
            session_id: "0000002A".into(),
            mac: MacAddress::parse("AABB.CCDD.EEFF").ok(),
            nas: NasInfo { client: "sw1".into(), ip: Some("192.0.2.1".parse().expect("ip")), identifier: None, port: None },
            vlan: Some(20),
            input_octets: 1500,
            output_octets: 3000,
            session_time_secs: 125,
            terminate_cause: None,
        };
        let text = render_sessions(&[(session, Duration::from_secs(3))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SESSION-ID  MAC"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells, ["0000002A", "aa:bb:cc:dd:ee:ff", "sw1", "(192.0.2.1)", "20", "1500", "3000", "2m05s", "3s"]);
        assert_eq!(compact_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(compact_duration(Duration::from_secs(2 * 86_400 + 3600)), "2d01h");
    }
}
