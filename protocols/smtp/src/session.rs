//! The ESMTP server session: a deterministic state machine driven by bytes and `Instant`s.
//!
//! Owns: the greeting (and pre-greeting talker detection), command framing (512-octet
//! lines, 12288 for `AUTH`), command sequencing (`503`), PIPELINING (every buffered command
//! is processed in order, replies are queued in order), `DATA` with dot-unstuffing and
//! bare-LF rejection, `BDAT` chunks, `SIZE` enforcement while reading (`552 5.3.4`),
//! recipient limits, the open-relay guard, STARTTLS state reset (RFC 3207 §4.2), the SASL
//! PLAIN/LOGIN exchanges, the error budget (`421 4.7.0`) and per-phase timeouts (`421 4.4.2`).
//!
//! Does not own: sockets, TLS, clocks, routing decisions, password checks or the queue.
//! Those are the caller's: it feeds bytes with [`Session::feed`], writes out
//! [`Session::take_transmit`], drains [`Session::poll_event`] and answers each request event
//! with the matching decision method. While a decision is outstanding the session processes
//! no further input (it buffers it), which is what keeps replies in order and makes
//! "250 only after the message is durable" hold.
//!
//! ```text
//! Event::RcptRequested    -> Session::rcpt_decision(RcptDecision)
//! Event::AuthRequested    -> Session::auth_result(bool)
//! Event::StartTls         -> (TLS handshake) Session::tls_started(now)
//! Event::MessageData      -> append to the spool (already dot-unstuffed)
//! Event::MessageComplete  -> Session::message_result(MessageOutcome)
//! Event::MessageAborted   -> discard the spooled data
//! ```

use crate::address::{ForwardPath, ReversePath};
use crate::command::{decode_sasl_response, AuthMechanism, BodyType, MailParameters, SmtpCommand};
use crate::config::SessionConfig;
use crate::dot::{BodyEnd, DotDecoder};
use crate::error::SmtpError;
use crate::reply::Reply;
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Longest command line including CRLF (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// Longest `AUTH` command or SASL response line including CRLF (RFC 4954 §4).
pub const MAX_AUTH_LINE: usize = 12288;
/// Message data is handed out in events of at most about this many octets.
pub const DATA_EVENT_CHUNK: usize = 64 * 1024;

/// Input buffer capacity kept by a session whose input is fully processed.
const IDLE_INPUT_CAPACITY: usize = 4096;

/// Which listener accepted the connection; decides TLS and AUTH requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Port 25 style MX service: STARTTLS optional, AUTH optional.
    Smtp,
    /// Port 587 submission: STARTTLS, AUTH required before `MAIL`.
    Submission,
    /// Port 465 submission over implicit TLS: TLS from the start, AUTH required.
    SubmissionTls,
}

/// Facts about the connection the caller knows and the session needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address (relay-network check, trace header).
    pub peer_ip: IpAddr,
    /// The listener the client connected to.
    pub listener: ListenerKind,
}

/// A password received over SASL. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    /// The raw password octets, to hand to `UserDirectory::verify`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How the message body was transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTransfer {
    /// `DATA` with dot-stuffing.
    Data,
    /// `BDAT` chunks (RFC 3030).
    Bdat,
}

/// Everything known about a message except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The `EHLO`/`HELO` argument.
    pub helo: String,
    /// True after `EHLO`, false after `HELO`.
    pub esmtp: bool,
    /// The sender.
    pub reverse_path: ReversePath,
    /// The `MAIL FROM` parameters.
    pub parameters: MailParameters,
    /// Accepted recipients, in order.
    pub recipients: Vec<ForwardPath>,
    /// The SASL user name, if the client authenticated.
    pub authenticated_user: Option<String>,
    /// True when the session ran over TLS.
    pub tls: bool,
    /// The client's address.
    pub peer_ip: IpAddr,
    /// Octets of content delivered in `MessageData` events.
    pub size: u64,
    /// `DATA` or `BDAT`.
    pub transfer: BodyTransfer,
}

impl Envelope {
    /// The RFC 3848 protocol name for the `Received:` header (`ESMTPSA`, `UTF8SMTPS`, ...).
    pub fn protocol_name(&self) -> &'static str {
        match (
            self.esmtp,
            self.parameters.smtputf8,
            self.tls,
            self.authenticated_user.is_some(),
        ) {
            (false, _, _, _) => "SMTP",
            (true, true, true, true) => "UTF8SMTPSA",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, false, false) => "UTF8SMTP",
            (true, false, true, true) => "ESMTPSA",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, false, false) => "ESMTP",
        }
    }

    /// A `Received:` trace header (RFC 5321 §4.4) to prepend to the stored message.
    /// `date` is an RFC 5322 date-time the caller formats from its own clock.
    pub fn received_header(&self, hostname: &str, queue_id: &str, date: &str) -> String {
        let recipient = match self.recipients.as_slice() {
            [single] => format!("\r\n\tfor {single}"),
            _ => String::new(),
        };
        format!(
            "Received: from {} ([{}])\r\n\tby {} (shardgate) with {} id {}{}; {}\r\n",
            self.helo.replace(['\r', '\n'], ""),
            self.peer_ip,
            hostname,
            self.protocol_name(),
            queue_id,
            recipient,
            date
        )
    }
}

/// Why a message in progress was dropped; the caller discards what it spooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The message grew past `max_message_size` (the client got `552 5.3.4`).
    SizeExceeded,
    /// A bare LF appeared in `DATA` (the client got `550 5.5.2` and was disconnected).
    BareLineFeed,
    /// The client went quiet past the data timeout.
    Timeout,
    /// `RSET`, `EHLO`/`HELO` or `QUIT` in the middle of a `BDAT` transfer.
    Reset,
    /// The error budget ran out.
    TooManyErrors,
}

/// Something the caller must act on. Request events block the session until answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A syntactically valid, relay-permitted recipient: answer with [`Session::rcpt_decision`].
    RcptRequested {
        /// The transaction's sender.
        from: ReversePath,
        /// The recipient asked for.
        to: ForwardPath,
    },
    /// Credentials to check: answer with [`Session::auth_result`].
    AuthRequested {
        /// PLAIN or LOGIN.
        mechanism: AuthMechanism,
        /// The authentication identity.
        username: String,
        /// The password.
        password: Password,
    },
    /// `220` was queued: write it out, run the TLS handshake, then call
    /// [`Session::tls_started`]. Bytes already buffered were discarded (RFC 3207 §4.2 and
    /// the STARTTLS command-injection defence).
    StartTls,
    /// Message content, already dot-unstuffed (for `DATA`) or raw (for `BDAT`).
    MessageData(Vec<u8>),
    /// End of message: make it durable, then answer with [`Session::message_result`].
    MessageComplete {
        /// Sender, recipients and session facts.
        envelope: Envelope,
    },
    /// The message in progress is dropped; discard its spooled data.
    MessageAborted {
        /// Why.
        reason: AbortReason,
    },
}

/// The caller's answer to [`Event::RcptRequested`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptDecision {
    /// Accept the recipient (`250 2.1.5 Ok`).
    Accept,
    /// Reject with this reply (e.g. `550 5.1.1 <x@y>: Recipient address rejected`).
    Reject(Reply),
}

/// The caller's answer to [`Event::MessageComplete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// The message is durably queued (`250 2.0.0 Ok: queued as <queue_id>`).
    Accepted {
        /// The queue id reported to the client.
        queue_id: String,
    },
    /// Refused with this reply (e.g. a route's `reject` action).
    Rejected(Reply),
    /// Could not be made durable now (`451 4.3.0`).
    TempFail,
}

#[derive(Debug, Clone)]
enum AuthStep {
    PlainResponse,
    LoginUsername,
    LoginPassword { username: String },
}

#[derive(Debug, Clone)]
enum Phase {
    PreGreeting {
        greet_at: Instant,
    },
    Command,
    AuthResponse(AuthStep),
    Data(DotDecoder),
    Bdat {
        remaining: u64,
        last: bool,
        rejection: Option<Reply>,
    },
    AwaitingTls,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Rcpt,
    Auth,
    Message,
    StartTls,
}

#[derive(Debug, Clone)]
struct Transaction {
    from: ReversePath,
    parameters: MailParameters,
    recipients: Vec<ForwardPath>,
    rcpt_attempts: u32,
    pending_rcpt: Option<ForwardPath>,
    transfer: Option<BodyTransfer>,
    size: u64,
    oversized: bool,
}

/// One SMTP server session (one TCP connection).
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    connection: ConnectionInfo,
    phase: Phase,
    input: Vec<u8>,
    input_pos: usize,
    discarding_long_line: bool,
    output: Vec<u8>,
    events: VecDeque<Event>,
    data_chunk: Vec<u8>,
    pending: Option<Pending>,
    helo: Option<(String, bool)>,
    tls_active: bool,
    authenticated_user: Option<String>,
    auth_username: Option<String>,
    transaction: Option<Transaction>,
    errors: u32,
    last_activity: Instant,
    /// [`Session::shut_down`] was called: the next command gets `421 4.3.2`.
    shutting_down: bool,
}

impl Session {
    /// Starts a session for a freshly accepted connection (after the TLS handshake for
    /// [`ListenerKind::SubmissionTls`]). With no greeting delay the `220` is queued at once;
    /// otherwise it is sent by [`Session::handle_timeout`] once the delay has passed.
    pub fn new(config: Arc<SessionConfig>, connection: ConnectionInfo, now: Instant) -> Session {
        let greeting_delay = config.greeting_delay;
        let mut session = Session {
            config,
            connection,
            phase: Phase::Command,
            input: Vec::new(),
            input_pos: 0,
            discarding_long_line: false,
            output: Vec::new(),
            events: VecDeque::new(),
            data_chunk: Vec::new(),
            pending: None,
            helo: None,
            tls_active: connection.listener == ListenerKind::SubmissionTls,
            authenticated_user: None,
            auth_username: None,
            transaction: None,
            errors: 0,
            last_activity: now,
            shutting_down: false,
        };
        if greeting_delay.is_zero() {
            session.send_greeting(now);
        } else {
            session.phase = Phase::PreGreeting {
                greet_at: now + greeting_delay,
            };
        }
        session
    }

    /// Feeds bytes read from the client. Processes as many buffered commands as possible;
    /// afterwards collect [`Session::take_transmit`] and [`Session::poll_event`].
    pub fn feed(&mut self, input: &[u8], now: Instant) {
        if input.is_empty() {
            return;
        }
        match self.phase {
            Phase::Closed => return,
            // Plain text after STARTTLS and before the handshake is an injection attempt.
            Phase::AwaitingTls => return,
            Phase::PreGreeting { greet_at } if now < greet_at => {
                self.write(&Reply::fixed(
                    554,
                    (5, 5, 1),
                    &format!(
                        "{} Error: SMTP protocol synchronization",
                        self.config.hostname
                    ),
                ));
                self.close();
                return;
            }
            Phase::PreGreeting { .. } => self.send_greeting(now),
            _ => {}
        }
        self.last_activity = now;
        self.input.extend_from_slice(input);
        self.process();
    }

    /// Bytes to write to the client, taken out of the session.
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Bytes waiting to be written, without taking them; pair with [`Session::consume_transmit`].
    pub fn pending_transmit(&self) -> &[u8] {
        &self.output
    }

    /// Marks the first `written` bytes of [`Session::pending_transmit`] as written.
    pub fn consume_transmit(&mut self, written: usize) {
        let written = written.min(self.output.len());
        self.output.drain(..written);
    }

    /// The next event the caller must handle, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Closed | Phase::AwaitingTls => None,
            Phase::PreGreeting { greet_at } => Some(*greet_at),
            _ if self.pending.is_some() => None,
            Phase::Data(_) | Phase::Bdat { .. } => {
                Some(self.last_activity + self.config.data_timeout)
            }
            Phase::Command | Phase::AuthResponse(_) => {
                Some(self.last_activity + self.config.command_timeout)
            }
        }
    }

    /// Acts on time passing: sends a delayed greeting, or closes an idle session with
    /// `421 4.4.2`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::PreGreeting { greet_at } = self.phase {
            if now >= greet_at {
                self.send_greeting(now);
            }
            return;
        }
        if self.next_timeout().is_some_and(|deadline| now >= deadline) {
            self.abandon_transaction(AbortReason::Timeout);
            self.write(&Reply::fixed(
                421,
                (4, 4, 2),
                &format!("{} Error: timeout exceeded", self.config.hostname),
            ));
            self.close();
        }
    }

    /// The caller's answer to [`Event::RcptRequested`].
    pub fn rcpt_decision(&mut self, decision: RcptDecision) -> Result<(), SmtpError> {
        self.take_pending(Pending::Rcpt, "rcpt_decision")?;
        let recipient = self
            .transaction
            .as_mut()
            .and_then(|transaction| transaction.pending_rcpt.take());
        match (decision, recipient) {
            (RcptDecision::Accept, Some(recipient)) => {
                if let Some(transaction) = self.transaction.as_mut() {
                    transaction.recipients.push(recipient);
                }
                self.write(&Reply::fixed(250, (2, 1, 5), "Ok"));
            }
            (RcptDecision::Reject(reply), _) => self.reply_maybe_error(&reply),
            (RcptDecision::Accept, None) => {
                self.write(&Reply::fixed(451, (4, 3, 0), "Error: internal error"))
            }
        }
        self.process();
        Ok(())
    }

    /// The caller's answer to [`Event::AuthRequested`]: true if the credentials are valid.
    pub fn auth_result(&mut self, credentials_valid: bool) -> Result<(), SmtpError> {
        self.take_pending(Pending::Auth, "auth_result")?;
        match self.auth_username.take().filter(|_| credentials_valid) {
            Some(username) => {
                self.authenticated_user = Some(username);
                self.write(&Reply::fixed(235, (2, 7, 0), "Authentication successful"));
            }
            None => self.reply_error(&Reply::fixed(
                535,
                (5, 7, 8),
                "Error: authentication failed: authentication failure",
            )),
        }
        self.process();
        Ok(())
    }

    /// Call once the TLS handshake after `STARTTLS` has completed. The session forgets
    /// EHLO, any transaction and any authentication (RFC 3207 §4.2); the client must send
    /// EHLO again.
    pub fn tls_started(&mut self, now: Instant) -> Result<(), SmtpError> {
        self.take_pending(Pending::StartTls, "tls_started")?;
        self.tls_active = true;
        self.helo = None;
        self.transaction = None;
        self.authenticated_user = None;
        self.input.clear();
        self.input_pos = 0;
        self.phase = Phase::Command;
        self.last_activity = now;
        Ok(())
    }

    /// The caller's answer to [`Event::MessageComplete`]. Only `Accepted` sends `250`.
    pub fn message_result(&mut self, outcome: MessageOutcome) -> Result<(), SmtpError> {
        self.take_pending(Pending::Message, "message_result")?;
        match outcome {
            MessageOutcome::Accepted { queue_id } => self.write(&Reply::fixed(
                250,
                (2, 0, 0),
                &format!("Ok: queued as {queue_id}"),
            )),
            MessageOutcome::Rejected(reply) => self.write(&reply),
            MessageOutcome::TempFail => self.write(&Reply::fixed(
                451,
                (4, 3, 0),
                "Error: queue file write error",
            )),
        }
        self.process();
        Ok(())
    }

    /// Ends the session with `reply` (e.g. `421 4.3.2 ... Service shutting down` on
    /// shutdown). A message in progress is aborted; a pending decision is dropped.
    pub fn close_with(&mut self, reply: &Reply) {
        if !self.is_closed() {
            self.abandon_transaction(AbortReason::Reset);
            self.write(reply);
            self.close();
        }
    }

    /// Graceful shutdown (RFC 5321 §3.8; what Postfix's smtpd does on `postfix stop`): the
    /// session ends with `421 4.3.2 <hostname> Service shutting down` at the next command
    /// boundary — at once when it is idle ([`Session::is_idle`]), otherwise when the client's
    /// next command arrives (that command is not executed). A message being transferred
    /// (DATA, or BDAT chunks up to `LAST`) is received to its end first and gets its own
    /// reply (`250` once durable), then the `421` follows. Idempotent.
    pub fn shut_down(&mut self) {
        if self.is_closed() {
            return;
        }
        self.shutting_down = true;
        self.close_if_shutting_down();
    }

    /// True while the session waits for the client's next command with nothing in progress:
    /// no partial command line buffered, no decision outstanding, no message transfer (DATA
    /// or between BDAT chunks), no event left for the caller.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Command | Phase::PreGreeting { .. })
            && self.pending.is_none()
            && self.input_pos >= self.input.len()
            && !self.discarding_long_line
            && !self.message_in_transfer()
            && self.events.is_empty()
    }

    /// Recipients accepted so far in the transaction in progress (0 outside one); the
    /// caller's rate limits use it.
    pub fn accepted_recipients(&self) -> usize {
        self.transaction.as_ref().map_or(0, |transaction| transaction.recipients.len())
    }

    /// True once the session has ended: write out the remaining transmit bytes and close.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// False while the session waits for a caller decision or a TLS handshake, or is
    /// closed: the caller should stop reading from the socket (bytes fed meanwhile are
    /// buffered, so this is back-pressure, not correctness).
    pub fn wants_input(&self) -> bool {
        self.pending.is_none() && !matches!(self.phase, Phase::Closed | Phase::AwaitingTls)
    }

    /// The authenticated SASL user, if any.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated_user.as_deref()
    }

    /// True when TLS is active (implicit TLS or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// Error replies sent so far.
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    // ----- internals -------------------------------------------------------------------

    /// A message's content is being received (DATA, or BDAT chunks before `LAST`).
    fn message_in_transfer(&self) -> bool {
        self.transaction.as_ref().is_some_and(|transaction| transaction.transfer.is_some())
    }

    fn shutdown_reply(&self) -> Reply {
        Reply::fixed(
            421,
            (4, 3, 2),
            &format!("{} Service shutting down", self.config.hostname),
        )
    }

    fn close_if_shutting_down(&mut self) {
        if self.shutting_down && self.is_idle() {
            self.abandon_transaction(AbortReason::Reset);
            let reply = self.shutdown_reply();
            self.write(&reply);
            self.close();
        }
    }

    fn take_pending(&mut self, expected: Pending, name: &'static str) -> Result<(), SmtpError> {
        if self.pending == Some(expected) {
            self.pending = None;
            Ok(())
        } else {
            Err(SmtpError::NoPendingRequest { expected: name })
        }
    }

    fn send_greeting(&mut self, now: Instant) {
        self.phase = Phase::Command;
        self.last_activity = now;
        let greeting = Reply::plain(
            220,
            vec![format!("{} ESMTP shardgate", self.config.hostname)],
        );
        self.write(&greeting);
    }

    fn write(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.pending = None;
        self.input = Vec::new();
        self.input_pos = 0;
    }

    /// Sends an error reply and charges it to the error budget.
    fn reply_error(&mut self, reply: &Reply) {
        self.write(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.abandon_transaction(AbortReason::TooManyErrors);
            self.write(&Reply::fixed(
                421,
                (4, 7, 0),
                &format!("{} Error: too many errors", self.config.hostname),
            ));
            self.close();
        }
    }

    fn reply_maybe_error(&mut self, reply: &Reply) {
        if reply.is_error() {
            self.reply_error(reply);
        } else {
            self.write(reply);
        }
    }

    /// Drops the transaction; tells the caller if message data was already handed out.
    fn abandon_transaction(&mut self, reason: AbortReason) {
        if let Some(transaction) = self.transaction.take() {
            if transaction.transfer.is_some() {
                self.data_chunk.clear();
                self.events.push_back(Event::MessageAborted { reason });
            }
        }
    }

    fn flush_data_chunk(&mut self) {
        if !self.data_chunk.is_empty() {
            let chunk = std::mem::take(&mut self.data_chunk);
            self.events.push_back(Event::MessageData(chunk));
        }
    }

    /// Counts `added` new content octets and enforces the size limit by dropping content
    /// past it (the client is told at the end of the message).
    fn account_data(&mut self, chunk_start: usize) {
        let added = (self.data_chunk.len() - chunk_start) as u64;
        let max = self.config.max_message_size;
        if let Some(transaction) = self.transaction.as_mut() {
            if transaction.oversized {
                self.data_chunk.truncate(chunk_start);
                return;
            }
            transaction.size += added;
            if transaction.size > max {
                transaction.oversized = true;
                self.data_chunk.clear();
            }
        }
        if self.data_chunk.len() >= DATA_EVENT_CHUNK {
            self.flush_data_chunk();
        }
    }

    fn process(&mut self) {
        while self.pending.is_none() {
            let progressed = match self.phase {
                Phase::Command | Phase::AuthResponse(_) => self.process_line(),
                Phase::Data(_) => self.process_data(),
                Phase::Bdat { .. } => self.process_bdat(),
                Phase::PreGreeting { .. } | Phase::AwaitingTls | Phase::Closed => false,
            };
            if !progressed {
                break;
            }
        }
        if !matches!(self.phase, Phase::Closed) {
            let oversized = self.transaction.as_ref().is_some_and(|t| t.oversized);
            if !oversized {
                self.flush_data_chunk();
            }
        }
        if self.input_pos > 0 {
            self.input.drain(..self.input_pos);
            self.input_pos = 0;
        }
        // Ten thousand idle sessions per shard must not each keep a read-sized buffer.
        if self.input.is_empty() && self.input.capacity() > IDLE_INPUT_CAPACITY {
            self.input = Vec::new();
        }
        self.close_if_shutting_down();
    }

    fn line_limit(&self, available: &[u8]) -> usize {
        let auth_command = available.len() >= 5 && available[..5].eq_ignore_ascii_case(b"AUTH ");
        if matches!(self.phase, Phase::AuthResponse(_)) || auth_command {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        }
    }

    fn process_line(&mut self) -> bool {
        let available = &self.input[self.input_pos..];
        let newline = available.iter().position(|b| *b == b'\n');
        if self.discarding_long_line {
            return match newline {
                Some(index) => {
                    self.input_pos += index + 1;
                    self.discarding_long_line = false;
                    self.reply_error(&SmtpError::LineTooLong.reply());
                    true
                }
                None => {
                    self.input_pos = self.input.len();
                    false
                }
            };
        }
        let limit = self.line_limit(available);
        let Some(index) = newline else {
            if available.len() >= limit {
                self.input_pos = self.input.len();
                self.discarding_long_line = true;
            }
            return false;
        };
        if index + 1 > limit {
            self.input_pos += index + 1;
            self.reply_error(&SmtpError::LineTooLong.reply());
            return true;
        }
        if index == 0 || available[index - 1] != b'\r' {
            self.bare_line_feed();
            return true;
        }
        let line = available[..index - 1].to_vec();
        self.input_pos += index + 1;
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::AuthResponse(step) => self.handle_auth_response(step, &line),
            other => {
                self.phase = other;
                if self.shutting_down && !self.message_in_transfer() {
                    // The next command boundary after a shutdown: answer 421, do not execute.
                    self.abandon_transaction(AbortReason::Reset);
                    let reply = self.shutdown_reply();
                    self.write(&reply);
                    self.close();
                } else {
                    self.handle_command_line(&line);
                }
            }
        }
        true
    }

    fn bare_line_feed(&mut self) {
        self.abandon_transaction(AbortReason::BareLineFeed);
        // Postfix `smtpd_forbid_bare_newline = reject`: 550 (its default reject code), close.
        self.write(&Reply::fixed(550, (5, 5, 2), "Error: bare <LF> received"));
        self.close();
    }

    fn process_data(&mut self) -> bool {
        let Phase::Data(decoder) = &mut self.phase else {
            return false;
        };
        let available = &self.input[self.input_pos..];
        if available.is_empty() {
            return false;
        }
        let chunk_start = self.data_chunk.len();
        let (consumed, end) = decoder.decode(available, &mut self.data_chunk);
        self.input_pos += consumed;
        self.account_data(chunk_start);
        match end {
            None => false,
            Some(BodyEnd::BareLineFeed) => {
                self.bare_line_feed();
                true
            }
            Some(BodyEnd::Complete) => {
                self.phase = Phase::Command;
                self.finish_message();
                true
            }
        }
    }

    fn process_bdat(&mut self) -> bool {
        let available = self.input.len() - self.input_pos;
        let Phase::Bdat {
            remaining,
            rejection,
            ..
        } = &mut self.phase
        else {
            return false;
        };
        let take = usize::try_from(*remaining).map_or(available, |r| r.min(available));
        *remaining -= take as u64;
        let done = *remaining == 0;
        let rejected = rejection.is_some();
        if !rejected {
            let chunk_start = self.data_chunk.len();
            self.data_chunk
                .extend_from_slice(&self.input[self.input_pos..self.input_pos + take]);
            self.account_data(chunk_start);
        }
        self.input_pos += take;
        if !done {
            return false;
        }
        let Phase::Bdat {
            last, rejection, ..
        } = std::mem::replace(&mut self.phase, Phase::Command)
        else {
            return false;
        };
        if let Some(reply) = rejection {
            self.reply_error(&reply);
        } else if self.transaction.as_ref().is_some_and(|t| t.oversized) {
            self.abandon_transaction(AbortReason::SizeExceeded);
            self.reply_error(&too_big());
        } else if last {
            self.finish_message();
        } else {
            let size = self.transaction.as_ref().map_or(0, |t| t.size);
            self.write(&Reply::fixed(250, (2, 0, 0), &format!("Ok: {size} bytes")));
        }
        true
    }

    fn finish_message(&mut self) {
        let Some(transaction) = self.transaction.take() else {
            return;
        };
        if transaction.oversized {
            self.data_chunk.clear();
            self.events.push_back(Event::MessageAborted {
                reason: AbortReason::SizeExceeded,
            });
            self.reply_error(&too_big());
            return;
        }
        self.flush_data_chunk();
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let envelope = Envelope {
            helo,
            esmtp,
            reverse_path: transaction.from,
            parameters: transaction.parameters,
            recipients: transaction.recipients,
            authenticated_user: self.authenticated_user.clone(),
            tls: self.tls_active,
            peer_ip: self.connection.peer_ip,
            size: transaction.size,
            transfer: transaction.transfer.unwrap_or(BodyTransfer::Data),
        };
        self.pending = Some(Pending::Message);
        self.events.push_back(Event::MessageComplete { envelope });
    }

    fn auth_offered(&self) -> bool {
        self.tls_active || self.config.auth_without_tls
    }

    fn ehlo_reply(&self) -> Reply {
        let mut lines = vec![
            self.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
        ];
        if self.config.tls_available && !self.tls_active {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        for extension in [
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "BINARYMIME",
            "CHUNKING",
            "SMTPUTF8",
        ] {
            lines.push(extension.to_owned());
        }
        Reply::plain(250, lines)
    }

    fn handle_command_line(&mut self, line: &[u8]) {
        let command = match SmtpCommand::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.reply_error(&error.reply());
                return;
            }
        };
        let sequence = |text: &str| Reply::fixed(503, (5, 5, 1), text);
        match command {
            SmtpCommand::Ehlo(host) | SmtpCommand::Helo(host) if host.len() > 255 => {
                self.reply_error(
                    &SmtpError::Syntax {
                        usage: "Syntax: EHLO hostname",
                    }
                    .reply(),
                );
            }
            SmtpCommand::Ehlo(host) => {
                self.abandon_transaction(AbortReason::Reset);
                self.helo = Some((host, true));
                let reply = self.ehlo_reply();
                self.write(&reply);
            }
            SmtpCommand::Helo(host) => {
                self.abandon_transaction(AbortReason::Reset);
                self.helo = Some((host, false));
                let reply = Reply::plain(250, vec![self.config.hostname.clone()]);
                self.write(&reply);
            }
            SmtpCommand::Mail { from, parameters } => {
                if self.helo.is_none() {
                    self.reply_error(&sequence("Error: send HELO/EHLO first"));
                } else if self.transaction.is_some() {
                    self.reply_error(&sequence("Error: nested MAIL command"));
                } else if self.connection.listener != ListenerKind::Smtp
                    && self.authenticated_user.is_none()
                {
                    self.reply_error(&Reply::fixed(530, (5, 7, 0), "Authentication required"));
                } else if parameters
                    .size
                    .is_some_and(|size| size > self.config.max_message_size)
                {
                    self.reply_error(&Reply::fixed(
                        552,
                        (5, 3, 4),
                        "Message size exceeds fixed limit",
                    ));
                } else {
                    let mut parameters = parameters;
                    // RFC 4954 §5: an unauthenticated client's AUTH= is treated as AUTH=<>.
                    if self.authenticated_user.is_none() && parameters.auth.is_some() {
                        parameters.auth = Some("<>".to_owned());
                    }
                    self.transaction = Some(Transaction {
                        from,
                        parameters,
                        recipients: Vec::new(),
                        rcpt_attempts: 0,
                        pending_rcpt: None,
                        transfer: None,
                        size: 0,
                        oversized: false,
                    });
                    self.write(&Reply::fixed(250, (2, 1, 0), "Ok"));
                }
            }
            SmtpCommand::Rcpt { to } => self.handle_rcpt(to),
            SmtpCommand::Data => match self.data_refusal(BodyTransfer::Data) {
                Some(reply) => self.reply_error(&reply),
                None => {
                    if let Some(transaction) = self.transaction.as_mut() {
                        transaction.transfer = Some(BodyTransfer::Data);
                    }
                    self.write(&Reply::plain(
                        354,
                        vec!["End data with <CR><LF>.<CR><LF>".to_owned()],
                    ));
                    self.phase = Phase::Data(DotDecoder::new());
                }
            },
            SmtpCommand::Bdat { chunk_size, last } => {
                let rejection = self.data_refusal(BodyTransfer::Bdat);
                if rejection.is_none() {
                    if let Some(transaction) = self.transaction.as_mut() {
                        transaction.transfer = Some(BodyTransfer::Bdat);
                    }
                }
                // The chunk's octets are consumed even when the command is refused, so the
                // stream stays in sync (RFC 3030 §4.2).
                self.phase = Phase::Bdat {
                    remaining: chunk_size,
                    last,
                    rejection,
                };
            }
            SmtpCommand::Rset => {
                self.abandon_transaction(AbortReason::Reset);
                self.write(&Reply::fixed(250, (2, 0, 0), "Ok"));
            }
            SmtpCommand::Noop => self.write(&Reply::fixed(250, (2, 0, 0), "Ok")),
            SmtpCommand::Quit => {
                self.abandon_transaction(AbortReason::Reset);
                self.write(&Reply::fixed(221, (2, 0, 0), "Bye"));
                self.close();
            }
            SmtpCommand::Vrfy(_) => self.write(&Reply::fixed(
                252,
                (2, 0, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            SmtpCommand::Expn(_) => {
                self.reply_error(&Reply::fixed(502, (5, 5, 1), "EXPN command is disabled"))
            }
            SmtpCommand::Help(_) => self.write(&Reply::fixed(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
            )),
            SmtpCommand::StartTls => {
                if !self.config.tls_available {
                    self.reply_error(&Reply::fixed(
                        502,
                        (5, 5, 1),
                        "Error: command not implemented",
                    ));
                } else if self.tls_active {
                    self.reply_error(&Reply::fixed(554, (5, 5, 1), "Error: TLS already active"));
                } else if self.transaction.is_some() {
                    self.reply_error(&sequence("Error: MAIL transaction in progress"));
                } else {
                    self.write(&Reply::fixed(220, (2, 0, 0), "Ready to start TLS"));
                    self.input.clear();
                    self.input_pos = 0;
                    self.phase = Phase::AwaitingTls;
                    self.pending = Some(Pending::StartTls);
                    self.events.push_back(Event::StartTls);
                }
            }
            SmtpCommand::Auth {
                mechanism,
                initial_response,
            } => {
                if !self.auth_offered() {
                    self.reply_error(&sequence("Error: authentication not enabled"));
                } else if self.authenticated_user.is_some() {
                    self.reply_error(&sequence("Error: already authenticated"));
                } else if self.transaction.is_some() {
                    self.reply_error(&sequence("Error: MAIL transaction in progress"));
                } else {
                    match (mechanism, initial_response) {
                        (AuthMechanism::Plain, Some(response)) => self.finish_plain(&response),
                        (AuthMechanism::Plain, None) => {
                            self.write(&Reply::plain(334, vec![String::new()]));
                            self.phase = Phase::AuthResponse(AuthStep::PlainResponse);
                        }
                        (AuthMechanism::Login, Some(username)) => self.login_username(&username),
                        (AuthMechanism::Login, None) => {
                            self.write(&Reply::plain(334, vec!["VXNlcm5hbWU6".to_owned()]));
                            self.phase = Phase::AuthResponse(AuthStep::LoginUsername);
                        }
                    }
                }
            }
        }
    }

    /// Why `DATA`/`BDAT` cannot start now, if it cannot.
    fn data_refusal(&self, transfer: BodyTransfer) -> Option<Reply> {
        let sequence = |text: &str| Some(Reply::fixed(503, (5, 5, 1), text));
        let Some(transaction) = &self.transaction else {
            return sequence("Error: need MAIL command");
        };
        if transaction.recipients.is_empty() {
            return if transaction.rcpt_attempts > 0 {
                Some(Reply::fixed(554, (5, 5, 1), "Error: no valid recipients"))
            } else {
                sequence("Error: need RCPT command")
            };
        }
        if transfer == BodyTransfer::Data
            && transaction.parameters.body == Some(BodyType::BinaryMime)
        {
            return sequence("Error: BODY=BINARYMIME requires BDAT");
        }
        if transfer == BodyTransfer::Data && transaction.transfer == Some(BodyTransfer::Bdat) {
            return sequence("Error: DATA after BDAT");
        }
        None
    }

    fn handle_rcpt(&mut self, to: ForwardPath) {
        let max_recipients = self.config.max_recipients as usize;
        let relay_allowed = self.authenticated_user.is_some()
            || self.config.is_relay_client(self.connection.peer_ip);
        let is_local = match &to {
            ForwardPath::Postmaster => true,
            ForwardPath::Mailbox(mailbox) => mailbox
                .domain_name_lowercase()
                .is_some_and(|domain| self.config.is_local_domain(&domain)),
        };
        let Some(transaction) = self.transaction.as_mut() else {
            self.reply_error(&Reply::fixed(503, (5, 5, 1), "Error: need MAIL command"));
            return;
        };
        transaction.rcpt_attempts += 1;
        if transaction.recipients.len() >= max_recipients {
            self.reply_error(&Reply::fixed(452, (4, 5, 3), "Error: too many recipients"));
            return;
        }
        if to.mailbox().is_some_and(|m| !m.is_ascii()) && !transaction.parameters.smtputf8 {
            self.reply_error(&SmtpError::Utf8AddressWithoutSmtputf8.reply());
            return;
        }
        if !is_local && !relay_allowed {
            self.reply_error(&Reply::fixed(
                554,
                (5, 7, 1),
                &format!("{to}: Relay access denied"),
            ));
            return;
        }
        let from = transaction.from.clone();
        transaction.pending_rcpt = Some(to.clone());
        self.pending = Some(Pending::Rcpt);
        self.events.push_back(Event::RcptRequested { from, to });
    }

    fn handle_auth_response(&mut self, step: AuthStep, line: &[u8]) {
        if line == b"*" {
            self.reply_error(&Reply::fixed(501, (5, 7, 0), "Authentication aborted"));
            return;
        }
        let decoded = std::str::from_utf8(line)
            .map_err(|_| SmtpError::UndecodableSaslResponse)
            .and_then(decode_sasl_response);
        let response = match decoded {
            Ok(response) => response,
            Err(error) => {
                self.reply_error(&error.reply());
                return;
            }
        };
        match step {
            AuthStep::PlainResponse => self.finish_plain(&response),
            AuthStep::LoginUsername => self.login_username(&response),
            AuthStep::LoginPassword { username } => {
                self.request_auth(AuthMechanism::Login, username, response)
            }
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    fn finish_plain(&mut self, response: &[u8]) {
        let mut parts = response.split(|b| *b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.reply_error(&SmtpError::UndecodableSaslResponse.reply());
            return;
        };
        let Ok(username) = std::str::from_utf8(authcid) else {
            self.reply_error(&SmtpError::UndecodableSaslResponse.reply());
            return;
        };
        // We do not support acting as another identity: authzid must be empty or equal.
        if !authzid.is_empty() && authzid != authcid {
            self.reply_error(&Reply::fixed(
                535,
                (5, 7, 8),
                "Error: authentication failed: authorization identity not permitted",
            ));
            return;
        }
        self.request_auth(AuthMechanism::Plain, username.to_owned(), password.to_vec());
    }

    fn login_username(&mut self, username: &[u8]) {
        match std::str::from_utf8(username) {
            Ok(username) => {
                self.write(&Reply::plain(334, vec!["UGFzc3dvcmQ6".to_owned()]));
                self.phase = Phase::AuthResponse(AuthStep::LoginPassword {
                    username: username.to_owned(),
                });
            }
            Err(_) => self.reply_error(&SmtpError::UndecodableSaslResponse.reply()),
        }
    }

    fn request_auth(&mut self, mechanism: AuthMechanism, username: String, password: Vec<u8>) {
        self.phase = Phase::Command;
        self.pending = Some(Pending::Auth);
        self.auth_username = Some(username.clone());
        self.events.push_back(Event::AuthRequested {
            mechanism,
            username,
            password: Password(password),
        });
    }
}

fn too_big() -> Reply {
    Reply::fixed(552, (5, 3, 4), "Error: message file too big")
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
