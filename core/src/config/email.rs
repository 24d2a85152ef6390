//! The `[email]` section: the SMTP gateway's server settings, `[[email.routes]]` and
//! `[email.delivery]`.
//!
//! Owns: the raw shape of the core-only keys (`listen`, `connections_per_ip`, `routes`,
//! `delivery`), their checks (every problem named with its section or route and field), and the
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
    /// Most concurrent sessions one client address may hold on one shard (each shard enforces
    /// it on its own, without cross-shard traffic).
    pub connections_per_ip: u32,
    /// `[[email.routes]]`, highest priority first, then file order.
    pub routes: Vec<EmailRoute>,
    /// `[email.delivery]`: what the delivery engine on the control core uses.
    pub delivery: DeliverySettings,
}

/// Default of `[email] connections_per_ip`.
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
        }
    }
}

/// `[email]` keys this module owns; the rest goes to `shardgate_smtp::EmailConfig`.
const CORE_KEYS: [&str; 4] = ["listen", "connections_per_ip", "routes", "delivery"];

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
    let connections_per_ip = match table.get("connections_per_ip") {
        None => DEFAULT_CONNECTIONS_PER_IP,
        Some(v) => match v.as_integer().map(u32::try_from) {
            Some(Ok(n)) if n > 0 => n,
            _ => {
                problems.section("email", "connections_per_ip", format!("{v} is not a positive count"));
                DEFAULT_CONNECTIONS_PER_IP
            }
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
    Some(EmailSettings { server, listen, connections_per_ip, routes, delivery })
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
    DeliverySettings { retry_initial, retry_max, max_age, concurrency_per_destination, resolver, bounce_sender, connect_timeout }
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
