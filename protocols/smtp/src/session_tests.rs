//! Tests for the session state machine, driven with bytes and fake time only.

use super::*;
use crate::reply::EnhancedStatus;
use std::time::Duration;

const OUTSIDE_IP: &str = "192.0.2.10";

fn test_config() -> SessionConfig {
    let mut config = SessionConfig::with_defaults("mx.example.com");
    config.local_domains = vec!["example.com".into()];
    config
}

/// Drives a session and answers its requests like a simple shard would.
struct Harness {
    session: Session,
    now: Instant,
    data: Vec<u8>,
    completed: Vec<Envelope>,
    aborted: Vec<AbortReason>,
    starttls_requested: bool,
    queued: u32,
    outcome: Option<MessageOutcome>,
    auto_answer_messages: bool,
}

impl Harness {
    fn with(config: SessionConfig, listener: ListenerKind, ip: &str) -> Harness {
        let now = Instant::now();
        let connection = ConnectionInfo {
            peer_ip: ip.parse().unwrap(),
            listener,
        };
        Harness {
            session: Session::new(Arc::new(config), connection, now),
            now,
            data: Vec::new(),
            completed: Vec::new(),
            aborted: Vec::new(),
            starttls_requested: false,
            queued: 0,
            outcome: None,
            auto_answer_messages: true,
        }
    }

    fn new() -> Harness {
        let mut harness = Harness::with(test_config(), ListenerKind::Smtp, OUTSIDE_IP);
        let greeting = harness.output();
        assert_eq!(greeting, "220 mx.example.com ESMTP shardgate\r\n");
        harness
    }

    fn output(&mut self) -> String {
        String::from_utf8(self.session.take_transmit()).unwrap()
    }

    /// Feeds bytes, answers every event, returns everything written meanwhile.
    fn send(&mut self, bytes: &[u8]) -> String {
        self.session.feed(bytes, self.now);
        self.pump();
        self.output()
    }

    fn pump(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::RcptRequested { to, .. } => {
                    let decision = match to.mailbox() {
                        Some(mailbox) if mailbox.local_part() == "unknown" => RcptDecision::Reject(
                            Reply::new(
                                550,
                                Some(EnhancedStatus::new(5, 1, 1).unwrap()),
                                "Recipient address rejected: User unknown",
                            )
                            .unwrap(),
                        ),
                        _ => RcptDecision::Accept,
                    };
                    self.session.rcpt_decision(decision).unwrap();
                }
                Event::AuthRequested {
                    username, password, ..
                } => {
                    let valid = username == "alice" && password.as_bytes() == b"secret";
                    self.session.auth_result(valid).unwrap();
                }
                Event::StartTls => self.starttls_requested = true,
                Event::MessageData(chunk) => self.data.extend_from_slice(&chunk),
                Event::MessageComplete { envelope } => {
                    self.completed.push(envelope);
                    if self.auto_answer_messages {
                        self.queued += 1;
                        let outcome = self.outcome.clone().unwrap_or(MessageOutcome::Accepted {
                            queue_id: format!("Q{}", self.queued),
                        });
                        self.session.message_result(outcome).unwrap();
                    }
                }
                Event::MessageAborted { reason } => {
                    self.data.clear();
                    self.aborted.push(reason);
                }
            }
        }
    }

    fn ehlo(&mut self) {
        let reply = self.send(b"EHLO client.example.org\r\n");
        assert!(reply.ends_with("250 SMTPUTF8\r\n"), "{reply}");
    }
}

fn first_code(reply: &str) -> &str {
    reply.get(..9).unwrap_or(reply)
}

#[test]
fn ehlo_advertises_extensions_but_no_auth_before_tls() {
    let mut harness = Harness::new();
    let reply = harness.send(b"EHLO client.example.org\r\n");
    assert_eq!(
        reply,
        "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-STARTTLS\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
    );
    assert_eq!(harness.send(b"HELO client\r\n"), "250 mx.example.com\r\n");
}

#[test]
fn whole_transaction_pipelined_in_one_write() {
    let mut harness = Harness::new();
    let reply = harness.send(
        b"EHLO c.example.org\r\nMAIL FROM:<sender@example.org> SIZE=100\r\nRCPT TO:<a@example.com>\r\n\
          RCPT TO:<unknown@example.com>\r\nRCPT TO:<B@Example.COM>\r\nDATA\r\n\
          Subject: hi\r\n\r\n..dotted\r\nbody\r\n.\r\nQUIT\r\n",
    );
    let lines: Vec<&str> = reply
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("250-"))
        .collect();
    assert_eq!(
        lines,
        [
            "250 SMTPUTF8\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 Recipient address rejected: User unknown\r\n",
            "250 2.1.5 Ok\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n",
            "250 2.0.0 Ok: queued as Q1\r\n",
            "221 2.0.0 Bye\r\n",
        ]
    );
    assert_eq!(harness.data, b"Subject: hi\r\n\r\n.dotted\r\nbody\r\n");
    let envelope = &harness.completed[0];
    assert_eq!(envelope.recipients.len(), 2);
    assert_eq!(envelope.reverse_path.to_string(), "<sender@example.org>");
    assert_eq!(envelope.size, harness.data.len() as u64);
    assert_eq!(envelope.transfer, BodyTransfer::Data);
    assert_eq!(envelope.protocol_name(), "ESMTP");
    assert!(harness.session.is_closed());
}

#[test]
fn replies_wait_for_decisions_and_250_waits_for_durability() {
    let mut harness = Harness::new();
    harness.auto_answer_messages = false;
    harness.ehlo();
    harness.session.feed(
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n",
        harness.now,
    );
    // The RCPT decision is outstanding: DATA is not answered yet.
    assert_eq!(harness.output(), "250 2.1.0 Ok\r\n");
    assert!(!harness.session.wants_input());
    harness.pump();
    assert_eq!(
        harness.output(),
        "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    harness.send(b"x\r\n.\r\nNOOP\r\n");
    // Message complete but not yet durable: neither its 250 nor the NOOP reply is out.
    assert_eq!(harness.output(), "");
    assert_eq!(harness.completed.len(), 1);
    harness
        .session
        .message_result(MessageOutcome::Accepted {
            queue_id: "ABC".into(),
        })
        .unwrap();
    assert_eq!(
        harness.output(),
        "250 2.0.0 Ok: queued as ABC\r\n250 2.0.0 Ok\r\n"
    );
}

#[test]
fn message_tempfail_and_rejection() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.outcome = Some(MessageOutcome::TempFail);
    let reply = harness.send(b"MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n");
    assert!(
        reply.ends_with("451 4.3.0 Error: queue file write error\r\n"),
        "{reply}"
    );
    let reject = Reply::new(
        550,
        Some(EnhancedStatus::new(5, 7, 1).unwrap()),
        "Message rejected by route spam",
    )
    .unwrap();
    harness.outcome = Some(MessageOutcome::Rejected(reject));
    let reply = harness.send(b"MAIL FROM:<>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n");
    assert!(
        reply.ends_with("550 5.7.1 Message rejected by route spam\r\n"),
        "{reply}"
    );
}

#[test]
fn dot_unstuffing_across_feed_boundaries() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    assert_eq!(harness.send(b"line one\r\n."), "");
    assert_eq!(harness.send(b".two\r\n"), "");
    assert_eq!(harness.send(b"end\r"), "");
    assert_eq!(harness.send(b"\n."), "");
    assert_eq!(harness.send(b"\r"), "");
    assert_eq!(harness.send(b"\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(harness.data, b"line one\r\n.two\r\nend\r\n");
}

#[test]
fn large_message_is_streamed_not_buffered() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    let line = [b'x'; 998];
    let mut block = Vec::new();
    while block.len() < 64 * 1024 {
        block.extend_from_slice(&line);
        block.extend_from_slice(b"\r\n");
    }
    let mut sent = 0;
    while sent < 5 * 1024 * 1024 {
        harness.session.feed(&block, harness.now);
        assert!(harness.session.input.is_empty(), "input retained");
        assert!(harness.session.data_chunk.is_empty(), "data retained");
        harness.pump();
        sent += block.len();
    }
    assert_eq!(harness.send(b".\r\n"), "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(harness.data.len(), sent);
}

#[test]
fn bdat_chunks_and_last() {
    let mut harness = Harness::new();
    harness.ehlo();
    let reply = harness.send(
        b"MAIL FROM:<s@example.org> BODY=BINARYMIME\r\nRCPT TO:<a@example.com>\r\nBDAT 7\r\nhel\nlo\rBDAT 6 LAST\r\n world",
    );
    assert!(
        reply.ends_with("250 2.0.0 Ok: 7 bytes\r\n250 2.0.0 Ok: queued as Q1\r\n"),
        "{reply}"
    );
    assert_eq!(harness.data, b"hel\nlo\r world");
    assert_eq!(harness.completed[0].transfer, BodyTransfer::Bdat);
    // A chunk split over feeds, and an empty LAST chunk.
    harness.data.clear();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 4\r\nab");
    assert_eq!(harness.send(b"cd"), "250 2.0.0 Ok: 4 bytes\r\n");
    assert_eq!(
        harness.send(b"BDAT 0 LAST\r\n"),
        "250 2.0.0 Ok: queued as Q2\r\n"
    );
    assert_eq!(harness.data, b"abcd");
}

#[test]
fn refused_bdat_still_consumes_its_chunk() {
    let mut harness = Harness::new();
    harness.ehlo();
    let reply = harness.send(b"BDAT 10\r\nNOOP\r\nNOOPBDAT 0 LAST\r\nNOOP\r\n");
    assert_eq!(
        reply,
        "503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"
    );
    let reply = harness
        .send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 1\r\nxDATA\r\n");
    assert!(
        reply.ends_with("250 2.0.0 Ok: 1 bytes\r\n503 5.5.1 Error: DATA after BDAT\r\n"),
        "{reply}"
    );
    let reply = harness.send(b"RSET\r\n");
    assert_eq!(reply, "250 2.0.0 Ok\r\n");
    assert_eq!(harness.aborted, [AbortReason::Reset]);
}

#[test]
fn binarymime_requires_bdat() {
    let mut harness = Harness::new();
    harness.ehlo();
    let reply = harness
        .send(b"MAIL FROM:<s@example.org> BODY=BINARYMIME\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    assert!(
        reply.ends_with("503 5.5.1 Error: BODY=BINARYMIME requires BDAT\r\n"),
        "{reply}"
    );
}

#[test]
fn size_limits() {
    let mut config = test_config();
    config.max_message_size = 10;
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    harness.output();
    harness.send(b"EHLO c\r\n");
    assert_eq!(
        harness.send(b"MAIL FROM:<s@example.org> SIZE=11\r\n"),
        "552 5.3.4 Message size exceeds fixed limit\r\n"
    );
    harness.send(b"MAIL FROM:<s@example.org> SIZE=10\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    assert_eq!(harness.send(b"0123456789\r\nmore\r\n"), "");
    assert_eq!(
        harness.send(b".\r\n"),
        "552 5.3.4 Error: message file too big\r\n"
    );
    assert_eq!(harness.aborted, [AbortReason::SizeExceeded]);
    assert!(harness.completed.is_empty());
    assert!(harness.data.is_empty());
    // BDAT overrun, then pipelined chunks of the dead transaction are skipped.
    let reply = harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 1 LAST\r\nxNOOP\r\n");
    assert!(
        reply.ends_with("250 2.0.0 Ok: 8 bytes\r\n552 5.3.4 Error: message file too big\r\n503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"),
        "{reply}"
    );
    assert_eq!(
        harness.aborted,
        [AbortReason::SizeExceeded, AbortReason::SizeExceeded]
    );
}

#[test]
fn sequencing_and_simple_command_codes() {
    let mut harness = Harness::new();
    let cases: &[(&[u8], &str)] = &[
        (
            b"MAIL FROM:<s@example.org>\r\n",
            "503 5.5.1 Error: send HELO/EHLO first\r\n",
        ),
        (b"XYZZY\r\n", "500 5.5.2 Error: command not recognized\r\n"),
        (b"EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n"),
        (
            b"RCPT TO:<a@example.com>\r\n",
            "503 5.5.1 Error: need MAIL command\r\n",
        ),
        (b"DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n"),
        (
            b"VRFY bob\r\n",
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
        ),
        (b"EXPN staff\r\n", "502 5.5.1 EXPN command is disabled\r\n"),
        (b"NOOP\r\n", "250 2.0.0 Ok\r\n"),
        (b"RSET\r\n", "250 2.0.0 Ok\r\n"),
        (
            b"AUTH LOGIN\r\n",
            "503 5.5.1 Error: authentication not enabled\r\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            harness.send(input),
            *expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(harness.send(b"HELP\r\n").starts_with("214 2.0.0 Commands:"));
    harness.ehlo();
    let cases: &[(&[u8], &str)] = &[
        (b"DATA\r\n", "503 5.5.1 Error: need MAIL command\r\n"),
        (
            b"MAIL FROM:<s@example.org> FOO=BAR\r\n",
            "555 5.5.4 Unsupported option: FOO=BAR\r\n",
        ),
        (
            b"MAIL FROM:<s@@example.org>\r\n",
            "501 5.1.7 Bad sender address syntax: invalid character in local part\r\n",
        ),
        (b"MAIL FROM:<s@example.org>\r\n", "250 2.1.0 Ok\r\n"),
        (
            b"MAIL FROM:<s@example.org>\r\n",
            "503 5.5.1 Error: nested MAIL command\r\n",
        ),
        (b"DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n"),
        (
            b"RCPT TO:<unknown@example.com>\r\n",
            "550 5.1.1 Recipient address rejected: User unknown\r\n",
        ),
        (b"DATA\r\n", "554 5.5.1 Error: no valid recipients\r\n"),
        (
            b"RCPT TO:<jos\xc3\xa9@example.com>\r\n",
            "553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n",
        ),
        (b"RCPT TO:<postmaster>\r\n", "250 2.1.5 Ok\r\n"),
        (
            b"STARTTLS\r\n",
            "503 5.5.1 Error: MAIL transaction in progress\r\n",
        ),
        (
            b"AUTH BOGUS\r\n",
            "504 5.5.4 Unsupported authentication mechanism\r\n",
        ),
        (b"QUIT\r\n", "221 2.0.0 Bye\r\n"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            harness.send(input),
            *expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(harness.session.is_closed());
    assert_eq!(harness.send(b"NOOP\r\n"), "");
}

#[test]
fn smtputf8_transaction_accepts_utf8_recipient() {
    let mut harness = Harness::new();
    harness.ehlo();
    let reply = harness.send(
        "MAIL FROM:<josé@example.org> SMTPUTF8\r\nRCPT TO:<ñandú@example.com>\r\n".as_bytes(),
    );
    assert_eq!(reply, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
}

#[test]
fn command_line_length_limit() {
    let mut harness = Harness::new();
    let mut exact = b"NOOP ".to_vec();
    exact.resize(MAX_COMMAND_LINE - 2, b'a');
    exact.extend_from_slice(b"\r\n");
    assert_eq!(harness.send(&exact), "250 2.0.0 Ok\r\n");
    let mut long = b"NOOP ".to_vec();
    long.resize(MAX_COMMAND_LINE - 1, b'a');
    long.extend_from_slice(b"\r\n");
    assert_eq!(harness.send(&long), "500 5.5.2 Error: line too long\r\n");
    // A very long line arriving in pieces, then a normal command.
    assert_eq!(harness.send(&[b'a'; 4000]), "");
    assert_eq!(harness.send(&[b'a'; 4000]), "");
    assert_eq!(
        harness.send(b"aaa\r\nNOOP\r\n"),
        "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
    );
    assert!(harness.session.input.len() < MAX_COMMAND_LINE);
}

#[test]
fn too_many_errors_disconnects() {
    let mut config = test_config();
    config.max_errors = 3;
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    harness.output();
    let reply = harness.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(
        reply,
        "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n\
         500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.example.com Error: too many errors\r\n"
    );
    assert!(harness.session.is_closed());
    assert_eq!(harness.session.error_count(), 3);
}

#[test]
fn recipient_limit() {
    let mut config = test_config();
    config.max_recipients = 2;
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    harness.output();
    harness.send(b"EHLO c\r\nMAIL FROM:<s@example.org>\r\n");
    let reply = harness
        .send(b"RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n");
    assert_eq!(
        reply,
        "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"
    );
}

#[test]
fn open_relay_is_refused_but_relay_networks_and_auth_may_relay() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\n");
    assert_eq!(
        harness.send(b"RCPT TO:<victim@elsewhere.net>\r\n"),
        "554 5.7.1 <victim@elsewhere.net>: Relay access denied\r\n"
    );
    assert_eq!(
        harness.send(b"RCPT TO:<x@[192.0.2.1]>\r\n"),
        "554 5.7.1 <x@[192.0.2.1]>: Relay access denied\r\n"
    );

    let mut local = Harness::with(test_config(), ListenerKind::Smtp, "127.0.0.1");
    local.output();
    local.send(b"EHLO c\r\nMAIL FROM:<s@example.org>\r\n");
    assert_eq!(
        local.send(b"RCPT TO:<victim@elsewhere.net>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
}

#[test]
fn pre_greeting_talker_is_rejected() {
    let mut config = test_config();
    config.greeting_delay = Duration::from_secs(2);
    let mut harness = Harness::with(config.clone(), ListenerKind::Smtp, OUTSIDE_IP);
    assert_eq!(harness.output(), "");
    assert_eq!(
        harness.session.next_timeout(),
        Some(harness.now + Duration::from_secs(2))
    );
    harness.now += Duration::from_millis(500);
    assert_eq!(
        harness.send(b"EHLO spam\r\n"),
        "554 5.5.1 mx.example.com Error: SMTP protocol synchronization\r\n"
    );
    assert!(harness.session.is_closed());

    let mut patient = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    patient
        .session
        .handle_timeout(patient.now + Duration::from_secs(1));
    assert_eq!(patient.output(), "");
    patient.now += Duration::from_secs(2);
    patient.session.handle_timeout(patient.now);
    assert_eq!(patient.output(), "220 mx.example.com ESMTP shardgate\r\n");
    assert_eq!(patient.send(b"NOOP\r\n"), "250 2.0.0 Ok\r\n");
}

#[test]
fn command_and_data_timeouts() {
    let mut harness = Harness::new();
    let deadline = harness.now + Duration::from_secs(300);
    assert_eq!(harness.session.next_timeout(), Some(deadline));
    harness
        .session
        .handle_timeout(deadline - Duration::from_secs(1));
    assert_eq!(harness.output(), "");
    harness.session.handle_timeout(deadline);
    assert_eq!(
        harness.output(),
        "421 4.4.2 mx.example.com Error: timeout exceeded\r\n"
    );
    assert!(harness.session.is_closed());
    assert_eq!(harness.session.next_timeout(), None);

    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 100\r\npartial");
    let deadline = harness.now + Duration::from_secs(600);
    assert_eq!(harness.session.next_timeout(), Some(deadline));
    harness.session.handle_timeout(deadline);
    harness.pump();
    assert_eq!(
        harness.output(),
        "421 4.4.2 mx.example.com Error: timeout exceeded\r\n"
    );
    assert_eq!(harness.aborted, [AbortReason::Timeout]);
}

#[test]
fn bare_line_feed_is_rejected_in_data_and_commands() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n");
    let reply = harness.send(b"hello\r\n.\nMAIL FROM:<forged@example.com>\r\n");
    assert_eq!(reply, "550 5.5.2 Error: bare <LF> received\r\n");
    assert!(harness.session.is_closed());
    assert_eq!(harness.aborted, [AbortReason::BareLineFeed]);
    assert!(harness.completed.is_empty());

    let mut harness = Harness::new();
    assert_eq!(
        harness.send(b"NOOP\n"),
        "550 5.5.2 Error: bare <LF> received\r\n"
    );
}

#[test]
fn starttls_discards_injected_commands_and_resets_state() {
    let mut harness = Harness::new();
    harness.ehlo();
    let reply = harness.send(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n");
    assert_eq!(reply, "220 2.0.0 Ready to start TLS\r\n");
    assert!(harness.starttls_requested);
    assert!(!harness.session.wants_input());
    assert_eq!(harness.send(b"RCPT TO:<a@example.com>\r\n"), "");
    harness.session.tls_started(harness.now).unwrap();
    assert!(harness.session.is_tls());
    assert_eq!(
        harness.send(b"MAIL FROM:<s@example.org>\r\n"),
        "503 5.5.1 Error: send HELO/EHLO first\r\n"
    );
    let ehlo = harness.send(b"EHLO c\r\n");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    assert_eq!(
        harness.send(b"STARTTLS\r\n"),
        "554 5.5.1 Error: TLS already active\r\n"
    );
    assert!(harness.session.tls_started(harness.now).is_err());
}

#[test]
fn starttls_without_certificate_is_not_implemented() {
    let mut config = test_config();
    config.tls_available = false;
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    harness.output();
    assert!(!harness.send(b"EHLO c\r\n").contains("STARTTLS"));
    assert_eq!(
        harness.send(b"STARTTLS\r\n"),
        "502 5.5.1 Error: command not implemented\r\n"
    );
}

fn tls_harness(listener: ListenerKind) -> Harness {
    let mut harness = Harness::with(test_config(), listener, OUTSIDE_IP);
    if listener != ListenerKind::SubmissionTls {
        harness.output();
        harness.send(b"EHLO c\r\nSTARTTLS\r\n");
        harness.session.tls_started(harness.now).unwrap();
    }
    harness.output();
    harness.send(b"EHLO c\r\n");
    harness
}

#[test]
fn auth_plain_with_and_without_initial_response() {
    let mut harness = tls_harness(ListenerKind::Smtp);
    // "\0alice\0wrong"
    assert_eq!(
        harness.send(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n"),
        "535 5.7.8 Error: authentication failed: authentication failure\r\n"
    );
    assert_eq!(harness.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    // "\0alice\0secret"
    assert_eq!(
        harness.send(b"AGFsaWNlAHNlY3JldA==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(harness.session.authenticated_user(), Some("alice"));
    assert_eq!(
        harness.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
    harness.send(b"MAIL FROM:<alice@example.com>\r\n");
    assert_eq!(
        harness.send(b"RCPT TO:<someone@elsewhere.net>\r\n"),
        "250 2.1.5 Ok\r\n"
    );
    harness.send(b"DATA\r\nx\r\n.\r\n");
    assert_eq!(
        harness.completed[0].authenticated_user.as_deref(),
        Some("alice")
    );
    assert_eq!(harness.completed[0].protocol_name(), "ESMTPSA");
}

#[test]
fn auth_plain_rejects_foreign_authzid_and_garbage() {
    let mut harness = tls_harness(ListenerKind::Smtp);
    // "bob\0alice\0secret"
    assert_eq!(
        harness.send(b"AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n"),
        "535 5.7.8 Error: authentication failed: authorization identity not permitted\r\n"
    );
    assert_eq!(harness.send(b"AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(
        harness.send(b"%%%\r\n"),
        "501 5.5.2 Cannot decode response\r\n"
    );
    // "only-one-part"
    assert_eq!(
        harness.send(b"AUTH PLAIN b25seS1vbmUtcGFydA==\r\n"),
        "501 5.5.2 Cannot decode response\r\n"
    );
}

#[test]
fn auth_login_flow_and_cancel() {
    let mut harness = tls_harness(ListenerKind::Submission);
    assert_eq!(
        harness.send(b"MAIL FROM:<alice@example.com>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert_eq!(harness.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(
        harness.send(b"*\r\n"),
        "501 5.7.0 Authentication aborted\r\n"
    );
    assert_eq!(harness.send(b"AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(harness.send(b"YWxpY2U=\r\n"), "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        harness.send(b"*\r\n"),
        "501 5.7.0 Authentication aborted\r\n"
    );
    assert_eq!(
        harness.send(b"AUTH LOGIN YWxpY2U=\r\n"),
        "334 UGFzc3dvcmQ6\r\n"
    );
    assert_eq!(
        harness.send(b"c2VjcmV0\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(
        harness.send(b"MAIL FROM:<alice@example.com>\r\n"),
        "250 2.1.0 Ok\r\n"
    );
}

#[test]
fn implicit_tls_listener_offers_auth_immediately() {
    let mut harness = Harness::with(test_config(), ListenerKind::SubmissionTls, OUTSIDE_IP);
    harness.output();
    let ehlo = harness.send(b"EHLO c\r\n");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
}

#[test]
fn auth_without_tls_when_configured() {
    let mut config = test_config();
    config.auth_without_tls = true;
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    harness.output();
    assert!(harness.send(b"EHLO c\r\n").contains("AUTH PLAIN LOGIN"));
    assert_eq!(
        harness.send(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        "235 2.7.0 Authentication successful\r\n"
    );
}

#[test]
fn decisions_without_requests_are_api_errors() {
    let mut harness = Harness::new();
    assert_eq!(
        harness.session.rcpt_decision(RcptDecision::Accept),
        Err(SmtpError::NoPendingRequest {
            expected: "rcpt_decision"
        })
    );
    assert!(harness.session.auth_result(true).is_err());
    assert!(harness
        .session
        .message_result(MessageOutcome::TempFail)
        .is_err());
    assert!(harness.session.tls_started(harness.now).is_err());
}

#[test]
fn received_header_names_peer_protocol_and_recipient() {
    let mut harness = Harness::new();
    harness.send(b"EHLO client.example.org\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n");
    let header = harness.completed[0].received_header(
        "mx.example.com",
        "Q1",
        "Sat, 21 Nov 2026 12:00:00 +0000",
    );
    assert_eq!(
        header,
        "Received: from client.example.org ([192.0.2.10])\r\n\tby mx.example.com (shardgate) with ESMTP id Q1\r\n\
         \tfor <a@example.com>; Sat, 21 Nov 2026 12:00:00 +0000\r\n"
    );
    assert_eq!(first_code("250 2.0.0 x"), "250 2.0.0");
}

/// Deterministic xorshift64* generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let corpus: &[&[u8]] = &[
        b"EHLO c\r\nMAIL FROM:<s@example.org> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<a@example.com>\r\nDATA\r\nhi\r\n..x\r\n.\r\nQUIT\r\n",
        b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n*\r\n",
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nRSET\r\nVRFY x\r\nEXPN y\r\nHELP\r\nNOOP\r\n",
        b"MAIL FROM:<\"q\\\"x\"@[IPv6:::1]> SMTPUTF8\r\nRCPT TO:<@r.net:b@example.com>\r\nDATA\r\n.\r\n",
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for round in 0..3000 {
        let mut input = corpus[round % corpus.len()].to_vec();
        for _ in 0..rng.below(8) {
            let position = rng.below(input.len() + 1);
            match rng.below(5) {
                0 if position < input.len() => input[position] = rng.next() as u8,
                1 if position < input.len() => {
                    input.remove(position);
                }
                2 => input.insert(
                    position,
                    [b'\r', b'\n', b'.', b' ', b':', b'<', b'>', 0xff][rng.below(8)],
                ),
                3 => input.truncate(position),
                _ => input.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            }
        }
        let mut config = test_config();
        config.max_message_size = 1 + rng.below(64) as u64;
        config.max_recipients = 1 + rng.below(3) as u32;
        config.max_errors = 1 + rng.below(10) as u32;
        config.auth_without_tls = rng.below(2) == 0;
        let listener = [
            ListenerKind::Smtp,
            ListenerKind::Submission,
            ListenerKind::SubmissionTls,
        ][rng.below(3)];
        let ip = if rng.below(2) == 0 {
            "127.0.0.1"
        } else {
            OUTSIDE_IP
        };
        let start = Instant::now();
        let mut session = Session::new(
            Arc::new(config),
            ConnectionInfo {
                peer_ip: ip.parse().unwrap(),
                listener,
            },
            start,
        );
        let mut now = start;
        let mut offset = 0;
        while offset < input.len() {
            let take = 1 + rng.below(input.len() - offset);
            session.feed(&input[offset..offset + take], now);
            offset += take;
            now += Duration::from_secs(rng.below(400) as u64);
            if rng.below(4) == 0 {
                session.handle_timeout(now);
            }
            while let Some(event) = session.poll_event() {
                let result = match event {
                    Event::RcptRequested { .. } => session.rcpt_decision(if rng.below(2) == 0 {
                        RcptDecision::Accept
                    } else {
                        RcptDecision::Reject(Reply::new(450, None, "later").unwrap())
                    }),
                    Event::AuthRequested { .. } => session.auth_result(rng.below(2) == 0),
                    Event::StartTls => session.tls_started(now),
                    Event::MessageComplete { envelope } => {
                        assert!(envelope.size <= 64);
                        session.message_result(MessageOutcome::Accepted {
                            queue_id: "Q".into(),
                        })
                    }
                    Event::MessageData(_) | Event::MessageAborted { .. } => Ok(()),
                };
                assert!(result.is_ok(), "round {round}: {result:?}");
            }
            let output = session.take_transmit();
            assert!(
                output.is_empty() || output.ends_with(b"\r\n"),
                "round {round}"
            );
        }
    }
}

#[test]
fn close_with_aborts_message_and_sends_reply() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 10\r\nabc");
    let shutdown = Reply::new(
        421,
        Some(EnhancedStatus::new(4, 3, 2).unwrap()),
        "mx.example.com Service shutting down",
    )
    .unwrap();
    harness.session.close_with(&shutdown);
    harness.pump();
    assert_eq!(
        harness.output(),
        "421 4.3.2 mx.example.com Service shutting down\r\n"
    );
    assert_eq!(harness.aborted, [AbortReason::Reset]);
    assert!(harness.session.is_closed());
}

#[test]
fn unauthenticated_auth_parameter_becomes_null() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org> AUTH=forged@example.com\r\nRCPT TO:<a@example.com>\r\nDATA\r\n.\r\n");
    assert_eq!(harness.completed[0].parameters.auth.as_deref(), Some("<>"));
}

#[test]
fn idle_sessions_stay_small() {
    let mut harness = Harness::new();
    harness.session.feed(&[b'N'; 300], harness.now);
    harness.send(&vec![b'a'; 100_000]);
    harness.send(b"\r\n");
    assert!(harness.session.input.capacity() <= IDLE_INPUT_CAPACITY);
    assert!(
        std::mem::size_of::<Session>() <= 768,
        "{}",
        std::mem::size_of::<Session>()
    );
}

const SHUTTING_DOWN: &str = "421 4.3.2 mx.example.com Service shutting down\r\n";

#[test]
fn shutdown_closes_an_idle_session_at_once() {
    let mut harness = Harness::new();
    harness.ehlo();
    assert!(harness.session.is_idle());
    harness.session.shut_down();
    assert_eq!(harness.output(), SHUTTING_DOWN);
    assert!(harness.session.is_closed());
    // Idempotent, and input after the close is ignored.
    harness.session.shut_down();
    assert_eq!(harness.send(b"NOOP\r\n"), "");
}

#[test]
fn shutdown_inside_a_transaction_before_data_drops_it() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\n");
    assert!(harness.session.is_idle(), "between commands, nothing transferred yet");
    harness.session.shut_down();
    assert_eq!(harness.output(), SHUTTING_DOWN);
    assert!(harness.completed.is_empty());
}

#[test]
fn shutdown_waits_for_a_partial_command_line_then_refuses_it() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@exa");
    assert!(!harness.session.is_idle());
    harness.session.shut_down();
    assert_eq!(harness.output(), "");
    // The command completes: it is answered 421, not executed.
    assert_eq!(harness.send(b"mple.org>\r\n"), SHUTTING_DOWN);
    assert!(harness.session.is_closed());
}

#[test]
fn a_message_in_data_completes_and_is_queued_before_the_421() {
    let mut harness = Harness::new();
    harness.auto_answer_messages = false;
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: x\r\n\r\npart one\r\n");
    assert!(!harness.session.is_idle(), "mid-DATA");
    harness.session.shut_down();
    assert_eq!(harness.output(), "", "nothing interrupts the transfer");
    assert!(!harness.session.is_closed());
    // The rest of the message arrives, with a pipelined command behind it.
    harness.send(b"part two\r\n.\r\nMAIL FROM:<t@example.org>\r\n");
    assert_eq!(harness.completed.len(), 1);
    assert_eq!(harness.data, b"Subject: x\r\n\r\npart one\r\npart two\r\n");
    assert_eq!(harness.output(), "", "250 waits for durability");
    harness.session.message_result(MessageOutcome::Accepted { queue_id: "Q9".into() }).unwrap();
    assert_eq!(harness.output(), format!("250 2.0.0 Ok: queued as Q9\r\n{SHUTTING_DOWN}"));
    assert!(harness.session.is_closed());
}

#[test]
fn a_message_in_bdat_chunks_completes_before_the_421() {
    let mut harness = Harness::new();
    harness.ehlo();
    harness.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.com>\r\nBDAT 5\r\nhello");
    assert!(!harness.session.is_idle(), "between BDAT chunks the message is still in transfer");
    harness.session.shut_down();
    assert_eq!(harness.output(), "");
    let reply = harness.send(b"BDAT 6 LAST\r\n world");
    assert_eq!(reply, format!("250 2.0.0 Ok: queued as Q1\r\n{SHUTTING_DOWN}"));
    assert_eq!(harness.data, b"hello world");
}

#[test]
fn shutdown_before_the_delayed_greeting_answers_421_instead() {
    let mut config = test_config();
    config.greeting_delay = Duration::from_secs(5);
    let mut harness = Harness::with(config, ListenerKind::Smtp, OUTSIDE_IP);
    assert_eq!(harness.output(), "");
    harness.session.shut_down();
    assert_eq!(harness.output(), SHUTTING_DOWN);
    assert!(harness.session.is_closed());
}
