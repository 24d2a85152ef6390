//! SMTP replies: a basic code, an optional enhanced status code, and one or more text lines.
//!
//! Owns: the [`Reply`] type and its wire rendering (RFC 5321 §4.2, multiline `250-` /
//! `250 `), enhanced status codes (RFC 3463, carried on every line as RFC 2034 requires).
//! A `Reply` that exists is always valid to send: codes are 200..=599, the enhanced class
//! matches the first digit, and text never contains CR or LF.
//! Does not own: choosing which reply to send (that is the session's job).

use crate::error::SmtpError;
use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`, e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// A status code; `class` must be 2, 4 or 5 and subject/detail at most 999.
    pub fn new(class: u8, subject: u16, detail: u16) -> Result<Self, SmtpError> {
        let status = EnhancedStatus {
            class,
            subject,
            detail,
        };
        if matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999 {
            Ok(status)
        } else {
            Err(SmtpError::InvalidReply {
                code: 0,
                status: Some(status),
            })
        }
    }

    /// The class digit (2 success, 4 persistent transient failure, 5 permanent failure).
    pub fn class(&self) -> u8 {
        self.class
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply, possibly multiline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// Builds a reply from caller-supplied parts (e.g. a route's `reject` action).
    ///
    /// Fails if `code` is outside 200..=599 or `status`'s class differs from the code's first
    /// digit. `text` is split into lines on `\n`; CR characters are dropped, so a reply
    /// can never inject extra protocol lines.
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: &str) -> Result<Self, SmtpError> {
        let class_matches = status.is_none_or(|s| u16::from(s.class) == code / 100);
        if !(200..=599).contains(&code) || !class_matches {
            return Err(SmtpError::InvalidReply { code, status });
        }
        Ok(Reply {
            code,
            status,
            lines: split_lines(text),
        })
    }

    /// A reply from the crate's own constants. The constants are known valid, so this
    /// cannot fail; it is crate-private so no caller can bypass [`Reply::new`]'s checks.
    pub(crate) fn fixed(code: u16, status: (u8, u16, u16), text: &str) -> Self {
        Reply {
            code,
            status: Some(EnhancedStatus {
                class: status.0,
                subject: status.1,
                detail: status.2,
            }),
            lines: split_lines(text),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO, SASL `334` challenges).
    pub(crate) fn plain(code: u16, lines: Vec<String>) -> Self {
        let lines = lines.iter().flat_map(|line| split_lines(line)).collect();
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if the reply carries one.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The text lines, without code prefixes.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`250-first\r\n250 last\r\n`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (index, line) in self.lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            let rendered = match (self.status, line.is_empty()) {
                (Some(status), false) => format!("{}{separator}{status} {line}\r\n", self.code),
                (Some(status), true) => format!("{}{separator}{status}\r\n", self.code),
                (None, false) => format!("{}{separator}{line}\r\n", self.code),
                (None, true) => format!("{}{separator}\r\n", self.code),
            };
            out.extend_from_slice(rendered.as_bytes());
        }
    }

    /// The wire form as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

fn split_lines(text: &str) -> Vec<String> {
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| line.chars().filter(|c| *c != '\r').collect())
        .collect();
    if lines.is_empty() {
        vec![String::new()]
    } else {
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_status() {
        let reply = Reply::fixed(250, (2, 1, 0), "Ok");
        assert_eq!(reply.to_bytes(), b"250 2.1.0 Ok\r\n");
    }

    #[test]
    fn multiline_puts_status_on_every_line_and_space_on_last() {
        let status = EnhancedStatus::new(5, 7, 1).unwrap();
        let reply = Reply::new(550, Some(status), "first\nsecond\r\nthird").unwrap();
        assert_eq!(
            reply.to_bytes(),
            b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
        );
    }

    #[test]
    fn plain_reply_without_status() {
        let reply = Reply::plain(250, vec!["host".into(), "PIPELINING".into()]);
        assert_eq!(reply.to_bytes(), b"250-host\r\n250 PIPELINING\r\n");
        assert_eq!(
            Reply::plain(334, vec![String::new()]).to_bytes(),
            b"334 \r\n"
        );
    }

    #[test]
    fn rejects_out_of_range_code_and_mismatched_class() {
        assert!(Reply::new(199, None, "x").is_err());
        assert!(Reply::new(600, None, "x").is_err());
        let temp = EnhancedStatus::new(4, 2, 0).unwrap();
        assert!(Reply::new(550, Some(temp), "x").is_err());
        assert!(EnhancedStatus::new(3, 0, 0).is_err());
        assert!(EnhancedStatus::new(5, 1000, 0).is_err());
        assert!(Reply::new(450, Some(temp), "x").unwrap().is_error());
    }
}
