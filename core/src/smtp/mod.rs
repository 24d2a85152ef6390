//! The SMTP gateway on a shard: listeners, sessions, spooling, and the wait for durability.
//!
//! - [`ShardSmtp`] (one per shard): the email settings of the generation in force (an `Rc`
//!   swapped whole; sessions keep the one they started with), the shard's member socket of
//!   every email reuseport group (one accept task each), the `[email.limits]` rate limiter
//!   (per-client-address session counts included, enforced per shard without cross-shard
//!   traffic), the DNS blocklist verdicts it was told (`[email.dnsbl]`, cached), the
//!   tickets of messages waiting for the queue writer and for the control core's checks,
//!   and the counters ([`SmtpCounters`], merged on the control core into `shardgate stats`
//!   → `smtp`).
//! - [`serve`]: one task per connection driving the sans-I/O `shardgate_smtp::Session`:
//!   bytes in, replies out, each request event answered (recipient → email routes, AUTH →
//!   user directory on the blocking pool, STARTTLS → rustls handshake, data → spool file,
//!   end of data → content routes, then the queue writer; `250` only once it answered).
//! - [`transport`]: plain TCP or userspace rustls over the same socket.
//!
//! Not here: the SMTP rules (`shardgate-smtp`), route matching (`crate::mail::routes`), the
//! journal and recovery (`crate::mail::queue`), delivery.

pub mod serve;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shardgate_smtp::{ListenerKind, SessionConfig, UserDirectory};

use crate::config::{Config, EmailSettings};
use crate::mail::queue::{queue_id_counter_start, ShardQueueLink};
use crate::stats::bump;

/// SMTP counters of one shard, or summed over shards (`shardgate stats` → `smtp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpCounters {
    /// Sessions accepted.
    pub sessions: u64,
    /// Sessions open now.
    pub active_sessions: u64,
    /// TLS handshakes completed (STARTTLS and implicit TLS).
    pub tls_handshakes: u64,
    /// TLS handshakes that failed.
    pub tls_failures: u64,
    /// Messages acknowledged with 250 (durably queued).
    pub messages_accepted: u64,
    /// Messages refused after their data (content routes, queue failures).
    pub messages_rejected: u64,
    /// Messages dropped while being received (size, bare LF, timeout, reset).
    pub messages_aborted: u64,
    /// Recipients accepted at RCPT.
    pub recipients_accepted: u64,
    /// Recipients refused at RCPT by a route (reject action or no route).
    pub recipients_rejected: u64,
    /// Successful AUTH.
    pub auth_successes: u64,
    /// Failed AUTH.
    pub auth_failures: u64,
    /// Message content octets spooled.
    pub bytes_received: u64,
    /// Sessions ended by a per-phase timeout.
    pub timeouts: u64,
    /// Refusals by `[email.limits]` (`shardgate_smtp::limits`): connections, blocked IPs,
    /// message rates, recipients per message.
    pub limits: shardgate_smtp::LimitCounters,
    /// Messages refused at end of DATA for a DMARC `p=reject` (or quarantine set to reject).
    pub dmarc_rejected: u64,
    /// Messages accepted tagged for a DMARC `p=quarantine` failure.
    pub dmarc_quarantined: u64,
    /// Messages on `scan = true` routes with a blocked attachment (refused or tagged).
    pub attachments_blocked: u64,
    /// Messages refused for their spam score (`spam_reject_score`).
    pub spam_rejected: u64,
    /// Messages accepted tagged as spam (`spam_tag_score`).
    pub spam_tagged: u64,
    /// Connections from clients listed in an `[email.dnsbl]` zone (refused or tagged).
    pub dnsbl_listed: u64,
    /// Connections refused because of such a listing.
    pub dnsbl_rejected: u64,
}

impl SmtpCounters {
    /// Adds another shard's counters.
    pub fn merge(&mut self, other: &SmtpCounters) {
        self.sessions += other.sessions;
        self.active_sessions += other.active_sessions;
        self.tls_handshakes += other.tls_handshakes;
        self.tls_failures += other.tls_failures;
        self.messages_accepted += other.messages_accepted;
        self.messages_rejected += other.messages_rejected;
        self.messages_aborted += other.messages_aborted;
        self.recipients_accepted += other.recipients_accepted;
        self.recipients_rejected += other.recipients_rejected;
        self.auth_successes += other.auth_successes;
        self.auth_failures += other.auth_failures;
        self.bytes_received += other.bytes_received;
        self.timeouts += other.timeouts;
        self.limits.connections_refused += other.limits.connections_refused;
        self.limits.blocked += other.limits.blocked;
        self.limits.rate_limited += other.limits.rate_limited;
        self.limits.recipients_refused += other.limits.recipients_refused;
        self.dmarc_rejected += other.dmarc_rejected;
        self.dmarc_quarantined += other.dmarc_quarantined;
        self.attachments_blocked += other.attachments_blocked;
        self.spam_rejected += other.spam_rejected;
        self.spam_tagged += other.spam_tagged;
        self.dnsbl_listed += other.dnsbl_listed;
        self.dnsbl_rejected += other.dnsbl_rejected;
    }
}

/// The live counters (cells: only this shard touches them).
#[derive(Debug, Default)]
pub(crate) struct LiveCounters {
    pub(crate) sessions: Cell<u64>,
    pub(crate) active_sessions: Cell<u64>,
    pub(crate) tls_handshakes: Cell<u64>,
    pub(crate) tls_failures: Cell<u64>,
    pub(crate) messages_accepted: Cell<u64>,
    pub(crate) messages_rejected: Cell<u64>,
    pub(crate) messages_aborted: Cell<u64>,
    pub(crate) recipients_accepted: Cell<u64>,
    pub(crate) recipients_rejected: Cell<u64>,
    pub(crate) auth_successes: Cell<u64>,
    pub(crate) auth_failures: Cell<u64>,
    pub(crate) bytes_received: Cell<u64>,
    pub(crate) timeouts: Cell<u64>,
    pub(crate) dmarc_rejected: Cell<u64>,
    pub(crate) dmarc_quarantined: Cell<u64>,
    pub(crate) attachments_blocked: Cell<u64>,
    pub(crate) spam_rejected: Cell<u64>,
    pub(crate) spam_tagged: Cell<u64>,
    pub(crate) dnsbl_listed: Cell<u64>,
    pub(crate) dnsbl_rejected: Cell<u64>,
}

/// One config generation's email settings as sessions use them.
pub struct SmtpGeneration {
    /// `[email]` of this generation.
    pub settings: EmailSettings,
    /// The session snapshot (STARTTLS advertised when a certificate exists).
    pub session: Arc<SessionConfig>,
    /// Users for AUTH.
    pub users: Arc<UserDirectory>,
    /// rustls config for STARTTLS and implicit TLS (`None` without a certificate).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where accepted messages go (`None` only if the queue could not be opened).
    pub queue: Option<ShardQueueLink>,
    /// `[email.auth]`: inbound checks on the control core (`None`: none).
    pub inbound_auth: Option<crate::config::InboundAuthSettings>,
    /// `[email.scan]`, when some route has `scan = true` (`None`: no scanning).
    pub scan: Option<crate::config::ScanPolicy>,
    /// `[email.dnsbl]`: blocklists checked at connect (`None`: none).
    pub dnsbl: Option<crate::config::DnsblSettings>,
    /// Some route has content criteria (headers, subject, size, attachments, spf/dkim/dmarc):
    /// only then is received content scanned for [`crate::mail::routes::ContentFacts`]
    /// (the header parse and line scan cost about as much as the whole SMTP transaction).
    pub content_routes: bool,
}

/// One shard's SMTP state. No `RefCell` borrow is held across an `.await`.
pub struct ShardSmtp {
    pub(crate) shard: usize,
    generation: RefCell<Option<Rc<SmtpGeneration>>>,
    listeners: RefCell<HashMap<SocketAddr, glommio::Task<()>>>,
    pending: RefCell<HashMap<u64, tokio::sync::oneshot::Sender<Result<(), String>>>>,
    next_ticket: Cell<u64>,
    next_queue_id: Cell<u64>,
    pub(crate) counters: LiveCounters,
    /// `[email.limits]`, counted on this shard only.
    limiter: RefCell<shardgate_smtp::RateLimiter>,
    /// Sessions waiting for the inbound checks' verdict, by ticket.
    auth_pending: RefCell<HashMap<u64, AuthWaiter>>,
    /// Sessions waiting for a DNS blocklist verdict, by ticket.
    dnsbl_pending: RefCell<HashMap<u64, tokio::sync::oneshot::Sender<crate::mail::dnsbl::DnsblVerdict>>>,
    /// Recent DNS blocklist verdicts (`[email.dnsbl] cache_secs`), so a client seen lately
    /// costs no message to the control core.
    dnsbl_cache: RefCell<crate::mail::dnsbl::VerdictCache>,
    /// Where inbound check requests go (`None` in unit tests).
    to_control: Option<crossbeam_channel::Sender<crate::runtime::messages::ToControl>>,
    /// Becomes `true` when the shard drains (graceful stop): sessions end with `421 4.3.2`
    /// at their next command boundary, idle ones at once.
    draining: tokio::sync::watch::Sender<bool>,
    /// Spool files being written that have not been handed to the queue writer nor removed
    /// yet; the drain removes the ones left (their sessions never got a `250`), so the queue
    /// can be marked cleanly closed.
    spooling: RefCell<std::collections::HashSet<String>>,
}

/// The receiving end of an inbound check's verdict.
type AuthWaiter = tokio::sync::oneshot::Sender<crate::mail::auth::service::InboundReport>;

impl ShardSmtp {
    /// A shard's SMTP state with no email settings yet.
    pub fn new(shard: usize) -> ShardSmtp {
        ShardSmtp {
            shard,
            generation: RefCell::new(None),
            listeners: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_ticket: Cell::new(1),
            next_queue_id: Cell::new(queue_id_counter_start()),
            counters: LiveCounters::default(),
            limiter: RefCell::new(shardgate_smtp::RateLimiter::new(shardgate_smtp::RateLimitConfig::default())),
            auth_pending: RefCell::new(HashMap::new()),
            dnsbl_pending: RefCell::new(HashMap::new()),
            dnsbl_cache: RefCell::new(crate::mail::dnsbl::VerdictCache::default()),
            to_control: None,
            draining: tokio::sync::watch::channel(false).0,
            spooling: RefCell::new(std::collections::HashSet::new()),
        }
    }

    /// Sends inbound check requests to the control core on `to_control`.
    pub fn with_control(mut self, to_control: crossbeam_channel::Sender<crate::runtime::messages::ToControl>) -> ShardSmtp {
        self.to_control = Some(to_control);
        self
    }

    /// The rate limiter (`[email.limits]`); borrow briefly, never across an `.await`.
    pub(crate) fn limiter(&self) -> std::cell::RefMut<'_, shardgate_smtp::RateLimiter> {
        self.limiter.borrow_mut()
    }

    /// Asks the control core to check a received message (`request.shard` and `ticket` are
    /// filled in here); the receiver gets the report (an empty one when the request could not
    /// be sent).
    pub(crate) fn request_auth(
        &self,
        mut request: crate::mail::auth::service::AuthRequest,
    ) -> tokio::sync::oneshot::Receiver<crate::mail::auth::service::InboundReport> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        request.shard = self.shard;
        request.ticket = ticket;
        let sent = self
            .to_control
            .as_ref()
            .is_some_and(|to_control| to_control.send(crate::runtime::messages::ToControl::MailAuth(Box::new(request))).is_ok());
        if sent {
            self.auth_pending.borrow_mut().insert(ticket, sender);
        } else {
            let _ = sender.send(crate::mail::auth::service::InboundReport::default());
        }
        receiver
    }

    /// The inbound checks answered ticket `ticket`.
    pub fn authenticated(&self, ticket: u64, report: crate::mail::auth::service::InboundReport) {
        if let Some(waiter) = self.auth_pending.borrow_mut().remove(&ticket) {
            let _ = waiter.send(report);
        }
    }

    /// Drops the waiters of sessions that gave up waiting for their verdict.
    pub(crate) fn prune_auth_waiters(&self) {
        self.auth_pending.borrow_mut().retain(|_, waiter| !waiter.is_closed());
        self.dnsbl_pending.borrow_mut().retain(|_, waiter| !waiter.is_closed());
    }

    /// The DNS blocklists' verdict on `ip` under `settings`: from this shard's cache, else
    /// asked of the control core (the session awaits; the shard keeps serving). `Unknown`
    /// when no answer comes within the lookup timeout.
    pub(crate) async fn dnsbl_verdict(&self, ip: IpAddr, settings: &crate::config::DnsblSettings) -> crate::mail::dnsbl::DnsblVerdict {
        use crate::mail::dnsbl::DnsblVerdict;
        if let Some(verdict) = self.dnsbl_cache.borrow_mut().get(ip, std::time::Instant::now()) {
            return verdict;
        }
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let message = crate::runtime::messages::ToControl::Dnsbl { shard: self.shard, ticket, ip };
        let sent = self.to_control.as_ref().is_some_and(|to_control| to_control.send(message).is_ok());
        if !sent {
            return DnsblVerdict::Unknown;
        }
        self.dnsbl_pending.borrow_mut().insert(ticket, sender);
        // The control core bounds the lookups by `timeout_ms`; this only covers a lost answer.
        let wait = std::time::Duration::from_millis(u64::from(settings.timeout_ms) + 1000);
        let timeout = async {
            glommio::timer::sleep(wait).await;
            Ok(DnsblVerdict::Unknown)
        };
        let verdict = futures_lite::future::or(receiver, timeout).await.unwrap_or(DnsblVerdict::Unknown);
        self.dnsbl_pending.borrow_mut().remove(&ticket);
        let ttl = std::time::Duration::from_secs(u64::from(settings.cache_secs));
        self.dnsbl_cache.borrow_mut().put(ip, verdict.clone(), std::time::Instant::now(), ttl);
        verdict
    }

    /// The control core answered DNS blocklist ticket `ticket`.
    pub fn dnsbl_checked(&self, ticket: u64, _ip: IpAddr, verdict: crate::mail::dnsbl::DnsblVerdict) {
        if let Some(waiter) = self.dnsbl_pending.borrow_mut().remove(&ticket) {
            let _ = waiter.send(verdict);
        }
    }

    /// Applies a config generation (or a certificate swap): new sessions use it.
    pub fn configure(&self, config: &Config, queue: Option<ShardQueueLink>, tls: &crate::tls::TlsShared) {
        let Some(settings) = &config.email else {
            *self.generation.borrow_mut() = None;
            return;
        };
        let has_certificate = config.certificates.all().next().is_some();
        let tls_config = if has_certificate {
            match crate::tls::server_config(&config.certificates, None, &[], tls) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "SMTP: no TLS config; STARTTLS not offered");
                    None
                }
            }
        } else {
            None
        };
        let queue = queue.or_else(|| self.generation.borrow().as_ref().and_then(|g| g.queue.clone()));
        let generation = SmtpGeneration {
            session: Arc::new(settings.server.session_config(tls_config.is_some())),
            users: Arc::new(settings.server.user_directory()),
            settings: settings.clone(),
            tls: tls_config,
            queue,
            inbound_auth: config.mail_auth.inbound.clone(),
            scan: settings.routes.iter().any(|route| route.scan).then(|| config.mail_auth.scan.clone()),
            dnsbl: config.mail_auth.dnsbl.clone(),
            content_routes: settings.routes.iter().any(|route| route.matcher.has_content_criteria()),
        };
        if self.generation.borrow().as_ref().map(|g| &g.dnsbl) != Some(&generation.dnsbl) {
            *self.dnsbl_cache.borrow_mut() = crate::mail::dnsbl::VerdictCache::default();
        }
        self.limiter.borrow_mut().reconfigure(config.mail_auth.limits.clone());
        *self.generation.borrow_mut() = Some(Rc::new(generation));
    }

    /// The generation in force.
    pub(crate) fn generation(&self) -> Option<Rc<SmtpGeneration>> {
        self.generation.borrow().clone()
    }

    /// Starts accepting on `socket` (this shard's member of the group on `addr`).
    pub fn open(self: &Rc<Self>, addr: SocketAddr, kind: ListenerKind, socket: socket2::Socket) {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the socket is a bound, listening TCP socket whose ownership moves here.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
        let task = glommio::spawn_local(serve::accept_loop(self.clone(), listener, addr, kind));
        self.listeners.borrow_mut().insert(addr, task);
    }

    /// Stops accepting on `addr` (open sessions finish).
    pub fn close(&self, addr: &SocketAddr) {
        self.listeners.borrow_mut().remove(addr);
    }

    /// Stops every listener (graceful stop); returns how many were closed.
    pub fn close_all(&self) -> usize {
        self.listeners.borrow_mut().drain().count()
    }

    /// Graceful stop: every session answers `421 4.3.2 ... Service shutting down` at its next
    /// command boundary (idle sessions at once; a message being received is finished and
    /// queued first) and closes.
    pub fn drain_sessions(&self) {
        self.draining.send_replace(true);
    }

    /// True once [`ShardSmtp::drain_sessions`] was called.
    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver that sees the drain start (`wait_for(|d| *d)`).
    pub(crate) fn drain_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// A session started writing spool file `id`.
    pub(crate) fn spool_started(&self, id: &str) {
        self.spooling.borrow_mut().insert(id.to_string());
    }

    /// Spool file `id` was handed to the queue writer or removed.
    pub(crate) fn spool_done(&self, id: &str) {
        self.spooling.borrow_mut().remove(id);
    }

    /// At the end of the drain: removes the spool files of messages still being received
    /// (their sessions never got a `250` and never will); returns how many.
    pub fn remove_unfinished_spools(&self) -> usize {
        let ids: Vec<String> = self.spooling.borrow_mut().drain().collect();
        let Some(link) = self.generation().and_then(|g| g.queue.clone()) else { return 0 };
        for id in &ids {
            let _ = std::fs::remove_file(link.spool_path(id));
        }
        ids.len()
    }

    /// Sessions open on this shard.
    pub fn open_sessions(&self) -> u64 {
        self.counters.active_sessions.get()
    }

    /// The queue writer answered ticket `ticket`.
    pub fn queued(&self, ticket: u64, result: Result<(), String>) {
        if let Some(waiter) = self.pending.borrow_mut().remove(&ticket) {
            let _ = waiter.send(result);
        }
    }

    /// A new ticket and the receiver its answer will arrive on.
    pub(crate) fn ticket(&self) -> (u64, tokio::sync::oneshot::Receiver<Result<(), String>>) {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.pending.borrow_mut().insert(ticket, sender);
        (ticket, receiver)
    }

    /// Forgets a ticket whose answer will never come (the writer is gone).
    pub(crate) fn forget(&self, ticket: u64) {
        self.pending.borrow_mut().remove(&ticket);
    }

    /// The next queue id of this shard.
    pub(crate) fn next_queue_id(&self) -> String {
        let counter = self.next_queue_id.get();
        self.next_queue_id.set(counter + 1);
        crate::mail::queue::make_queue_id(counter, self.shard as u8)
    }

    /// This shard's counters so far.
    pub fn counters(&self) -> SmtpCounters {
        let c = &self.counters;
        SmtpCounters {
            sessions: c.sessions.get(),
            active_sessions: c.active_sessions.get(),
            tls_handshakes: c.tls_handshakes.get(),
            tls_failures: c.tls_failures.get(),
            messages_accepted: c.messages_accepted.get(),
            messages_rejected: c.messages_rejected.get(),
            messages_aborted: c.messages_aborted.get(),
            recipients_accepted: c.recipients_accepted.get(),
            recipients_rejected: c.recipients_rejected.get(),
            auth_successes: c.auth_successes.get(),
            auth_failures: c.auth_failures.get(),
            bytes_received: c.bytes_received.get(),
            timeouts: c.timeouts.get(),
            limits: self.limiter.borrow().counters,
            dmarc_rejected: c.dmarc_rejected.get(),
            dmarc_quarantined: c.dmarc_quarantined.get(),
            attachments_blocked: c.attachments_blocked.get(),
            spam_rejected: c.spam_rejected.get(),
            spam_tagged: c.spam_tagged.get(),
            dnsbl_listed: c.dnsbl_listed.get(),
            dnsbl_rejected: c.dnsbl_rejected.get(),
        }
    }

    pub(crate) fn count(&self, cell: impl Fn(&LiveCounters) -> &Cell<u64>, n: u64) {
        bump(cell(&self.counters), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_are_unique_and_well_formed() {
        let smtp = ShardSmtp::new(3);
        let a = smtp.next_queue_id();
        let b = smtp.next_queue_id();
        assert_ne!(a, b);
        assert!(crate::mail::queue::is_queue_id(&a), "{a}");
        assert!(a.ends_with("03"));
    }

    #[test]
    fn counters_merge() {
        let mut total = SmtpCounters { sessions: 1, messages_accepted: 2, ..Default::default() };
        total.merge(&SmtpCounters { sessions: 3, bytes_received: 10, ..Default::default() });
        assert_eq!((total.sessions, total.messages_accepted, total.bytes_received), (4, 2, 10));
    }
}
