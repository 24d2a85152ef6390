//! Attachment filtering for `process` routes with `scan = true` (`[email.scan]`).
//!
//! Owns: [`scan_attachments`] — every MIME part of a message (all multipart levels, and
//! attached messages (`message/rfc822`) recursively, up to [`MAX_DEPTH`]) is checked: a part
//! whose file name ends in a blocked extension (the last one: `invoice.pdf.exe` is `exe`), or
//! whose declared type is a blocked MIME type, is a [`ScanFinding`]. Parsing is mail-parser's.
//! Runs on the control core's runtime with the inbound checks (`crate::mail::auth::service`),
//! never on a shard (a large message takes real CPU to parse).
//! Not here: what the session answers (`crate::smtp::serve`: `554 5.7.1` or a tag header, per
//! `[email.scan] action`). Archives' inner file lists and spam scoring are not done.

use mail_parser::{Message, MessageParser, MimeHeaders};

use crate::config::ScanPolicy;

/// Deepest nesting of attached messages looked into.
pub const MAX_DEPTH: usize = 8;

/// One blocked part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFinding {
    /// The part's file name, or its MIME type when it has none.
    pub part: String,
    /// Why it is blocked (`extension exe`, `type application/x-msdownload`).
    pub reason: String,
}

impl ScanFinding {
    /// One line for a reply or a header.
    pub fn describe(&self) -> String {
        format!("\"{}\" ({})", self.part.replace(['"', '\r', '\n'], ""), self.reason)
    }
}

/// The blocked parts of `message`, in order (empty when it does not parse as MIME).
pub fn scan_attachments(message: &[u8], policy: &ScanPolicy) -> Vec<ScanFinding> {
    let mut findings = Vec::new();
    if let Some(parsed) = MessageParser::default().parse(message) {
        scan_message(&parsed, policy, 0, &mut findings);
    }
    findings
}

fn scan_message(message: &Message<'_>, policy: &ScanPolicy, depth: usize, findings: &mut Vec<ScanFinding>) {
    for part in &message.parts {
        let mime = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .map(|t| t.to_ascii_lowercase());
        let name = part.attachment_name().map(str::to_string);
        let extension = name.as_deref().and_then(|n| n.rsplit_once('.')).map(|(_, ext)| ext.trim().to_ascii_lowercase());
        let label = name.clone().or_else(|| mime.clone()).unwrap_or_else(|| "part".into());
        if let Some(ext) = extension.filter(|ext| policy.blocked_extensions.iter().any(|b| b == ext)) {
            findings.push(ScanFinding { part: label, reason: format!("extension {ext}") });
        } else if let Some(mime) = mime.filter(|m| policy.blocked_mime_types.iter().any(|b| b == m)) {
            findings.push(ScanFinding { part: label, reason: format!("type {mime}") });
        }
        if let (Some(inner), true) = (part.message(), depth < MAX_DEPTH) {
            scan_message(inner, policy, depth + 1, findings);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScanAction;

    fn policy() -> ScanPolicy {
        ScanPolicy {
            blocked_extensions: vec!["exe".into(), "js".into()],
            blocked_mime_types: vec!["application/x-msdownload".into()],
            action: ScanAction::Reject,
        }
    }

    fn with_part(headers: &str) -> Vec<u8> {
        format!(
            "From: a@b.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XX\r\n{headers}\r\n\r\nAAAA\r\n--XX--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn blocked_extension_even_behind_a_harmless_one() {
        let found = scan_attachments(
            &with_part("Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"invoice.pdf.EXE\""),
            &policy(),
        );
        assert_eq!(found, vec![ScanFinding { part: "invoice.pdf.EXE".into(), reason: "extension exe".into() }]);
    }

    #[test]
    fn blocked_mime_type_without_a_name() {
        let found = scan_attachments(&with_part("Content-Type: application/x-msdownload"), &policy());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reason, "type application/x-msdownload");
    }

    #[test]
    fn allowed_attachments_and_plain_mail_pass() {
        let pdf = with_part("Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"report.pdf\"");
        assert!(scan_attachments(&pdf, &policy()).is_empty());
        assert!(scan_attachments(b"From: a@b.test\r\n\r\nno parts\r\n", &policy()).is_empty());
    }

    #[test]
    fn attached_messages_are_looked_into() {
        let inner = String::from_utf8(with_part("Content-Type: text/javascript; name=\"run.js\"")).expect("utf8");
        let outer = format!(
            "From: a@b.test\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n--OUT\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--OUT--\r\n"
        );
        let found = scan_attachments(outer.as_bytes(), &policy());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].part, "run.js");
    }
}
