//! Immutable zone snapshots and the catalog of zones a shard answers from.
//!
//! Owns: turning configuration (inline records or RFC 1035 master files, parsed by hickory-proto's
//! zone-file parser) into a [`Zone`] — a hash map from lower-cased owner name to the RRsets at that
//! name, with empty non-terminals, zone cuts and wildcard parents precomputed so the answer path
//! does only hash lookups — and the [`Catalog`] of zones. Dynamic changes
//! ([`Catalog::with_record_added`], [`Catalog::with_record_removed`]) never mutate a snapshot: they
//! build a new one with the SOA serial incremented (RFC 1982), which the control core hands to
//! every shard. Does not own: answering queries ([`mod@crate::answer`]), file watching, or transfers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use foldhash::fast::RandomState;
use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use crate::config::{parse_origin, DnsConfig, ZoneConfig};
use crate::error::DnsError;
use crate::wire::{owned_key, pre_encode, NameKey, NegativeSoa};

/// Record types this server stores and serves.
pub const SERVED_TYPES: &[RecordType] = &[
    RecordType::SOA,
    RecordType::NS,
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::PTR,
    RecordType::HINFO,
    RecordType::SSHFP,
    RecordType::TLSA,
    RecordType::SVCB,
    RecordType::HTTPS,
    RecordType::NAPTR,
];

/// Maximum TTL allowed by RFC 2181 §8.
const MAX_TTL: u32 = i32::MAX as u32;

/// All records of one type at one owner name.
#[derive(Debug, Clone, PartialEq)]
pub struct RrSet {
    rtype: RecordType,
    ttl: u32,
    rdatas: Vec<RData>,
    /// The records pre-encoded with the question as owner (name-free types only).
    wire: Option<Box<[u8]>>,
}

impl RrSet {
    /// The record type of the set.
    pub fn record_type(&self) -> RecordType {
        self.rtype
    }
    /// The TTL shared by the set (the first record's TTL wins, as in Knot).
    pub fn ttl(&self) -> u32 {
        self.ttl
    }
    /// The record data, in zone order, without duplicates.
    pub fn rdatas(&self) -> &[RData] {
        &self.rdatas
    }
    /// Wire form of the whole set owned by the question name, when prepared.
    pub(crate) fn question_wire(&self) -> Option<&[u8]> {
        self.wire.as_deref()
    }
}

/// Everything at one owner name. An empty node is an empty non-terminal (RFC 4592 §2.2.2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Owner name (lower case).
    pub(crate) owner: Name,
    /// Sorted by type code.
    pub(crate) rrsets: Vec<RrSet>,
    /// NS below the apex: a delegation point.
    pub(crate) cut: bool,
    /// `*.<this name>` exists.
    pub(crate) wildcard_child: bool,
}

impl Node {
    fn new(owner: Name) -> Node {
        Node {
            owner,
            rrsets: Vec::new(),
            cut: false,
            wildcard_child: false,
        }
    }

    /// The RRset of `rtype`, if any.
    #[inline]
    pub(crate) fn get(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|set| set.rtype == rtype)
    }
}

/// One authoritative zone, immutable once built.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    origin_key: Box<[u8]>,
    origin_labels: usize,
    /// Keyed by [`NameKey`] bytes.
    nodes: HashMap<Box<[u8]>, Node, RandomState>,
    has_cuts: bool,
    soa: SOA,
    soa_ttl: u32,
    /// The authority record of NXDOMAIN/NODATA, prepared when possible.
    negative_soa: Option<NegativeSoa>,
}

/// Number of labels, counting a leading `*` (unlike `Name::num_labels`).
#[inline]
pub(crate) fn label_count(name: &Name) -> usize {
    name.iter().len()
}

impl Zone {
    /// Builds a zone from records. Checks: owners inside the zone, served types, TTLs, TXT string
    /// lengths, exactly one SOA at the apex, CNAME exclusivity. Returns every problem found.
    pub fn from_records(
        origin: &Name,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Zone, Vec<DnsError>> {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        let zone_label = origin.to_ascii();
        let mut errors = Vec::new();
        let mut nodes: HashMap<Box<[u8]>, Node, RandomState> = HashMap::default();

        for record in records {
            let mut owner = record.name.to_lowercase();
            owner.set_fqdn(true);
            let rtype = record.record_type();
            if !origin.zone_of(&owner) {
                errors.push(DnsError::RecordOutOfZone {
                    zone: zone_label.clone(),
                    name: owner.to_ascii(),
                });
                continue;
            }
            if !SERVED_TYPES.contains(&rtype) {
                errors.push(DnsError::UnsupportedRecordType {
                    zone: zone_label.clone(),
                    name: owner.to_ascii(),
                    rtype: rtype.to_string(),
                });
                continue;
            }
            if record.ttl > MAX_TTL {
                errors.push(DnsError::InvalidTtl {
                    zone: zone_label.clone(),
                    name: owner.to_ascii(),
                    ttl: record.ttl,
                });
                continue;
            }
            if let RData::TXT(txt) = &record.data {
                if let Some(long) = txt.txt_data.iter().find(|s| s.len() > 255) {
                    errors.push(DnsError::TxtStringTooLong {
                        zone: zone_label.clone(),
                        name: owner.to_ascii(),
                        len: long.len(),
                    });
                    continue;
                }
            }
            let Some(key) = owned_key(&owner) else {
                continue;
            };
            let node = nodes.entry(key).or_insert_with(|| Node::new(owner));
            match node.rrsets.iter_mut().find(|set| set.rtype == rtype) {
                Some(set) => {
                    if !set.rdatas.contains(&record.data) {
                        set.rdatas.push(record.data);
                    }
                }
                None => node.rrsets.push(RrSet {
                    rtype,
                    ttl: record.ttl,
                    rdatas: vec![record.data],
                    wire: None,
                }),
            }
        }

        let origin_labels = label_count(&origin);
        let owners: Vec<Name> = nodes.values().map(|node| node.owner.clone()).collect();
        for owner in &owners {
            let labels = label_count(owner);
            // Empty non-terminals between the apex and the owner.
            for k in origin_labels..labels {
                let ancestor = owner.trim_to(k);
                if let Some(key) = owned_key(&ancestor) {
                    nodes.entry(key).or_insert_with(|| Node::new(ancestor));
                }
            }
            if labels > origin_labels && owner.iter().next() == Some(b"*".as_slice()) {
                let parent = owned_key(&owner.base_name());
                if let Some(parent) = parent.and_then(|key| nodes.get_mut(&key)) {
                    parent.wildcard_child = true;
                }
            }
        }

        let mut soa = None;
        let mut has_cuts = false;
        for node in nodes.values_mut() {
            node.rrsets.sort_by_key(|set| u16::from(set.rtype));
            for set in node.rrsets.iter_mut() {
                set.wire = pre_encode(set.rtype, set.ttl, &set.rdatas);
            }
            let owner = &node.owner;
            let is_apex = *owner == origin;
            if node.get(RecordType::NS).is_some() && !is_apex {
                node.cut = true;
                has_cuts = true;
            }
            if let Some(set) = node.get(RecordType::SOA) {
                match (&set.rdatas[..], is_apex) {
                    ([RData::SOA(rdata)], true) => soa = Some((rdata.clone(), set.ttl)),
                    _ => errors.push(DnsError::MissingSoa {
                        zone: zone_label.clone(),
                    }),
                }
            }
            if let Some(cname) = node.get(RecordType::CNAME) {
                if node.rrsets.len() > 1 || is_apex || cname.rdatas.len() > 1 {
                    errors.push(DnsError::CnameConflict {
                        zone: zone_label.clone(),
                        name: owner.to_ascii(),
                    });
                }
            }
        }
        let Some((soa, soa_ttl)) = soa else {
            errors.push(DnsError::MissingSoa { zone: zone_label });
            return Err(errors);
        };
        let Some(origin_key) = owned_key(&origin) else {
            errors.push(DnsError::InvalidOrigin {
                origin: zone_label,
                reason: "longer than 255 octets".into(),
            });
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let negative_soa = NegativeSoa::new(&origin, &soa, soa_ttl.min(soa.minimum));
        Ok(Zone {
            origin,
            origin_key,
            origin_labels,
            nodes,
            has_cuts,
            soa,
            soa_ttl,
            negative_soa,
        })
    }

    /// Parses RFC 1035 master-file text with hickory-proto's parser. `path` resolves relative
    /// `$INCLUDE`s (which are refused when `None`) and names the file in errors.
    pub fn from_master_text(
        origin: &Name,
        text: &str,
        path: Option<&Path>,
    ) -> Result<Zone, Vec<DnsError>> {
        let parser = Parser::new(text, path.map(Path::to_path_buf), Some(origin.clone()));
        let (_, sets) = parser.parse().map_err(|e| {
            vec![DnsError::MasterFileParse {
                zone: origin.to_ascii(),
                path: path.map_or_else(|| PathBuf::from("<inline>"), Path::to_path_buf),
                reason: e.to_string(),
            }]
        })?;
        let records = sets
            .into_values()
            .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
        Zone::from_records(origin, records)
    }

    /// Builds a zone from an inline `[[dns.zones]]` entry (`soa` + `records`).
    pub fn from_inline(config: &ZoneConfig) -> Result<Zone, Vec<DnsError>> {
        let origin = parse_origin(&config.origin).map_err(|e| vec![e])?;
        let zone_label = origin.to_ascii();
        let Some(soa_config) = &config.soa else {
            return Err(vec![DnsError::ZoneSourceMissing { zone: zone_label }]);
        };
        let mut errors = Vec::new();
        let soa_name = |field: &'static str, value: &str, errors: &mut Vec<DnsError>| {
            resolve_name(value, &origin)
                .map_err(|reason| {
                    errors.push(DnsError::InvalidSoaField {
                        zone: zone_label.clone(),
                        field,
                        reason,
                    })
                })
                .ok()
        };
        let mname = soa_name("mname", &soa_config.mname, &mut errors);
        let rname = soa_name("rname", &soa_config.rname, &mut errors);
        let mut timer = |field: &'static str, value: u32| {
            i32::try_from(value).unwrap_or_else(|_| {
                errors.push(DnsError::InvalidSoaField {
                    zone: zone_label.clone(),
                    field,
                    reason: format!("{value} exceeds 2147483647"),
                });
                0
            })
        };
        let refresh = timer("refresh", soa_config.refresh);
        let retry = timer("retry", soa_config.retry);
        let expire = timer("expire", soa_config.expire);

        let mut records = Vec::with_capacity(config.records.len() + 1);
        if let (Some(mname), Some(rname)) = (mname, rname) {
            records.push(Record::from_rdata(
                origin.clone(),
                soa_config.ttl.unwrap_or(config.default_ttl),
                RData::SOA(SOA::new(
                    mname,
                    rname,
                    soa_config.serial,
                    refresh,
                    retry,
                    expire,
                    soa_config.minimum,
                )),
            ));
        }
        for (index, record) in config.records.iter().enumerate() {
            match parse_inline_record(&origin, config.default_ttl, index, record) {
                Ok(record) => records.push(record),
                Err(e) => errors.push(e),
            }
        }
        match Zone::from_records(&origin, records) {
            Ok(zone) if errors.is_empty() => Ok(zone),
            Ok(_) => Err(errors),
            Err(more) => {
                // A missing SOA is a consequence of an SOA field error already reported.
                let soa_reported = errors
                    .iter()
                    .any(|e| matches!(e, DnsError::InvalidSoaField { .. }));
                errors.extend(
                    more.into_iter()
                        .filter(|e| !(soa_reported && matches!(e, DnsError::MissingSoa { .. }))),
                );
                Err(errors)
            }
        }
    }

    /// The zone apex (lower case, absolute).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The current SOA serial.
    pub fn serial(&self) -> u32 {
        self.soa.serial
    }

    /// The SOA record data.
    pub fn soa(&self) -> &SOA {
        &self.soa
    }

    /// TTL for negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    pub fn negative_ttl(&self) -> u32 {
        self.soa_ttl.min(self.soa.minimum)
    }

    /// The RRset of `rtype` at `name` (exact match, case-insensitive), if any.
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<&RrSet> {
        let key = NameKey::new(name)?;
        self.nodes.get(key.full()).and_then(|node| node.get(rtype))
    }

    /// Every record of the zone (owner names lower-cased), e.g. for export or transfers.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for node in self.nodes.values() {
            for set in &node.rrsets {
                for rdata in &set.rdatas {
                    out.push(Record::from_rdata(
                        node.owner.clone(),
                        set.ttl,
                        rdata.clone(),
                    ));
                }
            }
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(u16::from(a.record_type()).cmp(&u16::from(b.record_type())))
        });
        out
    }

    /// The node whose [`NameKey`] is `key`.
    #[inline]
    pub(crate) fn node(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    pub(crate) fn origin_labels(&self) -> usize {
        self.origin_labels
    }

    /// The prepared negative-answer SOA, if MNAME and RNAME are in the zone.
    pub(crate) fn negative_soa(&self) -> Option<&NegativeSoa> {
        self.negative_soa.as_ref()
    }

    /// Wire length of the origin (its [`NameKey`] length).
    pub(crate) fn origin_wire_len(&self) -> usize {
        self.origin_key.len()
    }

    pub(crate) fn has_cuts(&self) -> bool {
        self.has_cuts
    }

    /// The apex SOA RRset.
    pub(crate) fn soa_rrset(&self) -> Option<&RrSet> {
        self.nodes
            .get(&self.origin_key)
            .and_then(|node| node.get(RecordType::SOA))
    }

    /// A copy of this zone's records with `edit` applied and the serial incremented.
    fn edited(
        &self,
        edit: impl FnOnce(&mut Vec<Record>) -> Result<(), DnsError>,
    ) -> Result<Zone, DnsError> {
        let mut records = self.records();
        edit(&mut records)?;
        for record in records.iter_mut() {
            if let RData::SOA(soa) = &mut record.data {
                // RFC 1982 serial arithmetic: adding 1 is always a valid increment.
                soa.serial = soa.serial.wrapping_add(1);
            }
        }
        Zone::from_records(&self.origin, records).map_err(|errors| {
            errors
                .into_iter()
                .next()
                .unwrap_or_else(|| DnsError::MissingSoa {
                    zone: self.origin.to_ascii(),
                })
        })
    }
}

/// Resolves a possibly relative name (`@` = origin) against `origin`.
fn resolve_name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let mut name = Name::parse(text, Some(origin)).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name)
}

/// Parses one record in the inline form (`name`, `type`, `ttl`, `value` as in `[[dns.zones]]`
/// records) for the zone `origin`: what the control core uses for dynamic records added at run
/// time (`shardgate dns add`). The same checks as for configured records apply.
pub fn parse_record(
    origin: &Name,
    default_ttl: u32,
    record: &crate::config::RecordConfig,
) -> Result<Record, DnsError> {
    parse_inline_record(origin, default_ttl, 0, record)
}

fn parse_inline_record(
    origin: &Name,
    default_ttl: u32,
    index: usize,
    config: &crate::config::RecordConfig,
) -> Result<Record, DnsError> {
    let zone = origin.to_ascii();
    let owner =
        resolve_name(&config.name, origin).map_err(|reason| DnsError::InvalidRecordName {
            zone: zone.clone(),
            index,
            name: config.name.clone(),
            reason,
        })?;
    let rtype_text = config.rtype.to_ascii_uppercase();
    let rtype = rtype_text
        .parse::<RecordType>()
        .ok()
        .filter(|t| SERVED_TYPES.contains(t) && *t != RecordType::SOA)
        .ok_or_else(|| DnsError::UnsupportedRecordType {
            zone: zone.clone(),
            name: config.name.clone(),
            rtype: config.rtype.clone(),
        })?;
    let ttl = config.ttl.unwrap_or(default_ttl);
    let invalid = |reason: String| DnsError::InvalidRecordValue {
        zone: zone.clone(),
        name: config.name.clone(),
        rtype: rtype_text.clone(),
        value: config.value.clone(),
        reason,
    };
    if config.value.contains(['\n', '\r']) {
        return Err(invalid("must be a single line".into()));
    }
    let literal_txt = rtype == RecordType::TXT && !config.value.trim_start().starts_with('"');
    let data = if literal_txt {
        let bytes = config.value.as_bytes();
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![bytes]
        } else {
            bytes.chunks(255).collect()
        };
        RData::TXT(TXT::from_bytes(chunks))
    } else {
        let line = format!("@ {ttl} IN {rtype_text} {}\n", config.value);
        let (_, sets) = Parser::new(line, None, Some(origin.clone()))
            .parse()
            .map_err(|e| invalid(e.to_string()))?;
        let mut found = sets
            .into_values()
            .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>());
        match (found.next(), found.next()) {
            (Some(record), None) if record.record_type() == rtype => record.data,
            _ => return Err(invalid("expected exactly one record".into())),
        }
    };
    Ok(Record::from_rdata(owner, ttl, data))
}

/// The set of zones a shard answers from: an immutable snapshot shared by `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Keyed by the [`NameKey`] bytes of the origin.
    zones: HashMap<Box<[u8]>, Arc<Zone>, RandomState>,
    /// Distinct origin label counts, longest first (longest-match zone selection).
    origin_label_counts: Vec<usize>,
}

impl Catalog {
    /// A catalog of the given zones (a later zone with the same origin replaces an earlier one).
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Catalog {
        let mut catalog = Catalog::default();
        for zone in zones {
            catalog
                .zones
                .insert(zone.origin_key.clone(), Arc::new(zone));
        }
        catalog.reindex();
        catalog
    }

    fn reindex(&mut self) {
        let mut counts: Vec<usize> = self.zones.values().map(|z| z.origin_labels).collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts.dedup();
        self.origin_label_counts = counts;
    }

    /// Builds every zone of the `[dns]` section, reading master files from disk. Returns all
    /// problems found across all zones.
    pub fn load(config: &DnsConfig) -> Result<Catalog, Vec<DnsError>> {
        let mut zones = Vec::new();
        let mut errors = Vec::new();
        for zone_config in &config.zones {
            let built = match &zone_config.file {
                None => Zone::from_inline(zone_config),
                Some(path) => parse_origin(&zone_config.origin)
                    .map_err(|e| vec![e])
                    .and_then(|origin| {
                        let text = std::fs::read_to_string(path).map_err(|source| {
                            vec![DnsError::MasterFileRead {
                                zone: origin.to_ascii(),
                                path: path.clone(),
                                source,
                            }]
                        })?;
                        Zone::from_master_text(&origin, &text, Some(path))
                    }),
            };
            match built {
                Ok(zone) => zones.push(zone),
                Err(more) => errors.extend(more),
            }
        }
        if errors.is_empty() {
            Ok(Catalog::new(zones))
        } else {
            Err(errors)
        }
    }

    /// The zone with exactly this origin.
    pub fn zone(&self, origin: &Name) -> Option<&Zone> {
        let key = NameKey::new(origin)?;
        self.zones.get(key.full()).map(Arc::as_ref)
    }

    /// All zones.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values().map(Arc::as_ref)
    }

    /// The most specific zone containing `name`, if we are authoritative for it.
    #[inline]
    pub fn find_zone(&self, name: &Name) -> Option<&Zone> {
        self.find_zone_by_key(&NameKey::new(name)?)
    }

    /// [`Catalog::find_zone`] for a precomputed key.
    #[inline]
    pub(crate) fn find_zone_by_key(&self, key: &NameKey) -> Option<&Zone> {
        for &count in &self.origin_label_counts {
            if count > key.labels() {
                continue;
            }
            if let Some(zone) = self.zones.get(key.ancestor(count)) {
                return Some(zone);
            }
        }
        None
    }

    fn replaced(&self, zone: Zone) -> Catalog {
        let mut next = self.clone();
        next.zones.insert(zone.origin_key.clone(), Arc::new(zone));
        next
    }

    /// A snapshot in which zone `origin`'s SOA serial is at least `serial` in RFC 1982 serial
    /// arithmetic — so a serial once served never goes back, e.g. when dynamic changes are
    /// re-applied after a restart and some of them cancelled each other. Unchanged when the
    /// serial is already there or no such zone is served.
    pub fn with_serial_at_least(&self, origin: &Name, serial: u32) -> Catalog {
        let Some(zone) = self.zone(origin) else {
            return self.clone();
        };
        // RFC 1982 §3.2: `current` < `serial` when the forward distance is in (0, 2^31).
        let distance = serial.wrapping_sub(zone.serial());
        if distance == 0 || distance >= 1 << 31 {
            return self.clone();
        }
        let mut records = zone.records();
        for record in records.iter_mut() {
            if let RData::SOA(soa) = &mut record.data {
                soa.serial = serial;
            }
        }
        match Zone::from_records(zone.origin(), records) {
            Ok(next) => self.replaced(next),
            Err(_) => self.clone(),
        }
    }

    /// A new snapshot with `record` added to the zone that contains it and that zone's serial
    /// incremented. Adding an existing record only bumps the serial.
    pub fn with_record_added(&self, record: Record) -> Result<Catalog, DnsError> {
        let zone = self
            .find_zone(&record.name)
            .ok_or_else(|| DnsError::NoZoneFor {
                name: record.name.to_ascii(),
            })?;
        if record.record_type() == RecordType::SOA {
            return Err(DnsError::ProtectedRecord {
                name: record.name.to_ascii(),
                rtype: "SOA".into(),
            });
        }
        let next = zone.edited(|records| {
            records.push(record);
            Ok(())
        })?;
        Ok(self.replaced(next))
    }

    /// A new snapshot without the given record (`rdata = Some`) or without the whole RRset
    /// (`rdata = None`), with the zone's serial incremented.
    pub fn with_record_removed(
        &self,
        name: &Name,
        rtype: RecordType,
        rdata: Option<&RData>,
    ) -> Result<Catalog, DnsError> {
        let zone = self.find_zone(name).ok_or_else(|| DnsError::NoZoneFor {
            name: name.to_ascii(),
        })?;
        let is_apex = name == zone.origin();
        if rtype == RecordType::SOA || (rtype == RecordType::NS && is_apex) {
            return Err(DnsError::ProtectedRecord {
                name: name.to_ascii(),
                rtype: rtype.to_string(),
            });
        }
        let next = zone.edited(|records| {
            let before = records.len();
            records.retain(|r| {
                !(r.name == *name
                    && r.record_type() == rtype
                    && rdata.is_none_or(|wanted| *wanted == r.data))
            });
            if records.len() == before {
                return Err(DnsError::RecordNotFound {
                    name: name.to_ascii(),
                    rtype: rtype.to_string(),
                });
            }
            Ok(())
        })?;
        Ok(self.replaced(next))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    /// The zone most tests answer from.
    pub(crate) const EXAMPLE_ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@       IN SOA ns1.example.com. hostmaster.example.com. ( 2024010101 7200 3600 1209600 300 )
@       IN NS  ns1
@       IN NS  ns2.example.net.
@       IN MX  10 mail
@       IN A   192.0.2.1
@       IN TXT "v=spf1 -all"
@       IN CAA 0 issue "letsencrypt.org"
ns1     IN A   192.0.2.53
mail    IN A   192.0.2.25
mail    IN AAAA 2001:db8::25
www     300 IN A 192.0.2.80
www     300 IN A 192.0.2.81
www     IN AAAA 2001:db8::80
alias   IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
outside IN CNAME www.example.org.
dangling IN CNAME nothere
loop1   IN CNAME loop2
loop2   IN CNAME loop1
*.wild  IN A   192.0.2.99
*.wild  IN TXT "wild"
exists.wild IN A 192.0.2.100
*.wcname IN CNAME www
a.b.ent IN A   192.0.2.7
*.ent   IN A   192.0.2.8
sub     IN NS  ns.sub
sub     IN NS  ns.elsewhere.net.
ns.sub  IN A   192.0.2.153
_sip._tcp IN SRV 10 5 5060 www
txt     IN TXT "first string" "second string"
4.3.2.1 IN PTR www
"#;

    pub(crate) fn example_zone() -> Zone {
        let origin = Name::from_str("example.com.").unwrap();
        Zone::from_master_text(&origin, EXAMPLE_ZONE, None).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn master_file_builds_nodes_ents_cuts_and_wildcards() {
        let zone = example_zone();
        assert_eq!(zone.serial(), 2024010101);
        assert_eq!(zone.negative_ttl(), 300);
        assert_eq!(
            zone.rrset(&name("WWW.Example.COM."), RecordType::A)
                .map(|s| s.rdatas().len()),
            Some(2)
        );
        assert_eq!(
            zone.rrset(&name("www.example.com."), RecordType::A)
                .map(RrSet::ttl),
            Some(300)
        );
        let node = |n: &str| zone.node(NameKey::new(&name(n)).unwrap().full()).unwrap();
        let ent = node("b.ent.example.com.");
        assert!(ent.rrsets.is_empty());
        assert!(node("sub.example.com.").cut);
        assert!(node("wild.example.com.").wildcard_child);
        assert!(zone
            .rrset(&name("www.example.com."), RecordType::A)
            .unwrap()
            .question_wire()
            .is_some());
        assert!(zone
            .rrset(&name("example.com."), RecordType::MX)
            .unwrap()
            .question_wire()
            .is_none());
        assert!(zone.has_cuts());
        let txt = zone
            .rrset(&name("txt.example.com."), RecordType::TXT)
            .unwrap();
        match &txt.rdatas()[0] {
            RData::TXT(t) => assert_eq!(t.txt_data.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn catalog_picks_most_specific_zone() {
        let parent = example_zone();
        let child = Zone::from_master_text(
            &name("sub.example.com."),
            "@ 60 IN SOA ns a 1 2 3 4 5\n@ IN NS ns\n",
            None,
        )
        .unwrap();
        let catalog = Catalog::new([parent, child]);
        assert_eq!(
            catalog
                .find_zone(&name("x.SUB.example.com."))
                .unwrap()
                .origin(),
            &name("sub.example.com.")
        );
        assert_eq!(
            catalog
                .find_zone(&name("www.example.com."))
                .unwrap()
                .origin(),
            &name("example.com.")
        );
        assert_eq!(
            catalog.find_zone(&name("example.com.")).unwrap().origin(),
            &name("example.com.")
        );
        assert!(catalog.find_zone(&name("com.")).is_none());
        assert!(catalog.find_zone(&name("example.org.")).is_none());
    }

    #[test]
    fn dynamic_add_and_remove_bump_serial_and_keep_old_snapshot() {
        let catalog = Catalog::new([example_zone()]);
        let owner = name("_acme-challenge.example.com.");
        let txt = RData::TXT(TXT::new(vec!["token-1".into()]));
        let added = catalog
            .with_record_added(Record::from_rdata(owner.clone(), 60, txt.clone()))
            .unwrap();
        let origin = name("example.com.");
        assert_eq!(catalog.zone(&origin).unwrap().serial(), 2024010101);
        assert_eq!(added.zone(&origin).unwrap().serial(), 2024010102);
        assert!(catalog
            .zone(&origin)
            .unwrap()
            .rrset(&owner, RecordType::TXT)
            .is_none());
        assert!(added
            .zone(&origin)
            .unwrap()
            .rrset(&owner, RecordType::TXT)
            .is_some());

        let removed = added
            .with_record_removed(&owner, RecordType::TXT, Some(&txt))
            .unwrap();
        assert_eq!(removed.zone(&origin).unwrap().serial(), 2024010103);
        let key = NameKey::new(&owner).unwrap();
        assert!(removed.zone(&origin).unwrap().node(key.full()).is_none());

        assert!(matches!(
            removed.with_record_removed(&owner, RecordType::TXT, None),
            Err(DnsError::RecordNotFound { .. })
        ));
        assert!(matches!(
            catalog.with_record_added(Record::from_rdata(name("x.example.org."), 60, txt.clone())),
            Err(DnsError::NoZoneFor { .. })
        ));
        assert!(matches!(
            catalog.with_record_added(Record::from_rdata(
                name("www.example.com."),
                60,
                RData::CNAME(hickory_proto::rr::rdata::CNAME(name("x.example.com.")))
            )),
            Err(DnsError::CnameConflict { .. })
        ));
        assert!(matches!(
            catalog.with_record_removed(&origin, RecordType::NS, None),
            Err(DnsError::ProtectedRecord { .. })
        ));
    }

    #[test]
    fn load_reads_master_files_with_relative_includes() {
        let dir = std::env::temp_dir().join(format!("shardgate-dns-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.inc"), "www IN A 192.0.2.80\n").unwrap();
        std::fs::write(
            dir.join("example.net.zone"),
            "$TTL 300\n@ IN SOA ns1 hostmaster 5 2 3 4 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n$INCLUDE hosts.inc\n",
        )
        .unwrap();
        let config = DnsConfig {
            zones: vec![ZoneConfig {
                origin: "example.net".into(),
                file: Some(dir.join("example.net.zone")),
                default_ttl: 3600,
                soa: None,
                records: Vec::new(),
            }],
            ..DnsConfig::default()
        };
        assert!(config.validate().is_empty());
        let catalog = Catalog::load(&config).unwrap();
        let zone = catalog.zone(&name("example.net.")).unwrap();
        assert_eq!(zone.serial(), 5);
        assert!(zone
            .rrset(&name("www.example.net."), RecordType::A)
            .is_some());

        let missing = DnsConfig {
            zones: vec![ZoneConfig {
                file: Some(dir.join("absent.zone")),
                ..config.zones[0].clone()
            }],
            ..DnsConfig::default()
        };
        let errors = Catalog::load(&missing).unwrap_err();
        assert!(matches!(errors[..], [DnsError::MasterFileRead { .. }]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn serial_wraps_per_rfc1982() {
        let origin = name("wrap.test.");
        let zone =
            Zone::from_master_text(&origin, "@ 60 IN SOA ns a 4294967295 2 3 4 5\n", None).unwrap();
        let catalog = Catalog::new([zone]);
        let next = catalog
            .with_record_added(Record::from_rdata(
                name("a.wrap.test."),
                60,
                RData::A("192.0.2.1".parse().unwrap()),
            ))
            .unwrap();
        let serial = next.zone(&origin).unwrap().serial();
        assert_eq!(serial, 0);
        assert!(
            hickory_proto::rr::SerialNumber::new(serial)
                > hickory_proto::rr::SerialNumber::new(u32::MAX)
        );
    }

    #[test]
    fn zone_errors_are_reported() {
        let origin = name("bad.test.");
        let errors = Zone::from_master_text(&origin, "www 60 IN A 192.0.2.1\n", None).unwrap_err();
        assert!(matches!(errors[..], [DnsError::MissingSoa { .. }]));
        let errors = Zone::from_master_text(
            &origin,
            "@ 60 IN SOA ns a 1 2 3 4 5\nx IN CNAME y\nx IN A 192.0.2.1\n",
            None,
        )
        .unwrap_err();
        assert!(matches!(errors[..], [DnsError::CnameConflict { .. }]));
        let errors = Zone::from_master_text(
            &origin,
            "@ 60 IN SOA ns a 1 2 3 4 5\nwww IN A not-an-ip\n",
            None,
        )
        .unwrap_err();
        assert!(matches!(errors[..], [DnsError::MasterFileParse { .. }]));
    }

    #[test]
    fn inline_txt_literal_is_split_into_255_byte_strings() {
        let long = "k".repeat(600);
        let config = ZoneConfig {
            origin: "dkim.test".into(),
            file: None,
            default_ttl: 300,
            soa: Some(crate::config::SoaConfig {
                mname: "ns".into(),
                rname: "hostmaster".into(),
                serial: 1,
                refresh: 1,
                retry: 1,
                expire: 1,
                minimum: 1,
                ttl: None,
            }),
            records: vec![crate::config::RecordConfig {
                name: "sel._domainkey".into(),
                rtype: "txt".into(),
                ttl: None,
                value: long.clone(),
            }],
        };
        let zone = Zone::from_inline(&config).unwrap();
        let set = zone
            .rrset(&name("sel._domainkey.dkim.test."), RecordType::TXT)
            .unwrap();
        let RData::TXT(txt) = &set.rdatas()[0] else {
            panic!("not TXT")
        };
        let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![255, 255, 90]);
        assert_eq!(txt.txt_data.concat(), long.as_bytes());
    }

    #[test]
    fn serial_floor_raises_but_never_lowers() {
        let origin = Name::from_str("example.com.").expect("name");
        let zone = Zone::from_master_text(&origin, EXAMPLE_ZONE, None).expect("zone");
        let catalog = Catalog::new([zone]);
        let serial = |c: &Catalog| c.zone(&origin).map(Zone::serial);
        assert_eq!(serial(&catalog), Some(2024010101));
        let raised = catalog.with_serial_at_least(&origin, 2024010109);
        assert_eq!(serial(&raised), Some(2024010109));
        assert!(raised.zone(&origin).and_then(|z| z.rrset(&Name::from_str("www.example.com.").expect("www"), RecordType::A)).is_some());
        assert_eq!(serial(&raised.with_serial_at_least(&origin, 5)), Some(2024010109), "older serial");
        // Wrapping: 1 is "after" 4024010109 in serial arithmetic (forward distance < 2^31).
        let near_end = raised.with_serial_at_least(&origin, 4_024_010_109);
        assert_eq!(serial(&near_end), Some(4_024_010_109));
        let wrapped = near_end.with_serial_at_least(&origin, 1);
        assert_eq!(serial(&wrapped), Some(1));
        let other = Name::from_str("example.org.").expect("name");
        assert_eq!(serial(&catalog.with_serial_at_least(&other, 9)), Some(2024010101));
    }
}
