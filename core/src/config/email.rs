//! The `[email]` section: the SMTP gateway's server settings, `[[email.routes]]` and
//! `[email.delivery]`.
//!
//! Owns: the raw shape of the core-only keys (`listen`, `routes`, `delivery`; the old
//! `connections_per_ip` here is an alias of `[email.limits] connections_per_ip`, taken out by
//! `super::email_domains`), their checks (every problem named with its section or route and field), and the
//! typed result [`EmailSettings`]. The session settings (hostname, ports, limits, timeouts,
//! users, relay networks, local domains) are the `shardgate-smtp` crate's
//! [`shardgate_smtp::EmailConfig`]: the rest of the table is handed to it and its problems are
//! reported under `[email]`.
//! Does not own: evaluating routes against a message (`crate::mail::routes`), serving
//! (`crate::smtp`), the queue (`crate::mail::queue`) or delivery.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shardgate_smtp::{EmailConfig, ListenerKind};

use super::problems::ProblemList;
use super::{clean_path, parse_duration};

/// `[email]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    /// The session settings (hostname, ports, limits, timeouts, users, relay networks,
    /// local domains), validated by `shardgate-smtp`.
    pub server: EmailConfig,
    /// Addresses every email port is listened on (default `0.0.0.0`).
    pub listen: Vec<IpAddr>,
    /// `[[email.routes]]`, highest priority first, then file order.
    pub routes: Vec<EmailRoute>,
    /// `[email.delivery]`: what the delivery engine on the control core uses.
    pub delivery: DeliverySettings,
}

/// Default of `[email.limits] connections_per_ip` (sessions per client address per shard).
pub const DEFAULT_CONNECTIONS_PER_IP: u32 = 50;

impl EmailSettings {
    /// Every address:port served, with the kind of listener it is.
    pub fn listen_addresses(&self) -> BTreeMap<SocketAddr, ListenerKind> {
        let ports = &self.server.ports;
        let kinds = [
            (ports.smtp, ListenerKind::Smtp),
            (ports.submission, ListenerKind::Submission),
            (ports.smtps, ListenerKind::SubmissionTls),
        ];
        let mut out = BTreeMap::new();
        for ip in &self.listen {
            for (port, kind) in kinds {
                if let Some(port) = port {
                    out.insert(SocketAddr::new(*ip, port), kind);
                }
            }
        }
        out
    }

    /// The mail folder under the data folder: the queue (`queue/`) and local mailboxes
    /// (`mailboxes/<recipient>/` Maildirs).
    pub fn mail_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("mail")
    }
}

/// One `[[email.routes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailRoute {
    /// Unique name (logs, queue records, stats).
    pub name: String,
    /// Higher is tried first; equal priorities keep file order.
    pub priority: i64,
    /// When the route applies.
    pub matcher: EmailMatch,
    /// What is done with a recipient the route applies to.
    pub action: EmailAction,
    /// `process` routes with `scan = true`: attachments are checked against `[email.scan]`
    /// (`crate::mail::scan`).
    pub scan: bool,
}

/// The `match` of an email route. Every criterion given must hold; an empty match matches all.
/// Envelope criteria (`recipients`, `senders`, `client_ip`, `authenticated`) are decided at
/// `RCPT`; content criteria (`headers`, `size`, `subject`, `has_attachments`) after `DATA`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmailMatch {
    /// Recipient address globs (`*@example.com`, `admin@*`), any case.
    pub recipients: Option<Vec<AddressGlob>>,
    /// Sender address globs; the null sender `<>` is the empty string.
    pub senders: Option<Vec<AddressGlob>>,
    /// Client networks.
    pub client_ip: Option<Vec<IpNet>>,
    /// Whether the client must (true) or must not (false) have authenticated.
    pub authenticated: Option<bool>,
    /// Header name (any case) → value rule; every one must hold.
    pub headers: Vec<HeaderRule>,
    /// Message size bounds in octets (inclusive).
    pub size: Option<SizeRange>,
    /// A regex the decoded `Subject` must match.
    pub subject: Option<TextPattern>,
    /// Whether the message must (true) or must not (false) carry an attachment.
    pub has_attachments: Option<bool>,
    /// Inbound check results (`spf`, `dkim`, `dmarc`), decided after DATA
    /// (`super::email_domains::AuthMatch`).
    pub auth: super::email_domains::AuthMatch,
}

impl EmailMatch {
    /// True when the route needs the message content to decide.
    pub fn has_content_criteria(&self) -> bool {
        !self.headers.is_empty() || self.size.is_some() || self.subject.is_some() || self.has_attachments.is_some() || !self.auth.is_empty()
    }
}

/// An address glob: `*` matches any run of characters, `?` one; compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressGlob(String);

impl AddressGlob {
    /// A glob from its text (lower-cased).
    pub fn new(text: &str) -> AddressGlob {
        AddressGlob(text.trim().to_lowercase())
    }

    /// The glob as written (lower-cased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `address` (any case) matches.
    pub fn matches(&self, address: &str) -> bool {
        self.matches_lowercase(&address.to_lowercase())
    }

    /// Whether `address`, already lower-cased, matches (no allocation).
    pub fn matches_lowercase(&self, address: &str) -> bool {
        glob_match(self.0.as_bytes(), address.as_bytes())
    }
}

/// Iterative wildcard match with backtracking on the last `*` (linear in practice).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A compiled regular expression, compared by its source text.
#[derive(Debug, Clone)]
pub struct TextPattern(pub regex::Regex);

impl Eq for TextPattern {}

impl PartialEq for TextPattern {
    fn eq(&self, other: &TextPattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl TextPattern {
    /// Whether `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// One `headers` rule: `"X-Spam" = "yes"` (exact, whitespace-trimmed) or `"List-Id" = "/x/"` (regex).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderRule {
    /// Header name, lower-cased.
    pub name: String,
    /// What its value must be.
    pub value: HeaderValueRule,
}

/// How a header value is compared.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValueRule {
    /// Equal to this text (after trimming surrounding whitespace).
    Exact(String),
    /// Matches this regex (written `/.../`).
    Regex(TextPattern),
}

/// Inclusive message size bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SizeRange {
    /// At least this many octets.
    pub min: Option<u64>,
    /// At most this many octets.
    pub max: Option<u64>,
}

impl SizeRange {
    /// Whether `size` is inside.
    pub fn contains(&self, size: u64) -> bool {
        self.min.is_none_or(|min| size >= min) && self.max.is_none_or(|max| size <= max)
    }
}

/// What an email route does with a recipient. Stored in queue records (serde), so a queued
/// message is delivered the way it was accepted even if the config changes meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailAction {
    /// Relay to a fixed next hop.
    Forward(MailForward),
    /// Store in the recipient's local Maildir under the data folder.
    Deliver,
    /// Queue for delivery to the recipient domain's MX.
    Process {
        /// Which queue class.
        queue: QueueClass,
    },
    /// Refuse with this reply (at `RCPT`, or after `DATA` for content criteria).
    Reject {
        /// 4xx or 5xx.
        code: u16,
        /// Text of the reply.
        message: String,
    },
}

/// The `forward` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailForward {
    /// Next hop host name or address.
    pub host: String,
    /// Next hop port (default 25).
    pub port: u16,
    /// Credentials for `AUTH` at the next hop.
    pub auth: Option<ForwardAuth>,
    /// STARTTLS policy towards the next hop.
    pub starttls: StartTlsPolicy,
    /// Headers added to the message when forwarded (name, value), in file order.
    pub headers: Vec<(String, String)>,
}

/// Credentials for the next hop. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardAuth {
    /// Login.
    pub username: String,
    /// Password (the next hop needs it in clear, so it is stored as written).
    pub password: String,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// STARTTLS towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTlsPolicy {
    /// Use it when offered, else send in clear (the default, as Postfix `may`).
    Opportunistic,
    /// Fail (defer) when the next hop does not offer it or the handshake fails.
    Required,
    /// Never.
    None,
}

/// Queue class of `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueClass {
    /// The default.
    Normal,
    /// Delivered before normal messages.
    Priority,
}

/// `[email.delivery]`, checked: settings of the delivery engine (control core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// First wait after a temporary failure; doubled per attempt.
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// A message still undelivered after this long bounces.
    pub max_age: Duration,
    /// Most simultaneous connections to one destination (MX host or forward target).
    pub concurrency_per_destination: u32,
    /// DNS resolver for MX lookups (`ip:port`); `None` uses the system's.
    pub resolver: Option<SocketAddr>,
    /// The `From:` of bounces (the envelope sender of a bounce is always `<>`).
    pub bounce_sender: String,
    /// How long a connection to a next hop may take.
    pub connect_timeout: Duration,
    /// Local addresses outbound connections are made from, in order of preference (each has
    /// its own sending limits and warm-up); empty: the address the kernel picks.
    pub source_ips: Vec<IpAddr>,
    /// `[email.delivery.limits]`: sending limits; over them a message is deferred, never
    /// bounced.
    pub limits: DeliveryLimits,
    /// Keep every message queued without attempting delivery (Postfix's `defer_transports`
    /// for every transport, or its hold queue); changed by a reload.
    pub hold: bool,
}

/// `[email.delivery.limits]`, checked (every limit optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryLimits {
    /// Messages per minute to one destination domain (a `forward` route: its host).
    pub domain_per_minute: Option<u32>,
    /// Messages per hour to one destination domain.
    pub domain_per_hour: Option<u32>,
    /// Messages per minute from one source address.
    pub ip_per_minute: Option<u32>,
    /// Messages per hour from one source address.
    pub ip_per_hour: Option<u32>,
    /// The IP warm-up schedule (per source address per UTC day), if any.
    pub warmup: Option<WarmupSchedule>,
}

/// A daily volume ramp for new source addresses (as dcrouter's IP warm-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupSchedule {
    /// Day 1 of the schedule, in days since 1970-01-01 (UTC).
    pub start_day: i64,
    /// `(day, max)` steps, days strictly increasing from 1: from `day` on (until the next
    /// step) each source address sends at most `max` messages a day. After the last step's
    /// day the ramp is over (no daily cap); before day 1 the first step applies.
    pub steps: Vec<(u32, u32)>,
}

impl WarmupSchedule {
    /// The day number (1 = `start_day`) of unix day `unix_day`.
    pub fn day_number(&self, unix_day: i64) -> i64 {
        unix_day - self.start_day + 1
    }

    /// The daily cap on unix day `unix_day` (`None`: the ramp is over).
    pub fn cap(&self, unix_day: i64) -> Option<u32> {
        let day = self.day_number(unix_day);
        let last = self.steps.last()?;
        if day > i64::from(last.0) {
            return None;
        }
        let step = self.steps.iter().rev().find(|(d, _)| i64::from(*d) <= day).or(self.steps.first())?;
        Some(step.1)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian), or `None`.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if day < 1 || day > days_in_month[(month - 1) as usize] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

impl DeliverySettings {
    /// The defaults (Postfix-like), with `MAILER-DAEMON@<hostname>` as bounce sender.
    pub fn defaults(hostname: &str) -> DeliverySettings {
        DeliverySettings {
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(5 * 24 * 3600),
            concurrency_per_destination: 4,
            resolver: None,
            bounce_sender: format!("MAILER-DAEMON@{hostname}"),
            connect_timeout: Duration::from_secs(30),
            source_ips: Vec::new(),
            limits: DeliveryLimits::default(),
            hold: false,
        }
    }
}

/// `[email]` keys this module owns; the rest goes to `shardgate_smtp::EmailConfig`.
const CORE_KEYS: [&str; 3] = ["listen", "routes", "delivery"];

/// The keys of `shardgate_smtp::EmailConfig`.
const SERVER_KEYS: [&str; 11] = [
    "hostname",
    "ports",
    "max_message_size",
    "max_recipients",
    "max_errors",
    "timeouts",
    "greeting_delay_ms",
    "auth_without_tls",
    "users",
    "relay_networks",
    "local_domains",
];

#[derive(Debug, Deserialize)]
struct RawRoute {
    name: Option<String>,
    priority: Option<i64>,
    #[serde(rename = "match")]
    matcher: Option<RawMatch>,
    action: Option<RawEmailAction>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMatch {
    recipients: Option<OneOrList>,
    senders: Option<OneOrList>,
    client_ip: Option<OneOrList>,
    authenticated: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
    size: Option<RawSize>,
    subject: Option<String>,
    has_attachments: Option<bool>,
    spf: Option<OneOrList>,
    dkim: Option<OneOrList>,
    dmarc: Option<OneOrList>,
}

#[derive(Debug, Deserialize)]
struct RawSize {
    min: Option<i64>,
    max: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrList {
    One(String),
    List(Vec<String>),
}

impl OneOrList {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrList::One(s) => vec![s.as_str()],
            OneOrList::List(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawEmailAction {
    #[serde(rename = "type")]
    kind: Option<String>,
    host: Option<String>,
    port: Option<i64>,
    auth: Option<RawAuth>,
    starttls: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    queue: Option<String>,
    code: Option<i64>,
    message: Option<String>,
    scan: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RawAuth {
    username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDelivery {
    retry_initial: Option<String>,
    retry_max: Option<String>,
    max_age: Option<String>,
    concurrency_per_destination: Option<i64>,
    resolver: Option<String>,
    bounce_sender: Option<String>,
    connect_timeout: Option<String>,
    source_ips: Option<Vec<String>>,
    limits: Option<RawDeliveryLimits>,
    hold: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDeliveryLimits {
    domain_messages_per_minute: Option<i64>,
    domain_messages_per_hour: Option<i64>,
    ip_messages_per_minute: Option<i64>,
    ip_messages_per_hour: Option<i64>,
    warmup_start: Option<String>,
    warmup: Option<Vec<RawWarmupStep>>,
}

#[derive(Debug, Deserialize)]
struct RawWarmupStep {
    day: i64,
    max: i64,
}

/// Deserialises `value` reporting unknown keys and type errors under `scope`.
fn typed<T: for<'de> Deserialize<'de>>(problems: &mut ProblemList, scope: &str, value: toml::Value) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(value, |path| unknown.push(clean_path(&path)));
    for path in unknown {
        problems.section(scope, &path, "unknown field");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.section(scope, "", e.to_string().trim().to_string());
            None
        }
    }
}

/// Checks `[email]`; `None` when anything in it is wrong (every problem is reported).
pub(super) fn validate_email(problems: &mut ProblemList, value: &toml::Value, has_certificates: bool) -> Option<EmailSettings> {
    let before = problems.len();
    let Some(table) = value.as_table() else {
        problems.section("email", "", "must be a table: write it as [email]");
        return None;
    };
    let mut server_table = table.clone();
    for key in CORE_KEYS {
        server_table.remove(key);
    }
    // `EmailConfig` denies unknown keys by failing whole; name them here and go on.
    let unknown: Vec<String> = server_table.keys().filter(|k| !SERVER_KEYS.contains(&k.as_str())).cloned().collect();
    for key in unknown {
        problems.section("email", &key, "unknown field");
        server_table.remove(&key);
    }
    let server: Option<EmailConfig> = typed(problems, "email", toml::Value::Table(server_table));
    if let Some(server) = &server {
        if let Err(shardgate_smtp::SmtpError::InvalidConfig(list)) = server.validate() {
            for problem in list {
                let field = problem.field.strip_prefix("email.").unwrap_or(&problem.field).to_string();
                problems.section("email", &field, problem.message);
            }
        }
        if server.ports.smtps.is_some() && !has_certificates {
            problems.section(
                "email",
                "ports.smtps",
                "implicit TLS needs a certificate: add a [[certificates]] entry or leave smtps out",
            );
        }
    }
    let listen = match table.get("listen") {
        None => vec![IpAddr::from([0, 0, 0, 0])],
        Some(v) => match typed::<OneOrList>(problems, "email", v.clone()) {
            Some(list) => {
                let mut out = Vec::new();
                for item in list.items() {
                    match item.trim().parse::<IpAddr>() {
                        Ok(ip) if out.contains(&ip) => problems.section("email", "listen", format!("{ip} is listed twice")),
                        Ok(ip) => out.push(ip),
                        Err(_) => problems.section("email", "listen", format!("`{item}` is not an IP address")),
                    }
                }
                if list.items().is_empty() {
                    problems.section("email", "listen", "is empty: give at least one address");
                }
                out
            }
            None => Vec::new(),
        },
    };
    let routes = match table.get("routes") {
        None => Vec::new(),
        Some(v) => validate_routes(problems, v),
    };
    let hostname = server.as_ref().map(|s| s.hostname.clone()).unwrap_or_default();
    let delivery = match table.get("delivery") {
        None => DeliverySettings::defaults(&hostname),
        Some(v) => typed::<RawDelivery>(problems, "email.delivery", v.clone())
            .map(|raw| validate_delivery(problems, raw, &hostname))
            .unwrap_or_else(|| DeliverySettings::defaults(&hostname)),
    };
    let server = server?;
    if problems.len() != before {
        return None;
    }
    Some(EmailSettings { server, listen, routes, delivery })
}

fn validate_routes(problems: &mut ProblemList, value: &toml::Value) -> Vec<EmailRoute> {
    let Some(entries) = value.as_array() else {
        problems.section("email", "routes", "must be an array of tables: write each as [[email.routes]]");
        return Vec::new();
    };
    let mut routes: Vec<EmailRoute> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry.get("name").and_then(|n| n.as_str()).map(str::trim).filter(|n| !n.is_empty());
        let scope = match name {
            Some(n) => format!("email.routes `{n}`"),
            None => format!("email.routes #{}", index + 1),
        };
        let Some(raw) = typed::<RawRoute>(problems, &scope, entry.clone()) else { continue };
        let before = problems.len();
        let name = match raw.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                problems.section(&scope, "name", "missing: every email route needs a unique name");
                String::new()
            }
        };
        if !name.is_empty() && names.contains(&name) {
            problems.section(&scope, "name", "another email route already has this name");
        }
        names.push(name.clone());
        let matcher = validate_match(problems, &scope, raw.matcher.unwrap_or_default());
        let scan = raw.action.as_ref().and_then(|action| action.scan).unwrap_or(false);
        let action = match raw.action {
            Some(action) => validate_action(problems, &scope, action),
            None => {
                problems.section(&scope, "action", "missing: forward, deliver, process or reject");
                None
            }
        };
        if let (Some(action), true) = (action, problems.len() == before) {
            routes.push(EmailRoute { name, priority: raw.priority.unwrap_or(0), matcher, action, scan });
        }
    }
    // Stable: equal priorities keep file order.
    routes.sort_by_key(|r| std::cmp::Reverse(r.priority));
    routes
}

fn regex_of(problems: &mut ProblemList, scope: &str, field: &str, text: &str) -> Option<TextPattern> {
    match regex::RegexBuilder::new(text).size_limit(1 << 20).build() {
        Ok(re) => Some(TextPattern(re)),
        Err(e) => {
            problems.section(scope, field, format!("`{text}` is not a valid regex: {e}"));
            None
        }
    }
}

fn validate_match(problems: &mut ProblemList, scope: &str, raw: RawMatch) -> EmailMatch {
    let globs = |problems: &mut ProblemList, field: &str, list: Option<OneOrList>| -> Option<Vec<AddressGlob>> {
        let list = list?;
        let items = list.items();
        if items.is_empty() {
            problems.section(scope, field, "is empty: leave it out to match every address");
        }
        for item in &items {
            if item.contains(['\r', '\n', ' ', '<', '>']) {
                problems.section(scope, field, format!("`{item}` is not an address glob like `*@example.com`"));
            }
        }
        Some(items.into_iter().map(AddressGlob::new).collect())
    };
    let recipients = globs(problems, "match.recipients", raw.recipients);
    let senders = globs(problems, "match.senders", raw.senders);
    let client_ip = raw.client_ip.map(|list| {
        let mut nets = Vec::new();
        for item in list.items() {
            let item = item.trim();
            match item.parse::<IpNet>().or_else(|_| item.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => nets.push(net),
                Err(_) => problems.section(scope, "match.client_ip", format!("`{item}` is not an address or CIDR")),
            }
        }
        nets
    });
    let mut headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let field = format!("match.headers.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            problems.section(scope, &field, "not a header name");
            continue;
        }
        let rule = match value.strip_prefix('/').and_then(|v| v.strip_suffix('/')) {
            Some(pattern) if value.len() >= 2 => match regex_of(problems, scope, &field, pattern) {
                Some(re) => HeaderValueRule::Regex(re),
                None => continue,
            },
            _ => HeaderValueRule::Exact(value.trim().to_string()),
        };
        headers.push(HeaderRule { name: name.to_lowercase(), value: rule });
    }
    let size = raw.size.map(|size| {
        let bound = |problems: &mut ProblemList, field: &str, v: Option<i64>| match v.map(u64::try_from) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                problems.section(scope, field, "must not be negative");
                None
            }
        };
        let min = bound(problems, "match.size.min", size.min);
        let max = bound(problems, "match.size.max", size.max);
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                problems.section(scope, "match.size", format!("min {min} is larger than max {max}"));
            }
        }
        SizeRange { min, max }
    });
    let subject = raw.subject.and_then(|s| regex_of(problems, scope, "match.subject", &s));
    EmailMatch {
        recipients,
        senders,
        client_ip,
        authenticated: raw.authenticated,
        headers,
        size,
        subject,
        has_attachments: raw.has_attachments,
        auth: super::email_domains::auth_match(problems, scope, [("spf", raw.spf), ("dkim", raw.dkim), ("dmarc", raw.dmarc)].map(
            |(field, list)| (field, list.map(|l| l.items().into_iter().map(str::to_string).collect())),
        )),
    }
}

fn validate_action(problems: &mut ProblemList, scope: &str, raw: RawEmailAction) -> Option<EmailAction> {
    let before = problems.len();
    let kind = raw.kind.as_deref().map(str::trim);
    let allowed: &[&str] = match kind {
        Some("forward") => &["host", "port", "auth", "starttls", "headers"],
        Some("deliver") => &[],
        Some("process") => &["queue", "scan"],
        Some("reject") => &["code", "message"],
        Some(other) => {
            problems.section(scope, "action.type", format!("`{other}` is not an email action (known: forward, deliver, process, reject)"));
            return None;
        }
        None => {
            problems.section(scope, "action.type", "missing: forward, deliver, process or reject");
            return None;
        }
    };
    let present = [
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("auth", raw.auth.is_some()),
        ("starttls", raw.starttls.is_some()),
        ("headers", raw.headers.is_some()),
        ("queue", raw.queue.is_some()),
        ("code", raw.code.is_some()),
        ("message", raw.message.is_some()),
        ("scan", raw.scan.is_some()),
    ];
    let kind = kind.unwrap_or_default();
    for (field, is_present) in present {
        if is_present && !allowed.contains(&field) {
            problems.section(scope, &format!("action.{field}"), format!("not allowed for type `{kind}`"));
        }
    }
    let action = match kind {
        "forward" => {
            let host = match raw.host.as_deref().map(str::trim) {
                Some(h) if !h.is_empty() => {
                    let bare = h.trim_start_matches('[').trim_end_matches(']');
                    if bare.parse::<IpAddr>().is_err() {
                        if let Err(why) = crate::route::validate_hostname(h) {
                            problems.section(scope, "action.host", format!("`{h}` is not a host name or address: {why}"));
                        }
                    }
                    h.to_string()
                }
                _ => {
                    problems.section(scope, "action.host", "missing: the next hop's host name or address");
                    String::new()
                }
            };
            let port = match raw.port {
                None => 25,
                Some(p) => match u16::try_from(p) {
                    Ok(p) if p != 0 => p,
                    _ => {
                        problems.section(scope, "action.port", format!("port {p} is outside 1-65535"));
                        25
                    }
                },
            };
            let auth = raw.auth.and_then(|auth| match (auth.username, auth.password) {
                (Some(username), Some(password)) if !username.is_empty() => Some(ForwardAuth { username, password }),
                _ => {
                    problems.section(scope, "action.auth", "needs `username` and `password`");
                    None
                }
            });
            let starttls = match raw.starttls.as_deref().map(str::trim) {
                None | Some("opportunistic") => StartTlsPolicy::Opportunistic,
                Some("required") => StartTlsPolicy::Required,
                Some("none") => StartTlsPolicy::None,
                Some(other) => {
                    problems.section(scope, "action.starttls", format!("`{other}` is not opportunistic, required or none"));
                    StartTlsPolicy::Opportunistic
                }
            };
            let mut headers = Vec::new();
            for (name, value) in raw.headers.unwrap_or_default() {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') || value.contains(['\r', '\n']) {
                    problems.section(scope, &format!("action.headers.{name}"), "not a header (name without `:`, value without line breaks)");
                } else {
                    headers.push((name, value));
                }
            }
            EmailAction::Forward(MailForward { host, port, auth, starttls, headers })
        }
        "deliver" => EmailAction::Deliver,
        "process" => {
            let queue = match raw.queue.as_deref().map(str::trim) {
                None | Some("normal") => QueueClass::Normal,
                Some("priority") => QueueClass::Priority,
                Some(other) => {
                    problems.section(scope, "action.queue", format!("`{other}` is not normal or priority"));
                    QueueClass::Normal
                }
            };
            EmailAction::Process { queue }
        }
        _ => {
            let code = match raw.code {
                None => 550,
                Some(c) if (400..=599).contains(&c) => c as u16,
                Some(c) => {
                    problems.section(scope, "action.code", format!("{c} is not a 4xx or 5xx reply code"));
                    550
                }
            };
            let message = raw.message.unwrap_or_else(|| "Message rejected by policy".to_string());
            if message.contains(['\r', '\n']) || message.len() > 400 {
                problems.section(scope, "action.message", "must be one line of at most 400 characters");
            }
            EmailAction::Reject { code, message }
        }
    };
    (problems.len() == before).then_some(action)
}

fn validate_delivery(problems: &mut ProblemList, raw: RawDelivery, hostname: &str) -> DeliverySettings {
    let defaults = DeliverySettings::defaults(hostname);
    let mut duration = |field: &str, value: Option<String>, default: Duration| match value.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.section("email.delivery", field, "must be longer than zero");
            default
        }
        Some(Err(e)) => {
            problems.section("email.delivery", field, e);
            default
        }
    };
    let retry_initial = duration("retry_initial", raw.retry_initial, defaults.retry_initial);
    let retry_max = duration("retry_max", raw.retry_max, defaults.retry_max);
    let max_age = duration("max_age", raw.max_age, defaults.max_age);
    let connect_timeout = duration("connect_timeout", raw.connect_timeout, defaults.connect_timeout);
    if retry_max < retry_initial {
        problems.section("email.delivery", "retry_max", "is shorter than retry_initial");
    }
    let concurrency_per_destination = match raw.concurrency_per_destination {
        None => defaults.concurrency_per_destination,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                problems.section("email.delivery", "concurrency_per_destination", format!("{n} is not between 1 and 1000"));
                defaults.concurrency_per_destination
            }
        },
    };
    let resolver = raw.resolver.and_then(|text| match text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.section("email.delivery", "resolver", format!("`{text}` is not an ip:port address"));
            None
        }
    });
    let bounce_sender = match raw.bounce_sender {
        None => defaults.bounce_sender,
        Some(sender) => {
            if shardgate_smtp::Mailbox::parse(&sender).is_err() {
                problems.section("email.delivery", "bounce_sender", format!("`{sender}` is not a mailbox like postmaster@example.com"));
            }
            sender
        }
    };
    let mut source_ips = Vec::new();
    for text in raw.source_ips.unwrap_or_default() {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) if source_ips.contains(&ip) => problems.section("email.delivery", "source_ips", format!("{ip} is listed twice")),
            Ok(ip) if ip.is_unspecified() => problems.section("email.delivery", "source_ips", format!("{ip} is not a usable source address")),
            Ok(ip) => source_ips.push(ip),
            Err(_) => problems.section("email.delivery", "source_ips", format!("`{text}` is not an IP address")),
        }
    }
    let limits = validate_delivery_limits(problems, raw.limits.unwrap_or_default());
    DeliverySettings {
        retry_initial,
        retry_max,
        max_age,
        concurrency_per_destination,
        resolver,
        bounce_sender,
        connect_timeout,
        source_ips,
        limits,
        hold: raw.hold.unwrap_or(false),
    }
}

fn validate_delivery_limits(problems: &mut ProblemList, raw: RawDeliveryLimits) -> DeliveryLimits {
    const SCOPE: &str = "email.delivery.limits";
    let mut count = |field: &str, value: Option<i64>| match value {
        None => None,
        Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
        Some(n) => {
            problems.section(SCOPE, field, format!("{n} is not a positive count (leave it out for no limit)"));
            None
        }
    };
    let mut limits = DeliveryLimits {
        domain_per_minute: count("domain_messages_per_minute", raw.domain_messages_per_minute),
        domain_per_hour: count("domain_messages_per_hour", raw.domain_messages_per_hour),
        ip_per_minute: count("ip_messages_per_minute", raw.ip_messages_per_minute),
        ip_per_hour: count("ip_messages_per_hour", raw.ip_messages_per_hour),
        warmup: None,
    };
    match (raw.warmup_start, raw.warmup) {
        (None, None) => {}
        (Some(_), None) => problems.section(SCOPE, "warmup_start", "has no effect without warmup = [{ day = 1, max = 50 }, ...]"),
        (None, Some(_)) => problems.section(SCOPE, "warmup", "needs warmup_start = \"YYYY-MM-DD\" (the schedule's day 1, UTC)"),
        (Some(start), Some(steps)) => {
            let before = problems.len();
            let start_day = parse_date(&start);
            if start_day.is_none() {
                problems.section(SCOPE, "warmup_start", format!("`{start}` is not a date like 2026-12-01"));
            }
            if steps.is_empty() {
                problems.section(SCOPE, "warmup", "is empty");
            }
            let mut out: Vec<(u32, u32)> = Vec::new();
            for (index, step) in steps.iter().enumerate() {
                let field = format!("warmup[{index}]");
                let day = u32::try_from(step.day).ok().filter(|d| *d >= 1);
                let max = u32::try_from(step.max).ok().filter(|m| *m >= 1);
                match (day, max) {
                    (None, _) => problems.section(SCOPE, &format!("{field}.day"), format!("{} is not a day number from 1", step.day)),
                    (_, None) => problems.section(SCOPE, &format!("{field}.max"), format!("{} is not a positive count", step.max)),
                    (Some(day), Some(_)) if out.last().is_some_and(|(d, _)| *d >= day) => {
                        problems.section(SCOPE, &format!("{field}.day"), format!("day {day} is not after the step before it"))
                    }
                    (Some(day), Some(max)) => out.push((day, max)),
                }
            }
            if let (Some(start_day), true) = (start_day, problems.len() == before) {
                limits.warmup = Some(WarmupSchedule { start_day, steps: out });
            }
        }
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn problems_of(text: &str) -> Vec<String> {
        match Config::parse(text, "edge.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn globs_match_like_shell_patterns_any_case() {
        let glob = AddressGlob::new("*@Example.com");
        assert!(glob.matches("alice@example.COM"));
        assert!(!glob.matches("alice@example.org"));
        assert!(AddressGlob::new("admin@*").matches("admin@x.y"));
        assert!(AddressGlob::new("a?c@*.net").matches("abc@mx.net"));
        assert!(!AddressGlob::new("a?c@*.net").matches("ac@mx.net"));
        assert!(AddressGlob::new("*").matches(""));
        assert!(AddressGlob::new("*a*b*c").matches("xxaxxbxxbc"));
    }

    #[test]
    fn a_full_email_section_is_typed() {
        let config = Config::parse(
            r#"
            [email]
            hostname = "mx.example.com"
            listen = "127.0.0.1"
            local_domains = ["example.com"]
            [email.ports]
            smtp = 2525
            [[email.routes]]
            name = "low"
            match = { recipients = "*@example.com" }
            action = { type = "deliver" }
            [[email.routes]]
            name = "spam"
            priority = 10
            match = { headers = { "X-Spam" = "yes", "List-Id" = "/ann(ounce)?/" }, size = { max = 1000 }, subject = "^\\[SPAM\\]" }
            action = { type = "reject", code = 554, message = "no spam" }
            [[email.routes]]
            name = "relay"
            priority = 5
            match = { authenticated = true, client_ip = ["10.0.0.0/8", "192.0.2.1"] }
            action = { type = "forward", host = "127.0.0.1", port = 2626, starttls = "required", auth = { username = "u", password = "p" }, headers = { "X-Relayed" = "1" } }
            [[email.routes]]
            name = "out"
            action = { type = "process", queue = "priority" }
            [email.delivery]
            retry_initial = "1s"
            resolver = "127.0.0.1:5300"
            "#,
            "edge.toml",
        )
        .expect("valid");
        let email = config.email.expect("email");
        let names: Vec<&str> = email.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["spam", "relay", "low", "out"]);
        assert!(email.routes[0].matcher.has_content_criteria());
        assert!(!email.routes[1].matcher.has_content_criteria());
        let EmailAction::Forward(forward) = &email.routes[1].action else { panic!("forward") };
        assert_eq!((forward.port, forward.starttls), (2626, StartTlsPolicy::Required));
        assert!(!format!("{forward:?}").contains("\"p\""));
        assert_eq!(email.routes[3].action, EmailAction::Process { queue: QueueClass::Priority });
        assert_eq!(email.delivery.retry_initial, Duration::from_secs(1));
        assert_eq!(email.delivery.resolver, Some("127.0.0.1:5300".parse().expect("addr")));
        assert_eq!(email.delivery.bounce_sender, "MAILER-DAEMON@mx.example.com");
        let addrs = email.listen_addresses();
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs.get(&"127.0.0.1:2525".parse().expect("addr")), Some(&ListenerKind::Smtp));
    }

    #[test]
    fn every_email_problem_is_named_with_route_and_field() {
        let found = problems_of(
            r#"
            [email]
            hostname = "bad host"
            listen = ["nope"]
            max_recipients = 0
            connections_per_ip = 0
            bogus = 1
            [email.ports]
            smtp = 2525
            smtps = 4650
            [[email.routes]]
            name = "a"
            match = { client_ip = "10.0.0.0/33", subject = "(", size = { min = 10, max = 1 }, headers = { "X" = "/[/" } }
            action = { type = "forward", port = 0, queue = "normal" }
            [[email.routes]]
            name = "a"
            action = { type = "reject", code = 250 }
            [[email.routes]]
            name = "c"
            action = { type = "teleport" }
            [[email.routes]]
            name = "d"
            action = { type = "process", queue = "urgent" }
            [email.delivery]
            retry_initial = "1h"
            retry_max = "1m"
            resolver = "localhost"
            concurrency_per_destination = 0
            "#,
        );
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("[email] hostname:"), "{found:#?}");
        assert!(has("[email] bogus: unknown field"), "{found:#?}");
        assert!(has("[email] max_recipients:"), "{found:#?}");
        assert!(has("[email] listen: `nope`"), "{found:#?}");
        assert!(has("[email] connections_per_ip:"), "{found:#?}");
        assert!(has("[email] ports.smtps: implicit TLS needs a certificate"), "{found:#?}");
        assert!(has("[email.routes `a`] match.client_ip:"), "{found:#?}");
        assert!(has("[email.routes `a`] match.subject:"), "{found:#?}");
        assert!(has("[email.routes `a`] match.size: min 10"), "{found:#?}");
        assert!(has("[email.routes `a`] match.headers.X:"), "{found:#?}");
        assert!(has("[email.routes `a`] action.host: missing"), "{found:#?}");
        assert!(has("[email.routes `a`] action.port:"), "{found:#?}");
        assert!(has("[email.routes `a`] action.queue: not allowed for type `forward`"), "{found:#?}");
        assert!(has("[email.routes `a`] name: another email route"), "{found:#?}");
        assert!(has("[email.routes `a`] action.code: 250"), "{found:#?}");
        assert!(has("[email.routes `c`] action.type: `teleport`"), "{found:#?}");
        assert!(has("[email.routes `d`] action.queue: `urgent`"), "{found:#?}");
        assert!(has("[email.delivery] retry_max:"), "{found:#?}");
        assert!(has("[email.delivery] resolver:"), "{found:#?}");
        assert!(has("[email.delivery] concurrency_per_destination:"), "{found:#?}");
    }

    #[test]
    fn delivery_limits_and_warmup_are_typed_and_checked() {
        let base = "[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n[email.delivery]\nsource_ips = [\"127.0.0.1\", \"::1\"]\n";
        let text = format!(
            "{base}[email.delivery.limits]\ndomain_messages_per_minute = 10\nip_messages_per_hour = 500\n\
             warmup_start = \"2026-12-01\"\nwarmup = [{{ day = 1, max = 50 }}, {{ day = 2, max = 100 }}, {{ day = 5, max = 1000 }}]\n"
        );
        let config = Config::parse(&text, "edge.toml").expect("valid");
        let delivery = config.email.expect("email").delivery;
        assert_eq!(delivery.source_ips.len(), 2);
        assert_eq!((delivery.limits.domain_per_minute, delivery.limits.ip_per_hour), (Some(10), Some(500)));
        let warmup = delivery.limits.warmup.expect("warmup");
        let start = parse_date("2026-12-01").expect("date");
        assert_eq!(warmup.start_day, start);
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(warmup.cap(start - 3), Some(50), "before day 1: the first step");
        assert_eq!(warmup.cap(start), Some(50));
        assert_eq!(warmup.cap(start + 1), Some(100));
        assert_eq!(warmup.cap(start + 3), Some(100));
        assert_eq!(warmup.cap(start + 4), Some(1000));
        assert_eq!(warmup.cap(start + 5), None, "the ramp is over");

        let bad = format!(
            "{base}source_ips = [\"nope\"]\n[email.delivery.limits]\ndomain_messages_per_hour = 0\nwarmup_start = \"2026-02-30\"\n\
             warmup = [{{ day = 2, max = 10 }}, {{ day = 2, max = 20 }}, {{ day = 3, max = 0 }}]\n"
        );
        let found = problems_of(&bad.replace("source_ips = [\"127.0.0.1\", \"::1\"]\n", ""));
        for needle in [
            "edge.toml: [email.delivery] source_ips: `nope` is not an IP address",
            "[email.delivery.limits] domain_messages_per_hour:",
            "[email.delivery.limits] warmup_start: `2026-02-30` is not a date",
            "[email.delivery.limits] warmup[1].day: day 2 is not after",
            "[email.delivery.limits] warmup[2].max:",
        ] {
            assert!(found.iter().any(|p| p.contains(needle)), "missing {needle} in {found:#?}");
        }
    }

    #[test]
    fn connections_per_ip_has_one_home_and_an_alias() {
        let base = "[email]\nhostname = \"mx.example.com\"\n";
        let limits = |text: &str| Config::parse(text, "edge.toml").expect("valid").mail_auth.limits.connections_per_ip;
        assert_eq!(limits(&format!("{base}[email.ports]\nsmtp = 2525\n")), Some(DEFAULT_CONNECTIONS_PER_IP));
        assert_eq!(limits(&format!("{base}connections_per_ip = 7\n[email.ports]\nsmtp = 2525\n")), Some(7));
        assert_eq!(limits(&format!("{base}[email.ports]\nsmtp = 2525\n[email.limits]\nconnections_per_ip = 9\n")), Some(9));
        let both = problems_of(&format!("{base}connections_per_ip = 7\n[email.ports]\nsmtp = 2525\n[email.limits]\nconnections_per_ip = 9\n"));
        assert!(
            both.iter().any(|p| p.starts_with("edge.toml: [email] connections_per_ip: is also set as [email.limits] connections_per_ip")),
            "{both:#?}"
        );
    }

    #[test]
    fn actions_round_trip_through_serde_for_queue_records() {
        let action = EmailAction::Forward(MailForward {
            host: "relay.example".into(),
            port: 587,
            auth: None,
            starttls: StartTlsPolicy::Opportunistic,
            headers: vec![("X-A".into(), "b".into())],
        });
        let text = serde_json::to_string(&action).expect("json");
        assert_eq!(serde_json::from_str::<EmailAction>(&text).expect("back"), action);
    }
}
