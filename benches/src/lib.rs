//! The side-by-side harness: start shardgate and a peer (HAProxy, nginx, Knot DNS, ...) from
//! Debian with equivalent configs, both pinned to the same CPU(s), and drive the *same*
//! workload against each from load threads pinned elsewhere.
//!
//! - [`cpus`]: which CPU the proxy under test gets and which the load + backends get;
//! - [`peers`]: starting and stopping shardgate, HAProxy and the direct (no proxy) baseline;
//! - [`load`]: backends and workloads (bulk streams, short connections);
//! - [`radius_load`] / [`radius_peers`]: the RADIUS load generator (N Access-Requests in
//!   flight) and shardgate/FreeRADIUS started with the same MAB policy.
//! - [`tls_load`] / [`tls_peers`]: TLS handshake and bulk workloads, and shardgate/HAProxy
//!   terminating TLS with the same certificate.
//! - [`dns_peers`]: shardgate, Knot DNS and NSD serving the same zone, and the `dnsperf` load.
//! - [`floor_relay`]: the least work a proxy can do (an epoll byte relay), the lower bound
//!   `peer-load ... floor` measures;
//! - [`splice_floor`]: the least work a `splice(2)` relay can do for bulk TCP (blocking
//!   threads, shardgate's pipe size and unsent cap), `peer-load ... splice-floor`;
//! - [`ab`]: one build with a feature on and off (medians, noise, a verdict against a goal).
//! - [`alternating`]: peers measured in alternating rounds, compared by the median of the
//!   per-round ratios (`--bench tcp_relay_alternating`).
//!
//! The criterion benches in `benches/` use these; `ratio-report` reads criterion's results
//! (and the alternating runs' `.ratios` files) and prints one `<group> <peer>
//! ratio=<shardgate/peer>` line per comparison.

pub mod ab;
pub mod alternating;
pub mod cpus;
pub mod dns_peers;
pub mod floor_relay;
pub mod http_load;
pub mod http_peers;
pub mod load;
pub mod peers;
pub mod radius_load;
pub mod radius_peers;
pub mod splice_floor;
pub mod tls_load;
pub mod tls_peers;
