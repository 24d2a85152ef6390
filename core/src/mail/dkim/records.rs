//! The DNS records a sending domain needs: one DKIM TXT per published key (published, active
//! and retiring), and the MX, SPF and DMARC records its `[[email.domains]]` entry asks for.
//!
//! Owns: the record set ([`domain_records`]), the dynamic DNS changes that bring our own zones
//! to it ([`reconcile`]) and the zone-file lines `shardgate dns-records` prints
//! ([`zone_file_lines`]). Not here: applying changes (`crate::dns::dynamic`).

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
}
