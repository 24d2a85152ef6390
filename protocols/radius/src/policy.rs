//! The `[radius]` section compiled into the lookups the request handler makes.
//!
//! This module owns the MAB decision: which client a source address belongs to (longest
//! prefix wins), whether a MAC may authenticate, and which VLAN it lands in
//! ([`Policy::decide`]). A [`Policy`] is immutable; a config reload builds a new one and the
//! shard swaps it between datagrams, so nothing in flight is lost. It does not parse packets
//! or touch the network.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{parse_source, RadiusConfig, UnknownMacAction};
use crate::error::ConfigProblem;
use crate::mac::{MacAddress, MacPattern};
use crate::RadiusError;

/// A RADIUS shared secret. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(Vec<u8>);

impl SharedSecret {
    /// Wraps secret octets.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The octets, for the MD5/HMAC computations.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// A NAS we answer: its name, the network its datagrams come from, and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusClient {
    /// Name from the config, used in logs and accounting records.
    pub name: String,
    /// Source network.
    pub network: IpNet,
    /// Shared secret.
    pub secret: SharedSecret,
}

/// One compiled `[[radius.vlans]]` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRule {
    /// MACs the rule applies to; `*` for a default rule.
    pub pattern: MacPattern,
    /// VLAN id assigned.
    pub vlan: u16,
}

/// Why a MAC was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `mac_auth.enabled = false`.
    MacAuthDisabled,
    /// Neither Calling-Station-Id nor User-Name held a MAC address.
    NoMacAddress,
    /// The MAC is not in `mac_auth.allowed` and `unknown = "reject"`.
    UnknownMac,
    /// The NAS sent a User-Password or CHAP-Password that is not the MAC / User-Name.
    WrongPassword,
    /// The request carries EAP-Message; shardgate does not run EAP.
    EapNotSupported,
}

/// What MAC authentication bypass answers for one MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MabDecision {
    /// Access-Accept, with the VLAN tunnel attributes if a VLAN is set.
    Accept {
        /// VLAN to put the port in; `None` leaves the switch's port VLAN.
        vlan: Option<u16>,
        /// Whether the MAC matched `mac_auth.allowed` (false: guest VLAN).
        known: bool,
    },
    /// Access-Reject.
    Reject(RejectReason),
}

/// The compiled `[radius]` policy shared (read-only) by the shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Clients, most specific network first.
    clients: Vec<RadiusClient>,
    /// Drop Access-Requests without Message-Authenticator.
    pub require_message_authenticator: bool,
    /// `mac_auth.enabled`.
    pub mac_auth_enabled: bool,
    allowed: Vec<MacPattern>,
    vlan_rules: Vec<VlanRule>,
    default_vlan: Option<u16>,
    unknown: UnknownMacAction,
    /// Accounting sessions idle this long are stale.
    pub session_stale_timeout: Duration,
    /// UDP port for authentication.
    pub auth_port: u16,
    /// UDP port for accounting.
    pub acct_port: u16,
}

impl Policy {
    /// Validates `config` (reporting every problem) and compiles it.
    pub fn from_config(config: &RadiusConfig) -> Result<Self, RadiusError> {
        config.validate()?;
        let mut problems = Vec::new();
        let mut clients = Vec::with_capacity(config.clients.len());
        for (index, client) in config.clients.iter().enumerate() {
            match parse_source(&client.source) {
                Some(network) => clients.push(RadiusClient {
                    name: client.name.clone(),
                    network,
                    secret: SharedSecret::new(client.secret.as_bytes()),
                }),
                None => problems.push(ConfigProblem::new(format!("radius.clients[{index}].source"), "is not an address")),
            }
        }
        // Longest prefix first; the sort is stable so equal prefixes keep config order.
        clients.sort_by_key(|client| std::cmp::Reverse(client.network.prefix_len()));
        let mut allowed = Vec::with_capacity(config.mac_auth.allowed.len());
        for (index, text) in config.mac_auth.allowed.iter().enumerate() {
            match MacPattern::parse(text) {
                Ok(pattern) => allowed.push(pattern),
                Err(err) => problems.push(ConfigProblem::new(format!("radius.mac_auth.allowed[{index}]"), err.to_string())),
            }
        }
        let mut vlan_rules = Vec::with_capacity(config.vlans.len());
        for (index, rule) in config.vlans.iter().enumerate() {
            let pattern = match (&rule.mac, rule.default) {
                (_, true) => MacPattern::parse("*"),
                (Some(text), false) => MacPattern::parse(text),
                (None, false) => Err(RadiusError::InvalidMacPattern { input: String::new() }),
            };
            match pattern {
                Ok(pattern) => vlan_rules.push(VlanRule { pattern, vlan: rule.vlan }),
                Err(err) => problems.push(ConfigProblem::new(format!("radius.vlans[{index}].mac"), err.to_string())),
            }
        }
        if !problems.is_empty() {
            return Err(RadiusError::InvalidConfig(problems));
        }
        Ok(Self {
            clients,
            require_message_authenticator: config.require_message_authenticator,
            mac_auth_enabled: config.mac_auth.enabled,
            allowed,
            vlan_rules,
            default_vlan: config.mac_auth.default_vlan,
            unknown: config.mac_auth.unknown,
            session_stale_timeout: Duration::from_secs(config.session_stale_timeout_secs),
            auth_port: config.auth_port,
            acct_port: config.acct_port,
        })
    }

    /// The client a datagram from `source` belongs to (longest prefix match; IPv4-mapped IPv6
    /// sources match IPv4 clients).
    pub fn client_for(&self, source: IpAddr) -> Option<&RadiusClient> {
        let source = source.to_canonical();
        self.clients.iter().find(|client| client.network.contains(&source))
    }

    /// All configured clients, most specific network first.
    pub fn clients(&self) -> &[RadiusClient] {
        &self.clients
    }

    /// Whether `mac` is in `mac_auth.allowed`.
    pub fn is_allowed(&self, mac: &MacAddress) -> bool {
        self.allowed.iter().any(|pattern| pattern.matches(mac))
    }

    /// The VLAN for an allowed MAC: first matching rule, else `mac_auth.default_vlan`.
    pub fn vlan_for(&self, mac: &MacAddress) -> Option<u16> {
        self.vlan_rules
            .iter()
            .find(|rule| rule.pattern.matches(mac))
            .map(|rule| rule.vlan)
            .or(self.default_vlan)
    }

    /// The MAB decision for a MAC whose credentials already checked out.
    pub fn decide(&self, mac: &MacAddress) -> MabDecision {
        if !self.mac_auth_enabled {
            return MabDecision::Reject(RejectReason::MacAuthDisabled);
        }
        if self.is_allowed(mac) {
            return MabDecision::Accept { vlan: self.vlan_for(mac), known: true };
        }
        match self.unknown {
            UnknownMacAction::Reject => MabDecision::Reject(RejectReason::UnknownMac),
            UnknownMacAction::GuestVlan(vlan) => MabDecision::Accept { vlan: Some(vlan), known: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, MacAuthConfig, VlanRuleConfig};

    fn config() -> RadiusConfig {
        RadiusConfig {
            clients: vec![
                ClientConfig { name: "lab".into(), source: "10.0.0.0/8".into(), secret: "a".into() },
                ClientConfig { name: "core".into(), source: "10.1.2.3".into(), secret: "b".into() },
            ],
            mac_auth: MacAuthConfig {
                enabled: true,
                allowed: vec!["aa:bb:cc:*".into(), "00:11:22:33:44:55".into()],
                default_vlan: Some(10),
                unknown: UnknownMacAction::GuestVlan(999),
            },
            vlans: vec![
                VlanRuleConfig { mac: Some("aa:bb:cc:dd:*".into()), default: false, vlan: 30 },
                VlanRuleConfig { mac: Some("aa:bb:cc:*".into()), default: false, vlan: 20 },
            ],
            ..RadiusConfig::default()
        }
    }

    fn mac(text: &str) -> MacAddress {
        MacAddress::parse(text).unwrap()
    }

    #[test]
    fn clients_match_by_longest_prefix_and_mapped_addresses() {
        let policy = Policy::from_config(&config()).unwrap();
        assert_eq!(policy.client_for("10.1.2.3".parse().unwrap()).unwrap().name, "core");
        assert_eq!(policy.client_for("10.9.9.9".parse().unwrap()).unwrap().name, "lab");
        assert_eq!(policy.client_for("::ffff:10.1.2.3".parse().unwrap()).unwrap().name, "core");
        assert!(policy.client_for("192.0.2.1".parse().unwrap()).is_none());
        assert!(!format!("{policy:?}").contains("secret: \"a\""));
    }

    #[test]
    fn vlan_rules_apply_in_order_then_default_vlan_then_guest() {
        let policy = Policy::from_config(&config()).unwrap();
        assert_eq!(policy.decide(&mac("aa:bb:cc:dd:00:01")), MabDecision::Accept { vlan: Some(30), known: true });
        assert_eq!(policy.decide(&mac("aa:bb:cc:00:00:01")), MabDecision::Accept { vlan: Some(20), known: true });
        assert_eq!(policy.decide(&mac("00:11:22:33:44:55")), MabDecision::Accept { vlan: Some(10), known: true });
        assert_eq!(policy.decide(&mac("00:11:22:33:44:56")), MabDecision::Accept { vlan: Some(999), known: false });
    }

    #[test]
    fn unknown_reject_disabled_and_default_rule() {
        let mut cfg = config();
        cfg.mac_auth.unknown = UnknownMacAction::Reject;
        cfg.mac_auth.default_vlan = None;
        cfg.vlans.truncate(1);
        let policy = Policy::from_config(&cfg).unwrap();
        assert_eq!(policy.decide(&mac("00:11:22:33:44:56")), MabDecision::Reject(RejectReason::UnknownMac));
        assert_eq!(policy.decide(&mac("00:11:22:33:44:55")), MabDecision::Accept { vlan: None, known: true });
        cfg.vlans.push(VlanRuleConfig { mac: None, default: true, vlan: 7 });
        let policy = Policy::from_config(&cfg).unwrap();
        assert_eq!(policy.decide(&mac("00:11:22:33:44:55")), MabDecision::Accept { vlan: Some(7), known: true });
        cfg.mac_auth.enabled = false;
        let policy = Policy::from_config(&cfg).unwrap();
        assert_eq!(policy.decide(&mac("00:11:22:33:44:55")), MabDecision::Reject(RejectReason::MacAuthDisabled));
    }

    #[test]
    fn invalid_config_is_refused_with_all_problems() {
        let mut cfg = config();
        cfg.clients[0].secret.clear();
        cfg.vlans[0].vlan = 0;
        let Err(RadiusError::InvalidConfig(problems)) = Policy::from_config(&cfg) else { panic!("must fail") };
        assert_eq!(problems.len(), 2);
    }
}
