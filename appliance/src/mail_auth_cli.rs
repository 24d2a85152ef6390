//! `shardgate dns-records DOMAIN`: the DNS records a sending domain (`[[email.domains]]`)
//! needs — DKIM TXT for every published key, and the MX, SPF and DMARC records its entry asks
//! for — as zone-file lines to publish in DNS we do not serve (`dns_mode = "external"`).
//!
//! Reads the keys through the storage layer directly (no running appliance needed); a domain
//! without a key yet gets its first one now, exactly as the appliance would on first use.
//!
//! `--check` asks DNS instead of printing: each record (MX, SPF, DKIM of every published
//! selector, DMARC) is reported OK, MISSING or DIFFERS (expected and found shown), and the
//! exit status is 1 unless every one is OK (2 when DNS could not be asked).

use std::net::SocketAddr;
use std::process::ExitCode;

use hickory_proto::rr::RecordType;

use shardgate_core::config::{Config, DnsMode};
use shardgate_core::mail::dkim::records::{check_record, domain_records, record_kind, zone_file_lines, MailRecord, RecordStatus};
use shardgate_core::mail::dkim::{unix_now, DkimKeys};

/// The records `domain` needs, or the exit code after saying why not.
fn wanted_records(config: &Config, domain: &str) -> Result<(Vec<MailRecord>, Vec<String>), ExitCode> {
    let wanted = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(entry) = config.mail_auth.domain(&wanted) else {
        let known: Vec<&str> = config.mail_auth.domains.iter().map(|d| d.name.as_str()).collect();
        eprintln!("{wanted} is not in [[email.domains]] (configured: {})", if known.is_empty() { "none".into() } else { known.join(", ") });
        return Err(ExitCode::from(1));
    };
    let storage = match shardgate_core::storage::open(config.storage, &config.runtime.data_dir) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("cannot open storage: {e}");
            return Err(ExitCode::from(1));
        }
    };
    let keys = DkimKeys::new(storage);
    if let Err(e) = keys.maintain(entry, unix_now()) {
        eprintln!("DKIM keys of {wanted}: {e}");
        return Err(ExitCode::from(1));
    }
    let state = match keys.state(&wanted) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("{e}");
            return Err(ExitCode::from(1));
        }
    };
    let mut notes = Vec::new();
    if entry.dns_mode == DnsMode::Internal {
        notes.push(format!("{wanted} uses dns_mode = \"internal\": the appliance publishes these itself"));
    }
    for key in &state.keys {
        notes.push(format!("selector {}: {:?} since {} (unix), {}", key.selector, key.phase, key.phase_since, key.algorithm));
    }
    Ok((domain_records(entry, &state), notes))
}

/// Prints the records of `domain` from `config`.
pub fn dns_records(config: &Config, domain: &str) -> ExitCode {
    let (records, notes) = match wanted_records(config, domain) {
        Ok(found) => found,
        Err(code) => return code,
    };
    for note in notes {
        println!("; {note}");
    }
    for line in zone_file_lines(&records) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// Asks DNS for each record of `domain` and reports how it compares.
pub fn check_dns_records(config: &Config, domain: &str, resolver: Option<SocketAddr>) -> ExitCode {
    let (records, _) = match wanted_records(config, domain) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let resolver = resolver
        .or_else(|| config.mail_auth.inbound.as_ref().and_then(|auth| auth.resolver))
        .or_else(|| config.email.as_ref().and_then(|email| email.delivery.resolver))
        .or_else(crate::dns_query::system_resolver);
    let Some(resolver) = resolver else {
        eprintln!("no resolver: give --resolver ip:port, or set [email.auth] resolver");
        return ExitCode::from(2);
    };
    println!("; asking {resolver}");
    let (mut bad, mut failed) = (0, 0);
    for record in &records {
        let rtype = if record.rtype == "MX" { RecordType::MX } else { RecordType::TXT };
        let label = format!("{:<5} {} {}", record_kind(record), record.rtype, record.name);
        match crate::dns_query::query(resolver, &record.name, rtype) {
            Err(e) => {
                failed += 1;
                println!("ERROR    {label}\n         {e}");
            }
            Ok(answer) => match check_record(record, &answer.values) {
                RecordStatus::Ok => println!("OK       {label}"),
                RecordStatus::Missing => {
                    bad += 1;
                    println!("MISSING  {label}\n         expected: {}", record.value);
                }
                RecordStatus::Differs(found) => {
                    bad += 1;
                    println!("DIFFERS  {label}\n         expected: {}", record.value);
                    for value in found {
                        println!("         found:    {value}");
                    }
                }
            },
        }
    }
    match (bad, failed) {
        (0, 0) => ExitCode::SUCCESS,
        (_, 0) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}
