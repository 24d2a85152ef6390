//! The `[email]` settings the SMTP session needs, and password verification for
//! `[[email.users]]`.
//!
//! Owns: serde types for hostname, ports, size/recipient/error limits, timeouts, greeting
//! delay, users (password hashes only — argon2 PHC `$argon2id$…` or SHA-crypt `$6$…`/`$5$…`,
//! never plain text), relay networks and local domains; [`EmailConfig::validate`] which
//! reports every problem with its field name; [`SessionConfig`], the immutable snapshot a
//! shard hands to each [`crate::session::Session`]; [`UserDirectory`] for `AUTH`.
//! Does not own: routes, queue and delivery settings (other `[email]` tables the lead adds
//! next to these), reading files, or TLS certificates.

use crate::address::validate_domain_name;
use crate::error::SmtpError;
use argon2::{Argon2, PasswordVerifier as _};
use ipnet::IpNet;
use serde::Deserialize;
use sha_crypt::ShaCrypt;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// One problem found by [`EmailConfig::validate`]: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted field path, e.g. `email.users[2].password_hash`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Listening ports. Defaults are unprivileged so the embedded config runs without root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailPorts {
    /// Plain SMTP with STARTTLS (MX traffic); production value 25.
    pub smtp: Option<u16>,
    /// Submission with STARTTLS and mandatory AUTH; production value 587.
    pub submission: Option<u16>,
    /// Submission over implicit TLS (RFC 8314) with mandatory AUTH; production value 465.
    pub smtps: Option<u16>,
}

impl Default for EmailPorts {
    fn default() -> Self {
        EmailPorts {
            smtp: Some(2525),
            submission: Some(2587),
            smtps: Some(2465),
        }
    }
}

/// Per-phase inactivity timeouts, in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailTimeouts {
    /// Waiting for the next command line (Postfix `smtpd_timeout`, RFC 5321 §4.5.3.2.7).
    pub command_seconds: u64,
    /// Waiting for more message data after `DATA`/`BDAT` (RFC 5321 §4.5.3.2.6).
    pub data_seconds: u64,
}

impl Default for EmailTimeouts {
    fn default() -> Self {
        EmailTimeouts {
            command_seconds: 300,
            data_seconds: 600,
        }
    }
}

/// One `[[email.users]]` entry: a login for `AUTH` on submission.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailUser {
    /// Login name as sent in `AUTH`.
    pub username: String,
    /// `$argon2id$v=19$…` (PHC) or `$6$salt$…` / `$5$…` (SHA-crypt). Never plain text.
    pub password_hash: String,
}

impl fmt::Debug for EmailUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// The session-relevant part of the `[email]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Our host name: used in the greeting, EHLO reply and 421 replies.
    pub hostname: String,
    /// Listening ports.
    #[serde(default)]
    pub ports: EmailPorts,
    /// Largest accepted message in octets, announced as `SIZE` and enforced while reading.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Most recipients per message; more get `452 4.5.3`.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: u32,
    /// Error replies per session before `421 4.7.0` and disconnect.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    /// Per-phase timeouts.
    #[serde(default)]
    pub timeouts: EmailTimeouts,
    /// Milliseconds to wait before the `220` greeting; clients talking earlier are
    /// rejected with `554`. 0 disables the check.
    #[serde(default)]
    pub greeting_delay_ms: u64,
    /// Offer `AUTH` on connections without TLS. Off by default: passwords never travel
    /// in clear text unless an operator explicitly says so.
    #[serde(default)]
    pub auth_without_tls: bool,
    /// Users allowed to `AUTH`.
    #[serde(default)]
    pub users: Vec<EmailUser>,
    /// Client networks allowed to relay without `AUTH` (Postfix `mynetworks`).
    #[serde(default = "default_relay_networks")]
    pub relay_networks: Vec<IpNet>,
    /// Domains we accept mail for from anyone.
    #[serde(default)]
    pub local_domains: Vec<String>,
}

fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}
fn default_max_recipients() -> u32 {
    1000
}
fn default_max_errors() -> u32 {
    20
}
fn default_relay_networks() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|net| net.parse().ok())
        .collect()
}

/// Which kind of password hash a stored string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashScheme {
    Argon2,
    ShaCrypt,
}

fn hash_scheme(hash: &str) -> Result<HashScheme, &'static str> {
    if hash.starts_with("$argon2id$")
        || hash.starts_with("$argon2i$")
        || hash.starts_with("$argon2d$")
    {
        argon2::PasswordHash::new(hash).map_err(|_| "malformed argon2 PHC string")?;
        Ok(HashScheme::Argon2)
    } else if hash.starts_with("$6$") || hash.starts_with("$5$") {
        sha_crypt::PasswordHashRef::new(hash).map_err(|_| "malformed SHA-crypt string")?;
        Ok(HashScheme::ShaCrypt)
    } else {
        Err("not a supported password hash: use $argon2id$… or $6$… (plain-text passwords are not accepted)")
    }
}

impl EmailConfig {
    /// Checks every field and returns all problems at once, each with its field path.
    pub fn validate(&self) -> Result<(), SmtpError> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: &str| {
            problems.push(ConfigProblem {
                field,
                message: message.to_owned(),
            })
        };
        if let Err(reason) = validate_domain_name(&self.hostname) {
            problem(
                "email.hostname".into(),
                &format!("not a host name ({reason})"),
            );
        }
        let ports = [
            ("smtp", self.ports.smtp),
            ("submission", self.ports.submission),
            ("smtps", self.ports.smtps),
        ];
        for (index, (name, port)) in ports.iter().enumerate() {
            if *port == Some(0) {
                problem(
                    format!("email.ports.{name}"),
                    "port 0 is not a listening port",
                );
            }
            if let Some((other, _)) = ports[..index]
                .iter()
                .find(|(_, other_port)| port.is_some() && other_port == port)
            {
                problem(
                    format!("email.ports.{name}"),
                    &format!("same port as email.ports.{other}"),
                );
            }
        }
        if ports.iter().all(|(_, port)| port.is_none()) {
            problem(
                "email.ports".into(),
                "no port configured: the server would not listen",
            );
        }
        if self.max_message_size == 0 {
            problem("email.max_message_size".into(), "must be at least 1 octet");
        }
        if self.max_recipients == 0 {
            problem("email.max_recipients".into(), "must be at least 1");
        }
        if self.max_errors == 0 {
            problem("email.max_errors".into(), "must be at least 1");
        }
        if self.timeouts.command_seconds == 0 {
            problem(
                "email.timeouts.command_seconds".into(),
                "must be at least 1 second",
            );
        }
        if self.timeouts.data_seconds == 0 {
            problem(
                "email.timeouts.data_seconds".into(),
                "must be at least 1 second",
            );
        }
        if self.greeting_delay_ms >= self.timeouts.command_seconds.saturating_mul(1000) {
            problem(
                "email.greeting_delay_ms".into(),
                "must be shorter than email.timeouts.command_seconds",
            );
        }
        for (index, user) in self.users.iter().enumerate() {
            if user.username.is_empty() || user.username.contains(['\0', '\r', '\n']) {
                problem(
                    format!("email.users[{index}].username"),
                    "must be non-empty without NUL, CR or LF",
                );
            }
            if self.users[..index]
                .iter()
                .any(|other| other.username == user.username)
            {
                problem(
                    format!("email.users[{index}].username"),
                    &format!("duplicate user {:?}", user.username),
                );
            }
            if let Err(reason) = hash_scheme(&user.password_hash) {
                problem(format!("email.users[{index}].password_hash"), reason);
            }
        }
        for (index, domain) in self.local_domains.iter().enumerate() {
            if let Err(reason) = validate_domain_name(domain) {
                problem(
                    format!("email.local_domains[{index}]"),
                    &format!("{domain:?} is not a domain ({reason})"),
                );
            }
            if self.local_domains[..index]
                .iter()
                .any(|other| other.eq_ignore_ascii_case(domain))
            {
                problem(
                    format!("email.local_domains[{index}]"),
                    &format!("duplicate domain {domain:?}"),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SmtpError::InvalidConfig(problems))
        }
    }

    /// The immutable per-session snapshot. `tls_available` says whether the shard has a
    /// certificate for STARTTLS (it controls whether STARTTLS is advertised).
    pub fn session_config(&self, tls_available: bool) -> SessionConfig {
        SessionConfig {
            hostname: self.hostname.clone(),
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_errors: self.max_errors,
            command_timeout: Duration::from_secs(self.timeouts.command_seconds),
            data_timeout: Duration::from_secs(self.timeouts.data_seconds),
            greeting_delay: Duration::from_millis(self.greeting_delay_ms),
            auth_without_tls: self.auth_without_tls,
            tls_available,
            relay_networks: self.relay_networks.clone(),
            local_domains: self
                .local_domains
                .iter()
                .map(|domain| domain.to_lowercase())
                .collect(),
        }
    }

    /// The user directory for `AUTH`.
    pub fn user_directory(&self) -> UserDirectory {
        UserDirectory {
            users: self
                .users
                .iter()
                .map(|user| (user.username.clone(), user.password_hash.clone()))
                .collect(),
        }
    }
}

/// What a session needs from the configuration, resolved into ready-to-use types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our host name.
    pub hostname: String,
    /// Largest message in octets (`SIZE`, `552 5.3.4`).
    pub max_message_size: u64,
    /// Most recipients per message (`452 4.5.3`).
    pub max_recipients: u32,
    /// Error replies before `421 4.7.0` and close.
    pub max_errors: u32,
    /// Inactivity limit while waiting for a command line.
    pub command_timeout: Duration,
    /// Inactivity limit while reading message data.
    pub data_timeout: Duration,
    /// Delay before the greeting; zero disables pre-greeting checks.
    pub greeting_delay: Duration,
    /// Offer `AUTH` before TLS.
    pub auth_without_tls: bool,
    /// A certificate is available: advertise and accept `STARTTLS`.
    pub tls_available: bool,
    /// Client networks that may relay without `AUTH`.
    pub relay_networks: Vec<IpNet>,
    /// Lower-cased local domains.
    pub local_domains: Vec<String>,
}

impl SessionConfig {
    /// A configuration with the documented defaults for `hostname`, for tests and benches.
    pub fn with_defaults(hostname: &str) -> SessionConfig {
        EmailConfig {
            hostname: hostname.to_owned(),
            ports: EmailPorts::default(),
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_errors: default_max_errors(),
            timeouts: EmailTimeouts::default(),
            greeting_delay_ms: 0,
            auth_without_tls: false,
            users: Vec::new(),
            relay_networks: default_relay_networks(),
            local_domains: Vec::new(),
        }
        .session_config(true)
    }

    /// True when `domain` (any case) is one of ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|local| local.eq_ignore_ascii_case(domain))
    }

    /// True when `ip` is inside a relay network.
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|net| net.contains(&ip))
    }
}

/// The SHA-crypt specification's test vector: verified (result ignored) for unknown users.
const TIMING_DUMMY_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

/// Username → password hash, verified with argon2 or SHA-crypt.
///
/// Verification is deliberately slow (that is the point of these hashes); a shard may
/// want to run it off its event loop before calling `Session::auth_result`.
#[derive(Clone, Default)]
pub struct UserDirectory {
    users: HashMap<String, String>,
}

impl fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserDirectory")
            .field("users", &self.users.len())
            .finish()
    }
}

/// Checks that `hash` is a password hash [`UserDirectory`] can verify (argon2 PHC string or
/// SHA-crypt `$6$`/`$5$`); the error says what is wrong. Shared with other config sections
/// that hold users (the admin API's `[admin] users`).
pub fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    hash_scheme(hash).map(|_| ())
}

impl UserDirectory {
    /// A directory of `(username, password hash)` pairs (hashes checked with
    /// [`check_password_hash`] by whoever validated them).
    pub fn from_users(users: impl IntoIterator<Item = (String, String)>) -> UserDirectory {
        UserDirectory { users: users.into_iter().collect() }
    }

    /// True when `username` exists and `password` matches its hash. Unknown users,
    /// malformed hashes and wrong passwords are all simply `false`.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        let Some(hash) = self.users.get(username) else {
            // Spend comparable work for unknown users so timing does not reveal which
            // user names exist.
            let _ = ShaCrypt::default().verify_password(password, TIMING_DUMMY_HASH);
            return false;
        };
        match hash_scheme(hash) {
            Ok(HashScheme::Argon2) => argon2::PasswordHash::new(hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok()),
            Ok(HashScheme::ShaCrypt) => ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{CustomizedPasswordHasher as _, Params};

    /// The reference vector from the SHA-crypt specification.
    const SHA512_HELLO_WORLD: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

    fn cheap_argon2id(password: &[u8]) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        Argon2::default()
            .hash_password_with_params(password, b"saltsaltsaltsalt", params)
            .unwrap()
            .to_string()
    }

    fn parse(text: &str) -> EmailConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse("hostname = \"mx.example.com\"");
        assert_eq!(config.max_message_size, 50 * 1024 * 1024);
        assert_eq!(config.ports.smtp, Some(2525));
        assert_eq!(config.timeouts.command_seconds, 300);
        assert!(config.validate().is_ok());
        let session = config.session_config(false);
        assert!(session.is_relay_client("127.0.0.1".parse().unwrap()));
        assert!(!session.is_relay_client("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<EmailConfig>("hostname = \"a\"\nmax_mesage_size = 1").is_err());
        assert!(
            toml::from_str::<EmailConfig>("hostname = \"a\"\n[timeouts]\ncommand = 1").is_err()
        );
    }

    #[test]
    fn validate_reports_every_problem_with_field_names() {
        let config = parse(
            r#"
            hostname = "bad host"
            max_message_size = 0
            max_recipients = 0
            local_domains = ["example.com", "EXAMPLE.com", "bad_domain"]
            relay_networks = ["10.0.0.0/8"]
            [ports]
            smtp = 25
            submission = 25
            [timeouts]
            data_seconds = 0
            [[users]]
            username = "alice"
            password_hash = "hunter2"
            [[users]]
            username = "alice"
            password_hash = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
            "#,
        );
        let Err(SmtpError::InvalidConfig(problems)) = config.validate() else {
            panic!("expected problems");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "email.hostname",
                "email.ports.submission",
                "email.max_message_size",
                "email.max_recipients",
                "email.timeouts.data_seconds",
                "email.users[0].password_hash",
                "email.users[1].username",
                "email.local_domains[1]",
                "email.local_domains[2]",
            ]
        );
        assert!(problems[5].message.contains("plain-text"));
    }

    #[test]
    fn verifies_sha512_crypt_reference_vector() {
        let directory = parse(&format!(
            "hostname = \"h\"\n[[users]]\nusername = \"alice\"\npassword_hash = \"{SHA512_HELLO_WORLD}\""
        ))
        .user_directory();
        assert!(directory.verify("alice", b"Hello world!"));
        assert!(!directory.verify("alice", b"Hello world"));
        assert!(!directory.verify("bob", b"Hello world!"));
    }

    #[test]
    fn verifies_argon2id() {
        let hash = cheap_argon2id(b"correct horse");
        assert!(hash.starts_with("$argon2id$"));
        let config = parse(&format!(
            "hostname = \"h\"\n[[users]]\nusername = \"bob\"\npassword_hash = \"{hash}\""
        ));
        assert!(config.validate().is_ok());
        let directory = config.user_directory();
        assert!(directory.verify("bob", b"correct horse"));
        assert!(!directory.verify("bob", b"battery staple"));
    }

    #[test]
    fn debug_output_never_shows_hashes() {
        let config = parse(&format!(
            "hostname = \"h\"\n[[users]]\nusername = \"alice\"\npassword_hash = \"{SHA512_HELLO_WORLD}\""
        ));
        assert!(!format!("{config:?}").contains("saltstring"));
    }
}
