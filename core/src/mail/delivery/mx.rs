//! Where mail for a domain goes (`process` routes): MX lookup with RFC 5321 §5.1 rules.
//!
//! Owns: the resolver (hickory, the system's `/etc/resolv.conf` or the `[email.delivery]
//! resolver = "ip:port"` override, e.g. shardgate's own DNS server in tests), the MX list in
//! preference order (equal preferences shuffled, so load spreads), the implicit MX (no MX
//! records: the domain's own A/AAAA), the null MX (RFC 7505: "this domain takes no mail", a
//! permanent failure), address literals (`user@[192.0.2.1]`), and which failures are
//! permanent (the domain does not exist) or transient (DNS timeouts, SERVFAIL).
//! Does not own: connecting (see `super::next_hop`).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// The SMTP port MX hosts are reached on.
pub const SMTP_PORT: u16 = 25;

/// Why no next hop could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain does not exist (NXDOMAIN): permanent.
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): permanent.
    #[error("domain {0} accepts no mail (null MX)")]
    NullMx(String),
    /// The domain has neither MX nor address records: permanent.
    #[error("domain {0} has no MX and no address records")]
    NoAddress(String),
    /// The lookup failed (timeout, SERVFAIL, no resolver): transient.
    #[error("DNS lookup for {name} failed: {why}")]
    Lookup {
        /// What was looked up.
        name: String,
        /// Why it failed.
        why: String,
    },
}

impl MxError {
    /// Whether retrying later cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, MxError::Lookup { .. })
    }

    /// The RFC 3463 status for a bounce or a deferral.
    pub fn status(&self) -> &'static str {
        match self {
            MxError::NoSuchDomain(_) => "5.1.2",
            MxError::NullMx(_) => "5.1.10",
            MxError::NoAddress(_) => "5.4.4",
            MxError::Lookup { .. } => "4.4.3",
        }
    }
}

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Its name (for logs, SNI, the DSN's Remote-MTA).
    pub name: String,
    /// MX preference (lower first); 0 for the implicit MX and literals.
    pub preference: u16,
}

/// The MX resolver of the delivery engine.
#[derive(Clone)]
pub struct MxResolver {
    resolver: TokioResolver,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MxResolver")
    }
}

impl MxResolver {
    /// A resolver asking `server` (UDP, then TCP for truncated answers), or the system's
    /// resolvers when `None`. Must be called inside the tokio runtime.
    pub fn new(server: Option<SocketAddr>) -> Result<MxResolver, MxError> {
        let failed = |why: String| MxError::Lookup { name: "resolver".into(), why };
        let builder = match server {
            Some(addr) => {
                let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut name_server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| failed(e.to_string()))?,
        };
        let mut builder = builder;
        let options = builder.options_mut();
        options.timeout = std::time::Duration::from_secs(5);
        options.attempts = 2;
        // Names are always absolute: no search list.
        options.ndots = 0;
        let resolver = builder.build().map_err(|e| failed(e.to_string()))?;
        Ok(MxResolver { resolver })
    }

    /// The hosts to try for `domain`, best first.
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, MxError> {
        let domain = domain.trim().trim_end_matches('.').to_lowercase();
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let ip = literal.strip_prefix("ipv6:").unwrap_or(literal);
            return match ip.parse::<IpAddr>() {
                Ok(_) => Ok(vec![MxHost { name: ip.to_string(), preference: 0 }]),
                Err(_) => Err(MxError::NoAddress(domain.clone())),
            };
        }
        let fqdn = format!("{domain}.");
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut hosts: Vec<MxHost> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some(MxHost { name: mx.exchange.to_ascii().trim_end_matches('.').to_lowercase(), preference: mx.preference }),
                        _ => None,
                    })
                    .collect();
                if hosts.len() == 1 && hosts[0].name.is_empty() {
                    return Err(MxError::NullMx(domain));
                }
                hosts.retain(|h| !h.name.is_empty());
                if hosts.is_empty() {
                    return Ok(vec![MxHost { name: domain, preference: 0 }]);
                }
                shuffle_equal_preferences(&mut hosts);
                Ok(hosts)
            }
            Err(e) if e.is_nx_domain() => Err(MxError::NoSuchDomain(domain)),
            // No MX records: the domain itself is the implicit MX (RFC 5321 §5.1).
            Err(e) if e.is_no_records_found() => Ok(vec![MxHost { name: domain, preference: 0 }]),
            Err(e) => Err(MxError::Lookup { name: fqdn, why: e.to_string() }),
        }
    }

    /// The addresses of one MX host (IPv4 first, then IPv6), or why there are none.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, MxError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort_by_key(|ip| ip.is_ipv6());
                if ips.is_empty() {
                    Err(MxError::NoAddress(host.to_string()))
                } else {
                    Ok(ips)
                }
            }
            Err(e) if e.is_nx_domain() => Err(MxError::NoSuchDomain(host.to_string())),
            Err(e) if e.is_no_records_found() => Err(MxError::NoAddress(host.to_string())),
            Err(e) => Err(MxError::Lookup { name: fqdn, why: e.to_string() }),
        }
    }
}

impl MxResolver {
    /// The A records of `fqdn` (`Ok(empty)` when the name or its A records do not exist),
    /// for DNS blocklist lookups (`crate::mail::dnsbl`).
    pub async fn ipv4(&self, fqdn: &str) -> Result<Vec<std::net::Ipv4Addr>, MxError> {
        match self.resolver.ipv4_lookup(fqdn).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(MxError::Lookup { name: fqdn.to_string(), why: e.to_string() }),
        }
    }
}

/// Hosts with the same preference are tried in random order (RFC 5321 §5.1).
fn shuffle_equal_preferences(hosts: &mut [MxHost]) {
    hosts.sort_by_key(|h| h.preference);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0) as usize;
    let mut start = 0;
    while start < hosts.len() {
        let end = hosts[start..].iter().position(|h| h.preference != hosts[start].preference).map_or(hosts.len(), |p| start + p);
        if end - start > 1 {
            hosts[start..end].rotate_left(seed % (end - start));
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_preferences_stay_grouped_in_order() {
        let mut hosts = vec![
            MxHost { name: "c".into(), preference: 20 },
            MxHost { name: "a".into(), preference: 10 },
            MxHost { name: "b".into(), preference: 10 },
        ];
        shuffle_equal_preferences(&mut hosts);
        assert_eq!(hosts[2].name, "c");
        assert!(hosts[..2].iter().all(|h| h.preference == 10));
    }

    #[test]
    fn permanence_of_failures() {
        assert!(MxError::NoSuchDomain("x".into()).is_permanent());
        assert!(MxError::NullMx("x".into()).is_permanent());
        assert!(!MxError::Lookup { name: "x".into(), why: "timeout".into() }.is_permanent());
    }

    #[test]
    fn address_literals_need_no_dns() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let resolver = MxResolver::new(Some("127.0.0.1:9".parse().expect("addr"))).expect("resolver");
            assert_eq!(resolver.mx_hosts("[192.0.2.1]").await, Ok(vec![MxHost { name: "192.0.2.1".into(), preference: 0 }]));
            assert_eq!(resolver.mx_hosts("[IPv6:2001:db8::1]").await.map(|h| h[0].name.clone()), Ok("2001:db8::1".into()));
            assert_eq!(resolver.addresses("192.0.2.7").await, Ok(vec!["192.0.2.7".parse().expect("ip")]));
        });
    }
}
