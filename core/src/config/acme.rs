//! The `[acme]` and `[storage]` sections, and `certificate = "auto"` on terminating routes.
//!
//! Owns: their raw shape, their checks (problems name the section or route and the field), and
//! the typed result ([`AcmeSettings`] with one [`AutoCertificate`] per auto route,
//! [`StorageBackend`]). An auto route terminates TLS choosing the certificate from the store
//! by SNI (`TlsMode::Terminate { certificate: None }`); the names to certify are its
//! `match.domains`. Does not own issuing (see `crate::acme`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::ProblemList;
use super::{parse_duration, section, Config, RouteAction, TlsMode};
use crate::route::DomainPattern;
pub use crate::storage::StorageBackend;

/// How the CA checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A token served over plain HTTP on port 80 (`/.well-known/acme-challenge/<token>`).
    Http01,
    /// A TXT record `_acme-challenge.<name>` served by our own DNS server; the only one that
    /// can prove a wildcard.
    Dns01,
    /// A self-signed certificate served in a TLS handshake that offers ALPN `acme-tls/1`.
    TlsAlpn01,
}

impl ChallengeKind {
    /// The name as in config and RFC 8555 / RFC 8737.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `[acme]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    /// Contact URLs for the account (`mailto:` added to plain addresses).
    pub contact: Vec<String>,
    /// The CA's directory URL (https).
    pub directory: String,
    /// A PEM root trusted for the directory's own HTTPS (a private CA such as Pebble's);
    /// `None` trusts the platform's roots.
    pub ca_root: Option<PathBuf>,
    /// The challenge used for every name.
    pub challenge: ChallengeKind,
    /// Renew when a certificate expires within this long.
    pub renew_before: Duration,
    /// First wait after a failed order; doubled per failure up to [`MAX_RETRY_AFTER`].
    pub retry_after: Duration,
    /// One certificate per `certificate = "auto"` route.
    pub certificates: Vec<AutoCertificate>,
}

/// The longest wait between two attempts after failures.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// A certificate the appliance obtains itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCertificate {
    /// The route it is for (its name in stats, logs and `shardgate certs`).
    pub name: String,
    /// The names to certify (lower-case; wildcards as `*.example.com`).
    pub domains: Vec<String>,
}

/// `[acme]` as written.
#[derive(Debug, Deserialize)]
struct RawAcme {
    contact: Option<OneOrList>,
    directory: Option<String>,
    ca_root: Option<String>,
    challenge: Option<String>,
    renew_before_days: Option<i64>,
    retry_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrList {
    One(String),
    List(Vec<String>),
}

/// `[storage]` as written.
#[derive(Debug, Deserialize)]
struct RawStorage {
    backend: Option<String>,
}

/// Checks `[storage]`.
pub(super) fn validate_storage(problems: &mut ProblemList, value: &toml::Value) -> StorageBackend {
    let Some(raw) = section::<RawStorage>(problems, "storage", value) else { return StorageBackend::Files };
    match raw.backend.as_deref().map(str::trim) {
        None | Some("files") => StorageBackend::Files,
        Some("memory") => StorageBackend::Memory,
        Some(other) => {
            problems.section("storage", "backend", format!("`{other}` is not a storage backend (known: files, memory)"));
            StorageBackend::Files
        }
    }
}

/// Names of the routes whose `action.tls.certificate` is `"auto"`, read from the document
/// (route validation turns them into plain SNI terminate routes).
pub(super) fn auto_route_names(doc: &toml::Table) -> Vec<String> {
    let Some(routes) = doc.get("routes").and_then(|r| r.as_array()) else { return Vec::new() };
    routes
        .iter()
        .filter(|route| {
            route.get("action").and_then(|a| a.get("tls")).and_then(|t| t.get("certificate")).and_then(|c| c.as_str())
                == Some("auto")
        })
        .filter_map(|route| route.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

/// Checks `[acme]` (if present) against the auto routes; `None` when there is no `[acme]`.
pub(super) fn validate_acme(problems: &mut ProblemList, doc: &toml::Table, config: &Config) -> Option<AcmeSettings> {
    let auto_routes = auto_route_names(doc);
    let Some(value) = doc.get("acme") else {
        for name in &auto_routes {
            problems.route(name, "action.tls.certificate", "\"auto\" needs an [acme] section (contact, directory)");
        }
        return None;
    };
    let raw = section::<RawAcme>(problems, "acme", value)?;
    let contact: Vec<String> = match raw.contact {
        None => Vec::new(),
        Some(OneOrList::One(c)) => vec![c],
        Some(OneOrList::List(list)) => list,
    }
    .into_iter()
    .filter_map(|c| {
        let c = c.trim().to_string();
        let address = c.strip_prefix("mailto:").unwrap_or(&c);
        match address.split_once('@') {
            Some((user, host)) if !user.is_empty() && host.contains('.') && !address.contains(char::is_whitespace) => {
                Some(format!("mailto:{address}"))
            }
            _ => {
                problems.section("acme", "contact", format!("`{c}` is not an e-mail address"));
                None
            }
        }
    })
    .collect();
    let directory = match raw.directory.as_deref().map(str::trim) {
        Some(url) if url.starts_with("https://") && url.len() > "https://".len() => url.to_string(),
        Some(url) => {
            problems.section("acme", "directory", format!("`{url}` is not an https:// URL (ACME directories are served over HTTPS)"));
            String::new()
        }
        None => {
            problems.section("acme", "directory", "missing: the CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory");
            String::new()
        }
    };
    let ca_root = raw.ca_root.map(PathBuf::from);
    if let Some(path) = &ca_root {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        match CertificateDer::pem_file_iter(path) {
            Err(e) => problems.section("acme", "ca_root", format!("cannot read `{}`: {e}", path.display())),
            Ok(mut certs) => match certs.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => problems.section("acme", "ca_root", format!("`{}` is not valid PEM: {e}", path.display())),
                None => problems.section("acme", "ca_root", format!("`{}` holds no CERTIFICATE block", path.display())),
            },
        }
    }
    let challenge = match raw.challenge.as_deref().map(str::trim) {
        None | Some("http-01") => ChallengeKind::Http01,
        Some("dns-01") => ChallengeKind::Dns01,
        Some("tls-alpn-01") => ChallengeKind::TlsAlpn01,
        Some(other) => {
            problems.section("acme", "challenge", format!("`{other}` is not a challenge type (known: http-01, dns-01, tls-alpn-01)"));
            ChallengeKind::Http01
        }
    };
    let renew_before = match raw.renew_before_days {
        None => Duration::from_secs(30 * 86400),
        Some(days @ 1..=365) => Duration::from_secs(days.unsigned_abs() * 86400),
        Some(days) => {
            problems.section("acme", "renew_before_days", format!("{days} is not between 1 and 365"));
            Duration::from_secs(30 * 86400)
        }
    };
    let retry_after = match raw.retry_after.as_deref().map(parse_duration) {
        None => Duration::from_secs(60),
        Some(Ok(d)) if !d.is_zero() && d <= MAX_RETRY_AFTER => d,
        Some(Ok(_)) => {
            problems.section("acme", "retry_after", "must be longer than zero and at most 6h");
            Duration::from_secs(60)
        }
        Some(Err(e)) => {
            problems.section("acme", "retry_after", e);
            Duration::from_secs(60)
        }
    };
    let zones: Vec<String> = config
        .dns
        .as_ref()
        .map(|dns| dns.zones.iter().map(|z| z.origin.trim_end_matches('.').to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let mut certificates = Vec::new();
    for name in &auto_routes {
        // A route that failed its own checks was reported already.
        let Some(route) = config.routes.iter().find(|r| &r.name == name) else { continue };
        if !matches!(&route.action, RouteAction::Forward(f) if matches!(f.tls, TlsMode::Terminate { .. })) {
            continue;
        }
        let Some(patterns) = &route.matcher.domains else {
            problems.route(name, "match.domains", "certificate = \"auto\" needs the names to certify: list them in match.domains");
            continue;
        };
        let mut domains = Vec::new();
        for pattern in patterns {
            let domain = match pattern {
                DomainPattern::Any => {
                    problems.route(name, "match.domains", "`*` cannot be certified: list the names (or `*.example.com` wildcards)");
                    continue;
                }
                DomainPattern::Exact(n) => n.clone(),
                DomainPattern::Subdomains(suffix) => {
                    if challenge != ChallengeKind::Dns01 {
                        problems.route(
                            name,
                            "match.domains",
                            format!("`*.{suffix}` is a wildcard: ACME certifies wildcards only over dns-01 ([acme] challenge = \"dns-01\")"),
                        );
                    }
                    format!("*.{suffix}")
                }
            };
            if challenge == ChallengeKind::Dns01 {
                let base = domain.trim_start_matches("*.");
                let inside = zones.iter().any(|z| base == z || base.ends_with(&format!(".{z}")));
                if !inside {
                    problems.route(
                        name,
                        "match.domains",
                        format!("`{domain}` is in none of our [[dns.zones]]: dns-01 answers `_acme-challenge.{base}` from our own DNS server"),
                    );
                }
            }
            domains.push(domain);
        }
        certificates.push(AutoCertificate { name: name.clone(), domains });
    }
    // HTTP-01 is answered by the HTTP proxy on plain-HTTP listeners (before any route): without
    // one, every order would fail at validation time.
    let plain_http = config.routes.iter().any(|r| r.is_http() && *r.tls() == TlsMode::None);
    if challenge == ChallengeKind::Http01 && !certificates.is_empty() && !plain_http {
        problems.section(
            "acme",
            "challenge",
            "http-01 (the default) is answered on a plain-HTTP route and there is none: add one on port 80 \
             (protocol = \"http\", or a redirect to https), or use challenge = \"dns-01\" or \"tls-alpn-01\"",
        );
    }
    Some(AcmeSettings { contact, directory, ca_root, challenge, renew_before, retry_after, certificates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<Config, Vec<String>> {
        Config::parse(toml, "edge.toml").map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    const ROUTE: &str = r#"
        [[routes]]
        name = "site"
        match = { ports = 8443, domains = ["www.example.net", "*.example.net"] }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
        [dns]
        udp = ["127.0.0.1:5300"]
        [[dns.zones]]
        origin = "example.net."
        soa = { mname = "ns1", rname = "hostmaster", serial = 1 }
        records = [{ name = "@", type = "NS", value = "ns1" }, { name = "ns1", type = "A", value = "127.0.0.1" }]
    "#;

    #[test]
    fn auto_route_with_dns01_is_typed() {
        let config = check(&format!(
            "{ROUTE}\n[acme]\ncontact = \"ops@example.net\"\ndirectory = \"https://127.0.0.1:14000/dir\"\nchallenge = \"dns-01\"\nrenew_before_days = 20\nretry_after = \"5s\"\n"
        ))
        .expect("valid");
        let acme = config.acme.expect("[acme]");
        assert_eq!(acme.contact, vec!["mailto:ops@example.net".to_string()]);
        assert_eq!(acme.challenge, ChallengeKind::Dns01);
        assert_eq!(acme.renew_before, Duration::from_secs(20 * 86400));
        assert_eq!(acme.retry_after, Duration::from_secs(5));
        assert_eq!(
            acme.certificates,
            vec![AutoCertificate { name: "site".into(), domains: vec!["www.example.net".into(), "*.example.net".into()] }]
        );
        let route = &config.routes[0];
        assert!(matches!(&route.action, RouteAction::Forward(f) if f.tls == TlsMode::Terminate { certificate: None }));
    }

    #[test]
    fn every_acme_problem_names_its_section_or_route_and_field() {
        let found = check(&format!(
            "{ROUTE}\n[acme]\ncontact = \"nobody\"\ndirectory = \"http://ca.test/dir\"\nca_root = \"/nonexistent/root.pem\"\nchallenge = \"tls-alpn-01\"\nrenew_before_days = 0\nretry_after = \"soon\"\ncolour = 1\n"
        ))
        .expect_err("invalid");
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("[acme] colour: unknown field"), "{found:#?}");
        assert!(has("[acme] contact: `nobody` is not an e-mail address"), "{found:#?}");
        assert!(has("[acme] directory: `http://ca.test/dir` is not an https:// URL"), "{found:#?}");
        assert!(has("[acme] ca_root: cannot read `/nonexistent/root.pem`"), "{found:#?}");
        assert!(has("[acme] renew_before_days: 0 is not between 1 and 365"), "{found:#?}");
        assert!(has("[acme] retry_after: `soon` is not a duration"), "{found:#?}");
        assert!(has("route `site`: match.domains: `*.example.net` is a wildcard: ACME certifies wildcards only over dns-01"), "{found:#?}");
    }

    #[test]
    fn http01_needs_a_plain_http_route() {
        let acme = "\n[acme]\ndirectory = \"https://ca.test/dir\"\n";
        let site = r#"
            [[routes]]
            name = "site"
            match = { ports = 8443, domains = ["www.example.net"] }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
        "#;
        let found = check(&format!("{site}{acme}")).expect_err("no plain HTTP route");
        assert!(found.iter().any(|p| p.contains("[acme] challenge: http-01 (the default) is answered on a plain-HTTP route")), "{found:#?}");
        let redirect = r#"
            [[routes]]
            name = "to-https"
            match = { ports = 8080 }
            action = { type = "redirect", to = "https://{host}{path}" }
        "#;
        check(&format!("{site}{redirect}{acme}")).expect("a redirect route answers http-01");
    }

    #[test]
    fn dns01_names_must_be_in_our_zones_and_auto_needs_domains() {
        let found = check(
            r#"
            [[routes]]
            name = "elsewhere"
            match = { ports = 8443, domains = ["www.other.org"] }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
            [[routes]]
            name = "nameless"
            match = { ports = 8444 }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }], tls = { mode = "terminate", certificate = "auto" } }
            [acme]
            directory = "https://ca.test/dir"
            challenge = "dns-01"
            [storage]
            backend = "tape"
            "#,
        )
        .expect_err("invalid");
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(has("route `elsewhere`: match.domains: `www.other.org` is in none of our [[dns.zones]]"), "{found:#?}");
        assert!(has("route `nameless`: match.domains: certificate = \"auto\" needs the names to certify"), "{found:#?}");
        assert!(has("[storage] backend: `tape` is not a storage backend"), "{found:#?}");
        assert!(!has("terminate needs a certificate"), "{found:#?}");
    }
}
