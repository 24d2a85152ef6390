//! Checking the `[dns]` section: the `shardgate-dns` crate's own validation, the zones loaded
//! (master files read, so `check-config` reports a bad zone file with its zone, file and
//! record), and the listen addresses checked against the other services'.
//!
//! Owns: turning [`shardgate_dns::DnsError`]s into `[dns]` problems, and the cross-section
//! address rules. Does not own: the section's shape or zone rules (`shardgate_dns::config`,
//! `shardgate_dns::zone`).

use std::net::SocketAddr;
use std::sync::Arc;

use shardgate_dns::config::DnsConfig;
use shardgate_dns::Catalog;

use super::problems::ProblemList;
use super::Config;

/// Reports every `[dns]` problem and returns the loaded zones when there is none.
pub(super) fn validate_dns(problems: &mut ProblemList, dns: &DnsConfig) -> Option<Arc<Catalog>> {
    let before = problems.len();
    for problem in dns.validate() {
        problems.section("dns", "", problem.to_string());
    }
    // `validate` builds inline zones but reads no file: load the file zones now, so their
    // problems are reported together with the rest (inline zones are not reported twice).
    let files_only = DnsConfig {
        zones: dns.zones.iter().filter(|z| z.file.is_some() && z.soa.is_none() && z.records.is_empty()).cloned().collect(),
        ..dns.clone()
    };
    if let Err(errors) = Catalog::load(&files_only) {
        for problem in errors {
            problems.section("dns", "zones", problem.to_string());
        }
    }
    let mut seen: Vec<(&str, SocketAddr)> = Vec::new();
    for (field, addrs) in [("udp", &dns.udp), ("tcp", &dns.tcp)] {
        for addr in addrs {
            if seen.contains(&(field, *addr)) {
                problems.section("dns", field, format!("{addr} is listed twice"));
            }
            if addr.port() == 0 {
                problems.section("dns", field, format!("{addr}: port 0 is not a listening port"));
            }
            seen.push((field, *addr));
        }
    }
    if problems.len() != before {
        return None;
    }
    match Catalog::load(dns) {
        Ok(catalog) => Some(Arc::new(catalog)),
        Err(errors) => {
            for problem in errors {
                problems.section("dns", "zones", problem.to_string());
            }
            None
        }
    }
}

/// DNS addresses must not collide with another service's: a DNS TCP address with a route port
/// on a `[proxy] listen` address, a DNS UDP address with a RADIUS port.
pub(super) fn check_dns_addresses(problems: &mut ProblemList, config: &Config) {
    let Some(dns) = &config.dns else { return };
    let route_ports = config.route_ports();
    for addr in &dns.tcp {
        let clash = config
            .proxy
            .listen
            .iter()
            .any(|ip| route_ports.contains(&addr.port()) && (ip == &addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified()));
        if clash {
            problems.section("dns", "tcp", format!("{addr}: port {} is also a route port", addr.port()));
        }
    }
    if let Some(radius) = &config.radius {
        for addr in &dns.udp {
            let clash = radius.listen.iter().any(|ip| {
                (addr.port() == radius.auth_port || addr.port() == radius.acct_port)
                    && (ip == &addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified())
            });
            if clash {
                problems.section("dns", "udp", format!("{addr}: port {} is also a RADIUS port", addr.port()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn problems_of(text: &str) -> Vec<String> {
        match Config::parse(text, "edge.toml") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_valid_dns_section_is_loaded_with_its_zones() {
        let config = Config::parse(
            "[dns]\nudp = [\"127.0.0.1:5399\"]\ntcp = [\"127.0.0.1:5399\"]\n\
             [[dns.zones]]\norigin = \"example.net.\"\nsoa = { mname = \"ns1\", rname = \"hostmaster\" }\n\
             records = [{ name = \"@\", type = \"NS\", value = \"ns1\" }, { name = \"ns1\", type = \"A\", value = \"192.0.2.53\" }]\n",
            "edge.toml",
        )
        .expect("valid");
        let catalog = config.dns_catalog.expect("zones loaded");
        assert_eq!(catalog.zones().count(), 1);
        assert!(Config::parse("", "edge.toml").expect("valid").dns.is_none());
    }

    #[test]
    fn every_dns_problem_is_reported_under_dns_with_file_zone_and_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zone_file = dir.path().join("bad.zone");
        std::fs::write(
            &zone_file,
            "$ORIGIN bad.example.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\nc IN CNAME ns1\nc IN A 192.0.2.2\n",
        )
        .expect("zone file");
        let text = format!(
            "[[routes]]\nname = \"web\"\n[routes.match]\nports = 8053\n[routes.action]\ntype = \"reject\"\n\
             [dns]\nudp = [\"127.0.0.1:5300\", \"127.0.0.1:5300\"]\ntcp = [\"0.0.0.0:8053\"]\nmax_udp_payload = 100\n\
             [[dns.zones]]\norigin = \"example.net.\"\nsoa = {{ mname = \"ns1\", rname = \"hostmaster\" }}\n\
             records = [{{ name = \"www\", type = \"A\", value = \"nope\" }}]\n\
             [[dns.zones]]\norigin = \"bad.example.\"\nfile = \"{}\"\n\
             [[dns.zones]]\norigin = \"missing.example.\"\nfile = \"/nonexistent/missing.zone\"\n",
            zone_file.display()
        );
        let found = problems_of(&text);
        let has = |needle: &str| found.iter().any(|p| p.contains("[dns]") && p.contains(needle));
        assert!(has("max_udp_payload = 100"), "{found:#?}");
        assert!(has("`www` A: value `nope`"), "{found:#?}");
        assert!(has("zone `bad.example.`: `c.bad.example.` has a CNAME"), "{found:#?}");
        assert!(has("/nonexistent/missing.zone"), "{found:#?}");
        assert!(has("127.0.0.1:5300 is listed twice"), "{found:#?}");
        assert!(has("port 8053 is also a route port"), "{found:#?}");
    }
}
