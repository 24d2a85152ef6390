//! One SMTP connection on a shard: the accept loop and the task that drives a session.
//!
//! The loop of a connection: answer every event the session produced (in order), write out
//! every reply it queued (one write for a pipelined batch), then read with the session's
//! current deadline (`Session::next_timeout`: greeting delay, command or data timeout) as the
//! socket's read timeout. Request events are answered here:
//!
//! - `RcptRequested` → [`route_recipient`]: a `reject` route's code, or `550 5.1.1` when no
//!   route applies; otherwise accepted (possibly provisionally, pending content criteria).
//! - `AuthRequested` → the user directory, run on the shard's blocking pool (argon2 and
//!   SHA-crypt are slow on purpose; the shard keeps serving meanwhile).
//! - `StartTls` → the `220` is written, then the rustls handshake runs on the same socket.
//! - `MessageData` → appended to the message's spool file with glommio file I/O (chunks of
//!   at most 64 KiB; the message is never held whole in memory) and fed to the
//!   [`ContentScanner`].
//! - `MessageComplete` → content routes decided, the record and the spool file's digest
//!   (length, CRC32) handed to the queue writer, which syncs the file with its whole batch;
//!   the session is answered `250` only when the writer's commit arrives
//!   (`ToShard::MailQueued`), `451` if it failed.
//! - `MessageAborted` → the spool file is deleted.
//!
//! IP reputation hook (`crate::mail::dnsbl`): with `[email.dnsbl]`, a client of the SMTP
//! port outside `relay_networks` is looked up before the banner (on the control core; the
//! session waits, the shard does not): listed → `554 5.7.1` and closed, or tagged.
//!
//! Mail authentication and protection hooks (`crate::mail::auth`, `shardgate_smtp::limits`):
//! `[email.limits]` is applied at connect, at each `RCPT` and after a failed AUTH (shard-local
//! counts); with `[email.auth]`, a complete message from an unauthenticated client is checked
//! (SPF/DKIM/ARC/DMARC) on the control core's runtime before the content routes, and its
//! `Authentication-Results` header goes on top of the `Received` header; the same request
//! scans content when a `scan = true` route exists: blocked attachments (`554 5.7.1` or
//! `X-Shardgate-Scan`) and the spam score (`X-Spam-Score`/`X-Spam-Status`, `550 5.7.1` from
//! `spam_reject_score`).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::io::BufferedFile;
use glommio::net::{TcpListener, TcpStream};
use shardgate_smtp::{
    BodyType, ConnectionInfo, EnhancedStatus, Envelope, Event, ForwardPath, ListenerKind, MessageOutcome, RcptDecision,
    Reply, ReversePath, Session,
};

use super::transport::Transport;
use super::{ShardSmtp, SmtpGeneration};
use crate::config::{canonical_ip, EmailAction};
use crate::mail::queue::{now_ms, QueuedMessage, QueuedRecipient, RecipientState, SpoolDigest};
use crate::mail::routes::{resolve_candidates, route_recipient, ContentScanner, EnvelopeFacts, RcptRouting};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a session waits for the queue writer before answering `451`.
const QUEUE_WAIT: Duration = Duration::from_secs(120);

/// Bytes read per call.
const READ_BUFFER: usize = 16 * 1024;

/// Accepts SMTP connections until the task is dropped.
pub async fn accept_loop(smtp: Rc<ShardSmtp>, listener: TcpListener, addr: SocketAddr, kind: ListenerKind) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let Some(generation) = smtp.generation() else {
                    drop(stream);
                    continue;
                };
                use tracing::Instrument as _;
                // Every line of the session, and the queued message's delivery lines on the
                // control core, carry this id (`crate::correlation`).
                let correlation = crate::correlation::next_on_shard(smtp.shard);
                let span = tracing::info_span!("conn", id = %correlation);
                glommio::spawn_local(serve_connection(smtp.clone(), generation, stream, kind, correlation).instrument(span)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = smtp.shard, %addr, error = %e, "SMTP accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a session in and out, however the task ends.
struct SessionGuard {
    smtp: Rc<ShardSmtp>,
    ip: IpAddr,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.smtp.limiter().connection_closed(self.ip);
        let active = &self.smtp.counters.active_sessions;
        active.set(active.get().saturating_sub(1));
    }
}

async fn serve_connection(
    smtp: Rc<ShardSmtp>,
    generation: Rc<SmtpGeneration>,
    mut stream: TcpStream,
    kind: ListenerKind,
    correlation: String,
) {
    let Ok(peer) = stream.peer_addr() else { return };
    let ip = canonical_ip(peer.ip());
    // Rate limits hook (`[email.limits]`): blocked addresses (554) and connections per IP (421).
    let limited = smtp.limiter().connection_opened(ip, Instant::now());
    if let Err(refusal) = limited {
        crate::security_event!(INFO, "smtp.limits_refused", shard = smtp.shard, %ip, ?refusal, "SMTP session refused by [email.limits]");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(&refusal.reply_bytes()).await;
        return;
    }
    smtp.count(|c| &c.sessions, 1);
    smtp.count(|c| &c.active_sessions, 1);
    let _guard = SessionGuard { smtp: smtp.clone(), ip };
    let _ = stream.set_nodelay(true);
    // IP reputation hook (`[email.dnsbl]`, port 25 only; relay networks exempt, as postscreen's
    // permit_mynetworks): a listed client gets 554 5.7.1 instead of the banner, or is tagged.
    let mut dnsbl_listing = None;
    if let (ListenerKind::Smtp, Some(settings)) = (kind, generation.dnsbl.as_ref()) {
        let exempt = generation.settings.server.relay_networks.iter().any(|net| net.contains(&ip));
        if !exempt {
            if let Some(listing) = smtp.dnsbl_verdict(ip, settings).await.listing().cloned() {
                smtp.count(|c| &c.dnsbl_listed, 1);
                tracing::info!(target: "shardgate::security", shard = smtp.shard, %ip, zone = %listing.zone, answer = %listing.answer, "SMTP client listed in a DNSBL");
                if settings.action == crate::config::DnsblAction::Reject {
                    smtp.count(|c| &c.dnsbl_rejected, 1);
                    let reply = format!("554 5.7.1 Service unavailable; client [{ip}] blocked using {}\r\n", listing.zone);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.write_all(reply.as_bytes()).await;
                    return;
                }
                dnsbl_listing = Some(listing);
            }
        }
    }
    let _ = stream.set_write_timeout(Some(generation.session.data_timeout));
    let mut transport = Transport::Plain(stream);
    if kind == ListenerKind::SubmissionTls {
        let Some(tls) = generation.tls.clone() else { return };
        match transport.upgrade(tls, HANDSHAKE_TIMEOUT).await {
            Ok(upgraded) => {
                smtp.count(|c| &c.tls_handshakes, 1);
                transport = upgraded;
            }
            Err(e) => {
                smtp.count(|c| &c.tls_failures, 1);
                tracing::debug!(shard = smtp.shard, %ip, error = %e, "SMTPS handshake failed");
                return;
            }
        }
    }
    let session = Session::new(generation.session.clone(), ConnectionInfo { peer_ip: ip, listener: kind }, Instant::now());
    tracing::debug!(client = %peer, ?kind, "SMTP session");
    let mut connection = Connection { smtp, generation, session, ip, spool: None, dnsbl: dnsbl_listing, correlation };
    connection.run(transport).await;
}

/// The spool file of the message being received.
struct Spool {
    id: String,
    file: Option<BufferedFile>,
    written: u64,
    /// CRC32 of what was written (the queue journals it: see `crate::mail::queue`).
    crc: crc32fast::Hasher,
    failed: bool,
    scanner: ContentScanner,
}

struct Connection {
    smtp: Rc<ShardSmtp>,
    generation: Rc<SmtpGeneration>,
    session: Session,
    ip: IpAddr,
    spool: Option<Spool>,
    /// The client's DNSBL listing under `action = "tag"` (noted on each of its messages).
    dnsbl: Option<crate::mail::dnsbl::DnsblListing>,
    /// The session's correlation id, carried with every message it queues.
    correlation: String,
}

impl Connection {
    async fn run(&mut self, mut transport: Transport) {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut drain = self.smtp.drain_signal();
        loop {
            let mut start_tls = false;
            while let Some(event) = self.session.poll_event() {
                match event {
                    Event::StartTls => start_tls = true,
                    other => self.handle(other).await,
                }
            }
            // Graceful stop: 421 at the next command boundary (at once when idle).
            if self.smtp.is_draining() && !start_tls {
                self.session.shut_down();
            }
            let out = self.session.take_transmit();
            if !out.is_empty() && transport.write_all(&out).await.is_err() {
                break;
            }
            if self.session.is_closed() {
                break;
            }
            if start_tls {
                let Some(tls) = self.generation.tls.clone() else { break };
                match transport.upgrade(tls, HANDSHAKE_TIMEOUT).await {
                    Ok(upgraded) => {
                        self.smtp.count(|c| &c.tls_handshakes, 1);
                        transport = upgraded;
                        if self.session.tls_started(Instant::now()).is_err() {
                            break;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.smtp.count(|c| &c.tls_failures, 1);
                        tracing::debug!(shard = self.smtp.shard, ip = %self.ip, error = %e, "STARTTLS handshake failed");
                        // The socket is in an unknown state: nothing more can be said on it.
                        self.discard_spool().await;
                        return;
                    }
                }
            }
            let now = Instant::now();
            let timeout = match self.session.next_timeout() {
                Some(deadline) if deadline <= now => {
                    self.on_timeout(now);
                    continue;
                }
                Some(deadline) => Some(deadline - now),
                None => None,
            };
            if transport.stream().set_read_timeout(timeout).is_err() {
                break;
            }
            // An idle session also waits for the drain, which ends it with 421 right away;
            // a session in the middle of something reads on (the drain deadline bounds it).
            let read = if self.session.is_idle() && !self.smtp.is_draining() {
                let drained = async {
                    let _ = drain.wait_for(|draining| *draining).await;
                    None
                };
                match futures_lite::future::or(async { Some(transport.read(&mut buf).await) }, drained).await {
                    Some(read) => read,
                    None => continue,
                }
            } else {
                transport.read(&mut buf).await
            };
            match read {
                Ok(0) => break,
                Ok(n) => self.session.feed(&buf[..n], Instant::now()),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => self.on_timeout(Instant::now()),
                Err(_) => break,
            }
        }
        self.discard_spool().await;
        transport.close().await;
    }

    fn on_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        if self.session.is_closed() {
            self.smtp.count(|c| &c.timeouts, 1);
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::RcptRequested { from, to } => {
                let decision = match self.rate_limit_recipient(&from) {
                    Some(refusal) => RcptDecision::Reject(refusal.reply()),
                    None => self.rcpt_decision(&from, &to),
                };
                let accepted = decision == RcptDecision::Accept;
                self.smtp.count(|c| if accepted { &c.recipients_accepted } else { &c.recipients_rejected }, 1);
                let _ = self.session.rcpt_decision(decision);
            }
            Event::AuthRequested { username, password, .. } => {
                let users = self.generation.users.clone();
                let password = password.as_bytes().to_vec();
                let user = username.clone();
                let valid = glommio::executor().spawn_blocking(move || users.verify(&user, &password)).await;
                self.smtp.count(|c| if valid { &c.auth_successes } else { &c.auth_failures }, 1);
                let _ = self.session.auth_result(valid);
                // Rate limits hook: too many failures block the address (421, closing).
                let blocked = if valid {
                    self.smtp.limiter().auth_succeeded(self.ip);
                    None
                } else {
                    self.smtp.limiter().auth_failed(self.ip, Instant::now()).err()
                };
                if !valid {
                    // Debug-quoted: the name is the client's, control characters and all.
                    tracing::warn!(target: "shardgate::security", client = %self.ip, user = ?username, blocked = blocked.is_some(), "SMTP AUTH failed");
                }
                if let Some(refusal) = blocked {
                    self.session.close_with(&refusal.reply());
                }
            }
            Event::MessageData(chunk) => self.spool_chunk(chunk).await,
            Event::MessageComplete { envelope } => {
                let outcome = self.finish_message(envelope).await;
                let accepted = matches!(outcome, MessageOutcome::Accepted { .. });
                self.smtp.count(|c| if accepted { &c.messages_accepted } else { &c.messages_rejected }, 1);
                let _ = self.session.message_result(outcome);
            }
            Event::MessageAborted { .. } => {
                self.smtp.count(|c| &c.messages_aborted, 1);
                self.discard_spool().await;
            }
            // Handled by the caller (the handshake needs the transport).
            Event::StartTls => {}
        }
    }

    /// `[email.limits]` for one more recipient (messages per minute on the first, recipients
    /// per message after); the refusal, if any.
    fn rate_limit_recipient(&self, from: &ReversePath) -> Option<shardgate_smtp::LimitRefusal> {
        let sender = sender_address(from);
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let accepted = self.session.accepted_recipients();
        self.smtp.limiter().recipient(self.ip, domain, accepted, Instant::now()).err()
    }

    /// Mail authentication and scanning hook (`crate::mail::auth`, `crate::mail::scan`): the
    /// SPF/DKIM/ARC/DMARC verdict (`[email.auth]`, unauthenticated clients only) and the
    /// blocked attachments (when a `scan = true` route exists) of the spooled message, found
    /// on the control core's runtime while this task waits (the shard keeps serving). An
    /// empty report when neither applies or no answer came in time.
    async fn inbound_report(&self, id: &str, envelope: &Envelope) -> crate::mail::auth::service::InboundReport {
        let authenticate = self.generation.inbound_auth.is_some() && envelope.authenticated_user.is_none();
        let scan = self.generation.scan.clone();
        let Some(link) = self.generation.queue.as_ref().filter(|_| authenticate || scan.is_some()) else {
            return crate::mail::auth::service::InboundReport::default();
        };
        let request = crate::mail::auth::service::AuthRequest {
            shard: self.smtp.shard,
            ticket: 0,
            spool: link.spool_path(id),
            facts: crate::mail::auth::InboundFacts {
                client_ip: self.ip,
                helo: envelope.helo.clone(),
                mail_from: sender_address(&envelope.reverse_path),
                hostname: self.generation.settings.server.hostname.clone(),
            },
            authenticate,
            scan,
        };
        let answer = self.smtp.request_auth(request);
        // The control core bounds the checks by `timeout_secs`; this only covers a lost answer.
        let timeout_secs = self.generation.inbound_auth.as_ref().map_or(20, |a| a.timeout_secs);
        let wait = Duration::from_secs(u64::from(timeout_secs) + 10);
        let timeout = async {
            glommio::timer::sleep(wait).await;
            Ok(crate::mail::auth::service::InboundReport::default())
        };
        let report = futures_lite::future::or(answer, timeout).await.unwrap_or_default();
        self.smtp.prune_auth_waiters();
        report
    }

    fn facts<'a>(&self, sender: &'a str, recipient: &'a str) -> EnvelopeFacts<'a> {
        EnvelopeFacts { sender, recipient, client_ip: self.ip, authenticated: self.session.authenticated_user().is_some() }
    }

    fn rcpt_decision(&self, from: &ReversePath, to: &ForwardPath) -> RcptDecision {
        let sender = sender_address(from);
        let recipient = recipient_address(to, &self.generation.settings.server.hostname);
        let routes = &self.generation.settings.routes;
        match route_recipient(routes, &self.facts(&sender, &recipient)) {
            RcptRouting::Routed(_) | RcptRouting::Provisional(_) => RcptDecision::Accept,
            RcptRouting::Rejected(index) => match &routes[index].action {
                EmailAction::Reject { code, message } => RcptDecision::Reject(reject_reply(*code, message)),
                _ => RcptDecision::Accept,
            },
            RcptRouting::NoRoute => {
                // Postfix's "Relay access denied": mail for a recipient no route takes.
                crate::security_event!(INFO, "smtp.relay_refused", client = %self.ip, from = ?sender, to = ?recipient, "SMTP relay attempt refused: no email route");
                RcptDecision::Reject(reject_reply(550, &format!("<{recipient}>: Recipient address rejected: no email route for this recipient")))
            }
        }
    }

    async fn spool_chunk(&mut self, chunk: Vec<u8>) {
        if self.spool.is_none() {
            self.spool = Some(self.open_spool().await);
        }
        let Some(spool) = self.spool.as_mut() else { return };
        if self.generation.content_routes {
            spool.scanner.feed(&chunk);
        }
        if spool.failed {
            return;
        }
        let Some(file) = spool.file.as_ref() else { return };
        let len = chunk.len();
        spool.crc.update(&chunk);
        // The chunk moves into the write (no copy). A short write to a regular file means the
        // disk is full: the message is failed (451 at its end) rather than retried.
        match file.write_at(chunk, spool.written).await {
            Ok(n) if n == len => {
                spool.written += len as u64;
                self.smtp.count(|c| &c.bytes_received, len as u64);
            }
            Ok(_) | Err(_) => spool.failed = true,
        }
    }

    async fn open_spool(&self) -> Spool {
        let id = self.smtp.next_queue_id();
        self.smtp.spool_started(&id);
        let file = match &self.generation.queue {
            Some(link) => match BufferedFile::create(link.spool_path(&id)).await {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::error!(shard = self.smtp.shard, error = %e, "cannot create a spool file");
                    None
                }
            },
            None => None,
        };
        let failed = file.is_none();
        Spool { id, file, written: 0, crc: crc32fast::Hasher::new(), failed, scanner: ContentScanner::new() }
    }

    async fn discard_spool(&mut self) {
        if let Some(spool) = self.spool.take() {
            if let Some(file) = spool.file {
                let _ = file.remove().await;
                let _ = file.close().await;
            }
            self.smtp.spool_done(&spool.id);
        }
    }

    /// Decides the recipients' actions (content routes), makes the message durable, and says
    /// what to answer.
    async fn finish_message(&mut self, envelope: Envelope) -> MessageOutcome {
        if self.spool.is_none() {
            // An empty message (`BDAT 0 LAST`): still one spool file.
            self.spool = Some(self.open_spool().await);
        }
        let Some(spool) = self.spool.take() else { return MessageOutcome::TempFail };
        let id = spool.id.clone();
        let outcome = self.finish_spooled(envelope, spool).await;
        // Handed over or removed by now (a task dropped before this point leaves the id for
        // the drain to clean up).
        self.smtp.spool_done(&id);
        outcome
    }

    async fn finish_spooled(&mut self, envelope: Envelope, spool: Spool) -> MessageOutcome {
        let Spool { id, file, failed, scanner, written, crc } = spool;
        let Some(file) = file else { return MessageOutcome::TempFail };
        // Not synced here: the queue writer syncs the file system once for its whole batch.
        let digest = SpoolDigest { id: id.clone(), len: written, crc: crc.finalize() };
        if failed {
            let _ = file.remove().await;
            let _ = file.close().await;
            return MessageOutcome::TempFail;
        }
        // Without content criteria in any route, the facts decide nothing (no recipient can be
        // provisional): the scan was skipped, only the size is known.
        let mut facts = if self.generation.content_routes {
            scanner.finish()
        } else {
            crate::mail::routes::ContentFacts { size: envelope.size, ..Default::default() }
        };
        // Mail authentication hook: DMARC p=reject → 550 5.7.1; quarantine tagged (or refused,
        // per `[email.auth] quarantine`); results also feed the routes' spf/dkim/dmarc criteria.
        let report = self.inbound_report(&id, &envelope).await;
        let mut auth_headers = String::new();
        if let Some(listing) = &self.dnsbl {
            auth_headers.push_str(&format!("X-Shardgate-DNSBL: {} listed in {} ({})\r\n", self.ip, listing.zone, listing.answer));
        }
        if let Some(verdict) = &report.auth {
            use crate::mail::auth::Disposition;
            let settings = self.generation.inbound_auth.as_ref();
            let refuse = match verdict.disposition {
                Disposition::Reject => settings.is_some_and(|s| s.enforce_reject),
                Disposition::Quarantine => settings.is_some_and(|s| s.quarantine == crate::config::QuarantineAction::Reject),
                Disposition::Accept => false,
            };
            if refuse {
                let _ = file.remove().await;
                let _ = file.close().await;
                self.smtp.count(|c| &c.dmarc_rejected, 1);
                let text = format!("Message rejected: DMARC policy of {} (SPF {}, DKIM {})", verdict.from_domain, verdict.spf.as_str(), verdict.dkim.as_str());
                return MessageOutcome::Rejected(reject_reply(550, &text));
            }
            if verdict.disposition == Disposition::Quarantine {
                self.smtp.count(|c| &c.dmarc_quarantined, 1);
                auth_headers.push_str(&format!("X-Shardgate-Quarantine: dmarc ({})\r\n", verdict.from_domain));
            }
            auth_headers.push_str(&verdict.header);
            facts.auth = Some(crate::mail::routes::AuthFacts { spf: verdict.spf, dkim: verdict.dkim, dmarc: verdict.dmarc });
        }
        let recipients = match self.recipient_actions(&envelope, &facts) {
            Ok(recipients) => recipients,
            Err(reply) => {
                let _ = file.remove().await;
                let _ = file.close().await;
                return MessageOutcome::Rejected(reply);
            }
        };
        // Scanning hook: blocked attachments on a `scan = true` route → 554 5.7.1 or a tag.
        let scanned = recipients.iter().any(|r| self.generation.settings.routes.iter().any(|route| route.name == r.route && route.scan));
        if let (true, Some(first), Some(policy)) = (scanned, report.blocked.first(), &self.generation.scan) {
            self.smtp.count(|c| &c.attachments_blocked, 1);
            if policy.action == crate::config::ScanAction::Reject {
                let _ = file.remove().await;
                let _ = file.close().await;
                return MessageOutcome::Rejected(reject_reply(554, &format!("Message rejected: attachment {} is not allowed", first.describe())));
            }
            let listed: Vec<String> = report.blocked.iter().map(|f| f.describe()).collect();
            auth_headers.insert_str(0, &format!("X-Shardgate-Scan: blocked {}\r\n", listed.join(", ")));
        }
        // Spam score hook (`crate::mail::spam`): headers on every scanned message, refusal
        // from `spam_reject_score` on.
        let mut spam = report.spam.clone();
        if let (Some(spam), Some(_), Some(policy)) = (spam.as_mut(), &self.dnsbl, &self.generation.scan) {
            spam.add_rule("RCVD_IN_DNSBL", &policy.spam);
        }
        if let (true, Some(spam)) = (scanned, &spam) {
            if spam.rejects() {
                let _ = file.remove().await;
                let _ = file.close().await;
                self.smtp.count(|c| &c.spam_rejected, 1);
                let text = format!("Message rejected as spam (score={} tests={})", spam.score, spam.tests.join(","));
                return MessageOutcome::Rejected(reject_reply(550, &text));
            }
            if spam.is_spam() {
                self.smtp.count(|c| &c.spam_tagged, 1);
            }
            auth_headers.insert_str(0, &spam.headers());
        }
        let _ = file.close().await;
        let Some(link) = self.generation.queue.clone() else { return MessageOutcome::TempFail };
        let hostname = &self.generation.settings.server.hostname;
        let date = httpdate::fmt_http_date(std::time::SystemTime::now()).replace("GMT", "+0000");
        let message = QueuedMessage {
            id: id.clone(),
            received_at_ms: now_ms(),
            sender: sender_address(&envelope.reverse_path),
            recipients,
            size: envelope.size,
            trace_header: format!("{auth_headers}{}", envelope.received_header(hostname, &id, &date)),
            helo: envelope.helo.clone(),
            client_ip: self.ip,
            authenticated_user: envelope.authenticated_user.clone(),
            tls: envelope.tls,
            smtputf8: envelope.parameters.smtputf8,
            body_8bit: envelope.parameters.body == Some(BodyType::EightBitMime),
            correlation_id: Some(self.correlation.clone()),
        };
        let (sender, recipients, size) = (message.sender.clone(), message.recipients.len(), message.size);
        let (ticket, answer) = self.smtp.ticket();
        // From here the writer owns the spool file (commits it or deletes it).
        self.smtp.spool_done(&id);
        if !link.enqueue(self.smtp.shard, ticket, message, digest) {
            self.smtp.forget(ticket);
            let _ = std::fs::remove_file(link.spool_path(&id));
            return MessageOutcome::TempFail;
        }
        let timeout = async {
            glommio::timer::sleep(QUEUE_WAIT).await;
            Ok(Err("the queue writer did not answer".to_string()))
        };
        match futures_lite::future::or(answer, timeout).await {
            Ok(Ok(())) => {
                // Postfix's "queued as" line: the queue id next to the session's correlation id.
                tracing::info!(queue_id = %id, from = %sender, recipients, size, client = %self.ip, "message queued");
                MessageOutcome::Accepted { queue_id: id }
            }
            Ok(Err(reason)) => {
                tracing::error!(shard = self.smtp.shard, id = %id, reason = %reason, "message not queued");
                self.smtp.forget(ticket);
                MessageOutcome::TempFail
            }
            Err(_) => MessageOutcome::TempFail,
        }
    }

    /// Every recipient's action, or the reply refusing the whole message.
    fn recipient_actions(&self, envelope: &Envelope, facts: &crate::mail::routes::ContentFacts) -> Result<Vec<QueuedRecipient>, Reply> {
        let routes = &self.generation.settings.routes;
        let hostname = &self.generation.settings.server.hostname;
        let sender = sender_address(&envelope.reverse_path);
        let mut out = Vec::with_capacity(envelope.recipients.len());
        for to in &envelope.recipients {
            let recipient = recipient_address(to, hostname);
            // The RCPT-time decision is a pure function of these facts, so it is recomputed
            // rather than remembered per transaction.
            let chosen = match route_recipient(routes, &self.facts(&sender, &recipient)) {
                RcptRouting::Routed(index) => Some(index),
                RcptRouting::Provisional(candidates) => resolve_candidates(routes, &candidates, facts),
                RcptRouting::Rejected(_) | RcptRouting::NoRoute => None,
            };
            let Some(route) = chosen.and_then(|index| routes.get(index)) else {
                return Err(reject_reply(550, &format!("<{recipient}>: no email route for this message")));
            };
            if let EmailAction::Reject { code, message } = &route.action {
                return Err(reject_reply(*code, message));
            }
            out.push(QueuedRecipient {
                address: recipient,
                route: route.name.clone(),
                action: route.action.clone(),
                state: RecipientState::Pending,
                attempts: 0,
                next_attempt_ms: 0,
                last_error: None,
            });
        }
        Ok(out)
    }
}

/// The sender as stored: the mailbox, or empty for `<>`.
fn sender_address(from: &ReversePath) -> String {
    from.mailbox().map(|m| m.to_string()).unwrap_or_default()
}

/// The recipient as routed and stored: the mailbox; `<postmaster>` is `postmaster@<hostname>`.
fn recipient_address(to: &ForwardPath, hostname: &str) -> String {
    to.mailbox().map(|m| m.to_string()).unwrap_or_else(|| format!("postmaster@{hostname}"))
}

/// A refusal with `code` (4xx/5xx, checked by config validation) and the matching enhanced
/// status `x.7.1` (delivery not authorized).
fn reject_reply(code: u16, text: &str) -> Reply {
    let status = EnhancedStatus::new((code / 100) as u8, 7, 1).ok();
    match Reply::new(code, status, text).or_else(|_| Reply::new(550, None, "Message rejected")) {
        Ok(reply) => reply,
        Err(_) => unreachable!("550 without an enhanced status is a valid reply"),
    }
}
