//! shardgate's core: the config model, the route table, the shard runtime and the relay.
//!
//! Layers, from the outside in:
//! - [`config`]: the TOML file as users write it, checked all at once into a typed [`config::Config`];
//! - [`route`]: a config's routes indexed for per-connection lookup (port, client, SNI);
//! - [`runtime`]: one glommio executor per shard CPU plus a control core, the typed messages
//!   between them, listeners, reload and graceful stop;
//! - [`proxy`]: what a shard does with a TCP connection (route, balance, connect, PROXY header);
//! - [`relay`]: moving bytes between two sockets with `splice(2)`;
//! - [`radius`]: RADIUS sockets on the shards and the accounting session store on the control core;
//! - [`dns`]: authoritative DNS on the shards (batched UDP, TCP) and dynamic records on the control core;
//! - [`storage`]: the key-value storage layer (files under the data folder; memory for tests);
//! - [`smtp`]: the SMTP gateway on the shards (listeners, sessions, spooling, STARTTLS/implicit TLS);
//! - [`mail`]: email routes and the durable mail queue (journal, spool files, queue writer);
//! - [`acme`]: automatic certificates over ACME on the control core (DNS-01, TLS-ALPN-01, HTTP-01);
//! - [`correlation`]: the correlation id of each connection and message, as logs show it;
//! - [`security_log`]: security events logged with a per-shard rate limit (floods stay counted, not logged).
//!
//! Protocol rules (TLS ClientHello, DNS, SMTP, RADIUS) live in the sans-I/O crates under
//! `protocols/`; this crate only moves their bytes.

pub mod config;
pub mod route;
pub mod runtime;
pub mod relay;
pub mod net;
pub mod proxy;
pub mod stats;
pub mod latency;
pub mod admin_api;
pub mod radius;
pub mod dns;
pub mod http;
pub mod tls;
pub mod storage;
pub mod acme;
pub mod mail;
pub mod smtp;
pub mod correlation;
pub mod security_log;
