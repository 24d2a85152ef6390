//! Email on the appliance, beyond the SMTP wire: routing decisions and the durable queue.
//!
//! - [`routes`]: `[[email.routes]]` evaluated for one recipient — envelope criteria at
//!   `RCPT` time (on the shard), content criteria (headers, subject, size, attachments) after
//!   `DATA`, with mail-parser on the message's header block.
//! - [`queue`]: the durable mail queue — spool files written by the shards as data streams
//!   in, an append-only journal written only by the queue writer thread (group commit: one
//!   fsync for many messages from all shards), crash recovery at start, and the
//!   [`queue::QueueHandle`] API the delivery engine and the admin socket use.
//!
//! Not here: the SMTP session (`shardgate-smtp`), the shard's sockets and TLS (`crate::smtp`),
//! delivery to next hops, bounces and the suppression list (the delivery engine).

pub mod queue;
pub mod routes;
