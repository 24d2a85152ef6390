//! The `[admin]` section: the admin API's listener, its TLS, its users and its switches.
//!
//! Owns: parsing and checking `[admin]` into [`AdminSettings`] (listen address, optional TLS
//! from the certificate store or from files, users with password hashes checked by the SMTP
//! crate's verifier, `metrics_open`, `token_ttl`, `latency_histograms`). Does not own: the
//! HTTP server (`crate::admin_api`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::problems::ProblemList;
use super::{parse_duration, section, Config};

/// The admin listener when `[admin]` gives no `listen`: loopback, an unprivileged port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Token lifetime when `[admin]` gives no `token_ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// `[admin]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
struct RawAdmin {
    listen: Option<String>,
    /// A `[[certificates]]` name: serve HTTPS with it.
    certificate: Option<String>,
    /// PEM chain file (with `key`): serve HTTPS with it.
    cert: Option<String>,
    key: Option<String>,
    users: Option<Vec<RawAdminUser>>,
    metrics_open: Option<bool>,
    token_ttl: Option<String>,
    latency_histograms: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawAdminUser {
    username: Option<String>,
    password_hash: Option<String>,
}

/// Where the admin listener's TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTls {
    /// A certificate of `[[certificates]]`, by name.
    Certificate(String),
    /// Separate PEM files.
    Files {
        /// Chain, leaf first.
        cert: String,
        /// Private key.
        key: String,
    },
}

/// One admin user.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminUser {
    /// Login name.
    pub username: String,
    /// argon2 PHC string or SHA-crypt (`$6$`, `$5$`).
    pub password_hash: String,
}

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser").field("username", &self.username).finish_non_exhaustive()
    }
}

/// `[admin]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where the admin API listens.
    pub listen: SocketAddr,
    /// HTTPS when set.
    pub tls: Option<AdminTls>,
    /// Who may log in.
    pub users: Vec<AdminUser>,
    /// `/metrics` answers without a token (for scrapers).
    pub metrics_open: bool,
    /// How long a login token is valid.
    pub token_ttl: Duration,
    /// Whether shards record latency histograms (on by default; off only to measure their cost).
    pub latency_histograms: bool,
}

impl AdminSettings {
    /// The users as a verifier.
    pub fn user_directory(&self) -> shardgate_smtp::UserDirectory {
        shardgate_smtp::UserDirectory::from_users(self.users.iter().map(|u| (u.username.clone(), u.password_hash.clone())))
    }
}

/// Checks `[admin]` (certificate names are checked later by [`check_admin_certificate`]).
pub(super) fn validate_admin(problems: &mut ProblemList, value: &toml::Value) -> Option<AdminSettings> {
    let raw = section::<RawAdmin>(problems, "admin", value)?;
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen = match listen_text.trim().parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            problems.section("admin", "listen", format!("`{listen_text}` is not an address:port like \"127.0.0.1:9090\""));
            DEFAULT_ADMIN_LISTEN.parse().ok()?
        }
    };
    let tls = match (raw.certificate, raw.cert, raw.key) {
        (None, None, None) => None,
        (Some(name), None, None) => Some(AdminTls::Certificate(name)),
        (None, Some(cert), Some(key)) => {
            let spec = crate::tls::store::CertificateSpec { name: "admin".into(), cert_path: cert.clone(), key_path: key.clone(), default: false };
            if let Err((field, message)) = crate::tls::store::load_certificate(&spec) {
                problems.section("admin", &field, message);
            }
            Some(AdminTls::Files { cert, key })
        }
        (Some(_), _, _) => {
            problems.section("admin", "certificate", "give either `certificate` (a [[certificates]] name) or `cert` and `key`, not both");
            None
        }
        (None, _, _) => {
            problems.section("admin", "cert", "`cert` and `key` go together (PEM chain and private key)");
            None
        }
    };
    let mut users: Vec<AdminUser> = Vec::new();
    for (index, user) in raw.users.unwrap_or_default().into_iter().enumerate() {
        let field = format!("users[{index}]");
        let (Some(username), Some(password_hash)) = (user.username, user.password_hash) else {
            problems.section("admin", &field, "needs `username` and `password_hash`");
            continue;
        };
        if username.trim().is_empty() || username.contains(':') {
            problems.section("admin", &format!("{field}.username"), "must be non-empty and without `:`");
            continue;
        }
        if users.iter().any(|u| u.username == username) {
            problems.section("admin", &format!("{field}.username"), format!("user `{username}` is listed twice"));
            continue;
        }
        if let Err(e) = shardgate_smtp::config::check_password_hash(&password_hash) {
            problems.section("admin", &format!("{field}.password_hash"), e);
            continue;
        }
        users.push(AdminUser { username, password_hash });
    }
    let token_ttl = match raw.token_ttl.as_deref().map(parse_duration) {
        None => DEFAULT_TOKEN_TTL,
        Some(Ok(d)) if d >= Duration::from_secs(10) && d <= Duration::from_secs(24 * 3600) => d,
        Some(Ok(d)) => {
            problems.section("admin", "token_ttl", format!("{d:?} is outside 10s..24h"));
            DEFAULT_TOKEN_TTL
        }
        Some(Err(e)) => {
            problems.section("admin", "token_ttl", e);
            DEFAULT_TOKEN_TTL
        }
    };
    Some(AdminSettings {
        listen,
        tls,
        users,
        metrics_open: raw.metrics_open.unwrap_or(false),
        token_ttl,
        latency_histograms: raw.latency_histograms.unwrap_or(true),
    })
}

/// `[admin] certificate` must name a `[[certificates]]` entry.
pub(super) fn check_admin_certificate(problems: &mut ProblemList, config: &Config) {
    let Some(AdminSettings { tls: Some(AdminTls::Certificate(name)), .. }) = &config.admin else { return };
    if config.certificates.by_name(name).is_none() {
        problems.section("admin", "certificate", format!("no [[certificates]] entry is named `{name}`"));
    }
}
