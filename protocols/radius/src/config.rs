//! The `[radius]` configuration section exactly as the user writes it.
//!
//! This module owns the serde shape of the section (every table refuses unknown keys, so a
//! typo is an error rather than a silently ignored setting) and its defaults. It keeps MAC
//! patterns and client sources as the user's text so that [`RadiusConfig::validate`] can report
//! *every* problem at once, each naming the client or rule index and the field. Compiling the
//! validated section into lookups is [`crate::policy::Policy::from_config`]'s job.
//!
//! ```toml
//! [radius]
//! listen = ["0.0.0.0"]                   # addresses the two UDP ports are opened on
//! auth_port = 1812
//! acct_port = 1813
//! require_message_authenticator = true   # BlastRADIUS (CVE-2024-3596) mitigation
//! session_stale_timeout_secs = 86400
//!
//! [[radius.clients]]
//! name = "access-switches"
//! source = "10.20.0.0/16"                # an address or a CIDR
//! secret = "long-random-shared-secret"
//!
//! [radius.mac_auth]
//! enabled = true
//! allowed = ["00:11:22:33:44:55", "aa:bb:cc:*"]
//! default_vlan = 10
//! unknown = 999                          # guest VLAN for other MACs, or "reject"
//!
//! [[radius.vlans]]
//! mac = "aa:bb:cc:*"
//! vlan = 20
//!
//! [[radius.vlans]]
//! default = true
//! vlan = 10
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ConfigProblem;
use crate::mac::MacPattern;
use crate::RadiusError;

/// The `[radius]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusConfig {
    /// Addresses both UDP ports are opened on (`"::"` is IPv6 only; list `"0.0.0.0"` too for
    /// IPv4). Default `["0.0.0.0"]`.
    #[serde(default = "default_listen")]
    pub listen: Vec<IpAddr>,
    /// UDP port for Access-Request and Status-Server. Default 1812.
    #[serde(default = "default_auth_port")]
    pub auth_port: u16,
    /// UDP port for Accounting-Request. Default 1813.
    #[serde(default = "default_acct_port")]
    pub acct_port: u16,
    /// NAS clients allowed to talk to us; datagrams from anything else are dropped silently.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Drop Access-Requests that carry no Message-Authenticator. Default true (BlastRADIUS,
    /// CVE-2024-3596). Status-Server always requires one (RFC 5997).
    #[serde(default = "default_true")]
    pub require_message_authenticator: bool,
    /// MAC authentication bypass settings.
    #[serde(default)]
    pub mac_auth: MacAuthConfig,
    /// VLAN rules, first match wins.
    #[serde(default)]
    pub vlans: Vec<VlanRuleConfig>,
    /// An accounting session with no packet for this long is dropped from the table.
    /// Default 86400 (one day), long enough for NASes that send no Interim-Update.
    #[serde(default = "default_stale_timeout")]
    pub session_stale_timeout_secs: u64,
}

fn default_listen() -> Vec<IpAddr> {
    vec![IpAddr::from([0, 0, 0, 0])]
}
fn default_auth_port() -> u16 {
    1812
}
fn default_acct_port() -> u16 {
    1813
}
fn default_true() -> bool {
    true
}
fn default_stale_timeout() -> u64 {
    86_400
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            auth_port: default_auth_port(),
            acct_port: default_acct_port(),
            clients: Vec::new(),
            require_message_authenticator: true,
            mac_auth: MacAuthConfig::default(),
            vlans: Vec::new(),
            session_stale_timeout_secs: default_stale_timeout(),
        }
    }
}

/// One `[[radius.clients]]` entry: a NAS (or a subnet of NASes) and its shared secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Name used in logs, counters and accounting records.
    pub name: String,
    /// Source address (`192.0.2.7`) or network (`192.0.2.0/24`, `2001:db8::/32`).
    pub source: String,
    /// Shared secret.
    pub secret: String,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `[radius.mac_auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacAuthConfig {
    /// Whether MAC authentication bypass answers at all; when false every Access-Request is
    /// rejected. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// MACs that may authenticate: full MACs in any format, or prefixes like `aa:bb:cc:*`.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// VLAN for allowed MACs no `[[radius.vlans]]` rule matches. Without it (and without a
    /// matching rule) the Accept carries no VLAN and the switch keeps its port VLAN.
    #[serde(default)]
    pub default_vlan: Option<u16>,
    /// What happens to MACs not in `allowed`. Default `"reject"`.
    #[serde(default)]
    pub unknown: UnknownMacAction,
}

impl Default for MacAuthConfig {
    fn default() -> Self {
        Self { enabled: true, allowed: Vec::new(), default_vlan: None, unknown: UnknownMacAction::Reject }
    }
}

/// `unknown = "reject"` or `unknown = <guest VLAN id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownMacAction {
    /// Answer Access-Reject.
    #[default]
    Reject,
    /// Answer Access-Accept into this guest VLAN.
    GuestVlan(u16),
}

impl<'de> Deserialize<'de> for UnknownMacAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionVisitor;
        impl Visitor<'_> for ActionVisitor {
            type Value = UnknownMacAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"reject\" or a guest VLAN id (1..=4094)")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
                if value.eq_ignore_ascii_case("reject") {
                    Ok(UnknownMacAction::Reject)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                u16::try_from(value)
                    .map(UnknownMacAction::GuestVlan)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                u16::try_from(value)
                    .map(UnknownMacAction::GuestVlan)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
            }
        }
        deserializer.deserialize_any(ActionVisitor)
    }
}

/// One `[[radius.vlans]]` rule: either `mac = "<pattern>"` or `default = true`, and the VLAN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanRuleConfig {
    /// MAC pattern this rule matches.
    #[serde(default)]
    pub mac: Option<String>,
    /// Matches every MAC; must be the last rule.
    #[serde(default)]
    pub default: bool,
    /// VLAN id, 1..=4094.
    pub vlan: u16,
}

/// Valid 802.1Q VLAN ids (0 and 4095 are reserved).
pub const VLAN_RANGE: std::ops::RangeInclusive<u16> = 1..=4094;

/// A parsed client source: an address is a /32 (or /128) network.
pub(crate) fn parse_source(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    if text.contains('/') {
        text.parse::<ipnet::IpNet>().ok().map(|net| net.trunc())
    } else {
        text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from)
    }
}

impl RadiusConfig {
    /// Checks the whole section and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), RadiusError> {
        let problems = self.problems();
        if problems.is_empty() { Ok(()) } else { Err(RadiusError::InvalidConfig(problems)) }
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: &str| problems.push(ConfigProblem::new(field, message));

        if self.listen.is_empty() {
            problem("radius.listen".into(), "no listen address: give at least one, e.g. [\"0.0.0.0\"]");
        }
        let mut listen_seen = HashSet::new();
        for ip in &self.listen {
            if !listen_seen.insert(ip) {
                problem("radius.listen".into(), &format!("address {ip} is listed twice"));
            }
        }
        for (field, port) in [("auth_port", self.auth_port), ("acct_port", self.acct_port)] {
            if port == 0 {
                problem(format!("radius.{field}"), "must be a UDP port between 1 and 65535");
            }
        }
        if self.auth_port == self.acct_port && self.auth_port != 0 {
            problem("radius.acct_port".into(), "must differ from auth_port (accounting needs its own socket)");
        }
        if self.session_stale_timeout_secs == 0 {
            problem("radius.session_stale_timeout_secs".into(), "must be at least 1 second");
        }

        let mut names = HashSet::new();
        let mut sources = HashSet::new();
        for (index, client) in self.clients.iter().enumerate() {
            let at = |field: &str| format!("radius.clients[{index}] ({:?}).{field}", client.name);
            if client.name.trim().is_empty() {
                problem(at("name"), "must not be empty");
            } else if !names.insert(client.name.as_str()) {
                problem(at("name"), "is already used by an earlier client");
            }
            match parse_source(&client.source) {
                None => problem(at("source"), "is neither an IP address nor a CIDR network like 10.0.0.0/24"),
                Some(net) if !sources.insert(net) => problem(at("source"), "is the same network as an earlier client"),
                Some(_) => {}
            }
            if client.secret.is_empty() {
                problem(at("secret"), "must not be empty");
            }
        }

        for (index, pattern) in self.mac_auth.allowed.iter().enumerate() {
            if MacPattern::parse(pattern).is_err() {
                problem(
                    format!("radius.mac_auth.allowed[{index}]"),
                    &format!("`{pattern}` is not a MAC or a prefix pattern like aa:bb:cc:*"),
                );
            }
        }
        if let Some(vlan) = self.mac_auth.default_vlan.filter(|v| !VLAN_RANGE.contains(v)) {
            problem("radius.mac_auth.default_vlan".into(), &format!("VLAN {vlan} is outside 1..=4094"));
        }
        if let UnknownMacAction::GuestVlan(vlan) = self.mac_auth.unknown {
            if !VLAN_RANGE.contains(&vlan) {
                problem("radius.mac_auth.unknown".into(), &format!("guest VLAN {vlan} is outside 1..=4094"));
            }
        }

        let mut default_rule_seen = None;
        for (index, rule) in self.vlans.iter().enumerate() {
            let at = |field: &str| format!("radius.vlans[{index}].{field}");
            if let Some(default_index) = default_rule_seen {
                problem(at("mac"), &format!("is unreachable: rule {default_index} is a default rule that matches everything"));
            }
            match (&rule.mac, rule.default) {
                (Some(_), true) => problem(at("default"), "a rule has either `mac` or `default = true`, not both"),
                (None, false) => problem(at("mac"), "is missing: a rule needs `mac = \"<pattern>\"` or `default = true`"),
                (Some(pattern), false) if MacPattern::parse(pattern).is_err() => {
                    problem(at("mac"), &format!("`{pattern}` is not a MAC or a prefix pattern like aa:bb:cc:*"))
                }
                _ => {}
            }
            if rule.default && default_rule_seen.is_none() {
                default_rule_seen = Some(index);
            }
            if !VLAN_RANGE.contains(&rule.vlan) {
                problem(at("vlan"), &format!("VLAN {} is outside 1..=4094", rule.vlan));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        radius: RadiusConfig,
    }

    fn parse(text: &str) -> Result<RadiusConfig, toml::de::Error> {
        toml::from_str::<File>(text).map(|f| f.radius)
    }

    #[test]
    fn module_doc_example_parses_and_validates() {
        let config = parse(
            r#"
            [radius]
            auth_port = 1812
            acct_port = 1813
            require_message_authenticator = true
            session_stale_timeout_secs = 86400
            [[radius.clients]]
            name = "access-switches"
            source = "10.20.0.0/16"
            secret = "long-random-shared-secret"
            [radius.mac_auth]
            enabled = true
            allowed = ["00:11:22:33:44:55", "aa:bb:cc:*"]
            default_vlan = 10
            unknown = 999
            [[radius.vlans]]
            mac = "aa:bb:cc:*"
            vlan = 20
            [[radius.vlans]]
            default = true
            vlan = 10
            "#,
        )
        .unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.mac_auth.unknown, UnknownMacAction::GuestVlan(999));
        assert_eq!(config.vlans.len(), 2);
        assert!(!format!("{:?}", config.clients[0]).contains("long-random"));
    }

    #[test]
    fn defaults_are_secure() {
        let config = parse("[radius]").unwrap();
        assert_eq!(config, RadiusConfig::default());
        assert!(config.require_message_authenticator);
        assert_eq!((config.auth_port, config.acct_port), (1812, 1813));
        assert_eq!(config.listen, vec![IpAddr::from([0, 0, 0, 0])]);
        assert_eq!(config.mac_auth.unknown, UnknownMacAction::Reject);
        assert_eq!(parse("[radius.mac_auth]\nunknown = \"reject\"").unwrap().mac_auth.unknown, UnknownMacAction::Reject);
    }

    #[test]
    fn unknown_keys_and_bad_unknown_actions_are_errors() {
        assert!(parse("[radius]\nauth_prot = 1").is_err());
        assert!(parse("[radius]\nlisten = [\"not-an-ip\"]").is_err());
        assert!(parse("[[radius.clients]]\nname='a'\nsource='10.0.0.1'\nsecret='s'\nsecert='x'").is_err());
        assert!(parse("[radius.mac_auth]\nunknown = \"guest\"").is_err());
        assert!(parse("[radius.mac_auth]\nunknown = 70000").is_err());
        assert!(parse("[[radius.vlans]]\nmac='*'\nvlan=1\nvlna=2").is_err());
    }

    #[test]
    fn validate_reports_every_problem_with_its_location() {
        let config = parse(
            r#"
            [radius]
            listen = ["127.0.0.1", "127.0.0.1"]
            auth_port = 1812
            acct_port = 1812
            session_stale_timeout_secs = 0
            [[radius.clients]]
            name = "a"
            source = "10.0.0.0/33"
            secret = ""
            [[radius.clients]]
            name = "a"
            source = "10.0.0.1"
            secret = "x"
            [[radius.clients]]
            name = "c"
            source = "10.0.0.1/32"
            secret = "x"
            [radius.mac_auth]
            allowed = ["aa:bb:cc:*", "nonsense"]
            default_vlan = 4095
            unknown = 0
            [[radius.vlans]]
            default = true
            vlan = 10
            [[radius.vlans]]
            mac = "zz:*"
            vlan = 0
            [[radius.vlans]]
            vlan = 5
            "#,
        )
        .unwrap();
        let Err(RadiusError::InvalidConfig(problems)) = config.validate() else { panic!("expected problems") };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "radius.listen",
                "radius.acct_port",
                "radius.session_stale_timeout_secs",
                "radius.clients[0] (\"a\").source",
                "radius.clients[0] (\"a\").secret",
                "radius.clients[1] (\"a\").name",
                "radius.clients[2] (\"c\").source",
                "radius.mac_auth.allowed[1]",
                "radius.mac_auth.default_vlan",
                "radius.mac_auth.unknown",
                "radius.vlans[1].mac",
                "radius.vlans[1].mac",
                "radius.vlans[1].vlan",
                "radius.vlans[2].mac",
                "radius.vlans[2].mac",
            ]
        );
        assert!(problems[10].message.contains("unreachable"));
    }

    #[test]
    fn sources_accept_addresses_and_networks() {
        assert_eq!(parse_source("192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_source("192.0.2.7/24"), Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!(parse_source("2001:db8::1"), Some("2001:db8::1/128".parse().unwrap()));
        assert_eq!(parse_source("host.example"), None);
    }
}
