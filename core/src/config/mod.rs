//! The appliance config: loading a TOML file, checking all of it, and the typed result.
//!
//! Owns: the config schema ([`schema`], as written), validation into [`Config`] (every value
//! typed and checked, so nothing downstream re-checks raw text), the embedded default config,
//! and problem reporting ([`ConfigErrors`]: file, route or section, field, what is wrong — all
//! problems at once). Does not own: what the runtime does with a config (see `runtime`) or how
//! routes are looked up per connection (see `route`).

mod acme;
mod admin;
mod dns;
mod email;
mod email_domains;
mod mail_protection;
mod mail_templates;
mod http;
mod ports;
mod problems;
mod schema;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

pub use http::{HttpSettings, PathPrefix, Protocol, Redirect, RouteLimits, Serve};
pub use admin::{AdminSettings, AdminTls, AdminUser, DEFAULT_ADMIN_LISTEN, DEFAULT_TOKEN_TTL};
pub use acme::{AcmeSettings, AutoCertificate, ChallengeKind, StorageBackend, MAX_RETRY_AFTER};
pub use email::{
    AddressGlob, DeliverySettings, EmailAction, EmailMatch, EmailRoute, EmailSettings, ForwardAuth, HeaderRule, HeaderValueRule,
    MailForward, QueueClass, SizeRange, StartTlsPolicy, TextPattern, DEFAULT_CONNECTIONS_PER_IP, DeliveryLimits, WarmupSchedule,
};
pub use mail_templates::{placeholders, MailTemplate};
pub use email_domains::{
    AuthMatch, DkimAlgorithm, DkimPolicy, DnsMode, InboundAuthSettings, MailAuthSettings, MailDomain, PublishRecords, QuarantineAction,
};
pub use mail_protection::{
    BadPattern, DnsblAction, DnsblSettings, PatternTarget, ScanAction, ScanPolicy, SpamPolicy, SpamScore, BUILTIN_SPAM_RULES,
    DEFAULT_BLOCKED_EXTENSIONS, DEFAULT_BLOCKED_MIME_TYPES,
};
pub use ports::PortSet;
pub use problems::{ConfigErrors, ConfigProblem, ProblemScope};
use problems::ProblemList;
use schema::{CpuChoice, OneOrMany, RawAction, RawHttp, RawMatch, RawProxy, RawRoute, RawRuntime, RawSecurity, TargetPortValue};

use crate::route::DomainPattern;
use crate::runtime::cpu::{allowed_cpus, CpuLayout};

/// The config used by `shardgate run` when no `--config` is given: unprivileged ports,
/// a demo route, data in `./shardgate-data`.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The name problems in the embedded default are reported under.
pub const EMBEDDED_DEFAULT_NAME: &str = "<embedded default>";

/// Most listening ports all routes together may ask for (each is one socket per shard).
pub const MAX_LISTEN_PORTS: usize = 4096;

/// A checked config: everything typed, every reference resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (a path, or [`EMBEDDED_DEFAULT_NAME`]).
    pub source: String,
    /// Shard and control-core placement, data folder, drain deadline.
    pub runtime: RuntimeSettings,
    /// Where route ports are listened on.
    pub proxy: ProxySettings,
    /// The routes, ordered by priority (highest first), then by path specificity (longest
    /// `match.path` first), then by position in the file.
    pub routes: Vec<Route>,
    /// `[http]`: timeouts and limits of HTTP routes.
    pub http: HttpSettings,
    /// `[tuning]`: host tuning at start-up and reuseport CPU steering.
    pub tuning: shardgate_tuning::TuningConfig,
    /// `[[certificates]]`, loaded and checked (chain, key, names, expiry).
    pub certificates: std::sync::Arc<crate::tls::store::CertificateStore>,
    /// `[radius]`: the RADIUS server (MAC authentication bypass, VLANs, accounting), if enabled.
    pub radius: Option<shardgate_radius::config::RadiusConfig>,
    /// `[dns]`: the authoritative DNS server (listen addresses, zones, RRL), if enabled.
    pub dns: Option<shardgate_dns::DnsConfig>,
    /// The zones of `[dns]` as loaded by validation (master files read once, here), the base
    /// the control core applies dynamic records onto. `Some` exactly when `dns` is.
    pub dns_catalog: Option<std::sync::Arc<shardgate_dns::Catalog>>,
    /// `[acme]`: automatic certificates for `certificate = "auto"` routes, if configured.
    pub acme: Option<AcmeSettings>,
    /// `[storage]`: where the appliance keeps its state (files by default).
    pub storage: StorageBackend,
    /// `[admin]`: the admin API (HTTP/HTTPS listener, users, metrics), if configured.
    pub admin: Option<AdminSettings>,
    /// `[email]`: the SMTP gateway (server, email routes, delivery settings), if enabled.
    pub email: Option<EmailSettings>,
    /// `[[email.templates]]`: messages `shardgate send --template` composes.
    pub mail_templates: Vec<MailTemplate>,
    /// `[[email.domains]]` (DKIM keys, DNS records) and `[email.auth]` (inbound checks).
    pub mail_auth: MailAuthSettings,
}

/// `[runtime]`: where shards and the control core run, where data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Which CPUs run shards and which runs the control core.
    pub layout: CpuLayout,
    /// The data folder (queue, certificates, sessions, state).
    pub data_dir: PathBuf,
    /// How long a graceful stop waits for open connections before closing them.
    pub drain_timeout: Duration,
    /// How long an idle shard polls for new work before it sleeps in the kernel (Seastar
    /// polls always; zero sleeps at once). Polling briefly saves the wake-up latency of every
    /// request/response turn on a busy shard. The window is an upper bound: the patched
    /// executor halves it after a sleep that outlasted it and restores it after a short one
    /// (`vendor/README.md`).
    pub spin_before_park: Duration,
}

/// The default of `[runtime] spin_before_park`.
pub const DEFAULT_SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

/// `[proxy]`: the addresses route ports are listened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Listen addresses; every route port is opened on each.
    pub listen: Vec<IpAddr>,
}

/// One route: when it applies and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The route's unique name (used in logs, stats and errors).
    pub name: String,
    /// Higher is tried first; equal priorities keep file order.
    pub priority: i64,
    /// What a connection must look like for this route to apply.
    pub matcher: RouteMatch,
    /// What is done with a matching connection.
    pub action: RouteAction,
    /// Client address rules checked after the route is chosen.
    pub security: Security,
    /// Per-client request and connection limits (HTTP routes).
    pub limits: RouteLimits,
}

impl Route {
    /// Whether connections of this route are parsed as HTTP/1.1 (requests routed by Host and
    /// path) rather than relayed as bytes.
    pub fn is_http(&self) -> bool {
        match &self.action {
            RouteAction::Forward(f) => f.protocol == Protocol::Http,
            RouteAction::Redirect(_) | RouteAction::Serve(_) => true,
            RouteAction::Reject => self.matcher.paths.is_some(),
        }
    }

    /// What the route does with TLS.
    pub fn tls(&self) -> &TlsMode {
        match &self.action {
            RouteAction::Forward(f) => &f.tls,
            RouteAction::Redirect(r) => &r.tls,
            RouteAction::Serve(s) => &s.tls,
            RouteAction::Reject => &TlsMode::None,
        }
    }

    /// Length of the longest `match.path` prefix (0 without one): the tie-breaker between
    /// routes of equal priority.
    pub fn path_specificity(&self) -> usize {
        self.matcher.paths.as_ref().and_then(|p| p.iter().map(PathPrefix::specificity).max()).unwrap_or(0)
    }
}

/// The `match` of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// Ports the route listens on (required).
    pub ports: PortSet,
    /// Server names (TLS SNI); `None` matches any connection, with or without SNI.
    pub domains: Option<Vec<DomainPattern>>,
    /// Client networks; `None` matches every client.
    pub client_ip: Option<Vec<IpNet>>,
    /// Request path prefixes (HTTP routes); `None` matches every path.
    pub paths: Option<Vec<PathPrefix>>,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Relay the connection to one of the targets.
    Forward(Forward),
    /// Close the connection at once (HTTP routes: answer 403).
    Reject,
    /// HTTP: answer every request with a redirect.
    Redirect(Redirect),
    /// HTTP: serve static files from a folder.
    Serve(Serve),
}

/// The `forward` action.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Backends, tried in balancing order with failover.
    pub targets: Vec<Target>,
    /// How a target is chosen for a new connection.
    pub balance: Balance,
    /// How long a connect to a target may take before trying the next.
    pub connect_timeout: Duration,
    /// A relayed connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Most concurrent connections on this route (across all shards), if limited.
    pub max_connections: Option<u32>,
    /// Send a PROXY protocol header to the target first.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// What is done with TLS on this route.
    pub tls: TlsMode,
    /// Relay bytes (`tcp`) or proxy HTTP requests (`http`).
    pub protocol: Protocol,
}

/// A forward target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host as written (name or address), for logs.
    pub host: String,
    /// The addresses the host resolved to when the config was loaded.
    pub addresses: Vec<IpAddr>,
    /// The port to connect to.
    pub port: TargetPort,
}

impl Target {
    /// The socket address for a connection that arrived on `local_port`.
    pub fn socket_addr(&self, local_port: u16) -> Option<SocketAddr> {
        let port = match self.port {
            TargetPort::Fixed(p) => p,
            TargetPort::Preserve => local_port,
        };
        self.addresses.first().map(|ip| SocketAddr::new(*ip, port))
    }
}

/// A target's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPort {
    /// Always this port.
    Fixed(u16),
    /// The port the client connected to.
    Preserve,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each new connection goes to the next target in turn.
    RoundRobin,
    /// Each new connection goes to the target with the fewest open connections.
    LeastConnections,
}

/// PROXY protocol header version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// What a route does with TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Not TLS-aware: bytes are relayed as they come.
    None,
    /// Route on the ClientHello's SNI, then relay the bytes untouched (ClientHello included).
    Passthrough,
    /// Complete the TLS handshake here and relay plaintext to the target.
    Terminate {
        /// Always serve this certificate; `None` chooses from the store by SNI.
        certificate: Option<String>,
    },
}

/// `security`: client address rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// If non-empty, only these networks may use the route.
    pub ip_allow: Vec<IpNet>,
    /// These networks are refused (checked before `ip_allow`).
    pub ip_block: Vec<IpNet>,
}

impl Security {
    /// Whether `client` may use the route.
    pub fn permits(&self, client: IpAddr) -> bool {
        let client = canonical_ip(client);
        if self.ip_block.iter().any(|n| n.contains(&client)) {
            return false;
        }
        self.ip_allow.is_empty() || self.ip_allow.iter().any(|n| n.contains(&client))
    }
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to plain IPv4 so v4 CIDRs match them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &name),
            Err(e) => {
                let mut problems = ProblemList::new(&name);
                problems.push(ProblemScope::File, "", format!("cannot read the file: {e}"));
                problems.into_result(Config::empty(&name))
            }
        }
    }

    /// The embedded default config, checked like any other.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_DEFAULT_NAME)
    }

    /// Checks config text; `source` names it in problems.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigErrors> {
        let mut problems = ProblemList::new(source);
        let doc: toml::Table = match text.parse() {
            Ok(doc) => doc,
            Err(e) => {
                problems.push(ProblemScope::File, "", format!("not valid TOML: {}", e.to_string().trim()));
                return problems.into_result(Config::empty(source));
            }
        };
        let mut config = Config::empty(source);
        for (key, value) in &doc {
            match key.as_str() {
                "runtime" => {
                    if let Some(raw) = section::<RawRuntime>(&mut problems, "runtime", value) {
                        config.runtime = validate_runtime(&mut problems, raw);
                    }
                }
                "proxy" => {
                    if let Some(raw) = section::<RawProxy>(&mut problems, "proxy", value) {
                        config.proxy = validate_proxy(&mut problems, raw);
                    }
                }
                "routes" => config.routes = validate_routes(&mut problems, value),
                "http" => {
                    if let Some(raw) = section::<RawHttp>(&mut problems, "http", value) {
                        config.http = http::validate_http(&mut problems, raw);
                    }
                }
                "certificates" => config.certificates = std::sync::Arc::new(validate_certificates(&mut problems, value)),
                "tuning" => {
                    if let Some(tuning) = section::<shardgate_tuning::TuningConfig>(&mut problems, "tuning", value) {
                        if let Err(e) = tuning.validate() {
                            problems.section("tuning", "", e.to_string());
                        }
                        config.tuning = tuning;
                    }
                }
                "radius" => {
                    if let Some(radius) = section::<shardgate_radius::config::RadiusConfig>(&mut problems, "radius", value) {
                        validate_radius(&mut problems, &radius);
                        config.radius = Some(radius);
                    }
                }
                "dns" => {
                    if let Some(dns) = section::<shardgate_dns::DnsConfig>(&mut problems, "dns", value) {
                        config.dns_catalog = crate::config::dns::validate_dns(&mut problems, &dns);
                        config.dns = Some(dns);
                    }
                }
                "storage" => config.storage = acme::validate_storage(&mut problems, value),
                "admin" => config.admin = admin::validate_admin(&mut problems, value),
                // Checked below, once the routes (acme) and certificates (email) are known.
                "acme" | "email" => {}
                other => problems.push(
                    ProblemScope::File,
                    other,
                    "unknown section (known: runtime, proxy, routes, http, certificates, tuning, radius, dns, acme, storage, admin, email)",
                ),
            }
        }
        check_conflicts(&mut problems, &config.routes);
        check_port_protocols(&mut problems, &config.routes);
        crate::config::dns::check_dns_addresses(&mut problems, &config);
        config.acme = acme::validate_acme(&mut problems, &doc, &config);
        check_route_certificates(&mut problems, &config, &acme::auto_route_names(&doc));
        admin::check_admin_certificate(&mut problems, &config);
        if let Some(email) = doc.get("email") {
            let has_certificates = config.certificates.all().next().is_some();
            let (email, templates) = mail_templates::split_templates(email);
            let (email, auth_tables) = email_domains::split_auth(&email);
            config.mail_auth = email_domains::validate_auth(&mut problems, auth_tables);
            if let Some(templates) = templates {
                config.mail_templates = mail_templates::validate_templates(&mut problems, templates);
            }
            config.email = email::validate_email(&mut problems, &email, has_certificates);
            check_email_addresses(&mut problems, &config);
        }
        let ports: usize = distinct_route_ports(&config.routes).len();
        if ports > MAX_LISTEN_PORTS {
            problems.section(
                "routes",
                "match.ports",
                format!("routes ask for {ports} listening ports; at most {MAX_LISTEN_PORTS} are allowed"),
            );
        }
        config.routes.sort_by_key(|r| (std::cmp::Reverse(r.priority), std::cmp::Reverse(r.path_specificity())));
        problems.into_result(config)
    }

    fn empty(source: &str) -> Config {
        Config {
            source: source.to_string(),
            runtime: RuntimeSettings {
                layout: CpuLayout::automatic(&allowed_cpus()),
                data_dir: PathBuf::from("./shardgate-data"),
                drain_timeout: Duration::from_secs(10),
                spin_before_park: DEFAULT_SPIN_BEFORE_PARK,
            },
            proxy: ProxySettings { listen: vec![IpAddr::from([0, 0, 0, 0])] },
            routes: Vec::new(),
            http: HttpSettings::default(),
            tuning: shardgate_tuning::TuningConfig::default(),
            certificates: std::sync::Arc::new(crate::tls::store::CertificateStore::default()),
            radius: None,
            dns: None,
            dns_catalog: None,
            acme: None,
            storage: StorageBackend::Files,
            admin: None,
            email: None,
            mail_templates: Vec::new(),
            mail_auth: MailAuthSettings::default(),
        }
    }

    /// Every port some route listens on, ascending.
    pub fn route_ports(&self) -> Vec<u16> {
        distinct_route_ports(&self.routes)
    }
}

fn distinct_route_ports(routes: &[Route]) -> Vec<u16> {
    let mut all: Vec<u16> = routes.iter().flat_map(|r| r.matcher.ports.iter()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Email ports must not collide with route ports or DNS TCP addresses.
fn check_email_addresses(problems: &mut ProblemList, config: &Config) {
    let Some(email) = &config.email else { return };
    let route_ports = config.route_ports();
    let dns_tcp: Vec<SocketAddr> = config.dns.as_ref().map(|d| d.tcp.clone()).unwrap_or_default();
    let overlaps = |a: IpAddr, b: IpAddr| a == b || a.is_unspecified() || b.is_unspecified();
    for addr in email.listen_addresses().keys() {
        if route_ports.contains(&addr.port()) && config.proxy.listen.iter().any(|ip| overlaps(*ip, addr.ip())) {
            problems.section("email", "ports", format!("{addr}: port {} is also a route port", addr.port()));
        }
        if dns_tcp.iter().any(|d| d.port() == addr.port() && overlaps(d.ip(), addr.ip())) {
            problems.section("email", "ports", format!("{addr}: port {} is also a DNS TCP port", addr.port()));
        }
    }
}

/// Deserialises one section, reporting unknown keys and type errors under `scope_name`.
fn section<T: for<'de> Deserialize<'de>>(problems: &mut ProblemList, scope_name: &str, value: &toml::Value) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> =
        serde_ignored::deserialize(value.clone(), |path| unknown.push(clean_path(&path)));
    for path in unknown {
        problems.section(scope_name, &path, "unknown field");
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.section(scope_name, "", e.to_string().trim().to_string());
            None
        }
    }
}

/// A serde_ignored path as users write it: `match.speed`, not `match.?.speed`.
fn clean_path(path: &serde_ignored::Path<'_>) -> String {
    path.to_string().split('.').filter(|seg| *seg != "?").collect::<Vec<_>>().join(".")
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like \"5s\" or \"2m\": {e}"))
}

fn validate_runtime(problems: &mut ProblemList, raw: RawRuntime) -> RuntimeSettings {
    let allowed = allowed_cpus();
    let automatic = CpuLayout::automatic(&allowed);
    let check_cpu = |field: &str, cpu: i64, problems: &mut ProblemList| -> Option<usize> {
        match usize::try_from(cpu) {
            Ok(c) if allowed.contains(&c) => Some(c),
            _ => {
                problems.section(
                    "runtime",
                    field,
                    format!("CPU {cpu} is not available to this process (available: {allowed:?})"),
                );
                None
            }
        }
    };
    let shards_given = raw.shards.is_some();
    let shard_cpus = match raw.shards {
        None => automatic.shard_cpus.clone(),
        Some(CpuChoice::Word(w)) if w == "auto" => automatic.shard_cpus.clone(),
        Some(CpuChoice::Word(w)) => {
            problems.section("runtime", "shards", format!("`{w}` is not \"auto\" or a list of CPU ids"));
            automatic.shard_cpus.clone()
        }
        Some(CpuChoice::One(n)) => check_cpu("shards", n, problems).into_iter().collect(),
        Some(CpuChoice::List(list)) => {
            let mut cpus = Vec::new();
            for n in list {
                if let Some(c) = check_cpu("shards", n, problems) {
                    if cpus.contains(&c) {
                        problems.section("runtime", "shards", format!("CPU {c} is listed twice"));
                    } else {
                        cpus.push(c);
                    }
                }
            }
            if cpus.is_empty() {
                problems.section("runtime", "shards", "no shard CPU: give at least one");
            }
            cpus
        }
    };
    let control_cpu = match raw.control_cpu {
        None => {
            if !shards_given { automatic.control_cpu } else { CpuLayout::automatic_control(&allowed, &shard_cpus) }
        }
        Some(CpuChoice::Word(w)) if w == "auto" => CpuLayout::automatic_control(&allowed, &shard_cpus),
        Some(CpuChoice::Word(w)) if w == "none" => None,
        Some(CpuChoice::One(n)) => check_cpu("control_cpu", n, problems),
        Some(other) => {
            problems.section("runtime", "control_cpu", format!("{other:?} is not \"auto\", \"none\" or one CPU id"));
            None
        }
    };
    let drain_timeout = match raw.drain_timeout.as_deref().map(parse_duration) {
        None => Duration::from_secs(10),
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            problems.section("runtime", "drain_timeout", e);
            Duration::from_secs(10)
        }
    };
    let data_dir = match raw.data_dir {
        Some(d) if d.trim().is_empty() => {
            problems.section("runtime", "data_dir", "is empty");
            PathBuf::from("./shardgate-data")
        }
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("./shardgate-data"),
    };
    let spin_before_park = match raw.spin_before_park.as_deref().map(parse_duration) {
        None => DEFAULT_SPIN_BEFORE_PARK,
        Some(Ok(d)) if d <= Duration::from_secs(1) => d,
        Some(Ok(d)) => {
            problems.section("runtime", "spin_before_park", format!("{d:?} is longer than 1s (a shard would never sleep)"));
            DEFAULT_SPIN_BEFORE_PARK
        }
        Some(Err(e)) => {
            problems.section("runtime", "spin_before_park", e);
            DEFAULT_SPIN_BEFORE_PARK
        }
    };
    RuntimeSettings { layout: CpuLayout { shard_cpus, control_cpu }, data_dir, drain_timeout, spin_before_park }
}

fn validate_proxy(problems: &mut ProblemList, raw: RawProxy) -> ProxySettings {
    let mut listen = Vec::new();
    let given = raw.listen.unwrap_or_else(|| vec!["0.0.0.0".into()]);
    if given.is_empty() {
        problems.section("proxy", "listen", "no listen address: give at least one");
    }
    for text in given {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) if listen.contains(&ip) => {
                problems.section("proxy", "listen", format!("address {ip} is listed twice"))
            }
            Ok(ip) => listen.push(ip),
            Err(_) => problems.section("proxy", "listen", format!("`{text}` is not an IP address")),
        }
    }
    ProxySettings { listen }
}

/// Reports every `[radius]` problem under the `[radius]` section. Compiling the policy (not
/// just validating it) also catches anything only the compiler checks, so the runtime's own
/// compile of a loaded config cannot fail.
fn validate_radius(problems: &mut ProblemList, radius: &shardgate_radius::config::RadiusConfig) {
    match shardgate_radius::policy::Policy::from_config(radius) {
        Ok(_) => {}
        Err(shardgate_radius::RadiusError::InvalidConfig(found)) => {
            for problem in found {
                let field = problem.field.strip_prefix("radius.").unwrap_or(&problem.field);
                problems.section("radius", field, problem.message);
            }
        }
        Err(other) => problems.section("radius", "", other.to_string()),
    }
}

fn validate_routes(problems: &mut ProblemList, value: &toml::Value) -> Vec<Route> {
    let Some(entries) = value.as_array() else {
        problems.section("routes", "", "must be an array of tables: write each route as [[routes]]");
        return Vec::new();
    };
    let mut routes = Vec::new();
    let mut seen_names: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        // Name the route as early as possible so every problem can say which one it is.
        let label = entry
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", index + 1));
        let mut unknown = Vec::new();
        let raw: Result<RawRoute, _> =
            serde_ignored::deserialize(entry.clone(), |path| unknown.push(clean_path(&path)));
        for path in unknown {
            problems.route(&label, &path, "unknown field");
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                problems.route(&label, "", e.to_string().trim().to_string());
                continue;
            }
        };
        match raw.name.as_deref().map(str::trim) {
            None | Some("") => problems.route(&label, "name", "every route needs a non-empty name"),
            Some(name) if seen_names.iter().any(|n| n == name) => {
                problems.route(&label, "name", "another route already has this name")
            }
            Some(name) => seen_names.push(name.to_string()),
        }
        if let Some(route) = validate_route(problems, &label, raw) {
            routes.push(route);
        }
    }
    routes
}

fn validate_route(problems: &mut ProblemList, label: &str, raw: RawRoute) -> Option<Route> {
    let before = problems.len();
    let protocol_given = raw.action.as_ref().and_then(|a| a.protocol.clone());
    let matcher = match raw.matcher {
        Some(m) => validate_match(problems, label, m),
        None => {
            problems.route(label, "match", "missing: a route needs at least `match.ports`");
            None
        }
    };
    let action = match raw.action {
        Some(a) => validate_action(problems, label, a),
        None => {
            problems.route(label, "action", "missing: give `action.type` (forward, redirect, serve or reject)");
            None
        }
    };
    let security = raw.security.map(|s| validate_security(problems, label, s)).unwrap_or_default();
    let limits = raw.limits.map(|l| http::validate_limits(problems, label, l)).unwrap_or_default();
    // `match.path` makes a forward an HTTP route unless it says otherwise.
    let mut action = action;
    if let (Some(RouteAction::Forward(f)), Some(m)) = (&mut action, &matcher) {
        if m.paths.is_some() && f.protocol == Protocol::Tcp {
            if protocol_given.as_deref().map(str::trim) == Some("tcp") {
                problems.route(label, "match.path", "paths are HTTP: set `action.protocol = \"http\"` (or leave protocol out)");
            }
            f.protocol = Protocol::Http;
        }
        if f.protocol == Protocol::Tcp && f.tls == TlsMode::None && m.domains.is_some() {
            problems.route(
                label,
                "match.domains",
                "domains are matched against TLS SNI, or the Host of HTTP requests: set `action.tls = { mode = \"passthrough\" }` or \"terminate\", or `action.protocol = \"http\"`",
            );
        }
        if f.protocol == Protocol::Http && f.tls == TlsMode::Passthrough {
            problems.route(label, "action.tls.mode", "HTTP routes see requests, so they cannot pass TLS through: use \"terminate\"");
        }
        if f.protocol == Protocol::Http && f.proxy_protocol.is_some() {
            problems.route(
                label,
                "action.proxy_protocol",
                "not for HTTP routes: pooled backend connections carry many clients' requests, which `X-Forwarded-For` and `Forwarded` name (as nginx's http proxy, which has no PROXY header either)",
            );
        }
    }
    if limits != RouteLimits::default() && !matches!(&action, Some(a) if route_action_is_http(a, matcher.as_ref())) {
        problems.route(label, "limits", "request and connection limits apply to HTTP routes (protocol = \"http\", redirect or serve)");
    }
    if problems.len() != before {
        return None;
    }
    Some(Route {
        name: label.to_string(),
        priority: raw.priority.unwrap_or(0),
        matcher: matcher?,
        action: action?,
        security,
        limits,
    })
}

fn parse_networks(problems: &mut ProblemList, label: &str, field: &str, items: &[&str]) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for item in items {
        let text = item.trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => problems.route(label, field, format!("`{text}` is not an IP address or CIDR like 10.0.0.0/8")),
        }
    }
    nets
}

fn validate_match(problems: &mut ProblemList, label: &str, raw: RawMatch) -> Option<RouteMatch> {
    let ports = match raw.ports {
        None => {
            problems.route(label, "match.ports", "missing: which ports does this route listen on?");
            None
        }
        Some(value) => match PortSet::parse(&value) {
            Ok(set) => Some(set),
            Err(errors) => {
                for e in errors {
                    problems.route(label, "match.ports", e);
                }
                None
            }
        },
    };
    let domains = raw.domains.map(|d: OneOrMany| {
        let mut patterns = Vec::new();
        for item in d.items() {
            match DomainPattern::parse(item) {
                Ok(p) => patterns.push(p),
                Err(e) => problems.route(label, "match.domains", e),
            }
        }
        if patterns.is_empty() && d.items().is_empty() {
            problems.route(label, "match.domains", "is empty: leave it out to match every name");
        }
        patterns
    });
    let client_ip = raw.client_ip.map(|c| {
        let items = c.items();
        if items.is_empty() {
            problems.route(label, "match.client_ip", "is empty: leave it out to match every client");
        }
        parse_networks(problems, label, "match.client_ip", &items)
    });
    let paths = raw.path.map(|p| http::validate_paths(problems, label, p));
    Some(RouteMatch { ports: ports?, domains, client_ip, paths })
}

fn validate_security(problems: &mut ProblemList, label: &str, raw: RawSecurity) -> Security {
    let allow = raw.ip_allow.unwrap_or_default();
    let block = raw.ip_block.unwrap_or_default();
    let allow_refs: Vec<&str> = allow.iter().map(String::as_str).collect();
    let block_refs: Vec<&str> = block.iter().map(String::as_str).collect();
    Security {
        ip_allow: parse_networks(problems, label, "security.ip_allow", &allow_refs),
        ip_block: parse_networks(problems, label, "security.ip_block", &block_refs),
    }
}

fn validate_action(problems: &mut ProblemList, label: &str, raw: RawAction) -> Option<RouteAction> {
    let kind = raw.kind.as_deref().map(str::trim);
    match kind {
        Some("reject") => {
            let extra = [
                ("targets", raw.targets.is_some()),
                ("balance", raw.balance.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("idle_timeout", raw.idle_timeout.is_some()),
                ("max_connections", raw.max_connections.is_some()),
                ("proxy_protocol", raw.proxy_protocol.is_some()),
                ("tls", raw.tls.is_some()),
                ("protocol", raw.protocol.is_some()),
                ("status", raw.status.is_some()),
                ("to", raw.to.is_some()),
                ("root", raw.root.is_some()),
            ];
            for (field, present) in extra {
                if present {
                    problems.route(label, &format!("action.{field}"), "not allowed for type `reject`");
                }
            }
            Some(RouteAction::Reject)
        }
        Some("forward") => {
            for (field, present) in [("status", raw.status.is_some()), ("to", raw.to.is_some()), ("root", raw.root.is_some())] {
                if present {
                    problems.route(label, &format!("action.{field}"), "not allowed for type `forward`");
                }
            }
            validate_forward(problems, label, raw).map(RouteAction::Forward)
        }
        Some(kind @ ("redirect" | "serve")) => {
            let extra = [
                ("targets", raw.targets.is_some()),
                ("balance", raw.balance.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("idle_timeout", raw.idle_timeout.is_some()),
                ("max_connections", raw.max_connections.is_some()),
                ("proxy_protocol", raw.proxy_protocol.is_some()),
                ("protocol", raw.protocol.is_some()),
                ("status", kind == "serve" && raw.status.is_some()),
                ("to", kind == "serve" && raw.to.is_some()),
                ("root", kind == "redirect" && raw.root.is_some()),
            ];
            for (field, present) in extra {
                if present {
                    problems.route(label, &format!("action.{field}"), format!("not allowed for type `{kind}`"));
                }
            }
            let tls = validate_tls(problems, label, raw.tls);
            if tls == TlsMode::Passthrough {
                problems.route(label, "action.tls.mode", format!("`{kind}` answers HTTP requests itself, so TLS cannot pass through: use \"terminate\""));
            }
            if kind == "redirect" {
                http::validate_redirect(problems, label, raw.status, raw.to, tls).map(RouteAction::Redirect)
            } else {
                http::validate_serve(problems, label, raw.root, tls).map(RouteAction::Serve)
            }
        }
        Some(other) => {
            problems.route(label, "action.type", format!("`{other}` is not an action type (known: forward, redirect, serve, reject)"));
            None
        }
        None => {
            problems.route(label, "action.type", "missing: forward, redirect, serve or reject");
            None
        }
    }
}

fn validate_forward(problems: &mut ProblemList, label: &str, raw: RawAction) -> Option<Forward> {
    let before = problems.len();
    let mut targets = Vec::new();
    match raw.targets {
        None => problems.route(label, "action.targets", "missing: a forward needs at least one target"),
        Some(list) if list.is_empty() => {
            problems.route(label, "action.targets", "is empty: a forward needs at least one target")
        }
        Some(list) => {
            for (i, t) in list.into_iter().enumerate() {
                let field = format!("action.targets[{i}]");
                let host = match t.host.as_deref().map(str::trim) {
                    Some(h) if !h.is_empty() => h.to_string(),
                    _ => {
                        problems.route(label, &format!("{field}.host"), "missing");
                        continue;
                    }
                };
                let port = match t.port {
                    None => {
                        problems.route(label, &format!("{field}.port"), "missing: a port number or \"preserve\"");
                        continue;
                    }
                    Some(TargetPortValue::Number(n)) => match u16::try_from(n) {
                        Ok(p) if p != 0 => TargetPort::Fixed(p),
                        _ => {
                            problems.route(label, &format!("{field}.port"), format!("port {n} is outside 1-65535"));
                            continue;
                        }
                    },
                    Some(TargetPortValue::Word(w)) if w == "preserve" => TargetPort::Preserve,
                    Some(TargetPortValue::Word(w)) => match w.trim().parse::<u16>() {
                        Ok(p) if p != 0 => TargetPort::Fixed(p),
                        _ => {
                            problems.route(label, &format!("{field}.port"), format!("`{w}` is not a port number or \"preserve\""));
                            continue;
                        }
                    },
                };
                match resolve_host(&host) {
                    Ok(addresses) => targets.push(Target { host, addresses, port }),
                    Err(e) => problems.route(label, &format!("{field}.host"), e),
                }
            }
        }
    }
    let balance = match raw.balance.as_deref().map(str::trim) {
        None | Some("round-robin") => Balance::RoundRobin,
        Some("least-connections") => Balance::LeastConnections,
        Some(other) => {
            problems.route(label, "action.balance", format!("`{other}` is not round-robin or least-connections"));
            Balance::RoundRobin
        }
    };
    let mut duration = |field: &str, value: Option<String>, default: Duration| match value.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.route(label, field, "must be longer than zero");
            default
        }
        Some(Err(e)) => {
            problems.route(label, field, e);
            default
        }
    };
    let connect_timeout = duration("action.connect_timeout", raw.connect_timeout, Duration::from_secs(5));
    let idle_timeout = duration("action.idle_timeout", raw.idle_timeout, Duration::from_secs(300));
    let max_connections = match raw.max_connections {
        None => None,
        Some(n) => match u32::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                problems.route(label, "action.max_connections", format!("{n} is not a positive count"));
                None
            }
        },
    };
    let proxy_protocol = match raw.proxy_protocol.as_deref().map(str::trim) {
        None | Some("none") => None,
        Some("v1") => Some(ProxyProtocol::V1),
        Some("v2") => Some(ProxyProtocol::V2),
        Some(other) => {
            problems.route(label, "action.proxy_protocol", format!("`{other}` is not v1, v2 or none"));
            None
        }
    };
    let tls = validate_tls(problems, label, raw.tls);
    let protocol = match raw.protocol.as_deref().map(str::trim) {
        None | Some("tcp") => Protocol::Tcp,
        Some("http") => Protocol::Http,
        Some(other) => {
            problems.route(label, "action.protocol", format!("`{other}` is not a protocol (known: tcp, http)"));
            Protocol::Tcp
        }
    };
    if problems.len() != before {
        return None;
    }
    Some(Forward { targets, balance, connect_timeout, idle_timeout, max_connections, proxy_protocol, tls, protocol })
}

/// Parses `action.tls`.
fn validate_tls(problems: &mut ProblemList, label: &str, raw_tls: Option<schema::RawTls>) -> TlsMode {
    match raw_tls {
        None => TlsMode::None,
        Some(tls) => match tls.mode.as_deref().map(str::trim) {
            None => {
                problems.route(label, "action.tls.mode", "missing: passthrough or terminate");
                TlsMode::None
            }
            Some("passthrough") => {
                if tls.certificate.is_some() {
                    problems.route(label, "action.tls.certificate", "not allowed with passthrough (the backend holds the certificate)");
                }
                TlsMode::Passthrough
            }
            Some("terminate") => match tls.certificate.as_deref().map(str::trim) {
                // ACME (`[acme]`, checked in `acme::validate_acme`): chosen by SNI from the
                // store, where issued certificates are merged in.
                Some("auto") => TlsMode::Terminate { certificate: None },
                Some("") => {
                    problems.route(label, "action.tls.certificate", "is empty: name a [[certificates]] entry or leave it out to choose by SNI");
                    TlsMode::None
                }
                name => TlsMode::Terminate { certificate: name.map(str::to_string) },
            },
            Some("terminate-and-reencrypt") => {
                problems.route(label, "action.tls.mode", "`terminate-and-reencrypt` is not supported by this build yet (supported: passthrough, terminate)");
                TlsMode::None
            }
            Some(other) => {
                problems.route(label, "action.tls.mode", format!("`{other}` is not a TLS mode (known: passthrough, terminate)"));
                TlsMode::None
            }
        },
    }
}

/// Whether `action` (with `matcher`) makes an HTTP route.
fn route_action_is_http(action: &RouteAction, matcher: Option<&RouteMatch>) -> bool {
    match action {
        RouteAction::Forward(f) => f.protocol == Protocol::Http,
        RouteAction::Redirect(_) | RouteAction::Serve(_) => true,
        RouteAction::Reject => matcher.is_some_and(|m| m.paths.is_some()),
    }
}

/// A port speaks one protocol on its plain side, as an HAProxy frontend is `mode http` or
/// `mode tcp`: HTTP routes and TCP routes without TLS cannot share a port. TLS routes are
/// told apart by SNI and may share a port with anything.
fn check_port_protocols(problems: &mut ProblemList, routes: &[Route]) {
    for (i, a) in routes.iter().enumerate() {
        if *a.tls() != TlsMode::None {
            continue;
        }
        for b in &routes[i + 1..] {
            if *b.tls() != TlsMode::None || a.is_http() == b.is_http() {
                continue;
            }
            if let Some(port) = b.matcher.ports.iter().find(|p| a.matcher.ports.contains(*p)) {
                let (http, tcp) = if a.is_http() { (a, b) } else { (b, a) };
                problems.route(
                    &b.name,
                    "match.ports",
                    format!(
                        "port {port} would carry both the HTTP route `{}` and the TCP route `{}` without TLS; \
                         a plain port speaks one protocol: move one to another port or give the TCP route TLS",
                        http.name, tcp.name
                    ),
                );
            }
        }
    }
}

/// Resolves a target host once, at load time; an unresolvable host is a config error.
fn resolve_host(host: &str) -> Result<Vec<IpAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    if let Err(why) = crate::route::validate_hostname(host) {
        return Err(format!("`{host}` is not a host name or address: {why}"));
    }
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.dedup();
            if ips.is_empty() {
                Err(format!("`{host}` resolves to no address"))
            } else {
                Ok(ips)
            }
        }
        Err(e) => Err(format!("`{host}` does not resolve: {e}")),
    }
}

fn validate_certificates(problems: &mut ProblemList, value: &toml::Value) -> crate::tls::store::CertificateStore {
    use crate::tls::store::{load_certificate, CertificateSpec, CertificateStore};
    let Some(entries) = value.as_array() else {
        problems.section("certificates", "", "must be an array of tables: write each as [[certificates]]");
        return CertificateStore::default();
    };
    let mut loaded = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let label = entry
            .get("name")
            .and_then(|n| n.as_str())
            .map(|n| format!("certificates `{n}`"))
            .unwrap_or_else(|| format!("certificates #{}", index + 1));
        let mut unknown = Vec::new();
        let raw: Result<schema::RawCertificate, _> =
            serde_ignored::deserialize(entry.clone(), |path| unknown.push(clean_path(&path)));
        for path in unknown {
            problems.section(&label, &path, "unknown field");
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                problems.section(&label, "", e.to_string().trim().to_string());
                continue;
            }
        };
        let (Some(name), Some(cert), Some(key)) = (raw.name, raw.cert, raw.key) else {
            problems.section(&label, "", "needs `name`, `cert` (PEM chain) and `key` (PEM private key)");
            continue;
        };
        if names.contains(&name) {
            problems.section(&label, "name", "another certificate already has this name");
            continue;
        }
        names.push(name.clone());
        let spec = CertificateSpec { name, cert_path: cert, key_path: key, default: raw.default.unwrap_or(false) };
        match load_certificate(&spec) {
            Ok(cert) => loaded.push((cert, spec.default)),
            Err((field, message)) => problems.section(&label, &field, message),
        }
    }
    if loaded.iter().filter(|(_, d)| *d).count() > 1 {
        problems.section("certificates", "default", "more than one certificate is marked default");
    }
    CertificateStore::new(loaded)
}

/// Every `terminate` route needs a certificate: the one it names, or at least one to choose
/// from by SNI.
fn check_route_certificates(problems: &mut ProblemList, config: &Config, auto_routes: &[String]) {
    for route in config.routes.iter().filter(|r| !auto_routes.contains(&r.name)) {
        let TlsMode::Terminate { certificate } = route.tls() else { continue };
        match certificate {
            Some(name) if config.certificates.by_name(name).is_none() => problems.route(
                &route.name,
                "action.tls.certificate",
                format!("no [[certificates]] entry is named `{name}`"),
            ),
            None if config.certificates.all().next().is_none() => problems.route(
                &route.name,
                "action.tls",
                "terminate needs a certificate: add a [[certificates]] entry",
            ),
            _ => {}
        }
    }
}

/// Two routes with the same priority, the same match and overlapping ports are ambiguous:
/// the later one could never be chosen.
fn check_conflicts(problems: &mut ProblemList, routes: &[Route]) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.priority == b.priority
                && a.matcher.domains == b.matcher.domains
                && a.matcher.client_ip == b.matcher.client_ip
                && a.matcher.paths == b.matcher.paths
                && a.matcher.ports.overlaps(&b.matcher.ports)
            {
                let shared = b.matcher.ports.iter().find(|p| a.matcher.ports.contains(*p)).unwrap_or(0);
                problems.route(
                    &b.name,
                    "match",
                    format!(
                        "conflicts with route `{}`: same priority ({}), same domains, paths and clients, both on port {shared}; \
                         give one a higher priority or a narrower match",
                        a.name, a.priority
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
