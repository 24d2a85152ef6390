//! `shardgate dns-records DOMAIN`: the DNS records a sending domain (`[[email.domains]]`)
//! needs — DKIM TXT for every published key, and the MX, SPF and DMARC records its entry asks
//! for — as zone-file lines to publish in DNS we do not serve (`dns_mode = "external"`).
//!
//! Reads the keys through the storage layer directly (no running appliance needed); a domain
//! without a key yet gets its first one now, exactly as the appliance would on first use.

use std::process::ExitCode;

use shardgate_core::config::{Config, DnsMode};
use shardgate_core::mail::dkim::records::{domain_records, zone_file_lines};
use shardgate_core::mail::dkim::{unix_now, DkimKeys};

/// Prints the records of `domain` from `config`.
pub fn dns_records(config: &Config, domain: &str) -> ExitCode {
    let wanted = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some(entry) = config.mail_auth.domain(&wanted) else {
        let known: Vec<&str> = config.mail_auth.domains.iter().map(|d| d.name.as_str()).collect();
        eprintln!("{wanted} is not in [[email.domains]] (configured: {})", if known.is_empty() { "none".into() } else { known.join(", ") });
        return ExitCode::from(1);
    };
    let storage = match shardgate_core::storage::open(config.storage, &config.runtime.data_dir) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!("cannot open storage: {e}");
            return ExitCode::from(1);
        }
    };
    let keys = DkimKeys::new(storage);
    if let Err(e) = keys.maintain(entry, unix_now()) {
        eprintln!("DKIM keys of {wanted}: {e}");
        return ExitCode::from(1);
    }
    let state = match keys.state(&wanted) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if entry.dns_mode == DnsMode::Internal {
        println!("; {wanted} uses dns_mode = \"internal\": the appliance publishes these itself");
    }
    for key in &state.keys {
        println!("; selector {}: {:?} since {} (unix), {}", key.selector, key.phase, key.phase_since, key.algorithm);
    }
    for line in zone_file_lines(&domain_records(entry, &state)) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
