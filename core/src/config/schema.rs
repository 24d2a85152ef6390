//! The config file as written: plain serde types mirroring the TOML, before any checking.
//!
//! Nothing here is trusted. [`super::validate`] turns these into the typed [`super::Config`];
//! unknown keys are collected (not rejected one at a time) with `serde_ignored`.

use serde::Deserialize;

use super::ports::PortsValue;

/// The `[runtime]` section.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct RawRuntime {
    /// `"auto"` or a list of CPU ids for the shards.
    pub shards: Option<CpuChoice>,
    /// `"auto"`, `"none"` (float) or a CPU id for the control core.
    pub control_cpu: Option<CpuChoice>,
    pub data_dir: Option<String>,
    pub drain_timeout: Option<String>,
    pub spin_before_park: Option<String>,
}

/// A CPU selection: `"auto"`/`"none"`, one CPU id, or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum CpuChoice {
    Word(String),
    One(i64),
    List(Vec<i64>),
}

/// The `[proxy]` section.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct RawProxy {
    /// Addresses the route ports are listened on.
    pub listen: Option<Vec<String>>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    pub priority: Option<i64>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub action: Option<RawAction>,
    pub security: Option<RawSecurity>,
    pub limits: Option<RawLimits>,
}

/// `[routes.limits]`: nginx `limit_req` / `limit_conn` per client IP (HTTP routes).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawLimits {
    /// `10r/s` or `600r/m`.
    pub requests: Option<String>,
    pub burst: Option<i64>,
    pub nodelay: Option<bool>,
    pub connections_per_ip: Option<i64>,
}

/// The `[http]` section: HTTP/1.1 timeouts and limits for every HTTP route.
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct RawHttp {
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub upstream_timeout: Option<String>,
    pub upstream_keepalive_timeout: Option<String>,
    pub upstream_idle_per_target: Option<i64>,
    pub max_request_line: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_body_size: Option<i64>,
    pub trust_forwarded: Option<bool>,
}

/// `[routes.match]`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawMatch {
    pub ports: Option<PortsValue>,
    pub domains: Option<OneOrMany>,
    pub client_ip: Option<OneOrMany>,
    /// Path prefixes (HTTP routes).
    pub path: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `[routes.action]`: one flat table for every action type; which fields a type allows is
/// checked in validation so the error can say "not allowed for type X".
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawAction {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub targets: Option<Vec<RawTarget>>,
    pub balance: Option<String>,
    pub connect_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub proxy_protocol: Option<String>,
    pub tls: Option<RawTls>,
    /// `tcp` (default) or `http` for `forward`.
    pub protocol: Option<String>,
    /// `redirect`: 301, 302, 307 or 308.
    pub status: Option<i64>,
    /// `redirect`: the target, with `{host}` and `{path}` placeholders.
    pub to: Option<String>,
    /// `serve`: the folder files are served from.
    pub root: Option<String>,
}

/// One forward target.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawTarget {
    pub host: Option<String>,
    pub port: Option<TargetPortValue>,
}

/// A target port: a number or `"preserve"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TargetPortValue {
    Number(i64),
    Word(String),
}

/// `tls = { mode = ..., certificate = ... }` on an action.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawTls {
    pub mode: Option<String>,
    pub certificate: Option<String>,
}

/// One `[[certificates]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawCertificate {
    pub name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub default: Option<bool>,
}

/// `[routes.security]`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawSecurity {
    pub ip_allow: Option<Vec<String>>,
    pub ip_block: Option<Vec<String>>,
}
