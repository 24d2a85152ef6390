//! The SMTP *client* side, sans-I/O: what shardgate's delivery engine says to the next hop and
//! how it reads the answers.
//!
//! Owns, in layers:
//! - [`ReplyReader`]: server bytes in, complete [`ServerReply`] values out (multiline
//!   `250-`/`250 ` replies, enhanced status codes, line and reply size limits);
//! - [`Capabilities`]: what an EHLO reply offers (STARTTLS, PIPELINING, SIZE, 8BITMIME,
//!   SMTPUTF8, AUTH mechanisms);
//! - [`command`]: the command lines we send (EHLO, MAIL with parameters, RCPT, DATA, RSET,
//!   STARTTLS, AUTH PLAIN/LOGIN, QUIT);
//! - [`Transaction`]: one MAIL/RCPT.../DATA exchange as a state machine, pipelined (RFC 2920)
//!   when the server offers it, that ends with **one outcome per recipient** — the RCPT
//!   reply that refused it, or the final reply to the message text that accepted it;
//! - [`DotStuffer`]: the message text encoder (RFC 5321 §4.5.2 dot-stuffing, bare LF → CRLF,
//!   the `.` terminator) that works chunk by chunk, so a 50 MB body is streamed from disk.
//!
//! Does not own: sockets, TLS, DNS, timeouts, or what a 4xx/5xx *means* for the queue (the
//! delivery engine in `shardgate-core` decides retry versus bounce).
//!
//! # Why not `lettre` or `mail-send`
//!
//! Both were evaluated (Rust 1.95, tokio + rustls). `lettre`'s `SmtpTransport::send_raw` and
//! `mail-send`'s `SmtpClient::send`/`data` take the whole message as one byte slice (no
//! streaming from a spool file), and both end the whole transaction with an error at the
//! first refused `RCPT TO`, so a message to five recipients where one is unknown cannot be
//! delivered to the other four with a per-recipient result. A queue needs exactly that
//! (deliver to the accepted, retry the 4xx ones, bounce the 5xx ones), plus the next hop's
//! final reply text for "delivered: 250 2.0.0 Ok: queued as …". What is left after the I/O is
//! this small state machine, which is fully testable without a network.

use std::collections::VecDeque;
use std::fmt;

use crate::reply::EnhancedStatus;

/// Longest reply line we accept from a server (RFC 5321 §4.5.3.1.5 says 512; real servers
/// send longer EHLO lines, so we are lenient).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multiline reply.
pub const MAX_REPLY_LINES: usize = 256;

/// Why talking to a server failed at the protocol level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A reply line does not start with a three-digit code and a separator.
    #[error("malformed reply line from the server: {line:?}")]
    MalformedReply {
        /// The line, lossily decoded and cut to 200 characters.
        line: String,
    },
    /// A line of a multiline reply carries a different code than the first.
    #[error("multiline reply mixes codes {first} and {other}")]
    MixedCodes {
        /// The first line's code.
        first: u16,
        /// The offending line's code.
        other: u16,
    },
    /// A reply line or a multiline reply exceeds our limits.
    #[error("reply from the server is too long")]
    ReplyTooLong,
    /// The server sent a reply when none was expected.
    #[error("unexpected reply from the server: {reply}")]
    UnexpectedReply {
        /// The reply.
        reply: ServerReply,
    },
    /// A method was called in a state where it makes no sense (a driver bug).
    #[error("transaction used out of order: {what}")]
    OutOfOrder {
        /// What was attempted.
        what: &'static str,
    },
}

/// One reply from a server: the code and its text lines (without the code prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    code: u16,
    lines: Vec<String>,
}

impl ServerReply {
    /// A reply with `code` and one line of text (for synthetic outcomes such as a timeout).
    pub fn new(code: u16, text: &str) -> ServerReply {
        ServerReply { code, lines: vec![text.replace(['\r', '\n'], " ")] }
    }

    /// The three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 to DATA, 334 to AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx (and anything outside 2xx..4xx, which a sane server never sends): give up.
    pub fn is_permanent(&self) -> bool {
        !(200..500).contains(&self.code)
    }

    /// The enhanced status code at the start of the first line (RFC 2034), if any and if its
    /// class matches the reply code.
    pub fn enhanced_status(&self) -> Option<EnhancedStatus> {
        let first = self.lines.first()?;
        let token = first.split(' ').next()?;
        let mut parts = token.split('.');
        let class = parts.next()?.parse::<u8>().ok()?;
        let subject = parts.next()?.parse::<u16>().ok()?;
        let detail = parts.next()?.parse::<u16>().ok()?;
        if parts.next().is_some() || u16::from(class) != self.code / 100 {
            return None;
        }
        EnhancedStatus::new(class, subject, detail).ok()
    }

    /// The whole reply on one line: `550 5.1.1 no such user` (lines joined with a space).
    pub fn one_line(&self) -> String {
        let mut out = self.code.to_string();
        for line in &self.lines {
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
        }
        out
    }
}

impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// Turns the bytes a server sends into replies.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buffer: Vec<u8>,
    partial: Option<ServerReply>,
    ready: VecDeque<ServerReply>,
}

impl ReplyReader {
    /// An empty reader.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Adds bytes read from the server; complete replies become available from
    /// [`ReplyReader::next_reply`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&line)?;
        }
        if self.buffer.len() > MAX_REPLY_LINE {
            return Err(ClientError::ReplyTooLong);
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ClientError> {
        if line.len() > MAX_REPLY_LINE {
            return Err(ClientError::ReplyTooLong);
        }
        let text = String::from_utf8_lossy(line);
        let malformed = || ClientError::MalformedReply { line: text.chars().take(200).collect() };
        let digits = text.get(..3).ok_or_else(malformed)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let code: u16 = digits.parse().map_err(|_| malformed())?;
        let (last, rest) = match text.as_bytes().get(3) {
            None => (true, ""),
            Some(b' ') => (true, text.get(4..).unwrap_or("")),
            Some(b'-') => (false, text.get(4..).unwrap_or("")),
            Some(_) => return Err(malformed()),
        };
        let reply = self.partial.get_or_insert_with(|| ServerReply { code, lines: Vec::new() });
        if reply.code != code {
            return Err(ClientError::MixedCodes { first: reply.code, other: code });
        }
        if reply.lines.len() >= MAX_REPLY_LINES {
            return Err(ClientError::ReplyTooLong);
        }
        reply.lines.push(rest.to_string());
        if last {
            if let Some(done) = self.partial.take() {
                self.ready.push_back(done);
            }
        }
        Ok(())
    }

    /// The next complete reply, if one has arrived.
    pub fn next_reply(&mut self) -> Option<ServerReply> {
        self.ready.pop_front()
    }

    /// True when bytes of an unfinished reply are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty() || self.partial.is_some()
    }
}

/// What a server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870), with the limit when the server gave one (0 means none).
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (the first line is the server's greeting name).
    pub fn from_ehlo(reply: &ServerReply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => caps.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        caps
    }

    /// Whether `mechanism` (upper case) is offered.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

/// The command lines a client sends, CRLF-terminated. Arguments come from the queue
/// (validated addresses) or the config; CR and LF are removed so nothing can inject a command.
pub mod command {
    use base64::Engine;

    fn clean(text: &str) -> String {
        text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
    }

    /// `EHLO name`.
    pub fn ehlo(name: &str) -> Vec<u8> {
        format!("EHLO {}\r\n", clean(name)).into_bytes()
    }

    /// `HELO name` (for servers that refuse EHLO).
    pub fn helo(name: &str) -> Vec<u8> {
        format!("HELO {}\r\n", clean(name)).into_bytes()
    }

    /// `STARTTLS`.
    pub fn starttls() -> Vec<u8> {
        b"STARTTLS\r\n".to_vec()
    }

    /// `AUTH PLAIN <initial response>` (RFC 4616).
    pub fn auth_plain(username: &str, password: &str) -> Vec<u8> {
        let mut token = Vec::with_capacity(username.len() + password.len() + 2);
        token.push(0);
        token.extend_from_slice(username.as_bytes());
        token.push(0);
        token.extend_from_slice(password.as_bytes());
        format!("AUTH PLAIN {}\r\n", base64::engine::general_purpose::STANDARD.encode(token)).into_bytes()
    }

    /// The three lines of an `AUTH LOGIN` exchange: the command, then the answers to the
    /// username and password challenges.
    pub fn auth_login(username: &str, password: &str) -> [Vec<u8>; 3] {
        let b64 = |s: &str| format!("{}\r\n", base64::engine::general_purpose::STANDARD.encode(s)).into_bytes();
        [b"AUTH LOGIN\r\n".to_vec(), b64(username), b64(password)]
    }

    /// `RSET`.
    pub fn rset() -> Vec<u8> {
        b"RSET\r\n".to_vec()
    }

    /// `QUIT`.
    pub fn quit() -> Vec<u8> {
        b"QUIT\r\n".to_vec()
    }
}

/// The `MAIL FROM` parameters of a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailOptions {
    /// `SIZE=` (sent only when the server offers SIZE).
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (sent only when the server offers 8BITMIME).
    pub eight_bit: bool,
    /// `SMTPUTF8` (sent only when the server offers it).
    pub smtputf8: bool,
}

/// What happened to one recipient of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// The server took responsibility: the final reply to the message text.
    Accepted(ServerReply),
    /// The server refused the transaction for it: the MAIL or final reply (or a synthetic
    /// one for a lost connection) that said so (4xx: try again later; 5xx: give up).
    Refused(ServerReply),
    /// The server refused this recipient itself, in its reply to `RCPT TO` — the one refusal
    /// that says something about the address rather than the message.
    RecipientRefused(ServerReply),
}

impl RecipientOutcome {
    /// The reply behind the outcome.
    pub fn reply(&self) -> &ServerReply {
        match self {
            RecipientOutcome::Accepted(reply) | RecipientOutcome::Refused(reply) | RecipientOutcome::RecipientRefused(reply) => {
                reply
            }
        }
    }
}

/// The end of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    /// One outcome per recipient, in the order given to [`Transaction::new`].
    pub recipients: Vec<RecipientOutcome>,
    /// The transaction ended without the message text being accepted or refused (a refused
    /// MAIL, or no recipient accepted): send `RSET` before reusing the connection.
    pub needs_rset: bool,
    /// The server said it is closing the connection (421): do not reuse it.
    pub connection_closing: bool,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes, then read replies and feed them to [`Transaction::on_reply`].
    Send(Vec<u8>),
    /// Read more replies.
    Read,
    /// The server said 354: stream the message text through a [`DotStuffer`], send its
    /// terminator, then call [`Transaction::body_sent`] and read the final reply.
    SendBody,
    /// Finished.
    Done(TransactionOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    /// Text streaming: no reply expected until `body_sent`.
    Body,
    Final,
    Finished,
}

/// One mail transaction (MAIL, RCPT for each recipient, DATA, the text, the final reply).
///
/// With `pipelining`, the whole envelope and `DATA` go out in one write (RFC 2920 §3.1) and
/// the replies are matched in order; without, each command waits for its reply.
#[derive(Debug)]
pub struct Transaction {
    mail: Vec<u8>,
    rcpt: Vec<Vec<u8>>,
    pipelining: bool,
    expect: Expect,
    /// Per recipient: `None` while unknown, the RCPT reply once received (or the MAIL or
    /// 421 reply that stands for it).
    rcpt_replies: Vec<Option<ServerReply>>,
    /// Per recipient: the slot holds the server's own reply to its `RCPT TO`.
    rcpt_answered: Vec<bool>,
}

impl Transaction {
    /// A transaction from `reverse_path` (the address without brackets; empty for the null
    /// sender of bounces) to `recipients`, using what `capabilities` allow of `options`.
    pub fn new(reverse_path: &str, recipients: &[String], options: &MailOptions, capabilities: &Capabilities) -> Transaction {
        let clean = |s: &str| s.chars().filter(|c| !matches!(c, '\r' | '\n' | '<' | '>')).collect::<String>();
        let mut mail = format!("MAIL FROM:<{}>", clean(reverse_path));
        if let (Some(size), Some(_)) = (options.size, capabilities.size) {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if options.eight_bit && capabilities.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if options.smtputf8 && capabilities.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        Transaction {
            mail: mail.into_bytes(),
            rcpt: recipients.iter().map(|r| format!("RCPT TO:<{}>\r\n", clean(r)).into_bytes()).collect(),
            pipelining: capabilities.pipelining,
            expect: Expect::Mail,
            rcpt_replies: vec![None; recipients.len()],
            rcpt_answered: vec![false; recipients.len()],
        }
    }

    /// The first bytes to send.
    pub fn start(&mut self) -> Step {
        if self.rcpt.is_empty() {
            self.expect = Expect::Finished;
            return Step::Done(TransactionOutcome { recipients: Vec::new(), needs_rset: false, connection_closing: false });
        }
        if self.pipelining {
            let mut out = self.mail.clone();
            for rcpt in &self.rcpt {
                out.extend_from_slice(rcpt);
            }
            out.extend_from_slice(b"DATA\r\n");
            Step::Send(out)
        } else {
            Step::Send(self.mail.clone())
        }
    }

    /// Feeds the next reply from the server.
    pub fn on_reply(&mut self, reply: ServerReply) -> Result<Step, ClientError> {
        match self.expect {
            Expect::Mail => {
                if reply.is_positive() {
                    self.expect = Expect::Rcpt(0);
                    return Ok(if self.pipelining { Step::Read } else { Step::Send(self.rcpt[0].clone()) });
                }
                // Everything is refused with MAIL's reply. Pipelined, the RCPTs and DATA
                // replies (503s) still arrive; they are read and ignored.
                let closing = reply.code() == 421;
                for slot in &mut self.rcpt_replies {
                    *slot = Some(reply.clone());
                }
                if self.pipelining && !closing {
                    self.expect = Expect::Rcpt(0);
                    return Ok(Step::Read);
                }
                Ok(self.finish(None, closing))
            }
            Expect::Rcpt(index) => {
                let closing = reply.code() == 421;
                if self.rcpt_replies[index].is_none() {
                    self.rcpt_replies[index] = Some(reply);
                    self.rcpt_answered[index] = true;
                }
                if closing {
                    let refusal = ServerReply::new(421, "connection closed by the server");
                    for slot in &mut self.rcpt_replies {
                        slot.get_or_insert_with(|| refusal.clone());
                    }
                    return Ok(self.finish(None, true));
                }
                let next = index + 1;
                if next < self.rcpt.len() {
                    self.expect = Expect::Rcpt(next);
                    return Ok(if self.pipelining { Step::Read } else { Step::Send(self.rcpt[next].clone()) });
                }
                self.expect = Expect::Data;
                if self.pipelining {
                    return Ok(Step::Read);
                }
                if self.any_accepted() {
                    Ok(Step::Send(b"DATA\r\n".to_vec()))
                } else {
                    Ok(self.finish(None, false))
                }
            }
            Expect::Data => {
                if reply.code() == 354 {
                    if self.any_accepted() {
                        self.expect = Expect::Body;
                        return Ok(Step::SendBody);
                    }
                    // A server that says 354 with no recipient accepted (RFC 2920 §3.1 says
                    // it must not): end the empty text and ignore its reply.
                    self.expect = Expect::Final;
                    return Ok(Step::Send(b".\r\n".to_vec()));
                }
                let closing = reply.code() == 421;
                if self.any_accepted() {
                    // DATA itself failed: the accepted recipients get that reply.
                    return Ok(self.finish(Some(reply), closing));
                }
                Ok(self.finish(None, closing))
            }
            Expect::Body => Err(ClientError::UnexpectedReply { reply }),
            Expect::Final => {
                let closing = reply.code() == 421;
                if self.any_accepted() {
                    Ok(self.finish(Some(reply), closing))
                } else {
                    Ok(self.finish(None, closing))
                }
            }
            Expect::Finished => Err(ClientError::UnexpectedReply { reply }),
        }
    }

    /// The message text and its terminator have been sent; the final reply comes next.
    pub fn body_sent(&mut self) -> Result<(), ClientError> {
        if self.expect != Expect::Body {
            return Err(ClientError::OutOfOrder { what: "body_sent before 354" });
        }
        self.expect = Expect::Final;
        Ok(())
    }

    /// Ends the transaction without a server reply (connection lost, timeout): every
    /// recipient not yet refused gets `reply` (a synthetic 4xx), except that once the text
    /// was sent the outcome is unknown and the caller must decide (see `shardgate-core`'s
    /// delivery engine: it defers, accepting a possible duplicate over a loss).
    pub fn abort(&mut self, reply: ServerReply) -> TransactionOutcome {
        let recipients = self
            .rcpt_replies
            .iter()
            .zip(&self.rcpt_answered)
            .map(|(slot, answered)| match slot {
                Some(r) if !r.is_positive() && *answered => RecipientOutcome::RecipientRefused(r.clone()),
                Some(r) if !r.is_positive() => RecipientOutcome::Refused(r.clone()),
                _ => RecipientOutcome::Refused(reply.clone()),
            })
            .collect();
        self.expect = Expect::Finished;
        TransactionOutcome { recipients, needs_rset: false, connection_closing: true }
    }

    fn any_accepted(&self) -> bool {
        self.rcpt_replies.iter().any(|r| r.as_ref().is_some_and(ServerReply::is_positive))
    }

    fn finish(&mut self, final_reply: Option<ServerReply>, connection_closing: bool) -> Step {
        let needs_rset = final_reply.is_none();
        let unknown = ServerReply::new(451, "no reply from the server");
        let recipients = self
            .rcpt_replies
            .iter()
            .zip(&self.rcpt_answered)
            .map(|(slot, answered)| {
                let rcpt = slot.clone().unwrap_or_else(|| unknown.clone());
                match (&final_reply, rcpt.is_positive()) {
                    (_, false) if *answered => RecipientOutcome::RecipientRefused(rcpt),
                    (_, false) => RecipientOutcome::Refused(rcpt),
                    (Some(last), true) if last.is_positive() => RecipientOutcome::Accepted(last.clone()),
                    (Some(last), true) => RecipientOutcome::Refused(last.clone()),
                    (None, true) => RecipientOutcome::Refused(unknown.clone()),
                }
            })
            .collect();
        self.expect = Expect::Finished;
        Step::Done(TransactionOutcome { recipients, needs_rset, connection_closing })
    }
}

/// Encodes message text for `DATA`, chunk by chunk: a `.` at the start of a line is doubled,
/// a bare LF becomes CRLF, and [`DotStuffer::finish`] gives the terminator.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    after_cr: bool,
    wrote_anything: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// An encoder at the start of the text.
    pub fn new() -> DotStuffer {
        DotStuffer { at_line_start: true, after_cr: false, wrote_anything: false }
    }

    /// Appends the encoded form of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        for &byte in chunk {
            if self.at_line_start && byte == b'.' {
                out.push(b'.');
            }
            if byte == b'\n' && !self.after_cr {
                out.push(b'\r');
            }
            out.push(byte);
            self.after_cr = byte == b'\r';
            self.at_line_start = byte == b'\n';
            self.wrote_anything = true;
        }
    }

    /// The end-of-data sequence: `.\r\n` after a complete line, else `\r\n.\r\n`.
    pub fn finish(&self) -> &'static [u8] {
        if !self.wrote_anything || self.at_line_start {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(bytes: &[u8]) -> Vec<ServerReply> {
        let mut reader = ReplyReader::new();
        reader.feed(bytes).expect("valid");
        std::iter::from_fn(|| reader.next_reply()).collect()
    }

    fn reply(code: u16, text: &str) -> ServerReply {
        ServerReply::new(code, text)
    }

    #[test]
    fn reader_joins_multiline_replies_across_feeds() {
        let mut reader = ReplyReader::new();
        reader.feed(b"250-mx.example\r\n250-PIPE").expect("feed");
        assert!(reader.next_reply().is_none());
        assert!(reader.has_partial());
        reader.feed(b"LINING\r\n250 STARTTLS\r\n220 ready\n").expect("feed");
        let ehlo = reader.next_reply().expect("ehlo");
        assert_eq!(ehlo.code(), 250);
        assert_eq!(ehlo.lines(), ["mx.example", "PIPELINING", "STARTTLS"]);
        assert_eq!(reader.next_reply().expect("greeting").one_line(), "220 ready");
        assert!(!reader.has_partial());
    }

    #[test]
    fn reader_rejects_garbage_mixed_codes_and_endless_lines() {
        assert!(matches!(ReplyReader::new().feed(b"hello\r\n"), Err(ClientError::MalformedReply { .. })));
        assert!(matches!(ReplyReader::new().feed(b"25x ok\r\n"), Err(ClientError::MalformedReply { .. })));
        assert!(matches!(ReplyReader::new().feed(b"250-a\r\n251 b\r\n"), Err(ClientError::MixedCodes { first: 250, other: 251 })));
        assert_eq!(ReplyReader::new().feed(&vec![b'2'; MAX_REPLY_LINE + 1]), Err(ClientError::ReplyTooLong));
        assert_eq!(replies(b"250\r\n")[0].lines(), [""]);
    }

    #[test]
    fn enhanced_status_is_read_only_when_its_class_matches() {
        assert_eq!(reply(550, "5.1.1 no such user").enhanced_status().map(|s| s.to_string()), Some("5.1.1".into()));
        assert_eq!(reply(550, "4.1.1 confused").enhanced_status(), None);
        assert_eq!(reply(250, "Ok").enhanced_status(), None);
        assert!(reply(451, "x").is_transient() && reply(554, "x").is_permanent() && reply(250, "x").is_positive());
    }

    #[test]
    fn capabilities_from_ehlo() {
        let ehlo = &replies(b"250-mx\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-AUTH PLAIN login\r\n250-STARTTLS\r\n250 PIPELINING\r\n")[0];
        let caps = Capabilities::from_ehlo(ehlo);
        assert!(caps.starttls && caps.pipelining && caps.eight_bit_mime && !caps.smtputf8);
        assert_eq!(caps.size, Some(1000));
        assert!(caps.offers_auth("LOGIN") && caps.offers_auth("PLAIN") && !caps.offers_auth("CRAM-MD5"));
    }

    #[test]
    fn commands_cannot_inject_lines() {
        assert_eq!(command::ehlo("a\r\nRSET"), b"EHLO aRSET\r\n");
        assert_eq!(command::auth_plain("u", "p"), b"AUTH PLAIN AHUAcA==\r\n");
        assert_eq!(command::auth_login("u", "p")[1], b"dQ==\r\n");
        let caps = Capabilities::default();
        let mut t = Transaction::new("a@b\r\nRSET", &["c@d>\r\nX".into()], &MailOptions::default(), &caps);
        assert_eq!(t.start(), Step::Send(b"MAIL FROM:<a@bRSET>\r\n".to_vec()));
        assert_eq!(t.on_reply(reply(250, "ok")), Ok(Step::Send(b"RCPT TO:<c@dX>\r\n".to_vec())));
    }

    #[test]
    fn pipelined_transaction_with_one_refused_recipient() {
        let caps = Capabilities { pipelining: true, size: Some(0), eight_bit_mime: true, ..Default::default() };
        let options = MailOptions { size: Some(42), eight_bit: true, smtputf8: true };
        let recipients = vec!["a@x".to_string(), "b@x".to_string(), "c@x".to_string()];
        let mut t = Transaction::new("s@y", &recipients, &options, &caps);
        assert_eq!(
            t.start(),
            Step::Send(b"MAIL FROM:<s@y> SIZE=42 BODY=8BITMIME\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n".to_vec())
        );
        assert_eq!(t.on_reply(reply(250, "2.1.0 ok")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(250, "2.1.5 ok")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(550, "5.1.1 unknown")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(450, "4.2.0 try later")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(354, "go ahead")), Ok(Step::SendBody));
        assert!(t.on_reply(reply(250, "early")).is_err());
        t.body_sent().expect("after 354");
        let Ok(Step::Done(outcome)) = t.on_reply(reply(250, "2.0.0 Ok: queued as ABC")) else { panic!("not done") };
        assert_eq!(
            outcome.recipients,
            vec![
                RecipientOutcome::Accepted(reply(250, "2.0.0 Ok: queued as ABC")),
                RecipientOutcome::RecipientRefused(reply(550, "5.1.1 unknown")),
                RecipientOutcome::RecipientRefused(reply(450, "4.2.0 try later")),
            ]
        );
        assert!(!outcome.needs_rset && !outcome.connection_closing);
    }

    #[test]
    fn unpipelined_transaction_stops_before_data_when_nobody_is_accepted() {
        let mut t = Transaction::new("", &["a@x".into()], &MailOptions::default(), &Capabilities::default());
        assert_eq!(t.start(), Step::Send(b"MAIL FROM:<>\r\n".to_vec()));
        assert_eq!(t.on_reply(reply(250, "ok")), Ok(Step::Send(b"RCPT TO:<a@x>\r\n".to_vec())));
        let Ok(Step::Done(outcome)) = t.on_reply(reply(550, "no")) else { panic!("not done") };
        assert_eq!(outcome.recipients, vec![RecipientOutcome::RecipientRefused(reply(550, "no"))]);
        assert!(outcome.needs_rset);
    }

    #[test]
    fn refused_mail_refuses_everyone_and_pipelined_503s_are_consumed() {
        let caps = Capabilities { pipelining: true, ..Default::default() };
        let mut t = Transaction::new("s@y", &["a@x".into(), "b@x".into()], &MailOptions::default(), &caps);
        let _ = t.start();
        assert_eq!(t.on_reply(reply(451, "4.3.0 busy")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(503, "5.5.1 no MAIL")), Ok(Step::Read));
        assert_eq!(t.on_reply(reply(503, "5.5.1 no MAIL")), Ok(Step::Read));
        let Ok(Step::Done(outcome)) = t.on_reply(reply(503, "5.5.1 no valid recipients")) else { panic!("not done") };
        assert!(outcome.recipients.iter().all(|r| r == &RecipientOutcome::Refused(reply(451, "4.3.0 busy"))));
        assert!(outcome.needs_rset);
    }

    #[test]
    fn a_421_ends_the_transaction_and_the_connection() {
        let mut t = Transaction::new("s@y", &["a@x".into(), "b@x".into()], &MailOptions::default(), &Capabilities::default());
        let _ = t.start();
        let _ = t.on_reply(reply(250, "ok"));
        let Ok(Step::Done(outcome)) = t.on_reply(reply(421, "4.4.2 bye")) else { panic!("not done") };
        assert!(outcome.connection_closing);
        assert!(outcome.recipients.iter().all(|r| r.reply().is_transient()));
    }

    #[test]
    fn final_refusal_applies_to_accepted_recipients_and_abort_defers_everyone() {
        let mut t = Transaction::new("s@y", &["a@x".into()], &MailOptions::default(), &Capabilities::default());
        let _ = t.start();
        let _ = t.on_reply(reply(250, "ok"));
        assert_eq!(t.on_reply(reply(250, "ok")), Ok(Step::Send(b"DATA\r\n".to_vec())));
        assert_eq!(t.on_reply(reply(354, "go")), Ok(Step::SendBody));
        t.body_sent().expect("body");
        let Ok(Step::Done(outcome)) = t.on_reply(reply(554, "5.7.1 spam")) else { panic!("not done") };
        assert_eq!(outcome.recipients, vec![RecipientOutcome::Refused(reply(554, "5.7.1 spam"))]);

        let mut t = Transaction::new("s@y", &["a@x".into()], &MailOptions::default(), &Capabilities::default());
        let _ = t.start();
        let outcome = t.abort(reply(451, "4.4.2 timeout"));
        assert_eq!(outcome.recipients, vec![RecipientOutcome::Refused(reply(451, "4.4.2 timeout"))]);
    }

    #[test]
    fn dot_stuffing_across_chunks() {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        stuffer.encode(b".first\r\nsecond\r", &mut out);
        stuffer.encode(b"\n.", &mut out);
        stuffer.encode(b".third\nlast", &mut out);
        assert_eq!(out, b"..first\r\nsecond\r\n...third\r\nlast");
        assert_eq!(stuffer.finish(), b"\r\n.\r\n");
        let mut complete = DotStuffer::new();
        complete.encode(b"x\r\n", &mut Vec::new());
        assert_eq!(complete.finish(), b".\r\n");
        assert_eq!(DotStuffer::new().finish(), b".\r\n");
    }
}
