//! Content scanning for `process` routes with `scan = true` (`[email.scan]`).
//!
//! Owns: [`scan_message`] — one mail-parser walk over every MIME part of a message (all
//! multipart levels, and attached messages (`message/rfc822`) recursively, up to
//! [`MAX_DEPTH`]) that finds the blocked parts ([`ScanFinding`]) and scores the message for
//! spam (`crate::mail::spam`). A part is blocked when its file name ends in a blocked
//! extension (the last one: `invoice.pdf.exe` is `exe`), its declared type is a blocked MIME
//! type, or it is an attachment larger than `max_attachment_size`; a zip archive (by name,
//! type or content; also tar, `.tar.gz` and a lone `.gz`) is blocked when a member of it — or
//! of a zip inside a zip, one level — has a blocked extension or declares a size over the
//! limit (`crate::mail::archive`: the zip central directory and tar headers are read; only a
//! nested zip and a `.tar.gz` stream are inflated, both capped).
//! Runs on the control core's runtime with the inbound checks (`crate::mail::auth::service`),
//! never on a shard (a large message takes real CPU to parse).
//! Not here: what the session answers (`crate::smtp::serve`: `554 5.7.1` or a tag header, per
//! `[email.scan] action`; spam headers, and `550 5.7.1` from `spam_reject_score`).

use mail_parser::{Message, MessageParser, MimeHeaders};

use crate::config::ScanPolicy;
use crate::mail::archive::{archive_entries, archive_kind};
use crate::mail::spam::{self, AttachmentFacts, SpamVerdict};

/// Deepest nesting of attached messages looked into.
pub const MAX_DEPTH: usize = 8;

/// One blocked part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFinding {
    /// The part's file name (`archive.zip: member` inside an archive), or its MIME type when
    /// it has none.
    pub part: String,
    /// Why it is blocked (`extension exe`, `type application/x-msdownload`, `size 2048 >
    /// 1024`, `extension exe in archive`).
    pub reason: String,
}

impl ScanFinding {
    /// One line for a reply or a header.
    pub fn describe(&self) -> String {
        format!("\"{}\" ({})", self.part.replace(['"', '\r', '\n'], ""), self.reason)
    }
}

/// What scanning found in one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanReport {
    /// The blocked parts, in order.
    pub blocked: Vec<ScanFinding>,
    /// The spam score (`None` when the message does not parse).
    pub spam: Option<SpamVerdict>,
}

/// The blocked parts of `message`, in order (empty when it does not parse as MIME).
pub fn scan_attachments(message: &[u8], policy: &ScanPolicy) -> Vec<ScanFinding> {
    scan_message(message, policy).blocked
}

/// Blocked parts and spam score of `message`.
pub fn scan_message(message: &[u8], policy: &ScanPolicy) -> ScanReport {
    let Some(parsed) = MessageParser::default().parse(message) else { return ScanReport::default() };
    let mut blocked = Vec::new();
    let mut attachments = Vec::new();
    walk(&parsed, policy, 0, &mut blocked, &mut attachments);
    let spam = spam::score(&parsed, &attachments, &policy.spam);
    ScanReport { blocked, spam: Some(spam) }
}

fn extension_of(name: &str) -> Option<String> {
    name.rsplit_once('.').map(|(_, ext)| ext.trim().to_ascii_lowercase())
}

fn walk(message: &Message<'_>, policy: &ScanPolicy, depth: usize, findings: &mut Vec<ScanFinding>, attachments: &mut Vec<AttachmentFacts>) {
    for part in &message.parts {
        let mime = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .map(|t| t.to_ascii_lowercase());
        let name = part.attachment_name().map(str::to_string);
        let extension = name.as_deref().and_then(extension_of);
        let label = name.clone().or_else(|| mime.clone()).unwrap_or_else(|| "part".into());
        let is_attachment = name.is_some() || part.content_disposition().is_some_and(|d| d.is_attachment());
        let contents = if part.is_multipart() || part.is_message() { &[][..] } else { part.contents() };
        if let Some(name) = &name {
            attachments.push(AttachmentFacts { name: name.clone(), head: contents.iter().take(4).copied().collect() });
        }
        if let Some(ext) = extension.as_ref().filter(|ext| policy.blocked_extensions.iter().any(|b| b == *ext)) {
            findings.push(ScanFinding { part: label.clone(), reason: format!("extension {ext}") });
        } else if let Some(mime) = mime.as_ref().filter(|m| policy.blocked_mime_types.iter().any(|b| b == *m)) {
            findings.push(ScanFinding { part: label.clone(), reason: format!("type {mime}") });
        } else if let Some(max) = policy.max_attachment_size.filter(|max| is_attachment && contents.len() as u64 > *max) {
            findings.push(ScanFinding { part: label.clone(), reason: format!("size {} > {max}", contents.len()) });
        }
        let kind = archive_kind(name.as_deref(), mime.as_deref(), if is_attachment { contents } else { &[] });
        if let Some(kind) = kind {
            scan_archive(&label, kind, contents, policy, findings);
        }
        if let (Some(inner), true) = (part.message(), depth < MAX_DEPTH) {
            walk(inner, policy, depth + 1, findings, attachments);
        }
    }
}

/// The members of an archive attachment checked like attachments (an unreadable archive
/// passes: its declared name and type were checked already).
fn scan_archive(label: &str, kind: crate::mail::archive::ArchiveKind, contents: &[u8], policy: &ScanPolicy, findings: &mut Vec<ScanFinding>) {
    let Ok(entries) = archive_entries(kind, contents) else { return };
    for entry in entries {
        if entry.path.ends_with('/') {
            continue;
        }
        let member = entry.path.rsplit('/').next().unwrap_or(&entry.path);
        let part = format!("{label}: {}", entry.path);
        if let Some(ext) = extension_of(member).filter(|ext| policy.blocked_extensions.iter().any(|b| b == ext)) {
            findings.push(ScanFinding { part, reason: format!("extension {ext} in archive") });
        } else if let Some(max) = policy.max_attachment_size.filter(|max| entry.size > *max) {
            // (A lone gzip's member has no declared size: 0.)
            findings.push(ScanFinding { part, reason: format!("size {} > {max} in archive", entry.size) });
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
            max_attachment_size: Some(4096),
            action: ScanAction::Reject,
            spam: crate::config::SpamPolicy::default(),
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

    fn base64_attachment(name: &str, content: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(content);
        format!(
            "From: a@b.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XX\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{encoded}\r\n--XX--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn blocked_names_inside_zip_archives_are_found_one_nested_level_deep() {
        use crate::mail::archive::tests::make_zip;
        let inner = make_zip(&[("payload.exe", b"MZ")]);
        let outer = make_zip(&[("readme.txt", b"hi"), ("more.zip", &inner)]);
        let found = scan_attachments(&base64_attachment("photos.zip", &outer), &policy());
        assert_eq!(found, vec![ScanFinding { part: "photos.zip: more.zip/payload.exe".into(), reason: "extension exe in archive".into() }]);
        // Detected by content too, whatever the name says.
        let found = scan_attachments(&base64_attachment("photos.dat", &make_zip(&[("x.js", b"1")])), &policy());
        assert_eq!(found.len(), 1, "{found:?}");
        // A harmless archive passes.
        assert!(scan_attachments(&base64_attachment("docs.zip", &make_zip(&[("a.txt", b"1")])), &policy()).is_empty());
    }

    #[test]
    fn attachment_and_archive_member_sizes_are_limited() {
        use crate::mail::archive::tests::make_zip;
        let found = scan_attachments(&base64_attachment("big.pdf", &[b'x'; 5000]), &policy());
        assert_eq!(found, vec![ScanFinding { part: "big.pdf".into(), reason: "size 5000 > 4096".into() }]);
        let zeros = vec![0u8; 1 << 20];
        let found = scan_attachments(&base64_attachment("small.zip", &make_zip(&[("zeros.bin", &zeros)])), &policy());
        assert_eq!(found, vec![ScanFinding { part: "small.zip: zeros.bin".into(), reason: format!("size {} > 4096 in archive", 1 << 20) }]);
    }

    #[test]
    fn spam_score_comes_with_the_walk() {
        let report = scan_message(&base64_attachment("invoice.pdf", b"MZ\x90\x00rest"), &policy());
        let spam = report.spam.expect("scored");
        assert!(spam.tests.contains(&"EXE_CONTENT_MISNAMED".to_string()), "{spam:?}");
        assert!(spam.tests.contains(&"MISSING_DATE".to_string()), "{spam:?}");
    }

    #[test]
    fn tar_gz_and_gzip_members_are_checked_too() {
        use crate::mail::archive::tests::make_tar;
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&make_tar(&[("src/main.rs", b"fn main() {}"), ("tools/install.js", b"x")])).expect("gzip");
        let tgz = encoder.finish().expect("finish");
        let found = scan_attachments(&base64_attachment("source.tar.gz", &tgz), &policy());
        assert_eq!(found, vec![ScanFinding { part: "source.tar.gz: tools/install.js".into(), reason: "extension js in archive".into() }]);
    }
}
