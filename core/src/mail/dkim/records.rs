//! The DNS records a sending domain needs: one DKIM TXT per published key (published, active
//! and retiring), and the MX, SPF and DMARC records its `[[email.domains]]` entry asks for.
//!
//! Owns: the record set ([`domain_records`]), the dynamic DNS changes that bring our own zones
//! to it ([`reconcile`]) and the zone-file lines `shardgate dns-records` prints
//! ([`zone_file_lines`]), and the comparison `shardgate dns-records --check` makes between
//! a wanted record and what DNS answers ([`check_record`]). Not here: applying changes
//! (`crate::dns::dynamic`), querying DNS (the CLI does).

use crate::config::MailDomain;
use crate::dns::dynamic::{ChangeKind, DnsChange};

use super::rotation::DomainKeyState;

/// TTL of the records we publish.
pub const RECORD_TTL: u32 = 300;

/// One record (owner name without trailing dot, type, presentation value — TXT unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRecord {
    /// Owner name.
    pub name: String,
    /// `TXT` or `MX`.
    pub rtype: &'static str,
    /// TXT text unquoted (split into strings on output), or `10 host.` for MX.
    pub value: String,
}

/// The DKIM key record value (`v=DKIM1; k=...; p=...`).
pub fn dkim_value(key_type: &str, public_key: &str) -> String {
    format!("v=DKIM1; k={key_type}; p={public_key}")
}

/// Every record `domain` needs given its key state.
pub fn domain_records(domain: &MailDomain, state: &DomainKeyState) -> Vec<MailRecord> {
    let mut out = Vec::new();
    for key in &state.keys {
        let key_type = if key.algorithm == "ed25519-sha256" { "ed25519" } else { "rsa" };
        out.push(MailRecord {
            name: format!("{}._domainkey.{}", key.selector, domain.name),
            rtype: "TXT",
            value: dkim_value(key_type, &key.public_key),
        });
    }
    if let Some(mx) = &domain.publish.mx {
        out.push(MailRecord { name: domain.name.clone(), rtype: "MX", value: format!("10 {mx}.") });
    }
    if let Some(spf) = &domain.publish.spf {
        out.push(MailRecord { name: domain.name.clone(), rtype: "TXT", value: spf.clone() });
    }
    if let Some(dmarc) = &domain.publish.dmarc {
        out.push(MailRecord { name: format!("_dmarc.{}", domain.name), rtype: "TXT", value: dmarc.clone() });
    }
    out
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Whether `change` is one we made for `domain` (a record in [`domain_records`]'s shape).
fn ours(domain: &MailDomain, change: &DnsChange) -> bool {
    let name = change.name.trim_end_matches('.').to_ascii_lowercase();
    let dkim = name.ends_with(&format!("._domainkey.{}", domain.name))
        && change.value.as_deref().is_some_and(|v| v.starts_with("v=DKIM1;"));
    let apex = name == domain.name
        && (change.rtype == "MX" || change.value.as_deref().is_some_and(|v| v.starts_with("v=spf1")));
    let dmarc = name == format!("_dmarc.{}", domain.name) && change.value.as_deref().is_some_and(|v| v.starts_with("v=DMARC1"));
    dkim || apex || dmarc
}

/// The changes that bring the dynamic records in force (`existing`, in order) to `wanted`:
/// adds for what is missing, removals for records of ours no longer wanted (a withdrawn key,
/// a changed SPF). Records added by hand or by ACME are never touched.
pub fn reconcile(domain: &MailDomain, wanted: &[MailRecord], existing: &[DnsChange]) -> Vec<DnsChange> {
    let mut present: Vec<&DnsChange> = Vec::new();
    for change in existing {
        match change.kind {
            ChangeKind::Add => present.push(change),
            ChangeKind::Remove => present.retain(|p| {
                !(same_name(&p.name, &change.name) && p.rtype == change.rtype && (change.value.is_none() || p.value == change.value))
            }),
        }
    }
    let mut out = Vec::new();
    for record in wanted {
        let found = present
            .iter()
            .any(|p| same_name(&p.name, &record.name) && p.rtype == record.rtype && p.value.as_deref() == Some(record.value.as_str()));
        if !found {
            out.push(DnsChange {
                kind: ChangeKind::Add,
                name: record.name.clone(),
                rtype: record.rtype.to_string(),
                value: Some(record.value.clone()),
                ttl: Some(RECORD_TTL),
            });
        }
    }
    for change in present {
        let still_wanted = wanted.iter().any(|r| {
            same_name(&change.name, &r.name) && change.rtype == r.rtype && change.value.as_deref() == Some(r.value.as_str())
        });
        if ours(domain, change) && !still_wanted {
            out.push(DnsChange {
                kind: ChangeKind::Remove,
                name: change.name.clone(),
                rtype: change.rtype.clone(),
                value: change.value.clone(),
                ttl: None,
            });
        }
    }
    out
}

/// Zone-file lines for the records (TXT split into quoted strings of at most 255 octets).
pub fn zone_file_lines(records: &[MailRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let value = if r.rtype == "TXT" {
                r.value
                    .as_bytes()
                    .chunks(255)
                    .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk).replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                r.value.clone()
            };
            format!("{}.\t{RECORD_TTL}\tIN\t{}\t{value}", r.name, r.rtype)
        })
        .collect()
}

/// What a record is, for reports.
pub fn record_kind(record: &MailRecord) -> &'static str {
    if record.rtype == "MX" {
        "MX"
    } else if record.value.starts_with("v=DKIM1") {
        "DKIM"
    } else if record.value.starts_with("v=spf1") {
        "SPF"
    } else if record.value.starts_with("v=DMARC1") {
        "DMARC"
    } else {
        "TXT"
    }
}

/// How DNS compares to a wanted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordStatus {
    /// Published as wanted (tag order, case of tag names and whitespace aside).
    Ok,
    /// Nothing of its kind at its name.
    Missing,
    /// Something of its kind is there, but not this: what was found.
    Differs(Vec<String>),
}

/// DKIM/DMARC tag lists compared as sets of `tag=value`, whitespace removed (RFC 6376
/// §3.2: whitespace around and inside values such as `p=` is not significant).
fn tag_set(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = text
        .split(';')
        .map(|tag| tag.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .filter(|tag| !tag.is_empty())
        .map(|tag| match tag.split_once('=') {
            Some((name, value)) => format!("{}={value}", name.to_ascii_lowercase()),
            None => tag,
        })
        .collect();
    tags.sort();
    tags
}

/// `record` against `found`: the values DNS has at its name for its type (TXT strings
/// joined; MX as `preference host.`).
pub fn check_record(record: &MailRecord, found: &[String]) -> RecordStatus {
    let kind = record_kind(record);
    let relevant: Vec<String> = found
        .iter()
        .filter(|value| match kind {
            "SPF" => value.trim_start().to_ascii_lowercase().starts_with("v=spf1"),
            "DMARC" => value.trim_start().to_ascii_uppercase().starts_with("V=DMARC1"),
            _ => true,
        })
        .cloned()
        .collect();
    if relevant.is_empty() {
        return RecordStatus::Missing;
    }
    let same = |value: &String| match kind {
        "MX" => {
            let host = |v: &str| v.split_whitespace().last().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
            host(value) == host(&record.value)
        }
        "SPF" => {
            let terms = |v: &str| v.split_whitespace().map(str::to_ascii_lowercase).collect::<Vec<_>>();
            terms(value) == terms(&record.value)
        }
        "DKIM" | "DMARC" => tag_set(value) == tag_set(&record.value),
        _ => value.trim() == record.value.trim(),
    };
    if relevant.iter().any(same) {
        RecordStatus::Ok
    } else {
        RecordStatus::Differs(relevant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DkimPolicy, DnsMode, PublishRecords};
    use crate::mail::dkim::rotation::{KeyEntry, KeyPhase};

    fn domain() -> MailDomain {
        MailDomain {
            name: "example.com".into(),
            dkim: DkimPolicy::defaults(),
            sign: true,
            dns_mode: DnsMode::Internal,
            publish: PublishRecords { mx: Some("mx.example.com".into()), spf: Some("v=spf1 mx -all".into()), dmarc: None },
        }
    }

    fn state(selectors: &[&str]) -> DomainKeyState {
        let mut state = DomainKeyState::default();
        for (i, s) in selectors.iter().enumerate() {
            let s = *s;
            state.add(KeyEntry {
                selector: s.to_string(),
                algorithm: "rsa-sha256".into(),
                public_key: format!("PK-{s}"),
                generation: i as u32 + 1,
                phase: KeyPhase::Active,
                phase_since: 0,
            });
        }
        state
    }

    fn apply(existing: &mut Vec<DnsChange>, changes: Vec<DnsChange>) {
        existing.extend(changes);
    }

    #[test]
    fn reconcile_adds_then_is_idempotent_then_withdraws_only_ours() {
        let domain = domain();
        let mut existing = vec![DnsChange {
            kind: ChangeKind::Add,
            name: "_acme-challenge.example.com".into(),
            rtype: "TXT".into(),
            value: Some("token".into()),
            ttl: None,
        }];
        let wanted = domain_records(&domain, &state(&["s1", "s1-2"]));
        let first = reconcile(&domain, &wanted, &existing);
        assert_eq!(first.len(), 4, "{first:?}");
        assert!(first.iter().all(|c| c.kind == ChangeKind::Add));
        apply(&mut existing, first);
        assert!(reconcile(&domain, &wanted, &existing).is_empty());
        // s1 withdrawn: exactly its record goes; the ACME token stays.
        let wanted = domain_records(&domain, &state(&["s1-2"]));
        let changes = reconcile(&domain, &wanted, &existing);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].kind, ChangeKind::Remove);
        assert_eq!(changes[0].name, "s1._domainkey.example.com");
    }

    #[test]
    fn zone_file_lines_split_long_txt() {
        let long = "a".repeat(300);
        let lines = zone_file_lines(&[MailRecord { name: "s._domainkey.example.com".into(), rtype: "TXT", value: long }]);
        assert_eq!(lines[0], format!("s._domainkey.example.com.\t300\tIN\tTXT\t\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45)));
    }

    #[test]
    fn checks_tell_ok_missing_and_differs() {
        let dkim = MailRecord { name: "s._domainkey.example.com".into(), rtype: "TXT", value: "v=DKIM1; k=rsa; p=ABCD".into() };
        assert_eq!(record_kind(&dkim), "DKIM");
        assert_eq!(check_record(&dkim, &["v=DKIM1;k=rsa; p=AB CD ".into()]), RecordStatus::Ok);
        assert_eq!(check_record(&dkim, &[]), RecordStatus::Missing);
        assert_eq!(check_record(&dkim, &["v=DKIM1; k=rsa; p=OTHER".into()]), RecordStatus::Differs(vec!["v=DKIM1; k=rsa; p=OTHER".into()]));

        let spf = MailRecord { name: "example.com".into(), rtype: "TXT", value: "v=spf1 mx -all".into() };
        // Other TXT records at the apex are not SPF: missing, not differing.
        assert_eq!(check_record(&spf, &["google-site-verification=x".into()]), RecordStatus::Missing);
        assert_eq!(check_record(&spf, &["v=spf1  MX -all".into(), "x".into()]), RecordStatus::Ok);
        assert_eq!(check_record(&spf, &["v=spf1 -all".into()]), RecordStatus::Differs(vec!["v=spf1 -all".into()]));

        let dmarc = MailRecord { name: "_dmarc.example.com".into(), rtype: "TXT", value: "v=DMARC1; p=reject; rua=mailto:d@example.com".into() };
        assert_eq!(check_record(&dmarc, &["v=DMARC1; rua=mailto:d@example.com; p=reject;".into()]), RecordStatus::Ok);
        assert!(matches!(check_record(&dmarc, &["v=DMARC1; p=none".into()]), RecordStatus::Differs(_)));

        let mx = MailRecord { name: "example.com".into(), rtype: "MX", value: "10 mx.example.com.".into() };
        assert_eq!(check_record(&mx, &["20 MX.example.com.".into()]), RecordStatus::Ok);
        assert!(matches!(check_record(&mx, &["10 other.example.".into()]), RecordStatus::Differs(_)));
    }
}
