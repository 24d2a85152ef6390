//! The accounting session table the control core keeps, as plain data.
//!
//! This module owns what a session *is* ([`Session`]), how accounting events change the table
//! ([`SessionTable::apply`]: Start and Interim-Update create or refresh, Stop removes,
//! Accounting-On/Off clear every session of that NAS), stale-session expiry given `now`, and
//! the JSON snapshot format used to persist the table across restarts. It does not do the
//! I/O: the control core decides when to write [`SessionTable::to_json`] to disk and feeds the
//! events it receives from the shards. Sessions are keyed by the NAS (client name, NAS-IP-
//! Address, NAS-Identifier) and Acct-Session-Id, which RFC 2866 §5.5 makes unique per NAS.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mac::MacAddress;
use crate::server::{AccountingEvent, AccountingStatus, NasInfo};
use crate::RadiusError;

/// One accounting session as last reported by its NAS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Acct-Session-Id.
    pub session_id: String,
    /// The station's MAC, if the NAS reported one.
    pub mac: Option<MacAddress>,
    /// The NAS.
    pub nas: NasInfo,
    /// VLAN the station is in.
    pub vlan: Option<u16>,
    /// Octets from the station, gigawords included.
    pub input_octets: u64,
    /// Octets to the station, gigawords included.
    pub output_octets: u64,
    /// Acct-Session-Time as last reported, in seconds.
    pub session_time_secs: u64,
    /// Acct-Terminate-Cause, for a session returned by Stop.
    pub terminate_cause: Option<u32>,
}

impl Session {
    fn from_event(event: &AccountingEvent) -> Self {
        Self {
            session_id: event.session_id.clone(),
            mac: event.mac,
            nas: event.nas.clone(),
            vlan: event.vlan,
            input_octets: event.input_octets,
            output_octets: event.output_octets,
            session_time_secs: event.session_time.map_or(0, |t| t.as_secs()),
            terminate_cause: event.terminate_cause,
        }
    }

    /// Folds a later event of the same session in. Counters never go backwards: a NAS that
    /// omits a counter in one update does not reset it.
    fn update(&mut self, event: &AccountingEvent) {
        self.mac = event.mac.or(self.mac);
        self.nas.port = event.nas.port.or(self.nas.port);
        self.vlan = event.vlan.or(self.vlan);
        self.input_octets = self.input_octets.max(event.input_octets);
        self.output_octets = self.output_octets.max(event.output_octets);
        if let Some(time) = event.session_time {
            self.session_time_secs = self.session_time_secs.max(time.as_secs());
        }
        self.terminate_cause = event.terminate_cause.or(self.terminate_cause);
    }
}

/// Which NAS a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct NasKey {
    client: String,
    ip: Option<Ipv4Addr>,
    identifier: Option<String>,
}

impl NasKey {
    fn of(nas: &NasInfo) -> Self {
        Self { client: nas.client.clone(), ip: nas.ip, identifier: nas.identifier.clone() }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    session: Session,
    last_seen: Instant,
}

/// How an event changed the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// A new session (Start, or an Interim-Update for a session we had not seen).
    Started,
    /// An existing session refreshed.
    Updated,
    /// The session ended; its final state (also returned for a Stop of an unknown session).
    Stopped(Session),
    /// Accounting-On/Off: this many sessions of the NAS were ended.
    NasReset {
        /// Sessions removed.
        ended: usize,
    },
}

/// The session table.
#[derive(Debug, Clone)]
pub struct SessionTable {
    sessions: BTreeMap<(NasKey, String), Entry>,
    stale_timeout: Duration,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    version: u32,
    sessions: Vec<PersistedSession>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedSession {
    session: Session,
    /// Seconds since the session's last accounting packet when the snapshot was taken.
    idle_secs: u64,
}

const SNAPSHOT_VERSION: u32 = 1;

impl SessionTable {
    /// An empty table whose sessions go stale after `stale_timeout` without a packet.
    pub fn new(stale_timeout: Duration) -> Self {
        Self { sessions: BTreeMap::new(), stale_timeout }
    }

    /// Changes the stale timeout (config reload); applies from the next [`Self::expire`].
    pub fn set_stale_timeout(&mut self, stale_timeout: Duration) {
        self.stale_timeout = stale_timeout;
    }

    /// Applies one accounting event received at `now`.
    pub fn apply(&mut self, event: &AccountingEvent, now: Instant) -> SessionChange {
        let nas = NasKey::of(&event.nas);
        match event.status {
            AccountingStatus::AccountingOn | AccountingStatus::AccountingOff => {
                let before = self.sessions.len();
                self.sessions.retain(|(key, _), _| *key != nas);
                SessionChange::NasReset { ended: before - self.sessions.len() }
            }
            AccountingStatus::Stop => {
                let mut session = match self.sessions.remove(&(nas, event.session_id.clone())) {
                    Some(entry) => entry.session,
                    None => Session::from_event(event),
                };
                session.update(event);
                SessionChange::Stopped(session)
            }
            AccountingStatus::Start | AccountingStatus::InterimUpdate => {
                let key = (nas, event.session_id.clone());
                match self.sessions.get_mut(&key) {
                    Some(entry) => {
                        entry.session.update(event);
                        entry.last_seen = now;
                        SessionChange::Updated
                    }
                    None => {
                        self.sessions.insert(key, Entry { session: Session::from_event(event), last_seen: now });
                        SessionChange::Started
                    }
                }
            }
        }
    }

    /// Removes and returns sessions with no packet for the stale timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<Session> {
        let stale_timeout = self.stale_timeout;
        let mut expired = Vec::new();
        self.sessions.retain(|_, entry| {
            let fresh = now.saturating_duration_since(entry.last_seen) < stale_timeout;
            if !fresh {
                expired.push(entry.session.clone());
            }
            fresh
        });
        expired
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every session with how long it has been idle at `now`, ordered by NAS then session id.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (&Session, Duration)> {
        self.sessions.values().map(move |entry| (&entry.session, now.saturating_duration_since(entry.last_seen)))
    }

    /// Sessions of a station.
    pub fn by_mac(&self, mac: &MacAddress) -> Vec<&Session> {
        self.sessions.values().map(|e| &e.session).filter(|s| s.mac.as_ref() == Some(mac)).collect()
    }

    /// Sessions with this Acct-Session-Id (normally one; several NASes may reuse an id).
    pub fn by_session_id(&self, session_id: &str) -> Vec<&Session> {
        self.sessions.values().map(|e| &e.session).filter(|s| s.session_id == session_id).collect()
    }

    /// Serialises the table for persistence. Idle times are stored relative to `now`, since
    /// an `Instant` means nothing after a restart.
    pub fn to_json(&self, now: Instant) -> Result<String, RadiusError> {
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            sessions: self
                .sessions
                .values()
                .map(|entry| PersistedSession {
                    session: entry.session.clone(),
                    idle_secs: now.saturating_duration_since(entry.last_seen).as_secs(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&snapshot).map_err(|err| RadiusError::SessionSnapshot(err.to_string()))
    }

    /// Restores a table written by [`Self::to_json`]; each session's idle time resumes from
    /// what it was at snapshot time (time spent down does not count).
    pub fn from_json(json: &str, stale_timeout: Duration, now: Instant) -> Result<Self, RadiusError> {
        let snapshot: Snapshot = serde_json::from_str(json).map_err(|err| RadiusError::SessionSnapshot(err.to_string()))?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RadiusError::SessionSnapshot(format!(
                "version {} is not the supported version {SNAPSHOT_VERSION}",
                snapshot.version
            )));
        }
        let mut table = Self::new(stale_timeout);
        for persisted in snapshot.sessions {
            let last_seen = now.checked_sub(Duration::from_secs(persisted.idle_secs)).unwrap_or(now);
            let key = (NasKey::of(&persisted.session.nas), persisted.session.session_id.clone());
            table.sessions.insert(key, Entry { session: persisted.session, last_seen });
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: AccountingStatus, session_id: &str, octets: u64) -> AccountingEvent {
        AccountingEvent {
            status,
            session_id: session_id.into(),
            mac: Some(MacAddress::new([0, 0x11, 0x22, 0x33, 0x44, 0x55])),
            nas: NasInfo { client: "sw".into(), ip: Some(Ipv4Addr::new(192, 0, 2, 1)), identifier: None, port: Some(3) },
            vlan: Some(20),
            input_octets: octets,
            output_octets: octets * 2,
            session_time: Some(Duration::from_secs(octets)),
            terminate_cause: None,
        }
    }

    #[test]
    fn start_interim_stop_lifecycle() {
        let now = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(60));
        assert_eq!(table.apply(&event(AccountingStatus::Start, "s1", 0), now), SessionChange::Started);
        assert_eq!(table.apply(&event(AccountingStatus::InterimUpdate, "s1", 100), now), SessionChange::Updated);
        assert_eq!(table.len(), 1);
        let mac = MacAddress::new([0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(table.by_mac(&mac)[0].input_octets, 100);
        assert_eq!(table.by_session_id("s1")[0].output_octets, 200);
        let mut stop = event(AccountingStatus::Stop, "s1", 150);
        stop.terminate_cause = Some(1);
        let SessionChange::Stopped(done) = table.apply(&stop, now) else { panic!("expected stop") };
        assert_eq!((done.input_octets, done.session_time_secs, done.terminate_cause), (150, 150, Some(1)));
        assert!(table.is_empty());
    }

    #[test]
    fn interim_for_unknown_session_creates_it_and_accounting_on_clears_the_nas() {
        let now = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(60));
        assert_eq!(table.apply(&event(AccountingStatus::InterimUpdate, "a", 5), now), SessionChange::Started);
        table.apply(&event(AccountingStatus::Start, "b", 0), now);
        let mut other_nas = event(AccountingStatus::Start, "c", 0);
        other_nas.nas.ip = Some(Ipv4Addr::new(192, 0, 2, 2));
        table.apply(&other_nas, now);
        assert_eq!(table.apply(&event(AccountingStatus::AccountingOn, "", 0), now), SessionChange::NasReset { ended: 2 });
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn stale_sessions_expire() {
        let start = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(60));
        table.apply(&event(AccountingStatus::Start, "old", 0), start);
        table.apply(&event(AccountingStatus::Start, "new", 0), start + Duration::from_secs(30));
        assert!(table.expire(start + Duration::from_secs(59)).is_empty());
        let expired = table.expire(start + Duration::from_secs(61));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].session_id, "old");
        assert_eq!(table.iter(start + Duration::from_secs(61)).next().unwrap().1, Duration::from_secs(31));
    }

    #[test]
    fn snapshot_round_trips_and_keeps_idle_time() {
        let start = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(60));
        table.apply(&event(AccountingStatus::Start, "s1", 7), start);
        table.apply(&event(AccountingStatus::Start, "s2", 9), start + Duration::from_secs(40));
        let json = table.to_json(start + Duration::from_secs(50)).unwrap();
        assert!(json.contains("\"00:11:22:33:44:55\""));
        let later = start + Duration::from_secs(1000);
        let mut restored = SessionTable::from_json(&json, Duration::from_secs(60), later).unwrap();
        let idle: Vec<u64> = restored.iter(later).map(|(_, idle)| idle.as_secs()).collect();
        assert_eq!(idle, vec![50, 10]);
        assert_eq!(restored.expire(later + Duration::from_secs(15)).len(), 1);
        assert!(SessionTable::from_json("{\"version\":2,\"sessions\":[]}", Duration::from_secs(1), later).is_err());
        assert!(SessionTable::from_json("not json", Duration::from_secs(1), later).is_err());
    }
}
