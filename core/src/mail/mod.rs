//! Email on the appliance, beyond the SMTP wire: routing decisions, the durable queue and
//! delivery.
//!
//! - [`routes`]: `[[email.routes]]` evaluated for one recipient — envelope criteria at
//!   `RCPT` time (on the shard), content criteria (headers, subject, size, attachments) after
//!   `DATA`, with mail-parser on the message's header block.
//! - [`queue`]: the durable mail queue — spool files written by the shards as data streams
//!   in, an append-only journal written only by the queue writer thread (group commit: one
//!   fsync for many messages from all shards), crash recovery at start, and the
//!   [`queue::QueueHandle`] API the delivery engine and the admin socket use.
//! - [`delivery`]: the delivery engine on the control core's tokio runtime — next hops
//!   (forward, MX), local Maildirs, retries with backoff, bounces (RFC 3464) and the
//!   suppression list.
//! - [`dkim`]: DKIM keys of our sending domains (generation, rotation, DNS records) and
//!   signing outbound mail.
//! - [`auth`]: inbound SPF/DKIM/ARC/DMARC checks and the `Authentication-Results` header.
//! - [`scan`]: content scanning for `process` routes with `scan = true` — attachment
//!   filtering ([`archive`]: zip file lists) and the spam score ([`spam`]).
//! - [`dnsbl`]: DNS blocklist lookups for connecting clients (on the control core).
//! - [`template`]: messages composed on the appliance (`shardgate send`, `[[email.templates]]`).
//!
//! Not here: the SMTP session (`shardgate-smtp`), the shard's sockets and TLS (`crate::smtp`).

pub mod archive;
pub mod auth;
pub mod delivery;
pub mod dkim;
pub mod dnsbl;
pub mod queue;
pub mod routes;
pub mod scan;
pub mod spam;
pub mod template;
