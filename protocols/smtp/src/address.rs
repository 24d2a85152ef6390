//! Envelope addresses: [`Mailbox`], [`MailDomain`], [`ReversePath`] and [`ForwardPath`].
//!
//! Owns: RFC 5321 §4.1.2 address syntax (dot-string or quoted-string local parts, domain
//! names or address literals, source routes accepted and dropped per §C) with RFC 6531
//! UTF-8 extensions, and the §4.5.3.1 size limits. A `Mailbox` that exists is syntactically
//! valid, so later code (routing, queue) never re-checks raw text.
//! Does not own: deciding whether UTF-8 is allowed in a transaction (the parser records
//! [`Mailbox::is_ascii`]; the command and session layers enforce SMTPUTF8), or whether an
//! address exists (the caller's routes decide that).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_OCTETS: usize = 64;
/// Longest domain, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_OCTETS: usize = 255;
/// Longest path including the angle brackets, in octets (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH_OCTETS: usize = 256;

/// The part of a mailbox after the `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MailDomain {
    /// A domain name, as written (may contain UTF-8 U-labels).
    Name(String),
    /// An IPv4 address literal, `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// An IPv6 address literal, `[IPv6:2001:db8::1]`.
    Ipv6(Ipv6Addr),
    /// A general address literal, `[tag:content]`.
    General {
        /// The standardized tag.
        tag: String,
        /// The literal's content.
        content: String,
    },
}

impl fmt::Display for MailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailDomain::Name(name) => f.write_str(name),
            MailDomain::Ipv4(ip) => write!(f, "[{ip}]"),
            MailDomain::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            MailDomain::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// A syntactically valid `local-part@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local_part: String,
    domain: MailDomain,
}

impl Mailbox {
    /// Parses `local-part@domain` (no angle brackets). The error is a short reason
    /// suitable for a `501` reply.
    pub fn parse(text: &str) -> Result<Mailbox, &'static str> {
        let at = find_domain_separator(text).ok_or("missing @domain")?;
        let (local_part, domain) = (&text[..at], &text[at + 1..]);
        validate_local_part(local_part)?;
        let domain = parse_domain(domain)?;
        Ok(Mailbox {
            local_part: local_part.to_owned(),
            domain,
        })
    }

    /// The local part exactly as sent (quoted strings keep their quotes).
    pub fn local_part(&self) -> &str {
        &self.local_part
    }

    /// The domain part.
    pub fn domain(&self) -> &MailDomain {
        &self.domain
    }

    /// The domain name in lower case, or `None` for address literals. This is what
    /// local-domain and relay checks compare against.
    pub fn domain_name_lowercase(&self) -> Option<String> {
        match &self.domain {
            MailDomain::Name(name) => Some(name.to_lowercase()),
            _ => None,
        }
    }

    /// True when the whole address is ASCII (no SMTPUTF8 needed).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.to_string().is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The `MAIL FROM` path: a mailbox, or the null path `<>` used by bounces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: the null reverse path (delivery status notifications).
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// The mailbox, if this is not the null path.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(mailbox) => Some(mailbox),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(mailbox) => write!(f, "<{mailbox}>"),
        }
    }
}

/// The `RCPT TO` path: a mailbox, or the bare `<postmaster>` every server must accept
/// (RFC 5321 §4.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain: the local postmaster.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// The mailbox, if this is not the bare postmaster.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(mailbox) => Some(mailbox),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Mailbox(mailbox) => write!(f, "<{mailbox}>"),
        }
    }
}

/// Splits a path argument such as `<a@b> SIZE=10` into the text between the brackets
/// (source route removed) and the rest (parameters). Also accepts a bare address without
/// brackets, as Postfix does by default.
pub(crate) fn split_path(argument: &str) -> Result<(&str, &str), &'static str> {
    let argument = argument.trim_start_matches(' ');
    let (inner, rest) = if let Some(after_open) = argument.strip_prefix('<') {
        let close = find_unquoted(after_open, b'>').ok_or("missing closing >")?;
        (&after_open[..close], &after_open[close + 1..])
    } else {
        match argument.find(' ') {
            Some(space) => (&argument[..space], &argument[space..]),
            None => (argument, ""),
        }
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err("garbage after address");
    }
    if inner.len() + 2 > MAX_PATH_OCTETS {
        return Err("address too long");
    }
    Ok((strip_source_route(inner)?, rest.trim_start_matches(' ')))
}

/// RFC 5321 §C: `<@relay1,@relay2:user@domain>` — the route is accepted and ignored.
fn strip_source_route(inner: &str) -> Result<&str, &'static str> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let colon = find_unquoted(inner, b':').ok_or("bad source route")?;
    for hop in inner[..colon].split(',') {
        let domain = hop.strip_prefix('@').ok_or("bad source route")?;
        parse_domain(domain).map_err(|_| "bad source route")?;
    }
    Ok(&inner[colon + 1..])
}

/// Index of the first `needle` outside a quoted string (honouring backslash escapes).
fn find_unquoted(text: &str, needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && byte == needle {
            return Some(index);
        }
    }
    None
}

/// Index of the `@` separating local part and domain: the last one outside quotes.
fn find_domain_separator(text: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut found = None;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && byte == b'@' {
            found = Some(index);
        }
    }
    found
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn validate_local_part(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > MAX_LOCAL_PART_OCTETS {
        return Err("local part longer than 64 octets");
    }
    if let Some(quoted) = local.strip_prefix('"') {
        let body = quoted
            .strip_suffix('"')
            .ok_or("unterminated quoted string")?;
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) if (' '..='~').contains(&escaped) => {}
                    _ => return Err("bad quoted-pair in local part"),
                },
                '"' => return Err("unescaped quote in local part"),
                ' '..='~' => {}
                c if !c.is_ascii() => {}
                _ => return Err("control character in local part"),
            }
        }
        return Ok(());
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("empty atom in local part");
        }
        if !atom.chars().all(is_atext) {
            return Err("invalid character in local part");
        }
    }
    Ok(())
}

pub(crate) fn parse_domain(domain: &str) -> Result<MailDomain, &'static str> {
    if domain.is_empty() {
        return Err("empty domain");
    }
    if domain.len() > MAX_DOMAIN_OCTETS {
        return Err("domain longer than 255 octets");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal
            .strip_suffix(']')
            .ok_or("unterminated address literal")?;
        if let Some(v6) = literal
            .strip_prefix("IPv6:")
            .or_else(|| literal.strip_prefix("ipv6:"))
        {
            return v6
                .parse()
                .map(MailDomain::Ipv6)
                .map_err(|_| "bad IPv6 literal");
        }
        if let Some((tag, content)) = literal.split_once(':') {
            let tag_ok = !tag.is_empty()
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !tag.ends_with('-');
            let content_ok =
                !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
            return if tag_ok && content_ok {
                Ok(MailDomain::General {
                    tag: tag.to_owned(),
                    content: content.to_owned(),
                })
            } else {
                Err("bad address literal")
            };
        }
        return literal
            .parse()
            .map(MailDomain::Ipv4)
            .map_err(|_| "bad IPv4 literal");
    }
    validate_domain_name(domain)?;
    Ok(MailDomain::Name(domain.to_owned()))
}

/// RFC 5321 `Domain`: dot-separated labels of letters, digits and inner hyphens
/// (non-ASCII letters allowed as U-labels), each at most 63 octets.
pub(crate) fn validate_domain_name(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("empty domain");
    }
    if domain.len() > MAX_DOMAIN_OCTETS {
        return Err("domain longer than 255 octets");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label in domain");
        }
        if label.len() > 63 {
            return Err("domain label longer than 63 octets");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with hyphen");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        {
            return Err("invalid character in domain");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mailbox() {
        let mailbox = Mailbox::parse("john.doe@Example.COM").unwrap();
        assert_eq!(mailbox.local_part(), "john.doe");
        assert_eq!(
            mailbox.domain_name_lowercase().as_deref(),
            Some("example.com")
        );
        assert!(mailbox.is_ascii());
        assert_eq!(mailbox.to_string(), "john.doe@Example.COM");
    }

    #[test]
    fn quoted_local_part_with_at_and_escapes() {
        let mailbox = Mailbox::parse(r#""john @ \"doe\""@example.com"#).unwrap();
        assert_eq!(mailbox.local_part(), r#""john @ \"doe\"""#);
        assert!(Mailbox::parse(r#""unterminated@example.com"#).is_err());
        assert!(Mailbox::parse("\"a\"b\"@example.com").is_err());
    }

    #[test]
    fn address_literals() {
        let v4 = Mailbox::parse("a@[192.0.2.1]").unwrap();
        assert_eq!(v4.domain(), &MailDomain::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        let v6 = Mailbox::parse("a@[IPv6:2001:db8::1]").unwrap();
        assert!(matches!(v6.domain(), MailDomain::Ipv6(_)));
        assert!(Mailbox::parse("a@[300.0.0.1]").is_err());
        assert!(Mailbox::parse("a@[IPv6:zz]").is_err());
        assert!(v4.domain_name_lowercase().is_none());
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "noat",
            "@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@-example.com",
            "a@example..com",
            "a@exa_mple.com",
            "a@",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad} should be rejected");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(
            Mailbox::parse(&long_local),
            Err("local part longer than 64 octets")
        );
    }

    #[test]
    fn utf8_mailbox_is_flagged() {
        let mailbox = Mailbox::parse("josé@exämple.de").unwrap();
        assert!(!mailbox.is_ascii());
    }

    #[test]
    fn split_path_handles_brackets_routes_and_params() {
        assert_eq!(split_path("<a@b.c> SIZE=10"), Ok(("a@b.c", "SIZE=10")));
        assert_eq!(split_path(" <a@b.c>"), Ok(("a@b.c", "")));
        assert_eq!(split_path("<@r1.net,@r2.net:a@b.c>"), Ok(("a@b.c", "")));
        assert_eq!(
            split_path("a@b.c BODY=8BITMIME"),
            Ok(("a@b.c", "BODY=8BITMIME"))
        );
        assert_eq!(split_path(r#"<"x>y"@b.c>"#), Ok((r#""x>y"@b.c"#, "")));
        assert!(split_path("<a@b.c").is_err());
        assert!(split_path("<a@b.c>x").is_err());
        assert!(split_path("<@bad_route:a@b.c>").is_err());
    }

    #[test]
    fn paths_display_with_brackets() {
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(ForwardPath::Postmaster.to_string(), "<postmaster>");
    }
}
