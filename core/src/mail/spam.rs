//! The spam score of a message: transparent rules, each with a name and a weight, summed as
//! SpamAssassin does and reported the same way (`X-Spam-Score`, `X-Spam-Status: Yes,
//! score=5.3 required=5.0 tests=HTML_SCRIPT,MISSING_DATE`).
//!
//! Owns: the built-in rules (named and weighted in `crate::config::BUILTIN_SPAM_RULES`;
//! `[email.scan] spam_rules` re-weights them), the configured bad patterns, and the verdict
//! ([`SpamVerdict`]) with its headers and whether it tags or refuses. The rules:
//!
//! - header sanity: `MISSING_DATE`, `MISSING_MID`, `MISSING_FROM`, `MISSING_SUBJECT`;
//!   `FROM_REPLYTO_DIFFER` when the Reply-To domain is not the From domain (nor a parent or
//!   subdomain of it);
//! - HTML: `PHISH_LINK_MISMATCH` when a link's visible text is a URL or domain name other
//!   than the host its `href` goes to; `HTML_SCRIPT` for `<script>` (or a `javascript:`
//!   link); `HTML_EVENT_HANDLER` for an `on*=` attribute;
//! - attachments (from `crate::mail::scan`'s walk, nested parts and messages included):
//!   `EXE_DOUBLE_EXTENSION` for an executable name behind a harmless one (`invoice.pdf.exe`,
//!   or a right-to-left override in the name); `EXE_CONTENT_MISNAMED` for Windows (`MZ`) or
//!   ELF content under a name that is not an executable's;
//! - `RCVD_IN_DNSBL` when the connecting client is listed in an `[email.dnsbl]` zone whose
//!   action is `tag` (added by the session with [`SpamVerdict::add_rule`], since only the
//!   shard knows the listing);
//! - `[[email.scan.bad_patterns]]`: regular expressions on the Subject and/or the text of
//!   the text and HTML parts, each its own rule.
//!
//! Not here: walking the MIME tree (`crate::mail::scan`), what the session answers.

use std::sync::LazyLock;

use mail_parser::{Message, MimeHeaders, PartType};
use regex::Regex;

use crate::config::{PatternTarget, SpamPolicy, SpamScore, DEFAULT_BLOCKED_EXTENSIONS};

/// The score of one message and the rules that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamVerdict {
    /// The sum of the fired rules' weights.
    pub score: SpamScore,
    /// The tag threshold (`required=`).
    pub required: SpamScore,
    /// The refusal threshold, if any.
    pub reject_score: Option<SpamScore>,
    /// The fired rules, sorted by name.
    pub tests: Vec<String>,
}

impl SpamVerdict {
    /// Whether the score reaches the tag threshold.
    pub fn is_spam(&self) -> bool {
        self.score >= self.required
    }

    /// Whether the score reaches the refusal threshold.
    pub fn rejects(&self) -> bool {
        self.reject_score.is_some_and(|limit| self.score >= limit)
    }

    /// Adds built-in rule `name` at its weight in `policy` (nothing when it is switched off
    /// or already fired).
    pub fn add_rule(&mut self, name: &str, policy: &SpamPolicy) {
        let weight = policy.weight(name);
        if weight == SpamScore(0) || self.tests.iter().any(|t| t == name) {
            return;
        }
        self.score.0 += weight.0;
        self.tests.push(name.to_string());
        self.tests.sort();
    }

    /// `X-Spam-Flag` (when spam), `X-Spam-Score` and `X-Spam-Status`, each with its CRLF.
    pub fn headers(&self) -> String {
        let tests = if self.tests.is_empty() { "none".to_string() } else { self.tests.join(",") };
        let flag = if self.is_spam() { "X-Spam-Flag: YES\r\n" } else { "" };
        format!(
            "{flag}X-Spam-Score: {}\r\nX-Spam-Status: {}, score={} required={} tests={tests}\r\n",
            self.score,
            if self.is_spam() { "Yes" } else { "No" },
            self.score,
            self.required
        )
    }
}

/// An attachment as the rules see it: its file name and its first octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentFacts {
    /// The file name.
    pub name: String,
    /// The first octets of its decoded content (at most 4).
    pub head: Vec<u8>,
}

/// Extensions that look harmless in front of an executable's.
const HARMLESS_EXTENSIONS: [&str; 24] = [
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "rtf", "txt", "csv", "jpg", "jpeg", "png", "gif", "bmp",
    "htm", "html", "zip", "mp3", "mp4", "avi", "xml",
];

/// Executable extensions not blocked by default but still executables for the misnamed rule.
const OTHER_EXECUTABLE_EXTENSIONS: [&str; 6] = ["dll", "sys", "bin", "elf", "so", "efi"];

static SCRIPT: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?i)<script\b|href\s*=\s*[\x22']?\s*javascript:").ok());
static EVENT_HANDLER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)<[a-z][a-z0-9]*\b[^>]*?[\s/\x22']on[a-z]+\s*=").ok());
static ANCHOR: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?is)<a\b([^>]*)>(.*?)</a\s*>").ok());
static HREF: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#).ok());
static TAG: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").ok());
/// Visible text that reads as an address: an optional scheme, a host name, an optional path.
static SHOWN_ADDRESS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:[a-z][a-z0-9+.-]*://)?(?:www\.)?((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63})\.?(?::\d+)?(?:[/?#]\S*)?$").ok()
});
static URL_HOST: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*[a-z][a-z0-9+.-]*://(?:[^@/?#\s]*@)?(?:www\.)?([^/:?#\s]+)").ok());

/// Scores `message` (its top-level text and HTML parts, all multipart levels) and the
/// `attachments` found anywhere in it.
pub fn score(message: &Message<'_>, attachments: &[AttachmentFacts], policy: &SpamPolicy) -> SpamVerdict {
    let mut fired: Vec<String> = Vec::new();
    let mut fire = |name: &str| {
        if !fired.iter().any(|f| f == name) {
            fired.push(name.to_string());
        }
    };
    if message.date().is_none() {
        fire("MISSING_DATE");
    }
    if message.message_id().is_none_or(|id| id.trim().is_empty()) {
        fire("MISSING_MID");
    }
    let from = message.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_ascii_lowercase);
    if from.is_none() {
        fire("MISSING_FROM");
    }
    if message.subject().is_none() {
        fire("MISSING_SUBJECT");
    }
    let reply_to = message.reply_to().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_ascii_lowercase);
    if let (Some(from), Some(reply_to)) = (&from, &reply_to) {
        let domain = |a: &str| a.rsplit_once('@').map(|(_, d)| d.trim_end_matches('.').to_string()).unwrap_or_default();
        if !related_hosts(&domain(from), &domain(reply_to)) {
            fire("FROM_REPLYTO_DIFFER");
        }
    }
    let mut body_text = String::new();
    for part in &message.parts {
        match &part.body {
            PartType::Html(html) => {
                if SCRIPT.as_ref().is_some_and(|re| re.is_match(html)) {
                    fire("HTML_SCRIPT");
                }
                if EVENT_HANDLER.as_ref().is_some_and(|re| re.is_match(html)) {
                    fire("HTML_EVENT_HANDLER");
                }
                if has_mismatched_link(html) {
                    fire("PHISH_LINK_MISMATCH");
                }
                body_text.push_str(html);
                body_text.push('\n');
            }
            PartType::Text(text) if part.attachment_name().is_none() => {
                body_text.push_str(text);
                body_text.push('\n');
            }
            _ => {}
        }
    }
    for attachment in attachments {
        if is_disguised_name(&attachment.name) {
            fire("EXE_DOUBLE_EXTENSION");
        }
        let executable_content = attachment.head.starts_with(b"MZ") || attachment.head.starts_with(b"\x7fELF");
        if executable_content && !is_executable_name(&attachment.name) {
            fire("EXE_CONTENT_MISNAMED");
        }
    }
    let mut score = SpamScore(0);
    let mut tests: Vec<String> = Vec::new();
    for name in &fired {
        let weight = policy.weight(name);
        if weight != SpamScore(0) {
            score.0 += weight.0;
            tests.push(name.clone());
        }
    }
    let subject = message.subject().unwrap_or("");
    for pattern in &policy.patterns {
        let hit = match pattern.target {
            PatternTarget::Subject => pattern.pattern.is_match(subject),
            PatternTarget::Body => pattern.pattern.is_match(&body_text),
            PatternTarget::Any => pattern.pattern.is_match(subject) || pattern.pattern.is_match(&body_text),
        };
        if hit {
            score.0 += pattern.weight.0;
            tests.push(pattern.name.clone());
        }
    }
    tests.sort();
    SpamVerdict { score, required: policy.tag_score, reject_score: policy.reject_score, tests }
}

/// Whether `a` and `b` are the same host, or one is a subdomain of the other.
fn related_hosts(a: &str, b: &str) -> bool {
    let a = a.trim_start_matches("www.");
    let b = b.trim_start_matches("www.");
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

fn extension_of(name: &str) -> Option<String> {
    name.trim().rsplit_once('.').map(|(_, ext)| ext.trim().to_ascii_lowercase())
}

fn is_executable_name(name: &str) -> bool {
    extension_of(name)
        .is_some_and(|ext| DEFAULT_BLOCKED_EXTENSIONS.contains(&ext.as_str()) || OTHER_EXECUTABLE_EXTENSIONS.contains(&ext.as_str()))
}

/// `invoice.pdf.exe`, `photo.jpg      .scr`, or a right-to-left override hiding the real end.
fn is_disguised_name(name: &str) -> bool {
    if name.contains('\u{202E}') {
        return true;
    }
    if !is_executable_name(name) {
        return false;
    }
    let trimmed = name.trim();
    let Some((stem, _)) = trimmed.rsplit_once('.') else { return false };
    stem.trim_end().rsplit_once('.').is_some_and(|(_, inner)| HARMLESS_EXTENSIONS.contains(&inner.trim().to_ascii_lowercase().as_str()))
}

/// Decodes the few entities link texts use to hide dots and slashes.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find(';').filter(|end| *end <= 10) else {
            out.push('&');
            rest = &after[1..];
            continue;
        };
        let entity = &after[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "nbsp" => Some(' '),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether some `<a href>` in `html` shows an address other than the one it goes to.
fn has_mismatched_link(html: &str) -> bool {
    let (Some(anchor), Some(href_re), Some(tag), Some(shown_re), Some(host_re)) =
        (ANCHOR.as_ref(), HREF.as_ref(), TAG.as_ref(), SHOWN_ADDRESS.as_ref(), URL_HOST.as_ref())
    else {
        return false;
    };
    for link in anchor.captures_iter(html) {
        let (Some(attributes), Some(inner)) = (link.get(1), link.get(2)) else { continue };
        let Some(href) = href_re.captures(attributes.as_str()).and_then(|c| c.get(1).or(c.get(2)).or(c.get(3))) else { continue };
        let href = decode_entities(href.as_str());
        let Some(target) = host_re.captures(&href).and_then(|c| c.get(1)).map(|m| m.as_str().to_ascii_lowercase()) else { continue };
        let shown = decode_entities(&tag.replace_all(inner.as_str(), ""));
        let shown = shown.trim();
        let Some(shown_host) = shown_re.captures(shown).and_then(|c| c.get(1)).map(|m| m.as_str().to_ascii_lowercase()) else {
            continue;
        };
        if !related_hosts(shown_host.trim_end_matches('.'), target.trim_end_matches('.')) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BadPattern, TextPattern};
    use mail_parser::MessageParser;

    const CLEAN_HEAD: &str = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Lunch\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n";

    fn verdict(text: &str, attachments: &[AttachmentFacts], policy: &SpamPolicy) -> SpamVerdict {
        let message = MessageParser::default().parse(text.as_bytes()).expect("parses");
        score(&message, attachments, policy)
    }

    fn html(body: &str) -> String {
        format!("{CLEAN_HEAD}MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{body}\r\n")
    }

    #[test]
    fn clean_mail_scores_zero_and_says_no() {
        let v = verdict(&format!("{CLEAN_HEAD}\r\nSee you at noon.\r\n"), &[], &SpamPolicy::default());
        assert_eq!((v.score, v.tests.len()), (SpamScore(0), 0));
        assert_eq!(v.headers(), "X-Spam-Score: 0.0\r\nX-Spam-Status: No, score=0.0 required=5.0 tests=none\r\n");
    }

    #[test]
    fn a_dnsbl_listing_adds_its_rule_once_and_can_tip_the_verdict() {
        let mut policy = SpamPolicy::default();
        let text = "From: Alice <alice@bank.example>\r\nReply-To: <collect@elsewhere.example>\r\n\r\nsend money\r\n";
        let mut v = verdict(text, &[], &policy);
        assert!(!v.is_spam(), "4.0 alone is under 5.0");
        v.add_rule("RCVD_IN_DNSBL", &policy);
        v.add_rule("RCVD_IN_DNSBL", &policy);
        assert_eq!(v.score, SpamScore(40 + 30));
        assert_eq!(v.tests, ["FROM_REPLYTO_DIFFER", "MISSING_DATE", "MISSING_MID", "MISSING_SUBJECT", "RCVD_IN_DNSBL"]);
        assert!(v.is_spam());
        // Weighted 0 by config: switched off.
        policy.weights.retain(|(name, _)| *name != "RCVD_IN_DNSBL");
        policy.weights.push(("RCVD_IN_DNSBL", SpamScore(0)));
        let mut off = verdict(text, &[], &policy);
        off.add_rule("RCVD_IN_DNSBL", &policy);
        assert_eq!((off.score, off.tests.len()), (SpamScore(40), 4));
    }

    #[test]
    fn missing_headers_and_reply_to_elsewhere_fire() {
        let text = "From: Alice <alice@bank.example>\r\nReply-To: <collect@elsewhere.example>\r\n\r\nsend money\r\n";
        let v = verdict(text, &[], &SpamPolicy::default());
        assert_eq!(v.tests, ["FROM_REPLYTO_DIFFER", "MISSING_DATE", "MISSING_MID", "MISSING_SUBJECT"]);
        assert_eq!(v.score, SpamScore(15 + 10 + 10 + 5));
        // A Reply-To in a subdomain of the From domain is fine.
        let sub = "From: a@example.org\r\nReply-To: b@lists.example.org\r\nSubject: s\r\nDate: Wed, 2 Dec 2026 06:00:00 +0000\r\nMessage-ID: <2@x>\r\n\r\nhi\r\n";
        assert!(verdict(sub, &[], &SpamPolicy::default()).tests.is_empty());
    }

    #[test]
    fn phishing_links_fire_only_when_the_shown_address_differs() {
        let policy = SpamPolicy::default();
        let phish = html(r#"<p>Log in at <a href="http://203.0.113.9/login">https://www.mybank.example/login</a></p>"#);
        assert_eq!(verdict(&phish, &[], &policy).tests, ["PHISH_LINK_MISMATCH"]);
        let hidden = html(r#"<a href='https://evil.example/x'><b>paypal&#46;example</b></a>"#);
        assert_eq!(verdict(&hidden, &[], &policy).tests, ["PHISH_LINK_MISMATCH"]);
        let honest = html(r#"<a href="https://www.mybank.example/login?x=1">mybank.example</a> <a href="https://t.example/">click here</a>"#);
        assert!(verdict(&honest, &[], &policy).tests.is_empty(), "{:?}", verdict(&honest, &[], &policy));
    }

    #[test]
    fn script_and_event_handlers_in_html_fire() {
        let policy = SpamPolicy::default();
        let v = verdict(&html(r#"<img src=x onerror="steal()"><script>alert(1)</script>"#), &[], &policy);
        assert_eq!(v.tests, ["HTML_EVENT_HANDLER", "HTML_SCRIPT"]);
        assert_eq!(v.score, SpamScore(45));
        let js_link = verdict(&html(r#"<a href="javascript:run()">open</a>"#), &[], &policy);
        assert_eq!(js_link.tests, ["HTML_SCRIPT"]);
        // Words that merely contain "on" are not handlers.
        assert!(verdict(&html("<p class=\"one\">onward = forward</p>"), &[], &policy).tests.is_empty());
    }

    #[test]
    fn disguised_executables_fire() {
        let policy = SpamPolicy::default();
        let facts = |name: &str, head: &[u8]| AttachmentFacts { name: name.into(), head: head.to_vec() };
        let clean = format!("{CLEAN_HEAD}\r\nhi\r\n");
        assert_eq!(verdict(&clean, &[facts("invoice.pdf.exe", b"MZ\x90\x00")], &policy).tests, ["EXE_DOUBLE_EXTENSION"]);
        assert_eq!(verdict(&clean, &[facts("report\u{202E}fdp.scr", b"")], &policy).tests, ["EXE_DOUBLE_EXTENSION"]);
        assert_eq!(verdict(&clean, &[facts("invoice.pdf", b"MZ\x90\x00")], &policy).tests, ["EXE_CONTENT_MISNAMED"]);
        assert!(verdict(&clean, &[facts("setup.exe", b"MZ\x90\x00"), facts("a.b.pdf", b"%PDF")], &policy).tests.is_empty());
    }

    #[test]
    fn weights_thresholds_and_patterns_are_the_configs() {
        let mut policy = SpamPolicy { reject_score: Some(SpamScore(80)), ..SpamPolicy::default() };
        policy.weights.iter_mut().for_each(|(name, weight)| {
            if *name == "MISSING_DATE" {
                *weight = SpamScore(0);
            }
        });
        policy.patterns.push(BadPattern {
            name: "LOTTERY".into(),
            pattern: TextPattern(Regex::new("(?i)you have won").expect("re")),
            target: PatternTarget::Subject,
            weight: SpamScore(60),
        });
        policy.patterns.push(BadPattern {
            name: "WIRE".into(),
            pattern: TextPattern(Regex::new("(?i)wire transfer").expect("re")),
            target: PatternTarget::Body,
            weight: SpamScore(25),
        });
        let text = "From: a@example.org\r\nSubject: YOU HAVE WON\r\nMessage-ID: <3@x>\r\n\r\nPlease make a wire transfer.\r\n";
        let v = verdict(text, &[], &policy);
        // MISSING_DATE is switched off (weight 0): not listed.
        assert_eq!(v.tests, ["LOTTERY", "WIRE"]);
        assert_eq!(v.score, SpamScore(85));
        assert!(v.is_spam() && v.rejects());
        assert_eq!(
            v.headers(),
            "X-Spam-Flag: YES\r\nX-Spam-Score: 8.5\r\nX-Spam-Status: Yes, score=8.5 required=5.0 tests=LOTTERY,WIRE\r\n"
        );
    }
}
