//! The protocol between shards and the control core: every message that crosses a core.
//!
//! Control core → shard ([`ToShard`], through each shard's [`Mailbox`](super::doorbell::Mailbox)):
//! - [`ToShard::Apply`]: a new config snapshot (immutable, shared read-only) plus the
//!   listening sockets this shard must start accepting on and the addresses it must stop
//!   listening on (TCP route ports and UDP service ports alike), and the RADIUS policy
//!   compiled once for the generation. Sent once at start (generation 1) and after every
//!   accepted reload.
//! - [`ToShard::DnsCatalog`]: the DNS zones after a dynamic record change (`shardgate dns
//!   add|remove`): every shard gets the same `Arc<Catalog>` at once and answers from it from
//!   the next query on. (A config generation carries its catalog in `ShardSnapshot::dns_catalog`.)
//! - [`ToShard::Certificates`]: a new certificate store (ACME issued or renewed a certificate,
//!   or a TLS-ALPN-01 challenge certificate came or went): new handshakes use it, live
//!   connections are untouched.
//! - [`ToShard::TicketKeys`]: new TLS session-ticket keys (rotated every 6 hours by the control
//!   core, `crate::tls::tickets`): new handshakes seal tickets with them; every shard gets the
//!   same `Arc`, so a ticket from one shard resumes on another.
//! - [`ToShard::AcmeHttp01`]: the HTTP-01 tokens to answer (`crate::acme::http01`).
//! - [`ToShard::Barrier`]: answer with the shard index once everything sent before is applied
//!   (an ACME order waits for it before the CA validates a challenge).
//! - [`ToShard::MailQueued`]: from the mail queue writer (`crate::mail::queue`): the messages
//!   the shard enqueued under these tickets are durable (or could not be made so) — one
//!   message per shard per group commit; the SMTP sessions waiting on those tickets then
//!   answer `250` (or `451`).
//! - [`ToShard::MailAuthenticated`]: from the inbound mail checks on the control core's runtime
//!   (`crate::mail::auth::service`): the SPF/DKIM/ARC/DMARC verdict (if any) and the blocked
//!   attachments of the message the shard asked about under `ticket`.
//! - [`ToShard::DnsblChecked`]: from the DNS blocklist lookups on the control core's runtime
//!   (`crate::mail::dnsbl`): what the zones say about the client the shard asked about.
//! - [`ToShard::Stop`]: stop accepting, let open connections finish until the deadline, exit.
//!
//! Shard / main thread → control core ([`ToControl`], one crossbeam channel):
//! - [`ToControl::Stats`]: a shard's counters, about once a second;
//! - [`ToControl::RadiusAccounting`]: an accounting record a shard answered, for the session
//!   table the control core keeps;
//! - [`ToControl::DnsUpdate`]: from the admin socket (`runtime::admin`): add or remove a
//!   dynamic DNS record; the control core applies and persists it, sends the new catalog to
//!   every shard, then answers on the request's reply channel once every shard has applied it
//!   (a `Barrier` behind the catalog);
//! - [`ToControl::Acme`]: from ACME order tasks (publish/withdraw a challenge, an order's
//!   outcome) and the admin socket (`shardgate certs`, forced renewal), for the ACME manager;
//! - [`ToControl::ReplaceConfig`]: from the admin API (`crate::admin_api`): a new config text,
//!   validated and hot-applied exactly like a SIGHUP reload, then written to the config file;
//!   the outcome (new generation, or every problem) goes back on the request's reply;
//! - [`ToControl::Mail`]: from the admin socket: a mail queue, suppression list or `send`
//!   request for the mail service (`crate::mail::delivery::service`);
//! - [`ToControl::MailAuth`]: from a shard's SMTP session: check a received message's
//!   authentication and/or attachments; answered with `ToShard::MailAuthenticated`;
//! - [`ToControl::Dnsbl`]: from a shard's SMTP accept: look a connecting client up in the
//!   `[email.dnsbl]` zones; answered with `ToShard::DnsblChecked`;
//! - [`ToControl::ShardStopped`]: a shard finished draining and is exiting;
//! - [`ToControl::Reload`] / [`ToControl::Stop`]: from the signal handler (SIGHUP; SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use shardgate_radius::policy::Policy as RadiusPolicy;
use shardgate_radius::server::AccountingEvent;

use crate::config::Config;
use crate::net::UdpService;
use crate::route::RouteTable;
use crate::stats::ShardStats;

/// One config generation as a shard receives it.
#[derive(Debug)]
pub struct ShardSnapshot {
    /// 1 at start, +1 per accepted reload.
    pub generation: u64,
    /// The checked config (shared, never mutated).
    pub config: Arc<Config>,
    /// Its routes, indexed; the shard copies this into shard-local memory.
    pub routes: Arc<RouteTable>,
    /// New listening sockets for this shard (its member of each reuseport group).
    pub open: Vec<(SocketAddr, socket2::Socket)>,
    /// Addresses no route uses any more: stop listening there.
    pub close: Vec<SocketAddr>,
    /// New UDP sockets for this shard (its member of each reuseport group) and what to serve
    /// on them. Applied after `udp_close`, so an address may appear in both.
    pub udp_open: Vec<(SocketAddr, UdpService, socket2::Socket)>,
    /// UDP addresses no service uses any more (or whose service changed): stop serving there.
    pub udp_close: Vec<SocketAddr>,
    /// The `[radius]` policy of this generation (`None` without a `[radius]` section); the
    /// next datagram on a RADIUS socket uses it.
    pub radius: Option<Arc<RadiusPolicy>>,
    /// The DNS zones of this generation, dynamic records applied (`None` without `[dns]`).
    pub dns_catalog: Option<Arc<shardgate_dns::Catalog>>,
    /// New DNS TCP listening sockets for this shard (its member of each reuseport group).
    pub dns_tcp_open: Vec<(SocketAddr, socket2::Socket)>,
    /// DNS TCP addresses no longer served: stop listening there.
    pub dns_tcp_close: Vec<SocketAddr>,
    /// New SMTP listening sockets for this shard (its member of each reuseport group) and the
    /// kind of port each is (smtp, submission, smtps). Applied after `smtp_close`.
    pub smtp_open: Vec<(SocketAddr, shardgate_smtp::ListenerKind, socket2::Socket)>,
    /// SMTP addresses no longer served (or whose kind changed): stop listening there.
    pub smtp_close: Vec<SocketAddr>,
    /// Where accepted mail goes: the queue writer and the spool folder (`Some` whenever the
    /// generation has `[email]` and the queue is open).
    pub mail_queue: Option<crate::mail::queue::ShardQueueLink>,
}

/// Control core → shard.
#[derive(Debug)]
pub enum ToShard {
    /// Use this config for new connections; open/close listeners as listed.
    Apply(ShardSnapshot),
    /// Answer from this DNS catalog from the next query on (a dynamic record changed).
    DnsCatalog(Arc<shardgate_dns::Catalog>),
    /// Seal and open session tickets with these keys from the next handshake on.
    TicketKeys(Arc<crate::tls::tickets::TicketKeys>),
    /// Use this certificate store for new TLS handshakes (configured + ACME certificates).
    Certificates(Arc<crate::tls::store::CertificateStore>),
    /// Answer these HTTP-01 challenge tokens from now on.
    AcmeHttp01(Arc<crate::acme::http01::Http01Challenges>),
    /// Send this shard's index on the channel: every earlier message has been applied.
    Barrier(tokio::sync::mpsc::UnboundedSender<usize>),
    /// The mail queue writer's answers to enqueues from this shard, one per ticket: `Ok` once
    /// the message's record is committed (journal fsynced), else why not.
    MailQueued(Vec<(u64, Result<(), String>)>),
    /// The inbound checks' report for the message asked about under `ticket`.
    MailAuthenticated {
        /// The shard's ticket.
        ticket: u64,
        /// Authentication verdict and blocked attachments.
        report: Box<crate::mail::auth::service::InboundReport>,
    },
    /// The DNS blocklists' verdict on the client asked about under `ticket`.
    DnsblChecked {
        /// The shard's ticket.
        ticket: u64,
        /// The client.
        ip: std::net::IpAddr,
        /// Listed, not listed, or unknown.
        verdict: crate::mail::dnsbl::DnsblVerdict,
    },
    /// Graceful stop: stop accepting now, close what is still open at `deadline`.
    Stop {
        /// When remaining connections are closed.
        deadline: Instant,
    },
}

/// Shards and the main thread → control core.
#[derive(Debug)]
pub enum ToControl {
    /// A shard's latest counters.
    Stats(ShardStats),
    /// An Accounting-Request a shard acknowledged that changes the session table.
    RadiusAccounting(AccountingEvent),
    /// Add or remove a dynamic DNS record (from the admin socket); the outcome goes back on
    /// `reply` after every shard has been sent the new catalog.
    DnsUpdate {
        /// The change.
        change: crate::dns::dynamic::DnsChange,
        /// Where the outcome goes (the zone and its new serial, or why it was refused).
        reply: crossbeam_channel::Sender<Result<crate::dns::dynamic::DnsUpdated, String>>,
    },
    /// An ACME event for the control core's ACME manager.
    Acme(crate::acme::AcmeEvent),
    /// A mail admin request (`shardgate queue|suppression|send`) from the admin socket; the
    /// mail service answers on `reply` (dropped unanswered without `[email]`).
    Mail {
        /// The request (one of the mail operations).
        request: super::admin::AdminRequest,
        /// Where the answer goes.
        reply: crossbeam_channel::Sender<super::admin::AdminResponse>,
    },
    /// From a shard: check a received message (SPF/DKIM/ARC/DMARC).
    MailAuth(Box<crate::mail::auth::service::AuthRequest>),
    /// From a shard: look a connecting client up in the `[email.dnsbl]` zones.
    Dnsbl {
        /// The asking shard.
        shard: usize,
        /// Its ticket for the answer.
        ticket: u64,
        /// The client.
        ip: std::net::IpAddr,
    },
    /// Shard `0` has drained and is exiting.
    ShardStopped(usize),
    /// Replace the config with this text (admin API `PUT /api/config`): checked and applied
    /// like a SIGHUP reload, then persisted; the outcome goes back on the change's reply.
    ReplaceConfig(crate::admin_api::feed::ConfigChange),
    /// Re-read the config (SIGHUP).
    Reload,
    /// Stop gracefully (SIGTERM/SIGINT).
    Stop,
}
