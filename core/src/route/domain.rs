//! Domain patterns of `match.domains`: exact names and `*.` globs, matched against TLS SNI.
//!
//! `*.example.com` matches any name below `example.com` (one or more labels, as nginx's
//! `*.example.com`), never `example.com` itself; `*` alone matches every name. Matching is
//! ASCII case-insensitive; a trailing dot is ignored.

use std::fmt;

/// One validated domain pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainPattern {
    /// Matches this name only (stored lower-case, no trailing dot).
    Exact(String),
    /// Matches names ending in `.{suffix}` (stored lower-case).
    Subdomains(String),
    /// Matches every server name.
    Any,
}

impl DomainPattern {
    /// Parses a pattern as written in config, or says why it is not one.
    pub fn parse(text: &str) -> Result<DomainPattern, String> {
        let lowered = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if lowered == "*" {
            return Ok(DomainPattern::Any);
        }
        let (wild, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lowered.clone()),
        };
        if name.contains('*') {
            return Err(format!(
                "`{text}`: a wildcard is only allowed as the whole leftmost label, as in `*.example.com`"
            ));
        }
        validate_hostname(&name).map_err(|why| format!("`{text}`: {why}"))?;
        Ok(if wild { DomainPattern::Subdomains(name) } else { DomainPattern::Exact(name) })
    }

    /// Whether `server_name` (already lower-case, as SNI is normalised) matches.
    pub fn matches(&self, server_name: &str) -> bool {
        let name = server_name.strip_suffix('.').unwrap_or(server_name);
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(exact) => name.eq_ignore_ascii_case(exact),
            DomainPattern::Subdomains(suffix) => {
                name.len() > suffix.len() + 1
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => write!(f, "*"),
            DomainPattern::Exact(n) => write!(f, "{n}"),
            DomainPattern::Subdomains(n) => write!(f, "*.{n}"),
        }
    }
}

/// Checks RFC 1123 host name syntax (letters, digits, hyphens, underscores tolerated as in
/// real-world service names; labels 1-63 bytes; whole name at most 253).
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err("name longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row?)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with a hyphen"));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("character `{c}` is not allowed in a host name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcards() {
        let exact = DomainPattern::parse("API.Example.com.").expect("valid");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wild = DomainPattern::parse("*.example.com").expect("valid");
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(DomainPattern::parse("*").expect("any").matches("anything.at.all"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(DomainPattern::parse("a.*.com").expect_err("mid wildcard").contains("leftmost"));
        assert!(DomainPattern::parse("exa mple.com").expect_err("space").contains("not allowed"));
        assert!(DomainPattern::parse("a..b").expect_err("empty label").contains("empty label"));
        assert!(DomainPattern::parse("-a.com").expect_err("hyphen").contains("hyphen"));
    }
}
