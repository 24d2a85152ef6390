//! # shardgate-radius: the sans-I/O RADIUS core
//!
//! This crate holds every RADIUS *rule* shardgate follows and none of its I/O. It contains no
//! sockets, reads no clock and spawns nothing: the shards hand it a datagram, the source
//! address and an [`std::time::Instant`]; it hands back the reply bytes and a typed
//! [`server::Outcome`]. Tests, the fuzzer and the benches drive it the same way.
//!
//! ## Layers, from the wire up
//!
//! 1. **Wire** — [`packet`]: RFC 2865/2866 packet framing (code, identifier, length, the 16-octet
//!    authenticator) and attributes, typed where shardgate uses them (RFC 2868 tunnel attributes
//!    with their tags, accounting counters, Message-Authenticator, ...) and kept raw otherwise.
//!    A datagram that breaks the framing rules never becomes a [`packet::Packet`].
//! 2. **Crypto** — [`auth`]: User-Password hiding (RFC 2865 §5.2), CHAP checking, the Request
//!    Authenticator of accounting (RFC 2866 §3), the Response Authenticator (RFC 2865 §3) and the
//!    HMAC-MD5 Message-Authenticator (RFC 3579 §3.2), each with a constant-time verifier.
//! 3. **Identity** — [`mac`]: MAC addresses in every format switches put in
//!    `Calling-Station-Id`, normalised into [`mac::MacAddress`], and OUI wildcard patterns.
//! 4. **Policy** — [`config`] is the `[radius]` TOML section as written by the user;
//!    [`policy`] is that section compiled into lookups (client by source address, MAC allow-list,
//!    ordered VLAN rules). A reload builds a new [`policy::Policy`]; nothing in flight is dropped.
//! 5. **Request handling** — [`server`]: one datagram in, at most one reply out: client lookup,
//!    BlastRADIUS (CVE-2024-3596) checks, MAC authentication bypass, Status-Server (RFC 5997),
//!    accounting. [`duplicate`] holds the bounded retransmission cache that makes replies to
//!    retransmitted requests byte-identical.
//! 6. **Accounting state** — [`sessions`]: the session table the control core keeps, fed with
//!    [`server::AccountingEvent`]s, expiring stale sessions, serialisable for persistence.
//!
//! ## What this crate does not do
//!
//! It does not open, bind or read sockets (the shards do), does not persist anything to disk
//! (the control core writes what [`sessions::SessionTable::to_json`] returns), does not proxy
//! requests to other RADIUS servers and does not run EAP: an Access-Request carrying
//! EAP-Message is rejected, as shardgate only implements MAC authentication bypass.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod duplicate;
pub mod error;
pub mod mac;
pub mod packet;
pub mod policy;
pub mod server;
pub mod sessions;

pub use error::RadiusError;
