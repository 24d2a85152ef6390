//! `shardgate-dns`: the sans-I/O authoritative DNS core of shardgate.
//!
//! Like quinn-proto, this crate contains no networking code and reads no clock: bytes and
//! `Instant`s go in, bytes and decisions come out. The shards own the UDP/TCP sockets and the
//! HTTP layer owns DoH transport; they call into these layers:
//!
//! * **configuration** — [`config`]: the serde `[dns]` section and its `validate()`, which
//!   reports every problem with zone, record and field named.
//! * **data** — [`zone`]: immutable [`zone::Zone`] snapshots built from inline records or
//!   RFC 1035 master files (hickory-proto's parser), grouped in a [`zone::Catalog`]. Dynamic
//!   record changes (ACME DNS-01, DKIM) produce a *new* catalog with the SOA serial bumped; the
//!   control core sends it to every shard (an `Arc<Catalog>` swap).
//! * **protocol** — [`mod@answer`]: `answer(catalog, query, transport, config, out)` — one pure
//!   function from query bytes to response bytes, answering as Knot DNS / NSD do. [`tcp`]:
//!   length-prefix framing for DNS over TCP.
//! * **policy** — [`rrl`]: response rate limiting per client prefix with slip, bounded memory.
//! * **DoH** — [`doh`]: RFC 8484 GET parameter decoding and the JSON `/resolve` format.
//! * internals — `wire`: lookup keys (lower-case wire names, ancestors as sub-slices) and
//!   pre-encoded RRsets, which keep the hot path free of allocation and hashing of `Name`s.
//!
//! A shard's UDP loop, per datagram:
//!
//! ```text
//! let info = shardgate_dns::answer(&catalog, datagram, Transport::Udp, &answer_config, &mut out);
//! stats.record(info);
//! let Some(_) = info else { continue };               // drop
//! match rrl.check(peer.ip(), now) {
//!     RrlDecision::Send => send(&out),
//!     RrlDecision::Slip => { truncate_for_slip(&mut out); send(&out) }
//!     RrlDecision::Drop => {}
//! }
//! ```
//!
//! It does not own sockets, batching (recvmmsg/sendmmsg), threads, HTTP or TLS, and it never
//! recurses: names outside our zones are REFUSED. Errors outside the query path are one enum,
//! [`DnsError`]; the query path never fails — bad input becomes FORMERR or a drop.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod config;
pub mod doh;
pub mod error;
pub mod rrl;
pub mod tcp;
mod wire;
pub mod zone;

pub use answer::{
    answer, truncate_for_slip, AnswerConfig, AnswerStats, Outcome, ResponseInfo, Transport,
};
pub use config::DnsConfig;
pub use error::DnsError;
pub use rrl::{ResponseRateLimiter, RrlDecision, RrlStats};
pub use zone::{Catalog, Zone};
