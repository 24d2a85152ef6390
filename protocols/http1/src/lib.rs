//! The sans-I/O HTTP/1.1 core of shardgate's reverse proxy: bytes and `Instant`s in, typed
//! heads, body slices, bytes to send and decisions out. No sockets, no clock, no files.
//!
//! Layers, from the wire up:
//! - **heads** — [`request`] and [`response`] parse heads incrementally from the caller's
//!   buffer (httparse tokenises; these modules enforce limits and the request-smuggling
//!   defences, then decide [`BodyFraming`] and [`ConnectionOptions`]). A head that parses is
//!   unambiguous: one framing, one Host, no folding, CRLF only.
//! - **bodies** — [`chunked`] decodes chunked bodies as a stream of slices of the caller's
//!   input and frames re-encoded chunks; content-length bodies need only a counter.
//! - **forwarding** — [`rewrite`] writes the head sent upstream (hop-by-hop fields removed,
//!   canonical framing, `X-Forwarded-*` and `Forwarded`) and the head sent back to the client
//!   (keep-alive decided by us, re-chunking for HTTP/1.1 clients).
//! - **answers of our own** — [`reply`] (canned errors, 429 with Retry-After, redirects) and
//!   [`static_files`] (path resolution, MIME, ETag, conditionals, ranges — pure functions; the
//!   caller stats and sends the file). Every head of our own, and every forwarded response
//!   that lacks one, carries a `Date` ([`date::HttpDate`], made from the caller's clock).
//! - **admission** — [`ratelimit`]: nginx `limit_req` token buckets and `limit_conn` counters
//!   per client IP, with bounded memory and time passed in.
//!
//! Decisions worth knowing:
//! - **Bare LF** in a head or in chunked framing is refused (400 from clients, 502 from
//!   backends). RFC 9112 §2.2 lets a recipient accept it; refusing removes a parser-differential
//!   class for the price of clients no real browser or library is.
//! - **Transfer-Encoding** in requests must be exactly `chunked` on one line (else 501, as
//!   nginx), never with Content-Length and never on HTTP/1.0 (400).
//! - Bodies are always **re-framed** when forwarded: the proxy writes its own Content-Length
//!   or chunk sizes, so the receiver never sees the sender's framing quirks.
//!
//! The lead proxy loop (in `shardgate-core`) owns sockets, timers (408 after the header
//! timeout), pools and routing; this crate owns the rules.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod chunked;
pub mod date;
mod error;
mod head;
pub mod ratelimit;
pub mod reply;
pub mod request;
pub mod response;
pub mod rewrite;
pub mod static_files;

pub use error::Http1Error;
pub use head::{
    BodyFraming, ConnectionOptions, HeaderList, Limits, ParseStatus, Version, MAX_HEADERS_CAP,
};
