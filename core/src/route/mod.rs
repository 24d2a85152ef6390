//! The route table: which route a new connection takes.
//!
//! Built once per config snapshot (on the control core) and copied into each shard. Lookup is
//! by local port first (a precomputed, priority-ordered candidate list per port), then client
//! address, then — only when a candidate needs it — the TLS server name (SNI). The SNI is
//! read from the ClientHello lazily: a connection to a port whose first matching candidate has
//! no `domains` is routed without waiting for any client bytes (so server-speaks-first
//! protocols work through a plain TCP route).
//!
//! HTTP routes are chosen twice. At accept time ([`RouteTable::select`]) a plain HTTP route
//! stands for "this port speaks HTTP" — its `domains` name Host values, not SNI, so they are
//! not looked at — and a TLS-terminating one is chosen by SNI like any TLS route, which
//! fixes the certificate. Then every request is routed on its own
//! ([`RouteTable::select_request`]) among the port's HTTP routes on the same side (plain or
//! terminated) by client address, Host and path.

mod domain;

use std::collections::HashMap;
use std::net::IpAddr;

pub use domain::{validate_hostname, DomainPattern};

use crate::config::{canonical_ip, Config, Route, TlsMode};

/// Index of a route in [`RouteTable::routes`]; stable for the life of one snapshot.
pub type RouteId = usize;

/// What the table knows about the connection's server name so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerName<'a> {
    /// No client bytes have been read yet.
    NotRead,
    /// The ClientHello was read (or the bytes were not TLS); this is its SNI, if any.
    Read(Option<&'a str>),
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// This route applies.
    Route(RouteId),
    /// The answer depends on the SNI: read the ClientHello and ask again.
    NeedServerName,
    /// No route matches this connection.
    NoRoute,
}

/// Routes of one config snapshot, indexed for lookup.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_port: HashMap<u16, Vec<RouteId>>,
}

impl RouteTable {
    /// Indexes the (already priority-ordered) routes of `config`.
    pub fn new(config: &Config) -> RouteTable {
        let routes = config.routes.clone();
        let mut by_port: HashMap<u16, Vec<RouteId>> = HashMap::new();
        for (id, route) in routes.iter().enumerate() {
            for port in route.matcher.ports.iter() {
                by_port.entry(port).or_default().push(id);
            }
        }
        RouteTable { routes, by_port }
    }

    /// A table with no routes (what a shard holds before its first snapshot).
    pub fn empty() -> RouteTable {
        RouteTable { routes: Vec::new(), by_port: HashMap::new() }
    }

    /// All routes, in priority order; a [`RouteId`] indexes this slice.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route with this id.
    pub fn route(&self, id: RouteId) -> Option<&Route> {
        self.routes.get(id)
    }

    /// Every port with at least one route.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.by_port.keys().copied()
    }

    /// Chooses the route for a connection to `local_port` from `client`.
    pub fn select(&self, local_port: u16, client: IpAddr, server_name: ServerName<'_>) -> Selection {
        let client = canonical_ip(client);
        let Some(candidates) = self.by_port.get(&local_port) else {
            return Selection::NoRoute;
        };
        for &id in candidates {
            let m = &self.routes[id].matcher;
            if let Some(nets) = &m.client_ip {
                if !nets.iter().any(|n| n.contains(&client)) {
                    continue;
                }
            }
            let route = &self.routes[id];
            let host_routed = route.is_http() && *route.tls() == TlsMode::None;
            if let Some(domains) = m.domains.as_ref().filter(|_| !host_routed) {
                match server_name {
                    ServerName::NotRead => return Selection::NeedServerName,
                    ServerName::Read(None) => continue,
                    ServerName::Read(Some(name)) => {
                        if !domains.iter().any(|d| d.matches(name)) {
                            continue;
                        }
                    }
                }
            }
            return Selection::Route(id);
        }
        Selection::NoRoute
    }

    /// Chooses the HTTP route for one request on `local_port`: the first (by priority, then
    /// longest path) HTTP route on the same side (`terminated` TLS or plain) whose client
    /// networks, domains (against the request's host name) and paths match.
    pub fn select_request(&self, local_port: u16, client: IpAddr, terminated: bool, host: Option<&str>, path: &[u8]) -> Option<RouteId> {
        let client = canonical_ip(client);
        let candidates = self.by_port.get(&local_port)?;
        candidates.iter().copied().find(|&id| {
            let route = &self.routes[id];
            if !route.is_http() || matches!(route.tls(), TlsMode::Terminate { .. }) != terminated {
                return false;
            }
            let m = &route.matcher;
            if let Some(nets) = &m.client_ip {
                if !nets.iter().any(|n| n.contains(&client)) {
                    return false;
                }
            }
            if let Some(domains) = &m.domains {
                match host {
                    Some(name) if domains.iter().any(|d| d.matches(name)) => {}
                    _ => return false,
                }
            }
            if let Some(paths) = &m.paths {
                if !paths.iter().any(|p| p.matches(path)) {
                    return false;
                }
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> RouteTable {
        let config = Config::parse(toml, "test.toml").expect("valid config");
        RouteTable::new(&config)
    }

    const ROUTES: &str = r#"
        [[routes]]
        name = "fallback"
        match = { ports = "9000-9001" }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 1 }] }

        [[routes]]
        name = "api"
        priority = 10
        match = { ports = 9000, domains = ["api.example.com"] }
        action = { type = "forward", targets = [{ host = "127.0.0.1", port = 2 }], tls = { mode = "passthrough" } }

        [[routes]]
        name = "office"
        priority = 5
        match = { ports = 9001, client_ip = ["10.0.0.0/8"] }
        action = { type = "reject" }
    "#;

    fn name(t: &RouteTable, s: Selection) -> &str {
        match s {
            Selection::Route(id) => &t.routes()[id].name,
            Selection::NeedServerName => "<need sni>",
            Selection::NoRoute => "<none>",
        }
    }

    #[test]
    fn priority_then_domains_then_fallback() {
        let t = table(ROUTES);
        let c: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(t.select(9000, c, ServerName::NotRead), Selection::NeedServerName);
        assert_eq!(name(&t, t.select(9000, c, ServerName::Read(Some("api.example.com")))), "api");
        assert_eq!(name(&t, t.select(9000, c, ServerName::Read(Some("www.example.com")))), "fallback");
        assert_eq!(name(&t, t.select(9000, c, ServerName::Read(None))), "fallback");
        assert_eq!(t.select(9002, c, ServerName::NotRead), Selection::NoRoute);
    }

    #[test]
    fn http_requests_route_by_host_and_longest_path() {
        let t = table(
            r#"
            [[routes]]
            name = "site"
            match = { ports = 8000, domains = ["www.example.com"] }
            action = { type = "forward", protocol = "http", targets = [{ host = "127.0.0.1", port = 1 }] }

            [[routes]]
            name = "api"
            match = { ports = 8000, domains = ["www.example.com"], path = "/api" }
            action = { type = "forward", targets = [{ host = "127.0.0.1", port = 2 }] }

            [[routes]]
            name = "other-hosts"
            priority = -1
            match = { ports = 8000 }
            action = { type = "redirect", to = "https://{host}{path}" }
            "#,
        );
        let c: IpAddr = "192.0.2.1".parse().expect("ip");
        // Plain HTTP ports never wait for a ClientHello, whatever the domains say.
        assert_eq!(name(&t, t.select(8000, c, ServerName::NotRead)), "api");
        let pick = |host, path: &str| t.select_request(8000, c, false, host, path.as_bytes()).map(|id| t.routes()[id].name.clone());
        assert_eq!(pick(Some("www.example.com"), "/api/v1").as_deref(), Some("api"));
        assert_eq!(pick(Some("www.example.com"), "/apiary").as_deref(), Some("site"));
        assert_eq!(pick(Some("www.example.com"), "/").as_deref(), Some("site"));
        assert_eq!(pick(Some("else.example.com"), "/api").as_deref(), Some("other-hosts"));
        assert_eq!(pick(None, "/").as_deref(), Some("other-hosts"));
        assert_eq!(t.select_request(8000, c, true, Some("www.example.com"), b"/"), None);
    }

    #[test]
    fn client_networks_and_mapped_v4() {
        let t = table(ROUTES);
        let office: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(name(&t, t.select(9001, office, ServerName::NotRead)), "office");
        let outside: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(name(&t, t.select(9001, outside, ServerName::NotRead)), "fallback");
    }
}
