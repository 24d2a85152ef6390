//! The `[dns]` configuration section.
//!
//! Owns: the serde shape of the section (listen addresses, zones inline or from RFC 1035 master
//! files, RRL limits, `doh_domain`) and [`DnsConfig::validate`], which reports *every* problem at
//! once, each naming the zone, record and field. Does not own: reading master files (that is
//! [`crate::zone::Catalog::load`]) or binding sockets (the shards do that).
//!
//! ```toml
//! [dns]
//! udp = ["0.0.0.0:53"]
//! tcp = ["0.0.0.0:53"]
//! doh_domain = "dns.example.net"
//!
//! [dns.rrl]
//! responses_per_second = 20
//! slip = 2
//!
//! [[dns.zones]]
//! origin = "example.net."
//! soa = { mname = "ns1", rname = "hostmaster", serial = 2024010101 }
//! records = [
//!   { name = "@",   type = "NS", value = "ns1" },
//!   { name = "ns1", type = "A",  value = "192.0.2.53" },
//!   { name = "www", type = "A",  ttl = 300, value = "192.0.2.10" },
//! ]
//!
//! [[dns.zones]]
//! origin = "example.org."
//! file = "/etc/shardgate/example.org.zone"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::error::DnsError;
use crate::zone::Zone;

/// Port used by the embedded default configuration (unprivileged, so tests and first runs work
/// without root; production configs set 53 explicitly).
pub const DEFAULT_DNS_PORT: u16 = 5300;

/// Default EDNS UDP payload size we advertise (DNS flag day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;

/// The `[dns]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP listen addresses; every shard opens its own `SO_REUSEPORT` socket on each.
    #[serde(default = "default_listen")]
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    #[serde(default = "default_listen")]
    pub tcp: Vec<SocketAddr>,
    /// EDNS payload size we advertise and the upper bound for UDP responses (512..=4096).
    #[serde(default = "default_payload")]
    pub max_udp_payload: u16,
    /// Host name under which DoH (`/dns-query`, `/resolve`) is served; `None` disables DoH.
    #[serde(default)]
    pub doh_domain: Option<String>,
    /// Response rate limiting.
    #[serde(default)]
    pub rrl: RrlConfig,
    /// The zones we are authoritative for.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            udp: default_listen(),
            tcp: default_listen(),
            max_udp_payload: DEFAULT_MAX_UDP_PAYLOAD,
            doh_domain: None,
            rrl: RrlConfig::default(),
            zones: Vec::new(),
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], DEFAULT_DNS_PORT))]
}

fn default_payload() -> u16 {
    DEFAULT_MAX_UDP_PAYLOAD
}

/// `[dns.rrl]`: response rate limiting per client prefix (BIND/Knot style accounting).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrlConfig {
    /// Turn RRL on or off.
    pub enabled: bool,
    /// Responses per second allowed per client prefix.
    pub responses_per_second: u32,
    /// Every Nth limited response is sent truncated (TC=1) instead of dropped; 0 = always drop,
    /// 1 = always slip.
    pub slip: u32,
    /// Seconds of debt a prefix can accumulate (how long a flood keeps being limited).
    pub window_secs: u32,
    /// IPv4 prefix length clients are grouped by.
    pub ipv4_prefix_len: u8,
    /// IPv6 prefix length clients are grouped by.
    pub ipv6_prefix_len: u8,
    /// Number of buckets per shard (memory bound; rounded up to a power of two).
    pub table_size: usize,
}

impl Default for RrlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            responses_per_second: 20,
            slip: 2,
            window_secs: 15,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 56,
            table_size: 65_536,
        }
    }
}

/// One `[[dns.zones]]` entry: either `file = "path"` or an inline `soa` plus `records`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone apex, e.g. `example.net.` (trailing dot optional).
    pub origin: String,
    /// RFC 1035 master file; relative `$INCLUDE`s resolve against its folder.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// TTL for inline records that do not give one.
    #[serde(default = "default_ttl")]
    pub default_ttl: u32,
    /// Inline SOA.
    #[serde(default)]
    pub soa: Option<SoaConfig>,
    /// Inline records.
    #[serde(default)]
    pub records: Vec<RecordConfig>,
}

fn default_ttl() -> u32 {
    3600
}

/// The inline SOA of a zone. Names are relative to the origin unless they end in a dot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// Primary name server.
    pub mname: String,
    /// Responsible mailbox in domain form (`hostmaster` = hostmaster@origin).
    pub rname: String,
    /// Initial serial; dynamic updates increment it (RFC 1982).
    #[serde(default = "default_serial")]
    pub serial: u32,
    /// Secondary refresh interval (s).
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    /// Secondary retry interval (s).
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// Secondary expiry (s).
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    #[serde(default = "default_minimum")]
    pub minimum: u32,
    /// TTL of the SOA record itself (default: the zone's `default_ttl`).
    #[serde(default)]
    pub ttl: Option<u32>,
}

fn default_serial() -> u32 {
    1
}
fn default_refresh() -> u32 {
    86_400
}
fn default_retry() -> u32 {
    7_200
}
fn default_expire() -> u32 {
    3_600_000
}
fn default_minimum() -> u32 {
    300
}

/// One inline record: `{ name = "www", type = "A", ttl = 300, value = "192.0.2.1" }`.
///
/// `value` is master-file RDATA text (`"10 mail"` for MX, `"0 issue \"letsencrypt.org\""` for CAA).
/// For TXT, a value that does not start with `"` is taken literally and split into 255-byte
/// strings (handy for DKIM keys); a value starting with `"` is parsed as one or more quoted
/// strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Owner, relative to the origin unless it ends in a dot; `@` is the apex.
    pub name: String,
    /// Record type mnemonic (`A`, `TXT`, ...).
    #[serde(rename = "type")]
    pub rtype: String,
    /// TTL in seconds (default: the zone's `default_ttl`).
    #[serde(default)]
    pub ttl: Option<u32>,
    /// RDATA in presentation format.
    pub value: String,
}

impl DnsConfig {
    /// Checks the whole section and returns every problem found (empty = valid).
    ///
    /// Inline zones are fully built (so bad record values are reported here); master files are
    /// only read by [`crate::zone::Catalog::load`].
    pub fn validate(&self) -> Vec<DnsError> {
        let mut problems = Vec::new();
        if !(512..=4096).contains(&self.max_udp_payload) {
            problems.push(DnsError::InvalidPayloadSize {
                value: self.max_udp_payload,
            });
        }
        if let Some(domain) = &self.doh_domain {
            if let Err(reason) = check_host_name(domain) {
                problems.push(DnsError::InvalidDohDomain {
                    value: domain.clone(),
                    reason,
                });
            }
        }
        self.rrl.validate_into(&mut problems);

        let mut seen: Vec<Name> = Vec::new();
        for zone in &self.zones {
            let origin = match parse_origin(&zone.origin) {
                Ok(origin) => origin,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if seen.contains(&origin) {
                problems.push(DnsError::DuplicateZone {
                    origin: origin.to_ascii(),
                });
            }
            seen.push(origin);
            match (&zone.file, &zone.soa) {
                (Some(_), Some(_)) => problems.push(DnsError::ZoneSourceConflict {
                    zone: zone.origin.clone(),
                }),
                (Some(_), None) if !zone.records.is_empty() => {
                    problems.push(DnsError::ZoneSourceConflict {
                        zone: zone.origin.clone(),
                    })
                }
                (None, None) => problems.push(DnsError::ZoneSourceMissing {
                    zone: zone.origin.clone(),
                }),
                (None, Some(_)) => {
                    if let Err(errors) = Zone::from_inline(zone) {
                        problems.extend(errors);
                    }
                }
                (Some(_), None) => {}
            }
        }
        problems
    }
}

impl DnsConfig {
    /// The settings of the answer path derived from this section.
    pub fn answer_config(&self) -> crate::answer::AnswerConfig {
        crate::answer::AnswerConfig {
            max_udp_payload: self.max_udp_payload.clamp(512, 4096),
        }
    }
}

impl RrlConfig {
    fn validate_into(&self, problems: &mut Vec<DnsError>) {
        if !self.enabled {
            return;
        }
        if self.responses_per_second == 0 {
            problems.push(DnsError::InvalidRrl {
                field: "responses_per_second",
                reason: "must be at least 1 (set enabled = false to turn RRL off)".into(),
            });
        }
        if self.responses_per_second > 1_000_000 {
            problems.push(DnsError::InvalidRrl {
                field: "responses_per_second",
                reason: "must be at most 1000000".into(),
            });
        }
        if self.window_secs == 0 || self.window_secs > 3600 {
            problems.push(DnsError::InvalidRrl {
                field: "window_secs",
                reason: "must be between 1 and 3600".into(),
            });
        }
        if self.ipv4_prefix_len == 0 || self.ipv4_prefix_len > 32 {
            problems.push(DnsError::InvalidRrl {
                field: "ipv4_prefix_len",
                reason: format!("{} is not between 1 and 32", self.ipv4_prefix_len),
            });
        }
        if self.ipv6_prefix_len == 0 || self.ipv6_prefix_len > 128 {
            problems.push(DnsError::InvalidRrl {
                field: "ipv6_prefix_len",
                reason: format!("{} is not between 1 and 128", self.ipv6_prefix_len),
            });
        }
        if self.table_size == 0 || self.table_size > (1 << 24) {
            problems.push(DnsError::InvalidRrl {
                field: "table_size",
                reason: format!("{} is not between 1 and 16777216", self.table_size),
            });
        }
    }
}

/// Parses a zone origin as an absolute, lower-cased name.
pub(crate) fn parse_origin(origin: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(origin).map_err(|e| DnsError::InvalidOrigin {
        origin: origin.to_string(),
        reason: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty".into());
    }
    if host.contains([':', '/', ' ']) {
        return Err("must be a bare host name (no scheme, port or path)".into());
    }
    Name::from_ascii(host)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DnsConfig {
        #[derive(Deserialize)]
        struct Root {
            dns: DnsConfig,
        }
        toml::from_str::<Root>(text)
            .map(|r| r.dns)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn inline_zone_parses_and_validates() {
        let cfg = parse(
            r#"
            [dns]
            udp = ["127.0.0.1:5300"]
            doh_domain = "dns.example.net"
            [dns.rrl]
            responses_per_second = 50
            [[dns.zones]]
            origin = "example.net."
            soa = { mname = "ns1", rname = "hostmaster", serial = 7 }
            records = [
              { name = "@", type = "NS", value = "ns1" },
              { name = "ns1", type = "A", value = "192.0.2.53" },
              { name = "www", type = "AAAA", ttl = 60, value = "2001:db8::1" },
              { name = "@", type = "MX", value = "10 mail" },
              { name = "_sip._tcp", type = "SRV", value = "10 5 5060 sip" },
              { name = "@", type = "CAA", value = "0 issue \"letsencrypt.org\"" },
              { name = "txt", type = "TXT", value = "\"one\" \"two\"" },
            ]
            "#,
        );
        assert_eq!(cfg.rrl.responses_per_second, 50);
        assert_eq!(cfg.rrl.slip, 2);
        assert_eq!(cfg.zones[0].records.len(), 7);
        let problems = cfg.validate();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Root {
            dns: DnsConfig,
        }
        let err = toml::from_str::<Root>("[dns]\nlisten = 1\n");
        assert!(err.is_err());
        let err = toml::from_str::<Root>(
            "[dns]\n[[dns.zones]]\norigin = \"a.\"\nrecords = [{name=\"x\", type=\"A\", value=\"1.2.3.4\", bogus=1}]\n",
        );
        assert!(err.is_err());
    }

    #[test]
    fn validate_reports_all_problems_with_names() {
        let cfg = parse(
            r#"
            [dns]
            max_udp_payload = 100
            doh_domain = "https://dns.example.net/"
            [dns.rrl]
            responses_per_second = 0
            ipv6_prefix_len = 200
            [[dns.zones]]
            origin = "example.net."
            soa = { mname = "ns1", rname = "hostmaster" }
            records = [
              { name = "www", type = "A", value = "not-an-ip" },
              { name = "x", type = "BOGUS", value = "1" },
              { name = "out.example.com.", type = "A", value = "192.0.2.1" },
              { name = "c", type = "CNAME", value = "www" },
              { name = "c", type = "A", value = "192.0.2.2" },
            ]
            [[dns.zones]]
            origin = "example.net"
            file = "/nonexistent"
            [[dns.zones]]
            origin = "empty.example."
            "#,
        );
        let problems = cfg.validate();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("max_udp_payload = 100"), "{text:#?}");
        assert!(has("doh_domain"), "{text:#?}");
        assert!(has("rrl.responses_per_second"), "{text:#?}");
        assert!(has("rrl.ipv6_prefix_len"), "{text:#?}");
        assert!(has("`www` A: value `not-an-ip`"), "{text:#?}");
        assert!(has("type `BOGUS`"), "{text:#?}");
        assert!(
            has("out.example.com. is outside") || has("`out.example.com.` is outside"),
            "{text:#?}"
        );
        assert!(has("has a CNAME and other records"), "{text:#?}");
        assert!(has("defined more than once"), "{text:#?}");
        assert!(has("`empty.example.`: needs either"), "{text:#?}");
        assert_eq!(problems.len(), 10, "{text:#?}");
    }
}
