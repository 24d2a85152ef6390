//! The control core's RADIUS accounting session table, kept on disk across restarts.
//!
//! Owns the file `<data_dir>/radius-sessions.json`: loading it at start (a corrupt file is
//! logged, moved aside as `radius-sessions.json.corrupt` and the table starts empty — a bad
//! file never stops the appliance), and writing it crash-safely (temporary file, fsync,
//! rename, fsync of the folder; mode 0600, as it names stations and NASes) when the table
//! changed, at most once per control-core tick and at stop. Also renders the table for
//! `shardgate radius sessions`. What an accounting event does to the table is the
//! `shardgate-radius` crate's [`SessionTable`]; this module only drives it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use shardgate_radius::server::AccountingEvent;
use shardgate_radius::sessions::{Session, SessionChange, SessionTable};

/// The session file's name inside the data folder.
pub const SESSIONS_FILE: &str = "radius-sessions.json";

/// The session table and the file it is persisted to.
#[derive(Debug)]
pub struct SessionStore {
    table: SessionTable,
    path: PathBuf,
    changed: bool,
}

impl SessionStore {
    /// Loads `<data_dir>/radius-sessions.json` (missing: empty table; corrupt: moved aside,
    /// logged, empty table).
    pub fn open(data_dir: &Path, stale_timeout: Duration, now: Instant) -> SessionStore {
        let path = data_dir.join(SESSIONS_FILE);
        let table = match std::fs::read_to_string(&path) {
            Ok(text) => match SessionTable::from_json(&text, stale_timeout, now) {
                Ok(table) => {
                    tracing::info!(path = %path.display(), sessions = table.len(), "RADIUS accounting sessions restored");
                    table
                }
                Err(e) => {
                    let aside = path.with_extension("json.corrupt");
                    let moved = std::fs::rename(&path, &aside);
                    tracing::error!(
                        path = %path.display(), error = %e, moved_to = %aside.display(), moved = moved.is_ok(),
                        "RADIUS session file is corrupt: moved aside, starting with no sessions"
                    );
                    SessionTable::new(stale_timeout)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => SessionTable::new(stale_timeout),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the RADIUS session file; starting with no sessions");
                SessionTable::new(stale_timeout)
            }
        };
        SessionStore { table, path, changed: false }
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
            .map_err(io::Error::other)
            .and_then(|json| write_private_file_atomically(&self.path, json.as_bytes()));
        match written {
            Ok(()) => self.changed = false,
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "cannot persist RADIUS sessions"),
        }
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file, never
/// a mix: write a temporary file (mode 0600) in the same folder, fsync it, rename it over
/// `path`, fsync the folder so the rename itself is durable.
pub fn write_private_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = folder.join(tmp_name);
    {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // `mode` only applies when the file is created; a leftover temp file keeps its mode.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(folder)?.sync_all()
}

/// A persisted session table as the CLI reads it.
#[derive(Debug)]
pub struct SessionSnapshot {
    /// The sessions, with their idle time counted to when the snapshot was read.
    pub sessions: Vec<(Session, Duration)>,
    /// How long ago the file was written.
    pub age: Duration,
}

/// Reads `<data_dir>/radius-sessions.json`. Idle times are the persisted ones plus the age
/// of the file (the appliance rewrites it whenever a session changes).
pub fn read_snapshot(data_dir: &Path) -> io::Result<SessionSnapshot> {
    let path = data_dir.join(SESSIONS_FILE);
    let text = std::fs::read_to_string(&path)?;
    let age = std::fs::metadata(&path)?
        .modified()
        .ok()
        .and_then(|written| SystemTime::now().duration_since(written).ok())
        .unwrap_or_default();
    let now = Instant::now();
    // The table is only listed, never expired here: any timeout works.
    let table = SessionTable::from_json(&text, Duration::MAX, now)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    let sessions = table.iter(now).map(|(session, idle)| (session.clone(), idle + age)).collect();
    Ok(SessionSnapshot { sessions, age })
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

    use shardgate_radius::mac::MacAddress;
    use shardgate_radius::server::{AccountingStatus, NasInfo};

    use super::*;

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
        let mut store = SessionStore::open(dir.path(), Duration::from_secs(3600), now);
        assert!(store.is_empty());
        store.apply(&event(AccountingStatus::Start, "s-1"), now);
        store.apply(&event(AccountingStatus::Start, "s-2"), now);
        store.persist_if_changed(now);
        let path = dir.path().join(SESSIONS_FILE);
        let mode = std::fs::metadata(&path).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("radius-sessions.json.tmp").exists());

        let mut reopened = SessionStore::open(dir.path(), Duration::from_secs(3600), Instant::now());
        assert_eq!(reopened.len(), 2);
        reopened.apply(&event(AccountingStatus::Stop, "s-1"), Instant::now());
        reopened.persist_if_changed(Instant::now());
        let snapshot = read_snapshot(dir.path()).expect("readable");
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].0.session_id, "s-2");
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_the_table_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SESSIONS_FILE);
        std::fs::write(&path, "{ not json").expect("write");
        let store = SessionStore::open(dir.path(), Duration::from_secs(60), Instant::now());
        assert!(store.is_empty());
        assert!(!path.exists());
        assert_eq!(std::fs::read_to_string(dir.path().join("radius-sessions.json.corrupt")).expect("aside"), "{ not json");
    }

    #[test]
    fn stale_sessions_expire_and_unchanged_tables_are_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let mut store = SessionStore::open(dir.path(), Duration::from_secs(10), start);
        store.persist_if_changed(start);
        assert!(!dir.path().join(SESSIONS_FILE).exists(), "nothing changed, nothing written");
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
