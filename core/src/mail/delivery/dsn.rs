//! Bounces: RFC 3464 delivery status notifications for recipients that failed for good.
//!
//! Owns: building the DSN message (RFC 6522 `multipart/report; report-type=delivery-status`:
//! a human-readable part, the `message/delivery-status` part with one per-recipient block of
//! `Final-Recipient` / `Action` / `Status` / `Remote-MTA` / `Diagnostic-Code`, and the
//! original message's headers as `text/rfc822-headers`) and the rule that a bounce is never
//! sent for a bounce (null reverse path).
//! Does not own: queueing the DSN (the delivery engine hands it to the queue like any other
//! message, routed by the original sender's address) or reading the original from the spool
//! (the caller passes its header block, already cut to [`MAX_ORIGINAL_HEADERS`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// How much of the original message's header block a DSN carries.
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// One failed recipient, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The recipient address (`Final-Recipient: rfc822; ...`).
    pub address: String,
    /// RFC 3463 status (`5.1.1`); taken from the reply's enhanced code when it has one.
    pub status: String,
    /// The server that refused it (`Remote-MTA: dns; ...`), when one did.
    pub remote_mta: Option<String>,
    /// What was said (`Diagnostic-Code: smtp; 550 5.1.1 ...`), or our own reason.
    pub diagnostic: String,
}

/// Everything a DSN reports.
#[derive(Debug, Clone)]
pub struct BounceReport<'a> {
    /// Our host name (`Reporting-MTA`, `Message-ID`).
    pub reporting_mta: &'a str,
    /// `From:` of the bounce (`MAILER-DAEMON@host`).
    pub from: &'a str,
    /// The original envelope sender: the bounce goes there.
    pub original_sender: &'a str,
    /// The original message's queue id.
    pub original_queue_id: &'a str,
    /// When the original arrived.
    pub arrival: SystemTime,
    /// Who failed, and why.
    pub recipients: &'a [FailedRecipient],
    /// The original header block (up to the blank line), at most [`MAX_ORIGINAL_HEADERS`].
    pub original_headers: &'a [u8],
}

/// Whether a message from `sender` may be answered with a bounce: never for the null sender
/// `<>` (a bounce itself), so two servers cannot bounce bounces at each other forever.
pub fn may_bounce(sender: &str) -> bool {
    !sender.trim().is_empty() && sender.trim() != "<>"
}

/// The enhanced status for a DSN: the reply's own (`550 5.1.1 ...` → `5.1.1`), else the
/// generic permanent failure `5.0.0`.
pub fn status_from_reply(reply: &shardgate_smtp::client::ServerReply) -> String {
    match reply.enhanced_status() {
        Some(status) if status.class() == 5 => status.to_string(),
        _ => "5.0.0".to_string(),
    }
}

/// RFC 5322 date, e.g. `Wed, 02 Dec 2026 05:25:31 +0000`.
pub fn rfc5322_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    shardgate_http1::static_files::http_date(secs).replace(" GMT", " +0000")
}

/// Only printable ASCII without line breaks survives into a header field.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Builds the DSN message (headers and body, CRLF line ends, ready to queue with the null
/// reverse path to `report.original_sender`).
pub fn build_bounce(report: &BounceReport<'_>, now: SystemTime) -> Vec<u8> {
    let nanos = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let boundary = format!("{nanos:x}/{}", header_safe(report.reporting_mta));
    let mta = header_safe(report.reporting_mta);
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push_str("\r\n");
    };
    line(&format!("From: Mail Delivery System <{}>", header_safe(report.from)));
    line(&format!("To: <{}>", header_safe(report.original_sender)));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {}", rfc5322_date(now)));
    line(&format!("Message-ID: <{nanos:x}.{}@{mta}>", header_safe(report.original_queue_id)));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!("Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=us-ascii");
    line("Content-Description: Notification");
    line("");
    line(&format!("This is the mail system at host {mta}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("It has been returned with this report; the reasons are below.");
    line("");
    for failed in report.recipients {
        line(&format!("<{}>: {}", header_safe(&failed.address), header_safe(&failed.diagnostic)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("Content-Description: Delivery report");
    line("");
    line(&format!("Reporting-MTA: dns; {mta}"));
    line(&format!("X-Shardgate-Queue-ID: {}", header_safe(report.original_queue_id)));
    line(&format!("Arrival-Date: {}", rfc5322_date(report.arrival)));
    for failed in report.recipients {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", header_safe(&failed.address)));
        line("Action: failed");
        line(&format!("Status: {}", header_safe(&failed.status)));
        if let Some(remote) = &failed.remote_mta {
            line(&format!("Remote-MTA: dns; {}", header_safe(remote)));
        }
        let kind = if failed.remote_mta.is_some() { "smtp" } else { "x-shardgate" };
        line(&format!("Diagnostic-Code: {kind}; {}", header_safe(&failed.diagnostic)));
        line(&format!("Last-Attempt-Date: {}", rfc5322_date(now)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("Content-Description: Undelivered message headers");
    line("");
    let mut bytes = out.into_bytes();
    let headers = &report.original_headers[..report.original_headers.len().min(MAX_ORIGINAL_HEADERS)];
    // Bare LFs become CRLF so the report stays valid whatever the original looked like.
    let mut previous = 0u8;
    for &byte in headers {
        if byte == b'\n' && previous != b'\r' {
            bytes.push(b'\r');
        }
        bytes.push(byte);
        previous = byte;
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The header block of a message: everything up to and including the first empty line (or
/// all of `start` if it has none), at most [`MAX_ORIGINAL_HEADERS`].
pub fn header_block(start: &[u8]) -> &[u8] {
    let limit = start.len().min(MAX_ORIGINAL_HEADERS);
    let window = &start[..limit];
    let end = window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| window.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(limit);
    &start[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bounce_is_a_multipart_report_with_one_block_per_recipient() {
        let failed = vec![
            FailedRecipient {
                address: "nobody@example.net".into(),
                status: "5.1.1".into(),
                remote_mta: Some("mx.example.net".into()),
                diagnostic: "550 5.1.1 no such user".into(),
            },
            FailedRecipient {
                address: "gone@example.org".into(),
                status: "5.1.2".into(),
                remote_mta: None,
                diagnostic: "domain example.org does not exist\r\nInjected: yes".into(),
            },
        ];
        let original = b"Subject: hello\r\nFrom: a@example.com\r\n\r\nbody text";
        let report = BounceReport {
            reporting_mta: "mx.example.com",
            from: "MAILER-DAEMON@mx.example.com",
            original_sender: "a@example.com",
            original_queue_id: "Q42",
            arrival: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            recipients: &failed,
            original_headers: header_block(original),
        };
        let text = String::from_utf8(build_bounce(&report, UNIX_EPOCH + Duration::from_secs(1_700_000_100))).expect("ascii");
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status; boundary="), "{text}");
        assert!(text.contains("To: <a@example.com>\r\n"));
        assert!(text.contains("Date: Tue, 14 Nov 2023 22:15:00 +0000\r\n"), "{text}");
        assert!(text.contains("Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(text.contains("Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.2\r\nDiagnostic-Code: x-shardgate; domain example.org does not exist??Injected: yes\r\n"));
        assert!(!text.contains("\r\nInjected: yes"));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\nContent-Description: Undelivered message headers\r\n\r\nSubject: hello\r\nFrom: a@example.com\r\n"));
        assert!(!text.contains("body text"));
        assert!(text.ends_with("--\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "bare LF in the report");
    }

    #[test]
    fn bounces_are_never_bounced() {
        assert!(!may_bounce(""));
        assert!(!may_bounce("<>"));
        assert!(may_bounce("a@example.com"));
    }

    #[test]
    fn status_comes_from_the_reply_when_it_is_permanent() {
        use shardgate_smtp::client::ServerReply;
        assert_eq!(status_from_reply(&ServerReply::new(550, "5.1.1 unknown")), "5.1.1");
        assert_eq!(status_from_reply(&ServerReply::new(550, "unknown")), "5.0.0");
        assert_eq!(status_from_reply(&ServerReply::new(451, "4.3.0 later")), "5.0.0");
    }

    #[test]
    fn header_block_stops_at_the_first_blank_line() {
        assert_eq!(header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(b"A: 1\n\nbody"), b"A: 1\n");
        assert_eq!(header_block(b"A: 1"), b"A: 1");
    }
}
