//! Dynamic DNS records on the control core: added and removed at run time, persisted, and
//! re-applied onto the configured zones.
//!
//! Owns: [`DnsZones`] — the configured catalog of the running generation (`base`), the list of
//! dynamic changes ([`DnsChange`]) and the last serial served per zone (both kept in the
//! storage layer under [`DYNAMIC_KEY`]; a `<data_dir>/dns-dynamic.json` of an older release is
//! moved there at start), and the catalog in force (`base` with every change applied,
//! each bumping its zone's SOA serial, and no zone below the serial it last served — so the
//! serial never goes back across restarts even when changes cancelled each other). A change is
//! first applied to a copy of the catalog (so an invalid record is refused with the reason),
//! then the new change list is written to storage (crash-safe: the files backend writes a
//! temporary file, `fsync`, rename, `fsync` of the folder), and only
//! then does the new catalog become current — what a shard serves is always on disk. The control
//! core then sends the catalog to every shard at once (`ToShard::DnsCatalog`).
//!
//! The change list is kept minimal: adding a record that an earlier change removed cancels the
//! removal (and the other way round), so the file does not grow with repeated ACME challenges.
//! At start and on every reload (SIGHUP re-reads the zone files), the list is re-applied in
//! order; a change that no longer applies (its zone was removed, the record is already there
//! or gone) is logged and kept, so it applies again if the zone comes back.
//!
//! Not here: the admin channel (`runtime::admin`), the CLI, record parsing and zone rules
//! (`shardgate_dns::zone`).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};

use crate::storage::{adopt_legacy_file, Privacy, Storage, StorageKey};
use shardgate_dns::config::RecordConfig;
use shardgate_dns::zone::parse_record;
use shardgate_dns::{Catalog, DnsError};

/// The file the dynamic changes are kept in, inside the data folder.
pub const DYNAMIC_FILE: &str = "dns-dynamic.json";

/// TTL of a dynamic record added without one (short: ACME challenges and DKIM rotations).
pub const DEFAULT_DYNAMIC_TTL: u32 = 60;

/// Whether a change adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Add the record.
    Add,
    /// Remove the record (or the whole RRset when `value` is `None`).
    Remove,
}

/// One dynamic record change, as the CLI sends it and as it is persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsChange {
    /// Add or remove.
    pub kind: ChangeKind,
    /// Owner name, absolute (`_acme-challenge.example.net`; the trailing dot is optional).
    pub name: String,
    /// Record type mnemonic (`TXT`, `A`, ...).
    #[serde(rename = "type")]
    pub rtype: String,
    /// RDATA in presentation format (as in `[[dns.zones]]` records); for a removal, `None`
    /// removes the whole RRset.
    #[serde(default)]
    pub value: Option<String>,
    /// TTL of an added record (default [`DEFAULT_DYNAMIC_TTL`]).
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// What a successful change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsUpdated {
    /// The zone that changed.
    pub zone: String,
    /// Its SOA serial now.
    pub serial: u32,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DnsChangeError {
    /// The record is invalid or cannot be applied (no zone for it, nothing to remove, SOA...).
    #[error("{0}")]
    Record(#[from] DnsError),
    /// The name is not a domain name.
    #[error("`{name}` is not a domain name: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// Parser message.
        reason: String,
    },
    /// An add without a value.
    #[error("adding a record needs a value")]
    MissingValue,
    /// The type is unknown.
    #[error("`{0}` is not a record type")]
    Type(String),
    /// The change could not be persisted; nothing was applied.
    #[error("cannot store the dynamic records: {0}; the change was not applied")]
    Persist(String),
    /// The appliance has no `[dns]` section.
    #[error("this appliance serves no DNS (no [dns] section in its config)")]
    NoDns,
}

/// The storage key of the dynamic records.
pub const DYNAMIC_KEY: &str = "dns/dynamic.json";

/// The file an older release kept them in, inside the data folder.
pub const LEGACY_DYNAMIC_FILE: &str = "dns-dynamic.json";

/// What [`DYNAMIC_KEY`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicFile {
    /// The changes in force, in order.
    changes: Vec<DnsChange>,
    /// Per zone origin, the SOA serial last served after a change.
    #[serde(default)]
    serials: BTreeMap<String, u32>,
}

/// The control core's DNS zones: configured base, persisted dynamic changes, current catalog.
#[derive(Debug)]
pub struct DnsZones {
    storage: Arc<dyn Storage>,
    base: Arc<Catalog>,
    state: DynamicFile,
    current: Arc<Catalog>,
}

impl DnsZones {
    /// The zones of `base` with the changes kept in `storage` applied (`data_dir`: where an
    /// older release kept them, adopted into storage once).
    pub fn open(storage: Arc<dyn Storage>, data_dir: &Path, base: Arc<Catalog>) -> DnsZones {
        let state = match load(storage.as_ref(), data_dir) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(key = DYNAMIC_KEY, error = %e, "dynamic DNS records unreadable; starting without them (the entry is kept until the next change)");
                DynamicFile::default()
            }
        };
        let current = Arc::new(replay(&base, &state));
        if !state.changes.is_empty() {
            tracing::info!(changes = state.changes.len(), "dynamic DNS records re-applied");
        }
        DnsZones { storage, base, state, current }
    }

    /// A new configured catalog (reload): the dynamic changes are re-applied onto it.
    pub fn rebase(&mut self, base: Arc<Catalog>) {
        self.current = Arc::new(replay(&base, &self.state));
        self.base = base;
    }

    /// The catalog in force.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.clone()
    }

    /// The dynamic changes in force, in order.
    pub fn changes(&self) -> &[DnsChange] {
        &self.state.changes
    }

    /// Applies one change: checked, persisted, then current. The caller sends
    /// [`DnsZones::current`] to the shards.
    pub fn apply(&mut self, change: DnsChange) -> Result<DnsUpdated, DnsChangeError> {
        let next = apply_change(&self.current, &change)?;
        let name = fqdn(&change.name)?;
        let zone = next.find_zone(&name).ok_or_else(|| DnsError::NoZoneFor { name: change.name.clone() })?;
        let updated = DnsUpdated { zone: zone.origin().to_ascii(), serial: zone.serial() };
        let mut state = DynamicFile { changes: merged(&self.state.changes, change), serials: self.state.serials.clone() };
        state.serials.insert(updated.zone.clone(), updated.serial);
        store(self.storage.as_ref(), &state).map_err(DnsChangeError::Persist)?;
        self.state = state;
        self.current = Arc::new(next);
        Ok(updated)
    }
}

/// `base` with the changes applied in order (a change that does not apply is logged and
/// skipped), then every zone raised to at least the serial it last served.
fn replay(base: &Catalog, state: &DynamicFile) -> Catalog {
    let mut catalog = base.clone();
    for change in &state.changes {
        match apply_change(&catalog, change) {
            Ok(next) => catalog = next,
            Err(e) => tracing::warn!(
                name = %change.name, rtype = %change.rtype, kind = ?change.kind, error = %e,
                "dynamic DNS record not applied to the configured zones (kept for later)"
            ),
        }
    }
    for (zone, serial) in &state.serials {
        if let Ok(origin) = fqdn(zone) {
            catalog = catalog.with_serial_at_least(&origin, *serial);
        }
    }
    catalog
}

/// The change list after `change`: it cancels an earlier opposite change of the same record,
/// replaces an identical one, or is appended.
fn merged(changes: &[DnsChange], change: DnsChange) -> Vec<DnsChange> {
    let same_record = |c: &DnsChange| {
        c.name.trim_end_matches('.').eq_ignore_ascii_case(change.name.trim_end_matches('.'))
            && c.rtype.eq_ignore_ascii_case(&change.rtype)
            && c.value == change.value
    };
    let mut out: Vec<DnsChange> = Vec::with_capacity(changes.len() + 1);
    let mut cancelled = false;
    for existing in changes {
        if same_record(existing) {
            if existing.kind != change.kind {
                cancelled = true;
            }
            continue;
        }
        out.push(existing.clone());
    }
    if !cancelled {
        out.push(change);
    }
    out
}

fn fqdn(name: &str) -> Result<Name, DnsChangeError> {
    let mut parsed = Name::from_ascii(name.trim())
        .map_err(|e| DnsChangeError::Name { name: name.to_string(), reason: e.to_string() })?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// `catalog` with one change applied (the zone's serial bumped).
fn apply_change(catalog: &Catalog, change: &DnsChange) -> Result<Catalog, DnsChangeError> {
    let name = fqdn(&change.name)?;
    let zone = catalog.find_zone(&name).ok_or_else(|| DnsError::NoZoneFor { name: change.name.clone() })?;
    let origin = zone.origin().clone();
    let parse = |value: &str| {
        let record = RecordConfig {
            name: name.to_ascii(),
            rtype: change.rtype.clone(),
            ttl: Some(change.ttl.unwrap_or(DEFAULT_DYNAMIC_TTL)),
            value: value.to_string(),
        };
        parse_record(&origin, DEFAULT_DYNAMIC_TTL, &record)
    };
    match (change.kind, change.value.as_deref()) {
        (ChangeKind::Add, None) => Err(DnsChangeError::MissingValue),
        (ChangeKind::Add, Some(value)) => Ok(catalog.with_record_added(parse(value)?)?),
        (ChangeKind::Remove, Some(value)) => {
            let record = parse(value)?;
            Ok(catalog.with_record_removed(&record.name, record.record_type(), Some(&record.data))?)
        }
        (ChangeKind::Remove, None) => {
            let rtype = RecordType::from_str(&change.rtype.to_ascii_uppercase())
                .map_err(|_| DnsChangeError::Type(change.rtype.clone()))?;
            Ok(catalog.with_record_removed(&name, rtype, None)?)
        }
    }
}

fn key() -> Result<StorageKey, String> {
    StorageKey::new(DYNAMIC_KEY).map_err(|e| e.to_string())
}

/// The persisted state (empty when there is none).
fn load(storage: &dyn Storage, data_dir: &Path) -> Result<DynamicFile, String> {
    let key = key()?;
    adopt_legacy_file(storage, &key, &data_dir.join(LEGACY_DYNAMIC_FILE), Privacy::Private).map_err(|e| e.to_string())?;
    match storage.get(&key).map_err(|e| e.to_string())? {
        None => Ok(DynamicFile::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    }
}

/// Stores the change list (the storage layer makes the write crash-safe: old list or new one,
/// never half of one).
fn store(storage: &dyn Storage, state: &DynamicFile) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    storage.put(&key()?, &text, Privacy::Private).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_dns::DnsConfig;

    fn base() -> Arc<Catalog> {
        let config: DnsConfig = toml::from_str(
            r#"
            [[zones]]
            origin = "example.net."
            soa = { mname = "ns1", rname = "hostmaster", serial = 100 }
            records = [
              { name = "@", type = "NS", value = "ns1" },
              { name = "ns1", type = "A", value = "192.0.2.53" },
              { name = "www", type = "A", value = "192.0.2.80" },
            ]
            "#,
        )
        .expect("config");
        Arc::new(Catalog::load(&config).expect("zones"))
    }

    fn change(kind: ChangeKind, name: &str, rtype: &str, value: Option<&str>) -> DnsChange {
        DnsChange { kind, name: name.into(), rtype: rtype.into(), value: value.map(str::to_string), ttl: None }
    }

    fn serial(zones: &DnsZones) -> u32 {
        zones.current().zones().next().map(|z| z.serial()).unwrap_or(0)
    }

    fn files(dir: &Path) -> Arc<dyn Storage> {
        Arc::new(crate::storage::files::FileStorage::open(&dir.join("storage")).expect("storage"))
    }

    #[test]
    fn the_file_of_an_older_release_is_moved_into_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = r#"{"changes":[{"kind":"add","name":"dyn.example.net","type":"A","value":"192.0.2.9","ttl":60}],"serials":{"example.net.":101}}"#;
        std::fs::write(dir.path().join(LEGACY_DYNAMIC_FILE), old).expect("write");
        let zones = DnsZones::open(files(dir.path()), dir.path(), base());
        assert!(has(&zones, "dyn.example.net.", RecordType::A));
        assert_eq!(serial(&zones), 101);
        assert!(!dir.path().join(LEGACY_DYNAMIC_FILE).exists());
        assert!(dir.path().join("storage").join(DYNAMIC_KEY).exists());
    }

    fn has(zones: &DnsZones, name: &str, rtype: RecordType) -> bool {
        let name = fqdn(name).expect("name");
        zones.current().find_zone(&name).and_then(|z| z.rrset(&name, rtype)).is_some()
    }

    #[test]
    fn changes_apply_bump_the_serial_persist_and_replay_after_restart_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut zones = DnsZones::open(files(dir.path()), dir.path(), base());
        assert_eq!(serial(&zones), 100);
        let added = zones
            .apply(change(ChangeKind::Add, "_acme-challenge.example.net", "TXT", Some("token-1")))
            .expect("add");
        assert_eq!(added, DnsUpdated { zone: "example.net.".into(), serial: 101 });
        assert!(has(&zones, "_acme-challenge.example.net.", RecordType::TXT));
        zones.apply(change(ChangeKind::Remove, "www.example.net.", "A", None)).expect("remove a configured RRset");
        assert!(!has(&zones, "www.example.net.", RecordType::A));
        assert_eq!(serial(&zones), 102);

        // Restart: the file brings both changes back.
        let reopened = DnsZones::open(files(dir.path()), dir.path(), base());
        assert!(has(&reopened, "_acme-challenge.example.net.", RecordType::TXT));
        assert!(!has(&reopened, "www.example.net.", RecordType::A));
        assert_eq!(reopened.changes().len(), 2);
        assert_eq!(serial(&reopened), 102);

        // Removing the dynamic record cancels its add instead of growing the list.
        zones
            .apply(change(ChangeKind::Remove, "_acme-challenge.example.net", "txt", Some("token-1")))
            .expect("remove dynamic");
        assert_eq!(zones.changes().len(), 1);
        let text = std::fs::read_to_string(dir.path().join("storage").join(DYNAMIC_KEY)).expect("file");
        assert!(!text.contains("token-1"), "{text}");
        assert_eq!(serial(&zones), 103);
        // After a restart one change is left, yet the serial does not go back below 103.
        assert_eq!(serial(&DnsZones::open(files(dir.path()), dir.path(), base())), 103);

        // Reload: a new base (same zone) gets the remaining change again.
        zones.rebase(base());
        assert!(!has(&zones, "www.example.net.", RecordType::A));
        assert!(has(&zones, "ns1.example.net.", RecordType::A));
    }

    #[test]
    fn invalid_changes_are_refused_with_the_reason_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut zones = DnsZones::open(files(dir.path()), dir.path(), base());
        let cases = [
            (change(ChangeKind::Add, "www.example.org", "A", Some("192.0.2.1")), "not inside any zone"),
            (change(ChangeKind::Add, "x.example.net", "A", Some("not-an-ip")), "not-an-ip"),
            (change(ChangeKind::Add, "x.example.net", "A", None), "needs a value"),
            (change(ChangeKind::Remove, "nope.example.net", "A", None), "no A record"),
            (change(ChangeKind::Remove, "x.example.net", "BOGUS", None), "not a record type"),
            (change(ChangeKind::Remove, "example.net", "SOA", None), "cannot be changed"),
        ];
        for (change, expected) in cases {
            let error = zones.apply(change.clone()).expect_err("refused").to_string();
            assert!(error.contains(expected), "{change:?}: {error}");
        }
        assert_eq!(serial(&zones), 100);
        assert!(!dir.path().join("storage").join(DYNAMIC_KEY).exists());
    }

    #[test]
    fn a_change_whose_zone_is_gone_is_kept_for_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut zones = DnsZones::open(files(dir.path()), dir.path(), base());
        zones.apply(change(ChangeKind::Add, "dyn.example.net", "A", Some("192.0.2.9"))).expect("add");
        zones.rebase(Arc::new(Catalog::default()));
        assert_eq!(zones.current().zones().count(), 0);
        zones.rebase(base());
        assert!(has(&zones, "dyn.example.net.", RecordType::A));
    }
}
