//! The HTTP parts of the config: the `[http]` section, HTTP route actions (`redirect`,
//! `serve`, `forward` with `protocol = "http"`), `match.path` prefixes and `[routes.limits]`.
//!
//! Owns: the typed settings ([`HttpSettings`], [`Redirect`], [`Serve`], [`PathPrefix`],
//! [`RouteLimits`]) and their validation, reported like every other config problem (file,
//! route, field). Does not own: what the shards do with them (see `crate::http`).

use std::path::PathBuf;
use std::time::Duration;

use shardgate_http1::ratelimit::{Rate, RateLimitConfig};
use shardgate_http1::reply::RedirectTarget;
use shardgate_http1::Limits;

use super::problems::ProblemList;
use super::schema::{OneOrMany, RawHttp, RawLimits};
use super::{parse_duration, TlsMode};

/// `[http]`: timeouts and limits of every HTTP route (the defaults follow nginx and HAProxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// A client must send a whole request head within this time (408 after it; nginx
    /// `client_header_timeout`).
    pub header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this (nginx `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// A backend must answer (and keep sending) within this time (504 after it; nginx
    /// `proxy_read_timeout`, HAProxy `timeout server`).
    pub upstream_timeout: Duration,
    /// Idle pooled backend connections are closed after this.
    pub upstream_keepalive_timeout: Duration,
    /// Most idle backend connections each shard keeps per target (nginx upstream `keepalive`).
    pub upstream_idle_per_target: usize,
    /// Request head limits (414, 431) and the body limit (413).
    pub limits: Limits,
    /// Keep the `X-Forwarded-For` / `Forwarded` chain clients send (they are trusted proxies)
    /// instead of starting it at the client.
    pub trust_forwarded: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            upstream_timeout: Duration::from_secs(60),
            upstream_keepalive_timeout: Duration::from_secs(60),
            upstream_idle_per_target: 64,
            limits: Limits::default(),
            trust_forwarded: false,
        }
    }
}

/// Checks `[http]`.
pub(crate) fn validate_http(problems: &mut ProblemList, raw: RawHttp) -> HttpSettings {
    let defaults = HttpSettings::default();
    let mut duration = |field: &str, value: Option<String>, default: Duration| match value.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            problems.section("http", field, "must be longer than zero");
            default
        }
        Some(Err(e)) => {
            problems.section("http", field, e);
            default
        }
    };
    let header_timeout = duration("header_timeout", raw.header_timeout, defaults.header_timeout);
    let keepalive_timeout = duration("keepalive_timeout", raw.keepalive_timeout, defaults.keepalive_timeout);
    let upstream_timeout = duration("upstream_timeout", raw.upstream_timeout, defaults.upstream_timeout);
    let upstream_keepalive_timeout =
        duration("upstream_keepalive_timeout", raw.upstream_keepalive_timeout, defaults.upstream_keepalive_timeout);
    let mut count = |field: &str, value: Option<i64>, min: i64, max: i64, default: usize| match value {
        None => default,
        Some(n) if (min..=max).contains(&n) => n as usize,
        Some(n) => {
            problems.section("http", field, format!("{n} is outside {min}-{max}"));
            default
        }
    };
    let upstream_idle_per_target = count("upstream_idle_per_target", raw.upstream_idle_per_target, 0, 100_000, defaults.upstream_idle_per_target);
    let max_start_line = count("max_request_line", raw.max_request_line, 64, 1 << 20, defaults.limits.max_start_line);
    let max_head_bytes = count("max_header_bytes", raw.max_header_bytes, 256, 1 << 22, defaults.limits.max_head_bytes);
    let max_headers = count("max_headers", raw.max_headers, 1, shardgate_http1::MAX_HEADERS_CAP as i64, defaults.limits.max_headers);
    let max_body_bytes = match raw.max_body_size {
        None => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            problems.section("http", "max_body_size", format!("{n} is not a positive byte count (leave it out for no limit)"));
            None
        }
    };
    HttpSettings {
        header_timeout,
        keepalive_timeout,
        upstream_timeout,
        upstream_keepalive_timeout,
        upstream_idle_per_target,
        limits: Limits { max_start_line, max_head_bytes, max_headers, max_body_bytes },
        trust_forwarded: raw.trust_forwarded.unwrap_or(false),
    }
}

/// What a `forward` route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Bytes are relayed as they come (the default).
    Tcp,
    /// HTTP/1.1: requests are parsed, routed by Host and path, and proxied with keep-alive.
    Http,
}

/// The `redirect` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 307 or 308.
    pub status: u16,
    /// Where to, with `{host}` and `{path}` filled in per request.
    pub to: RedirectTarget,
    /// TLS on this route (`terminate` for HTTPS; never passthrough).
    pub tls: TlsMode,
}

/// The `serve` action: static files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    /// The folder served; requests can never leave it.
    pub root: PathBuf,
    /// TLS on this route (`terminate` for HTTPS; never passthrough).
    pub tls: TlsMode,
}

/// One `match.path` entry: `/api` matches `/api`, `/api/...` and `/api?...` (whole path
/// segments); `/api*` is a plain prefix (also `/apis`); `/` matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    prefix: String,
    segment_aware: bool,
}

impl PathPrefix {
    /// Parses one entry; it must start with `/`.
    pub fn parse(text: &str) -> Result<PathPrefix, String> {
        let text = text.trim();
        if !text.starts_with('/') {
            return Err(format!("`{text}` must start with `/`"));
        }
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("`{text}` contains a space or control character"));
        }
        let (prefix, segment_aware) = match text.strip_suffix('*') {
            Some(p) => (p, false),
            None => (text, !text.ends_with('/')),
        };
        if prefix.contains('*') {
            return Err(format!("`{text}`: `*` is only allowed at the end"));
        }
        Ok(PathPrefix { prefix: prefix.to_string(), segment_aware })
    }

    /// Whether the request path (origin form, query included) falls under this prefix.
    pub fn matches(&self, path: &[u8]) -> bool {
        let prefix = self.prefix.as_bytes();
        if !path.starts_with(prefix) {
            return false;
        }
        !self.segment_aware || matches!(path.get(prefix.len()), None | Some(b'/') | Some(b'?'))
    }

    /// Length of the prefix: longer prefixes are more specific and are tried first.
    pub fn specificity(&self) -> usize {
        self.prefix.len()
    }
}

/// Parses `match.path`.
pub(crate) fn validate_paths(problems: &mut ProblemList, label: &str, raw: OneOrMany) -> Vec<PathPrefix> {
    let items = raw.items();
    if items.is_empty() {
        problems.route(label, "match.path", "is empty: leave it out to match every path");
    }
    let mut paths = Vec::new();
    for item in items {
        match PathPrefix::parse(item) {
            Ok(p) => paths.push(p),
            Err(e) => problems.route(label, "match.path", e),
        }
    }
    paths
}

/// `[routes.limits]`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteLimits {
    /// nginx `limit_req` per client IP: 429 with `Retry-After` beyond it.
    pub requests: Option<RateLimitConfig>,
    /// nginx `limit_conn` per client IP: 429 beyond it (per shard share).
    pub connections_per_ip: Option<u32>,
}

/// Most client addresses each shard tracks per rate-limited route.
const RATE_LIMIT_KEYS: usize = 100_000;

pub(crate) fn validate_limits(problems: &mut ProblemList, label: &str, raw: RawLimits) -> RouteLimits {
    let requests = match raw.requests.as_deref().map(str::trim) {
        None => {
            if raw.burst.is_some() || raw.nodelay.is_some() {
                problems.route(label, "limits.requests", "missing: `burst` and `nodelay` need a rate like \"10r/s\"");
            }
            None
        }
        Some(text) => match Rate::parse(text) {
            Ok(rate) => {
                let burst = match raw.burst {
                    None => 0,
                    Some(b) if (0..=1_000_000).contains(&b) => b as u32,
                    Some(b) => {
                        problems.route(label, "limits.burst", format!("{b} is outside 0-1000000"));
                        0
                    }
                };
                Some(RateLimitConfig { rate, burst, nodelay: raw.nodelay.unwrap_or(false), max_keys: RATE_LIMIT_KEYS })
            }
            Err(_) => {
                problems.route(label, "limits.requests", format!("`{text}` is not a rate like \"10r/s\" or \"600r/m\""));
                None
            }
        },
    };
    let connections_per_ip = match raw.connections_per_ip {
        None => None,
        Some(n) if n > 0 && n <= i64::from(u32::MAX) => Some(n as u32),
        Some(n) => {
            problems.route(label, "limits.connections_per_ip", format!("{n} is not a positive count"));
            None
        }
    };
    RouteLimits { requests, connections_per_ip }
}

/// Parses the `redirect` action's fields.
pub(crate) fn validate_redirect(problems: &mut ProblemList, label: &str, status: Option<i64>, to: Option<String>, tls: TlsMode) -> Option<Redirect> {
    let status = match status {
        None => 301,
        Some(s @ (301 | 302 | 307 | 308)) => s as u16,
        Some(s) => {
            problems.route(label, "action.status", format!("{s} is not a redirect status (301, 302, 307 or 308)"));
            return None;
        }
    };
    let Some(to) = to else {
        problems.route(label, "action.to", "missing: where to redirect, e.g. \"https://{host}{path}\"");
        return None;
    };
    match RedirectTarget::parse(&to) {
        Ok(target) => Some(Redirect { status, to: target, tls }),
        Err(e) => {
            problems.route(label, "action.to", e.to_string());
            None
        }
    }
}

/// Parses the `serve` action's fields; the root must be an existing folder.
pub(crate) fn validate_serve(problems: &mut ProblemList, label: &str, root: Option<String>, tls: TlsMode) -> Option<Serve> {
    let Some(root) = root.filter(|r| !r.trim().is_empty()) else {
        problems.route(label, "action.root", "missing: the folder to serve files from");
        return None;
    };
    let path = PathBuf::from(root.trim());
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            let root = std::fs::canonicalize(&path).unwrap_or(path);
            Some(Serve { root, tls })
        }
        Ok(_) => {
            problems.route(label, "action.root", format!("`{}` is not a folder", path.display()));
            None
        }
        Err(e) => {
            problems.route(label, "action.root", format!("`{}` cannot be read: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_match_whole_segments_unless_starred() {
        let api = PathPrefix::parse("/api").expect("valid");
        assert!(api.matches(b"/api"));
        assert!(api.matches(b"/api/users"));
        assert!(api.matches(b"/api?x=1"));
        assert!(!api.matches(b"/apis"));
        assert!(!api.matches(b"/"));
        let star = PathPrefix::parse("/api*").expect("valid");
        assert!(star.matches(b"/apis"));
        let dir = PathPrefix::parse("/static/").expect("valid");
        assert!(dir.matches(b"/static/a.css"));
        assert!(!dir.matches(b"/static"));
        assert!(PathPrefix::parse("/").expect("valid").matches(b"/anything"));
        assert!(PathPrefix::parse("api").is_err());
        assert!(PathPrefix::parse("/a*b").is_err());
    }
}
