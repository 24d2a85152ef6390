//! Mail authentication and protection settings: `[[email.domains]]` (our sending domains:
//! DKIM keys and the DNS records they need), `[email.auth]` (inbound SPF/DKIM/DMARC/ARC
//! checks), `[email.limits]` (rate limits, `shardgate_smtp::RateLimitConfig`) and
//! `[email.scan]` and `[email.dnsbl]` (taken out here, checked in `super::mail_protection`).
//!
//! Owns: taking `domains`, `auth`, `limits`, `scan` and `dnsbl` out of the `[email]` table before the rest of it is checked
//! (`super::email`), their raw shape, their checks (every problem named with its section,
//! domain and field) and the typed result [`MailAuthSettings`].
//! Does not own: key generation, rotation and signing (`crate::mail::dkim`), the inbound checks
//! themselves (`crate::mail::auth`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::mail_protection::{validate_dnsbl, validate_scan, DnsblSettings, ScanPolicy};
use super::problems::ProblemList;

/// Default DKIM selector.
pub const DEFAULT_SELECTOR: &str = "shardgate";
/// Default RSA key size in bits.
pub const DEFAULT_RSA_BITS: u32 = 2048;
/// Default days between DKIM key rotations (0 = never rotate).
pub const DEFAULT_ROTATE_DAYS: u32 = 90;
/// Default hours a new key is published before signing switches to it.
pub const DEFAULT_PUBLISH_GRACE_HOURS: u32 = 48;
/// Default hours a retired key stays published (mail in flight still verifies).
pub const DEFAULT_WITHDRAW_AFTER_HOURS: u32 = 7 * 24;

/// `[[email.domains]]` and `[email.auth]`, checked. Empty when neither is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailAuthSettings {
    /// Our sending domains, in file order.
    pub domains: Vec<MailDomain>,
    /// Inbound checks; `None` = no checks (no `Authentication-Results` added).
    pub inbound: Option<InboundAuthSettings>,
    /// `[email.limits]`: rate limits, enforced per shard.
    pub limits: shardgate_smtp::RateLimitConfig,
    /// `[email.scan]`: what `scan = true` routes block, and the spam score rules.
    pub scan: ScanPolicy,
    /// `[email.dnsbl]`: DNS blocklists checked at connect (`None`: none).
    pub dnsbl: Option<DnsblSettings>,
}

impl MailAuthSettings {
    /// The entry for `domain` (any case), if configured.
    pub fn domain(&self, domain: &str) -> Option<&MailDomain> {
        self.domains.iter().find(|d| d.name.eq_ignore_ascii_case(domain))
    }
}

/// One sending domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailDomain {
    /// The domain, lower case, no trailing dot.
    pub name: String,
    /// DKIM signing key policy.
    pub dkim: DkimPolicy,
    /// Whether mail from this domain leaving on `process`/`forward` routes is signed.
    pub sign: bool,
    /// Who serves the domain's DNS.
    pub dns_mode: DnsMode,
    /// Besides DKIM, which records we publish (internal) or print (`shardgate dns-records`).
    pub publish: PublishRecords,
}

/// The DKIM algorithm of a domain's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// `rsa-sha256` (RFC 6376), `key_size` bits.
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The name used in config and in the `a=` tag.
    pub fn name(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The `k=` tag of the DKIM key record.
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa",
            DkimAlgorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// `dkim = { selector, algorithm, key_size, rotate_days, ... }`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimPolicy {
    /// Base selector: the first key uses it as is, rotated keys `<selector>-<n>`.
    pub selector: String,
    /// Key algorithm.
    pub algorithm: DkimAlgorithm,
    /// RSA modulus size in bits (2048, 3072 or 4096); ignored for Ed25519.
    pub key_size: u32,
    /// Days between rotations; 0 = never.
    pub rotate_days: u32,
    /// Hours a new key is published before signing switches to it.
    pub publish_grace_hours: u32,
    /// Hours a retired key stays published before it is withdrawn.
    pub withdraw_after_hours: u32,
}

impl DkimPolicy {
    /// The defaults (`ed25519-sha256` is not the default: many receivers still verify only RSA).
    pub fn defaults() -> DkimPolicy {
        DkimPolicy {
            selector: DEFAULT_SELECTOR.to_string(),
            algorithm: DkimAlgorithm::RsaSha256,
            key_size: DEFAULT_RSA_BITS,
            rotate_days: DEFAULT_ROTATE_DAYS,
            publish_grace_hours: DEFAULT_PUBLISH_GRACE_HOURS,
            withdraw_after_hours: DEFAULT_WITHDRAW_AFTER_HOURS,
        }
    }
}

/// Who serves a domain's DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Our own authoritative DNS (`[dns]`): the control core publishes the records.
    Internal,
    /// Someone else's: `shardgate dns-records DOMAIN` prints what to publish.
    External,
}

/// Records published besides DKIM. Values are the record data; `None` = not published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishRecords {
    /// MX target host (`10 <host>.`).
    pub mx: Option<String>,
    /// SPF TXT at the domain (`v=spf1 ...`).
    pub spf: Option<String>,
    /// DMARC TXT at `_dmarc.<domain>` (`v=DMARC1; ...`).
    pub dmarc: Option<String>,
}

/// The inbound-check criteria of an email route's `match` (`spf`, `dkim`, `dmarc`: a result
/// name or a list of them; any listed result matches). Decided after DATA; a route with them
/// never matches a message that was not checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthMatch {
    /// Accepted SPF results.
    pub spf: Option<Vec<crate::mail::auth::AuthResult>>,
    /// Accepted DKIM results.
    pub dkim: Option<Vec<crate::mail::auth::AuthResult>>,
    /// Accepted DMARC results.
    pub dmarc: Option<Vec<crate::mail::auth::AuthResult>>,
}

impl AuthMatch {
    /// True without any criterion.
    pub fn is_empty(&self) -> bool {
        self.spf.is_none() && self.dkim.is_none() && self.dmarc.is_none()
    }
}

/// Checks the `spf`/`dkim`/`dmarc` criteria of a route's `match`.
pub(super) fn auth_match(problems: &mut ProblemList, scope: &str, fields: [(&str, Option<Vec<String>>); 3]) -> AuthMatch {
    let mut out = AuthMatch::default();
    for (field, list) in fields {
        let Some(list) = list else { continue };
        let mut results = Vec::new();
        for item in &list {
            match crate::mail::auth::AuthResult::parse(item.trim()) {
                Some(result) => results.push(result),
                None => problems.section(
                    scope,
                    &format!("match.{field}"),
                    format!("`{item}` is not a result: pass, fail, softfail, neutral, none, temperror or permerror"),
                ),
            }
        }
        if list.is_empty() {
            problems.section(scope, &format!("match.{field}"), "is empty: leave it out to match every result");
        }
        match field {
            "spf" => out.spf = Some(results),
            "dkim" => out.dkim = Some(results),
            _ => out.dmarc = Some(results),
        }
    }
    out
}

/// `[email.auth]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundAuthSettings {
    /// The DNS resolver the checks query (`ip:port`); `None` = the system's resolvers.
    pub resolver: Option<SocketAddr>,
    /// What a DMARC `p=quarantine` failure gets.
    pub quarantine: QuarantineAction,
    /// Whether a DMARC `p=reject` failure is refused at end of DATA (`550 5.7.1`).
    pub enforce_reject: bool,
    /// Seconds the whole check may take before it is given up (results `temperror`).
    pub timeout_secs: u32,
}

/// What a DMARC `p=quarantine` failure gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineAction {
    /// Delivered, with `X-Shardgate-Quarantine: dmarc` added.
    Tag,
    /// Refused like `p=reject`.
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Option<String>,
    dkim: Option<RawDkim>,
    sign: Option<bool>,
    dns_mode: Option<String>,
    mx: Option<String>,
    spf: Option<String>,
    dmarc: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    selector: Option<String>,
    algorithm: Option<String>,
    key_size: Option<i64>,
    rotate_days: Option<i64>,
    publish_grace_hours: Option<i64>,
    withdraw_after_hours: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    resolver: Option<String>,
    quarantine: Option<String>,
    enforce_reject: Option<bool>,
    timeout_secs: Option<i64>,
}

/// The `[email]` keys this module owns, taken out before the rest is checked.
#[derive(Debug, Default)]
pub(super) struct AuthTables {
    domains: Option<toml::Value>,
    auth: Option<toml::Value>,
    limits: Option<toml::Value>,
    scan: Option<toml::Value>,
    dnsbl: Option<toml::Value>,
    /// `[email] connections_per_ip`: the old alias of `[email.limits] connections_per_ip`.
    connections_per_ip: Option<toml::Value>,
}

/// Removes `domains`, `auth`, `limits`, `scan` and `dnsbl` from a copy of the `[email]` table; returns the
/// rest and the values.
pub(super) fn split_auth(email: &toml::Value) -> (toml::Value, AuthTables) {
    let mut rest = email.clone();
    let tables = match rest.as_table_mut() {
        Some(table) => AuthTables {
            domains: table.remove("domains"),
            auth: table.remove("auth"),
            limits: table.remove("limits"),
            scan: table.remove("scan"),
            dnsbl: table.remove("dnsbl"),
            connections_per_ip: table.remove("connections_per_ip"),
        },
        None => AuthTables::default(),
    };
    (rest, tables)
}

/// Checks `[[email.domains]]`, `[email.auth]`, `[email.limits]` and `[email.scan]` (every problem
/// is reported).
pub(super) fn validate_auth(problems: &mut ProblemList, tables: AuthTables) -> MailAuthSettings {
    MailAuthSettings {
        domains: tables.domains.map(|value| validate_domains(problems, value)).unwrap_or_default(),
        inbound: tables.auth.and_then(|value| validate_inbound(problems, value)),
        limits: {
            let limits = tables.limits.map(|value| validate_limits(problems, value)).unwrap_or_default();
            connection_limit(problems, limits, tables.connections_per_ip)
        },
        scan: tables.scan.map(|value| validate_scan(problems, value)).unwrap_or_default(),
        dnsbl: tables.dnsbl.and_then(|value| validate_dnsbl(problems, value)),
    }
}

/// `[email.limits] connections_per_ip` is the one setting (default
/// [`super::email::DEFAULT_CONNECTIONS_PER_IP`]); `[email] connections_per_ip` is accepted as
/// its alias, and both together are an error.
fn connection_limit(problems: &mut ProblemList, mut limits: shardgate_smtp::RateLimitConfig, alias: Option<toml::Value>) -> shardgate_smtp::RateLimitConfig {
    if let Some(value) = alias {
        match value.as_integer().and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            None => problems.section("email", "connections_per_ip", format!("{value} is not a positive count")),
            Some(_) if limits.connections_per_ip.is_some() => problems.section(
                "email",
                "connections_per_ip",
                "is also set as [email.limits] connections_per_ip: keep only that one (this key is its alias)",
            ),
            Some(n) => limits.connections_per_ip = Some(n),
        }
    }
    limits.connections_per_ip.get_or_insert(super::email::DEFAULT_CONNECTIONS_PER_IP);
    limits
}

fn validate_limits(problems: &mut ProblemList, value: toml::Value) -> shardgate_smtp::RateLimitConfig {
    let limits: shardgate_smtp::RateLimitConfig = match value.try_into() {
        Ok(limits) => limits,
        Err(e) => {
            problems.section("email.limits", "", e.to_string().trim().to_string());
            return shardgate_smtp::RateLimitConfig::default();
        }
    };
    let counts = [
        ("global_messages_per_minute", limits.global_messages_per_minute),
        ("domain_messages_per_minute", limits.domain_messages_per_minute),
        ("ip_messages_per_minute", limits.ip_messages_per_minute),
        ("connections_per_ip", limits.connections_per_ip),
        ("recipients_per_message", limits.recipients_per_message),
        ("auth_failures_per_ip", limits.auth_failures_per_ip),
    ];
    for (field, value) in counts {
        if value == Some(0) {
            problems.section("email.limits", field, "0 would refuse everything: leave it out for no limit");
        }
    }
    if limits.auth_block_secs.is_some() && limits.auth_failures_per_ip.is_none() {
        problems.section("email.limits", "auth_block_secs", "has no effect without auth_failures_per_ip");
    }
    limits
}

/// Whether `text` is a host name we accept for a domain (letters, digits, `-`, dots).
pub(super) fn is_domain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `text` is a selector we accept (lower-case letters, digits, `-`; one label).
fn is_selector(text: &str) -> bool {
    !text.is_empty() && text.len() <= 40 && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn hours(problems: &mut ProblemList, scope: &str, field: &str, value: Option<i64>, default: u32, max: u32) -> u32 {
    match value {
        None => default,
        Some(n) if (0..=i64::from(max)).contains(&n) => n as u32,
        Some(n) => {
            problems.section(scope, field, format!("{n} is out of range (0..={max})"));
            default
        }
    }
}

fn validate_domains(problems: &mut ProblemList, value: toml::Value) -> Vec<MailDomain> {
    let Some(list) = value.as_array() else {
        problems.section("email", "domains", "must be a list: write each as [[email.domains]]");
        return Vec::new();
    };
    let mut out: Vec<MailDomain> = Vec::new();
    for (position, entry) in list.iter().enumerate() {
        let raw: RawDomain = match entry.clone().try_into() {
            Ok(raw) => raw,
            Err(e) => {
                problems.section(&format!("email.domains #{}", position + 1), "", e.to_string().trim().to_string());
                continue;
            }
        };
        let name = raw.name.as_deref().unwrap_or("").trim().trim_end_matches('.').to_ascii_lowercase();
        let scope = if name.is_empty() { format!("email.domains #{}", position + 1) } else { format!("email.domains `{name}`") };
        let before = problems.len();
        if name.is_empty() {
            problems.section(&scope, "name", "missing: the sending domain (example.com)");
        } else if !is_domain_name(&name) {
            problems.section(&scope, "name", format!("`{name}` is not a domain name"));
        } else if out.iter().any(|d| d.name == name) {
            problems.section(&scope, "name", "this domain is listed twice");
        }
        let raw_dkim = raw.dkim.unwrap_or_default();
        let mut dkim = DkimPolicy::defaults();
        if let Some(selector) = raw_dkim.selector {
            if is_selector(&selector) {
                dkim.selector = selector;
            } else {
                problems.section(&scope, "dkim.selector", format!("`{selector}` is not a selector: lower-case letters, digits and `-`, at most 40"));
            }
        }
        match raw_dkim.algorithm.as_deref() {
            None | Some("rsa-sha256") => {}
            Some("ed25519-sha256") => dkim.algorithm = DkimAlgorithm::Ed25519Sha256,
            Some(other) => problems.section(&scope, "dkim.algorithm", format!("`{other}` is not rsa-sha256 or ed25519-sha256")),
        }
        match raw_dkim.key_size {
            None => {}
            Some(bits) if dkim.algorithm == DkimAlgorithm::Ed25519Sha256 => {
                problems.section(&scope, "dkim.key_size", format!("{bits}: Ed25519 keys have no size; leave key_size out"))
            }
            Some(bits) if [2048, 3072, 4096].contains(&bits) => dkim.key_size = bits as u32,
            // ring (our signer) refuses RSA keys below 2048 bits; RFC 8301 calls 1024 the floor.
            Some(bits) => problems.section(&scope, "dkim.key_size", format!("{bits} is not 2048, 3072 or 4096")),
        }
        dkim.rotate_days = hours(problems, &scope, "dkim.rotate_days", raw_dkim.rotate_days, DEFAULT_ROTATE_DAYS, 3650);
        dkim.publish_grace_hours =
            hours(problems, &scope, "dkim.publish_grace_hours", raw_dkim.publish_grace_hours, DEFAULT_PUBLISH_GRACE_HOURS, 24 * 365);
        dkim.withdraw_after_hours =
            hours(problems, &scope, "dkim.withdraw_after_hours", raw_dkim.withdraw_after_hours, DEFAULT_WITHDRAW_AFTER_HOURS, 24 * 365);
        if dkim.rotate_days > 0 && u64::from(dkim.publish_grace_hours) >= u64::from(dkim.rotate_days) * 24 {
            problems.section(&scope, "dkim.publish_grace_hours", "must be shorter than rotate_days, or keys never get used");
        }
        let dns_mode = match raw.dns_mode.as_deref() {
            None | Some("external") => DnsMode::External,
            Some("internal") => DnsMode::Internal,
            Some(other) => {
                problems.section(&scope, "dns_mode", format!("`{other}` is not internal or external"));
                DnsMode::External
            }
        };
        let mut publish = PublishRecords::default();
        if let Some(mx) = raw.mx {
            let host = mx.trim().trim_end_matches('.').to_ascii_lowercase();
            if is_domain_name(&host) {
                publish.mx = Some(host);
            } else {
                problems.section(&scope, "mx", format!("`{mx}` is not a host name"));
            }
        }
        if let Some(spf) = raw.spf {
            if spf.starts_with("v=spf1") && !spf.contains(['"', '\r', '\n']) {
                publish.spf = Some(spf);
            } else {
                problems.section(&scope, "spf", "must start with `v=spf1` and hold no quotes or line breaks");
            }
        }
        if let Some(dmarc) = raw.dmarc {
            if dmarc.starts_with("v=DMARC1") && !dmarc.contains(['"', '\r', '\n']) {
                publish.dmarc = Some(dmarc);
            } else {
                problems.section(&scope, "dmarc", "must start with `v=DMARC1` and hold no quotes or line breaks");
            }
        }
        if problems.len() == before {
            out.push(MailDomain { name, dkim, sign: raw.sign.unwrap_or(true), dns_mode, publish });
        }
    }
    out
}

fn validate_inbound(problems: &mut ProblemList, value: toml::Value) -> Option<InboundAuthSettings> {
    let raw: RawAuth = match value.try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.section("email.auth", "", e.to_string().trim().to_string());
            return None;
        }
    };
    let before = problems.len();
    let resolver = match raw.resolver.as_deref() {
        None => None,
        Some(text) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.section("email.auth", "resolver", format!("`{text}` is not ip:port (127.0.0.1:53, [::1]:53)"));
                None
            }
        },
    };
    let quarantine = match raw.quarantine.as_deref() {
        None | Some("tag") => QuarantineAction::Tag,
        Some("reject") => QuarantineAction::Reject,
        Some(other) => {
            problems.section("email.auth", "quarantine", format!("`{other}` is not tag or reject"));
            QuarantineAction::Tag
        }
    };
    let timeout_secs = match raw.timeout_secs {
        None => 20,
        Some(n) if (1..=300).contains(&n) => n as u32,
        Some(n) => {
            problems.section("email.auth", "timeout_secs", format!("{n} is out of range (1..=300)"));
            20
        }
    };
    (problems.len() == before).then_some(InboundAuthSettings {
        resolver,
        quarantine,
        enforce_reject: raw.enforce_reject.unwrap_or(true),
        timeout_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ScanAction};

    const EMAIL: &str = "[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n";

    #[test]
    fn domains_and_auth_are_checked_and_typed() {
        let text = format!(
            "{EMAIL}[[email.domains]]\nname = \"Example.COM.\"\ndns_mode = \"internal\"\nspf = \"v=spf1 mx -all\"\n\
             dkim = {{ selector = \"s1\", algorithm = \"ed25519-sha256\", rotate_days = 30 }}\n\
             [email.auth]\nresolver = \"127.0.0.1:5353\"\nquarantine = \"reject\"\n\
             [email.limits]\nip_messages_per_minute = 30\nauth_failures_per_ip = 5\n\
             [email.scan]\nblocked_extensions = [\".EXE\", \"js\"]\naction = \"tag\"\n"
        );
        let config = Config::parse(&text, "test.toml").expect("valid");
        let domain = config.mail_auth.domain("example.com").expect("domain");
        assert_eq!(domain.name, "example.com");
        assert_eq!(domain.dns_mode, DnsMode::Internal);
        assert_eq!(domain.dkim.selector, "s1");
        assert_eq!(domain.dkim.algorithm, DkimAlgorithm::Ed25519Sha256);
        assert_eq!(domain.dkim.rotate_days, 30);
        assert_eq!(domain.publish.spf.as_deref(), Some("v=spf1 mx -all"));
        let inbound = config.mail_auth.inbound.expect("auth");
        assert_eq!(inbound.resolver, Some("127.0.0.1:5353".parse().expect("addr")));
        assert_eq!(inbound.quarantine, QuarantineAction::Reject);
        assert_eq!(config.mail_auth.limits.ip_messages_per_minute, Some(30));
        assert_eq!(config.mail_auth.limits.auth_failures_per_ip, Some(5));
        assert_eq!(config.mail_auth.scan.blocked_extensions, ["exe", "js"]);
        assert_eq!(config.mail_auth.scan.action, ScanAction::Tag);
    }

    #[test]
    fn every_problem_is_named() {
        let text = format!(
            "{EMAIL}[[email.domains]]\nname = \"ex ample\"\ndns_mode = \"cloud\"\n\
             dkim = {{ selector = \"S!\", algorithm = \"rsa-sha1\", key_size = 512, rotate_days = 1, publish_grace_hours = 48 }}\n\
             [email.auth]\nresolver = \"localhost\"\n[email.limits]\nrecipients_per_message = 0\nbogus = 1\n"
        );
        let errors = Config::parse(&text, "test.toml").expect_err("invalid").to_string();
        for needle in ["`ex ample` is not a domain name", "dns_mode", "dkim.selector", "dkim.algorithm", "dkim.key_size", "publish_grace_hours", "resolver", "email.limits"] {
            assert!(errors.contains(needle), "missing {needle} in {errors}");
        }
    }
}
