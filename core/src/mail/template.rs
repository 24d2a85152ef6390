//! Composing messages on the appliance for `shardgate send`: a `[[email.templates]]` entry
//! with its `{{var}}` placeholders filled, or a message read from a file completed with the
//! headers a submission needs.
//!
//! Owns: filling placeholders (every variable must be given; values HTML-escaped in the html
//! part, line breaks removed in the subject), the MIME structure (text/plain, text/html, or
//! multipart/alternative with both; UTF-8, quoted-printable), RFC 2047 encoding of a
//! non-ASCII subject, and adding `Date:` / `Message-ID:` (and `From:` / `To:` for
//! templates) to a submitted message that lacks them.
//! Does not own: the template config (`crate::config::MailTemplate`) or queueing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::config::MailTemplate;
use crate::mail::delivery::dsn::rfc5322_date;

/// Why a message could not be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No template has this name.
    #[error("no [[email.templates]] entry is named `{0}`")]
    UnknownTemplate(String),
    /// Placeholders without a value.
    #[error("template `{template}` needs --var for: {}", missing.join(", "))]
    MissingVariables {
        /// The template.
        template: String,
        /// The variable names without a value.
        missing: Vec<String>,
    },
}

fn fill(text: &str, vars: &BTreeMap<String, String>, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                out.push_str(&escape(vars.get(name).map(String::as_str).unwrap_or("")));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn html_escape(value: &str) -> String {
    value.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

fn plain(value: &str) -> String {
    value.to_string()
}

/// RFC 2047 `=?UTF-8?B?...?=` when `text` is not plain ASCII.
fn encode_header_text(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
}

/// Quoted-printable (RFC 2045 §6.7) with CRLF line ends and soft breaks at 76 columns.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    let normalized = text.replace("\r\n", "\n");
    for (number, line) in normalized.split('\n').enumerate() {
        if number > 0 {
            out.push_str("\r\n");
        }
        let mut column = 0;
        let bytes = line.as_bytes();
        for (i, &byte) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal = (byte == b' ' || byte == b'\t') && !last || (33..=126).contains(&byte) && byte != b'=';
            let piece = if literal { (byte as char).to_string() } else { format!("={byte:02X}") };
            if column + piece.len() > 75 {
                out.push_str("=\r\n");
                column = 0;
            }
            column += piece.len();
            out.push_str(&piece);
        }
    }
    out.push_str("\r\n");
    out
}

fn message_id(hostname: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("<{nanos:x}.{}@{hostname}>", std::process::id())
}

/// Fills `template` with `vars` and builds the message from `from` to `to`.
pub fn render(
    template: &MailTemplate,
    vars: &BTreeMap<String, String>,
    from: &str,
    to: &[String],
    hostname: &str,
) -> Result<Vec<u8>, TemplateError> {
    let missing: Vec<String> = template.variables().into_iter().filter(|name| !vars.contains_key(name)).collect();
    if !missing.is_empty() {
        return Err(TemplateError::MissingVariables { template: template.name.clone(), missing });
    }
    let subject = fill(&template.subject, vars, one_line);
    let text = template.text.as_deref().map(|t| fill(t, vars, plain));
    let html = template.html.as_deref().map(|t| fill(t, vars, html_escape));
    let mut out = String::new();
    out.push_str(&format!("From: <{}>\r\n", one_line(from)));
    out.push_str(&format!("To: {}\r\n", to.iter().map(|t| format!("<{}>", one_line(t))).collect::<Vec<_>>().join(", ")));
    out.push_str(&format!("Subject: {}\r\n", encode_header_text(&subject)));
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(SystemTime::now())));
    out.push_str(&format!("Message-ID: {}\r\n", message_id(hostname)));
    out.push_str("MIME-Version: 1.0\r\n");
    let part = |kind: &str, body: &str| {
        format!("Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}", quoted_printable(body))
    };
    match (text, html) {
        (Some(text), Some(html)) => {
            let boundary = format!("=_shardgate_{:x}", SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
            out.push_str(&format!("Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"));
            out.push_str(&format!("--{boundary}\r\n{}", part("plain", &text)));
            out.push_str(&format!("--{boundary}\r\n{}", part("html", &html)));
            out.push_str(&format!("--{boundary}--\r\n"));
        }
        (Some(text), None) => out.push_str(&part("plain", &text)),
        (None, Some(html)) => out.push_str(&part("html", &html)),
        (None, None) => out.push_str("\r\n"),
    }
    Ok(out.into_bytes())
}

/// Adds `Date:` and `Message-ID:` to a submitted message whose header block lacks them.
pub fn complete_headers(message: Vec<u8>, hostname: &str) -> Vec<u8> {
    let added = missing_headers(&message, hostname);
    if added.is_empty() {
        return message;
    }
    let mut out = added;
    out.extend_from_slice(&message);
    out
}

/// The `Date:` and `Message-ID:` header lines a message starting with `start` lacks (empty
/// when it has both), to put in front of it. `start` needs to hold only the message's
/// beginning (its header block), so a large message file is never read whole.
pub fn missing_headers(start: &[u8], hostname: &str) -> Vec<u8> {
    let head = crate::mail::delivery::dsn::header_block(start);
    let has = |name: &str| {
        head.split(|b| *b == b'\n').any(|line| line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut added = String::new();
    if !has("date:") {
        added.push_str(&format!("Date: {}\r\n", rfc5322_date(SystemTime::now())));
    }
    if !has("message-id:") {
        added.push_str(&format!("Message-ID: {}\r\n", message_id(hostname)));
    }
    added.into_bytes()
}

/// Finds template `name` in `templates`.
pub fn find<'a>(templates: &'a [MailTemplate], name: &str) -> Result<&'a MailTemplate, TemplateError> {
    templates.iter().find(|t| t.name == name).ok_or_else(|| TemplateError::UnknownTemplate(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: Option<&str>, html: Option<&str>) -> MailTemplate {
        MailTemplate { name: "welcome".into(), subject: "Hello {{name}}".into(), text: text.map(Into::into), html: html.map(Into::into) }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholders_are_filled_and_html_escaped() {
        let t = template(Some("Hi {{ name }}, code {{code}}."), Some("<b>{{name}}</b>"));
        let message = render(&t, &vars(&[("name", "Ann <&>"), ("code", "42")]), "noreply@x.test", &["ann@y.test".into()], "mx.x.test").expect("render");
        let text = String::from_utf8(message).expect("utf8");
        assert!(text.contains("Subject: Hello Ann <&>\r\n"), "{text}");
        assert!(text.contains("Content-Type: multipart/alternative; boundary="));
        assert!(text.contains("Hi Ann <&>, code 42."));
        assert!(text.contains("<b>Ann &lt;&amp;&gt;</b>"));
        assert!(text.contains("To: <ann@y.test>\r\n"));
        assert!(text.contains("Message-ID: <") && text.contains("Date: "));
    }

    #[test]
    fn missing_variables_are_named() {
        let t = template(Some("{{a}} {{b}}"), None);
        assert_eq!(
            render(&t, &vars(&[("a", "1")]), "f@x", &[], "h"),
            Err(TemplateError::MissingVariables { template: "welcome".into(), missing: vec!["name".into(), "b".into()] })
        );
        assert!(find(&[t], "other").is_err());
    }

    #[test]
    fn utf8_subject_is_encoded_and_body_quoted_printable() {
        let t = template(Some("Grüße = ok"), None);
        let text = String::from_utf8(render(&t, &vars(&[("name", "Zoë")]), "f@x", &["t@y".into()], "h").expect("render")).expect("utf8");
        assert!(text.contains("Subject: =?UTF-8?B?"));
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe =3D ok\r\n"), "{text}");
        assert_eq!(quoted_printable(&"a".repeat(100)).lines().next().map(str::len), Some(76));
    }

    #[test]
    fn submitted_messages_get_date_and_message_id_once() {
        let completed = complete_headers(b"Subject: x\r\n\r\nbody\r\n".to_vec(), "h");
        let text = String::from_utf8(completed.clone()).expect("utf8");
        assert!(text.starts_with("Date: ") && text.contains("Message-ID: <"));
        assert_eq!(complete_headers(completed.clone(), "h"), completed);
    }
}
