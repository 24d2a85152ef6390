//! Content and reputation protection settings: `[email.scan]` (attachment filtering, archive
//! file lists and the spam score rules of `process` routes with `scan = true`) and
//! `[email.dnsbl]` (DNS blocklists checked when a client connects).
//!
//! Owns: their raw shape, their checks (every problem named with its section and field) and
//! the typed results [`ScanPolicy`], [`SpamPolicy`] and [`DnsblSettings`], plus the names and
//! default weights of the built-in spam rules ([`BUILTIN_SPAM_RULES`]) that config may
//! re-weight. Does not own: scanning (`crate::mail::scan`, `crate::mail::spam`) or the
//! blocklist lookups (`crate::mail::dnsbl`).

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;

use super::email::TextPattern;
use super::email_domains::is_domain_name;
use super::problems::ProblemList;

/// Extensions blocked by default: executables, scripts and installers.
pub const DEFAULT_BLOCKED_EXTENSIONS: [&str; 18] =
    ["exe", "scr", "com", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "msi", "jar", "ps1", "lnk", "cpl"];

/// MIME types blocked by default.
pub const DEFAULT_BLOCKED_MIME_TYPES: [&str; 4] =
    ["application/x-msdownload", "application/x-dosexec", "application/x-ms-installer", "application/hta"];

/// The built-in spam rules: name, default weight in tenths of a point, what it means.
pub const BUILTIN_SPAM_RULES: [(&str, i32, &str); 11] = [
    ("MISSING_DATE", 10, "no Date header"),
    ("MISSING_MID", 10, "no Message-ID header"),
    ("MISSING_FROM", 20, "no From header"),
    ("MISSING_SUBJECT", 5, "no Subject header"),
    ("FROM_REPLYTO_DIFFER", 15, "the Reply-To domain differs from the From domain"),
    ("PHISH_LINK_MISMATCH", 35, "an HTML link whose visible text is an address other than its target"),
    ("HTML_SCRIPT", 25, "<script> in an HTML part"),
    ("HTML_EVENT_HANDLER", 20, "an on* event handler attribute in an HTML part"),
    ("EXE_DOUBLE_EXTENSION", 40, "an executable file name behind a harmless extension (invoice.pdf.exe)"),
    ("EXE_CONTENT_MISNAMED", 50, "executable content (MZ, ELF) under a name that is not an executable's"),
    ("RCVD_IN_DNSBL", 30, "the connecting client is listed in an [email.dnsbl] zone (action = \"tag\")"),
];

/// A spam score in tenths of a point (SpamAssassin prints one decimal): exact sums, `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SpamScore(pub i32);

impl SpamScore {
    /// From points (`2.5` → 25 tenths), rounded to the nearest tenth.
    pub fn from_points(points: f64) -> SpamScore {
        SpamScore((points * 10.0).round() as i32)
    }
}

impl fmt::Display for SpamScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{}", self.0.abs() / 10, self.0.abs() % 10)
    }
}

/// Where a bad pattern is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternTarget {
    /// The decoded Subject.
    Subject,
    /// The text of every text/plain and text/html part.
    Body,
    /// Both.
    Any,
}

/// One `[[email.scan.bad_patterns]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern {
    /// The rule name shown in `tests=`.
    pub name: String,
    /// The regular expression.
    pub pattern: TextPattern,
    /// Where it is looked for.
    pub target: PatternTarget,
    /// Its weight.
    pub weight: SpamScore,
}

/// The spam score rules and thresholds of `[email.scan]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamPolicy {
    /// From this score on the message is tagged (`X-Spam-Status: Yes`, `X-Spam-Flag: YES`).
    pub tag_score: SpamScore,
    /// From this score on the message is refused at end of DATA (`550 5.7.1`); `None`: never.
    pub reject_score: Option<SpamScore>,
    /// The built-in rules' weights (defaults overridden by `spam_rules`); 0 switches one off.
    pub weights: Vec<(&'static str, SpamScore)>,
    /// The configured bad patterns.
    pub patterns: Vec<BadPattern>,
}

impl SpamPolicy {
    /// The weight of built-in rule `name` (0 when unknown).
    pub fn weight(&self, name: &str) -> SpamScore {
        self.weights.iter().find(|(n, _)| *n == name).map(|(_, w)| *w).unwrap_or_default()
    }
}

impl Default for SpamPolicy {
    fn default() -> SpamPolicy {
        SpamPolicy {
            tag_score: SpamScore(50),
            reject_score: None,
            weights: BUILTIN_SPAM_RULES.iter().map(|(name, weight, _)| (*name, SpamScore(*weight))).collect(),
            patterns: Vec::new(),
        }
    }
}

/// `[email.scan]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPolicy {
    /// File name extensions blocked (lower case, no dot).
    pub blocked_extensions: Vec<String>,
    /// MIME types blocked (lower case `type/subtype`).
    pub blocked_mime_types: Vec<String>,
    /// Largest attachment (decoded octets; for archive members their declared size); `None`:
    /// no limit.
    pub max_attachment_size: Option<u64>,
    /// What a blocked attachment gets.
    pub action: ScanAction,
    /// The spam score rules.
    pub spam: SpamPolicy,
}

impl Default for ScanPolicy {
    fn default() -> ScanPolicy {
        ScanPolicy {
            blocked_extensions: DEFAULT_BLOCKED_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            blocked_mime_types: DEFAULT_BLOCKED_MIME_TYPES.iter().map(|e| e.to_string()).collect(),
            max_attachment_size: None,
            action: ScanAction::Reject,
            spam: SpamPolicy::default(),
        }
    }
}

/// What a blocked attachment gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanAction {
    /// Refused at end of DATA (`554 5.7.1`).
    Reject,
    /// Accepted with `X-Shardgate-Scan: blocked ...`.
    Tag,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    blocked_extensions: Option<Vec<String>>,
    blocked_mime_types: Option<Vec<String>>,
    max_attachment_size: Option<i64>,
    action: Option<String>,
    spam_tag_score: Option<toml::Value>,
    spam_reject_score: Option<toml::Value>,
    spam_rules: Option<toml::Table>,
    bad_patterns: Option<Vec<RawPattern>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    name: Option<String>,
    regex: Option<String>,
    #[serde(rename = "in")]
    target: Option<String>,
    weight: Option<toml::Value>,
}

/// A weight or threshold: an integer or a float in -1000..=1000 points.
fn points(problems: &mut ProblemList, field: &str, value: &toml::Value) -> Option<SpamScore> {
    let number = match value {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            problems.section("email.scan", field, format!("{other} is not a number of points"));
            return None;
        }
    };
    if !number.is_finite() || !(-1000.0..=1000.0).contains(&number) {
        problems.section("email.scan", field, format!("{number} is out of range (-1000..=1000)"));
        return None;
    }
    Some(SpamScore::from_points(number))
}

/// Whether `text` is a rule name (SpamAssassin style: upper case, digits, `_`).
fn is_rule_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 40 && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn validate_scan(problems: &mut ProblemList, value: toml::Value) -> ScanPolicy {
    let raw: RawScan = match value.try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.section("email.scan", "", e.to_string().trim().to_string());
            return ScanPolicy::default();
        }
    };
    let mut policy = ScanPolicy::default();
    if let Some(list) = raw.blocked_extensions {
        policy.blocked_extensions = Vec::new();
        for ext in list {
            let clean = ext.trim().trim_start_matches('.').to_ascii_lowercase();
            if clean.is_empty() || !clean.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                problems.section("email.scan", "blocked_extensions", format!("`{ext}` is not an extension (exe, js, ...)"));
            } else {
                policy.blocked_extensions.push(clean);
            }
        }
    }
    if let Some(list) = raw.blocked_mime_types {
        policy.blocked_mime_types = Vec::new();
        for mime in list {
            let clean = mime.trim().to_ascii_lowercase();
            if clean.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/')) {
                policy.blocked_mime_types.push(clean);
            } else {
                problems.section("email.scan", "blocked_mime_types", format!("`{mime}` is not a type/subtype"));
            }
        }
    }
    match raw.max_attachment_size {
        None => {}
        Some(n) if n > 0 => policy.max_attachment_size = Some(n as u64),
        Some(n) => problems.section("email.scan", "max_attachment_size", format!("{n} is not a positive size in octets")),
    }
    match raw.action.as_deref() {
        None | Some("reject") => {}
        Some("tag") => policy.action = ScanAction::Tag,
        Some(other) => problems.section("email.scan", "action", format!("`{other}` is not reject or tag")),
    }
    if let Some(value) = &raw.spam_tag_score {
        if let Some(score) = points(problems, "spam_tag_score", value) {
            policy.spam.tag_score = score;
        }
    }
    if let Some(value) = &raw.spam_reject_score {
        policy.spam.reject_score = points(problems, "spam_reject_score", value);
        if policy.spam.reject_score.is_some_and(|reject| reject < policy.spam.tag_score) {
            problems.section("email.scan", "spam_reject_score", "is below spam_tag_score: a refused message would never be tagged first");
        }
    }
    for (name, value) in raw.spam_rules.unwrap_or_default() {
        let field = format!("spam_rules.{name}");
        let Some(slot) = policy.spam.weights.iter_mut().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = BUILTIN_SPAM_RULES.iter().map(|(n, _, _)| *n).collect();
            problems.section("email.scan", &field, format!("unknown rule (built-in rules: {}; add your own with bad_patterns)", known.join(", ")));
            continue;
        };
        if let Some(weight) = points(problems, &field, &value) {
            slot.1 = weight;
        }
    }
    for (index, raw) in raw.bad_patterns.unwrap_or_default().into_iter().enumerate() {
        let field = |f: &str| format!("bad_patterns[{index}].{f}");
        let name = match raw.name {
            Some(name) if is_rule_name(&name) => name,
            Some(name) => {
                problems.section("email.scan", &field("name"), format!("`{name}` is not a rule name (A-Z, 0-9, _)"));
                continue;
            }
            None => {
                problems.section("email.scan", &field("name"), "is missing");
                continue;
            }
        };
        if BUILTIN_SPAM_RULES.iter().any(|(n, _, _)| *n == name) || policy.spam.patterns.iter().any(|p| p.name == name) {
            problems.section("email.scan", &field("name"), format!("`{name}` is used twice"));
        }
        let pattern = match raw.regex.as_deref().map(regex::Regex::new) {
            Some(Ok(re)) => TextPattern(re),
            Some(Err(e)) => {
                problems.section("email.scan", &field("regex"), format!("not a valid regular expression: {e}"));
                continue;
            }
            None => {
                problems.section("email.scan", &field("regex"), "is missing");
                continue;
            }
        };
        let target = match raw.target.as_deref() {
            None | Some("any") => PatternTarget::Any,
            Some("subject") => PatternTarget::Subject,
            Some("body") => PatternTarget::Body,
            Some(other) => {
                problems.section("email.scan", &field("in"), format!("`{other}` is not subject, body or any"));
                continue;
            }
        };
        let weight = match &raw.weight {
            Some(value) => match points(problems, &field("weight"), value) {
                Some(weight) => weight,
                None => continue,
            },
            None => {
                problems.section("email.scan", &field("weight"), "is missing");
                continue;
            }
        };
        policy.spam.patterns.push(BadPattern { name, pattern, target, weight });
    }
    policy
}

/// What a client listed in a DNS blocklist gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsblAction {
    /// `554 5.7.1` instead of the greeting; the connection is closed.
    Reject,
    /// Served; its messages carry `X-Shardgate-DNSBL`.
    Tag,
}

/// `[email.dnsbl]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblSettings {
    /// The blocklist zones, lower case, no trailing dot, in order.
    pub zones: Vec<String>,
    /// What a listed client gets.
    pub action: DnsblAction,
    /// How long an answer (listed or not) is kept.
    pub cache_secs: u32,
    /// The resolver asked (`ip:port`); `None`: `[email.auth] resolver`, else the system's.
    pub resolver: Option<SocketAddr>,
    /// How long the lookups of one client may take before it is served as not listed.
    pub timeout_ms: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsbl {
    zones: Option<Vec<String>>,
    action: Option<String>,
    cache_secs: Option<i64>,
    resolver: Option<String>,
    timeout_ms: Option<i64>,
}

pub(super) fn validate_dnsbl(problems: &mut ProblemList, value: toml::Value) -> Option<DnsblSettings> {
    let raw: RawDnsbl = match value.try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.section("email.dnsbl", "", e.to_string().trim().to_string());
            return None;
        }
    };
    let before = problems.len();
    let mut zones = Vec::new();
    for zone in raw.zones.unwrap_or_default() {
        let clean = zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if !is_domain_name(&clean) {
            problems.section("email.dnsbl", "zones", format!("`{zone}` is not a domain name"));
        } else if zones.contains(&clean) {
            problems.section("email.dnsbl", "zones", format!("`{zone}` is listed twice"));
        } else {
            zones.push(clean);
        }
    }
    if zones.is_empty() && problems.len() == before {
        problems.section("email.dnsbl", "zones", "is missing or empty: give at least one blocklist zone");
    }
    let action = match raw.action.as_deref() {
        None | Some("reject") => DnsblAction::Reject,
        Some("tag") => DnsblAction::Tag,
        Some(other) => {
            problems.section("email.dnsbl", "action", format!("`{other}` is not reject or tag"));
            DnsblAction::Reject
        }
    };
    let mut ranged = |field: &str, value: Option<i64>, default: u32, range: std::ops::RangeInclusive<i64>| match value {
        None => default,
        Some(n) if range.contains(&n) => n as u32,
        Some(n) => {
            problems.section("email.dnsbl", field, format!("{n} is out of range ({}..={})", range.start(), range.end()));
            default
        }
    };
    let cache_secs = ranged("cache_secs", raw.cache_secs, 300, 0..=86_400);
    let timeout_ms = ranged("timeout_ms", raw.timeout_ms, 2000, 100..=30_000);
    let resolver = match raw.resolver.as_deref() {
        None => None,
        Some(text) => match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.section("email.dnsbl", "resolver", format!("`{text}` is not ip:port (127.0.0.1:53, [::1]:53)"));
                None
            }
        },
    };
    (problems.len() == before).then_some(DnsblSettings { zones, action, cache_secs, resolver, timeout_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EMAIL: &str = "[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n";

    #[test]
    fn spam_rules_thresholds_patterns_and_dnsbl_are_typed() {
        let text = format!(
            "{EMAIL}[email.scan]\nmax_attachment_size = 1000\nspam_tag_score = 4.5\nspam_reject_score = 9\n\
             spam_rules = {{ MISSING_DATE = 2.5, HTML_SCRIPT = 0 }}\n\
             bad_patterns = [{{ name = \"LOTTERY\", regex = \"(?i)you have won\", in = \"subject\", weight = 3.0 }}]\n\
             [email.dnsbl]\nzones = [\"Zen.Example.\"]\naction = \"tag\"\ncache_secs = 60\n"
        );
        let config = Config::parse(&text, "test.toml").expect("valid");
        let scan = &config.mail_auth.scan;
        assert_eq!(scan.max_attachment_size, Some(1000));
        assert_eq!(scan.spam.tag_score, SpamScore(45));
        assert_eq!(scan.spam.reject_score, Some(SpamScore(90)));
        assert_eq!(scan.spam.weight("MISSING_DATE"), SpamScore(25));
        assert_eq!(scan.spam.weight("HTML_SCRIPT"), SpamScore(0));
        assert_eq!(scan.spam.weight("MISSING_MID"), SpamScore(10));
        assert_eq!(scan.spam.patterns[0].name, "LOTTERY");
        assert_eq!(scan.spam.patterns[0].target, PatternTarget::Subject);
        let dnsbl = config.mail_auth.dnsbl.expect("dnsbl");
        assert_eq!(dnsbl.zones, ["zen.example"]);
        assert_eq!((dnsbl.action, dnsbl.cache_secs, dnsbl.timeout_ms), (DnsblAction::Tag, 60, 2000));
    }

    #[test]
    fn every_scan_and_dnsbl_problem_is_named() {
        let text = format!(
            "{EMAIL}[email.scan]\nmax_attachment_size = 0\nspam_tag_score = 5\nspam_reject_score = 2\n\
             spam_rules = {{ NO_SUCH_RULE = 1, MISSING_MID = \"x\" }}\n\
             bad_patterns = [{{ name = \"bad name\", regex = \"x\", weight = 1 }}, {{ name = \"P\", regex = \"(\", weight = 1 }}, {{ name = \"Q\", regex = \"x\", in = \"footer\", weight = 1 }}]\n\
             [email.dnsbl]\nzones = [\"not a zone\"]\naction = \"drop\"\ncache_secs = -1\nresolver = \"nowhere\"\n"
        );
        let errors = Config::parse(&text, "edge.toml").expect_err("invalid").to_string();
        for needle in [
            "edge.toml: [email.scan] max_attachment_size:",
            "[email.scan] spam_reject_score: is below spam_tag_score",
            "[email.scan] spam_rules.NO_SUCH_RULE: unknown rule",
            "[email.scan] spam_rules.MISSING_MID:",
            "[email.scan] bad_patterns[0].name:",
            "[email.scan] bad_patterns[1].regex: not a valid regular expression",
            "[email.scan] bad_patterns[2].in:",
            "[email.dnsbl] zones: `not a zone` is not a domain name",
            "[email.dnsbl] action:",
            "[email.dnsbl] cache_secs:",
            "[email.dnsbl] resolver:",
        ] {
            assert!(errors.contains(needle), "missing {needle} in {errors}");
        }
    }

    #[test]
    fn scores_print_with_one_decimal() {
        assert_eq!(SpamScore(53).to_string(), "5.3");
        assert_eq!(SpamScore(-5).to_string(), "-0.5");
        assert_eq!(SpamScore::from_points(2.25).to_string(), "2.3");
    }
}
