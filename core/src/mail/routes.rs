//! `[[email.routes]]` evaluated for one recipient, in two steps.
//!
//! 1. At `RCPT` ([`route_recipient`]): routes are tried highest priority first; a route
//!    whose envelope criteria (recipient and sender globs, client network, authenticated)
//!    fail is skipped. The first matching route *without* content criteria ends the search.
//!    If no route with content criteria matched before it, the recipient is decided now:
//!    accepted with that route, or refused with the route's `reject` code. Otherwise the
//!    recipient is accepted provisionally with the list of candidates.
//! 2. After `DATA` ([`resolve_candidates`]): the first candidate whose content criteria
//!    (headers, subject, size, attachments; see [`ContentFacts`]) hold decides. A content
//!    decision to reject, or no route at all, refuses the whole message with that reply
//!    (SMTP cannot refuse one recipient after `DATA`).
//!
//! Owns: the matching rules and [`ContentScanner`], which gathers the content facts while the
//! message streams to disk (the header block, up to [`MAX_HEADER_BYTES`], parsed with
//! mail-parser; attachments recognised by a `Content-Disposition: attachment` — or `inline`
//! with a `filename` — part header anywhere in the message). Does not own: the routes' config
//! (`crate::config::email`), the session, or the queue.

use std::net::IpAddr;

use crate::config::{EmailAction, EmailMatch, EmailRoute, HeaderValueRule};

/// The header block is read up to this many octets; header criteria see only these.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What is known at `RCPT` time.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeFacts<'a> {
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// The recipient.
    pub recipient: &'a str,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The client authenticated.
    pub authenticated: bool,
}

/// The `RCPT`-time decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptRouting {
    /// Decided: the route at this index (never a `reject`).
    Routed(usize),
    /// Refused by the `reject` route at this index.
    Rejected(usize),
    /// Routes with content criteria matched first: decide after `DATA` among these (indexes,
    /// in priority order; the last may be one without content criteria).
    Provisional(Vec<usize>),
    /// No route applies: the recipient is refused.
    NoRoute,
}

/// The envelope facts prepared once per decision: addresses lower-cased, client canonical.
struct Prepared {
    sender: String,
    recipient: String,
    client: IpAddr,
    authenticated: bool,
}

fn envelope_matches(matcher: &EmailMatch, facts: &Prepared) -> bool {
    // Cheapest checks first.
    matcher.authenticated.is_none_or(|wanted| wanted == facts.authenticated)
        && matcher.client_ip.as_ref().is_none_or(|nets| nets.iter().any(|n| n.contains(&facts.client)))
        && matcher.recipients.as_ref().is_none_or(|globs| globs.iter().any(|g| g.matches_lowercase(&facts.recipient)))
        && matcher.senders.as_ref().is_none_or(|globs| globs.iter().any(|g| g.matches_lowercase(&facts.sender)))
}

/// Step 1: the decision for one recipient at `RCPT` time.
pub fn route_recipient(routes: &[EmailRoute], facts: &EnvelopeFacts<'_>) -> RcptRouting {
    let facts = Prepared {
        sender: facts.sender.to_lowercase(),
        recipient: facts.recipient.to_lowercase(),
        client: crate::config::canonical_ip(facts.client_ip),
        authenticated: facts.authenticated,
    };
    let mut candidates = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        if !envelope_matches(&route.matcher, &facts) {
            continue;
        }
        if route.matcher.has_content_criteria() {
            candidates.push(index);
            continue;
        }
        if candidates.is_empty() {
            return match route.action {
                EmailAction::Reject { .. } => RcptRouting::Rejected(index),
                _ => RcptRouting::Routed(index),
            };
        }
        candidates.push(index);
        return RcptRouting::Provisional(candidates);
    }
    if candidates.is_empty() {
        RcptRouting::NoRoute
    } else {
        RcptRouting::Provisional(candidates)
    }
}

/// What is known about the content after `DATA`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentFacts {
    /// Content size in octets.
    pub size: u64,
    /// Headers of the top-level header block: (lower-case name, raw value unfolded and trimmed).
    pub headers: Vec<(String, String)>,
    /// The decoded `Subject`, if any.
    pub subject: Option<String>,
    /// An attachment part was seen.
    pub has_attachments: bool,
    /// Inbound check results, when the checks ran (`crate::mail::auth`).
    pub auth: Option<AuthFacts>,
}

/// The inbound check results routes match on (`match.spf`, `match.dkim`, `match.dmarc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFacts {
    /// SPF result.
    pub spf: crate::mail::auth::AuthResult,
    /// DKIM result.
    pub dkim: crate::mail::auth::AuthResult,
    /// DMARC result.
    pub dmarc: crate::mail::auth::AuthResult,
}

/// The `spf`/`dkim`/`dmarc` criteria: each given one must list the message's result; an
/// unchecked message matches none.
fn auth_matches(matcher: &EmailMatch, facts: &ContentFacts) -> bool {
    let wanted = &matcher.auth;
    if wanted.is_empty() {
        return true;
    }
    let Some(auth) = facts.auth else { return false };
    let holds = |list: &Option<Vec<crate::mail::auth::AuthResult>>, result| list.as_ref().is_none_or(|l| l.contains(&result));
    holds(&wanted.spf, auth.spf) && holds(&wanted.dkim, auth.dkim) && holds(&wanted.dmarc, auth.dmarc)
}

fn content_matches(matcher: &EmailMatch, facts: &ContentFacts) -> bool {
    auth_matches(matcher, facts)
        && matcher.size.is_none_or(|range| range.contains(facts.size))
        && matcher.has_attachments.is_none_or(|wanted| wanted == facts.has_attachments)
        && matcher.subject.as_ref().is_none_or(|re| facts.subject.as_deref().is_some_and(|s| re.is_match(s)))
        && matcher.headers.iter().all(|rule| {
            facts.headers.iter().filter(|(name, _)| *name == rule.name).any(|(_, value)| match &rule.value {
                HeaderValueRule::Exact(text) => value == text,
                HeaderValueRule::Regex(re) => re.is_match(value),
            })
        })
}

/// Step 2: the first candidate whose content criteria hold, if any.
pub fn resolve_candidates(routes: &[EmailRoute], candidates: &[usize], facts: &ContentFacts) -> Option<usize> {
    candidates.iter().copied().find(|&index| routes.get(index).is_some_and(|route| content_matches(&route.matcher, facts)))
}

/// Gathers [`ContentFacts`] from message data as it streams by, in bounded memory.
#[derive(Debug, Default)]
pub struct ContentScanner {
    size: u64,
    head: Vec<u8>,
    head_done: bool,
    line: Vec<u8>,
    in_disposition: bool,
    has_attachments: bool,
}

/// Longest line the attachment scan looks at (longer ones are only counted).
const MAX_SCANNED_LINE: usize = 1000;

impl ContentScanner {
    /// A scanner at the start of a message.
    pub fn new() -> ContentScanner {
        ContentScanner::default()
    }

    /// Feeds the next chunk of content.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        if !self.head_done {
            let room = MAX_HEADER_BYTES - self.head.len();
            // Only the new bytes (and the 3 before them) can complete the blank line.
            let from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if let Some(end) = find(&self.head[from..], b"\r\n\r\n") {
                self.head.truncate(from + end + 4);
                self.head_done = true;
            } else if self.head.len() >= MAX_HEADER_BYTES {
                self.head_done = true;
            }
        }
        if self.has_attachments {
            return;
        }
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (piece, after) = rest.split_at(end);
            if self.line.is_empty() {
                self.scan_line(piece);
            } else {
                self.push_partial(piece);
                let line = std::mem::take(&mut self.line);
                self.scan_line(&line);
                self.line = line;
                self.line.clear();
            }
            rest = &after[1..];
        }
        self.push_partial(rest);
    }

    fn push_partial(&mut self, piece: &[u8]) {
        let room = MAX_SCANNED_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// Looks at one line (without its LF). Only part headers matter: a `Content-Disposition`
    /// line and its folded continuations.
    fn scan_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        const HEADER: &[u8] = b"content-disposition:";
        let text = if continuation && self.in_disposition {
            line
        } else if line.len() >= HEADER.len() && line[..HEADER.len()].eq_ignore_ascii_case(HEADER) {
            self.in_disposition = true;
            &line[HEADER.len()..]
        } else {
            self.in_disposition = false;
            return;
        };
        let text = text.to_ascii_lowercase();
        if text.trim_ascii_start().starts_with(b"attachment") || find(&text, b"filename").is_some() {
            self.has_attachments = true;
        }
    }

    /// The facts, once the message is complete.
    pub fn finish(mut self) -> ContentFacts {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan_line(&line);
        }
        let mut facts = ContentFacts { size: self.size, has_attachments: self.has_attachments, ..ContentFacts::default() };
        if let Some(message) = mail_parser::MessageParser::default().parse_headers(&self.head) {
            facts.subject = message.subject().map(str::to_string);
            facts.headers = message
                .headers_raw()
                .map(|(name, value)| {
                    let unfolded: String = value.split(['\r', '\n']).collect::<Vec<_>>().join("");
                    (name.to_ascii_lowercase(), unfolded.trim().to_string())
                })
                .collect();
        }
        facts
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes(text: &str) -> Vec<EmailRoute> {
        let config = Config::parse(&format!("[email]\nhostname = \"mx.example.com\"\n[email.ports]\nsmtp = 2525\n{text}"), "t.toml")
            .expect("valid");
        config.email.expect("email").routes
    }

    fn facts<'a>(recipient: &'a str, authenticated: bool) -> EnvelopeFacts<'a> {
        EnvelopeFacts { sender: "bob@example.org", recipient, client_ip: "192.0.2.7".parse().expect("ip"), authenticated }
    }

    fn scan(message: &[u8], chunk: usize) -> ContentFacts {
        let mut scanner = ContentScanner::new();
        for piece in message.chunks(chunk) {
            scanner.feed(piece);
        }
        scanner.finish()
    }

    const TABLE: &str = r#"
        [[email.routes]]
        name = "local"
        match = { recipients = ["*@example.com"] }
        action = { type = "deliver" }
        [[email.routes]]
        name = "blocked"
        priority = 20
        match = { recipients = "spam@example.com" }
        action = { type = "reject", code = 550, message = "go away" }
        [[email.routes]]
        name = "submission"
        priority = 5
        match = { authenticated = true }
        action = { type = "process" }
        [[email.routes]]
        name = "big"
        priority = 10
        match = { recipients = "*@example.com", size = { min = 100 } }
        action = { type = "forward", host = "127.0.0.1", port = 2626 }
        [[email.routes]]
        name = "lists"
        priority = 15
        match = { recipients = "*@example.com", headers = { "List-Id" = "/announce/" }, subject = "^\\[ann\\]" }
        action = { type = "reject", code = 554, message = "no lists" }
    "#;

    #[test]
    fn envelope_decisions_at_rcpt() {
        let routes = routes(TABLE);
        let name = |i: usize| routes[i].name.as_str();
        match route_recipient(&routes, &facts("spam@example.com", false)) {
            RcptRouting::Rejected(i) => assert_eq!(name(i), "blocked"),
            other => panic!("{other:?}"),
        }
        assert_eq!(route_recipient(&routes, &facts("x@elsewhere.org", false)), RcptRouting::NoRoute);
        match route_recipient(&routes, &facts("x@elsewhere.org", true)) {
            RcptRouting::Routed(i) => assert_eq!(name(i), "submission"),
            other => panic!("{other:?}"),
        }
        match route_recipient(&routes, &facts("alice@EXAMPLE.com", false)) {
            RcptRouting::Provisional(list) => {
                assert_eq!(list.iter().map(|i| name(*i)).collect::<Vec<_>>(), ["lists", "big", "local"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_decides_among_candidates() {
        let routes = routes(TABLE);
        let RcptRouting::Provisional(candidates) = route_recipient(&routes, &facts("alice@example.com", false)) else {
            panic!("provisional")
        };
        let name = |facts: &ContentFacts| resolve_candidates(&routes, &candidates, facts).map(|i| routes[i].name.clone());
        let small = scan(b"Subject: hello\r\nFrom: a@b\r\n\r\nhi\r\n", 7);
        assert_eq!(name(&small).as_deref(), Some("local"));
        let list = scan(b"Subject: [ann] release\r\nList-Id: <announce.example.com>\r\n\r\nhi\r\n", 5);
        assert_eq!(name(&list).as_deref(), Some("lists"));
        let big = scan(&[b"Subject: x\r\n\r\n".as_slice(), &[b'a'; 200]].concat(), 64);
        assert_eq!(name(&big).as_deref(), Some("big"));
    }

    #[test]
    fn scanner_reads_headers_subject_and_attachments() {
        let message = b"Subject: =?utf-8?q?caf=C3=A9?=\r\nX-Spam:  yes \r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition:\r\n attachment; filename=\"a.pdf\"\r\n\r\nAAAA\r\n--b--\r\n";
        let facts = scan(message, 3);
        assert_eq!(facts.subject.as_deref(), Some("café"));
        assert!(facts.headers.contains(&("x-spam".into(), "yes".into())));
        assert!(facts.has_attachments);
        assert_eq!(facts.size, message.len() as u64);
        let plain = scan(b"Subject: hi\r\n\r\nContent-Disposition is just words here\r\n", 4);
        assert!(!plain.has_attachments);
        assert_eq!(plain.subject.as_deref(), Some("hi"));
    }

    #[test]
    fn header_rules_exact_and_regex() {
        let routes = routes(
            r#"
            [[email.routes]]
            name = "flagged"
            match = { headers = { "X-Spam" = "yes", "X-Score" = "/^[5-9]/" } }
            action = { type = "reject", code = 554 }
            [[email.routes]]
            name = "rest"
            priority = -1
            action = { type = "deliver" }
        "#,
        );
        let RcptRouting::Provisional(candidates) = route_recipient(&routes, &facts("a@b.c", false)) else { panic!("provisional") };
        let pick = |m: &[u8]| resolve_candidates(&routes, &candidates, &scan(m, 10)).map(|i| routes[i].name.clone());
        assert_eq!(pick(b"X-Spam: yes\r\nX-Score: 7.5\r\n\r\n").as_deref(), Some("flagged"));
        assert_eq!(pick(b"X-Spam: yes\r\nX-Score: 2\r\n\r\n").as_deref(), Some("rest"));
        assert_eq!(pick(b"X-Spam: YES\r\nX-Score: 9\r\n\r\n").as_deref(), Some("rest"), "exact is exact");
    }
}
